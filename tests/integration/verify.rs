//! Candidate verification against the registry fixture, through the `kinoite-zfs-operator
//! verify` binary: files, hard links, symlinks and `.ko.xz`; whiteouts of a module file, a module
//! directory and an opaque `extra/`; a command whited out above a lower layer; the delta-only scan
//! (bytes and downloads); a tag resolved once; indexes; and errors that give no verdict.

use kinoite_zfs_operator::controllers::image_build::execute;
use kinoite_zfs_operator::controllers::image_build::work::{FailureClass, VerifyRequest, WorkOutcome};
use kinoite_zfs_operator::pipeline::scan_memory::ScanMemory;
use serde_json::{Value, json};

use super::cache_check::{K1, K2, K13, Run, client, operator};
use crate::support::faults::FaultProxy;
use crate::support::image::{Compression, Entry, ImageSpec, Layer, Platform, PushedImage, Pusher, noise};
use crate::support::registry::Registry;
use crate::support::{init, skopeo};

const OSTREE_OBJECT: &str = "/sysroot/ostree/repo/objects/3f/0a1b2c.file";

async fn verify(host: &str, image: &str, kernels: &[&str], base: Option<&str>, extra: &[&str]) -> Run {
    let mut args: Vec<String> =
        vec!["verify".into(), "--insecure-registry".into(), host.into(), "--image".into(), image.into()];
    for k in kernels {
        args.extend(["--kernel-release".to_string(), k.to_string()]);
    }
    if let Some(base) = base {
        args.extend(["--base-image".to_string(), base.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    operator(args).await
}

/// A verification that failed: exit 1, the verdict on stdout, the reason on stderr.
fn failed(run: &Run) -> Value {
    assert_eq!(run.code, 1, "expected a failed verification:\n{}\n{}", run.stdout, run.stderr);
    let out = run.json();
    assert_eq!(out["verified"], false);
    let message = out["message"].as_str().expect("a message");
    assert!(run.stderr.contains(message), "the reason is on stderr: {}", run.stderr);
    out
}

fn passed(run: &Run) -> Value {
    assert_eq!(run.code, 0, "expected a verified candidate:\n{}\n{}", run.stdout, run.stderr);
    let out = run.json();
    assert_eq!(out["verified"], true);
    assert_eq!(out["message"], Value::Null);
    out
}

/// A Kinoite-like base: kernel directories, a big incompressible layer, `lib -> usr/lib`.
fn base_layers() -> Vec<Layer> {
    vec![
        Layer::gzip(vec![
            Entry::symlink("lib", "usr/lib"),
            Entry::file(&format!("usr/lib/modules/{K1}/vmlinuz"), b"k1".to_vec()),
            Entry::file(&format!("usr/lib/modules/{K2}/vmlinuz"), b"k2".to_vec()),
        ]),
        Layer::gzip(vec![Entry::file("usr/share/big-a", noise(768 * 1024, 1))]),
        Layer::new(Compression::Zstd, vec![Entry::file("usr/share/big-b", noise(512 * 1024, 2))]),
    ]
}

/// The ZFS payload in every form that counts: a file, a hard link, an OSTree-style absolute
/// symlink, a `.ko.xz` without the `usr/` prefix.
fn zfs_layer() -> Layer {
    Layer::gzip(vec![
        Entry::executable("usr/sbin/zfs", b"zfs".to_vec()),
        Entry::hardlink("usr/sbin/zpool", "usr/sbin/zfs"),
        Entry::symlink(&format!("usr/lib/modules/{K1}/extra/zfs/zfs.ko"), OSTREE_OBJECT),
        Entry::file(&format!("lib/modules/{K2}/extra/zfs/zfs.ko.xz"), noise(64 * 1024, 3)),
        Entry::file(&format!("usr/lib/modules/{K2}/extra/zfs/spl.ko.xz"), b"spl".to_vec()),
    ])
}

fn candidate(extra: Vec<Layer>) -> ImageSpec {
    let mut layers = base_layers();
    layers.push(zfs_layer());
    layers.extend(extra);
    ImageSpec::new(layers)
}

struct Fixture {
    registry: Registry,
    pusher: Pusher,
    base: PushedImage,
}

impl Fixture {
    async fn start() -> Fixture {
        init();
        let registry = Registry::start().await;
        let pusher = Pusher::new(&registry);
        let base = pusher.push_image("os/kinoite-main", Some("latest"), &ImageSpec::new(base_layers())).await;
        Fixture { registry, pusher, base }
    }

    fn host(&self) -> &str {
        self.registry.host()
    }

    fn base_pinned(&self) -> String {
        format!("{}/os/kinoite-main@{}", self.host(), self.base.digest)
    }

    async fn push(&self, tag: &str, spec: &ImageSpec) -> (String, PushedImage) {
        let pushed = self.pusher.push_image("os/kinoite-zfs-candidate", Some(tag), spec).await;
        (format!("{}/os/kinoite-zfs-candidate@{}", self.host(), pushed.digest), pushed)
    }
}

#[tokio::test]
async fn files_hard_links_symlinks_and_ko_xz_verify() {
    let fx = Fixture::start().await;
    let (image, pushed) = fx.push("1-43", &candidate(vec![])).await;
    let base = fx.base_pinned();
    let out = passed(&verify(fx.host(), &image, &[K2, K1], Some(&base), &[]).await);
    assert_eq!(out["candidate_image_ref"], image.as_str());
    assert_eq!(out["candidate_image_digest"], pushed.digest.as_str());
    assert_eq!(out["candidate_platform_digest"], pushed.digest.as_str());
    assert_eq!(out["kernel_releases"], json!([K1, K2]), "natural-sorted");
    assert_eq!(out["commands"], json!(["zfs", "zpool"]));
    assert_eq!(out["scan"]["mode"], "delta");
    assert_eq!(out["scan"]["base_layers"], 3);
    assert_eq!(out["scan"]["layers_scanned"], 1);
    assert_eq!(out["bytes_read"].as_u64(), Some(pushed.layer_sizes[3]), "only the ZFS layer was read");

    // The same without a base reads every layer; YAML output works too.
    let out = passed(&verify(fx.host(), &image, &[K1, K2], None, &[]).await);
    assert_eq!(out["bytes_read"].as_u64(), Some(pushed.total_layer_bytes()));
    assert_eq!((out["scan"]["mode"].as_str(), out["scan"]["layers_scanned"].as_u64()), (Some("full"), Some(4)));
    let run = verify(fx.host(), &image, &[K1], None, &["-o", "yaml"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("verified: true"), "{}", run.stdout);

    // A kernel the image has no module for.
    let out = failed(&verify(fx.host(), &image, &[K1, K2, K13], Some(&base), &[]).await);
    assert_eq!(
        out["message"],
        format!(
            "Candidate image is missing a ZFS module payload for kernels {K13}: {image} \
             (checked the 1 layer the candidate adds on top of {base})"
        )
    );
    assert_eq!(out["kernel_releases"], json!([K1, K2]));
    assert_eq!(out["missing_kernel_releases"], json!([K13]));
}

#[tokio::test]
async fn later_layers_whiting_out_payload_fail_verification() {
    let fx = Fixture::start().await;
    let base = fx.base_pinned();
    let k1_module = format!("usr/lib/modules/{K1}/extra/zfs/zfs.ko");
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        ("module-file", vec![Entry::whiteout(&k1_module)], K1),
        ("module-dir", vec![Entry::whiteout(&format!("lib/modules/{K2}/extra/zfs"))], K2),
        (
            "opaque-extra",
            vec![
                Entry::opaque(&format!("usr/lib/modules/{K1}/extra")),
                Entry::file(&format!("usr/lib/modules/{K1}/extra/other/other.ko"), b"o".to_vec()),
            ],
            K1,
        ),
        ("kernel-dir", vec![Entry::whiteout(&format!("usr/lib/modules/{K1}"))], K1),
    ];
    for (tag, entries, missing) in cases {
        let (image, _) = fx.push(tag, &candidate(vec![Layer::gzip(entries)])).await;
        for base in [Some(base.as_str()), None] {
            let out = failed(&verify(fx.host(), &image, &[K1, K2], base, &[]).await);
            assert_eq!(out["missing_kernel_releases"], json!([missing]), "{tag}: {out}");
            assert!(
                out["message"].as_str().unwrap().starts_with(&format!(
                    "Candidate image is missing a ZFS module payload for kernels {missing}: {image}"
                )),
                "{tag}: {out}"
            );
            assert_eq!(out["commands"], json!(["zfs", "zpool"]));
        }
    }

    // An opaque marker after a module in the same layer hides only lower layers (H9): it verifies.
    let same_layer = Layer::gzip(vec![
        Entry::file(&format!("usr/lib/modules/{K1}/extra/zfs/zfs.ko.zst"), b"ko".to_vec()),
        Entry::opaque(&format!("usr/lib/modules/{K1}/extra")),
    ]);
    let (image, _) = fx.push("opaque-same-layer", &candidate(vec![same_layer])).await;
    passed(&verify(fx.host(), &image, &[K1, K2], Some(&base), &[]).await);
}

#[tokio::test]
async fn a_command_only_in_a_lower_layer_and_whited_out_above_is_missing() {
    let fx = Fixture::start().await;
    let base = fx.base_pinned();
    // zpool comes from a lower candidate layer (the ZFS layer), and a later layer removes it;
    // zfs moves from usr/sbin to usr/bin, which is accepted.
    let upper = Layer::new(
        Compression::None,
        vec![
            Entry::whiteout("usr/sbin/zpool"),
            Entry::whiteout("usr/sbin/zfs"),
            Entry::executable("usr/bin/zfs", b"zfs".to_vec()),
        ],
    );
    let (image, _) = fx.push("no-zpool", &candidate(vec![upper])).await;
    let out = failed(&verify(fx.host(), &image, &[K1, K2], Some(&base), &[]).await);
    assert_eq!(out["commands"], json!(["zfs"]));
    assert_eq!(out["missing_commands"], json!(["zpool"]));
    assert_eq!(out["kernel_releases"], json!([K1, K2]));
    assert!(
        out["message"].as_str().unwrap().starts_with(&format!(
            "Candidate image is missing expected command zpool (looked in usr/sbin and usr/bin): {image}"
        )),
        "{out}"
    );

    // A candidate with no ZFS at all names both commands and every kernel, in R10.6's order.
    let (image, _) = fx
        .push(
            "plain",
            &ImageSpec::new([base_layers(), vec![Layer::gzip(vec![Entry::file("etc/motd", b"hi".to_vec())])]].concat()),
        )
        .await;
    let out = failed(&verify(fx.host(), &image, &[K1, K2], Some(&base), &[]).await);
    let message = out["message"].as_str().unwrap();
    assert!(message.starts_with("Candidate image is missing expected commands zfs, zpool"), "{message}");
    assert!(message.contains(&format!("missing a ZFS module payload for kernels {K1} {K2}")), "{message}");
}

#[tokio::test]
async fn the_delta_scan_downloads_only_the_added_layers() {
    let fx = Fixture::start().await;
    // Base (3 layers, ~1.3 MiB) + the ZFS layer + a documentation layer.
    let mut spec = candidate(vec![Layer::gzip(vec![Entry::file("usr/share/doc/zfs/README", noise(200 * 1024, 4))])]);
    let (image, pushed) = fx.push("delta", &spec).await;
    let proxy = FaultProxy::start(fx.host()).await;
    let host = proxy.host().to_string();
    let image_via = image.replace(fx.host(), &host);
    let base_via = fx.base_pinned().replace(fx.host(), &host);

    proxy.reset_seen();
    let out = passed(&verify(&host, &image_via, &[K1, K2], Some(&base_via), &[]).await);
    let delta_bytes = pushed.layer_sizes[3] + pushed.layer_sizes[4];
    assert_eq!(out["bytes_read"].as_u64(), Some(delta_bytes), "{out}");
    assert_eq!(out["scan"]["layers_scanned"], 2);
    let downloads: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("/blobs/sha256") && s.method == "GET")
        .map(|s| s.path)
        .collect();
    let layer_gets: Vec<&String> = downloads.iter().filter(|p| !p.ends_with(&pushed.config_digest)).collect();
    assert_eq!(
        layer_gets,
        [
            &format!("/v2/os/kinoite-zfs-candidate/blobs/{}", pushed.layer_digests[3]),
            &format!("/v2/os/kinoite-zfs-candidate/blobs/{}", pushed.layer_digests[4]),
        ],
        "no base layer was downloaded"
    );
    assert!(delta_bytes * 4 < pushed.total_layer_bytes(), "the base dominates the image");

    // Without a base, everything is read.
    proxy.reset_seen();
    let out = passed(&verify(&host, &image_via, &[K1, K2], None, &[]).await);
    assert_eq!(out["bytes_read"].as_u64(), Some(pushed.total_layer_bytes()));

    // A candidate that was not built on this base: every layer is read, and the output says so.
    spec.layers[1] = Layer::gzip(vec![Entry::file("usr/share/big-a", noise(768 * 1024, 99))]);
    let (rebased, rebased_pushed) = fx.push("rebased", &spec).await;
    let out = passed(&verify(fx.host(), &rebased, &[K1, K2], Some(&fx.base_pinned()), &[]).await);
    assert_eq!(out["scan"]["mode"], "full");
    assert_eq!(out["bytes_read"].as_u64(), Some(rebased_pushed.total_layer_bytes()));
    let note = out["scan"]["note"].as_str().unwrap();
    assert!(note.starts_with("the candidate does not start with the base image's layers (layer 2 is"), "{note}");

    // The payload can only come from the added layers: a base's own zfs/zpool do not count.
    let mut base_with_zfs = base_layers();
    base_with_zfs.push(Layer::gzip(vec![
        Entry::file("usr/bin/zfs", b"old".to_vec()),
        Entry::file("usr/bin/zpool", b"old".to_vec()),
    ]));
    let old_base =
        fx.pusher.push_image("os/kinoite-main", Some("with-zfs"), &ImageSpec::new(base_with_zfs.clone())).await;
    base_with_zfs
        .push(Layer::gzip(vec![Entry::file(&format!("usr/lib/modules/{K1}/extra/zfs/zfs.ko"), b"ko".to_vec())]));
    let (image, _) = fx.push("modules-only", &ImageSpec::new(base_with_zfs)).await;
    let old_base_ref = format!("{}/os/kinoite-main@{}", fx.host(), old_base.digest);
    let out = failed(&verify(fx.host(), &image, &[K1], Some(&old_base_ref), &[]).await);
    assert_eq!(out["missing_commands"], json!(["zfs", "zpool"]));
    passed(&verify(fx.host(), &image, &[K1], None, &[]).await);
}

#[tokio::test]
async fn a_tag_is_resolved_once_then_only_the_digest_is_used() {
    let fx = Fixture::start().await;
    let (_, pushed) = fx.push("1-43", &candidate(vec![])).await;
    let proxy = FaultProxy::start(fx.host()).await;
    let host = proxy.host().to_string();
    proxy.reset_seen();
    let out = passed(&verify(&host, &format!("{host}/os/kinoite-zfs-candidate:1-43"), &[K1, K2], None, &[]).await);
    assert_eq!(out["candidate_image_ref"], format!("{host}/os/kinoite-zfs-candidate@{}", pushed.digest));
    let manifest_requests: Vec<(String, String)> =
        proxy.seen().into_iter().filter(|s| s.path.contains("/manifests/")).map(|s| (s.method, s.path)).collect();
    let by_tag: Vec<&(String, String)> = manifest_requests.iter().filter(|(_, p)| p.ends_with("/1-43")).collect();
    assert_eq!(
        by_tag,
        [&("HEAD".to_string(), "/v2/os/kinoite-zfs-candidate/manifests/1-43".to_string())],
        "{manifest_requests:?}"
    );
    assert!(
        manifest_requests.iter().any(|(_, p)| p.ends_with(&pushed.digest)),
        "then the digest: {manifest_requests:?}"
    );

    // skopeo agrees on what the tag pointed at.
    let inspected: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/os/kinoite-zfs-candidate:1-43", fx.host()),
    ]))
    .unwrap();
    assert_eq!(inspected["Digest"], pushed.digest.as_str());
}

