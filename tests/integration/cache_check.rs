//! The akmods cache decision against the registry fixture, mostly through the
//! `kinoite-zfs-operator cache-check` binary: labels (reusable, stale, built from other inputs),
//! the layer scan (reusable, stale, exact release match, whiteouts), indexes, a missing image,
//! and registry failures that must never read as "missing" (H5).

use std::process::Command;

use kinoite_zfs_operator::api::build::{CacheCheckMethod, CacheStatus};
use kinoite_zfs_operator::controllers::image_build::execute;
use kinoite_zfs_operator::controllers::image_build::work::{CacheRequest, FailureClass, WorkOutcome};
use kinoite_zfs_operator::pipeline::cache::labels;
use kinoite_zfs_operator::pipeline::scan_memory::ScanMemory;
use kinoite_zfs_operator::registry::{ClientSettings, Credential, CredentialSet, OciRegistry};
use serde_json::Value;

use crate::support::image::{Entry, ImageSpec, Layer, Platform, Pusher};
use crate::support::registry::Registry;
use crate::support::{init, skopeo};

pub const K1: &str = "6.18.1-200.fc43.x86_64";
pub const K2: &str = "6.18.2-200.fc43.x86_64";
pub const K13: &str = "6.18.13-200.fc43.x86_64";
const ZFS: &str = "2.4";
const AKMODS_REF: &str = "9d13b6950811cdaae2e8ab748c85c5da35810ae3";

/// A finished run of the operator binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON (panics with both streams when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

/// Runs `kinoite-zfs-operator ARGS` off the async runtime (a proxy in this test may have to
/// answer it).
pub async fn operator(args: Vec<String>) -> Run {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator")).args(&args).output().expect("run the operator")
    })
    .await
    .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `cache-check` against `host` (plain HTTP) for these kernels plus extra flags.
async fn cache_check(host: &str, image: &str, kernels: &[&str], extra: &[&str]) -> Run {
    let mut args: Vec<String> =
        vec!["cache-check".into(), "--insecure-registry".into(), host.into(), "--image".into(), image.into()];
    for k in kernels {
        args.extend(["--kernel-release".to_string(), k.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    operator(args).await
}

/// A verdict run: exit 0 and JSON on stdout.
async fn verdict(host: &str, image: &str, kernels: &[&str], extra: &[&str]) -> Value {
    let run = cache_check(host, image, kernels, extra).await;
    assert_eq!(run.code, 0, "cache-check gave no verdict:\n{}", run.stderr);
    run.json()
}

fn rpm(kernel: &str) -> String {
    format!("rpms/kmods/zfs/kmod-zfs-{kernel}-2.4.1-1.fc43.x86_64.rpm")
}

/// An akmods cache image: userspace RPMs, kmod RPMs for `kernels`, and the given labels.
fn cache_image(kernels: &[&str], label_pairs: &[(&str, &str)]) -> ImageSpec {
    let mut entries = vec![
        Entry::dir("rpms/kmods/zfs"),
        Entry::file("rpms/kmods/zfs/zfs-2.4.1-1.fc43.x86_64.rpm", b"userspace".to_vec()),
        Entry::file("kernel-rpms/kernel-core.rpm", b"k".to_vec()),
    ];
    entries.extend(kernels.iter().map(|k| Entry::file(&rpm(k), format!("kmod for {k}").into_bytes())));
    let mut spec = ImageSpec::new(vec![Layer::gzip(entries)]);
    for (k, v) in label_pairs {
        spec = spec.label(k, v);
    }
    spec
}

fn ours(kernels: &str) -> Vec<(&'static str, String)> {
    vec![
        (labels::CACHE_FORMAT, "1".into()),
        (labels::KERNEL_RELEASES, kernels.into()),
        (labels::ZFS_MINOR_VERSION, ZFS.into()),
        (labels::AKMODS_REF, AKMODS_REF.into()),
        (labels::BUILDER_DIGEST, format!("sha256:{}", "b".repeat(64))),
    ]
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn labels_decide_without_reading_layers() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let pusher = Pusher::new(&registry);
    // The layers hold no kmod RPM at all: a reusable verdict can only have come from the labels.
    let with_labels =
        cache_image(&[], &[(labels::CACHE_FORMAT, "1"), (labels::KERNEL_RELEASES, &format!("{K1} {K2}"))]);
    let pushed = pusher.push_image("akmods/cache", Some("main-43"), &with_labels).await;
    let image = format!("{host}/akmods/cache:main-43");

    let out = verdict(host, &image, &[K1, K2], &[]).await;
    assert_eq!(out["status"], "reusable", "{out}");
    assert_eq!(out["method"], "labels");
    assert_eq!(out["missing_releases"], serde_json::json!([]));
    assert_eq!(out["reason"], Value::Null);
    assert_eq!(out["bytes_read"], 0);
    assert_eq!(out["source_image"], format!("{host}/akmods/cache@{}", pushed.digest));
    // skopeo, an independent client, agrees on the digest.
    let inspected: Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &format!("docker://{image}")])).unwrap();
    assert_eq!(inspected["Digest"], pushed.digest.as_str());

    let out = verdict(host, &image, &[K1, K13], &[]).await;
    assert_eq!(out["status"], "stale", "{out}");
    assert_eq!(out["method"], "labels");
    assert_eq!(out["missing_releases"], serde_json::json!([K13]));
    assert!(out["reason"].as_str().unwrap().contains(&format!("does not cover kernel releases {K13}")), "{out}");

    // Exact matches only: 6.18.1 is not covered by a label listing 6.18.13.
    let only13 = cache_image(&[], &[(labels::CACHE_FORMAT, "1"), (labels::KERNEL_RELEASES, K13)]);
    pusher.push_image("akmods/cache", Some("only13"), &only13).await;
    let out = verdict(host, &format!("{host}/akmods/cache:only13"), &[K1], &[]).await;
    assert_eq!((out["status"].as_str(), out["missing_releases"][0].as_str()), (Some("stale"), Some(K1)));
}

