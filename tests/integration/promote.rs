//! Promotion against the real registry fixture (docker-registry): the `promote` command as a
//! process and the step executor driven directly, with skopeo and plain HTTP reads as the
//! independent checks of what the registry holds afterwards.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use kinoite_zfs_operator::pipeline::promote::{Error as PromoteError, PromotionRequest, execute_step, observe, plan};
use kinoite_zfs_operator::registry::{ClientSettings, OciRegistry, RetryPolicy};
use serde_json::Value;

use crate::support::faults::FaultProxy;
use crate::support::image::{Entry, ImageSpec, Layer, Platform, PushedImage, Pusher, digest_of, noise};
use crate::support::registry::{Registry, find_tool};
use crate::support::{init, skopeo};

pub(crate) const AUDIT: &str = "stable-7-02701fe";

pub(crate) fn client(host: &str) -> OciRegistry {
    OciRegistry::new(ClientSettings {
        insecure_registries: [host.to_string()].into(),
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(1),
        },
        ..ClientSettings::default()
    })
    .unwrap()
}

pub(crate) fn image(marker: &str, size: usize) -> ImageSpec {
    ImageSpec::new(vec![
        Layer::gzip(vec![Entry::file("usr/share/base", noise(size, 3))]),
        Layer::gzip(vec![
            Entry::file("usr/lib/modules/6.18.13-200.fc43.x86_64/extra/zfs/zfs.ko.xz", marker.as_bytes().to_vec()),
            Entry::executable("usr/sbin/zfs", b"zfs".to_vec()),
        ]),
    ])
    .label("org.opencontainers.image.version", "43.20260227.1")
}

pub(crate) fn akmods_image(marker: &str) -> ImageSpec {
    ImageSpec::new(vec![Layer::gzip(vec![Entry::file(
        &format!("rpms/kmods/zfs/kmod-zfs-6.18.13-200.fc43.x86_64-2.4.1-1.fc43.x86_64.rpm.{marker}"),
        marker.as_bytes().to_vec(),
    )])])
}

/// What `skopeo inspect --raw` serves for `reference` (None when it does not exist), as the
/// digest of the bytes: the independent check of where a tag points.
pub(crate) fn skopeo_digest(reference: &str) -> Option<String> {
    let output = Command::new(find_tool("skopeo", "skopeo"))
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .expect("run skopeo");
    if output.status.success() {
        return Some(digest_of(&output.stdout));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("manifest unknown") || stderr.contains("name unknown"),
        "skopeo inspect {reference}: {stderr}"
    );
    None
}

/// Every repository, tag and digest in the registry, read over plain HTTP and skopeo: before and
/// after a refused promotion it must be the same.
pub(crate) async fn snapshot(registry: &Registry) -> BTreeMap<String, Option<String>> {
    let http = reqwest::Client::new();
    let catalog: Value =
        http.get(format!("{}/v2/_catalog", registry.base_url())).send().await.unwrap().json().await.unwrap();
    let mut all = BTreeMap::new();
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: Value = http
            .get(format!("{}/v2/{repo}/tags/list", registry.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.insert(repo.to_string(), None);
        for tag in tags["tags"].as_array().into_iter().flatten() {
            let reference = format!("{}/{repo}:{}", registry.host(), tag.as_str().unwrap());
            all.insert(reference.clone(), skopeo_digest(&reference));
        }
    }
    all
}

/// Runs the `promote` command (off the async runtime: it may talk through the in-test proxy).
pub(crate) async fn promote_cli(args: Vec<String>) -> (i32, Value, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator"))
            .arg("promote")
            .args(&args)
            .output()
            .expect("run kinoite-zfs-operator");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let value = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("promote printed no JSON ({e}):\n{stdout}\n{stderr}"))
        };
        (out.status.code().unwrap_or(-1), value, stderr)
    })
    .await
    .unwrap()
}