#[tokio::test]
async fn an_index_is_verified_on_its_linux_amd64_image() {
    let fx = Fixture::start().await;
    let arm64 = ImageSpec::new(base_layers()).platform(Platform::linux("arm64"));
    let index = fx.pusher.push_index("os/kinoite-zfs-candidate", Some("multi"), &[arm64, candidate(vec![])]).await;
    let amd64 = &index.children[1];
    let image = format!("{}/os/kinoite-zfs-candidate@{}", fx.host(), index.digest);
    let base_index = fx.pusher.push_index("os/kinoite-main", Some("multi"), &[ImageSpec::new(base_layers())]).await;
    let base = format!("{}/os/kinoite-main@{}", fx.host(), base_index.digest);
    let out = passed(&verify(fx.host(), &image, &[K1, K2], Some(&base), &[]).await);
    assert_eq!(out["candidate_image_ref"], image.as_str());
    assert_eq!(out["candidate_image_digest"], index.digest.as_str());
    assert_eq!(out["candidate_platform_digest"], amd64.digest.as_str());
    assert_eq!(out["scan"]["mode"], "delta", "the base index resolves to its amd64 image too");
    assert_eq!(out["bytes_read"].as_u64(), Some(amd64.layer_sizes[3]));

    // The controller's work item records both digests.
    let request =
        VerifyRequest { image: image.clone(), kernel_releases: vec![K1.into(), K2.into()], base_image: Some(base) };
    let WorkOutcome::Verified(result) =
        execute::verify(&client(fx.host(), None), &request, &ScanMemory::default()).await
    else {
        panic!()
    };
    assert!(result.verified);
    assert_eq!(result.platform_digest.as_deref(), Some(amd64.digest.as_str()));
    assert_eq!(result.bytes_read as u64, amd64.layer_sizes[3]);
}

