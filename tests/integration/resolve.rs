//! Input resolution against the real registry fixture: `kinoite-zfs-operator resolve` run as a
//! process (output, exit codes, one-line reasons), skopeo as the independent check of digests,
//! and the library's `Resolver` behind the fault proxy for what a process cannot show (one scan
//! per digest, a transient tag lookup is never "no match").

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kinoite_zfs_operator::controllers::image_build::execute;
use kinoite_zfs_operator::controllers::image_build::work::{
    FailureClass, LockRequest, ResolvePurpose, ResolveRequest, WorkOutcome,
};
use kinoite_zfs_operator::pipeline::resolve::{Request, Resolver};
use kinoite_zfs_operator::registry::{ClientSettings, OciRegistry, RetryPolicy};
use serde_json::Value;

use crate::support::faults::{Fault, FaultProxy};
use crate::support::image::{Compression, Entry, ImageSpec, Layer, OCI_MANIFEST, Platform, Pusher, noise};
use crate::support::registry::Registry;
use crate::support::{init, skopeo};

const K_OLD: &str = "6.18.9-200.fc43.x86_64";
const K_NEW: &str = "6.18.12-200.fc43.x86_64";
/// Added by a layer and removed again by a later whiteout: it would be the newest otherwise.
const K_GONE: &str = "6.18.13-200.fc43.x86_64";
const VERSION: &str = "43.20260227.1";
const SUFFIX: &str = "20260227.1";
const AKMODS: &str = "9d13b6950811cdaae2e8ab748c85c5da35810ae3";
const BASE_REPO: &str = "test/kinoite-main";
const BUILDER_REPO: &str = "test/devcontainer";

/// The fields of the reference build-inputs manifest (seed-pipeline §2.3), in its order.
const INPUT_FIELDS: [&str; 15] = [
    "use_input_lock",
    "lock_file_path",
    "fedora_version",
    "kernel_release",
    "kernel_releases",
    "base_image_ref",
    "base_image_name",
    "base_image_tag",
    "base_image_pinned",
    "base_image_digest",
    "build_container_ref",
    "build_container_pinned",
    "build_container_digest",
    "zfs_minor_version",
    "akmods_upstream_ref",
];

/// A Kinoite-like base: `lib -> usr/lib`, two kernels (one only implied by its files), a third
/// added by a zstd layer and whited out by the last one, OSTree-style links, the two labels.
fn kinoite(label_kernel: &str, version: &str) -> ImageSpec {
    ImageSpec::new(vec![
        Layer::gzip(vec![
            Entry::symlink("lib", "usr/lib"),
            Entry::dir(&format!("usr/lib/modules/{K_OLD}")),
            Entry::file(&format!("usr/lib/modules/{K_OLD}/vmlinuz"), b"old kernel".to_vec()),
            Entry::file(&format!("usr/lib/modules/{K_NEW}/vmlinuz"), b"new kernel".to_vec()),
            Entry::symlink(&format!("usr/lib/modules/{K_NEW}/modules.dep"), "/sysroot/ostree/repo/objects/aa/bb.file"),
            Entry::executable("usr/bin/rpm-ostree", b"rpm-ostree".to_vec()),
        ]),
        Layer::new(
            Compression::Zstd,
            vec![
                Entry::dir(&format!("usr/lib/modules/{K_GONE}")),
                Entry::file(&format!("usr/lib/modules/{K_GONE}/vmlinuz"), b"gone".to_vec()),
                Entry::file("usr/share/kinoite/payload", noise(64 * 1024, 1)),
            ],
        ),
        Layer::gzip(vec![
            Entry::whiteout(&format!("usr/lib/modules/{K_GONE}")),
            Entry::file("etc/os-release", b"NAME=Kinoite\n".to_vec()),
        ]),
    ])
    .label("ostree.linux", label_kernel)
    .label("org.opencontainers.image.version", version)
}

fn builder() -> ImageSpec {
    ImageSpec::new(vec![Layer::gzip(vec![Entry::executable("usr/bin/just", b"#!/bin/sh\n".to_vec())])])
}

