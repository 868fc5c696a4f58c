//! Durable provenance (R13): at the end of a promotion the run's `build-provenance.json` gets the
//! stable section of §2.4, and the same document is pushed next to the stable digest as an OCI
//! artifact (`subject` = the stable digest) signed like the image, so the audit trail survives
//! the cluster. Found again through the OCI 1.1 referrers API, or, on registries without it
//! (Debian's docker-registry), through the referrers tag schema (`sha256-<hex>` index tag).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::records::RefBundle;
use crate::registry::{self, ImageRef, RegistryClient, media_types};
use crate::signing::{self, PrivateKey, PublicKey};

/// `artifactType` of the provenance artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.kinoite-zfs.provenance.v1+json";
/// Media type of its one layer (the document).
pub const DOCUMENT_MEDIA_TYPE: &str = "application/json";
/// The OCI empty config.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MAX_DOCUMENT: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("build-provenance.json: {0}")]
    Document(String),
    #[error("{what}: {source}")]
    Registry {
        what: String,
        #[source]
        source: Box<registry::Error>,
    },
    #[error(transparent)]
    Signing(#[from] signing::Error),
    /// Reading back found no (valid) provenance for the digest.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotVerified(String),
}

fn reg(what: impl Into<String>) -> impl FnOnce(registry::Error) -> Error {
    let what = what.into();
    move |source| Error::Registry { what, source: Box::new(source) }
}

/// The stable section of §2.4 after a successful promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableSection {
    pub promotion_result: String,
    pub promoted: bool,
    pub audit_tag: String,
    pub image: RefBundleOwned,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akmods: Option<RefBundleOwned>,
    /// Our addition: the verified signature of the stable digest, `repository:sha256-<hex>.sig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// [`RefBundle`] that can be read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefBundleOwned {
    pub tag: String,
    pub tag_ref: String,
    pub digest: String,
    pub digest_ref: String,
}

impl From<RefBundle> for RefBundleOwned {
    fn from(b: RefBundle) -> Self {
        RefBundleOwned { tag: b.tag, tag_ref: b.tag_ref, digest: b.digest, digest_ref: b.digest_ref }
    }
}

