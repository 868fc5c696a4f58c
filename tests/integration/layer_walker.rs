//! The layer walker streaming real layers from the registry fixture: gzip, zstd and plain tar,
//! OCI and Docker media types, whiteouts across layers, delta-only scans, a large layer, and
//! broken layers.

use std::time::Duration;

use kinoite_zfs_operator::pipeline::layers::{EntryKind, Error, MergedView, scan_layers};
use kinoite_zfs_operator::registry::{AnswerClass, ClientSettings, ImageRef, OciRegistry, RetryPolicy, resolve_image};
use serde_json::json;

use crate::support::faults::FaultProxy;
use crate::support::image::{Compression, Entry, Format, ImageSpec, Layer, PushedImage, Pusher, digest_of, noise};
use crate::support::init;
use crate::support::registry::Registry;

fn client(host: &str) -> OciRegistry {
    OciRegistry::new(ClientSettings {
        insecure_registries: [host.to_string()].into(),
        retry: RetryPolicy { max_attempts: 2, base_delay: Duration::from_millis(10), ..RetryPolicy::default() },
        ..ClientSettings::default()
    })
    .unwrap()
}

fn image_ref(host: &str, rest: &str) -> ImageRef {
    ImageRef::parse(&format!("{host}/{rest}")).unwrap()
}

// The three callers' interests, as they will write them.

