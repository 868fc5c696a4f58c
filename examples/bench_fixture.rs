//! Benchmark fixture: starts a real `docker-registry` on loopback, pushes synthetic Kinoite-like
//! images of benchmark size, writes their references to an env file, and keeps the registry
//! running until interrupted. Used by the scripts in `bench/`.
//!
//! ```sh
//! cargo run --release --example bench_fixture -- --env-file /tmp/kzo-bench.env
//! ```
//!
//! Pushed (all in one registry):
//! - `bench/kinoite-main:latest` (+ immutable `latest-20260227.1`, `43-20260227.1`): `--layers`
//!   gzip layers totalling `--base-mib`, two kernel directories, a third kernel added then removed
//!   by a whiteout, Kinoite labels;
//! - `bench/devcontainer:latest`: a small builder image;
//! - `bench/kinoite-zfs-candidate:1-43`: the base layers plus a ZFS delta layer of `--delta-mib`
//!   (zfs, zpool, `zfs.ko.xz` for both kernels);
//! - `bench/promote-candidate:1-43`: an image with one `--big-layer-mib` layer (promotion benchmark);
//! - `bench/kinoite-next:latest` (+ `latest-20260228.1`, `43-20260228.1`): the "next night" base
//!   (nightly benchmark): the base's layers (mounted) with its last two replaced by two new layers of
//!   the same size, one carrying a new kernel directory, one whiting out the oldest kernel (and, like
//!   the layer it replaces, the removed one).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use support::image::{Compression, Entry, Layer, OCI_CONFIG, OCI_MANIFEST, Pusher, noise};
use support::registry::Registry;

pub const KERNELS: [&str; 2] = ["6.18.12-200.fc43.x86_64", "6.18.13-200.fc43.x86_64"];
const REMOVED_KERNEL: &str = "6.18.9-200.fc43.x86_64";
/// The next night's new kernel; the next night's kernels are `KERNELS[1]` and this one.
const NEXT_KERNEL: &str = "6.18.14-200.fc43.x86_64";

