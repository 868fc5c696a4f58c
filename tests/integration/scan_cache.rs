//! `--scan-cache DIR` of `resolve`, `verify` and `cache-check` against the real registry fixture,
//! behind the fault proxy that records every request: the layer bytes each run downloads are
//! counted from the blob GETs the registry served. A second run reads fewer bytes (none for an
//! image seen before, only the changed layers for the "next night" base), a corrupt entry is read
//! again, and every output equals the output of a run without the cache.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::cache_check::{Run, operator};
use crate::support::faults::FaultProxy;
use crate::support::image::{Entry, ImageSpec, Layer, OCI_MANIFEST, PushedImage, Pusher, noise};
use crate::support::init;
use crate::support::registry::Registry;

const K_OLD: &str = "6.18.9-200.fc43.x86_64";
const K_NEW: &str = "6.18.12-200.fc43.x86_64";
/// The "next night" kernel: added by a new layer while another new layer whites out K_OLD.
const K_NEXT: &str = "6.18.13-200.fc43.x86_64";
const AKMODS: &str = "9d13b6950811cdaae2e8ab748c85c5da35810ae3";
const BASE_REPO: &str = "test/kinoite-main";
const BUILDER_REPO: &str = "test/devcontainer";

/// The layers every night shares: the kernels, OSTree-style links, payload.
fn shared_layers() -> Vec<Layer> {
    vec![
        Layer::gzip(vec![
            Entry::symlink("lib", "usr/lib"),
            Entry::dir(&format!("usr/lib/modules/{K_OLD}")),
            Entry::file(&format!("usr/lib/modules/{K_OLD}/vmlinuz"), b"old kernel".to_vec()),
            Entry::file(&format!("usr/lib/modules/{K_NEW}/vmlinuz"), b"new kernel".to_vec()),
        ]),
        Layer::gzip(vec![Entry::file("usr/share/kinoite/payload-a", noise(96 * 1024, 1))]),
        Layer::gzip(vec![Entry::file("usr/share/kinoite/payload-b", noise(96 * 1024, 2))]),
    ]
}

fn night(layers: Vec<Layer>, version: &str) -> ImageSpec {
    ImageSpec::new(layers).label("ostree.linux", K_NEW).label("org.opencontainers.image.version", version)
}

/// The first night's base, and the next night's: the shared layers plus one carrying a new kernel
/// directory and one whiting out the old kernel.
fn nights() -> (ImageSpec, ImageSpec) {
    let first = night(shared_layers(), "43.20260227.1");
    let mut layers = shared_layers();
    layers.push(Layer::gzip(vec![
        Entry::dir(&format!("usr/lib/modules/{K_NEXT}")),
        Entry::file(&format!("usr/lib/modules/{K_NEXT}/vmlinuz"), noise(32 * 1024, 3)),
    ]));
    layers.push(Layer::gzip(vec![Entry::whiteout(&format!("usr/lib/modules/{K_OLD}"))]));
    (first, night(layers, "43.20260228.1"))
}

/// Pushes `spec` as `latest` plus its immutable date tag.
async fn push_night(pusher: &Pusher, spec: &ImageSpec, suffix: &str) -> PushedImage {
    let image = pusher.push_image(BASE_REPO, Some("latest"), spec).await;
    pusher.put_manifest(BASE_REPO, Some(&format!("latest-{suffix}")), OCI_MANIFEST, image.manifest.clone()).await;
    image
}

/// Compressed layer bytes the registry served through the proxy since the last reset (blob GETs
/// of known layers; config blobs are not layers).
fn layer_bytes(proxy: &FaultProxy, sizes: &HashMap<String, u64>) -> u64 {
    proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.fault.is_none())
        .filter_map(|s| s.path.rsplit_once("/blobs/").and_then(|(_, digest)| sizes.get(digest)))
        .sum()
}

fn sizes_of(images: &[&PushedImage]) -> HashMap<String, u64> {
    images.iter().flat_map(|i| i.layer_digests.iter().cloned().zip(i.layer_sizes.iter().copied())).collect()
}

/// The persisted entry of one layer for one question.
fn entry_file(dir: &Path, question_dir: &str, layer_digest: &str) -> std::path::PathBuf {
    dir.join(question_dir).join(layer_digest.replacen(':', "-", 1))
}

