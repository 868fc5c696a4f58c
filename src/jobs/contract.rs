//! The one contract between the Job renderer ([`super::render`]) and the builder that runs inside
//! the pod (`src/builder/`): the paths every builder container sees, the env vars and args of each
//! step, and the result document it reports back ([`super::result`]).
//!
//! The renderer turns a step's inputs ([`AkmodsContract`], [`ImageContract`]) into env vars and
//! args with [`StepContract::env`] and [`StepContract::args`]; the builder parses exactly those
//! back with [`StepContract::parse`]. A variable the builder does not read is not rendered, and
//! one it needs cannot be forgotten (a unit test renders every kind of Job and parses it back).
//!
//! Encodings: lists are space-separated (kernel releases and references never contain spaces),
//! labels are one `key=value` per line, booleans are `true`/`false`.

use std::collections::BTreeMap;

use super::JobKind;
pub use super::result::{BuilderResult, MAX_RESULT_BYTES, parse as parse_result, render as render_result};

/// Where the operator image keeps its binary (the `install-builder` init container runs it).
pub const OPERATOR_BINARY: &str = "/usr/local/bin/kinoite-zfs-operator";
/// Directory of the shared `tools` volume in both containers.
pub const TOOLS_DIR: &str = "/kzo/bin";
/// The builder entrypoint: the operator binary copied into the tools volume.
pub const ENTRYPOINT: &str = "/kzo/bin/kinoite-zfs-operator";
/// Scratch directory for clones and build roots (on the `workspace` volume).
pub const WORK_DIR: &str = "/kzo/work";
/// Container storage of nested podman/buildah (on the `workspace` volume).
pub const CONTAINER_STORAGE_DIR: &str = "/var/lib/containers";
/// Mount point of the push credentials (`config.json`), only in Jobs that push.
pub const CREDENTIALS_DIR: &str = "/kzo/push-credentials";
/// The push credentials file inside [`CREDENTIALS_DIR`].
pub const AUTH_FILE: &str = "/kzo/push-credentials/config.json";
/// Mount point of the recipe-lines ConfigMap (BlueBuild image Jobs).
pub const RECIPE_DIR: &str = "/kzo/recipe";
/// Where the builder writes its result document (the container's termination message path).
pub const RESULT_FILE: &str = "/dev/termination-log";

/// Env var names, one place for the renderer and the builder.
pub mod env {
    pub const STEP: &str = "KZO_STEP";
    pub const BUILD: &str = "KZO_BUILD";
    pub const RUN: &str = "KZO_RUN";
    pub const MODE: &str = "KZO_MODE";
    pub const INPUTS_HASH: &str = "KZO_INPUTS_HASH";
    pub const PUSH: &str = "KZO_PUSH";
    pub const PUSH_REFS: &str = "KZO_PUSH_REFS";
    pub const WORKDIR: &str = "KZO_WORKDIR";
    pub const RESULT_FILE: &str = "KZO_RESULT_FILE";
    pub const AUTH_FILE: &str = "REGISTRY_AUTH_FILE";
    pub const FEDORA_VERSION: &str = "FEDORA_VERSION";
    pub const KERNEL_RELEASES: &str = "KERNEL_RELEASES";
    pub const BUILD_CONTAINER_PINNED: &str = "BUILD_CONTAINER_PINNED";
    pub const BUILD_CONTAINER_DIGEST: &str = "BUILD_CONTAINER_DIGEST";

    pub const AKMODS_REPOSITORY_URL: &str = "AKMODS_REPOSITORY_URL";
    pub const AKMODS_UPSTREAM_REF: &str = "AKMODS_UPSTREAM_REF";
    pub const AKMODS_REGISTRY: &str = "AKMODS_REGISTRY";
    pub const AKMODS_ORG: &str = "AKMODS_ORG";
    pub const AKMODS_REPO: &str = "AKMODS_REPO";
    pub const AKMODS_BUILDDIR: &str = "AKMODS_BUILDDIR";
    pub const ZFS_MINOR_VERSION: &str = "ZFS_MINOR_VERSION";
    pub const IMAGE_LABELS: &str = "KZO_IMAGE_LABELS";

