//! `builder akmods`: R5 with the H1 fix (everything goes to the candidate akmods repository).
//!
//! 1. Pinned clone (R5.1): a fresh worktree, `git init`, `git fetch --depth 1` of the commit,
//!    detached checkout; `HEAD` must be the pin ("Pinned ref mismatch").
//! 2. The Justfile patches (R5.2) and the `images.yaml` target (R5.3), failing loudly (F4).
//! 3. Per kernel, in natural order (R5.5, R5.6): an isolated build root with `cache.json` seeded
//!    (§2.5), no layer cache (F9), a preset `KCPATH` refused (F8), any image of that name left
//!    in container storage removed first (F6, F7), then `just build` and `just push`; the image
//!    `just build` made is remembered by ID.
//! 4. Merge and publish (R5.7): each remembered image is mounted with buildah and its `rpms/`
//!    and `kernel-rpms/` are copied into one context; every kernel needs its
//!    `kmod-zfs-<kr>-*.rpm` or nothing is pushed; a `FROM scratch` image with the cache and input
//!    labels is pushed to `main-<fedora>-<arch>` first, then to every `KZO_PUSH_REFS` ref; the
//!    newest kernel's image becomes the debug alias `main-<fedora>-<kr>` (R6.2).
//!
//! Credentials: only the mounted `config.json` (or an empty one when none is mounted) is handed
//! to buildah and `just`, never the environment's defaults; nothing secret is logged.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::justfile::{self, configure_images_yaml, patch_justfile};
use super::process::run;
use super::{Error, io};
use crate::jobs::contract::AkmodsContract;
use crate::jobs::result::BuilderResult;
use crate::pipeline::cache::{labels, rpm_kernel};
use crate::pipeline::kernels::sort_releases;

/// Where the kmod RPMs are inside an akmods image.
pub const RPM_DIR: &str = "rpms/kmods/zfs";

/// The upstream `cache.json` of §2.5 (field order as upstream writes it).
#[derive(Debug, Serialize)]
struct KernelCache {
    kernel_build_tag: String,
    kernel_flavor: String,
    kernel_major_minor_patch: String,
    kernel_release: String,
    kernel_name: String,
    #[serde(rename = "KCWD")]
    kcwd: String,
    #[serde(rename = "KCPATH")]
    kcpath: String,
}