fn with_cache(args: &[String], dir: &Path) -> Vec<String> {
    let mut args = args.to_vec();
    args.extend(["--scan-cache".to_string(), dir.display().to_string()]);
    args
}

/// The output without its timestamp.
fn stable(run: &Run) -> Value {
    assert_eq!(run.code, 0, "failed:\n{}", run.stderr);
    let mut json = run.json();
    if let Some(object) = json.as_object_mut() {
        object.remove("generated_at");
    }
    json
}

#[tokio::test]
async fn resolve_with_a_scan_cache_reads_only_the_changed_layers() {
    init();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let (first, next) = nights();
    let night1 = push_night(&pusher, &first, "20260227.1").await;
    pusher
        .push_image(
            BUILDER_REPO,
            Some("latest"),
            &ImageSpec::new(vec![Layer::gzip(vec![Entry::file("usr/bin/just", b"x".to_vec())])]),
        )
        .await;
    let proxy = FaultProxy::start(registry.host()).await;
    let host = proxy.host().to_string();
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "resolve",
        "--insecure-registry",
        &host,
        "--base-image",
        &format!("{host}/{BASE_REPO}:latest"),
        "--builder-image",
        &format!("{host}/{BUILDER_REPO}:latest"),
        "--akmods-ref",
        AKMODS,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // Night 1, cold: every layer is read, the output is the one without a cache.
    let plain = stable(&operator(args.clone()).await);
    assert_eq!(plain["inputs"]["kernel_releases"], serde_json::json!([K_OLD, K_NEW]));
    proxy.reset_seen();
    let cold = operator(with_cache(&args, dir.path())).await;
    assert_eq!(stable(&cold), plain);
    let sizes = sizes_of(&[&night1]);
    assert_eq!(layer_bytes(&proxy, &sizes), night1.layer_sizes.iter().sum::<u64>());

    // The same base again: no layer is downloaded.
    proxy.reset_seen();
    let warm = operator(with_cache(&args, dir.path())).await;
    assert_eq!(stable(&warm), plain);
    assert_eq!(layer_bytes(&proxy, &sizes), 0, "{}", warm.stderr);

    // Night 2: only the two new layers are downloaded; the new kernel is found and the whited-out
    // one is gone, exactly as a run without the cache says.
    let night2 = push_night(&pusher, &next, "20260228.1").await;
    let sizes = sizes_of(&[&night1, &night2]);
    let changed: u64 = night2.layer_sizes[3..].iter().sum();
    let plain2 = stable(&operator(args.clone()).await);
    assert_eq!(plain2["inputs"]["kernel_releases"], serde_json::json!([K_NEW, K_NEXT]));
    assert_eq!(plain2["inputs"]["kernel_release"], K_NEXT);
    proxy.reset_seen();
    let next_night = operator(with_cache(&args, dir.path())).await;
    assert_eq!(stable(&next_night), plain2);
    assert_eq!(layer_bytes(&proxy, &sizes), changed);
    assert!(changed < night2.layer_sizes.iter().sum::<u64>() / 4, "the changed layers are a small part");

    // A corrupt entry (the new-kernel layer's) is ignored and that layer alone is read again.
    let file = entry_file(dir.path(), "kernels-v1", &night2.layer_digests[3]);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    proxy.reset_seen();
    let repaired = operator(with_cache(&args, dir.path())).await;
    assert_eq!(stable(&repaired), plain2);
    assert_eq!(layer_bytes(&proxy, &sizes), night2.layer_sizes[3]);
    assert!(repaired.stderr.contains("ignoring a corrupt persisted layer scan"), "{}", repaired.stderr);
    // ... and rewritten: the next run reads nothing.
    proxy.reset_seen();
    assert_eq!(stable(&operator(with_cache(&args, dir.path())).await), plain2);
    assert_eq!(layer_bytes(&proxy, &sizes), 0);

    // Concurrent runs sharing the directory (cold, on a fresh one) all succeed with one answer
    // and leave only whole files behind.
    let shared = tempfile::tempdir().unwrap();
    let runs = futures::future::join_all((0..4).map(|_| operator(with_cache(&args, shared.path())))).await;
    for run in &runs {
        assert_eq!(stable(run), plain2);
    }
    let names: Vec<String> = std::fs::read_dir(shared.path().join("kernels-v1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), night2.layer_digests.len(), "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("sha256-")), "no temporary file is left: {names:?}");

    // A directory that cannot be created is a usage error, not a scan without memory.
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let run = operator(with_cache(&args, &not_a_dir)).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("scan cache directory"), "{}", run.stderr);
}

