//! An in-memory [`RegistryClient`] for unit tests of code built on the trait (tests only).
//! It behaves like distribution where that matters to callers: blobs are linked per
//! repository, a mount needs the blob in the source repository, a manifest push is rejected
//! unless its blobs (or an index's manifests) are already in the repository, and pushing by
//! digest checks the bytes. It can refuse mounts and simulate an outage after N writes, and it
//! logs every write that succeeded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{
    AnswerClass, BlobStream, BlobTransfer, Error, ImageRef, ManifestKind, RawManifest, RegistryClient, media_types,
};

#[derive(Default)]
struct Repo {
    blobs: BTreeSet<String>,
    manifests: HashMap<String, (String, Bytes)>,
    tags: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    content: HashMap<String, Bytes>,
    repos: HashMap<String, Repo>,
    refuse_mounts: bool,
    /// Writes that still succeed before every write fails as unreachable (`None`: no outage).
    writes_left: Option<usize>,
    writes: Vec<String>,
}

/// The fake registry.
#[derive(Default)]
pub struct FakeRegistry {
    state: Mutex<State>,
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn answer(class: AnswerClass, what: String, status: u16) -> Error {
    Error::Answer {
        class,
        what,
        host: "fake".into(),
        status: Some(status),
        detail: String::new(),
        retry_after: None,
        attempts: 1,
    }
}

impl FakeRegistry {
    pub fn new() -> FakeRegistry {
        FakeRegistry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a blob in `repo` (`host/path`); returns its digest.
    pub fn add_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let mut state = self.lock();
        state.content.insert(digest.clone(), Bytes::copy_from_slice(bytes));
        state.repos.entry(repo.into()).or_default().blobs.insert(digest.clone());
        digest
    }

    /// Stores a manifest (unchecked) by digest and under `tag`; returns its digest.
    pub fn add_manifest(&self, repo: &str, tag: Option<&str>, media_type: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let mut state = self.lock();
        let entry = state.repos.entry(repo.into()).or_default();
        entry.manifests.insert(digest.clone(), (media_type.into(), Bytes::copy_from_slice(bytes)));
        if let Some(tag) = tag {
            entry.tags.insert(tag.into(), digest.clone());
        }
        digest
    }

    /// Pushes an OCI image with these layer contents (plus a config); returns its digest.
    pub fn add_image(&self, repo: &str, tag: Option<&str>, layers: &[&[u8]]) -> String {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": self.add_blob(repo, l), "size": l.len()})
            })
            .collect();
        // The config names the layers, so two images never share a config by accident.
        let config = serde_json::to_vec(&serde_json::json!({"rootfs": layers})).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": media_types::OCI_MANIFEST,
            "config": {"mediaType": media_types::OCI_CONFIG, "digest": self.add_blob(repo, &config), "size": config.len()},
            "layers": layers,
        });
        self.add_manifest(repo, tag, media_types::OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap())
    }

    /// Pushes an OCI index over manifests already in `repo`; returns its digest.
    pub fn add_index(&self, repo: &str, tag: Option<&str>, children: &[(&str, &str)]) -> String {
        let manifests: Vec<serde_json::Value> = children
            .iter()
            .map(|(digest, arch)| {
                serde_json::json!({"mediaType": media_types::OCI_MANIFEST, "digest": digest, "size": 1, "platform": {"os": "linux", "architecture": arch}})
            })
            .collect();
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": media_types::OCI_INDEX, "manifests": manifests});
        self.add_manifest(repo, tag, media_types::OCI_INDEX, &serde_json::to_vec(&index).unwrap())
    }

    /// Every tag of `repo` and its digest.
    pub fn tags(&self, repo: &str) -> BTreeMap<String, String> {
        self.lock().repos.get(repo).map(|r| r.tags.clone()).unwrap_or_default()
    }

    /// The length of a stored blob.
    pub fn blob_len(&self, digest: &str) -> u64 {
        self.lock().content.get(digest).map(|b| b.len() as u64).unwrap_or_default()
    }

    /// Whether `repo` has a manifest with this digest.
    pub fn has_manifest(&self, repo: &str, digest: &str) -> bool {
        self.lock().repos.get(repo).is_some_and(|r| r.manifests.contains_key(digest))
    }

    pub fn refuse_mounts(&self, refuse: bool) {
        self.lock().refuse_mounts = refuse;
    }

    /// After `n` more successful writes every write fails as unreachable; `None` ends the outage.
    pub fn outage_after(&self, n: Option<usize>) {
        self.lock().writes_left = n;
    }

    /// The writes that succeeded, in order (`mount`, `copy`, `put` with repository and target).
    pub fn writes(&self) -> Vec<String> {
        self.lock().writes.clone()
    }

    fn write(state: &mut State, what: &str, entry: String) -> Result<(), Error> {
        match &mut state.writes_left {
            Some(0) => return Err(answer(AnswerClass::Unreachable, what.into(), 503)),
            Some(n) => *n -= 1,
            None => {}
        }
        state.writes.push(entry);
        Ok(())
    }

    fn lookup(&self, reference: &ImageRef) -> Result<(String, String, Bytes), Error> {
        let state = self.lock();
        let what = format!("get manifest {reference}");
        let repo = state.repos.get(&reference.name()).ok_or_else(|| answer(AnswerClass::Absent, what.clone(), 404))?;
        let digest = match reference.digest() {
            Some(d) => d.to_string(),
            None => repo
                .tags
                .get(reference.tag().unwrap_or("latest"))
                .cloned()
                .ok_or_else(|| answer(AnswerClass::Absent, what.clone(), 404))?,
        };
        let (media_type, bytes) =
            repo.manifests.get(&digest).cloned().ok_or_else(|| answer(AnswerClass::Absent, what, 404))?;
        Ok((digest, media_type, bytes))
    }
}

