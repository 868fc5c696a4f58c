//! Synthetic OCI images made in memory and pushed to a test registry over plain HTTP: layers from
//! file lists (files, directories, hard links, symlinks, whiteouts, opaque markers), plain tar,
//! gzip or zstd, config labels, several platforms. Independent of the operator's registry code,
//! so tests do not check the operator with itself.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One filesystem entry of a layer. Paths are relative (`usr/lib/modules/...`).
#[derive(Debug, Clone)]
pub enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: String,
    },
    HardLink {
        path: String,
        target: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// `<dir>/.wh.<name>`: removes `path` (and everything below it) from lower layers.
    Whiteout {
        path: String,
    },
    /// `<dir>/.wh..wh..opq`: hides the lower layers' contents of `dir`.
    Opaque {
        dir: String,
    },
}

impl Entry {
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> Entry {
        Entry::File { path: path.into(), data: data.into(), mode: 0o644 }
    }
    pub fn executable(path: &str, data: impl Into<Vec<u8>>) -> Entry {
        Entry::File { path: path.into(), data: data.into(), mode: 0o755 }
    }
    pub fn dir(path: &str) -> Entry {
        Entry::Dir { path: path.into() }
    }
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::HardLink { path: path.into(), target: target.into() }
    }
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink { path: path.into(), target: target.into() }
    }
    pub fn whiteout(path: &str) -> Entry {
        Entry::Whiteout { path: path.into() }
    }
    pub fn opaque(dir: &str) -> Entry {
        Entry::Opaque { dir: dir.into() }
    }
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A layer: entries in tar order plus its compression.
#[derive(Debug, Clone)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub compression: Compression,
}

impl Layer {
    pub fn new(compression: Compression, entries: Vec<Entry>) -> Layer {
        Layer { entries, compression }
    }
    pub fn gzip(entries: Vec<Entry>) -> Layer {
        Layer::new(Compression::Gzip, entries)
    }