/// Runs the akmods step and returns what it pushed.
pub fn run_akmods(c: &AkmodsContract) -> Result<BuilderResult, Error> {
    if let Ok(kcpath) = std::env::var("KCPATH") {
        return Err(Error::PresetKcpath(kcpath));
    }
    let kernels = sort_releases(&c.common.kernel_releases);
    let Some(newest) = kernels.last().cloned() else {
        return Err(Error::Command("KERNEL_RELEASES is empty: there is no kernel to build akmods for".into()));
    };
    let work = PathBuf::from(&c.common.work_dir);
    std::fs::create_dir_all(&work).map_err(io(format!("cannot create {}", work.display())))?;
    let env = ChildEnv::new(c, &work, &newest)?;

    let tree = work.join("akmods");
    clone_pinned(&env, &c.repository_url, &c.upstream_ref, &tree)?;
    patch_tree(&tree, &c.common.fedora_version, &c.org, &c.repo)?;

    let fedora = &c.common.fedora_version;
    let local = |tag: &str| format!("localhost/{}:{tag}", c.repo);
    let arch_tag = format!("main-{fedora}-{}", std::env::consts::ARCH);
    // F6: nothing named like the shared tags may survive from an earlier build in this storage.
    for stale in [local(&format!("main-{fedora}")), local(&arch_tag)] {
        remove_image(&env, &stale);
    }

    let mut built = Vec::new();
    for kernel in &kernels {
        let root = Path::new(&c.build_dir).join(kernel);
        seed_build_root(&root, fedora, kernel)?;
        tracing::info!("Pinned akmods kernel release to {kernel}");
        let image = local(&format!("main-{fedora}-{kernel}"));
        // F7: an image of this name from an earlier kernel or run is never what gets merged.
        remove_image(&env, &image);
        let just = |recipe: &str| {
            let mut just = env.command("just");
            just.arg(recipe).current_dir(&tree).env("AKMODS_BUILDDIR", &root);
            run(just, &format!("just {recipe} for kernel {kernel}"))
        };
        just("build")?;
        // Remembered by ID right after the build: only this image of this run is merged.
        let id =
            image_id(&env, &image).ok_or_else(|| Error::NoImage { kernel: kernel.clone(), image: image.clone() })?;
        just("push")?;
        built.push((kernel.clone(), id));
    }

    let context = tempfile::Builder::new()
        .prefix("akmods-merge-")
        .tempdir_in(&work)
        .map_err(io("cannot create the merge context"))?;
    for (kernel, id) in &built {
        unpack_image(&env, id, context.path()).map_err(|e| match e {
            Error::Command(m) => Error::Command(format!("unpacking the image of kernel {kernel}: {m}")),
            e => e,
        })?;
    }
    let covered = merged_kernels(&context.path().join(RPM_DIR), &kernels)?;
    let missing: Vec<String> = kernels.iter().filter(|k| !covered.contains(*k)).cloned().collect();
    if !missing.is_empty() {
        return Err(Error::MissingKernelRpms(missing));
    }
    let kernel_releases = sort_releases(&covered);
    let image_labels = merged_labels(c, &kernel_releases)?;
    write_containerfile(context.path(), &image_labels)?;

    let mut bud = env.command("buildah");
    bud.args(["build", "--layers=false", "--isolation", &env.isolation, "--pull=never", "-f"])
        .arg(context.path().join("Containerfile"))
        .args(["-t", &local(&format!("main-{fedora}")), "-t", &local(&arch_tag)])
        .arg(context.path());
    run(bud, "building the merged akmods image")?;

    let repository = c.repository();
    // R5.7 order: the arch tag first, then the shared and run tags.
    let mut targets = vec![format!("{repository}:{arch_tag}")];
    targets.extend(c.common.push_refs.iter().cloned());
    let mut digests = BTreeSet::new();
    for target in &targets {
        digests.insert(push(&env, &local(&arch_tag), target, &work)?);
    }
    if digests.len() != 1 {
        return Err(Error::DigestMismatch(digests.into_iter().collect::<Vec<_>>().join(", ")));
    }
    let digest = digests.into_iter().next().unwrap_or_default();
    // R6.2: the newest kernel's own image, for debugging, in the candidate repository.
    let newest_id = &built.last().map(|(_, id)| id.clone()).unwrap_or_default();
    push(&env, newest_id, &format!("{repository}:main-{fedora}-{newest}"), &work)?;
    Ok(BuilderResult::Akmods { digest, kernel_releases })
}

/// The environment every tool runs with.
struct ChildEnv {
    auth_file: PathBuf,
    isolation: String,
    vars: Vec<(String, String)>,
}

impl ChildEnv {
    fn new(c: &AkmodsContract, work: &Path, newest: &str) -> Result<ChildEnv, Error> {
        let auth_file = match &c.common.auth_file {
            Some(path) => PathBuf::from(path),
            None => {
                // No Secret mounted: an explicitly empty file, so no default credentials leak in.
                let path = work.join("no-credentials.json");
                std::fs::write(&path, "{\"auths\":{}}").map_err(io("cannot write the empty auth file"))?;
                path
            }
        };
        let isolation = std::env::var("BUILDAH_ISOLATION").unwrap_or_else(|_| "chroot".into());
        let storage_driver = std::env::var("STORAGE_DRIVER").unwrap_or_else(|_| "vfs".into());
        let auth = auth_file.display().to_string();
        let vars = [
            // R5.4, with AKMODS_REPO the candidate akmods repository (H1).
            ("AKMODS_KERNEL", "main"),
            ("AKMODS_VERSION", c.common.fedora_version.as_str()),
            ("AKMODS_TARGET", "zfs"),
            ("AKMODS_REGISTRY", c.registry.as_str()),
            ("AKMODS_ORG", c.org.as_str()),
            ("AKMODS_REPO", c.repo.as_str()),
            ("KERNEL_RELEASE", newest),
            ("ZFS_MINOR_VERSION", c.zfs_minor_version.as_str()),
            ("CI", "1"),
            // F9: no layer cache for kernel-targeted builds.
            ("BUILDAH_LAYERS", "false"),
            ("BUILDAH_ISOLATION", isolation.as_str()),
            ("STORAGE_DRIVER", storage_driver.as_str()),
            ("REGISTRY_AUTH_FILE", auth.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("KERNEL_RELEASES".to_string(), sort_releases(&c.common.kernel_releases).join(" "))])
        .collect();
        Ok(ChildEnv { auth_file, isolation, vars })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v))).env_remove("KCPATH").env_remove("DOCKER_CONFIG");
        cmd
    }
}

