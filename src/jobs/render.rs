//! Rendering of the builder Jobs and the BlueBuild recipe-lines ConfigMap (design §4).
//!
//! A builder pod has two containers:
//! - `install-builder` (init) runs the operator image and copies the operator binary into the
//!   shared `tools` volume (`kinoite-zfs-operator builder install /kzo/bin`);
//! - `builder` runs the build toolchain image *by digest* and executes
//!   `/kzo/bin/kinoite-zfs-operator builder akmods|image`, which reads its inputs from the
//!   environment (and, for BlueBuild, the mounted recipe lines), pushes where `KZO_PUSH_REFS`
//!   says, and writes the result document ([`super::result`]) to `/dev/termination-log`.
//!
//! Push credentials (the build's dockerconfigjson Secret) are mounted only into Jobs that push:
//! never in `Validate` mode.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, KeyToPath, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::contract::{AUTH_FILE, AkmodsContract, Common, ImageContract, ImageStrategy, StepContract};
use super::{
    ANNOTATION_BUILD_NAME, ANNOTATION_INPUTS_HASH, BUILDER_CONTAINER, Error, STEP_RECIPE, child_labels, job_name,
    owner_reference, recipe_config_map_name,
};
use crate::api::ZfsImageBuild;
use crate::api::build::{BuildMode, BuildStrategy, ResolvedInputs};
use crate::pipeline::cache::{CacheInputs, cache_labels};
use crate::pipeline::targets::RunTargets;

pub use super::contract::{
    CONTAINER_STORAGE_DIR, CREDENTIALS_DIR, ENTRYPOINT, OPERATOR_BINARY, RECIPE_DIR, RESULT_FILE, TOOLS_DIR, WORK_DIR,
};

/// Keys of the recipe-lines ConfigMap: each value is one full replacement line (R7.2).
pub const RECIPE_NAME_KEY: &str = "recipe-name";
pub const RECIPE_BASE_IMAGE_KEY: &str = "recipe-base-image";
pub const RECIPE_IMAGE_VERSION_KEY: &str = "recipe-image-version";
pub const CONTAINERFILE_AKMODS_KEY: &str = "containerfile-akmods-image-template";
pub const RECIPE_PATH_KEY: &str = "recipe-path";
pub const AKMODS_CONTAINERFILE_PATH_KEY: &str = "akmods-containerfile-path";

const WORKSPACE_VOLUME: &str = "workspace";
const TOOLS_VOLUME: &str = "tools";
const CREDENTIALS_VOLUME: &str = "push-credentials";
const RECIPE_VOLUME: &str = "recipe-lines";
const INSTALL_CONTAINER: &str = "install-builder";

/// Everything a Job of one run is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct JobInputs<'a> {
    /// The build (spec and metadata: name, namespace, uid).
    pub build: &'a ZfsImageBuild,
    pub run: i64,
    /// The run's resolved inputs.
    pub inputs: &'a ResolvedInputs,
    pub inputs_hash: &'a str,
    /// Where the run reads and writes.
    pub targets: &'a RunTargets,
    /// Operator image (by digest in production) that provides the builder entrypoint.
    pub tools_image: &'a str,
}

/// The rewritten lines of R7.2 for the BlueBuild strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeLines {
    /// `name: <image repository>` (always supplied, so the recipe's own name never decides
    /// where an image goes).
    pub name: String,
    /// `base-image: <base_image_name>`.
    pub base_image: String,
    /// `image-version: <base_image_tag>`: the immutable date-stamped tag proven equal to the
    /// base digest (R2.8).
    pub image_version: String,
    /// `ENV AKMODS_IMAGE_TEMPLATE="<akmods image by digest>"`: the compose-time helper uses the
    /// template verbatim when it has no `{fedora}`, so the build reads exactly the akmods digest
    /// the run decided on instead of a tag that may move (design §1).
    pub akmods_image_template: String,
}

/// The R7.2 lines of a run.
pub fn recipe_lines(ji: &JobInputs, akmods_image: &str) -> RecipeLines {
    RecipeLines {
        name: format!("name: {}", ji.targets.image_name),
        base_image: format!("base-image: {}", ji.inputs.base_image_name),
        image_version: format!("image-version: {}", ji.inputs.base_image_tag),
        akmods_image_template: format!("ENV AKMODS_IMAGE_TEMPLATE=\"{akmods_image}\""),
    }
}

