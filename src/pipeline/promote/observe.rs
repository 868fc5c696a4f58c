//! Every registry read a promotion plan needs, into plain data: the candidate (and candidate
//! akmods) content with all child manifests and blob digests, whether the stable repositories
//! already hold that content, and what each tag points at. "Absent" answers become data (the
//! planner refuses on them); every other failure is an error, so an auth or network problem is
//! never mistaken for a missing image (H5).

use futures::{StreamExt, TryStreamExt};

use super::Error;
use super::request::PromotionRequest;
use crate::registry::{ImageRef, ManifestKind, RawManifest, RegistryClient, media_types};

/// Requests in flight at once when checking or copying blobs (images have dozens of layers).
pub(super) const PARALLEL_BLOBS: usize = 4;

/// An image or index and everything it references, read by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Where it was read from, `repository@digest`.
    pub source: ImageRef,
    /// The manifest or index, bytes exactly as served.
    pub top: RawManifest,
    /// An index's image manifests, in index order (empty for an image).
    pub children: Vec<RawManifest>,
    /// Every distinct blob (configs and layers) with its size, in manifest order.
    pub blobs: Vec<(String, u64)>,
}

impl Content {
    pub fn digest(&self) -> &str {
        &self.top.digest
    }

    /// `repository@digest` of the source.
    pub fn pinned(&self) -> String {
        self.source.to_string()
    }
}

/// What the registry has for a reference a promotion reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Present(Content),
    /// No manifest at that reference.
    Missing {
        reference: String,
    },
    /// The manifest exists but a child manifest or blob does not.
    Incomplete {
        reference: String,
        detail: String,
    },
    /// Content a promotion does not copy (nested index, unknown media type).
    Unsupported {
        reference: String,
        detail: String,
    },
}

/// A tag and the digest it points at (`None`: the tag does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagState {
    pub tag: String,
    pub digest: Option<String>,
}

/// Akmods alignment state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkmodsObserved {
    pub source: Source,
    /// Whether the stable akmods repository already has the candidate akmods by digest.
    pub in_stable: bool,
    /// The stable akmods tag.
    pub stable_tag: TagState,
}

/// The registry state a promotion is planned over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub image: Source,
    /// Whether the stable repository already has the candidate by digest.
    pub image_in_stable: bool,
    /// The requested stable tags, in request order.
    pub tags: Vec<TagState>,
    pub audit: Option<TagState>,
    pub akmods: Option<AkmodsObserved>,
    /// With signing: whether the stable repository holds a signature of the candidate digest
    /// that the signing key's public key verifies (`None`: no signing asked for).
    pub signed: Option<bool>,
}

/// Reads everything [`super::plan`] needs. Read-only.
pub async fn observe<R: RegistryClient + ?Sized>(registry: &R, request: &PromotionRequest) -> Result<Observed, Error> {
    let image = read_source(registry, &request.candidate, &request.stable).await?;
    let image_in_stable = match &image {
        Source::Present(content) => has_manifest(registry, &request.stable, content.digest()).await?,
        _ => false,
    };
    let image = check_blobs(registry, image, image_in_stable).await?;
    let mut tags = Vec::new();
    for tag in &request.tags {
        tags.push(tag_state(registry, &request.stable, tag).await?);
    }
    let audit = match &request.audit_tag {
        Some(tag) => Some(tag_state(registry, &request.stable, tag).await?),
        None => None,
    };
    let akmods = match &request.akmods {
        None => None,
        Some(alignment) => {
            let source = read_source(registry, &alignment.candidate, &alignment.stable).await?;
            let in_stable = match &source {
                Source::Present(content) => has_manifest(registry, &alignment.stable, content.digest()).await?,
                _ => false,
            };
            let source = check_blobs(registry, source, in_stable).await?;
            let stable_tag = tag_state(registry, &alignment.stable, alignment.stable.tag().unwrap_or("latest")).await?;
            Some(AkmodsObserved { source, in_stable, stable_tag })
        }
    };
    let signed = match (&request.signing, request.candidate.digest()) {
        (Some(key), Some(digest)) => Some(
            crate::signing::verify(registry, &request.stable, digest, &key.public())
                .await
                .map_err(|e| Error::signing("read the stable signatures", e))?
                .is_some(),
        ),
        _ => None,
    };
    Ok(Observed { image, image_in_stable, tags, audit, akmods, signed })
}

/// What `repository:tag` points at.
pub(super) async fn tag_state<R: RegistryClient + ?Sized>(
    registry: &R,
    repository: &ImageRef,
    tag: &str,
) -> Result<TagState, Error> {
    let reference = repository.with_tag(tag).map_err(|e| Error::Request(e.to_string()))?;
    Ok(TagState { tag: tag.to_string(), digest: head(registry, &reference).await? })
}

/// The digest a reference points at, `None` when absent.
pub(super) async fn head<R: RegistryClient + ?Sized>(
    registry: &R,
    reference: &ImageRef,
) -> Result<Option<String>, Error> {
    match registry.resolve_digest(reference).await {
        Ok(digest) => Ok(Some(digest)),
        Err(e) if e.is_absent() => Ok(None),
        Err(e) => Err(Error::registry("read the registry state", e)),
    }
}