#[tokio::test]
async fn a_cache_built_from_other_inputs_is_stale() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let labelled = ours(&format!("{K1} {K2}"));
    Pusher::new(&registry)
        .push_image("akmods/cache", Some("main-43"), &cache_image(&[K1, K2], &pairs(&labelled)))
        .await;
    let image = format!("{host}/akmods/cache:main-43");
    let builder = format!("sha256:{}", "b".repeat(64));
    let same = ["--zfs-minor-version", ZFS, "--akmods-ref", AKMODS_REF, "--builder-digest", &builder];
    let out = verdict(host, &image, &[K1, K2], &same).await;
    assert_eq!(out["status"], "reusable", "{out}");

    let other_builder = format!("sha256:{}", "c".repeat(64));
    for (flag, value, says) in [
        ("--zfs-minor-version", "2.3", "built from ZFS minor version 2.4"),
        ("--akmods-ref", "906e565f0000000000000000000000000000aaaa", "built from akmods commit 9d13b69"),
        ("--builder-digest", other_builder.as_str(), "built from builder image sha256:bbbb"),
    ] {
        let out = verdict(host, &image, &[K1, K2], &[flag, value]).await;
        assert_eq!(out["status"], "stale", "{flag}: {out}");
        assert_eq!(out["missing_releases"], serde_json::json!([]), "the kernels are covered, the inputs differ");
        let reason = out["reason"].as_str().unwrap();
        assert!(reason.contains(says) && reason.contains(&format!("requested {value}")), "{flag}: {reason}");
    }
    // Several differences are all named.
    let out = verdict(host, &image, &[K1, K13], &["--zfs-minor-version", "2.3", "--akmods-ref", &"f".repeat(40)]).await;
    let reason = out["reason"].as_str().unwrap();
    assert!(
        reason.contains(K13) && reason.contains("ZFS minor version") && reason.contains("akmods commit"),
        "{reason}"
    );
}