/// A registry with the Kinoite-like base (`latest`, `latest-<suffix>`, `43-<suffix>`) and the
/// builder (`latest`); returns the base and builder digests.
async fn seeded(registry: &Registry) -> (String, String) {
    let pusher = Pusher::new(registry);
    let base = pusher.push_image(BASE_REPO, Some("latest"), &kinoite(K_GONE, VERSION)).await;
    for tag in [format!("latest-{SUFFIX}"), format!("43-{SUFFIX}")] {
        pusher.put_manifest(BASE_REPO, Some(&tag), OCI_MANIFEST, base.manifest.clone()).await;
    }
    let builder = pusher.push_image(BUILDER_REPO, Some("latest"), &builder()).await;
    (base.digest, builder.digest)
}

/// Runs the binary (off the runtime thread, so an in-process proxy keeps serving) and returns
/// (exit code, stdout, stderr).
async fn run(args: Vec<String>) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator")).args(&args).output().expect("run the binary")
    })
    .await
    .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// `resolve` against `host` (plain HTTP) with these extra arguments.
async fn resolve(host: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args: Vec<String> = ["resolve", "--insecure-registry", host].iter().map(|s| s.to_string()).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    run(args).await
}

fn base_args(host: &str, base: &str) -> Vec<String> {
    vec![
        "--base-image".into(),
        format!("{host}/{base}"),
        "--builder-image".into(),
        format!("{host}/{BUILDER_REPO}:latest"),
        "--zfs-minor-version".into(),
        "2.4".into(),
        "--akmods-ref".into(),
        AKMODS.into(),
    ]
}

async fn resolve_ok(host: &str, extra: &[String]) -> (Value, String) {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = resolve(host, &extra).await;
    assert_eq!(code, 0, "resolve failed: {stderr}");
    (serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("no JSON on stdout ({e}): {stdout}")), stderr)
}

/// A failed run: the exit code and the one-line reason (`error: ...`, the last stderr line);
/// stdout stays empty.
async fn resolve_err(host: &str, extra: &[String]) -> (i32, String) {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = resolve(host, &extra).await;
    assert_ne!(code, 0, "resolve should fail: {stdout}");
    assert!(stdout.is_empty(), "nothing on stdout on failure: {stdout}");
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "one-line reason last on stderr: {stderr}");
    (code, last)
}

fn skopeo_inspect(reference: &str) -> Value {
    serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &format!("docker://{reference}")])).unwrap()
}

