//! The builder for real: `builder install` and `builder akmods` run from the Job the operator
//! renders, by the kubelet stand-in, with real git, buildah (vfs, chroot), rpmbuild, skopeo and
//! the registry fixture. Only the upstream `just` recipes are a stand-in (docs/testing.md).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::batch::v1::Job;
use kinoite_zfs_operator::api::build::{CacheCheckMethod, CacheStatus};
use kinoite_zfs_operator::controllers::image_build::execute;
use kinoite_zfs_operator::controllers::image_build::work::{CacheRequest, WorkOutcome};
use kinoite_zfs_operator::jobs::JobKind;
use kinoite_zfs_operator::jobs::result::{self, BuilderResult};
use kinoite_zfs_operator::pipeline::cache::labels;
use kinoite_zfs_operator::pipeline::scan_memory::ScanMemory;
use serde_json::Value;

use crate::cache_check::{client, operator};
use crate::support::akmods::{self, BUILDER_DIGEST, CANDIDATE, K1, K2, Node, ORG, Remote, Shape};
use crate::support::faults::{Fault, FaultProxy};
use crate::support::init;
use crate::support::kubelet::{Kubelet, PodRun};
use crate::support::registry::Registry;

const USER: &str = "pusher";
const PASSWORD: &str = "push-secret-7f3a";

/// Runs the pod off the async runtime (the registry proxy of a test must keep answering).
async fn run_pod(kubelet: Kubelet, job: Job) -> (Kubelet, PodRun) {
    tokio::task::spawn_blocking(move || {
        let run = kubelet.run(&job, "pod-1");
        (kubelet, run)
    })
    .await
    .unwrap()
}

