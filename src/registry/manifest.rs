//! Manifests, indexes and configs: media types, parsing (oci-client's manifest types), the
//! `linux/amd64` selection from an index, and [`resolve_image`], which turns a reference into the
//! platform image with both digests recorded.

use std::collections::BTreeMap;

use bytes::Bytes;
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest};

use super::{Error, ImageRef, RegistryClient};

/// Media types the registry layer understands.
pub mod media_types {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

    /// Everything we accept from `GET/HEAD /manifests/...` (the `Accept` header).
    pub const MANIFESTS: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
}

/// Largest manifest we read (containerd's limit): manifests are small, so more is an error rather
/// than a reason to buffer without bound.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Largest config blob we read.
pub const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;

/// Whether a manifest is a single image or an index over platform images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// A manifest exactly as the registry serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    /// `sha256:` of `bytes` (checked against the requested digest, if any).
    pub digest: String,
    /// The media type (Content-Type, else the body's `mediaType`, else inferred from its shape).
    pub media_type: String,
    pub bytes: Bytes,
}

impl RawManifest {
    pub fn kind(&self) -> Result<ManifestKind, Error> {
        match self.media_type.as_str() {
            media_types::OCI_MANIFEST | media_types::DOCKER_MANIFEST => Ok(ManifestKind::Image),
            media_types::OCI_INDEX | media_types::DOCKER_LIST => Ok(ManifestKind::Index),
            other => Err(Error::Invalid {
                what: format!("manifest {}", self.digest),
                detail: format!("unsupported manifest media type {other:?}"),
            }),
        }
    }

    /// The image manifest (config and layer descriptors).
    pub fn image(&self) -> Result<OciImageManifest, Error> {
        serde_json::from_slice(&self.bytes).map_err(|e| Error::Invalid {
            what: format!("manifest {}", self.digest),
            detail: format!("not a valid image manifest: {e}"),
        })
    }

    /// The index (platform entries).
    pub fn index(&self) -> Result<OciImageIndex, Error> {
        serde_json::from_slice(&self.bytes).map_err(|e| Error::Invalid {
            what: format!("manifest {}", self.digest),
            detail: format!("not a valid image index: {e}"),
        })
    }
}

/// The media type of a manifest body when the registry's Content-Type is missing or generic.
pub fn infer_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    let declared = content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    if let Some(ct) = &declared
        && media_types::MANIFESTS.contains(&ct.as_str())
    {
        return ct.clone();
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Shape>(body) {
        Ok(Shape { media_type: Some(m), .. }) => m,
        Ok(Shape { manifests: Some(_), .. }) => media_types::OCI_INDEX.into(),
        Ok(Shape { layers: Some(_), .. }) => media_types::OCI_MANIFEST.into(),
        _ => declared.unwrap_or_default(),
    }
}

/// The `linux/amd64` entry of an index. Entries without a variant are preferred over variant
/// entries (`amd64` variants such as `v3` are optional micro-architecture builds).
pub fn select_linux_amd64(index: &OciImageIndex) -> Option<&ImageIndexEntry> {
    let candidates: Vec<&ImageIndexEntry> = index
        .manifests
        .iter()
        .filter(|m| {
            m.platform.as_ref().is_some_and(|p| p.os.to_string() == "linux" && p.architecture.to_string() == "amd64")
        })
        .collect();
    candidates
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| p.variant.as_deref().unwrap_or_default().is_empty()))
        .or(candidates.first())
        .copied()
}

fn platforms(index: &OciImageIndex) -> String {
    let list: Vec<String> = index
        .manifests
        .iter()
        .map(|m| match &m.platform {
            Some(p) => match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            },
            None => "unknown".into(),
        })
        .collect();
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

/// A reference resolved to one `linux/amd64` image.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as asked for.
    pub reference: ImageRef,
    /// Digest of the index the reference pointed at, when it pointed at an index.
    pub index_digest: Option<String>,
    /// Digest of the platform image manifest.
    pub digest: String,
    /// Media type of the platform image manifest.
    pub media_type: String,
    /// The platform image manifest (config and layers, in order).
    pub manifest: OciImageManifest,
}

impl ResolvedImage {
    /// The digest the reference itself resolves to (the index digest for an index), i.e. what a
    /// `Name@Digest` pin of the reference uses.
    pub fn top_digest(&self) -> &str {
        self.index_digest.as_deref().unwrap_or(&self.digest)
    }

    /// `name@<top digest>`.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.reference.name(), self.top_digest())
    }

    /// `name@<platform image digest>`.
    pub fn platform_pinned(&self) -> String {
        format!("{}@{}", self.reference.name(), self.digest)
    }

    /// The layer descriptors, bottom first.
    pub fn layers(&self) -> &[OciDescriptor] {
        &self.manifest.layers
    }
}

/// Fetches the manifest of `reference` and, for an index, its `linux/amd64` image.
pub async fn resolve_image<R: RegistryClient + ?Sized>(
    registry: &R,
    reference: &ImageRef,
) -> Result<ResolvedImage, Error> {
    let top = registry.manifest(reference).await?;
    resolve_fetched(registry, reference, top).await
}