    pub const SOURCE_GIT_URL: &str = "SOURCE_GIT_URL";
    pub const SOURCE_REVISION: &str = "SOURCE_REVISION";
    pub const BASE_IMAGE: &str = "BASE_IMAGE";
    pub const BASE_IMAGE_NAME: &str = "BASE_IMAGE_NAME";
    pub const BASE_IMAGE_TAG: &str = "BASE_IMAGE_TAG";
    pub const BASE_IMAGE_DIGEST: &str = "BASE_IMAGE_DIGEST";
    pub const AKMODS_IMAGE: &str = "AKMODS_IMAGE";
    pub const IMAGE_REPOSITORY: &str = "KZO_IMAGE_REPOSITORY";
    pub const AKMODS_ALIAS_REF: &str = "KZO_AKMODS_ALIAS_REF";
    pub const STRATEGY: &str = "KZO_STRATEGY";
    pub const RECIPE_LINES_DIR: &str = "KZO_RECIPE_LINES_DIR";
    pub const RECIPE_PATH: &str = "RECIPE_PATH";
    pub const AKMODS_CONTAINERFILE_PATH: &str = "AKMODS_CONTAINERFILE_PATH";
    pub const CONTAINERFILE_PATH: &str = "CONTAINERFILE_PATH";
    pub const CONTEXT_DIR: &str = "CONTEXT_DIR";
}

/// Errors of parsing a step's env and args (a renderer/builder mismatch or a hand-made pod).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the builder needs env var {0}, which the pod does not set")]
    Missing(&'static str),
    #[error("env var {name}={value:?} is invalid: expected {expected}")]
    Invalid { name: &'static str, value: String, expected: &'static str },
    #[error("builder args {found:?} do not match the step (expected {expected:?})")]
    Args { expected: Vec<String>, found: Vec<String> },
}

/// What every step reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// `<namespace>/<name>` of the build (for logs).
    pub build: String,
    pub run: i64,
    /// `Main`, `Branch` or `Validate`.
    pub mode: String,
    pub inputs_hash: String,
    /// Whether the step pushes anything (false in `Validate`).
    pub pushes: bool,
    /// Full references the step pushes (empty when it pushes nothing).
    pub push_refs: Vec<String>,
    pub work_dir: String,
    pub result_file: String,
    /// The mounted push credentials (`config.json`); `None` when no Secret is mounted.
    pub auth_file: Option<String>,
    pub fedora_version: String,
    /// Natural-sorted kernel releases of the base image.
    pub kernel_releases: Vec<String>,
    pub build_container_pinned: String,
    pub build_container_digest: String,
}

/// Inputs of the akmods step (R5 with the H1 fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkmodsContract {
    pub common: Common,
    /// Git URL of the akmods tooling.
    pub repository_url: String,
    /// The full 40-hex commit to build from (R5.1).
    pub upstream_ref: String,
    /// Registry host, namespace and repository name of the candidate akmods repository.
    pub registry: String,
    pub org: String,
    pub repo: String,
    /// Parent of the per-kernel build roots (R5.6).
    pub build_dir: String,
    pub zfs_minor_version: String,
    /// The labels the merged image must carry (cache labels of §2.6 plus the input labels).
    pub image_labels: BTreeMap<String, String>,
}

impl AkmodsContract {
    /// `<registry>/<org>/<repo>`: where the akmods step pushes (never the stable repository).
    pub fn repository(&self) -> String {
        format!("{}/{}/{}", self.registry, self.org, self.repo)
    }
}

/// How the image step builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageStrategy {
    BlueBuild { recipe_lines_dir: String, recipe_path: String, akmods_containerfile_path: String },
    Containerfile { path: String, context_dir: String },
}

/// Inputs of the image step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageContract {
    pub common: Common,
    pub source_git_url: String,
    pub source_revision: String,
    /// The base image by digest.
    pub base_image: String,
    pub base_image_name: String,
    pub base_image_tag: String,
    pub base_image_digest: String,
    /// The akmods cache by digest.
    pub akmods_image: String,
    pub image_repository: String,
    /// `Branch` mode's akmods alias reference.
    pub akmods_alias: Option<String>,
    pub strategy: ImageStrategy,
}

/// The contract of one builder step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepContract {
    Akmods(AkmodsContract),
    Image(ImageContract),
}

impl StepContract {
    pub fn kind(&self) -> JobKind {
        match self {
            StepContract::Akmods(_) => JobKind::Akmods,
            StepContract::Image(_) => JobKind::Image,
        }
    }

    pub fn common(&self) -> &Common {
        match self {
            StepContract::Akmods(a) => &a.common,
            StepContract::Image(i) => &i.common,
        }
    }