/// Kernel discovery: `(usr/)?lib/modules/<release>` directories.
fn kernel_dir(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("usr/").unwrap_or(path).strip_prefix("lib/modules/")?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// Akmods cache scan: `rpms/kmods/zfs/kmod-zfs-*.rpm`.
fn kmod_rpm(path: &str) -> bool {
    path.strip_prefix("rpms/kmods/zfs/kmod-zfs-").is_some_and(|rest| rest.ends_with(".rpm") && !rest.contains('/'))
}

/// Candidate verification: the commands and `zfs.ko*` module paths.
fn zfs_payload(path: &str) -> bool {
    const COMMANDS: [&str; 4] = ["usr/sbin/zfs", "usr/bin/zfs", "usr/sbin/zpool", "usr/bin/zpool"];
    let module = path
        .strip_prefix("usr/")
        .unwrap_or(path)
        .strip_prefix("lib/modules/")
        .and_then(|rest| rest.split_once("/extra/zfs/"))
        .is_some_and(|(release, file)| !release.contains('/') && file.starts_with("zfs.ko"));
    COMMANDS.contains(&path) || module
}

fn kernels(view: &MergedView) -> Vec<&str> {
    view.directories().filter_map(kernel_dir).collect()
}

/// A Kinoite-like image with a ZFS payload, every layer kind and every whiteout rule.
fn candidate(format: Format) -> ImageSpec {
    ImageSpec::new(vec![
        Layer::gzip(vec![
            Entry::dir("usr/lib/modules/6.18.1-200.fc43.x86_64"),
            Entry::file("usr/lib/modules/6.18.1-200.fc43.x86_64/vmlinuz", b"k1".to_vec()),
            Entry::file("usr/lib/modules/6.18.2-200.fc43.x86_64/vmlinuz", b"k2".to_vec()),
            Entry::file("usr/lib/modules/6.18.3-200.fc43.x86_64/vmlinuz", b"k3".to_vec()),
            Entry::symlink("lib", "usr/lib"),
            Entry::file("usr/bin/zpool", b"old".to_vec()),
        ]),
        Layer::new(
            Compression::Zstd,
            vec![
                Entry::executable("usr/sbin/zfs", b"zfs".to_vec()),
                Entry::hardlink("usr/sbin/zpool", "usr/sbin/zfs"),
                Entry::symlink(
                    "usr/lib/modules/6.18.1-200.fc43.x86_64/extra/zfs/zfs.ko",
                    "/sysroot/ostree/repo/objects/ab/cdef.file",
                ),
                Entry::file("usr/lib/modules/6.18.2-200.fc43.x86_64/extra/zfs/zfs.ko.xz", b"xz".to_vec()),
                Entry::file("usr/lib/modules/6.18.2-200.fc43.x86_64/extra/spl.ko", b"spl".to_vec()),
                Entry::file("rpms/kmods/zfs/kmod-zfs-6.18.13-200.fc43.x86_64-2.4.1-1.fc43.x86_64.rpm", b"r".to_vec()),
            ],
        ),
        Layer::new(
            Compression::None,
            vec![
                // A kernel removed again by a later layer, a lower-only command whited out, and an
                // opaque `extra/` that keeps its own new entry.
                Entry::whiteout("usr/lib/modules/6.18.3-200.fc43.x86_64"),
                Entry::whiteout("usr/bin/zpool"),
                Entry::file("usr/lib/modules/6.18.2-200.fc43.x86_64/extra/zfs/zfs.ko.zst", b"zst".to_vec()),
                Entry::opaque("usr/lib/modules/6.18.2-200.fc43.x86_64/extra"),
            ],
        ),
    ])
    .format(format)
}

#[tokio::test]
async fn merged_view_over_gzip_zstd_and_plain_layers() {
    init();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let host = registry.host();
    let client = client(host);
    for (repo, format) in [("test/oci", Format::Oci), ("test/docker", Format::Docker)] {
        let pushed = pusher.push_image(repo, Some("v1"), &candidate(format)).await;
        let image = resolve_image(&client, &image_ref(host, &format!("{repo}:v1"))).await.unwrap();

        let view = scan_layers(&client, &image.reference, image.layers(), |p| kernel_dir(p).is_some()).await.unwrap();
        assert_eq!(kernels(&view), ["6.18.1-200.fc43.x86_64", "6.18.2-200.fc43.x86_64"], "{repo}");
        assert_eq!(view.bytes_read(), pushed.total_layer_bytes());
        assert_eq!(view.layers_scanned(), 3);

        let view = scan_layers(&client, &image.reference, image.layers(), zfs_payload).await.unwrap();
        let payload: Vec<&str> = view.payload_paths().collect();
        assert_eq!(
            payload,
            [
                "usr/lib/modules/6.18.1-200.fc43.x86_64/extra/zfs/zfs.ko",
                "usr/lib/modules/6.18.2-200.fc43.x86_64/extra/zfs/zfs.ko.zst",
                "usr/sbin/zfs",
                "usr/sbin/zpool",
            ],
            "{repo}: zfs.ko.xz is hidden by the opaque extra/, usr/bin/zpool is whited out"
        );
        assert_eq!(view.get("usr/sbin/zpool"), Some(&EntryKind::HardLink { target: "usr/sbin/zfs".into() }));

        let view = scan_layers(&client, &image.reference, image.layers(), kmod_rpm).await.unwrap();
        assert_eq!(
            view.payload_paths().collect::<Vec<_>>(),
            ["rpms/kmods/zfs/kmod-zfs-6.18.13-200.fc43.x86_64-2.4.1-1.fc43.x86_64.rpm"]
        );
    }
}

#[tokio::test]
async fn a_delta_scan_downloads_only_the_layers_it_is_given() {
    init();
    let registry = Registry::start().await;
    let base_layers = vec![
        Layer::gzip(vec![Entry::file("usr/share/big", noise(512 * 1024, 1))]),
        Layer::gzip(vec![
            Entry::file("usr/lib/modules/6.18.1-200.fc43.x86_64/vmlinuz", b"k".to_vec()),
            Entry::file("usr/bin/zfs", b"stale zfs from the base".to_vec()),
        ]),
    ];
    let mut layers = base_layers.clone();
    layers.push(Layer::gzip(vec![
        Entry::file("usr/sbin/zfs", b"zfs".to_vec()),
        Entry::file("usr/sbin/zpool", b"zpool".to_vec()),
        Entry::file("usr/lib/modules/6.18.1-200.fc43.x86_64/extra/zfs/zfs.ko", b"ko".to_vec()),
    ]));
    let pusher = Pusher::new(&registry);
    let base = pusher.push_image("test/base", Some("v1"), &ImageSpec::new(base_layers)).await;
    let candidate: PushedImage = pusher.push_image("test/candidate", Some("v1"), &ImageSpec::new(layers)).await;
    assert_eq!(candidate.layer_digests[..2], base.layer_digests[..], "the candidate sits on the base");

    let proxy = FaultProxy::start(registry.host()).await;
    let client = client(proxy.host());
    let image = resolve_image(&client, &image_ref(proxy.host(), &format!("test/candidate@{}", candidate.digest)))
        .await
        .unwrap();
    proxy.reset_seen();
    let delta = &image.layers()[base.layer_digests.len()..];
    let view = scan_layers(&client, &image.reference, delta, zfs_payload).await.unwrap();
    assert_eq!(view.bytes_read(), candidate.layer_sizes[2], "only the added layer is read");
    assert_eq!(view.layers_scanned(), 1);
    assert_eq!(
        view.payload_paths().collect::<Vec<_>>(),
        ["usr/lib/modules/6.18.1-200.fc43.x86_64/extra/zfs/zfs.ko", "usr/sbin/zfs", "usr/sbin/zpool"]
    );
    let downloads: Vec<String> =
        proxy.seen().into_iter().filter(|s| s.path.contains("/blobs/")).map(|s| s.path).collect();
    assert_eq!(downloads, [format!("/v2/test/candidate/blobs/{}", candidate.layer_digests[2])]);

    let full = scan_layers(&client, &image.reference, image.layers(), zfs_payload).await.unwrap();
    assert_eq!(full.bytes_read(), candidate.total_layer_bytes());
    assert!(full.has_payload("usr/bin/zfs"), "the full scan also sees the base's file");
}

#[tokio::test]
async fn a_large_layer_is_streamed() {
    init();
    let registry = Registry::start().await;
    const SIZE: usize = 256 * 1024 * 1024;
    let spec = ImageSpec::new(vec![
        Layer::new(Compression::None, vec![Entry::file("var/noise.bin", noise(SIZE, 11))]),
        Layer::gzip(vec![Entry::file("usr/sbin/zfs", b"zfs".to_vec())]),
    ]);
    let pushed = Pusher::new(&registry).push_image("test/large", Some("v1"), &spec).await;
    drop(spec);
    let client = client(registry.host());
    let image = resolve_image(&client, &image_ref(registry.host(), "test/large:v1")).await.unwrap();
    let view = scan_layers(&client, &image.reference, image.layers(), zfs_payload).await.unwrap();
    assert!(view.has_payload("usr/sbin/zfs"));
    assert_eq!(view.bytes_read(), pushed.total_layer_bytes());
    assert!(view.bytes_read() > SIZE as u64);
    assert_eq!(view.entries().count(), 1, "nothing but the interesting path is kept");
}

/// A layer as (media type, blob bytes).
type RawLayer = (&'static str, Vec<u8>);

/// Pushes an image whose layers are arbitrary blobs with the given media types.
async fn push_raw(pusher: &Pusher, repo: &str, layers: Vec<RawLayer>) -> String {
    let mut descriptors = Vec::new();
    for (media_type, blob) in layers {
        let size = blob.len();
        let digest = pusher.push_blob(repo, blob).await;
        descriptors.push(json!({"mediaType": media_type, "digest": digest, "size": size}));
    }
    let config = serde_json::to_vec(
        &json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}),
    )
    .unwrap();
    let config_size = config.len();
    let config_digest = pusher.push_blob(repo, config).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors,
    });
    pusher
        .put_manifest(
            repo,
            Some("v1"),
            "application/vnd.oci.image.manifest.v1+json",
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await
}