/// Whether `repository` has a manifest with this digest.
pub(super) async fn has_manifest<R: RegistryClient + ?Sized>(
    registry: &R,
    repository: &ImageRef,
    digest: &str,
) -> Result<bool, Error> {
    let reference = repository.with_digest(digest).map_err(|e| Error::Request(e.to_string()))?;
    Ok(head(registry, &reference).await?.is_some())
}

/// Reads `reference` and what it references. A digest the source repository no longer has is
/// read from `fallback`'s repository when that has it: the same digest is the same content, and
/// an older run already promoted (rollback) keeps its content in the stable repository even
/// after the candidate repository was cleaned up.
async fn read_source<R: RegistryClient + ?Sized>(
    registry: &R,
    reference: &ImageRef,
    fallback: &ImageRef,
) -> Result<Source, Error> {
    let mut source = reference.clone();
    let top = match get(registry, &source).await? {
        Some(top) => top,
        None => {
            let elsewhere = match reference.digest() {
                Some(digest) if fallback.name() != reference.name() => {
                    let candidate = fallback.with_digest(digest).map_err(|e| Error::Request(e.to_string()))?;
                    get(registry, &candidate).await?.map(|top| (candidate, top))
                }
                _ => None,
            };
            match elsewhere {
                Some((from, top)) => {
                    source = from;
                    top
                }
                None => return Ok(Source::Missing { reference: reference.to_string() }),
            }
        }
    };
    let pinned = source.with_digest(&top.digest).map_err(|e| Error::Request(e.to_string()))?;
    let unsupported = |detail: String| Source::Unsupported { reference: pinned.to_string(), detail };
    let mut children = Vec::new();
    let mut images = Vec::new();
    match top.kind() {
        Err(e) => return Ok(unsupported(e.to_string())),
        Ok(ManifestKind::Image) => images.push(top.clone()),
        Ok(ManifestKind::Index) => {
            let index = match top.index() {
                Ok(index) => index,
                Err(e) => return Ok(unsupported(e.to_string())),
            };
            for entry in &index.manifests {
                if matches!(entry.media_type.as_str(), media_types::OCI_INDEX | media_types::DOCKER_LIST) {
                    return Ok(unsupported(format!(
                        "entry {} is itself an index (nested indexes are not promoted)",
                        entry.digest
                    )));
                }
                let child_ref = pinned.with_digest(&entry.digest).map_err(|e| Error::Request(e.to_string()))?;
                let Some(child) = get(registry, &child_ref).await? else {
                    return Ok(Source::Incomplete {
                        reference: pinned.to_string(),
                        detail: format!("its manifest {} does not exist", entry.digest),
                    });
                };
                if child.kind().ok() != Some(ManifestKind::Image) {
                    return Ok(unsupported(format!("entry {} is not an image manifest", entry.digest)));
                }
                images.push(child.clone());
                children.push(child);
            }
        }
    }
    let mut blobs: Vec<(String, u64)> = Vec::new();
    for manifest in &images {
        let image = match manifest.image() {
            Ok(image) => image,
            Err(e) => return Ok(unsupported(e.to_string())),
        };
        for descriptor in std::iter::once(&image.config).chain(image.layers.iter()) {
            if !blobs.iter().any(|(d, _)| d == &descriptor.digest) {
                blobs.push((descriptor.digest.clone(), u64::try_from(descriptor.size).unwrap_or_default()));
            }
        }
    }
    Ok(Source::Present(Content { source: pinned, top, children, blobs }))
}

/// A present source must have every blob before anything is copied from it (a copy that stops
/// at a missing layer would leave half the content behind). Skipped when the target already
/// has the content: nothing will be copied.
async fn check_blobs<R: RegistryClient + ?Sized>(
    registry: &R,
    source: Source,
    in_target: bool,
) -> Result<Source, Error> {
    let Source::Present(content) = source else { return Ok(source) };
    if in_target {
        return Ok(Source::Present(content));
    }
    // Collected first, for the same rustc `Send` limitation as the copies in `execute`.
    let checks: Vec<_> = content
        .blobs
        .iter()
        .map(|(digest, _)| {
            let repository = &content.source;
            async move {
                match registry.blob_exists(repository, digest).await {
                    Ok(true) => Ok(None),
                    Ok(false) => Ok(Some(digest.clone())),
                    Err(e) => Err(Error::registry("read the registry state", e)),
                }
            }
        })
        .collect();
    let missing: Vec<String> = futures::stream::iter(checks)
        .buffered(PARALLEL_BLOBS)
        .try_filter_map(|missing| async move { Ok(missing) })
        .try_collect()
        .await?;
    if missing.is_empty() {
        Ok(Source::Present(content))
    } else {
        Ok(Source::Incomplete {
            reference: content.pinned(),
            detail: format!("its blob(s) {} do not exist in {}", missing.join(", "), content.source.name()),
        })
    }
}

async fn get<R: RegistryClient + ?Sized>(registry: &R, reference: &ImageRef) -> Result<Option<RawManifest>, Error> {
    match registry.manifest(reference).await {
        Ok(raw) => Ok(Some(raw)),
        Err(e) if e.is_absent() => Ok(None),
        Err(e) => Err(Error::registry("read the registry state", e)),
    }
}