/// `skopeo inspect` of `reference` with the registry's credentials; `None` when it fails.
fn inspect(registry: &Registry, reference: &str) -> Option<Value> {
    let out = Command::new(crate::support::registry::find_tool("skopeo", "skopeo"))
        .args(["inspect", "--tls-verify=false", "--authfile"])
        .arg(registry.docker_config())
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn repository(registry: &Registry) -> String {
    format!("{}/{ORG}/{CANDIDATE}", registry.host())
}

/// The merged tags a Main run 1 pushes (arch tag, shared tag, run tag).
fn merged_tags(registry: &Registry) -> Vec<String> {
    let repo = repository(registry);
    vec![format!("{repo}:main-43-x86_64"), format!("{repo}:main-43"), format!("{repo}:1-43")]
}

fn assert_nothing_merged_pushed(registry: &Registry) {
    for tag in merged_tags(registry) {
        assert!(inspect(registry, &tag).is_none(), "{tag} must not have been pushed");
    }
}

/// Runs the akmods Job of run 1 for `kernels` against an auth registry; returns the run.
async fn akmods_run(
    registry: &Registry,
    node: &Node,
    remote: &Remote,
    pin: &str,
    kernels: &[&str],
    stub_env: &[(&str, &str)],
) -> PodRun {
    let build = akmods::build(registry.host(), &remote.url(), pin);
    let inputs = akmods::inputs(kernels, pin);
    let job = akmods::akmods_job_for(&build, &inputs, 1);
    let mut kubelet = node.kubelet(
        Path::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator")),
        &std::fs::read(registry.docker_config()).unwrap(),
    );
    kubelet.node_env.extend(stub_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    run_pod(kubelet, job).await.1
}

fn failure(run: &PodRun) -> String {
    let builder = run.builder();
    assert_ne!(builder.exit_code, 0, "the builder must fail; logs:\n{}", builder.logs);
    assert!(!builder.logs.contains(PASSWORD) && !builder.message.contains(PASSWORD), "a secret leaked");
    assert!(builder.message.starts_with("akmods failed: "), "termination message: {:?}", builder.message);
    builder.message.clone()
}

#[tokio::test]
async fn two_kernels_make_a_cache_that_cache_check_and_the_operator_accept() {
    init();
    let registry = Registry::start_with_auth(USER, PASSWORD).await;
    let node = Node::new(&[registry.host()]);
    let remote = Remote::create(Shape::Upstream);
    // Given in the "wrong" order: the builder builds in natural order.
    let run = akmods_run(&registry, &node, &remote, &remote.commit, &[K2, K1], &[]).await;
    let builder = run.builder();
    assert_eq!(builder.exit_code, 0, "logs:\n{}", builder.logs);
    assert!(!builder.logs.contains(PASSWORD), "the push password must never be logged");
    assert!(builder.logs.contains(&format!("Pinned akmods kernel release to {K1}")), "{}", builder.logs);
    assert_eq!(run.init[0].exit_code, 0, "{}", run.init[0].logs);

    // The pod status carries the result document, which the operator's parser accepts.
    let status = run.status.container_statuses.as_ref().unwrap()[0].clone();
    let message = status.state.unwrap().terminated.unwrap().message.unwrap();
    assert!(message.len() < 4096);
    let BuilderResult::Akmods { digest, kernel_releases } = result::parse(JobKind::Akmods, &message).unwrap() else {
        panic!("an akmods result")
    };
    assert_eq!(kernel_releases, vec![K1.to_string(), K2.to_string()]);

    // Each kernel had its own build root, build then push, in natural order.
    let log = node.just_log();
    assert_eq!(log.len(), 4, "{log:?}");
    for (line, (recipe, kernel)) in log.iter().zip([("build", K1), ("push", K1), ("build", K2), ("push", K2)]) {
        assert!(
            line.starts_with(&format!("{recipe} {kernel} ")) && line.ends_with(&format!("/akmods-build/{kernel}")),
            "{line}"
        );
    }

    // Every merged tag is the reported digest (as the registry answers it), with the labels.
    for tag in merged_tags(&registry) {
        let info = inspect(&registry, &tag).unwrap_or_else(|| panic!("{tag} was not pushed"));
        assert_eq!(info["Digest"], digest.as_str(), "{tag}");
        let l = &info["Labels"];
        assert_eq!(l[labels::CACHE_FORMAT], "1");
        assert_eq!(l[labels::KERNEL_RELEASES], format!("{K1} {K2}"));
        assert_eq!(l[labels::AKMODS_REF], remote.commit.as_str());
        assert_eq!(l[labels::ZFS_MINOR_VERSION], "2.4");
        assert_eq!(l[labels::BUILDER_DIGEST], BUILDER_DIGEST);
    }
    // The newest kernel's debug alias (R6.2) and nothing in the stable akmods repository (H1).
    let repo = repository(&registry);
    assert!(inspect(&registry, &format!("{repo}:main-43-{K2}")).is_some());
    let stable = format!("{}/{ORG}/kinoite-zfs-bluebuild-akmods:main-43", registry.host());
    assert!(inspect(&registry, &stable).is_none(), "the stable akmods tag never moves in a build");

    // `cache-check` says Reusable by labels ...
    let pinned = format!("{repo}@{digest}");
    let config = registry.docker_config().display().to_string();
    let check = |image: String| {
        let mut args: Vec<String> =
            ["cache-check", "--insecure-registry", registry.host(), "--registry-config", config.as_str()]
                .map(String::from)
                .into();
        args.extend(["--image".into(), image]);
        for k in [K1, K2] {
            args.extend(["--kernel-release".to_string(), k.to_string()]);
        }
        args.extend([
            "--akmods-ref".to_string(),
            remote.commit.clone(),
            "--builder-digest".into(),
            BUILDER_DIGEST.into(),
        ]);
        operator(args)
    };
    let verdict = check(pinned.clone()).await.json();
    assert_eq!(
        (verdict["status"].as_str(), verdict["method"].as_str()),
        (Some("reusable"), Some("labels")),
        "{verdict}"
    );
    // ... and by layer scan, on the same content with the cache labels removed.
    let copy = format!("{repo}:unlabelled");
    let ctr = node.buildah(&["from", "--pull=never", &format!("localhost/{CANDIDATE}:main-43")]).trim().to_string();
    node.buildah(&["config", "--label", &format!("{}-", labels::CACHE_FORMAT), &ctr]);
    node.buildah(&["commit", "--quiet", "--rm", &ctr, "localhost/unlabelled:1"]);
    let auth = format!("--authfile={config}");
    node.buildah(&["push", &auth, "localhost/unlabelled:1", &format!("docker://{copy}")]);
    let verdict = check(copy).await.json();
    assert_eq!(
        (verdict["status"].as_str(), verdict["method"].as_str()),
        (Some("reusable"), Some("layer_scan")),
        "{verdict}"
    );

    // The operator's own confirmation of the reported digest accepts it.
    let request = CacheRequest {
        image: pinned,
        kernel_releases: vec![K1.into(), K2.into()],
        zfs_minor_version: "2.4".into(),
        akmods_ref: remote.commit.clone(),
        builder_digest: BUILDER_DIGEST.into(),
    };
    let registry_client = client(registry.host(), Some((USER, PASSWORD)));
    let memory = ScanMemory::default();
    let WorkOutcome::Cache(v) = execute::check_cache(&registry_client, &request, &memory).await else {
        panic!("expected a verdict")
    };
    assert_eq!((v.status, v.method), (CacheStatus::Reusable, Some(CacheCheckMethod::Labels)));
    // The operator's confirmation of what an akmods Job reported reads the layers, not the labels.
    let WorkOutcome::Cache(v) = execute::confirm_akmods(&registry_client, &request, &memory).await else {
        panic!("expected a verdict")
    };
    assert_eq!((v.status, v.method), (CacheStatus::Reusable, Some(CacheCheckMethod::LayerScan)));
}

#[tokio::test]
async fn a_pin_that_is_not_the_checked_out_commit_fails() {
    init();
    let registry = Registry::start_with_auth(USER, PASSWORD).await;
    let node = Node::new(&[registry.host()]);
    let remote = Remote::create(Shape::Upstream);
    // An annotated tag's object id: fetchable, but HEAD is the commit it points to.
    let run = akmods_run(&registry, &node, &remote, &remote.tag_object, &[K1], &[]).await;
    let message = failure(&run);
    assert!(message.contains("Pinned ref mismatch"), "{message}");
    assert!(message.contains(&remote.commit) && message.contains(&remote.tag_object), "{message}");
    assert!(node.just_log().is_empty(), "nothing is built from an unverified checkout");
    assert_nothing_merged_pushed(&registry);
}

#[tokio::test]
async fn each_missing_upstream_pattern_fails_loudly_and_pushes_nothing() {
    init();
    let registry = Registry::start_with_auth(USER, PASSWORD).await;
    for (shape, says) in [
        (
            Shape::NoVolumePattern,
            "Failed to patch cloned akmods Justfile: no `--volume {{ KCPATH }}:/tmp/kernel_cache:ro`",
        ),
        (
            Shape::NoNamePattern,
            "Failed to patch cloned akmods Justfile: no line starting `akmods_name := 'akmods' + if",
        ),
        (Shape::NoImagesYaml, "the cloned akmods tree has no images.yaml"),
    ] {
        let node = Node::new(&[registry.host()]);
        let remote = Remote::create(shape);
        let run = akmods_run(&registry, &node, &remote, &remote.commit, &[K1], &[]).await;
        let message = failure(&run);
        assert!(message.contains(says), "{shape:?}: {message}");
        assert!(node.just_log().is_empty(), "{shape:?}: nothing is built");
    }
    assert_nothing_merged_pushed(&registry);
}

#[tokio::test]
async fn a_kernel_without_its_rpm_fails_closed_and_pushes_nothing() {
    init();
    let registry = Registry::start_with_auth(USER, PASSWORD).await;
    let node = Node::new(&[registry.host()]);
    let remote = Remote::create(Shape::Upstream);
    let run = akmods_run(&registry, &node, &remote, &remote.commit, &[K1, K2], &[("STUB_NO_RPM_FOR", K1)]).await;
    let message = failure(&run);
    assert!(message.contains(&format!("Merged shared akmods cache is missing kernel RPMs for: {K1}")), "{message}");
    assert!(!message.contains(K2), "only the kernel without its RPM is named: {message}");
    assert_nothing_merged_pushed(&registry);
}

#[tokio::test]
async fn an_older_per_kernel_image_in_storage_is_never_merged() {
    init();
    let registry = Registry::start_with_auth(USER, PASSWORD).await;
    let node = Node::new(&[registry.host()]);
    let remote = Remote::create(Shape::Upstream);
    // A stale per-kernel image (an older ZFS, and a kernel this run does not want) under the
    // name this run's K2 build gets, plus a stale shared tag (F6).
    let stale = node.dir().join("stale");
    std::fs::create_dir_all(stale.join("rpms/kmods/zfs")).unwrap();
    std::fs::write(stale.join(format!("rpms/kmods/zfs/kmod-zfs-{K2}-2.3.0-1.fc43.x86_64.rpm")), "old").unwrap();
    std::fs::write(stale.join("rpms/kmods/zfs/kmod-zfs-6.17.1-100.fc43.x86_64-2.3.0-1.fc43.x86_64.rpm"), "old")
        .unwrap();
    let ctr = node.buildah(&["from", "scratch"]).trim().to_string();
    node.buildah(&["copy", "--quiet", &ctr, stale.to_str().unwrap(), "/"]);
    let stale_name = format!("localhost/{CANDIDATE}:main-43-{K2}");
    node.buildah(&["commit", "--quiet", &ctr, &stale_name]);
    node.buildah(&["commit", "--quiet", "--rm", &ctr, &format!("localhost/{CANDIDATE}:main-43")]);

    // A K2 build that makes no image must fail, not merge the stale one.
    let run = akmods_run(&registry, &node, &remote, &remote.commit, &[K1, K2], &[("STUB_NO_IMAGE_FOR", K2)]).await;
    let message = failure(&run);
    assert!(message.contains(&format!("`just build` for kernel {K2} produced no image {stale_name}")), "{message}");
    assert_nothing_merged_pushed(&registry);

    // A good build merges only this run's RPMs.
    let run = akmods_run(&registry, &node, &remote, &remote.commit, &[K1, K2], &[]).await;
    assert_eq!(run.builder().exit_code, 0, "{}", run.builder().logs);
    let merged =
        node.buildah(&["from", "--pull=never", &format!("localhost/{CANDIDATE}:main-43-x86_64")]).trim().to_string();
    let mount = node.buildah(&["mount", &merged]).trim().to_string();
    let mut rpms: Vec<String> = std::fs::read_dir(format!("{mount}/rpms/kmods/zfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    rpms.sort();
    node.buildah(&["rm", &merged]);
    assert_eq!(
        rpms,
        vec![format!("kmod-zfs-{K2}-2.4.1-1.fc43.x86_64.rpm"), format!("kmod-zfs-{K1}-2.4.1-1.fc43.x86_64.rpm")]
    );
}

#[tokio::test]
async fn a_refused_push_fails_clearly() {
    init();
    let registry = Registry::start().await;
    let proxy = FaultProxy::start(registry.host()).await;
    let node = Node::new(&[proxy.host()]);
    let remote = Remote::create(Shape::Upstream);
    // The registry refuses the merged image's first push (the arch tag) every time.
    proxy.inject_on_method("PUT", "/manifests/main-43-x86_64", Fault::Unavailable, 1000);
    let build = akmods::build(proxy.host(), &remote.url(), &remote.commit);
    let job = akmods::akmods_job_for(&build, &akmods::inputs(&[K1], &remote.commit), 1);
    let kubelet = node.kubelet(Path::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator")), br#"{"auths":{}}"#);
    let (_, run) = run_pod(kubelet, job).await;
    let message = failure(&run);
    assert!(message.contains(&format!("pushing {}/{ORG}/{CANDIDATE}:main-43-x86_64", proxy.host())), "{message}");
    for tag in ["main-43", "1-43"] {
        let reference = format!("{}/{ORG}/{CANDIDATE}:{tag}", registry.host());
        assert!(inspect(&registry, &reference).is_none(), "{reference} pushed after a refused push");
    }
}

#[tokio::test]
async fn an_unwritable_termination_file_fails_before_building() {
    init();
    let registry = Registry::start_with_auth(USER, PASSWORD).await;
    let node = Node::new(&[registry.host()]);
    let remote = Remote::create(Shape::Upstream);
    let build = akmods::build(registry.host(), &remote.url(), &remote.commit);
    let job = akmods::akmods_job_for(&build, &akmods::inputs(&[K1], &remote.commit), 1);
    let mut kubelet = node.kubelet(
        Path::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator")),
        &std::fs::read(registry.docker_config()).unwrap(),
    );
    kubelet.unwritable_termination_file = true;
    let (_, run) = run_pod(kubelet, job).await;
    let builder = run.builder();
    assert_ne!(builder.exit_code, 0);
    assert!(builder.logs.contains("cannot write the result to"), "{}", builder.logs);
    assert!(node.just_log().is_empty(), "nothing is built when no result can be reported");
    assert_nothing_merged_pushed(&registry);
}

#[test]
fn install_copies_the_binary_atomically_and_refuses_unwritable_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_kinoite-zfs-operator");
    let out = Command::new(binary).args(["builder", "install"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let installed = dir.path().join("kinoite-zfs-operator");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(binary).unwrap());
    assert_eq!(std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777, 0o755);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no temp file is left behind: {names:?}");
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert!(version.status.success());

    // A file where the directory should be (root may write anywhere else).
    let not_a_dir = dir.path().join("kinoite-zfs-operator");
    let out = Command::new(binary).args(["builder", "install"]).arg(&not_a_dir).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot install the builder into {}", not_a_dir.display())), "{stderr}");
    let missing = dir.path().join("no/such/dir");
    let out = Command::new(binary).args(["builder", "install"]).arg(&missing).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot install the builder"));
}
