//! Image signatures in the sigstore attachment format that containers/image (rpm-ostree, bootc,
//! podman, skopeo) verifies and cosign writes (`/work/shared/reference/signatures.md`; why our
//! own module and not the `sigstore` crate: docs/decisions.md "Signing"):
//!
//! - [`key`]: cosign's encrypted private key and PKIX public key, ECDSA P-256;
//! - [`payload`]: the simple-signing payload, written and parsed as containers/image does;
//! - this module: the `sha256-<hex>.sig` tag in the image's own repository, one layer per
//!   signature. [`sign`] appends to what is there (other signers' layers are kept), never adds
//!   its own twice, and re-reads and verifies before it reports success; [`verify`] is the host's
//!   check (a signature by the key, over a payload naming this digest and repository).

pub mod key;
pub mod payload;

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

pub use key::{PrivateKey, PublicKey};

use crate::registry::{self, ImageRef, RegistryClient, media_types};

/// Media type of a signature layer.
pub const SIGNATURE_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding a layer's base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Largest payload read back (cosign payloads are a few hundred bytes).
const MAX_PAYLOAD: u64 = 64 * 1024;

/// Errors of signing and verifying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file is unusable (format, algorithm, parameters). Never contains key material.
    #[error("signing key: {0}")]
    Key(String),
    #[error("signing key: wrong password (the key's secretbox did not open)")]
    WrongPassword,
    #[error("signature payload: {0}")]
    Payload(String),
    /// The `.sig` tag holds something containers/image would reject.
    #[error("signature attachment {reference}: {detail}")]
    Attachment { reference: String, detail: String },
    /// Written, but reading it back did not verify (another writer, or a registry that changed it).
    #[error("signature {reference} was written but does not verify with the key when read back")]
    NotVerified { reference: String },
    #[error("{what}: {source}")]
    Registry {
        what: String,
        #[source]
        source: Box<registry::Error>,
    },
}

impl Error {
    fn registry(what: impl Into<String>, source: registry::Error) -> Error {
        Error::Registry { what: what.into(), source: Box::new(source) }
    }

