//! Executes one planned step. Every step first reads the registry state it is about to change
//! and does nothing when the effect is already there, so executing a step twice (a retry, a
//! resumed controller, a repeated command) writes nothing the second time. Tag steps re-read
//! the tag after writing it.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::Error;
use super::observe::{Content, PARALLEL_BLOBS, has_manifest, head};
use super::plan::{Plan, RefusalReason, StepKind, refused, shown};
use crate::registry::{BlobTransfer, ImageRef, RegistryClient};

/// How the blobs of a copy got into the target repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobCounts {
    /// Already in the target repository.
    pub already_present: u32,
    /// Cross-repository mounts (no bytes transferred).
    pub mounted: u32,
    /// Streamed copies (other registry, or the registry refused the mount).
    pub copied: u32,
    /// Bytes uploaded by the streamed copies.
    pub bytes_copied: u64,
}

impl BlobCounts {
    fn add(&mut self, transfer: BlobTransfer) {
        match transfer {
            BlobTransfer::AlreadyPresent => self.already_present += 1,
            BlobTransfer::Mounted => self.mounted += 1,
            BlobTransfer::Copied { bytes } => {
                self.copied += 1;
                self.bytes_copied += bytes;
            }
        }
    }

    pub fn merge(&mut self, other: BlobCounts) {
        self.already_present += other.already_present;
        self.mounted += other.mounted;
        self.copied += other.copied;
        self.bytes_copied += other.bytes_copied;
    }
}

/// What executing a step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// Whether the step wrote anything (false: the registry already showed its effect).
    pub wrote: bool,
    /// The digest the step's tag points at, confirmed by a re-read (tag steps).
    pub digest: Option<String>,
    pub blobs: BlobCounts,
    /// Manifests pushed by digest (copies) or under a tag.
    pub manifests_pushed: u32,
}

/// Executes `kind`, one of `plan`'s steps.
pub async fn execute_step<R: RegistryClient + ?Sized>(
    registry: &R,
    plan: &Plan,
    kind: &StepKind,
) -> Result<StepOutcome, Error> {
    let request = &plan.request;
    let step = kind.name();
    match kind {
        StepKind::CopyImage => copy_content(registry, &step, &plan.image, &request.stable).await,
        StepKind::CopyAkmods => {
            let (content, alignment) = akmods(plan)?;
            copy_content(registry, &step, content, &alignment.stable).await
        }
        StepKind::AuditTag => {
            let tag = request.audit_tag.as_deref().ok_or_else(|| Error::Request("no audit tag requested".into()))?;
            write_tag(registry, &step, &tag_ref(&request.stable, tag)?, &plan.image, Guard::Immutable).await
        }
        StepKind::StableTag { tag, guarded } => {
            let guard = if *guarded { Guard::Expect(plan.expected_stable.as_deref()) } else { Guard::None };
            write_tag(registry, &step, &tag_ref(&request.stable, tag)?, &plan.image, guard).await
        }
        StepKind::AkmodsTag => {
            let (content, alignment) = akmods(plan)?;
            write_tag(registry, &step, &alignment.stable, content, Guard::None).await
        }
        StepKind::Sign => sign(registry, plan).await,
        StepKind::Confirm => confirm(registry, plan).await,
    }
}

fn akmods(plan: &Plan) -> Result<(&Content, &super::request::AkmodsAlignment), Error> {
    match (&plan.akmods, &plan.request.akmods) {
        (Some(content), Some(alignment)) => Ok((content, alignment)),
        _ => Err(Error::Request("no akmods alignment requested".into())),
    }
}

fn tag_ref(repository: &ImageRef, tag: &str) -> Result<ImageRef, Error> {
    repository.with_tag(tag).map_err(|e| Error::Request(e.to_string()))
}

/// Copies content by digest: blobs (mounted from the source repository when the registry allows
/// it), then an index's image manifests, then the manifest itself. Nothing is tagged.
async fn copy_content<R: RegistryClient + ?Sized>(
    registry: &R,
    step: &str,
    content: &Content,
    target: &ImageRef,
) -> Result<StepOutcome, Error> {
    let mut outcome = StepOutcome::default();
    // The manifest is pushed last, so its presence means the whole content is there.
    if has_manifest(registry, target, content.digest()).await? {
        return Ok(outcome);
    }
    // Collected first: a `Map` closure over borrowed items inside the stream makes the future
    // fail rustc's `Send` check ("FnOnce is not general enough") when a controller spawns it.
    let copies: Vec<_> = content
        .blobs
        .iter()
        .map(|(digest, _)| async move {
            registry.copy_blob(&content.source, target, digest).await.map_err(|e| Error::registry(step, e))
        })
        .collect();
    let transfers: Vec<BlobTransfer> =
        futures::stream::iter(copies).buffer_unordered(PARALLEL_BLOBS).try_collect().await?;
    for transfer in transfers {
        outcome.blobs.add(transfer);
    }
    for child in &content.children {
        if !has_manifest(registry, target, &child.digest).await? {
            push(registry, step, &by_digest(target, &child.digest)?, &child.media_type, child.bytes.clone()).await?;
            outcome.manifests_pushed += 1;
        }
    }
    push(registry, step, &by_digest(target, content.digest())?, &content.top.media_type, content.top.bytes.clone())
        .await?;
    outcome.manifests_pushed += 1;
    outcome.wrote = outcome.manifests_pushed > 0 || outcome.blobs.mounted > 0 || outcome.blobs.copied > 0;
    tracing::info!(step, target = %target.name(), digest = content.digest(), blobs = ?outcome.blobs, "content copied by digest");
    Ok(outcome)
}