pub(crate) fn args(host: &str, list: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    all.extend(["--insecure-registry".to_string(), host.to_string()]);
    all
}

pub(crate) struct Candidate {
    pub image: PushedImage,
    pub akmods: PushedImage,
}

pub(crate) async fn push_candidate(registry: &Registry) -> Candidate {
    let pusher = Pusher::new(registry);
    Candidate {
        image: pusher.push_image("o/kinoite-zfs-candidate", Some("7-43"), &image("run 7", 64 * 1024)).await,
        akmods: pusher.push_image("o/akmods-candidate", Some("main-43"), &akmods_image("run 7")).await,
    }
}

pub(crate) fn full_args(host: &str, c: &Candidate, expect: &str) -> Vec<String> {
    args(
        host,
        &[
            "--candidate",
            &format!("{host}/o/kinoite-zfs-candidate@{}", c.image.digest),
            "--to",
            &format!("{host}/o/kinoite-zfs"),
            "--tag",
            "latest",
            "--tag",
            "43",
            "--audit-tag",
            AUDIT,
            "--candidate-akmods",
            &format!("{host}/o/akmods-candidate:main-43"),
            "--stable-akmods",
            &format!("{host}/o/akmods:main-43"),
            "--expect-stable-digest",
            expect,
        ],
    )
}

#[tokio::test]
async fn first_promotion_moves_tags_audit_and_akmods_by_digest() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let c = push_candidate(&registry).await;
    Pusher::new(&registry).push_image("o/akmods", Some("main-43"), &akmods_image("older run")).await;

    let (code, out, stderr) = promote_cli(full_args(host, &c, "absent")).await;
    assert_eq!(code, 0, "{stderr}\n{out:#}");
    assert_eq!(out["result"], "Promoted");
    assert_eq!(out["registryChanged"], true);
    assert_eq!(out["previousStableDigest"], "absent");
    for tag in ["latest", "43", AUDIT] {
        assert_eq!(skopeo_digest(&format!("{host}/o/kinoite-zfs:{tag}")), Some(c.image.digest.clone()), "{tag}");
    }
    assert_eq!(skopeo_digest(&format!("{host}/o/akmods:main-43")), Some(c.akmods.digest.clone()));
    let tags = out["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 2);
    for tag in tags {
        assert_eq!(tag["digest"], c.image.digest.as_str());
        assert_eq!(tag["written"], true);
    }
    assert_eq!(out["auditTag"]["reference"], format!("{host}/o/kinoite-zfs:{AUDIT}"));
    assert_eq!(out["akmods"]["candidateDigest"], c.akmods.digest.as_str());
    assert_eq!(out["akmods"]["stable"]["digest"], c.akmods.digest.as_str());
    // Config + two layers of the image, config + layer of the akmods image: all mounted.
    assert_eq!(out["blobs"], serde_json::json!({"alreadyPresent": 0, "mounted": 5, "copied": 0, "bytesCopied": 0}));
    let steps: Vec<&str> = out["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(steps, ["copy-image", "copy-akmods", "audit-tag", "tag:latest", "tag:43", "akmods-tag", "confirm"]);
    // skopeo copies the promoted image, verifying every blob digest on the way.
    let out_dir = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/o/kinoite-zfs:latest"),
        &format!("dir:{}", out_dir.path().display()),
    ]);

    // The same command again: nothing written, everything confirmed.
    let before = snapshot(&registry).await;
    let (code, out, stderr) = promote_cli(full_args(host, &c, &c.image.digest)).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out["result"], "AlreadyPromoted");
    assert_eq!(out["registryChanged"], false);
    assert_eq!(out["manifestsPushed"], 0);
    assert_eq!(snapshot(&registry).await, before);
}