fn zfs_layer() -> Layer {
    let mut entries = vec![
        Entry::executable("usr/sbin/zfs", b"zfs".to_vec()),
        Entry::executable("usr/sbin/zpool", b"zpool".to_vec()),
    ];
    for k in [K_OLD, K_NEW] {
        entries.push(Entry::file(&format!("usr/lib/modules/{k}/extra/zfs/zfs.ko.xz"), noise(16 * 1024, 9)));
    }
    Layer::gzip(entries)
}

#[tokio::test]
async fn verify_and_cache_check_with_a_scan_cache() {
    init();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let mut layers = shared_layers();
    layers.push(zfs_layer());
    let candidate = pusher.push_image("os/candidate", Some("1-43"), &ImageSpec::new(layers)).await;
    let mut kmods = vec![Entry::dir("rpms/kmods/zfs"), Entry::file("rpms/kmods/zfs/pad", noise(48 * 1024, 4))];
    for k in [K_OLD, K_NEW] {
        kmods.push(Entry::file(&format!("rpms/kmods/zfs/kmod-zfs-{k}-2.4.1-1.fc43.x86_64.rpm"), b"kmod".to_vec()));
    }
    let cache = pusher.push_image("os/akmods-zfs", Some("main-43"), &ImageSpec::new(vec![Layer::gzip(kmods)])).await;
    let proxy = FaultProxy::start(registry.host()).await;
    let host = proxy.host().to_string();
    let sizes = sizes_of(&[&candidate, &cache]);
    let dir = tempfile::tempdir().unwrap();

    let verify: Vec<String> = ["verify", "--insecure-registry", &host, "--image"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("{host}/os/candidate@{}", candidate.digest)])
        .chain(["--kernel-release", K_OLD, "--kernel-release", K_NEW].iter().map(|s| s.to_string()))
        .collect();
    let check: Vec<String> = ["cache-check", "--insecure-registry", &host, "--image"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("{host}/os/akmods-zfs:main-43")])
        .chain(["--kernel-release", K_OLD, "--kernel-release", K_NEW].iter().map(|s| s.to_string()))
        .collect();
    let without_bytes = |run: &Run| {
        let mut json = stable(run);
        json.as_object_mut().unwrap().remove("bytes_read");
        json
    };

    for (args, image, question_dir) in [(&verify, &candidate, "verify-v1"), (&check, &cache, "cache-scan-v1")] {
        let plain = operator(args.clone()).await;
        let total: u64 = image.layer_sizes.iter().sum();
        assert_eq!(stable(&plain)["bytes_read"], total, "{}", plain.stdout);
        proxy.reset_seen();
        let cold = operator(with_cache(args, dir.path())).await;
        assert_eq!(stable(&cold), stable(&plain));
        assert_eq!(layer_bytes(&proxy, &sizes), total);

        proxy.reset_seen();
        let warm = operator(with_cache(args, dir.path())).await;
        assert_eq!(without_bytes(&warm), without_bytes(&plain));
        assert_eq!(stable(&warm)["bytes_read"], 0);
        assert_eq!(layer_bytes(&proxy, &sizes), 0, "{}", warm.stderr);

        // Corrupt the last layer's entry: only that layer is read again, same verdict.
        let last = image.layer_digests.len() - 1;
        std::fs::write(entry_file(dir.path(), question_dir, &image.layer_digests[last]), b"not an entry").unwrap();
        proxy.reset_seen();
        let repaired = operator(with_cache(args, dir.path())).await;
        assert_eq!(without_bytes(&repaired), without_bytes(&plain));
        assert_eq!(stable(&repaired)["bytes_read"], image.layer_sizes[last]);
        assert_eq!(layer_bytes(&proxy, &sizes), image.layer_sizes[last]);
    }
    assert_eq!(stable(&operator(verify.clone()).await)["verified"], true);
    assert_eq!(stable(&operator(check.clone()).await)["status"], "reusable");
}