struct Args {
    env_file: PathBuf,
    base_mib: usize,
    layers: usize,
    delta_mib: usize,
    big_layer_mib: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        env_file: PathBuf::from("/tmp/kzo-bench.env"),
        base_mib: 1024,
        layers: 40,
        delta_mib: 20,
        big_layer_mib: 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--env-file" => args.env_file = PathBuf::from(value()),
            "--base-mib" => args.base_mib = value().parse().expect("--base-mib N"),
            "--layers" => args.layers = value().parse().expect("--layers N"),
            "--delta-mib" => args.delta_mib = value().parse().expect("--delta-mib N"),
            "--big-layer-mib" => args.big_layer_mib = value().parse().expect("--big-layer-mib N"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// A layer already compressed and pushed: what a manifest needs.
struct PushedLayer {
    digest: String,
    diff_id: String,
    size: usize,
    media_type: &'static str,
}

async fn push_layer(pusher: &Pusher, repo: &str, layer: Layer) -> PushedLayer {
    let (blob, diff_id) = layer.blob();
    let size = blob.len();
    let media_type = layer.media_type(support::image::Format::Oci);
    let digest = pusher.push_blob(repo, blob).await;
    PushedLayer { digest, diff_id, size, media_type }
}

async fn push_manifest(
    pusher: &Pusher,
    repo: &str,
    tags: &[&str],
    layers: &[&PushedLayer],
    labels: &BTreeMap<&str, &str>,
) -> String {
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_size = config.len();
    let config_digest = pusher.push_blob(repo, config).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = pusher.put_manifest(repo, None, OCI_MANIFEST, manifest.clone()).await;
    for tag in tags {
        pusher.put_manifest(repo, Some(tag), OCI_MANIFEST, manifest.clone()).await;
    }
    digest
}

fn mib(n: usize) -> usize {
    n * 1024 * 1024
}

#[tokio::main]
async fn main() {
    support::init();
    let args = parse_args();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let host = registry.host().to_string();
    eprintln!("registry on {host}; generating images (this takes a while)");

    // Base: the first layer carries the kernel directories, every layer carries its share of noise.
    let per_layer = mib(args.base_mib) / args.layers.max(1);
    let mut base_layers = Vec::new();
    for i in 0..args.layers {
        let mut entries = Vec::new();
        if i == 0 {
            for kernel in KERNELS.iter().chain([&REMOVED_KERNEL]) {
                entries.push(Entry::dir(&format!("usr/lib/modules/{kernel}")));
                entries.push(Entry::file(&format!("usr/lib/modules/{kernel}/vmlinuz"), b"kernel".to_vec()));
            }
        }
        if i == args.layers - 1 {
            entries.push(Entry::whiteout(&format!("usr/lib/modules/{REMOVED_KERNEL}")));
        }
        entries.push(Entry::file(&format!("usr/share/bench/blob-{i:03}"), noise(per_layer, i as u64 + 1)));
        base_layers.push(push_layer(&pusher, "bench/kinoite-main", Layer::gzip(entries)).await);
    }
    let mut base_labels = BTreeMap::new();
    base_labels.insert("ostree.linux", KERNELS[1]);
    base_labels.insert("org.opencontainers.image.version", "43.20260227.1");
    let base_refs: Vec<&PushedLayer> = base_layers.iter().collect();
    let base_digest = push_manifest(
        &pusher,
        "bench/kinoite-main",
        &["latest", "latest-20260227.1", "43-20260227.1"],
        &base_refs,
        &base_labels,
    )
    .await;

    let builder_layer = push_layer(
        &pusher,
        "bench/devcontainer",
        Layer::gzip(vec![Entry::executable("usr/bin/just", b"#!/bin/sh\n".to_vec())]),
    )
    .await;
    let builder_digest =
        push_manifest(&pusher, "bench/devcontainer", &["latest"], &[&builder_layer], &BTreeMap::new()).await;

    // Candidate: the same base blobs (mounted, not re-uploaded) plus the ZFS delta.
    for layer in &base_layers {
        mount(&registry, "bench/kinoite-zfs-candidate", "bench/kinoite-main", &layer.digest).await;
    }
    let mut delta = vec![
        Entry::executable("usr/sbin/zfs", b"zfs".to_vec()),
        Entry::executable("usr/sbin/zpool", b"zpool".to_vec()),
        Entry::file("usr/lib64/libzpool.so.6", noise(mib(args.delta_mib), 99)),
    ];
    for kernel in KERNELS {
        delta.push(Entry::file(&format!("usr/lib/modules/{kernel}/extra/zfs/zfs.ko.xz"), b"ko".to_vec()));
    }
    let delta_layer = push_layer(&pusher, "bench/kinoite-zfs-candidate", Layer::new(Compression::Gzip, delta)).await;
    let mut candidate_refs = base_refs.clone();
    candidate_refs.push(&delta_layer);
    let candidate_digest =
        push_manifest(&pusher, "bench/kinoite-zfs-candidate", &["1-43"], &candidate_refs, &base_labels).await;

    let big = push_layer(
        &pusher,
        "bench/promote-candidate",
        Layer::gzip(vec![Entry::file("usr/share/bench/big", noise(mib(args.big_layer_mib), 7))]),
    )
    .await;
    let promote_digest = push_manifest(&pusher, "bench/promote-candidate", &["1-43"], &[&big], &base_labels).await;

    // The next night: all but the last two base layers unchanged, then two new ones.
    let kept = args.layers.saturating_sub(2);
    for layer in &base_layers[..kept] {
        mount(&registry, "bench/kinoite-next", "bench/kinoite-main", &layer.digest).await;
    }
    let new_kernel = vec![
        Entry::dir(&format!("usr/lib/modules/{NEXT_KERNEL}")),
        Entry::file(&format!("usr/lib/modules/{NEXT_KERNEL}/vmlinuz"), b"kernel".to_vec()),
        Entry::file("usr/share/bench/next-a", noise(per_layer, 1001)),
    ];
    let whiteouts = vec![
        Entry::whiteout(&format!("usr/lib/modules/{}", KERNELS[0])),
        Entry::whiteout(&format!("usr/lib/modules/{REMOVED_KERNEL}")),
        Entry::file("usr/share/bench/next-b", noise(per_layer, 1002)),
    ];
    let mut changed = Vec::new();
    for entries in [new_kernel, whiteouts] {
        changed.push(push_layer(&pusher, "bench/kinoite-next", Layer::gzip(entries)).await);
    }
    let mut next_refs: Vec<&PushedLayer> = base_layers[..kept].iter().collect();
    next_refs.extend(changed.iter());
    let mut next_labels = base_labels.clone();
    next_labels.insert("ostree.linux", NEXT_KERNEL);
    next_labels.insert("org.opencontainers.image.version", "43.20260228.1");
    let next_digest = push_manifest(
        &pusher,
        "bench/kinoite-next",
        &["latest", "latest-20260228.1", "43-20260228.1"],
        &next_refs,
        &next_labels,
    )
    .await;

    let env = format!(
        "REGISTRY={host}\nBASE_REF={host}/bench/kinoite-main:latest\nBASE_DIGEST={base_digest}\n\
         BUILDER_REF={host}/bench/devcontainer:latest\nBUILDER_DIGEST={builder_digest}\n\
         CANDIDATE_REF={host}/bench/kinoite-zfs-candidate@{candidate_digest}\nCANDIDATE_DIGEST={candidate_digest}\n\
         PROMOTE_REF={host}/bench/promote-candidate@{promote_digest}\nPROMOTE_DIGEST={promote_digest}\n\
         KERNELS=\"{}\"\nBASE_BYTES={}\nDELTA_BYTES={}\nBIG_LAYER_BYTES={}\n\
         NEXT_REF={host}/bench/kinoite-next:latest\nNEXT_DIGEST={next_digest}\nNEXT_KERNELS=\"{} {NEXT_KERNEL}\"\n\
         NEXT_BYTES={}\nNEXT_CHANGED_BYTES={}\nNEXT_LAYERS={}\n",
        KERNELS.join(" "),
        base_layers.iter().map(|l| l.size).sum::<usize>(),
        delta_layer.size,
        big.size,
        KERNELS[1],
        next_refs.iter().map(|l| l.size).sum::<usize>(),
        changed.iter().map(|l| l.size).sum::<usize>(),
        next_refs.len(),
    );
    std::fs::write(&args.env_file, env).expect("write env file");
    eprintln!("ready: wrote {}; Ctrl-C or SIGTERM stops the registry", args.env_file.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(registry);
}

/// Cross-repository blob mount (the candidate shares the base layers, as a real build's would).
async fn mount(registry: &Registry, repo: &str, from: &str, digest: &str) {
    let url = format!("{}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}", registry.base_url());
    let resp = reqwest::Client::new().post(url).send().await.expect("mount request");
    assert_eq!(resp.status().as_u16(), 201, "mount of {digest} into {repo}");
}