#[tokio::test]
async fn errors_give_no_verdict() {
    init();
    let registry = Registry::start_with_auth("builder", "verify-pw-33cd").await;
    let host = registry.host().to_string();
    let pusher = Pusher::new(&registry);
    let pushed = pusher.push_image("os/candidate", Some("1-43"), &candidate(vec![])).await;
    let image = format!("{host}/os/candidate@{}", pushed.digest);

    let run = verify(&host, &image, &[K1], None, &[]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stdout.is_empty() && run.stderr.contains("unauthorized"), "{}", run.stderr);
    let WorkOutcome::Failed(f) = execute::verify(
        &client(&host, None),
        &VerifyRequest { image: image.clone(), kernel_releases: vec![K1.into()], base_image: None },
        &ScanMemory::default(),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(f.class, FailureClass::Unauthorized);

    let config = registry.docker_config();
    let config = config.to_str().unwrap();
    passed(&verify(&host, &image, &[K1, K2], None, &["--registry-config", config]).await);

    let absent = format!("{host}/os/candidate@sha256:{}", "0".repeat(64));
    let run = verify(&host, &absent, &[K1], None, &["--registry-config", config]).await;
    assert!(run.code == 2 && run.stdout.is_empty() && run.stderr.contains("not found"), "{}", run.stderr);

    let run =
        verify(&host, &image, &[K1], Some(&format!("{host}/os/kinoite-main:latest")), &["--registry-config", config])
            .await;
    assert!(run.code == 2 && run.stderr.contains("is not pinned by digest"), "{}", run.stderr);

    let run = verify(&host, &image, &["bad release"], None, &["--registry-config", config]).await;
    assert!(run.code == 2 && run.stderr.contains("invalid kernel release"), "{}", run.stderr);

    // A base that no longer exists only costs the delta: every layer is read, and it verifies.
    let gone = format!("{host}/os/kinoite-main@sha256:{}", "1".repeat(64));
    let out = passed(&verify(&host, &image, &[K1, K2], Some(&gone), &["--registry-config", config]).await);
    assert_eq!(out["scan"]["mode"], "full");
    assert!(out["scan"]["note"].as_str().unwrap().contains("was not found"), "{out}");
}