#[tokio::test]
async fn resolves_a_kinoite_like_base() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let (base_digest, builder_digest) = seeded(&registry).await;

    let (out, stderr) = resolve_ok(host, &base_args(host, &format!("{BASE_REPO}:latest"))).await;
    assert_eq!(out["schema_version"], 1);
    let generated_at = out["generated_at"].as_str().unwrap();
    assert!(regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").unwrap().is_match(generated_at), "{generated_at}");
    assert_eq!(out.as_object().unwrap().len(), 3, "schema_version, generated_at, inputs: {out}");

    let inputs = &out["inputs"];
    let mut keys: Vec<&str> = inputs.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = INPUT_FIELDS.to_vec();
    keys.sort();
    expected.sort();
    assert_eq!(keys, expected, "exactly the reference build-inputs fields");

    let name = format!("{host}/{BASE_REPO}");
    assert_eq!(inputs["use_input_lock"], false);
    assert_eq!(inputs["lock_file_path"], "");
    assert_eq!(inputs["kernel_releases"], serde_json::json!([K_OLD, K_NEW]), "natural order, whiteout applied");
    assert_eq!(inputs["kernel_release"], K_NEW);
    assert_eq!(inputs["fedora_version"], "43");
    assert_eq!(inputs["base_image_ref"], format!("{name}:latest"));
    assert_eq!(inputs["base_image_name"], name);
    assert_eq!(inputs["base_image_digest"], base_digest);
    assert_eq!(inputs["base_image_pinned"], format!("{name}@{base_digest}"));
    assert_eq!(inputs["base_image_tag"], format!("latest-{SUFFIX}"));
    assert_eq!(inputs["build_container_ref"], format!("{host}/{BUILDER_REPO}:latest"));
    assert_eq!(inputs["build_container_digest"], builder_digest);
    assert_eq!(inputs["build_container_pinned"], format!("{host}/{BUILDER_REPO}@{builder_digest}"));
    assert_eq!(inputs["zfs_minor_version"], "2.4");
    assert_eq!(inputs["akmods_upstream_ref"], AKMODS);

    // skopeo, independently: the pins name what the tags point at, and so does the chosen tag.
    let base = skopeo_inspect(&format!("{name}:latest"));
    assert_eq!((&base["Name"], &base["Digest"]), (&inputs["base_image_name"], &inputs["base_image_digest"]));
    let tagged = skopeo_inspect(&format!("{name}:{}", inputs["base_image_tag"].as_str().unwrap()));
    assert_eq!(tagged["Digest"], inputs["base_image_digest"]);
    let builder = skopeo_inspect(&format!("{host}/{BUILDER_REPO}:latest"));
    assert_eq!(builder["Digest"], inputs["build_container_digest"]);

    // R2.6: the label names the whited-out kernel; the directories win and the mismatch is logged.
    assert!(
        stderr.contains(&format!("Base image label/kernel directory mismatch: label={K_GONE} newest_dir={K_NEW}")),
        "{stderr}"
    );

    // Newest: only the primary kernel is required.
    let mut newest = base_args(host, &format!("{BASE_REPO}:latest"));
    newest.extend(["--kernels".to_string(), "newest".to_string()]);
    let (out_newest, _) = resolve_ok(host, &newest).await;
    assert_eq!(out_newest["inputs"]["kernel_releases"], serde_json::json!([K_NEW]));
    assert_eq!(out_newest["inputs"]["kernel_release"], K_NEW);

    // YAML on request, same document.
    let mut yaml = base_args(host, &format!("{BASE_REPO}:latest"));
    yaml.extend(["-o".to_string(), "yaml".to_string()]);
    let extra: Vec<&str> = yaml.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = resolve(host, &extra).await;
    assert_eq!(code, 0, "{stderr}");
    let as_yaml: Value = serde_saphyr::from_str(&stdout).unwrap();
    assert_eq!(as_yaml["inputs"], out["inputs"]);

    // The output is a build-inputs document `plan --inputs` accepts.
    let dir = tempfile::tempdir().unwrap();
    let inputs_file = dir.path().join("build-inputs.json");
    std::fs::write(&inputs_file, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/main-build.yaml");
    let (code, plan_out, plan_err) = run(vec![
        "plan".into(),
        "-f".into(),
        example.display().to_string(),
        "--inputs".into(),
        inputs_file.display().to_string(),
        "--cache".into(),
        "missing".into(),
        "-o".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 0, "{plan_err}");
    let plan: Value = serde_json::from_str(&plan_out).unwrap();
    assert_eq!(plan["inputs"], out["inputs"]);
}

#[tokio::test]
async fn immutable_tag_selection() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let pusher = Pusher::new(&registry);
    let (base_digest, _) = seeded(&registry).await;
    let tag_of = |out: &Value| out["inputs"]["base_image_tag"].as_str().unwrap().to_string();

    // A date-stamped source tag is used as it is.
    let (out, _) = resolve_ok(host, &base_args(host, &format!("{BASE_REPO}:43-{SUFFIX}"))).await;
    assert_eq!(tag_of(&out), format!("43-{SUFFIX}"));
    // A digest reference has no source tag: latest-<suffix> is tried first (R14.4).
    let (out, _) = resolve_ok(host, &base_args(host, &format!("{BASE_REPO}@{base_digest}"))).await;
    assert_eq!(tag_of(&out), format!("latest-{SUFFIX}"));
    assert_eq!(out["inputs"]["base_image_pinned"], format!("{host}/{BASE_REPO}@{base_digest}"));

    // latest-<suffix> points at another image: the next candidate that matches the digest wins.
    let moved = pusher.push_image("test/moved", Some("latest"), &kinoite(K_NEW, VERSION)).await;
    let other = pusher.push_image("test/moved", None, &kinoite(K_OLD, VERSION)).await;
    pusher.put_manifest("test/moved", Some(&format!("latest-{SUFFIX}")), OCI_MANIFEST, other.manifest.clone()).await;
    pusher.put_manifest("test/moved", Some(&format!("43-{SUFFIX}")), OCI_MANIFEST, moved.manifest.clone()).await;
    let (out, _) = resolve_ok(host, &base_args(host, "test/moved:latest")).await;
    assert_eq!(tag_of(&out), format!("43-{SUFFIX}"));

    // Failures, with the reference's messages.
    pusher.push_image("test/badlabel", Some("latest"), &kinoite(K_NEW, "43")).await;
    let (code, line) = resolve_err(host, &base_args(host, "test/badlabel:latest")).await;
    assert_eq!(code, 1);
    assert_eq!(line, "error: Failed to derive immutable base tag from org.opencontainers.image.version=43");

    let lonely = pusher.push_image("test/lonely", Some("stable"), &kinoite(K_NEW, VERSION)).await;
    let (code, line) = resolve_err(host, &base_args(host, "test/lonely:stable")).await;
    assert_eq!(code, 1);
    assert_eq!(
        line,
        format!(
            "error: Failed to map digest {} to an immutable tag. Tried candidate tags: stable-{SUFFIX} latest-{SUFFIX} 43-{SUFFIX}",
            lonely.digest
        )
    );

    // Every candidate exists but names another digest.
    pusher.push_image("test/elsewhere", Some("latest"), &kinoite(K_NEW, VERSION)).await;
    let stale = pusher.push_image("test/elsewhere", None, &kinoite(K_OLD, VERSION)).await;
    for tag in [format!("latest-{SUFFIX}"), format!("43-{SUFFIX}")] {
        pusher.put_manifest("test/elsewhere", Some(&tag), OCI_MANIFEST, stale.manifest.clone()).await;
    }
    let (code, line) = resolve_err(host, &base_args(host, "test/elsewhere:latest")).await;
    assert_eq!(code, 1);
    assert!(line.ends_with(&format!("Tried candidate tags: latest-{SUFFIX} 43-{SUFFIX}")), "{line}");
}

fn fast_client(host: &str) -> OciRegistry {
    OciRegistry::new(ClientSettings {
        insecure_registries: [host.to_string()].into(),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        ..ClientSettings::default()
    })
    .unwrap()
}

fn request(host: &str, base: &str) -> Request {
    Request {
        base_image: format!("{host}/{base}"),
        builder_image: format!("{host}/{BUILDER_REPO}:latest"),
        zfs_minor_version: "2.4".into(),
        akmods_ref: AKMODS.into(),
        lock: None,
    }
}

#[tokio::test]
async fn a_transient_tag_lookup_is_never_no_match() {
    init();
    let registry = Registry::start().await;
    seeded(&registry).await;
    let proxy = FaultProxy::start(registry.host()).await;
    let host = proxy.host();
    let client = fast_client(host);
    let resolver = Resolver::new();

    // The first candidate tag's lookup keeps failing with 503: that is an outage, not "no match"
    // (H5), so the resolution fails as transient instead of moving on to the next candidate.
    proxy.inject_on(&format!("/manifests/latest-{SUFFIX}"), Fault::Unavailable, 100);
    let err = resolver.resolve(&client, &request(host, &format!("{BASE_REPO}:latest"))).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("Failed to look up candidate base tag {host}/{BASE_REPO}:latest-{SUFFIX}")),
        "{err}"
    );
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(err.registry_error().unwrap().is_transient());
    let asked_next = proxy.seen().iter().any(|s| s.path.contains(&format!("/manifests/43-{SUFFIX}")));
    assert!(!asked_next, "the next candidate is not tried after an outage");

    // The controller's view of the same failure: transient, so the run waits and retries.
    let work = ResolveRequest {
        purpose: ResolvePurpose::Run(1),
        base_image: format!("{host}/{BASE_REPO}:latest"),
        builder_image: format!("{host}/{BUILDER_REPO}:latest"),
        zfs_minor_version: "2.4".into(),
        akmods_ref: AKMODS.into(),
        lock: None,
    };
    match execute::resolve(&resolver, &client, &work).await {
        WorkOutcome::Failed(f) => assert_eq!(f.class, FailureClass::Transient, "{}", f.message),
        other => panic!("expected a transient failure, got {other:?}"),
    }

    // Rate limited the same way: still an error, never "no match".
    proxy.clear();
    proxy.inject_on(&format!("/manifests/latest-{SUFFIX}"), Fault::RateLimit { retry_after: Some("0".into()) }, 100);
    let err = resolver.resolve(&client, &request(host, &format!("{BASE_REPO}:latest"))).await.unwrap_err();
    assert!(err.to_string().contains("rate limited"), "{err}");

    // Once the registry answers again the same resolver succeeds, without scanning the base again.
    proxy.clear();
    let inputs = resolver.resolve(&client, &request(host, &format!("{BASE_REPO}:latest"))).await.unwrap();
    assert_eq!(inputs.base_image_tag, format!("latest-{SUFFIX}"));
    assert_eq!(resolver.scans(), 1, "one scan for the digest, whatever failed after it");
}