/// The ConfigMap `<build>-<run>-recipe` the BlueBuild image Job mounts; `None` for the
/// Containerfile strategy (build args carry the inputs there).
pub fn recipe_config_map(ji: &JobInputs, akmods_image: &str) -> Result<Option<ConfigMap>, Error> {
    let source = &ji.build.spec.source;
    if source.strategy != BuildStrategy::BlueBuild {
        return Ok(None);
    }
    let paths = source.blue_build.clone().unwrap_or_default();
    let lines = recipe_lines(ji, akmods_image);
    let data = BTreeMap::from([
        (RECIPE_NAME_KEY.to_string(), lines.name),
        (RECIPE_BASE_IMAGE_KEY.to_string(), lines.base_image),
        (RECIPE_IMAGE_VERSION_KEY.to_string(), lines.image_version),
        (CONTAINERFILE_AKMODS_KEY.to_string(), lines.akmods_image_template),
        (RECIPE_PATH_KEY.to_string(), paths.recipe_path),
        (AKMODS_CONTAINERFILE_PATH_KEY.to_string(), paths.akmods_containerfile_path),
    ]);
    Ok(Some(ConfigMap {
        metadata: child_meta(ji, recipe_config_map_name(&ji.build.name_any(), ji.run), STEP_RECIPE)?,
        data: Some(data),
        ..Default::default()
    }))
}

/// The akmods Job `<build>-<run>-akmods` (R5 with the H1 fix: it pushes only to the candidate
/// akmods repository). Only `Main` runs rebuild the cache.
pub fn akmods_job(ji: &JobInputs) -> Result<Job, Error> {
    render_job(ji, &akmods_contract(ji), None)
}

/// What the akmods Job of a run is told (the builder parses exactly this back).
pub fn akmods_contract(ji: &JobInputs) -> StepContract {
    let inputs = ji.inputs;
    let spec = &ji.build.spec;
    StepContract::Akmods(AkmodsContract {
        common: common(ji, ji.targets.akmods_push_refs()),
        repository_url: spec.akmods.repository.clone(),
        upstream_ref: inputs.akmods_upstream_ref.clone(),
        registry: spec.registry.host.clone(),
        org: spec.registry.namespace.clone(),
        repo: spec.registry.candidate_akmods.clone(),
        build_dir: format!("{WORK_DIR}/akmods-build"),
        zfs_minor_version: inputs.zfs_minor_version.clone(),
        image_labels: akmods_image_labels(inputs),
    })
}

/// The labels the akmods image must carry: the cache labels of §2.6 plus the inputs it was built
/// from, so a later cache decision can tell a cache built from other inputs
/// (`pipeline::cache::cache_labels`).
fn akmods_image_labels(inputs: &ResolvedInputs) -> BTreeMap<String, String> {
    let cache_inputs = CacheInputs {
        zfs_minor_version: Some(inputs.zfs_minor_version.clone()),
        akmods_ref: Some(inputs.akmods_upstream_ref.clone()),
        builder_digest: Some(inputs.build_container_digest.clone()),
    };
    cache_labels(&inputs.kernel_releases, &cache_inputs)
}

/// The image Job `<build>-<run>-image`, per strategy: BlueBuild reads the recipe lines from the
/// mounted ConfigMap; Containerfile gets `--build-arg BASE_IMAGE=... --build-arg AKMODS_IMAGE=...`,
/// both by digest.
pub fn image_job(ji: &JobInputs, akmods_image: &str) -> Result<Job, Error> {
    let contract = image_contract(ji, akmods_image)?;
    let recipe = match ji.build.spec.source.strategy {
        BuildStrategy::BlueBuild => Some(recipe_config_map_name(&ji.build.name_any(), ji.run)),
        BuildStrategy::Containerfile => None,
    };
    render_job(ji, &contract, recipe)
}