/// [`resolve_image`] for a top-level manifest the caller already fetched (e.g. to tell "absent"
/// of the reference itself apart from a broken index whose platform image is missing).
pub async fn resolve_fetched<R: RegistryClient + ?Sized>(
    registry: &R,
    reference: &ImageRef,
    top: RawManifest,
) -> Result<ResolvedImage, Error> {
    match top.kind()? {
        ManifestKind::Image => Ok(ResolvedImage {
            reference: reference.clone(),
            index_digest: None,
            manifest: top.image()?,
            digest: top.digest,
            media_type: top.media_type,
        }),
        ManifestKind::Index => {
            let index = top.index()?;
            let entry = select_linux_amd64(&index).ok_or_else(|| Error::Invalid {
                what: format!("index {reference}"),
                detail: format!("has no linux/amd64 image (platforms: {})", platforms(&index)),
            })?;
            let child = registry.manifest(&reference.with_digest(&entry.digest)?).await?;
            if child.kind()? != ManifestKind::Image {
                return Err(Error::Invalid {
                    what: format!("index {reference}"),
                    detail: format!("its linux/amd64 entry {} is not an image manifest", entry.digest),
                });
            }
            Ok(ResolvedImage {
                reference: reference.clone(),
                index_digest: Some(top.digest),
                manifest: child.image()?,
                digest: child.digest,
                media_type: child.media_type,
            })
        }
    }
}

/// The parts of an image config the pipeline reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub labels: BTreeMap<String, String>,
    pub os: Option<String>,
    pub architecture: Option<String>,
}

impl ImageConfig {
    /// Parses config JSON (OCI or Docker), reading only what we need so unusual configs still
    /// parse.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, String> {
        #[derive(serde::Deserialize)]
        struct Raw {
            os: Option<String>,
            architecture: Option<String>,
            config: Option<Inner>,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            #[serde(rename = "Labels")]
            labels: Option<BTreeMap<String, String>>,
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(ImageConfig {
            labels: raw.config.and_then(|c| c.labels).unwrap_or_default(),
            os: raw.os,
            architecture: raw.architecture,
        })
    }
}

/// Reads and parses the config blob of a resolved image.
pub async fn image_config<R: RegistryClient + ?Sized>(
    registry: &R,
    image: &ResolvedImage,
) -> Result<ImageConfig, Error> {
    let bytes = registry.read_blob(&image.reference, &image.manifest.config.digest, MAX_CONFIG_BYTES).await?;
    ImageConfig::parse(&bytes).map_err(|detail| Error::Invalid {
        what: format!("config {} of {}", image.manifest.config.digest, image.reference),
        detail: format!("not a valid image config: {detail}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(json: serde_json::Value) -> OciImageIndex {
        serde_json::from_value(json).unwrap()
    }

    fn entry(digest: char, os: &str, arch: &str, variant: Option<&str>) -> serde_json::Value {
        let mut platform = serde_json::json!({"os": os, "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        serde_json::json!({"mediaType": media_types::OCI_MANIFEST, "digest": format!("sha256:{}", digest.to_string().repeat(64)), "size": 1, "platform": platform})
    }

    #[test]
    fn selects_linux_amd64_preferring_no_variant() {
        let idx = index(serde_json::json!({"schemaVersion": 2, "manifests": [
            entry('a', "linux", "arm64", Some("v8")),
            entry('b', "linux", "amd64", Some("v3")),
            entry('c', "linux", "amd64", None),
            entry('d', "windows", "amd64", None),
        ]}));
        assert!(select_linux_amd64(&idx).unwrap().digest.starts_with("sha256:ccc"));
        let only_variant = index(serde_json::json!({"schemaVersion": 2, "manifests": [
            entry('a', "linux", "arm64", None), entry('b', "linux", "amd64", Some("v2"))]}));
        assert!(select_linux_amd64(&only_variant).unwrap().digest.starts_with("sha256:bbb"));
        let none = index(serde_json::json!({"schemaVersion": 2, "manifests": [entry('a', "linux", "arm64", None)]}));
        assert!(select_linux_amd64(&none).is_none());
        assert_eq!(platforms(&none), "linux/arm64");
    }

    #[test]
    fn media_type_from_header_or_body() {
        assert_eq!(
            infer_media_type(Some("application/vnd.oci.image.index.v1+json; charset=utf-8"), b"{}"),
            media_types::OCI_INDEX
        );
        let docker =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","layers":[]}"#;
        assert_eq!(infer_media_type(Some("application/json"), docker), media_types::DOCKER_MANIFEST);
        assert_eq!(infer_media_type(None, br#"{"schemaVersion":2,"manifests":[]}"#), media_types::OCI_INDEX);
        assert_eq!(
            infer_media_type(None, br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            media_types::OCI_MANIFEST
        );
        assert_eq!(infer_media_type(Some("text/plain"), b"nope"), "text/plain");
        let raw = RawManifest { digest: "sha256:x".into(), media_type: "text/plain".into(), bytes: Bytes::new() };
        assert!(raw.kind().unwrap_err().to_string().contains("unsupported manifest media type"));
    }

    #[test]
    fn config_labels() {
        let cfg = ImageConfig::parse(
            br#"{"architecture":"amd64","os":"linux","config":{"Labels":{"ostree.linux":"6.18"}},"rootfs":{}}"#,
        )
        .unwrap();
        assert_eq!(cfg.labels["ostree.linux"], "6.18");
        assert_eq!(cfg.os.as_deref(), Some("linux"));
        assert_eq!(ImageConfig::parse(b"{}").unwrap(), ImageConfig::default());
        assert_eq!(ImageConfig::parse(br#"{"config":{"Labels":null}}"#).unwrap().labels.len(), 0);
        assert!(ImageConfig::parse(b"[").is_err());
    }
}