impl RegistryClient for FakeRegistry {
    async fn resolve_digest(&self, reference: &ImageRef) -> Result<String, Error> {
        self.lookup(reference).map(|(digest, _, _)| digest)
    }

    async fn manifest(&self, reference: &ImageRef) -> Result<RawManifest, Error> {
        self.lookup(reference).map(|(digest, media_type, bytes)| RawManifest { digest, media_type, bytes })
    }

    async fn read_blob(&self, repository: &ImageRef, digest: &str, _max_bytes: u64) -> Result<Bytes, Error> {
        let state = self.lock();
        let linked = state.repos.get(&repository.name()).is_some_and(|r| r.blobs.contains(digest));
        match state.content.get(digest) {
            Some(bytes) if linked => Ok(bytes.clone()),
            _ => Err(answer(AnswerClass::Absent, format!("read blob {digest}"), 404)),
        }
    }

    async fn blob_stream(&self, repository: &ImageRef, digest: &str) -> Result<BlobStream, Error> {
        let bytes = self.read_blob(repository, digest, u64::MAX).await?;
        Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })))
    }

    async fn blob_exists(&self, repository: &ImageRef, digest: &str) -> Result<bool, Error> {
        Ok(self.lock().repos.get(&repository.name()).is_some_and(|r| r.blobs.contains(digest)))
    }

    async fn copy_blob(&self, from: &ImageRef, to: &ImageRef, digest: &str) -> Result<BlobTransfer, Error> {
        let mut state = self.lock();
        if state.repos.get(&to.name()).is_some_and(|r| r.blobs.contains(digest)) {
            return Ok(BlobTransfer::AlreadyPresent);
        }
        let what = format!("copy blob {digest} from {} to {}", from.name(), to.name());
        if !state.repos.get(&from.name()).is_some_and(|r| r.blobs.contains(digest)) {
            return Err(answer(AnswerClass::Absent, what, 404));
        }
        let mount = from.api_host() == to.api_host() && !state.refuse_mounts;
        let bytes = state.content.get(digest).map(|b| b.len() as u64).unwrap_or_default();
        let (verb, transfer) =
            if mount { ("mount", BlobTransfer::Mounted) } else { ("copy", BlobTransfer::Copied { bytes }) };
        Self::write(&mut state, &what, format!("{verb} {digest} -> {}", to.name()))?;
        state.repos.entry(to.name()).or_default().blobs.insert(digest.into());
        Ok(transfer)
    }

    async fn put_manifest(&self, target: &ImageRef, media_type: &str, bytes: Bytes) -> Result<String, Error> {
        let digest = sha256(&bytes);
        let what = format!("push manifest {target}");
        if target.digest().is_some_and(|d| d != digest) {
            return Err(Error::Invalid { what, detail: "digest mismatch".into() });
        }
        let raw = RawManifest { digest: digest.clone(), media_type: media_type.into(), bytes: bytes.clone() };
        let mut state = self.lock();
        let repo = state.repos.entry(target.name()).or_default();
        // Distribution rejects a manifest whose references are not in the repository.
        let missing = match raw.kind()? {
            ManifestKind::Image => {
                let image = raw.image()?;
                std::iter::once(&image.config).chain(image.layers.iter()).any(|d| !repo.blobs.contains(&d.digest))
            }
            ManifestKind::Index => raw.index()?.manifests.iter().any(|m| !repo.manifests.contains_key(&m.digest)),
        };
        if missing {
            return Err(answer(AnswerClass::Rejected, format!("{what}: MANIFEST_BLOB_UNKNOWN"), 400));
        }
        Self::write(&mut state, &what, format!("put {} -> {}:{}", digest, target.name(), target.reference()))?;
        let repo = state.repos.entry(target.name()).or_default();
        repo.manifests.insert(digest.clone(), (media_type.into(), bytes));
        if target.digest().is_none() {
            repo.tags.insert(target.reference().into(), digest.clone());
        }
        Ok(digest)
    }

    async fn push_blob(&self, repository: &ImageRef, bytes: Bytes) -> Result<String, Error> {
        let digest = sha256(&bytes);
        let mut state = self.lock();
        if state.repos.get(&repository.name()).is_some_and(|r| r.blobs.contains(&digest)) {
            return Ok(digest);
        }
        let what = format!("push blob {digest} to {}", repository.name());
        Self::write(&mut state, &what, format!("blob {digest} -> {}", repository.name()))?;
        state.content.insert(digest.clone(), bytes);
        state.repos.entry(repository.name()).or_default().blobs.insert(digest.clone());
        Ok(digest)
    }

    /// Like Debian's docker-registry: no referrers API.
    async fn referrers(&self, _repository: &ImageRef, _digest: &str) -> Result<Option<Bytes>, Error> {
        Ok(None)
    }
}