/// R5.1.
fn clone_pinned(env: &ChildEnv, url: &str, pin: &str, tree: &Path) -> Result<(), Error> {
    if tree.exists() {
        std::fs::remove_dir_all(tree).map_err(io(format!("cannot remove the old clone {}", tree.display())))?;
    }
    std::fs::create_dir_all(tree).map_err(io(format!("cannot create {}", tree.display())))?;
    let git = |args: &[&str], what: &str| {
        let mut cmd = env.command("git");
        cmd.arg("-C").arg(tree).args(args);
        run(cmd, what)
    };
    git(&["init", "--quiet"], "git init")?;
    git(&["remote", "add", "origin", url], "git remote add")?;
    git(&["fetch", "--quiet", "--depth", "1", "origin", pin], "fetching the pinned akmods commit")?;
    git(&["checkout", "--quiet", "--detach", "FETCH_HEAD"], "checking out the pinned akmods commit")?;
    let head = git(&["rev-parse", "HEAD"], "git rev-parse HEAD")?.trim().to_string();
    if head != pin {
        return Err(Error::PinnedRefMismatch { expected: pin.to_string(), found: head });
    }
    Ok(())
}

/// R5.2 and R5.3 on the clone.
fn patch_tree(tree: &Path, fedora: &str, org: &str, repo: &str) -> Result<(), Error> {
    let justfile = tree.join("Justfile");
    let text =
        std::fs::read_to_string(&justfile).map_err(io("Failed to patch cloned akmods Justfile: cannot read it"))?;
    std::fs::write(&justfile, patch_justfile(&text)?).map_err(io("cannot write the patched Justfile"))?;
    let images = tree.join("images.yaml");
    let text = std::fs::read_to_string(&images).map_err(|_| justfile::Error::NoImagesYaml)?;
    std::fs::write(&images, configure_images_yaml(&text, fedora, org, repo)?)
        .map_err(io("cannot write images.yaml"))?;
    Ok(())
}

/// A fresh build root `<root>` with `cache.json` at `<root>/main-<fedora>/KCWD/rpms/cache.json`.
fn seed_build_root(root: &Path, fedora: &str, kernel: &str) -> Result<(), Error> {
    if root.exists() {
        std::fs::remove_dir_all(root).map_err(io(format!("cannot clear the build root {}", root.display())))?;
    }
    let kcwd = root.join(format!("main-{fedora}")).join("KCWD");
    let kcpath = kcwd.join("rpms");
    std::fs::create_dir_all(&kcpath).map_err(io(format!("cannot create {}", kcpath.display())))?;
    let cache = kernel_cache(kernel, &kcwd, &kcpath);
    let text = serde_json::to_string_pretty(&cache).map_err(|e| Error::Command(e.to_string()))?;
    std::fs::write(kcpath.join("cache.json"), text).map_err(io("cannot write cache.json"))
}

fn kernel_cache(kernel: &str, kcwd: &Path, kcpath: &Path) -> KernelCache {
    let flavor = "main";
    KernelCache {
        kernel_build_tag: String::new(),
        kernel_flavor: flavor.into(),
        kernel_major_minor_patch: kernel.split('.').take(3).collect::<Vec<_>>().join("."),
        kernel_release: kernel.into(),
        kernel_name: if flavor.starts_with("longterm") { "kernel-longterm" } else { "kernel" }.into(),
        kcwd: kcwd.display().to_string(),
        kcpath: kcpath.display().to_string(),
    }
}