fn by_digest(repository: &ImageRef, digest: &str) -> Result<ImageRef, Error> {
    repository.with_digest(digest).map_err(|e| Error::Request(e.to_string()))
}

async fn push<R: RegistryClient + ?Sized>(
    registry: &R,
    step: &str,
    target: &ImageRef,
    media_type: &str,
    bytes: Bytes,
) -> Result<String, Error> {
    registry.put_manifest(target, media_type, bytes).await.map_err(|e| Error::registry(step, e))
}

/// What a tag must hold before it is written.
#[derive(Debug, Clone, Copy)]
enum Guard<'a> {
    /// Anything (it is moved).
    None,
    /// Compare-and-swap: exactly this digest (`None`: absent).
    Expect(Option<&'a str>),
    /// Nothing: an audit tag is written once.
    Immutable,
}

/// Points `target` (a tag) at `content`: read, check the guard, write, re-read.
async fn write_tag<R: RegistryClient + ?Sized>(
    registry: &R,
    step: &str,
    target: &ImageRef,
    content: &Content,
    guard: Guard<'_>,
) -> Result<StepOutcome, Error> {
    let want = content.digest();
    let current = head(registry, target).await?;
    if current.as_deref() == Some(want) {
        return Ok(StepOutcome { digest: current, ..StepOutcome::default() });
    }
    match guard {
        Guard::None => {}
        Guard::Expect(expected) if current.as_deref() == expected => {}
        Guard::Expect(expected) => {
            return Err(refused(
                RefusalReason::StableTagMoved,
                format!(
                    "stable tag {target} points at {}, but the promotion expects {}: someone else moved it during the promotion; it was not overwritten. Check the tag before promoting again",
                    shown(current.as_deref()),
                    shown(expected)
                ),
            ));
        }
        Guard::Immutable if current.is_none() => {}
        Guard::Immutable => {
            return Err(refused(
                RefusalReason::AuditTagConflict,
                format!(
                    "audit tag {target} points at {}, not at the candidate {want}: audit tags are immutable; it was not overwritten",
                    shown(current.as_deref())
                ),
            ));
        }
    }
    push(registry, step, target, &content.top.media_type, content.top.bytes.clone()).await?;
    let reread = head(registry, target).await?;
    if reread.as_deref() != Some(want) {
        return Err(refused(
            RefusalReason::TagChanged,
            format!(
                "{target} was written with {want} but reads back {}: another writer is moving it",
                shown(reread.as_deref())
            ),
        ));
    }
    tracing::info!(step, tag = %target, digest = want, "tag written and re-read");
    Ok(StepOutcome { wrote: true, digest: reread, blobs: BlobCounts::default(), manifests_pushed: 1 })
}

/// Signs the candidate digest in the stable repository (nothing when our signature is there)
/// and verifies it read back. The step's digest is the `.sig` manifest's.
async fn sign<R: RegistryClient + ?Sized>(registry: &R, plan: &Plan) -> Result<StepOutcome, Error> {
    let Some(key) = &plan.request.signing else {
        return Err(Error::Request("no signing key given".into()));
    };
    let signed = crate::signing::sign(registry, &plan.request.stable, plan.image_digest(), key)
        .await
        .map_err(|e| Error::signing("sign", e))?;
    Ok(StepOutcome {
        wrote: signed.wrote,
        digest: Some(signed.manifest_digest),
        blobs: BlobCounts::default(),
        manifests_pushed: u32::from(signed.wrote),
    })
}

/// Re-reads every tag the promotion writes; all must point where the plan put them.
async fn confirm<R: RegistryClient + ?Sized>(registry: &R, plan: &Plan) -> Result<StepOutcome, Error> {
    let request = &plan.request;
    let mut expected: Vec<(ImageRef, &str)> = Vec::new();
    for tag in request.audit_tag.iter().chain(request.tags.iter()) {
        expected.push((tag_ref(&request.stable, tag)?, plan.image_digest()));
    }
    if let Ok((content, alignment)) = akmods(plan) {
        expected.push((alignment.stable.clone(), content.digest()));
    }
    if let Some(key) = &plan.request.signing {
        let verified = crate::signing::verify(registry, &request.stable, plan.image_digest(), &key.public())
            .await
            .map_err(|e| Error::signing("confirm", e))?;
        if verified.is_none() {
            return Err(refused(
                RefusalReason::SignatureNotVerified,
                format!(
                    "{}@{} has no signature that the signing key verifies any more: another writer replaced the .sig tag",
                    request.stable.name(),
                    plan.image_digest()
                ),
            ));
        }
    }
    for (reference, want) in &expected {
        let found = head(registry, reference).await?;
        if found.as_deref() != Some(*want) {
            return Err(refused(
                RefusalReason::TagChanged,
                format!(
                    "{reference} should point at {want} after the promotion but points at {}: another writer moved it",
                    shown(found.as_deref())
                ),
            ));
        }
    }
    Ok(StepOutcome { digest: Some(plan.image_digest().to_string()), ..StepOutcome::default() })
}
