//! The registry fixture and the synthetic image builder, checked with skopeo as the independent
//! client.

use serde_json::Value;

use crate::support::image::{Compression, Entry, ImageSpec, Layer, Platform, Pusher, digest_of};
use crate::support::registry::Registry;
use crate::support::{init, skopeo};

fn kinoite_like(arch: &str) -> ImageSpec {
    ImageSpec::new(vec![
        Layer::gzip(vec![
            Entry::dir("usr/lib/modules/6.18.12-200.fc43.x86_64"),
            Entry::file("usr/lib/modules/6.18.12-200.fc43.x86_64/vmlinuz", b"kernel".to_vec()),
            Entry::symlink("lib", "usr/lib"),
            Entry::file("etc/arch", arch.as_bytes().to_vec()),
        ]),
        Layer::new(
            Compression::Zstd,
            vec![
                Entry::file("usr/bin/tool", b"x".to_vec()),
                Entry::hardlink("usr/bin/tool-link", "usr/bin/tool"),
                Entry::symlink("usr/bin/abs", "/sysroot/ostree/repo/objects/aa/bb.file"),
            ],
        ),
        Layer::new(Compression::None, vec![Entry::whiteout("usr/bin/tool-link"), Entry::opaque("etc")]),
    ])
    .label("ostree.linux", "6.18.12-200.fc43.x86_64")
    .label("org.opencontainers.image.version", "43.20260227.1")
    .platform(Platform::linux(arch))
}

#[tokio::test]
async fn two_platform_index_reads_back_with_skopeo() {
    init();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let index = pusher
        .push_index("ublue-os/kinoite-main", Some("latest"), &[kinoite_like("amd64"), kinoite_like("arm64")])
        .await;

    let host = registry.host();
    let raw =
        skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{host}/ublue-os/kinoite-main:latest")]);
    assert_eq!(digest_of(raw.as_bytes()), index.digest, "skopeo reads back the exact index bytes");
    let parsed: Value = serde_json::from_str(&raw).unwrap();
    let archs: Vec<&str> = parsed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);

    for (arch, child) in [("amd64", &index.children[0]), ("arm64", &index.children[1])] {
        let inspect = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--override-os=linux",
            &format!("--override-arch={arch}"),
            &format!("docker://{host}/ublue-os/kinoite-main:latest"),
        ]);
        let inspect: Value = serde_json::from_str(&inspect).unwrap();
        // skopeo reports the digest the tag points at (the index) and the chosen platform's layers.
        assert_eq!(inspect["Digest"], index.digest.as_str());
        let layers: Vec<&str> = inspect["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        assert_eq!(layers, child.layer_digests, "{arch} resolves to its own image");
        assert_eq!(inspect["Architecture"], arch);
        assert_eq!(inspect["Labels"]["ostree.linux"], "6.18.12-200.fc43.x86_64");
        let by_digest = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/ublue-os/kinoite-main@{}", child.digest),
        ]);
        assert_eq!(by_digest.as_bytes(), &child.manifest[..]);
    }
}

#[tokio::test]
async fn layers_round_trip_through_skopeo_copy() {
    init();
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let image = pusher.push_image("test/layers", Some("v1"), &kinoite_like("amd64")).await;
    let out = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/test/layers@{}", registry.host(), image.digest),
        &format!("dir:{}", out.path().display()),
    ]);
    // skopeo verifies every blob digest while copying; check the gzip layer's tar content too.
    let blob = std::fs::read(out.path().join(image.layer_digests[0].trim_start_matches("sha256:"))).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    let names: Vec<String> =
        archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert_eq!(
        names,
        [
            "usr/lib/modules/6.18.12-200.fc43.x86_64/",
            "usr/lib/modules/6.18.12-200.fc43.x86_64/vmlinuz",
            "lib",
            "etc/arch"
        ]
    );
    let zstd_blob = std::fs::read(out.path().join(image.layer_digests[1].trim_start_matches("sha256:"))).unwrap();
    let tar = zstd::decode_all(&zstd_blob[..]).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let kinds: Vec<(String, tar::EntryType, Option<String>)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            (e.path().unwrap().display().to_string(), e.header().entry_type(), link)
        })
        .collect();
    assert_eq!(kinds[1], ("usr/bin/tool-link".into(), tar::EntryType::Link, Some("usr/bin/tool".into())));
    assert_eq!(kinds[2].2.as_deref(), Some("/sysroot/ostree/repo/objects/aa/bb.file"));
    let plain = std::fs::read(out.path().join(image.layer_digests[2].trim_start_matches("sha256:"))).unwrap();
    let mut archive = tar::Archive::new(&plain[..]);
    let names: Vec<String> =
        archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert_eq!(names, ["usr/bin/.wh.tool-link", "etc/.wh..wh..opq"]);
}

#[tokio::test]
async fn auth_registry_rejects_anonymous_and_accepts_credentials() {
    init();
    let registry = Registry::start_with_auth("builder", "s3cret").await;
    let anonymous = reqwest::get(format!("{}/v2/", registry.base_url())).await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let pusher = Pusher::new(&registry);
    let image = pusher.push_image("private/akmods", Some("main-43"), &kinoite_like("amd64")).await;
    let reference = format!("docker://{}/private/akmods:main-43", registry.host());
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", "--creds", "builder:s3cret", &reference]);
    assert_eq!(digest_of(raw.as_bytes()), image.digest);
    let denied = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", "builder:wrong", &reference])
        .output()
        .unwrap();
    assert!(!denied.status.success());
}

#[tokio::test]
async fn registry_restarts_with_its_storage() {
    init();
    let mut registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let image = pusher.push_image("test/restart", Some("v1"), &kinoite_like("amd64")).await;
    registry.stop();
    assert!(
        reqwest::get(format!("{}/v2/", registry.base_url())).await.is_err(),
        "stopped registry refuses connections"
    );
    registry.restart().await;
    let raw =
        skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/test/restart:v1", registry.host())]);
    assert_eq!(digest_of(raw.as_bytes()), image.digest);
}