/// What the image Job of a run is told (the builder parses exactly this back).
pub fn image_contract(ji: &JobInputs, akmods_image: &str) -> Result<StepContract, Error> {
    if !is_pinned(akmods_image) {
        return Err(Error::AkmodsNotPinned(akmods_image.to_string()));
    }
    let inputs = ji.inputs;
    if !is_pinned(&inputs.base_image_pinned) {
        return Err(Error::BaseNotPinned(inputs.base_image_pinned.clone()));
    }
    let source = &ji.build.spec.source;
    let strategy = match source.strategy {
        BuildStrategy::BlueBuild => {
            let paths = source.blue_build.clone().unwrap_or_default();
            ImageStrategy::BlueBuild {
                recipe_lines_dir: RECIPE_DIR.to_string(),
                recipe_path: paths.recipe_path,
                akmods_containerfile_path: paths.akmods_containerfile_path,
            }
        }
        BuildStrategy::Containerfile => {
            let paths = source.containerfile.clone().unwrap_or_default();
            ImageStrategy::Containerfile { path: paths.path, context_dir: paths.context_dir }
        }
    };
    Ok(StepContract::Image(ImageContract {
        common: common(ji, ji.targets.image_push_refs()),
        source_git_url: source.git.url.clone(),
        source_revision: source.git.revision.clone(),
        base_image: inputs.base_image_pinned.clone(),
        base_image_name: inputs.base_image_name.clone(),
        base_image_tag: inputs.base_image_tag.clone(),
        base_image_digest: inputs.base_image_digest.clone(),
        akmods_image: akmods_image.to_string(),
        image_repository: ji.targets.image_repository.clone(),
        akmods_alias: ji.targets.akmods_alias.clone(),
        strategy,
    }))
}

/// Whether the Job mounts the push credentials: only where something is pushed (Validate Jobs
/// get none at all) and the build names a Secret.
fn mounts_credentials(ji: &JobInputs) -> bool {
    ji.targets.pushes && ji.build.spec.registry.credentials_secret_ref.is_some()
}

fn common(ji: &JobInputs, push_refs: Vec<String>) -> Common {
    let inputs = ji.inputs;
    let build = ji.build;
    let mode = match build.spec.mode {
        BuildMode::Main => "Main",
        BuildMode::Branch => "Branch",
        BuildMode::Validate => "Validate",
    };
    Common {
        build: format!("{}/{}", build.namespace().unwrap_or_default(), build.name_any()),
        run: ji.run,
        mode: mode.to_string(),
        inputs_hash: ji.inputs_hash.to_string(),
        pushes: ji.targets.pushes,
        push_refs,
        work_dir: WORK_DIR.to_string(),
        result_file: RESULT_FILE.to_string(),
        auth_file: mounts_credentials(ji).then(|| AUTH_FILE.to_string()),
        fedora_version: inputs.fedora_version.clone(),
        kernel_releases: inputs.kernel_releases.clone(),
        build_container_pinned: inputs.build_container_pinned.clone(),
        build_container_digest: inputs.build_container_digest.clone(),
    }
}

fn child_meta(ji: &JobInputs, name: String, step: &str) -> Result<ObjectMeta, Error> {
    let build_name = ji.build.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = ji.build.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        labels: Some(child_labels(&build_name, ji.run, step)),
        annotations: Some(BTreeMap::from([
            (ANNOTATION_BUILD_NAME.to_string(), build_name.clone()),
            (ANNOTATION_INPUTS_HASH.to_string(), ji.inputs_hash.to_string()),
        ])),
        owner_references: Some(vec![owner_reference(ji.build)?]),
        ..Default::default()
    })
}