    /// The uncompressed tar stream.
    pub fn tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            append(&mut builder, entry);
        }
        builder.into_inner().expect("finish tar")
    }

    /// (compressed blob, uncompressed tar digest = diff id).
    pub fn blob(&self) -> (Vec<u8>, String) {
        let tar = self.tar();
        let diff_id = digest_of(&tar);
        let blob = match self.compression {
            Compression::None => tar,
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&tar).unwrap();
                enc.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(&tar[..], 1).unwrap(),
        };
        (blob, diff_id)
    }

    pub fn media_type(&self, format: Format) -> &'static str {
        match (format, self.compression) {
            (Format::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (Format::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (Format::Oci, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (Format::Docker, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (Format::Docker, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (Format::Docker, Compression::Zstd) => "application/vnd.docker.image.rootfs.diff.tar.zstd",
        }
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_700_000_000);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", path),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

fn append(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry) {
    match entry {
        Entry::File { path, data, mode } => {
            let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
            builder.append_data(&mut h, path, &data[..]).expect("tar file");
        }
        Entry::Dir { path } => {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            builder.append_data(&mut h, format!("{}/", path.trim_end_matches('/')), &[][..]).expect("tar dir");
        }
        Entry::HardLink { path, target } => {
            let mut h = header(tar::EntryType::Link, 0o644, 0);
            builder.append_link(&mut h, path, target).expect("tar hard link");
        }
        Entry::Symlink { path, target } => {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            builder.append_link(&mut h, path, target).expect("tar symlink");
        }
        Entry::Whiteout { path } => {
            let (dir, name) = split_parent(path);
            let mut h = header(tar::EntryType::Regular, 0o644, 0);
            builder.append_data(&mut h, join(dir, &format!(".wh.{name}")), &[][..]).expect("tar whiteout");
        }
        Entry::Opaque { dir } => {
            let mut h = header(tar::EntryType::Regular, 0o644, 0);
            builder.append_data(&mut h, join(dir, ".wh..wh..opq"), &[][..]).expect("tar opaque");
        }
    }
}

/// Manifest flavor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

/// A platform of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn linux(architecture: &str) -> Platform {
        Platform { os: "linux".into(), architecture: architecture.into(), variant: None }
    }
}

/// An image to push.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    pub labels: BTreeMap<String, String>,
    pub platform: Platform,
    pub format: Format,
}

impl ImageSpec {
    pub fn new(layers: Vec<Layer>) -> ImageSpec {
        ImageSpec { layers, labels: BTreeMap::new(), platform: Platform::linux("amd64"), format: Format::Oci }
    }
    pub fn label(mut self, key: &str, value: &str) -> ImageSpec {
        self.labels.insert(key.into(), value.into());
        self
    }
    pub fn platform(mut self, platform: Platform) -> ImageSpec {
        self.platform = platform;
        self
    }
    pub fn format(mut self, format: Format) -> ImageSpec {
        self.format = format;
        self
    }
}

/// What was pushed for one image.
#[derive(Debug, Clone)]
pub struct PushedImage {
    pub digest: String,
    pub media_type: &'static str,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub layer_sizes: Vec<u64>,
    pub platform: Platform,
}

impl PushedImage {
    pub fn total_layer_bytes(&self) -> u64 {
        self.layer_sizes.iter().sum()
    }
}

/// What was pushed for an index.
#[derive(Debug, Clone)]
pub struct PushedIndex {
    pub digest: String,
    pub media_type: &'static str,
    pub manifest: Vec<u8>,
    pub children: Vec<PushedImage>,
}

/// A minimal registry client for pushing test content (monolithic blob uploads, manifest PUT).
pub struct Pusher {
    base: String,
    client: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Pusher {
    pub fn new(registry: &super::registry::Registry) -> Pusher {
        Pusher {
            base: registry.base_url(),
            client: reqwest::Client::new(),
            auth: registry.credentials().map(|(u, p)| (u.to_string(), p.to_string())),
        }
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, url);
        match &self.auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    /// Uploads a blob unless the repository already has it; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: Vec<u8>) -> String {
        let digest = digest_of(&bytes);
        let head = self
            .req(reqwest::Method::HEAD, &format!("{}/v2/{repo}/blobs/{digest}", self.base))
            .send()
            .await
            .expect("HEAD blob");
        if head.status().is_success() {
            return digest;
        }
        let start = self
            .req(reqwest::Method::POST, &format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await
            .expect("start upload");
        assert_eq!(start.status().as_u16(), 202, "start upload for {repo}: {:?}", start.text().await);
        let location = start.headers()["location"].to_str().unwrap().to_string();
        let url = if location.starts_with("http") { location } else { format!("{}{location}", self.base) };
        let sep = if url.contains('?') { '&' } else { '?' };
        let put = self
            .req(reqwest::Method::PUT, &format!("{url}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .expect("upload blob");
        assert_eq!(put.status().as_u16(), 201, "upload blob to {repo}: {:?}", put.text().await);
        digest
    }

    /// PUTs a manifest under a tag or its digest; returns the digest.
    pub async fn put_manifest(&self, repo: &str, reference: Option<&str>, media_type: &str, bytes: Vec<u8>) -> String {
        let digest = digest_of(&bytes);
        let reference = reference.unwrap_or(&digest).to_string();
        let put = self
            .req(reqwest::Method::PUT, &format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(bytes)
            .send()
            .await
            .expect("put manifest");
        assert_eq!(put.status().as_u16(), 201, "put manifest {repo}:{reference}: {:?}", put.text().await);
        digest
    }

    /// Deletes a manifest by digest (to make an image absent again).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) {
        let resp = self
            .req(reqwest::Method::DELETE, &format!("{}/v2/{repo}/manifests/{digest}", self.base))
            .send()
            .await
            .expect("delete manifest");
        assert_eq!(resp.status().as_u16(), 202, "delete manifest {repo}@{digest}");
    }

    /// Pushes an image (blobs, then manifest by digest, then under `tag` if given).
    pub async fn push_image(&self, repo: &str, tag: Option<&str>, spec: &ImageSpec) -> PushedImage {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        let mut layer_sizes = Vec::new();
        for layer in &spec.layers {
            let (blob, diff_id) = layer.blob();
            let size = blob.len() as u64;
            let digest = self.push_blob(repo, blob).await;
            layer_descs.push(json!({"mediaType": layer.media_type(spec.format), "digest": digest, "size": size}));
            diff_ids.push(diff_id);
            layer_digests.push(digest);
            layer_sizes.push(size);
        }
        let mut platform = json!({"architecture": spec.platform.architecture, "os": spec.platform.os});
        if let Some(variant) = &spec.platform.variant {
            platform["variant"] = json!(variant);
        }
        let mut config = platform.clone();
        config["config"] = json!({"Labels": spec.labels});
        config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        config["created"] = json!("2026-01-01T00:00:00Z");
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_size = config_bytes.len();
        let config_digest = self.push_blob(repo, config_bytes).await;
        let (media_type, config_type) = match spec.format {
            Format::Oci => (OCI_MANIFEST, OCI_CONFIG),
            Format::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config_size},
            "layers": layer_descs,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let digest = self.put_manifest(repo, None, media_type, manifest.clone()).await;
        if let Some(tag) = tag {
            self.put_manifest(repo, Some(tag), media_type, manifest.clone()).await;
        }
        PushedImage {
            digest,
            media_type,
            manifest,
            config_digest,
            layer_digests,
            layer_sizes,
            platform: spec.platform.clone(),
        }
    }

    /// Pushes several platform images and an index over them (under `tag` if given).
    pub async fn push_index(&self, repo: &str, tag: Option<&str>, images: &[ImageSpec]) -> PushedIndex {
        let mut children = Vec::new();
        for spec in images {
            children.push(self.push_image(repo, None, spec).await);
        }
        let format = images.first().map(|s| s.format).unwrap_or(Format::Oci);
        let media_type = match format {
            Format::Oci => OCI_INDEX,
            Format::Docker => DOCKER_LIST,
        };
        let manifests: Vec<Value> = children
            .iter()
            .map(|c| {
                let mut platform = json!({"architecture": c.platform.architecture, "os": c.platform.os});
                if let Some(variant) = &c.platform.variant {
                    platform["variant"] = json!(variant);
                }
                json!({"mediaType": c.media_type, "digest": c.digest, "size": c.manifest.len(), "platform": platform})
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
        let manifest = serde_json::to_vec(&index).unwrap();
        let digest = self.put_manifest(repo, None, media_type, manifest.clone()).await;
        if let Some(tag) = tag {
            self.put_manifest(repo, Some(tag), media_type, manifest.clone()).await;
        }
        PushedIndex { digest, media_type, manifest, children }
    }
}

/// Deterministic incompressible bytes (xorshift), for layers whose size must survive compression.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