    /// The builder container's args: `builder <step>` (plus the pinned build args of the
    /// Containerfile strategy, which `buildah build` receives verbatim).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["builder".to_string(), self.kind().as_str().to_string()];
        if let StepContract::Image(i) = self
            && let ImageStrategy::Containerfile { .. } = i.strategy
        {
            args.extend([
                "--build-arg".to_string(),
                format!("BASE_IMAGE={}", i.base_image),
                "--build-arg".to_string(),
                format!("AKMODS_IMAGE={}", i.akmods_image),
            ]);
        }
        args
    }

    /// The builder container's env vars, in a stable order.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let c = self.common();
        let mut vars = vec![
            (env::STEP, self.kind().as_str().to_string()),
            (env::BUILD, c.build.clone()),
            (env::RUN, c.run.to_string()),
            (env::MODE, c.mode.clone()),
            (env::INPUTS_HASH, c.inputs_hash.clone()),
            (env::PUSH, c.pushes.to_string()),
            (env::PUSH_REFS, c.push_refs.join(" ")),
            (env::WORKDIR, c.work_dir.clone()),
            (env::RESULT_FILE, c.result_file.clone()),
            (env::FEDORA_VERSION, c.fedora_version.clone()),
            (env::KERNEL_RELEASES, c.kernel_releases.join(" ")),
            (env::BUILD_CONTAINER_PINNED, c.build_container_pinned.clone()),
            (env::BUILD_CONTAINER_DIGEST, c.build_container_digest.clone()),
        ];
        if let Some(auth) = &c.auth_file {
            vars.push((env::AUTH_FILE, auth.clone()));
        }
        match self {
            StepContract::Akmods(a) => vars.extend([
                (env::AKMODS_REPOSITORY_URL, a.repository_url.clone()),
                (env::AKMODS_UPSTREAM_REF, a.upstream_ref.clone()),
                (env::AKMODS_REGISTRY, a.registry.clone()),
                (env::AKMODS_ORG, a.org.clone()),
                (env::AKMODS_REPO, a.repo.clone()),
                (env::AKMODS_BUILDDIR, a.build_dir.clone()),
                (env::ZFS_MINOR_VERSION, a.zfs_minor_version.clone()),
                (env::IMAGE_LABELS, render_labels(&a.image_labels)),
            ]),
            StepContract::Image(i) => {
                vars.extend([
                    (env::SOURCE_GIT_URL, i.source_git_url.clone()),
                    (env::SOURCE_REVISION, i.source_revision.clone()),
                    (env::BASE_IMAGE, i.base_image.clone()),
                    (env::BASE_IMAGE_NAME, i.base_image_name.clone()),
                    (env::BASE_IMAGE_TAG, i.base_image_tag.clone()),
                    (env::BASE_IMAGE_DIGEST, i.base_image_digest.clone()),
                    (env::AKMODS_IMAGE, i.akmods_image.clone()),
                    (env::IMAGE_REPOSITORY, i.image_repository.clone()),
                ]);
                if let Some(alias) = &i.akmods_alias {
                    vars.push((env::AKMODS_ALIAS_REF, alias.clone()));
                }
                match &i.strategy {
                    ImageStrategy::BlueBuild { recipe_lines_dir, recipe_path, akmods_containerfile_path } => vars
                        .extend([
                            (env::STRATEGY, "BlueBuild".to_string()),
                            (env::RECIPE_LINES_DIR, recipe_lines_dir.clone()),
                            (env::RECIPE_PATH, recipe_path.clone()),
                            (env::AKMODS_CONTAINERFILE_PATH, akmods_containerfile_path.clone()),
                        ]),
                    ImageStrategy::Containerfile { path, context_dir } => vars.extend([
                        (env::STRATEGY, "Containerfile".to_string()),
                        (env::CONTAINERFILE_PATH, path.clone()),
                        (env::CONTEXT_DIR, context_dir.clone()),
                    ]),
                }
            }
        }
        vars
    }

    /// Parses a step's contract back from the env (`lookup`) and the container args (`args`
    /// without the program name, e.g. `["builder", "akmods"]`).
    pub fn parse(lookup: impl Fn(&str) -> Option<String>, args: &[String]) -> Result<StepContract, Error> {
        let get = |name: &'static str| lookup(name).ok_or(Error::Missing(name));
        let step = get(env::STEP)?;
        let kind = JobKind::parse(&step).ok_or(Error::Invalid {
            name: env::STEP,
            value: step.clone(),
            expected: "akmods or image",
        })?;
        let run = get(env::RUN)?;
        let pushes = match get(env::PUSH)?.as_str() {
            "true" => true,
            "false" => false,
            other => return Err(Error::Invalid { name: env::PUSH, value: other.into(), expected: "true or false" }),
        };
        let common = Common {
            build: get(env::BUILD)?,
            run: run.parse().map_err(|_| Error::Invalid { name: env::RUN, value: run, expected: "a run number" })?,
            mode: get(env::MODE)?,
            inputs_hash: get(env::INPUTS_HASH)?,
            pushes,
            push_refs: words(&get(env::PUSH_REFS)?),
            work_dir: get(env::WORKDIR)?,
            result_file: get(env::RESULT_FILE)?,
            auth_file: lookup(env::AUTH_FILE),
            fedora_version: get(env::FEDORA_VERSION)?,
            kernel_releases: words(&get(env::KERNEL_RELEASES)?),
            build_container_pinned: get(env::BUILD_CONTAINER_PINNED)?,
            build_container_digest: get(env::BUILD_CONTAINER_DIGEST)?,
        };
        if kind == JobKind::Image && common.pushes == common.push_refs.is_empty() {
            return Err(Error::Invalid {
                name: env::PUSH_REFS,
                value: common.push_refs.join(" "),
                expected: "references exactly when KZO_PUSH is true",
            });
        }
        let contract = match kind {
            JobKind::Akmods => StepContract::Akmods(AkmodsContract {
                common,
                repository_url: get(env::AKMODS_REPOSITORY_URL)?,
                upstream_ref: get(env::AKMODS_UPSTREAM_REF)?,
                registry: get(env::AKMODS_REGISTRY)?,
                org: get(env::AKMODS_ORG)?,
                repo: get(env::AKMODS_REPO)?,
                build_dir: get(env::AKMODS_BUILDDIR)?,
                zfs_minor_version: get(env::ZFS_MINOR_VERSION)?,
                image_labels: parse_labels(&get(env::IMAGE_LABELS)?)?,
            }),
            JobKind::Image => {
                let strategy = match get(env::STRATEGY)?.as_str() {
                    "BlueBuild" => ImageStrategy::BlueBuild {
                        recipe_lines_dir: get(env::RECIPE_LINES_DIR)?,
                        recipe_path: get(env::RECIPE_PATH)?,
                        akmods_containerfile_path: get(env::AKMODS_CONTAINERFILE_PATH)?,
                    },
                    "Containerfile" => ImageStrategy::Containerfile {
                        path: get(env::CONTAINERFILE_PATH)?,
                        context_dir: get(env::CONTEXT_DIR)?,
                    },
                    other => {
                        return Err(Error::Invalid {
                            name: env::STRATEGY,
                            value: other.into(),
                            expected: "BlueBuild or Containerfile",
                        });
                    }
                };
                StepContract::Image(ImageContract {
                    common,
                    source_git_url: get(env::SOURCE_GIT_URL)?,
                    source_revision: get(env::SOURCE_REVISION)?,
                    base_image: get(env::BASE_IMAGE)?,
                    base_image_name: get(env::BASE_IMAGE_NAME)?,
                    base_image_tag: get(env::BASE_IMAGE_TAG)?,
                    base_image_digest: get(env::BASE_IMAGE_DIGEST)?,
                    akmods_image: get(env::AKMODS_IMAGE)?,
                    image_repository: get(env::IMAGE_REPOSITORY)?,
                    akmods_alias: lookup(env::AKMODS_ALIAS_REF),
                    strategy,
                })
            }
        };
        let expected = contract.args();
        if args != expected.as_slice() {
            return Err(Error::Args { expected, found: args.to_vec() });
        }
        Ok(contract)
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Labels as one `key=value` per line.
pub fn render_labels(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")
}

/// Parses [`render_labels`] output; a line without `=` or with an empty key is an error.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut labels = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                labels.insert(key.trim().to_string(), value.to_string());
            }
            _ => {
                return Err(Error::Invalid {
                    name: env::IMAGE_LABELS,
                    value: line.to_string(),
                    expected: "one key=value per line",
                });
            }
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_bad_lines_are_errors() {
        let labels = BTreeMap::from([("a.b".to_string(), "1".to_string()), ("c".to_string(), "x y=z".to_string())]);
        assert_eq!(parse_labels(&render_labels(&labels)), Ok(labels));
        assert!(matches!(parse_labels("novalue"), Err(Error::Invalid { .. })));
        assert!(matches!(parse_labels("=v"), Err(Error::Invalid { .. })));
    }
}