impl StableSection {
    /// `repository` `host/path`, `tag` the first stable tag, `akmods` (`host/path`, tag, digest).
    pub fn promoted(
        repository: &str,
        tag: &str,
        digest: &str,
        audit_tag: &str,
        akmods: Option<(&str, &str, &str)>,
        signature: Option<String>,
    ) -> StableSection {
        StableSection {
            promotion_result: "success".into(),
            promoted: true,
            audit_tag: audit_tag.into(),
            image: RefBundle::new(repository, tag, digest).into(),
            akmods: akmods.map(|(r, t, d)| RefBundle::new(r, t, d).into()),
            signature,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Document<'a> {
    #[serde(borrow)]
    schema_version: &'a RawValue,
    #[serde(borrow)]
    generated_at: &'a RawValue,
    #[serde(borrow)]
    repository: &'a RawValue,
    #[serde(borrow)]
    workflow: &'a RawValue,
    #[serde(borrow)]
    run: &'a RawValue,
    #[serde(borrow)]
    inputs: &'a RawValue,
    #[serde(borrow)]
    candidate: &'a RawValue,
    stable: Value,
}

/// The run's document with `stable` replaced; everything else byte for byte as the build wrote it.
pub fn with_stable(document: &str, stable: &StableSection) -> Result<String, Error> {
    let mut doc: Document = serde_json::from_str(document).map_err(|e| Error::Document(e.to_string()))?;
    doc.stable = serde_json::to_value(stable).map_err(|e| Error::Document(e.to_string()))?;
    let mut text = serde_json::to_string_pretty(&doc).map_err(|e| Error::Document(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// The stable section of a document.
pub fn stable_of(document: &[u8]) -> Result<StableSection, Error> {
    #[derive(Deserialize)]
    struct Only {
        stable: StableSection,
    }
    serde_json::from_slice::<Only>(document)
        .map(|o| o.stable)
        .map_err(|e| Error::Document(format!("no promoted stable section: {e}")))
}

/// What [`push`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pushed {
    /// `repository@sha256:...` of the artifact manifest.
    pub artifact: String,
    /// Whether the registry lists it through the referrers API (else the tag schema index).
    pub referrers_api: bool,
    /// The artifact's signature, when a key was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Pushes `document` as an artifact whose subject is `repository@subject`, makes it findable
/// (referrers API, else the `sha256-<hex>` index), and signs it. Idempotent: the same document
/// is the same artifact digest, listed and signed once.
pub async fn push<R: RegistryClient + ?Sized>(
    registry: &R,
    repository: &ImageRef,
    subject: &str,
    document: &str,
    key: Option<&PrivateKey>,
) -> Result<Pushed, Error> {
    let name = repository.name();
    let by_digest = |d: &str| repository.with_digest(d).map_err(|e| Error::Document(e.to_string()));
    let subject_manifest =
        registry.manifest(&by_digest(subject)?).await.map_err(reg(format!("read the subject {name}@{subject}")))?;
    let empty = Bytes::from_static(b"{}");
    let config_digest =
        registry.push_blob(repository, empty.clone()).await.map_err(reg(format!("push the empty config to {name}")))?;
    let doc = Bytes::from(document.to_string());
    let doc_digest =
        registry.push_blob(repository, doc.clone()).await.map_err(reg(format!("push the provenance to {name}")))?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config_digest, "size": empty.len()},
        "layers": [{
            "mediaType": DOCUMENT_MEDIA_TYPE, "digest": doc_digest, "size": doc.len(),
            "annotations": {"org.opencontainers.image.title": "build-provenance.json"},
        }],
        "subject": {"mediaType": subject_manifest.media_type, "digest": subject, "size": subject_manifest.bytes.len()},
    });
    let bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default());
    let size = bytes.len();
    let artifact_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
    registry
        .put_manifest(&by_digest(&artifact_digest)?, media_types::OCI_MANIFEST, bytes)
        .await
        .map_err(reg(format!("push the provenance artifact to {name}")))?;

    let listed = referrers(registry, repository, subject).await?;
    let referrers_api = listed.0;
    if !listed.1.iter().any(|d| d.get("digest").and_then(Value::as_str) == Some(artifact_digest.as_str())) {
        if referrers_api {
            return Err(Error::NotFound(format!(
                "{name}@{subject}: the registry's referrers API does not list the artifact {artifact_digest} just pushed"
            )));
        }
        // The referrers tag schema: an index under `sha256-<hex>` listing the artifacts.
        let mut entries = listed.1;
        entries.push(json!({"mediaType": media_types::OCI_MANIFEST, "digest": artifact_digest, "size": size, "artifactType": ARTIFACT_TYPE}));
        let index = json!({"schemaVersion": 2, "mediaType": media_types::OCI_INDEX, "manifests": entries});
        let tag = repository.with_tag(&fallback_tag(subject)).map_err(|e| Error::Document(e.to_string()))?;
        registry
            .put_manifest(&tag, media_types::OCI_INDEX, Bytes::from(serde_json::to_vec(&index).unwrap_or_default()))
            .await
            .map_err(reg(format!("push the referrers index {tag}")))?;
    }
    let signature = match key {
        Some(key) => Some(signing::sign(registry, repository, &artifact_digest, key).await?.reference),
        None => None,
    };
    Ok(Pushed { artifact: format!("{name}@{artifact_digest}"), referrers_api, signature })
}

/// Whether the registry has the referrers API, and the descriptors it (or the fallback tag) lists.
async fn referrers<R: RegistryClient + ?Sized>(
    registry: &R,
    repository: &ImageRef,
    subject: &str,
) -> Result<(bool, Vec<Value>), Error> {
    let name = repository.name();
    let (api, index) = match registry
        .referrers(repository, subject)
        .await
        .map_err(reg(format!("list referrers of {name}@{subject}")))?
    {
        Some(bytes) => (true, Some(bytes)),
        None => {
            let tag = repository.with_tag(&fallback_tag(subject)).map_err(|e| Error::Document(e.to_string()))?;
            match registry.manifest(&tag).await {
                Ok(raw) => (false, Some(raw.bytes)),
                Err(e) if e.is_absent() => (false, None),
                Err(e) => return Err(reg(format!("read {tag}"))(e)),
            }
        }
    };
    let entries = match index {
        Some(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok((api, entries))
}

/// What [`read`] found and checked.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub artifact: String,
    pub signature: String,
    pub referrers_api: bool,
    pub document: Value,
}

/// Finds the provenance artifact of `repository@digest`, checks that its signature verifies with
/// `public`, that its subject is the digest and that its stable section names the digest, and
/// returns the document. The newest valid one when there are several (a re-promotion).
pub async fn read<R: RegistryClient + ?Sized>(
    registry: &R,
    repository: &ImageRef,
    digest: &str,
    public: &PublicKey,
) -> Result<Verified, Error> {
    let name = repository.name();
    let (referrers_api, entries) = referrers(registry, repository, digest).await?;
    let candidates: Vec<String> = entries
        .iter()
        .filter(|e| e.get("artifactType").and_then(Value::as_str) == Some(ARTIFACT_TYPE))
        .filter_map(|e| e.get("digest").and_then(Value::as_str).map(str::to_string))
        .collect();
    if candidates.is_empty() {
        return Err(Error::NotFound(format!(
            "{name}@{digest} has no provenance artifact ({})",
            if referrers_api { "referrers API" } else { "referrers tag schema" }
        )));
    }
    let mut problems = Vec::new();
    for artifact in candidates.iter().rev() {
        let reference = repository.with_digest(artifact).map_err(|e| Error::Document(e.to_string()))?;
        let raw = registry.manifest(&reference).await.map_err(reg(format!("read {reference}")))?;
        let manifest: Value = serde_json::from_slice(&raw.bytes).unwrap_or(Value::Null);
        if manifest.pointer("/subject/digest").and_then(Value::as_str) != Some(digest) {
            problems.push(format!("{artifact}: its subject is not {digest}"));
            continue;
        }
        let Some(signed) = signing::verify(registry, repository, artifact, public).await? else {
            problems.push(format!("{artifact}: no signature that the public key verifies"));
            continue;
        };
        let Some(layer) = manifest.pointer("/layers/0/digest").and_then(Value::as_str) else {
            problems.push(format!("{artifact}: no document layer"));
            continue;
        };
        let document =
            registry.read_blob(&reference, layer, MAX_DOCUMENT).await.map_err(reg(format!("read {layer}")))?;
        match stable_of(&document) {
            Ok(stable) if stable.promoted && stable.image.digest == digest => {}
            Ok(stable) => {
                problems.push(format!("{artifact}: its stable section names {}, not {digest}", stable.image.digest));
                continue;
            }
            Err(e) => {
                problems.push(format!("{artifact}: {e}"));
                continue;
            }
        }
        return Ok(Verified {
            artifact: reference.to_string(),
            signature: signed.reference,
            referrers_api,
            document: serde_json::from_slice(&document).unwrap_or(Value::Null),
        });
    }
    Err(Error::NotVerified(format!("{name}@{digest}: no provenance artifact verifies: {}", problems.join("; "))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeRegistry;

    const REPO: &str = "reg.test/o/kinoite-zfs";
    const DOC: &str = "{\n  \"schema_version\": 1,\n  \"generated_at\": \"2026-01-01T00:00:00Z\",\n  \"repository\": \"https://git\",\n  \"workflow\": \"ZfsImageBuild/Main\",\n  \"run\": {\n    \"number\": 7,\n    \"sha\": \"abc\"\n  },\n  \"inputs\": {\n    \"fedora_version\": \"43\"\n  },\n  \"candidate\": {\n    \"image\": {}\n  },\n  \"stable\": {\n    \"promotion_result\": \"skipped\",\n    \"promoted\": false\n  }\n}\n";

    #[test]
    fn the_stable_section_replaces_skipped_and_nothing_else_changes() {
        let stable = StableSection::promoted(
            REPO,
            "latest",
            "sha256:aa",
            "stable-7-abc",
            Some(("reg.test/o/ak", "main-43", "sha256:bb")),
            None,
        );
        let text = with_stable(DOC, &stable).unwrap();
        let before = &DOC[..DOC.find("\"stable\"").unwrap()];
        assert!(text.starts_with(before), "{text}");
        let back = stable_of(text.as_bytes()).unwrap();
        assert_eq!(back, stable);
        assert_eq!(back.image.digest_ref, format!("{REPO}@sha256:aa"));
        assert_eq!(back.akmods.unwrap().tag_ref, "reg.test/o/ak:main-43");
        assert!(with_stable("{}", &stable).is_err());
    }

    #[tokio::test]
    async fn pushed_next_to_the_digest_signed_and_read_back_verified() {
        let registry = FakeRegistry::new();
        let digest = registry.add_image(REPO, Some("latest"), &[b"x"]);
        let repo = ImageRef::parse(REPO).unwrap();
        let key = PrivateKey::for_tests(2);
        let stable = StableSection::promoted(REPO, "latest", &digest, "stable-7-abc", None, None);
        let doc = with_stable(DOC, &stable).unwrap();
        let pushed = push(&registry, &repo, &digest, &doc, Some(&key)).await.unwrap();
        assert!(!pushed.referrers_api);
        assert!(registry.tags(REPO).contains_key(&fallback_tag(&digest)), "referrers tag schema index");
        let again = push(&registry, &repo, &digest, &doc, Some(&key)).await.unwrap();
        assert_eq!(again, pushed, "idempotent");
        let index = registry.manifest(&repo.with_tag(&fallback_tag(&digest)).unwrap()).await.unwrap();
        let entries: Value = serde_json::from_slice(&index.bytes).unwrap();
        assert_eq!(entries["manifests"].as_array().unwrap().len(), 1, "listed once");

        let verified = read(&registry, &repo, &digest, &key.public()).await.unwrap();
        assert_eq!(verified.artifact, pushed.artifact);
        assert_eq!(verified.document["stable"]["image"]["digest"], digest.as_str());
        // Another key: not verified.
        let err = read(&registry, &repo, &digest, &PrivateKey::for_tests(3).public()).await.unwrap_err();
        assert!(err.to_string().contains("no signature that the public key verifies"), "{err}");
        // Another digest: nothing there.
        let other = registry.add_image(REPO, None, &[b"y"]);
        assert!(matches!(read(&registry, &repo, &other, &key.public()).await, Err(Error::NotFound(_))));
    }
}