/// Removes a local image by name; absent is fine (that is the point).
fn remove_image(env: &ChildEnv, name: &str) {
    if image_id(env, name).is_some() {
        let mut cmd = env.command("buildah");
        cmd.args(["rmi", "-f", name]);
        if let Err(e) = run(cmd, "removing a stale local image") {
            tracing::warn!("{e}");
        }
    }
}

fn image_id(env: &ChildEnv, name: &str) -> Option<String> {
    let mut cmd = env.command("buildah");
    cmd.args(["images", "--noheading", "--no-trunc", "--format", "{{.ID}}", name]);
    let out = cmd.stdin(std::process::Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.lines().next().map(str::trim).map(str::to_string))
        .flatten()
        .filter(|id| !id.is_empty())
}

/// Copies `rpms/` and `kernel-rpms/` of a local image into the merge context.
fn unpack_image(env: &ChildEnv, id: &str, context: &Path) -> Result<(), Error> {
    let mut from = env.command("buildah");
    from.args(["from", "--pull=never", id]);
    let container = run(from, "creating a working container")?.trim().to_string();
    let result = (|| {
        let mut mount = env.command("buildah");
        mount.args(["mount", &container]);
        let root = PathBuf::from(run(mount, "mounting the image")?.trim());
        for dir in ["rpms", "kernel-rpms"] {
            let source = root.join(dir);
            if source.is_dir() {
                copy_tree(&source, &context.join(dir))?;
            }
        }
        Ok(())
    })();
    let mut rm = env.command("buildah");
    rm.args(["rm", &container]);
    let removed = run(rm, "removing the working container");
    result.and(removed.map(drop))
}

/// Regular files and directories only: a link in an image must not point the merge elsewhere.
fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(to).map_err(io(format!("cannot create {}", to.display())))?;
    for entry in std::fs::read_dir(from).map_err(io(format!("cannot read {}", from.display())))? {
        let entry = entry.map_err(io(format!("cannot read {}", from.display())))?;
        let kind = entry.file_type().map_err(io("cannot stat an image file"))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).map_err(io(format!("cannot copy to {}", target.display())))?;
        } else {
            tracing::warn!(path = %entry.path().display(), "not merged: neither a file nor a directory");
        }
    }
    Ok(())
}

/// The required kernels whose `kmod-zfs-<kr>-<version>.rpm` is in `rpm_dir` (exact release
/// match, [`rpm_kernel`]).
pub fn merged_kernels(rpm_dir: &Path, required: &[String]) -> Result<BTreeSet<String>, Error> {
    let names = match std::fs::read_dir(rpm_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(format!("cannot read {}", rpm_dir.display()))(e)),
    };
    Ok(covered_kernels(names.iter().map(String::as_str), required))
}

/// Which of `required` the RPM file names cover.
pub fn covered_kernels<'a>(names: impl IntoIterator<Item = &'a str>, required: &[String]) -> BTreeSet<String> {
    let found: BTreeSet<&str> = names.into_iter().filter_map(rpm_kernel).collect();
    required.iter().filter(|k| found.contains(k.as_str())).cloned().collect()
}

/// The labels of the merged image: `KZO_IMAGE_LABELS`, whose kernel list must be what the
/// merged content holds (labels are trusted by later cache decisions, H11).
fn merged_labels(c: &AkmodsContract, kernels: &[String]) -> Result<Vec<(String, String)>, Error> {
    let mut out = c.image_labels.clone();
    let actual = kernels.join(" ");
    match out.get(labels::KERNEL_RELEASES) {
        Some(claimed) if sort_releases(claimed.split_whitespace()).join(" ") != actual => {
            return Err(Error::LabelMismatch { key: labels::KERNEL_RELEASES.into(), claimed: claimed.clone(), actual });
        }
        _ => {
            out.insert(labels::KERNEL_RELEASES.into(), actual);
        }
    }
    out.insert(labels::CACHE_FORMAT.into(), labels::FORMAT_VERSION.into());
    Ok(out.into_iter().collect())
}