#[tokio::test]
async fn an_index_is_promoted_across_and_within_repositories() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let index = Pusher::new(&registry)
        .push_index(
            "o/candidate",
            Some("7-43"),
            &[image("amd64", 4096), image("arm64", 4096).platform(Platform::linux("arm64"))],
        )
        .await;

    // Cross-repository.
    let (code, out, stderr) = promote_cli(args(
        host,
        &[
            "--candidate",
            &format!("{host}/o/candidate@{}", index.digest),
            "--to",
            &format!("{host}/o/stable"),
            "--tag",
            "latest",
            "--audit-tag",
            AUDIT,
        ],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(skopeo_digest(&format!("{host}/o/stable:latest")), Some(index.digest.clone()));
    assert_eq!(skopeo_digest(&format!("{host}/o/stable:{AUDIT}")), Some(index.digest.clone()));
    for child in &index.children {
        assert_eq!(skopeo_digest(&format!("{host}/o/stable@{}", child.digest)), Some(child.digest.clone()));
    }
    // Two children with a config and two layers each; both base layers are the same blob, which
    // is mounted once.
    let distinct: std::collections::BTreeSet<&String> =
        index.children.iter().flat_map(|c| c.layer_digests.iter().chain([&c.config_digest])).collect();
    assert_eq!(out["blobs"]["mounted"], distinct.len());
    assert_eq!(out["manifestsPushed"], 5, "two children and the index by digest, two tags");
    assert_eq!(out["previousStableDigest"], "absent");

    // Same repository: nothing to copy, only the tags.
    let (code, out, stderr) = promote_cli(args(
        host,
        &[
            "--candidate",
            &format!("{host}/o/candidate@{}", index.digest),
            "--to",
            &format!("{host}/o/candidate"),
            "--tag",
            "stable",
            "--audit-tag",
            AUDIT,
            "--expect-stable-digest",
            "absent",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out["blobs"], serde_json::json!({"alreadyPresent": 0, "mounted": 0, "copied": 0, "bytesCopied": 0}));
    assert_eq!(out["manifestsPushed"], 2);
    assert_eq!(out["steps"][0]["name"], "copy-image");
    assert_eq!(out["steps"][0]["wrote"], false);
    for tag in ["stable", AUDIT, "7-43"] {
        assert_eq!(skopeo_digest(&format!("{host}/o/candidate:{tag}")), Some(index.digest.clone()), "{tag}");
    }
}

/// Runs a promotion that must be refused and checks that the registry is exactly as before.
async fn assert_refused(registry: &Registry, cli: Vec<String>, reason: &str) -> Value {
    let before = snapshot(registry).await;
    let (code, out, stderr) = promote_cli(cli).await;
    assert_eq!(code, 3, "refused promotions exit 3: {stderr}\n{out:#}");
    assert_eq!(out["result"], "Refused");
    assert_eq!(out["reason"], reason);
    assert_eq!(out["registryChanged"], false);
    assert!(stderr.contains(&format!("promotion refused ({reason})")), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(snapshot(registry).await, before, "nothing in the registry changed");
    out
}

#[tokio::test]
async fn an_existing_audit_tag_at_another_digest_is_refused() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let c = push_candidate(&registry).await;
    let older = Pusher::new(&registry).push_image("o/kinoite-zfs", Some(AUDIT), &image("run 6", 1024)).await;
    let out = assert_refused(&registry, full_args(host, &c, "absent"), "AuditTagConflict").await;
    assert!(out["message"].as_str().unwrap().contains(&older.digest), "{out:#}");
    assert_eq!(skopeo_digest(&format!("{host}/o/kinoite-zfs:{AUDIT}")), Some(older.digest));
    assert_eq!(skopeo_digest(&format!("{host}/o/kinoite-zfs@{}", c.image.digest)), None, "not even copied");
}

#[tokio::test]
async fn a_compare_and_swap_mismatch_is_refused() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let c = push_candidate(&registry).await;
    let current = Pusher::new(&registry).push_image("o/kinoite-zfs", Some("latest"), &image("hotfix", 1024)).await;
    // Expected absent (a first promotion), but the tag exists.
    let out = assert_refused(&registry, full_args(host, &c, "absent"), "StableTagMoved").await;
    assert!(out["message"].as_str().unwrap().contains(&current.digest), "{out:#}");
    // Expected another digest.
    let stale = digest_of(b"what the promotion thought was stable");
    assert_refused(&registry, full_args(host, &c, &stale), "StableTagMoved").await;
    assert_eq!(skopeo_digest(&format!("{host}/o/kinoite-zfs:latest")), Some(current.digest.clone()));
    // With the current digest as the expectation it goes through.
    let (code, out, stderr) = promote_cli(full_args(host, &c, &current.digest)).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out["previousStableDigest"], current.digest.as_str());
    assert_eq!(skopeo_digest(&format!("{host}/o/kinoite-zfs:latest")), Some(c.image.digest));
}

#[tokio::test]
async fn missing_candidate_akmods_moves_nothing() {
    init();
    let registry = Registry::start().await;
    let host = registry.host();
    let c = push_candidate(&registry).await;
    let mut cli = full_args(host, &c, "absent");
    let at = cli.iter().position(|a| a == "--candidate-akmods").unwrap();
    cli[at + 1] = format!("{host}/o/akmods-candidate:main-44");
    let out = assert_refused(&registry, cli, "CandidateAkmodsMissing").await;
    assert!(out["message"].as_str().unwrap().contains("fail closed"), "{out:#}");
    assert_eq!(skopeo_digest(&format!("{host}/o/kinoite-zfs:latest")), None);
    // Missing by digest too.
    let mut cli = full_args(host, &c, "absent");
    cli[at + 1] = format!("{host}/o/akmods-candidate@{}", digest_of(b"never pushed"));
    assert_refused(&registry, cli, "CandidateAkmodsMissing").await;
}

/// The registry goes away between two steps; the steps done before stay done, the step that
/// failed is retried after the restart, and the end state has every tag once.
#[tokio::test]
async fn registry_stopped_between_steps_then_resumed() {
    init();
    let mut registry = Registry::start().await;
    let c = push_candidate(&registry).await;
    let proxy = FaultProxy::start(registry.host()).await;
    let host = proxy.host().to_string();
    let client = client(&host);
    let request = PromotionRequest::parse(
        &format!("{host}/o/kinoite-zfs-candidate@{}", c.image.digest),
        &format!("{host}/o/kinoite-zfs"),
        &["latest".to_string(), "43".to_string()],
        Some(AUDIT),
        Some((&format!("{host}/o/akmods-candidate:main-43"), &format!("{host}/o/akmods:main-43"))),
        Some("absent"),
    )
    .unwrap();
    let planned = plan(&request, &observe(&client, &request).await.unwrap()).unwrap();
    let names: Vec<String> = planned.steps.iter().map(|s| s.kind.name()).collect();
    // copy-image, copy-akmods, audit-tag, then the registry stops before tag:latest.
    for step in &planned.steps[..3] {
        execute_step(&client, &planned, &step.kind).await.unwrap();
    }
    registry.stop();
    let err = execute_step(&client, &planned, &planned.steps[3].kind).await.unwrap_err();
    assert!(matches!(err, PromoteError::Registry { .. }) && err.is_transient(), "{err}");
    registry.restart().await;

    // Resume: the command again, with the same arguments.
    proxy.reset_seen();
    let (code, out, stderr) = promote_cli(full_args(&host, &c, "absent")).await;
    assert_eq!(code, 0, "{stderr}\n{out:#}");
    let states: Vec<(&str, bool)> = out["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["wrote"].as_bool().unwrap()))
        .collect();
    assert_eq!(names.len(), states.len());
    assert_eq!(
        states,
        [
            ("copy-image", false),
            ("copy-akmods", false),
            ("audit-tag", false),
            ("tag:latest", true),
            ("tag:43", true),
            ("akmods-tag", true),
            ("confirm", false)
        ]
    );
    let uploads = proxy.seen().iter().filter(|s| s.path.contains("/blobs/uploads/")).count();
    assert_eq!(uploads, 0, "no blob is uploaded or mounted again");
    let manifest_puts: Vec<String> =
        proxy.seen().iter().filter(|s| s.method == "PUT").map(|s| s.path.clone()).collect();
    assert_eq!(
        manifest_puts,
        ["/v2/o/kinoite-zfs/manifests/latest", "/v2/o/kinoite-zfs/manifests/43", "/v2/o/akmods/manifests/main-43"]
    );
    // Independently: exactly the expected tags, each at the right digest.
    let tags: Value = reqwest::get(format!("{}/v2/o/kinoite-zfs/tags/list", registry.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut listed: Vec<&str> = tags["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    listed.sort();
    assert_eq!(listed, ["43", "latest", AUDIT]);
    for tag in listed {
        assert_eq!(skopeo_digest(&format!("{}/o/kinoite-zfs:{tag}", registry.host())), Some(c.image.digest.clone()));
    }
    assert_eq!(skopeo_digest(&format!("{}/o/akmods:main-43", registry.host())), Some(c.akmods.digest.clone()));
}

#[tokio::test]
async fn a_refused_mount_falls_back_to_a_streamed_copy() {
    init();
    let registry = Registry::start().await;
    let c = push_candidate(&registry).await;
    let proxy = FaultProxy::start(registry.host()).await;
    proxy.refuse_mounts(true);
    let host = proxy.host().to_string();
    let (code, out, stderr) = promote_cli(args(
        &host,
        &[
            "--candidate",
            &format!("{host}/o/kinoite-zfs-candidate@{}", c.image.digest),
            "--to",
            &format!("{host}/o/kinoite-zfs"),
            "--tag",
            "latest",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}\n{out:#}");
    let config_size =
        reqwest::get(format!("{}/v2/o/kinoite-zfs-candidate/blobs/{}", registry.base_url(), c.image.config_digest))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len() as u64;
    assert_eq!(out["blobs"]["mounted"], 0);
    assert_eq!(out["blobs"]["copied"], 3);
    assert_eq!(out["blobs"]["bytesCopied"], c.image.total_layer_bytes() + config_size);
    let mount_requests = proxy.seen().iter().filter(|s| s.query.contains("mount=")).count();
    assert_eq!(mount_requests, 3, "a mount was asked for each blob first");
    // skopeo reads the copy back blob by blob, verifying digests.
    let out_dir = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/o/kinoite-zfs:latest", registry.host()),
        &format!("dir:{}", out_dir.path().display()),
    ]);
    assert_eq!(skopeo_digest(&format!("{}/o/kinoite-zfs:latest", registry.host())), Some(c.image.digest));
}

#[tokio::test]
async fn bad_arguments_are_rejected_before_the_registry_is_asked() {
    init();
    let (code, out, stderr) = promote_cli(vec![
        "--candidate".into(),
        "127.0.0.1:1/o/c:7-43".into(),
        "--to".into(),
        "127.0.0.1:1/o/s".into(),
        "--tag".into(),
        "latest".into(),
    ])
    .await;
    assert_eq!(code, 1);
    assert_eq!(out, Value::Null);
    assert!(stderr.contains("has no digest"), "{stderr}");
    // An unreachable registry is a failure (exit 1) with the reason, not a refusal.
    let (code, out, stderr) = promote_cli(args(
        "127.0.0.1:1",
        &["--candidate", &format!("127.0.0.1:1/o/c@{}", digest_of(b"x")), "--to", "127.0.0.1:1/o/s", "--tag", "latest"],
    ))
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(out["result"], "Failed");
    assert!(stderr.contains("unreachable"), "{stderr}");
}