fn render_job(ji: &JobInputs, contract: &StepContract, recipe_config_map: Option<String>) -> Result<Job, Error> {
    let kind = contract.kind();
    let builder_image = &ji.inputs.build_container_pinned;
    if !is_pinned(builder_image) {
        return Err(Error::BuilderNotPinned(builder_image.clone()));
    }
    let settings = &ji.build.spec.builder;
    let pushes = ji.targets.pushes;
    let meta = child_meta(ji, job_name(&ji.build.name_any(), ji.run, kind), kind.as_str())?;

    let env: Vec<EnvVar> = contract
        .env()
        .into_iter()
        .map(|(name, value)| EnvVar { name: name.into(), value: Some(value), ..Default::default() })
        .collect();
    let args = contract.args();
    let mut mounts = vec![
        mount(TOOLS_VOLUME, TOOLS_DIR, None, true),
        mount(WORKSPACE_VOLUME, WORK_DIR, Some("work"), false),
        mount(WORKSPACE_VOLUME, CONTAINER_STORAGE_DIR, Some("containers"), false),
    ];
    let mut volumes = vec![
        Volume { name: TOOLS_VOLUME.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        Volume {
            name: WORKSPACE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(settings.ephemeral_storage.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let credentials = ji.build.spec.registry.credentials_secret_ref.as_ref().filter(|_| mounts_credentials(ji));
    if let Some(secret) = credentials {
        volumes.push(Volume {
            name: CREDENTIALS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: Some(vec![KeyToPath {
                    key: crate::registry::DOCKER_CONFIG_SECRET_KEY.into(),
                    path: "config.json".into(),
                    mode: None,
                }]),
                default_mode: Some(0o400),
                optional: Some(false),
            }),
            ..Default::default()
        });
        mounts.push(mount(CREDENTIALS_VOLUME, CREDENTIALS_DIR, None, true));
    }
    if let Some(name) = recipe_config_map {
        volumes.push(Volume {
            name: RECIPE_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource { name, optional: Some(false), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(mount(RECIPE_VOLUME, RECIPE_DIR, None, true));
    }

    let builder = Container {
        name: BUILDER_CONTAINER.into(),
        image: Some(builder_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![ENTRYPOINT.into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: Some(builder_resources(settings.resources.clone(), &settings.ephemeral_storage)),
        security_context: Some(SecurityContext { privileged: Some(settings.privileged), ..Default::default() }),
        termination_message_path: Some(RESULT_FILE.into()),
        // Only the file counts: a log tail must never be parsed as a result.
        termination_message_policy: Some("File".into()),
        ..Default::default()
    };
    let install = Container {
        name: INSTALL_CONTAINER.into(),
        image: Some(ji.tools_image.to_string()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![OPERATOR_BINARY.into()]),
        args: Some(vec!["builder".into(), "install".into(), TOOLS_DIR.into()]),
        volume_mounts: Some(vec![mount(TOOLS_VOLUME, TOOLS_DIR, None, false)]),
        ..Default::default()
    };
    let backoff_limit = settings.backoff_limit.unwrap_or(if pushes { 1 } else { 0 });
    Ok(Job {
        metadata: meta.clone(),
        spec: Some(JobSpec {
            backoff_limit: Some(backoff_limit),
            active_deadline_seconds: Some(settings.active_deadline_seconds),
            ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: meta.labels.clone(),
                    annotations: meta.annotations.clone(),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: settings.service_account_name.clone(),
                    // Builders never talk to the Kubernetes API.
                    automount_service_account_token: Some(false),
                    node_selector: settings.node_selector.clone(),
                    tolerations: settings.tolerations.clone(),
                    init_containers: Some(vec![install]),
                    containers: vec![builder],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

fn mount(volume: &str, path: &str, sub_path: Option<&str>, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        sub_path: sub_path.map(Into::into),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// The spec's resources plus an `ephemeral-storage` request of the scratch volume's size, so
/// the scheduler places the pod on a node with room for the build.
fn builder_resources(
    resources: Option<ResourceRequirements>,
    ephemeral: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> ResourceRequirements {
    let mut resources = resources.unwrap_or_default();
    resources.requests.get_or_insert_with(BTreeMap::new).entry("ephemeral-storage".into()).or_insert(ephemeral.clone());
    resources
}

/// `NAME@sha256:<64 hex>`.
pub fn is_pinned(reference: &str) -> bool {
    reference.rsplit_once('@').is_some_and(|(name, digest)| !name.is_empty() && super::result::is_digest(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::targets::run_targets;
    use crate::test_support::{build, resolved_inputs};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn render(mode: &str, extra: &str) -> (ZfsImageBuild, ResolvedInputs, RunTargets) {
        let b = build(mode, extra);
        let inputs = resolved_inputs();
        let targets = run_targets(&b.spec, 4, &inputs.fedora_version);
        (b, inputs, targets)
    }

    fn env_of(job: &Job) -> BTreeMap<String, String> {
        let c = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect()
    }

    fn pod(job: &Job) -> &PodSpec {
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn ji<'a>(b: &'a ZfsImageBuild, i: &'a ResolvedInputs, t: &'a RunTargets) -> JobInputs<'a> {
        JobInputs {
            build: b,
            run: 4,
            inputs: i,
            inputs_hash: "sha256:hash",
            targets: t,
            tools_image: "ghcr.io/x/op@sha256:1",
        }
    }

    #[test]
    fn akmods_job_is_complete_and_pushes_only_to_candidate_akmods() {
        let (b, i, t) = render("Main", "");
        let job = akmods_job(&ji(&b, &i, &t)).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("zib-4-akmods"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("builds"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("ZfsImageBuild", "uid-1", Some(true)));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kinoite-zfs.io/run"], "4");
        assert_eq!(labels["kinoite-zfs.io/step"], "akmods");
        let env = env_of(&job);
        assert_eq!(
            env["KZO_PUSH_REFS"],
            "ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate:main-43 ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate:4-43"
        );
        assert_eq!(env["AKMODS_REPO"], "kinoite-zfs-bluebuild-akmods-candidate");
        assert_eq!(env["KERNEL_RELEASES"], "6.18.9-200.fc43.x86_64 6.18.12-200.fc43.x86_64");
        assert_eq!(env["AKMODS_UPSTREAM_REF"], i.akmods_upstream_ref);
        // The labels it must write read back as a reusable cache for exactly these inputs.
        let written: BTreeMap<String, String> = env["KZO_IMAGE_LABELS"]
            .lines()
            .map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap())
            .collect();
        assert_eq!(crate::pipeline::cache::label_coverage(&written), Some(i.kernel_releases.iter().cloned().collect()),);
        let same = CacheInputs {
            zfs_minor_version: Some(i.zfs_minor_version.clone()),
            akmods_ref: Some(i.akmods_upstream_ref.clone()),
            builder_digest: Some(i.build_container_digest.clone()),
        };
        assert!(crate::pipeline::cache::input_mismatches(&written, &same).is_empty());
        assert_eq!(written.len(), 5, "{written:?}");
        assert_eq!(env["REGISTRY_AUTH_FILE"], "/kzo/push-credentials/config.json");
        assert!(!env.values().any(|v| v.contains("kinoite-zfs-bluebuild-akmods:")), "never the stable akmods repo");

        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(1));
        assert_eq!(spec.active_deadline_seconds, Some(14400));
        assert_eq!(spec.ttl_seconds_after_finished, Some(86400));
        let p = pod(&job);
        assert_eq!(p.restart_policy.as_deref(), Some("Never"));
        assert_eq!(p.automount_service_account_token, Some(false));
        let c = &p.containers[0];
        assert_eq!(c.image.as_deref(), Some(i.build_container_pinned.as_str()));
        assert_eq!(c.command.as_ref().unwrap(), &[ENTRYPOINT]);
        assert_eq!(c.args.as_ref().unwrap(), &["builder", "akmods"]);
        assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(true));
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(c.resources.as_ref().unwrap().requests.as_ref().unwrap()["ephemeral-storage"].0, "20Gi");
        let secret = p.volumes.as_ref().unwrap().iter().find_map(|v| v.secret.as_ref()).unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("ghcr-push"));
        assert_eq!(p.init_containers.as_ref().unwrap()[0].image.as_deref(), Some("ghcr.io/x/op@sha256:1"));
    }

    /// Every kind of Job the renderer makes parses back, from its pod spec alone, into exactly
    /// the contract it was rendered from; every path the builder is told lies on a mount.
    #[test]
    fn every_rendered_job_parses_back_into_its_contract() {
        let akmods = format!("ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate@{}", digest('c'));
        for (mode, extra) in [("Main", ""), ("Branch", "  branch: feature/x\n"), ("Validate", "")] {
            for strategy in [BuildStrategy::BlueBuild, BuildStrategy::Containerfile] {
                let (mut b, i, t) = render(mode, extra);
                b.spec.source.strategy = strategy;
                let j = ji(&b, &i, &t);
                let mut cases = vec![(image_job(&j, &akmods).unwrap(), image_contract(&j, &akmods).unwrap())];
                if mode == "Main" {
                    cases.push((akmods_job(&j).unwrap(), akmods_contract(&j)));
                }
                for (job, expected) in cases {
                    let c = &pod(&job).containers[0];
                    let env = env_of(&job);
                    let parsed = StepContract::parse(|k| env.get(k).cloned(), c.args.as_ref().unwrap()).unwrap();
                    assert_eq!(parsed, expected, "{mode} {strategy:?}");
                    assert_eq!(env.len(), expected.env().len(), "no variable beyond the contract");
                    let mounted = |path: &str| {
                        c.volume_mounts.iter().flatten().any(|m| path.starts_with(&m.mount_path))
                            || path == c.termination_message_path.as_deref().unwrap()
                    };
                    let common = parsed.common();
                    assert!(mounted(&common.work_dir) && mounted(&common.result_file));
                    assert_eq!(common.auth_file.is_some(), mode != "Validate");
                    assert!(common.auth_file.iter().all(|f| mounted(f)));
                    if let StepContract::Akmods(a) = &parsed {
                        assert!(mounted(&a.build_dir));
                        assert_eq!(a.common.kernel_releases, i.kernel_releases);
                        assert_eq!(a.upstream_ref, i.akmods_upstream_ref);
                    }
                }
            }
        }
        // A forgotten variable is an error naming it, never a default.
        let (b, i, t) = render("Main", "");
        let job = akmods_job(&ji(&b, &i, &t)).unwrap();
        let mut env = env_of(&job);
        env.remove("AKMODS_UPSTREAM_REF");
        let args = vec!["builder".to_string(), "akmods".to_string()];
        assert_eq!(
            StepContract::parse(|k| env.get(k).cloned(), &args),
            Err(super::super::contract::Error::Missing("AKMODS_UPSTREAM_REF"))
        );
    }

    #[test]
    fn builder_settings_are_applied() {
        let extra = r#"
  builder:
    serviceAccountName: builder
    nodeSelector: {pool: builds}
    tolerations: [{key: dedicated, operator: Equal, value: builds, effect: NoSchedule}]
    resources: {requests: {cpu: "4", ephemeral-storage: 50Gi}, limits: {memory: 16Gi}}
    ephemeralStorage: 60Gi
    privileged: false
    activeDeadlineSeconds: 600
    backoffLimit: 3
    ttlSecondsAfterFinished: 60
"#;
        let (b, i, t) = render("Main", extra);
        let job = image_job(&ji(&b, &i, &t), &format!("r.io/a@{}", digest('c'))).unwrap();
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds, spec.ttl_seconds_after_finished),
            (Some(3), Some(600), Some(60))
        );
        let p = pod(&job);
        assert_eq!(p.service_account_name.as_deref(), Some("builder"));
        assert_eq!(p.node_selector.as_ref().unwrap()["pool"], "builds");
        assert_eq!(p.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
        let c = &p.containers[0];
        let res = c.resources.as_ref().unwrap();
        assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "4");
        assert_eq!(res.requests.as_ref().unwrap()["ephemeral-storage"].0, "50Gi", "an explicit request wins");
        assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "16Gi");
        assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(false));
        let ws = p.volumes.as_ref().unwrap().iter().find(|v| v.name == "workspace").unwrap();
        assert_eq!(ws.empty_dir.as_ref().unwrap().size_limit.as_ref().unwrap().0, "60Gi");
    }

    #[test]
    fn blue_build_image_job_mounts_the_recipe_lines() {
        let (b, i, t) = render("Main", "");
        let akmods = format!("ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate@{}", digest('c'));
        let j = ji(&b, &i, &t);
        let job = image_job(&j, &akmods).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("zib-4-image"));
        let env = env_of(&job);
        assert_eq!(env["KZO_STRATEGY"], "BlueBuild");
        assert_eq!(env["BASE_IMAGE"], i.base_image_pinned);
        assert_eq!(env["AKMODS_IMAGE"], akmods);
        assert_eq!(env["KZO_PUSH_REFS"], "ghcr.io/danathar/kinoite-zfs-candidate:4-43");
        let p = pod(&job);
        let cm = p.volumes.as_ref().unwrap().iter().find_map(|v| v.config_map.as_ref()).unwrap();
        assert_eq!(cm.name, "zib-4-recipe");

        let config = recipe_config_map(&j, &akmods).unwrap().unwrap();
        assert_eq!(config.metadata.name.as_deref(), Some("zib-4-recipe"));
        let data = config.data.unwrap();
        assert_eq!(data[RECIPE_NAME_KEY], "name: kinoite-zfs-candidate");
        assert_eq!(data[RECIPE_BASE_IMAGE_KEY], "base-image: ghcr.io/ublue-os/kinoite-main");
        assert_eq!(data[RECIPE_IMAGE_VERSION_KEY], "image-version: latest-20260420");
        assert_eq!(data[CONTAINERFILE_AKMODS_KEY], format!("ENV AKMODS_IMAGE_TEMPLATE=\"{akmods}\""));
        assert_eq!(data[RECIPE_PATH_KEY], "recipes/recipe.yml");
    }

    #[test]
    fn containerfile_image_job_passes_pinned_build_args() {
        let (b, i, t) = render("Main", "");
        let mut b = b;
        b.spec.source.strategy = BuildStrategy::Containerfile;
        let akmods = format!("ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate@{}", digest('c'));
        let j = ji(&b, &i, &t);
        let job = image_job(&j, &akmods).unwrap();
        let c = &pod(&job).containers[0];
        assert_eq!(
            c.args.as_ref().unwrap(),
            &[
                "builder".to_string(),
                "image".into(),
                "--build-arg".into(),
                format!("BASE_IMAGE={}", i.base_image_pinned),
                "--build-arg".into(),
                format!("AKMODS_IMAGE={akmods}")
            ]
        );
        assert!(pod(&job).volumes.as_ref().unwrap().iter().all(|v| v.config_map.is_none()));
        assert!(recipe_config_map(&j, &akmods).unwrap().is_none());
        assert_eq!(env_of(&job)["CONTAINERFILE_PATH"], "Containerfile");
    }

    #[test]
    fn validate_mounts_no_credentials_and_does_not_retry() {
        let (b, i, t) = render("Validate", "");
        let akmods = format!("ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate@{}", digest('c'));
        let job = image_job(&ji(&b, &i, &t), &akmods).unwrap();
        let p = pod(&job);
        assert!(p.volumes.as_ref().unwrap().iter().all(|v| v.secret.is_none()));
        let env = env_of(&job);
        assert_eq!(env["KZO_PUSH"], "false");
        assert_eq!(env["KZO_PUSH_REFS"], "");
        assert!(!env.contains_key("REGISTRY_AUTH_FILE"));
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
    }

    #[test]
    fn branch_image_job_writes_the_alias_and_br_tag() {
        let (b, i, t) = render("Branch", "  branch: Feature/X\n");
        let akmods = format!("ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate@{}", digest('c'));
        let env = env_of(&image_job(&ji(&b, &i, &t), &akmods).unwrap());
        assert_eq!(env["KZO_PUSH_REFS"], "ghcr.io/danathar/kinoite-zfs:br-feature-x-43");
        assert_eq!(
            env["KZO_AKMODS_ALIAS_REF"],
            "ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate:br-feature-x-43"
        );
    }

    #[test]
    fn unpinned_images_are_refused() {
        let (b, mut i, t) = render("Main", "");
        assert!(matches!(image_job(&ji(&b, &i, &t), "ghcr.io/a:main-43"), Err(Error::AkmodsNotPinned(_))));
        i.build_container_pinned = "ghcr.io/ublue-os/devcontainer:latest".into();
        assert!(matches!(akmods_job(&ji(&b, &i, &t)), Err(Error::BuilderNotPinned(_))));
        let mut nameless = b.clone();
        nameless.metadata.uid = None;
        let i = resolved_inputs();
        assert_eq!(akmods_job(&ji(&nameless, &i, &t)).unwrap_err(), Error::MissingMetadata("uid"));
    }
}