    /// Rate limited or unreachable: worth trying again.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Registry { source, .. } if source.is_transient())
    }

    /// The registry error underneath, if any.
    pub fn registry_error(&self) -> Option<&registry::Error> {
        match self {
            Error::Registry { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `sha256-<hex>.sig`, the tag of `digest`'s signatures.
pub fn signature_tag(digest: &str) -> Result<String, Error> {
    registry::validate_digest(digest).map_err(|e| Error::Payload(e.to_string()))?;
    Ok(format!("{}.sig", digest.replacen(':', "-", 1)))
}

/// One signature layer as read back.
#[derive(Debug, Clone)]
pub struct Layer {
    pub descriptor: Value,
    pub payload: Bytes,
    pub signature: Vec<u8>,
}

/// What the `.sig` tag of a digest holds.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// `repository:sha256-<hex>.sig`.
    pub reference: ImageRef,
    /// The `.sig` manifest's digest and JSON, when the tag exists.
    pub manifest: Option<(String, Value)>,
    /// Its config JSON (kept when appending).
    pub config: Option<Value>,
    /// The simple-signing layers, in manifest order.
    pub layers: Vec<Layer>,
}

impl Attachment {
    /// The index of the first layer that `public` verifies as a signature of `repository@digest`.
    pub fn verified_by(&self, public: &PublicKey, repository: &str, digest: &str) -> Option<usize> {
        self.layers.iter().position(|layer| {
            public.verifies(&layer.payload, &layer.signature)
                && payload::parse(&layer.payload).is_ok_and(|c| c.digest == digest && c.names_repository(repository))
        })
    }
}

/// What [`sign`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signed {
    /// `repository:sha256-<hex>.sig`.
    pub reference: String,
    /// Digest of the `.sig` manifest after signing.
    pub manifest_digest: String,
    /// Signature layers in the attachment (ours and others').
    pub signatures: usize,
    /// Whether this call wrote (false: our signature was already there).
    pub wrote: bool,
    /// The signing key's fingerprint.
    pub key: String,
}

/// Reads the `.sig` attachment of `repository@digest` (an absent tag is an empty attachment).
pub async fn read<R: RegistryClient + ?Sized>(
    registry: &R,
    repository: &ImageRef,
    digest: &str,
) -> Result<Attachment, Error> {
    let reference = repository.with_tag(&signature_tag(digest)?).map_err(|e| Error::Payload(e.to_string()))?;
    let bad = |detail: String| Error::Attachment { reference: reference.to_string(), detail };
    let raw = match registry.manifest(&reference).await {
        Ok(raw) => raw,
        Err(e) if e.is_absent() => return Ok(Attachment { reference, manifest: None, config: None, layers: vec![] }),
        Err(e) => return Err(Error::registry(format!("read {reference}"), e)),
    };
    if raw.media_type != media_types::OCI_MANIFEST {
        return Err(bad(format!(
            "media type {} (containers/image reads only {})",
            raw.media_type,
            media_types::OCI_MANIFEST
        )));
    }
    let manifest: Value = serde_json::from_slice(&raw.bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let config = match manifest.pointer("/config/digest").and_then(Value::as_str) {
        Some(config_digest) => {
            let bytes = registry
                .read_blob(&reference, config_digest, registry::MAX_CONFIG_BYTES)
                .await
                .map_err(|e| Error::registry(format!("read the config of {reference}"), e))?;
            Some(serde_json::from_slice(&bytes).map_err(|e| bad(format!("config is not JSON: {e}")))?)
        }
        None => None,
    };
    let mut layers = Vec::new();
    for descriptor in manifest.get("layers").and_then(Value::as_array).into_iter().flatten() {
        if descriptor.get("mediaType").and_then(Value::as_str) != Some(SIGNATURE_LAYER) {
            continue;
        }
        let Some(layer_digest) = descriptor.get("digest").and_then(Value::as_str) else {
            return Err(bad("a layer has no digest".into()));
        };
        let signature = descriptor
            .pointer(&format!("/annotations/{}", SIGNATURE_ANNOTATION.replace('/', "~1")))
            .and_then(Value::as_str)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default();
        let payload = registry
            .read_blob(&reference, layer_digest, MAX_PAYLOAD)
            .await
            .map_err(|e| Error::registry(format!("read signature payload {layer_digest} of {reference}"), e))?;
        layers.push(Layer { descriptor: descriptor.clone(), payload, signature });
    }
    Ok(Attachment { reference, manifest: Some((raw.digest, manifest)), config, layers })
}

/// Whether `public` verifies a signature of `repository@digest` in its attachment.
pub async fn verify<R: RegistryClient + ?Sized>(
    registry: &R,
    repository: &ImageRef,
    digest: &str,
    public: &PublicKey,
) -> Result<Option<Signed>, Error> {
    let attachment = read(registry, repository, digest).await?;
    Ok(attachment.verified_by(public, &repository.name(), digest).map(|_| signed(&attachment, public, false)))
}

fn signed(attachment: &Attachment, public: &PublicKey, wrote: bool) -> Signed {
    Signed {
        reference: attachment.reference.to_string(),
        manifest_digest: attachment.manifest.as_ref().map(|(d, _)| d.clone()).unwrap_or_default(),
        signatures: attachment.layers.len(),
        wrote,
        key: public.fingerprint(),
    }
}

/// Signs `repository@digest` with `key` in its `.sig` attachment: nothing when a signature by
/// this key is already there; otherwise our layer is appended to the layers present (the config's
/// `diff_ids` grow with it, as containers/image does) and the manifest is pushed under the tag.
/// Then re-read and verified: success means a host with the public key accepts the digest.
pub async fn sign<R: RegistryClient + ?Sized>(
    registry: &R,
    repository: &ImageRef,
    digest: &str,
    key: &PrivateKey,
) -> Result<Signed, Error> {
    let public = key.public();
    let name = repository.name();
    let attachment = read(registry, repository, digest).await?;
    if attachment.verified_by(&public, &name, digest).is_some() {
        return Ok(signed(&attachment, &public, false));
    }
    let reference = attachment.reference.clone();
    let payload = Bytes::from(payload::payload(&name, digest));
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
    let payload_digest = registry
        .push_blob(&reference, payload.clone())
        .await
        .map_err(|e| Error::registry(format!("push the signature payload to {name}"), e))?;
    let layer = json!({
        "mediaType": SIGNATURE_LAYER,
        "size": payload.len(),
        "digest": payload_digest,
        "annotations": {SIGNATURE_ANNOTATION: signature},
    });

    let mut config = attachment.config.clone().unwrap_or_else(|| json!({"rootfs": {"type": "layers"}}));
    let diff_ids = config
        .as_object_mut()
        .map(|c| c.entry("rootfs").or_insert_with(|| json!({"type": "layers"})))
        .and_then(Value::as_object_mut)
        .map(|r| r.entry("diff_ids").or_insert_with(|| json!([])));
    match diff_ids.and_then(Value::as_array_mut) {
        Some(ids) => ids.push(Value::String(payload_digest.clone())),
        None => {
            return Err(Error::Attachment {
                reference: reference.to_string(),
                detail: "its config has no usable rootfs.diff_ids".into(),
            });
        }
    }
    let config_bytes = Bytes::from(serde_json::to_vec(&config).unwrap_or_default());
    let config_digest = registry
        .push_blob(&reference, config_bytes.clone())
        .await
        .map_err(|e| Error::registry(format!("push the signature config to {name}"), e))?;

    let mut manifest = match &attachment.manifest {
        Some((_, manifest)) => manifest.clone(),
        None => json!({"schemaVersion": 2, "mediaType": media_types::OCI_MANIFEST, "layers": []}),
    };
    manifest["config"] =
        json!({"mediaType": media_types::OCI_CONFIG, "size": config_bytes.len(), "digest": config_digest});
    match manifest.get_mut("layers").and_then(Value::as_array_mut) {
        Some(layers) => layers.push(layer),
        None => manifest["layers"] = json!([layer]),
    }
    let bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default());
    registry
        .put_manifest(&reference, media_types::OCI_MANIFEST, bytes)
        .await
        .map_err(|e| Error::registry(format!("push {reference}"), e))?;

    let reread = read(registry, repository, digest).await?;
    if reread.verified_by(&public, &name, digest).is_none() {
        return Err(Error::NotVerified { reference: reference.to_string() });
    }
    tracing::info!(signature = %reference, key = %public.fingerprint(), layers = reread.layers.len(), "signed and verified");
    Ok(signed(&reread, &public, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeRegistry;

    const REPO: &str = "registry.test/o/kinoite-zfs";

    fn repo() -> ImageRef {
        ImageRef::parse(REPO).unwrap()
    }

    #[tokio::test]
    async fn signs_once_verifies_and_keeps_other_signatures() {
        let registry = FakeRegistry::new();
        let digest = registry.add_image(REPO, Some("x"), &[b"layer"]);
        let ours = PrivateKey::for_tests(1);
        let theirs = PrivateKey::for_tests(2);

        assert!(verify(&registry, &repo(), &digest, &ours.public()).await.unwrap().is_none(), "unsigned");
        let first = sign(&registry, &repo(), &digest, &theirs).await.unwrap();
        assert_eq!((first.wrote, first.signatures), (true, 1));
        assert_eq!(first.reference, format!("{REPO}:{}.sig", digest.replace(':', "-")));

        let writes = registry.writes().len();
        let second = sign(&registry, &repo(), &digest, &ours).await.unwrap();
        assert_eq!((second.wrote, second.signatures), (true, 2), "appended, the other signer's layer kept");
        assert!(registry.writes().len() > writes);
        // Both verify; a third key verifies nothing.
        assert!(verify(&registry, &repo(), &digest, &ours.public()).await.unwrap().is_some());
        assert!(verify(&registry, &repo(), &digest, &theirs.public()).await.unwrap().is_some());
        assert!(verify(&registry, &repo(), &digest, &PrivateKey::for_tests(9).public()).await.unwrap().is_none());

        // Signing again writes nothing and does not duplicate the layer.
        let writes = registry.writes().len();
        let again = sign(&registry, &repo(), &digest, &ours).await.unwrap();
        assert_eq!((again.wrote, again.signatures), (false, 2));
        assert_eq!(registry.writes().len(), writes);

        // The config lists one diff_id per layer, as containers/image writes it.
        let attachment = read(&registry, &repo(), &digest).await.unwrap();
        let ids = attachment.config.unwrap()["rootfs"]["diff_ids"].as_array().unwrap().len();
        assert_eq!(ids, 2);
    }

    #[tokio::test]
    async fn a_signature_for_another_digest_or_repository_does_not_count() {
        let registry = FakeRegistry::new();
        let digest = registry.add_image(REPO, Some("x"), &[b"a"]);
        let other = registry.add_image(REPO, Some("y"), &[b"b"]);
        let key = PrivateKey::for_tests(1);
        sign(&registry, &repo(), &other, &key).await.unwrap();
        assert!(verify(&registry, &repo(), &digest, &key.public()).await.unwrap().is_none());
        // A signature naming the candidate repository, copied under the stable `.sig` tag, is not
        // a signature of the stable repository (cosign signatures are per repository, R12.3).
        let candidate = ImageRef::parse("registry.test/o/kinoite-zfs-candidate").unwrap();
        registry.add_image("registry.test/o/kinoite-zfs-candidate", None, &[b"a"]);
        sign(&registry, &candidate, &digest, &key).await.unwrap();
        let attachment = read(&registry, &candidate, &digest).await.unwrap();
        assert!(attachment.verified_by(&key.public(), REPO, &digest).is_none());
        assert!(attachment.verified_by(&key.public(), &candidate.name(), &digest).is_some());
    }

    #[tokio::test]
    async fn an_attachment_containers_image_would_reject_is_an_error() {
        let registry = FakeRegistry::new();
        let digest = registry.add_image(REPO, Some("x"), &[b"a"]);
        let tag = signature_tag(&digest).unwrap();
        registry.add_manifest(REPO, Some(&tag), media_types::DOCKER_MANIFEST, b"{}");
        let err = sign(&registry, &repo(), &digest, &PrivateKey::for_tests(1)).await.unwrap_err();
        assert!(matches!(err, Error::Attachment { .. }), "{err}");
        assert!(signature_tag("sha256:1").is_err());
    }
}