fn write_containerfile(context: &Path, labels: &[(String, String)]) -> Result<(), Error> {
    std::fs::create_dir_all(context.join("kernel-rpms")).map_err(io("cannot create kernel-rpms"))?;
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut text = String::from("FROM scratch\n");
    for (key, value) in labels {
        text.push_str(&format!("LABEL {}={}\n", quote(key), quote(value)));
    }
    text.push_str("COPY kernel-rpms /kernel-rpms\nCOPY rpms /rpms\n");
    std::fs::write(context.join("Containerfile"), text).map_err(io("cannot write the merge Containerfile"))
}

/// Pushes a local image; returns the manifest digest buildah pushed.
fn push(env: &ChildEnv, image: &str, target: &str, work: &Path) -> Result<String, Error> {
    let digest_file = work.join("push.digest");
    let _ = std::fs::remove_file(&digest_file);
    let mut cmd = env.command("buildah");
    cmd.args(["push", "--retry", "3", "--authfile"])
        .arg(&env.auth_file)
        .arg("--digestfile")
        .arg(&digest_file)
        .arg(image)
        .arg(format!("docker://{target}"));
    run(cmd, &format!("pushing {target}"))?;
    let digest = std::fs::read_to_string(&digest_file).map_err(io("buildah wrote no digest file"))?;
    let digest = digest.trim().to_string();
    if !crate::jobs::result::is_digest(&digest) {
        return Err(Error::Command(format!("pushing {target}: buildah reported digest {digest:?}")));
    }
    tracing::info!("pushed {target}@{digest}");
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cache_json_has_the_upstream_shape() {
        let c =
            kernel_cache("6.18.12-200.fc43.x86_64", Path::new("/r/main-43/KCWD"), Path::new("/r/main-43/KCWD/rpms"));
        let text = serde_json::to_string_pretty(&c).unwrap();
        assert_eq!(
            text,
            "{\n  \"kernel_build_tag\": \"\",\n  \"kernel_flavor\": \"main\",\n  \"kernel_major_minor_patch\": \"6.18.12-200\",\n  \"kernel_release\": \"6.18.12-200.fc43.x86_64\",\n  \"kernel_name\": \"kernel\",\n  \"KCWD\": \"/r/main-43/KCWD\",\n  \"KCPATH\": \"/r/main-43/KCWD/rpms\"\n}"
        );
    }

    #[test]
    fn coverage_needs_the_exact_release() {
        let required = vec!["6.18.1-200.fc43.x86_64".to_string(), "6.18.13-200.fc43.x86_64".to_string()];
        let names = [
            "kmod-zfs-6.18.13-200.fc43.x86_64-2.4.1-1.fc43.x86_64.rpm",
            "kmod-zfs-6.18.1-200.fc43.x86_64+debug-2.4.1-1.rpm",
        ];
        assert_eq!(covered_kernels(names, &required), BTreeSet::from(["6.18.13-200.fc43.x86_64".to_string()]));
    }

    proptest! {
        /// A kmod RPM named for a kernel covers exactly that kernel, whatever its version and
        /// release, and never another required kernel.
        #[test]
        fn an_rpm_covers_exactly_its_kernel(
            major in 5u32..7, minor in 0u32..30, patch in 0u32..30, build in 100u32..300,
            other_patch in 0u32..30,
            version in "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}", release in "[0-9]{1,2}\\.fc4[0-9]",
        ) {
            let kernel = format!("{major}.{minor}.{patch}-{build}.fc43.x86_64");
            let other = format!("{major}.{minor}.{other_patch}-{build}.fc43.x86_64");
            let name = format!("kmod-zfs-{kernel}-{version}-{release}.x86_64.rpm");
            let covered = covered_kernels([name.as_str()], &[kernel.clone(), other.clone()]);
            prop_assert!(covered.contains(&kernel));
            prop_assert_eq!(covered.contains(&other), other == kernel);
        }

        /// Arbitrary file names never panic and only cover kernels they name exactly.
        #[test]
        fn arbitrary_names_cover_only_named_kernels(name in "[ -~]{0,80}") {
            let required = vec!["6.18.9-200.fc43.x86_64".to_string()];
            let covered = covered_kernels([name.as_str()], &required);
            prop_assert!(covered.is_empty() || name.starts_with("kmod-zfs-6.18.9-200.fc43.x86_64-"));
        }
    }
}