#[tokio::test]
async fn the_layer_scan_matches_exact_releases_in_the_merged_view() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let pusher = Pusher::new(&registry);
    // No labels (a reference cache, F21), a format the code does not know, and format 1 with an
    // empty kernel list all fall back to the scan.
    let no_labels = pusher.push_image("akmods/cache", Some("plain"), &cache_image(&[K13, K2], &[])).await;
    pusher
        .push_image(
            "akmods/cache",
            Some("format2"),
            &cache_image(&[K13, K2], &[(labels::CACHE_FORMAT, "2"), (labels::KERNEL_RELEASES, K1)]),
        )
        .await;
    pusher
        .push_image(
            "akmods/cache",
            Some("empty"),
            &cache_image(&[K13, K2], &[(labels::CACHE_FORMAT, "1"), (labels::KERNEL_RELEASES, " ")]),
        )
        .await;
    for tag in ["plain", "format2", "empty"] {
        let image = format!("{host}/akmods/cache:{tag}");
        let out = verdict(host, &image, &[K2, K13], &[]).await;
        assert_eq!(
            (out["status"].as_str(), out["method"].as_str()),
            (Some("reusable"), Some("layer_scan")),
            "{tag}: {out}"
        );
        assert!(out["bytes_read"].as_u64().unwrap() > 0);
        let out = verdict(host, &image, &[K1, K13], &[]).await;
        assert_eq!(out["status"], "stale", "{tag}: 6.18.1 must not match kmod-zfs-6.18.13-…: {out}");
        assert_eq!(out["missing_releases"], serde_json::json!([K1]));
        assert_eq!(out["method"], "layer_scan");
    }
    let out = verdict(host, &format!("{host}/akmods/cache:plain"), &[K13], &[]).await;
    assert_eq!(out["bytes_read"].as_u64(), Some(no_labels.total_layer_bytes()), "every layer was read");

    // Releases that are a prefix of another kernel's RPM name are not covered by it: a short
    // `6.18.1` against `kmod-zfs-6.18.13-…`, and a kernel against its `+debug` variant's RPM.
    let debug = format!("{K1}+debug");
    pusher.push_image("akmods/cache", Some("prefixes"), &cache_image(&[K13, &debug], &[])).await;
    let out = verdict(host, &format!("{host}/akmods/cache:prefixes"), &["6.18.1", K1, &debug], &[]).await;
    assert_eq!(out["missing_releases"], serde_json::json!(["6.18.1", K1]), "{out}");

    // A later layer removing an RPM (whiteout) or the whole directory (opaque) uncovers kernels.
    let mut layered = cache_image(&[K1, K2], &[]);
    layered.layers.push(Layer::gzip(vec![Entry::whiteout(&rpm(K1))]));
    pusher.push_image("akmods/cache", Some("whiteout"), &layered).await;
    let out = verdict(host, &format!("{host}/akmods/cache:whiteout"), &[K1, K2], &[]).await;
    assert_eq!((out["status"].as_str(), out["missing_releases"].clone()), (Some("stale"), serde_json::json!([K1])));
    let mut opaque = cache_image(&[K1, K2], &[]);
    opaque.layers.push(Layer::gzip(vec![Entry::opaque("rpms/kmods/zfs"), Entry::file(&rpm(K13), b"new".to_vec())]));
    pusher.push_image("akmods/cache", Some("opaque"), &opaque).await;
    let out = verdict(host, &format!("{host}/akmods/cache:opaque"), &[K1, K2, K13], &[]).await;
    assert_eq!(out["missing_releases"], serde_json::json!([K1, K2]), "{out}");
}

#[tokio::test]
async fn an_index_is_decided_on_its_linux_amd64_image() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let amd64 = cache_image(&[K1], &[]);
    let arm64 = cache_image(&[K2], &[(labels::CACHE_FORMAT, "1"), (labels::KERNEL_RELEASES, K2)])
        .platform(Platform::linux("arm64"));
    let index = Pusher::new(&registry).push_index("akmods/multi", Some("main-43"), &[arm64, amd64]).await;
    let out = verdict(host, &format!("{host}/akmods/multi:main-43"), &[K1], &[]).await;
    assert_eq!((out["status"].as_str(), out["method"].as_str()), (Some("reusable"), Some("layer_scan")), "{out}");
    assert_eq!(out["source_image"], format!("{host}/akmods/multi@{}", index.digest), "pinned by the index digest");
    assert_eq!(out["platform_digest"], index.children[1].digest.as_str());
    let out = verdict(host, &format!("{host}/akmods/multi:main-43"), &[K2], &[]).await;
    assert_eq!(out["status"], "stale", "the arm64 image's labels do not count: {out}");
}

#[tokio::test]
async fn only_a_real_absent_is_missing_image() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let pusher = Pusher::new(&registry);
    pusher.push_image("akmods/cache", Some("main-42"), &cache_image(&[K1], &[])).await;
    for image in [format!("{host}/akmods/cache:main-43"), format!("{host}/akmods/nothing-here:main-43")] {
        let out = verdict(host, &image, &[K1, K2], &[]).await;
        assert_eq!(out["status"], "missing_image", "{out}");
        assert_eq!(out["missing_releases"], serde_json::json!([K1, K2]));
        assert_eq!(out["method"], Value::Null);
        assert_eq!(out["source_image"], image.as_str());
        assert!(out["reason"].as_str().unwrap().contains("does not exist"));
    }

    // An index whose linux/amd64 image was deleted is broken, not missing.
    let index = pusher.push_index("akmods/broken", Some("main-43"), &[cache_image(&[K1], &[])]).await;
    pusher.delete_manifest("akmods/broken", &index.children[0].digest).await;
    let run = cache_check(host, &format!("{host}/akmods/broken:main-43"), &[K1], &[]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.contains("not found") && run.stderr.contains(&index.children[0].digest), "{}", run.stderr);
}