#[tokio::test]
async fn one_scan_per_base_digest() {
    init();
    let registry = Registry::start().await;
    let (base_digest, _) = seeded(&registry).await;
    let proxy = FaultProxy::start(registry.host()).await;
    let host = proxy.host();
    let client = Arc::new(fast_client(host));
    let resolver = Arc::new(Resolver::new());
    let layer_gets = |proxy: &FaultProxy| {
        proxy.seen().iter().filter(|s| s.method == "GET" && s.path.contains(&format!("/v2/{BASE_REPO}/blobs/"))).count()
    };

    // Two concurrent resolutions of the same digest share one scan.
    let latest = request(host, &format!("{BASE_REPO}:latest"));
    let (a, b) = tokio::join!(resolver.resolve(&client, &latest), resolver.resolve(&client, &latest));
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(resolver.scans(), 1);
    // Three layers and the config blob (read by each resolution).
    assert_eq!(layer_gets(&proxy), 3 + 2);

    // Later resolutions of the digest, by another tag or by digest, read no layer at all.
    proxy.reset_seen();
    for base in [format!("{BASE_REPO}:43-{SUFFIX}"), format!("{BASE_REPO}@{base_digest}")] {
        let inputs = resolver.resolve(&client, &request(host, &base)).await.unwrap();
        assert_eq!(inputs.kernel_releases, [K_OLD, K_NEW]);
    }
    assert_eq!(resolver.scans(), 1);
    assert_eq!(layer_gets(&proxy), 2, "only the config blob, once per resolution");

    // A new digest behind the same tag is scanned.
    let pusher = Pusher::new(&registry);
    let newer = pusher.push_image(BASE_REPO, Some("latest"), &kinoite(K_NEW, "43.20260228")).await;
    pusher.put_manifest(BASE_REPO, Some("latest-20260228"), OCI_MANIFEST, newer.manifest.clone()).await;
    let inputs = resolver.resolve(&client, &request(host, &format!("{BASE_REPO}:latest"))).await.unwrap();
    assert_eq!(inputs.base_image_digest, newer.digest);
    assert_eq!(inputs.base_image_tag, "latest-20260228");
    // The layers are the same blobs, but the digest is new: it is scanned (the cache is keyed by
    // image digest).
    assert_eq!(resolver.scans(), 2);
}