#[tokio::test]
async fn broken_layers_are_errors_not_panics() {
    init();
    let mut registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let host = registry.host().to_string();
    let client = client(&host);
    let good = Layer::gzip(vec![Entry::file("usr/sbin/zfs", b"zfs".to_vec())]).blob().0;
    let tar = Layer::new(Compression::None, vec![Entry::file("usr/sbin/zfs", b"zfs".to_vec())]).tar();

    let cases: Vec<(&str, Vec<RawLayer>)> = vec![
        ("truncated-gzip", vec![("application/vnd.oci.image.layer.v1.tar+gzip", good[..good.len() - 12].to_vec())]),
        ("garbage-zstd", vec![("application/vnd.oci.image.layer.v1.tar+zstd", noise(4096, 5))]),
        ("tar-without-end", vec![("application/vnd.oci.image.layer.v1.tar", tar[..1024].to_vec())]),
        (
            "gzip-of-garbage",
            vec![("application/vnd.oci.image.layer.v1.tar+gzip", {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut enc, &noise(8192, 9)).unwrap();
                enc.finish().unwrap()
            })],
        ),
    ];
    for (repo, layers) in cases {
        let digest = push_raw(&pusher, &format!("broken/{repo}"), layers).await;
        let image = resolve_image(&client, &image_ref(&host, &format!("broken/{repo}@{digest}"))).await.unwrap();
        let err = scan_layers(&client, &image.reference, image.layers(), zfs_payload).await.unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{repo}: {err}");
        assert!(err.to_string().contains("malformed or truncated"), "{err}");
    }

    // An unsupported media type fails before any layer is downloaded.
    let digest = push_raw(
        &pusher,
        "broken/media-type",
        vec![
            ("application/vnd.oci.image.layer.v1.tar+gzip", good.clone()),
            ("application/vnd.in-toto+json", b"{}".to_vec()),
        ],
    )
    .await;
    let image = resolve_image(&client, &image_ref(&host, &format!("broken/media-type@{digest}"))).await.unwrap();
    let before = client.counters().total();
    let err = scan_layers(&client, &image.reference, image.layers(), zfs_payload).await.unwrap_err();
    assert!(
        matches!(&err, Error::MediaType { media_type, .. } if media_type == "application/vnd.in-toto+json"),
        "{err}"
    );
    assert_eq!(client.counters().total(), before, "no request made");

    // A stored blob whose content no longer matches its digest (a data byte, so the tar itself
    // still parses): the digest check at the end of the stream catches it.
    let digest =
        push_raw(&pusher, "broken/corrupt", vec![("application/vnd.oci.image.layer.v1.tar", tar.clone())]).await;
    let layer_digest = digest_of(&tar);
    let hex = layer_digest.trim_start_matches("sha256:");
    let path = registry.dir().join(format!("storage/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let mut stored = std::fs::read(&path).unwrap();
    stored[512] ^= 0x55;
    std::fs::write(&path, stored).unwrap();
    let image = resolve_image(&client, &image_ref(&host, &format!("broken/corrupt@{digest}"))).await.unwrap();
    let err = scan_layers(&client, &image.reference, image.layers(), zfs_payload).await.unwrap_err();
    assert!(matches!(&err, Error::Registry(e) if e.to_string().contains("expected sha256:")), "{err}");

    // The registry going away mid-scan is a classified registry error, never "not found".
    registry.stop();
    let err = scan_layers(&client, &image.reference, image.layers(), zfs_payload).await.unwrap_err();
    let Error::Registry(inner) = &err else { panic!("{err}") };
    assert_eq!(inner.class(), Some(AnswerClass::Unreachable), "{err}");
}