#[tokio::test]
async fn unauthorized_and_unreachable_are_errors_not_missing() {
    init();
    let registry = Registry::start_with_auth("builder", "cache-pw-19ab").await;
    let host = registry.host().to_string();
    let pusher = Pusher::new(&registry);
    pusher.push_image("akmods/private", Some("main-43"), &cache_image(&[K1], &[])).await;
    let image = format!("{host}/akmods/private:main-43");

    // Anonymous, and wrong credentials: no verdict (exit 2), never "missing_image".
    let wrong = registry.dir().join("wrong.json");
    let auth = base64_auth("builder", "not-the-password");
    std::fs::write(&wrong, format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
    for extra in [vec![], vec!["--registry-config".to_string(), wrong.display().to_string()]] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        for tag in ["main-43", "absent-tag"] {
            let run = cache_check(&host, &format!("{host}/akmods/private:{tag}"), &[K1], &extra).await;
            assert_eq!(run.code, 2, "{extra:?} {tag}: {}", run.stdout);
            assert!(run.stdout.is_empty(), "no verdict on stdout: {}", run.stdout);
            assert!(run.stderr.contains("unauthorized"), "{}", run.stderr);
            assert!(
                !run.stderr.contains("missing_image") && !run.stderr.contains("not-the-password"),
                "{}",
                run.stderr
            );
        }
    }
    // The right credentials give a verdict.
    let config = registry.docker_config();
    let out = verdict(&host, &image, &[K1], &["--registry-config", config.to_str().unwrap()]).await;
    assert_eq!(out["status"], "reusable", "{out}");
    let out = verdict(
        &host,
        &format!("{host}/akmods/private:absent"),
        &[K1],
        &["--registry-config", config.to_str().unwrap()],
    )
    .await;
    assert_eq!(out["status"], "missing_image");

    // The controller's work item: unauthorized is a failure of that class, not a verdict.
    let request = |image: &str| CacheRequest {
        image: image.to_string(),
        kernel_releases: vec![K1.into()],
        zfs_minor_version: ZFS.into(),
        akmods_ref: AKMODS_REF.into(),
        builder_digest: String::new(),
    };
    let anonymous = client(&host, None);
    let WorkOutcome::Failed(failure) = execute::check_cache(&anonymous, &request(&image), &ScanMemory::default()).await
    else {
        panic!("expected a failure")
    };
    assert_eq!(failure.class, FailureClass::Unauthorized, "{}", failure.message);
    let authorized = client(&host, Some(("builder", "cache-pw-19ab")));
    let WorkOutcome::Cache(v) = execute::check_cache(&authorized, &request(&image), &ScanMemory::default()).await
    else {
        panic!("expected a verdict")
    };
    assert_eq!((v.status, v.method), (CacheStatus::Reusable, Some(CacheCheckMethod::LayerScan)));
    assert!(v.source_image.contains("@sha256:"));

    // A registry that is down: no verdict, and the work item is a transient failure.
    let mut registry = registry;
    registry.stop();
    let run = cache_check(&host, &image, &[K1], &[]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    let WorkOutcome::Failed(failure) =
        execute::check_cache(&authorized, &request(&image), &ScanMemory::default()).await
    else {
        panic!()
    };
    assert_eq!(failure.class, FailureClass::Transient, "{}", failure.message);
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let image = format!("{host}/akmods/cache:main-43");
    for (kernels, extra, says) in [
        (vec!["6.18/../../etc"], vec![], "invalid kernel release"),
        (vec![K1], vec!["--akmods-ref", "9d13b69"], "invalid --akmods-ref"),
        (vec![K1], vec!["--zfs-minor-version", "two"], "invalid --zfs-minor-version"),
        (vec![K1], vec!["--builder-digest", "latest"], "invalid --builder-digest"),
    ] {
        let run = cache_check(host, &image, &kernels, &extra).await;
        assert_eq!(run.code, 2, "{says}: {}", run.stdout);
        assert!(run.stderr.contains(says), "{}", run.stderr);
    }
    let run = cache_check(host, "akmods/cache:main-43", &[K1], &[]).await;
    assert!(run.code == 2 && run.stderr.contains("not fully qualified"), "{}", run.stderr);
    let run = operator(vec!["cache-check".into(), "--image".into(), image]).await;
    assert!(run.code == 2 && run.stderr.contains("--kernel-release"), "clap requires a kernel: {}", run.stderr);
}

fn base64_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

pub fn client(host: &str, credentials: Option<(&str, &str)>) -> OciRegistry {
    let mut set = CredentialSet::anonymous();
    if let Some((user, password)) = credentials {
        set.insert(host, Credential::new(user, password));
    }
    OciRegistry::new(ClientSettings {
        credentials: set,
        insecure_registries: [host.to_string()].into(),
        retry: kinoite_zfs_operator::registry::RetryPolicy {
            max_attempts: 2,
            base_delay: std::time::Duration::from_millis(10),
            ..Default::default()
        },
        ..ClientSettings::default()
    })
    .unwrap()
}