fn lock_file(dir: &Path, name: &str, json: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, json).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn lock_replay_and_lock_errors() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let (base_digest, builder_digest) = seeded(&registry).await;
    let dir = tempfile::tempdir().unwrap();
    let base = format!("{host}/{BASE_REPO}@{base_digest}");
    let builder = format!("{host}/{BUILDER_REPO}:latest");
    let pinned_akmods = "906e565f0000000000000000000000000000000a";
    let good = lock_file(
        dir.path(),
        "inputs.lock.json",
        &format!(
            r#"{{"version": 1, "description": "known good", "base_image": "{base}", "build_container": "{builder}",
                "zfs_minor_version": "2.3", "akmods_upstream_ref": "{pinned_akmods}"}}"#
        ),
    );

    // The lock's values are used; without --builder-image the lock's builder is taken.
    let (out, _) = resolve_ok(host, &["--lock".into(), good.clone()]).await;
    let inputs = &out["inputs"];
    assert_eq!(inputs["use_input_lock"], true);
    assert_eq!(inputs["lock_file_path"], good);
    assert_eq!(inputs["base_image_ref"], base);
    assert_eq!(inputs["base_image_digest"], base_digest);
    assert_eq!(inputs["base_image_tag"], format!("latest-{SUFFIX}"));
    assert_eq!(inputs["build_container_ref"], builder);
    assert_eq!(inputs["build_container_digest"], builder_digest);
    assert_eq!(inputs["zfs_minor_version"], "2.3");
    assert_eq!(inputs["akmods_upstream_ref"], pinned_akmods);
    assert_eq!(inputs["kernel_releases"], serde_json::json!([K_OLD, K_NEW]));

    // The same builder given explicitly is fine; a lock without optional fields falls back to the
    // flags (R14.4).
    resolve_ok(host, &["--lock".into(), good.clone(), "--builder-image".into(), builder.clone()]).await;
    let minimal = lock_file(dir.path(), "minimal.json", &format!(r#"{{"base_image": "{base}"}}"#));
    let (out, _) = resolve_ok(
        host,
        &[
            "--lock".into(),
            minimal,
            "--builder-image".into(),
            builder.clone(),
            "--zfs-minor-version".into(),
            "2.2".into(),
        ],
    )
    .await;
    assert_eq!(out["inputs"]["zfs_minor_version"], "2.2");
    assert_eq!(out["inputs"]["akmods_upstream_ref"], AKMODS, "the default akmods commit");

    // Each lock error fails before any registry access (its base points at a closed port, which
    // would be "unreachable", exit 4), with the reference's message.
    let nowhere =
        "127.0.0.1:9/test/kinoite-main@sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let cases = [
        (
            r#"{"version": 1, "description": "no base"}"#.to_string(),
            "Lock file missing required field: base_image".to_string(),
        ),
        (
            r#"{"base_image": "ghcr.io/ublue-os/kinoite-main@sha256:REPLACE_ME"}"#.to_string(),
            "Lock file base_image still contains placeholder value".to_string(),
        ),
        (
            format!(
                r#"{{"base_image": "{nowhere}", "build_container": "ghcr.io/ublue-os/devcontainer@sha256:REPLACE_ME"}}"#
            ),
            "Lock file build_container still contains placeholder value".to_string(),
        ),
    ];
    for (i, (json, message)) in cases.iter().enumerate() {
        let path = lock_file(dir.path(), &format!("bad-{i}.json"), json);
        let (code, line) = resolve_err(host, &["--lock".into(), path]).await;
        assert_eq!((code, line), (1, format!("error: {message}")));
    }
    let other_builder = lock_file(
        dir.path(),
        "other-builder.json",
        &format!(r#"{{"base_image": "{nowhere}", "build_container": "{host}/{BUILDER_REPO}@{builder_digest}"}}"#),
    );
    let (code, line) =
        resolve_err(host, &["--lock".into(), other_builder, "--builder-image".into(), builder.clone()]).await;
    assert_eq!(code, 1);
    assert!(
        line.starts_with(&format!(
            "error: Replay mismatch: build container input ({builder}) does not match lock file ({host}/{BUILDER_REPO}@{builder_digest})."
        )),
        "{line}"
    );
    let missing = dir.path().join("missing.json").display().to_string();
    let (code, line) = resolve_err(host, &["--lock".into(), missing.clone()]).await;
    assert_eq!((code, line), (1, format!("error: Replay lock file not found: {missing}")));
    let (code, line) =
        resolve_err(host, &["--lock".into(), good, "--base-image".into(), format!("{host}/{BASE_REPO}:latest")]).await;
    assert_eq!(code, 1);
    assert!(line.contains("differs from the lock's base_image"), "{line}");

    // The controller's path: the same lock JSON from a ConfigMap, the same checks.
    let client = fast_client(host);
    let work = ResolveRequest {
        purpose: ResolvePurpose::Run(3),
        base_image: format!("{host}/{BASE_REPO}:latest"),
        builder_image: builder.clone(),
        zfs_minor_version: "2.4".into(),
        akmods_ref: AKMODS.into(),
        lock: Some(LockRequest {
            path: "configmap/locks/inputs.lock.json".into(),
            json: format!(r#"{{"base_image": "{base}"}}"#),
        }),
    };
    match execute::resolve(&Resolver::new(), &client, &work).await {
        WorkOutcome::Resolved(inputs) => {
            assert!(inputs.use_input_lock);
            assert_eq!(inputs.lock_file_path, "configmap/locks/inputs.lock.json");
            assert_eq!(inputs.base_image_digest, base_digest);
        }
        other => panic!("expected resolved inputs, got {other:?}"),
    }
    let bad = ResolveRequest {
        lock: Some(LockRequest { path: "inline".into(), json: r#"{"base_image": "REPLACE_ME"}"#.into() }),
        ..work
    };
    match execute::resolve(&Resolver::new(), &client, &bad).await {
        WorkOutcome::Failed(f) => {
            assert_eq!(f.class, FailureClass::Permanent);
            assert_eq!(f.message, "Lock file base_image still contains placeholder value");
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_images_and_unusable_bases() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let pusher = Pusher::new(&registry);
    seeded(&registry).await;

    // A 404 base: not found, exit 1.
    let (code, line) = resolve_err(host, &base_args(host, "test/nothing:latest")).await;
    assert_eq!(code, 1);
    assert!(
        line.starts_with(&format!("error: Failed to resolve base image digest for {host}/test/nothing:latest: ")),
        "{line}"
    );
    assert!(line.contains("not found"), "{line}");

    // A missing builder.
    let mut args = base_args(host, &format!("{BASE_REPO}:latest"));
    args[3] = format!("{host}/test/no-builder:latest");
    let (code, line) = resolve_err(host, &args).await;
    assert_eq!(code, 1);
    assert!(
        line.starts_with(&format!(
            "error: Failed to resolve build container digest for {host}/test/no-builder:latest: "
        )),
        "{line}"
    );

    // Bad values are refused before any registry access.
    let mut args = base_args(host, &format!("{BASE_REPO}:latest"));
    args[7] = "main".into();
    let (code, line) = resolve_err(host, &args).await;
    assert_eq!(code, 1);
    assert!(line.contains("akmods ref \"main\" is not a full 40-hex commit"), "{line}");
    let mut args = base_args(host, &format!("{BASE_REPO}:latest"));
    args[1] = "kinoite-main:latest".into();
    let (code, line) = resolve_err(host, &args).await;
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("base image: image reference \"kinoite-main:latest\" is not fully qualified"), "{line}");

    // Library: label and kernel problems, with the reference's messages.
    let client = fast_client(host);
    let resolver = Resolver::new();
    let no_label = ImageSpec::new(vec![Layer::gzip(vec![Entry::dir(&format!("usr/lib/modules/{K_NEW}"))])])
        .label("org.opencontainers.image.version", VERSION);
    pusher.push_image("test/nolabel", Some("latest"), &no_label).await;
    let err = resolver.resolve(&client, &request(host, "test/nolabel:latest")).await.unwrap_err();
    assert_eq!(err.to_string(), format!("Failed to read ostree.linux label from {host}/test/nolabel:latest"));

    let no_kernels = ImageSpec::new(vec![
        Layer::gzip(vec![Entry::file(&format!("usr/lib/modules/{K_NEW}/vmlinuz"), b"k".to_vec())]),
        Layer::gzip(vec![Entry::opaque("usr/lib/modules"), Entry::file("usr/lib/modules/README", b"x".to_vec())]),
    ])
    .label("ostree.linux", K_NEW)
    .label("org.opencontainers.image.version", VERSION);
    let pushed = pusher.push_image("test/nokernels", Some("latest"), &no_kernels).await;
    let err = resolver.resolve(&client, &request(host, "test/nokernels:latest")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("No installed kernel directories found in {host}/test/nokernels@{}", pushed.digest),
        "an opaque modules directory hides the lower kernels"
    );

    let ubuntu = ImageSpec::new(vec![Layer::gzip(vec![Entry::dir("lib/modules/6.8.0-31-generic")])])
        .label("ostree.linux", "6.8.0-31-generic")
        .label("org.opencontainers.image.version", VERSION);
    pusher.push_image("test/notfedora", Some("latest"), &ubuntu).await;
    let err = resolver.resolve(&client, &request(host, "test/notfedora:latest")).await.unwrap_err();
    assert_eq!(err.to_string(), "Failed to extract Fedora version from kernel release 6.8.0-31-generic");
}

#[tokio::test]
async fn auth_protected_registry() {
    init();
    let registry = Registry::start_with_auth("builder", "s3cret-pass").await;
    let host = registry.host();
    seeded(&registry).await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.json");
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("builder:not-the-password");
    std::fs::write(&wrong, format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)).unwrap();

    for config in [None, Some(wrong.display().to_string())] {
        let mut args = base_args(host, &format!("{BASE_REPO}:latest"));
        if let Some(config) = &config {
            args.extend(["--registry-config".to_string(), config.clone()]);
        }
        let extra: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = resolve(host, &extra).await;
        assert_eq!(code, 3, "unauthorized has its own exit code: {stderr}");
        assert!(stdout.is_empty());
        let line = stderr.lines().last().unwrap();
        assert!(line.contains("unauthorized"), "{line}");
        assert!(!line.contains("unreachable") && !line.contains("not found"), "{line}");
        assert!(!stderr.contains("not-the-password") && !stderr.contains("s3cret-pass"), "no secret in output");
    }

    let mut args = base_args(host, &format!("{BASE_REPO}:latest"));
    args.extend(["--registry-config".to_string(), registry.docker_config().display().to_string()]);
    let (out, stderr) = resolve_ok(host, &args).await;
    assert_eq!(out["inputs"]["kernel_releases"], serde_json::json!([K_OLD, K_NEW]));
    assert!(!stderr.contains("s3cret-pass"));
}

#[tokio::test]
async fn unreachable_registry() {
    init();
    let mut registry = Registry::start().await;
    let host = registry.host().to_string();
    seeded(&registry).await;
    registry.stop();
    let (code, line) = resolve_err(&host, &base_args(&host, &format!("{BASE_REPO}:latest"))).await;
    assert_eq!(code, 4, "unreachable has its own exit code: {line}");
    assert!(line.contains("unreachable"), "{line}");
    assert!(!line.contains("unauthorized") && !line.contains("not found"), "{line}");
}

#[tokio::test]
async fn index_base() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let pusher = Pusher::new(&registry);
    seeded(&registry).await;
    // The arm64 image has another kernel: only the linux/amd64 image may be scanned.
    let arm = ImageSpec::new(vec![Layer::gzip(vec![Entry::dir("usr/lib/modules/6.18.12-200.fc43.aarch64")])])
        .label("ostree.linux", "6.18.12-200.fc43.aarch64")
        .label("org.opencontainers.image.version", VERSION)
        .platform(Platform::linux("arm64"));
    let index = pusher.push_index("test/multi", Some("latest"), &[arm, kinoite(K_NEW, VERSION)]).await;
    pusher
        .put_manifest("test/multi", Some(&format!("latest-{SUFFIX}")), index.media_type, index.manifest.clone())
        .await;

    let (out, _) = resolve_ok(host, &base_args(host, "test/multi:latest")).await;
    let inputs = &out["inputs"];
    assert_eq!(inputs["base_image_digest"], index.digest, "the index digest, as skopeo reports it");
    assert_eq!(inputs["base_image_pinned"], format!("{host}/test/multi@{}", index.digest));
    assert_eq!(inputs["kernel_releases"], serde_json::json!([K_OLD, K_NEW]));
    assert_eq!(inputs["base_image_tag"], format!("latest-{SUFFIX}"));
    let inspect = skopeo_inspect(&format!("{host}/test/multi:latest"));
    assert_eq!(inspect["Digest"], inputs["base_image_digest"]);
}
