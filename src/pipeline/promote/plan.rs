//! The promotion planner: pure. Given the request and the observed registry state it either
//! refuses (every precondition is checked here, before the first write) or returns the ordered
//! steps, with the steps whose effect is already in the registry marked done. Planning again
//! after any prefix of the steps ran yields the same steps with that prefix done, which is what
//! makes a repeated or resumed promotion converge (design §3 invariant 7).
//!
//! Order of the writes (why: docs/decisions.md, "Promotion"):
//! 1. `copy-image`, `copy-akmods`: content by digest into the stable repositories. Invisible to
//!    anyone pulling by tag, so a failure here leaves nothing moved.
//!    Then `sign` (when a signing key is given): the candidate digest signed in the stable
//!    repository and verified with the public key; before any tag, so a host never sees a stable
//!    tag on an unsigned digest (H6). The registry shows whether it is done, so a resumed
//!    promotion neither signs twice nor skips it.
//! 2. `audit-tag`: the immutable record, written before any channel moves, so a stable tag never
//!    points at a digest without its audit tag.
//! 3. `tag:<first>` (compare-and-swap guarded), then `tag:<other>`...: the channel moves.
//! 4. `akmods-tag`: the stable akmods tag moves only after the image moved (invariant 1: only
//!    together with it); its content was copied in step 1, so only a registry outage can stop it,
//!    and a resumed run completes it.
//! 5. `confirm`: every written tag re-read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Error;
use super::observe::{Content, Observed, Source, TagState};
use super::request::{ABSENT, PromotionRequest, StableExpectation};
use crate::api::promotion::{PromotionProgress, PromotionStep, StepState};

/// Why a promotion was refused; the CamelCase value is the `Stalled`/history reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// No manifest at the candidate digest.
    CandidateMissing,
    /// The candidate lacks a child manifest or blob.
    CandidateIncomplete,
    /// Akmods alignment was asked for but the candidate akmods image does not exist (R11.4).
    CandidateAkmodsMissing,
    /// The candidate (or its akmods) is content a promotion does not copy.
    UnsupportedContent,
    /// Compare-and-swap: the guarded stable tag is not at the expected digest.
    StableTagMoved,
    /// The audit tag exists at another digest (audit tags are immutable).
    AuditTagConflict,
    /// A tag written by this promotion was found at another digest when re-read.
    TagChanged,
    /// The signature written in the stable repository does not verify with the key's public key.
    SignatureNotVerified,
    /// The stable repository's `.sig` tag holds something hosts reject (not an OCI manifest).
    SignatureAttachmentInvalid,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::CandidateMissing => "CandidateMissing",
            RefusalReason::CandidateIncomplete => "CandidateIncomplete",
            RefusalReason::CandidateAkmodsMissing => "CandidateAkmodsMissing",
            RefusalReason::UnsupportedContent => "UnsupportedContent",
            RefusalReason::StableTagMoved => "StableTagMoved",
            RefusalReason::AuditTagConflict => "AuditTagConflict",
            RefusalReason::TagChanged => "TagChanged",
            RefusalReason::SignatureNotVerified => "SignatureNotVerified",
            RefusalReason::SignatureAttachmentInvalid => "SignatureAttachmentInvalid",
        }
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a promotion.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// Candidate blobs (mounted), child manifests and the manifest, by digest, into the stable
    /// repository.
    CopyImage,
    /// The same for the candidate akmods into the stable akmods repository.
    CopyAkmods,
    /// The candidate digest signed in the stable repository, and verified.
    Sign,
    /// The immutable audit tag.
    AuditTag,
    /// A stable tag; `guarded` for the first one (compare-and-swap).
    StableTag { tag: String, guarded: bool },
    /// The stable akmods tag.
    AkmodsTag,
    /// Every written tag re-read.
    Confirm,
}

impl StepKind {
    /// The name in `status.inProgress.steps` and the command's output.
    pub fn name(&self) -> String {
        match self {
            StepKind::CopyImage => "copy-image".into(),
            StepKind::CopyAkmods => "copy-akmods".into(),
            StepKind::Sign => "sign".into(),
            StepKind::AuditTag => "audit-tag".into(),
            StepKind::StableTag { tag, .. } => format!("tag:{tag}"),
            StepKind::AkmodsTag => "akmods-tag".into(),
            StepKind::Confirm => "confirm".into(),
        }
    }

    /// Whether the step writes to the registry (`confirm` only reads).
    pub fn writes(&self) -> bool {
        !matches!(self, StepKind::Confirm)
    }
}

/// A planned step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: StepKind,
    /// The registry already shows the step's effect.
    pub done: bool,
}

/// A promotion ready to execute: the request, the content read by digest, the resolved
/// expectation and the steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub request: PromotionRequest,
    pub image: Content,
    pub akmods: Option<Content>,
    /// What the guarded stable tag must point at before it is written (`None`: absent).
    pub expected_stable: Option<String>,
    /// What the guarded stable tag pointed at when observed.
    pub previous_stable: Option<String>,
    pub steps: Vec<Step>,
}

impl Plan {
    /// The digest every stable tag and the audit tag end up at.
    pub fn image_digest(&self) -> &str {
        self.image.digest()
    }

    /// The digest the stable akmods tag ends up at.
    pub fn akmods_digest(&self) -> Option<&str> {
        self.akmods.as_ref().map(Content::digest)
    }

    /// Steps still to execute, in order.
    pub fn pending(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| !s.done)
    }

    /// Whether nothing needs writing (a repeated promotion).
    pub fn nothing_to_write(&self) -> bool {
        self.pending().all(|s| !s.kind.writes())
    }

    /// The digest a step's tag ends up at (none for copies and `confirm`).
    pub fn step_digest(&self, kind: &StepKind) -> Option<String> {
        match kind {
            StepKind::AuditTag | StepKind::StableTag { .. } => Some(self.image_digest().to_string()),
            StepKind::AkmodsTag => self.akmods_digest().map(str::to_string),
            StepKind::CopyImage | StepKind::CopyAkmods | StepKind::Sign | StepKind::Confirm => None,
        }
    }

    /// The `status.inProgress` a controller writes before the first step. It holds what the
    /// plan pinned (the candidate akmods by digest, the expectation as observed), so a restarted
    /// controller rebuilds the same request with [`PromotionRequest::from_progress`] and resumes
    /// with exactly these values, whatever the spec or the build says by then.
    pub fn progress(&self, run: i64, source_revision: &str, started_at: Time) -> Result<PromotionProgress, Error> {
        let request = &self.request;
        let audit_tag = request
            .audit_tag
            .clone()
            .ok_or_else(|| Error::Request("a promotion recorded in status needs an audit tag".into()))?;
        let candidate_akmods = match (&request.akmods, self.akmods_digest()) {
            (Some(alignment), Some(digest)) => {
                Some(alignment.candidate.with_digest(digest).map_err(|e| Error::Request(e.to_string()))?.to_string())
            }
            _ => None,
        };
        Ok(PromotionProgress {
            run,
            source_revision: source_revision.to_string(),
            candidate_image: request.candidate.to_string(),
            candidate_digest: self.image_digest().to_string(),
            candidate_akmods,
            stable_akmods: request.akmods.as_ref().map(|a| a.stable.to_string()),
            stable_repository: request.stable.name(),
            tags: request.tags.clone(),
            audit_tag,
            expected_stable_digest: self.expected_stable.clone().unwrap_or_else(|| ABSENT.to_string()),
            started_at,
            signing_key: request.signing.as_ref().map(|k| k.public().fingerprint()),
            steps: self.progress_steps(),
        })
    }

    /// The steps as `status.inProgress.steps`.
    pub fn progress_steps(&self) -> Vec<PromotionStep> {
        self.steps
            .iter()
            .map(|s| PromotionStep {
                name: s.kind.name(),
                state: if s.done { StepState::Done } else { StepState::Pending },
                digest: if s.done { self.step_digest(&s.kind) } else { None },
            })
            .collect()
    }
}

/// Plans a promotion over the observed registry state, or refuses it.
pub fn plan(request: &PromotionRequest, observed: &Observed) -> Result<Plan, Error> {
    let image = present(&observed.image, RefusalReason::CandidateMissing, "candidate")?;
    let candidate = image.digest().to_string();
    let akmods = match (&request.akmods, &observed.akmods) {
        (Some(_), Some(state)) => {
            Some(present(&state.source, RefusalReason::CandidateAkmodsMissing, "candidate akmods")?)
        }
        (Some(alignment), None) => {
            return Err(Error::Request(format!("akmods alignment to {} was not observed", alignment.stable)));
        }
        (None, _) => None,
    };

    // Compare-and-swap on the first stable tag. The candidate itself is always acceptable: it
    // is what a resumed or repeated promotion finds after the tag was written.
    let first = observed
        .tags
        .first()
        .filter(|t| Some(&t.tag) == request.tags.first())
        .ok_or_else(|| Error::Request("the stable tags were not observed".into()))?;
    let expected_stable = match &request.expect {
        StableExpectation::Absent => None,
        StableExpectation::Digest(digest) => Some(digest.clone()),
        StableExpectation::Observed => first.digest.clone(),
    };
    if first.digest.as_deref() != Some(candidate.as_str()) && first.digest != expected_stable {
        return Err(refused(
            RefusalReason::StableTagMoved,
            format!(
                "stable tag {} points at {}, but the promotion expects {}: someone else moved it or the expectation is stale; nothing was written. Check the tag (skopeo inspect), and if replacing it is intended, promote again expecting its current digest",
                tag_ref(request, &first.tag),
                shown(first.digest.as_deref()),
                shown(expected_stable.as_deref()),
            ),
        ));
    }

    // The audit tag is immutable: absent, or already at this candidate (a resumed promotion).
    if let (Some(tag), Some(state)) = (&request.audit_tag, &observed.audit)
        && let Some(existing) = &state.digest
        && existing != &candidate
    {
        return Err(refused(
            RefusalReason::AuditTagConflict,
            format!(
                "audit tag {} already points at {existing}, not at the candidate {candidate}: audit tags are immutable; nothing was written. Use a new audit tag (the run number makes it unique)",
                tag_ref(request, tag)
            ),
        ));
    }

    let at = |state: Option<&TagState>, digest: &str| state.is_some_and(|s| s.digest.as_deref() == Some(digest));
    let mut steps = vec![Step { kind: StepKind::CopyImage, done: observed.image_in_stable }];
    if let (Some(_), Some(state)) = (&akmods, &observed.akmods) {
        steps.push(Step { kind: StepKind::CopyAkmods, done: state.in_stable });
    }
    if request.signing.is_some() {
        steps.push(Step { kind: StepKind::Sign, done: observed.signed == Some(true) });
    }
    if request.audit_tag.is_some() {
        steps.push(Step { kind: StepKind::AuditTag, done: at(observed.audit.as_ref(), &candidate) });
    }
    for (i, tag) in request.tags.iter().enumerate() {
        let state = observed.tags.iter().find(|t| &t.tag == tag);
        steps.push(Step {
            kind: StepKind::StableTag { tag: tag.clone(), guarded: i == 0 },
            done: at(state, &candidate),
        });
    }
    if let (Some(content), Some(state)) = (&akmods, &observed.akmods) {
        steps.push(Step { kind: StepKind::AkmodsTag, done: at(Some(&state.stable_tag), content.digest()) });
    }
    steps.push(Step { kind: StepKind::Confirm, done: false });

    Ok(Plan {
        request: request.clone(),
        image: image.clone(),
        akmods: akmods.cloned(),
        expected_stable,
        previous_stable: first.digest.clone(),
        steps,
    })
}

fn present<'a>(source: &'a Source, missing: RefusalReason, what: &str) -> Result<&'a Content, Error> {
    match source {
        Source::Present(content) => Ok(content),
        Source::Missing { reference } => Err(refused(
            missing,
            match missing {
                RefusalReason::CandidateAkmodsMissing => format!(
                    "candidate akmods {reference} does not exist: the stable akmods tag cannot be aligned, so nothing is promoted (fail closed, R11.4); nothing was written. Promote a run whose akmods image exists, or rebuild the akmods cache with the Main build"
                ),
                _ => format!(
                    "{what} {reference} does not exist: nothing was written. Promote the digest of a run that was pushed and verified"
                ),
            },
        )),
        Source::Incomplete { reference, detail } => Err(refused(
            RefusalReason::CandidateIncomplete,
            format!("{what} {reference} is incomplete: {detail}; nothing was written. Rebuild the run"),
        )),
        Source::Unsupported { reference, detail } => Err(refused(
            RefusalReason::UnsupportedContent,
            format!("{what} {reference} cannot be promoted: {detail}; nothing was written"),
        )),
    }
}

pub(super) fn refused(reason: RefusalReason, message: String) -> Error {
    Error::Refused { reason, message }
}

fn tag_ref(request: &PromotionRequest, tag: &str) -> String {
    format!("{}:{tag}", request.stable.name())
}

pub(super) fn shown(digest: Option<&str>) -> &str {
    digest.unwrap_or("nothing (absent)")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::pipeline::promote::observe::AkmodsObserved;
    use crate::registry::{ImageRef, RawManifest, media_types};
    use crate::test_support::digest;

    fn request(expect: Option<&str>, akmods: bool) -> PromotionRequest {
        PromotionRequest::parse(
            &format!("ghcr.io/o/candidate@{}", digest('c')),
            "ghcr.io/o/stable",
            &["latest".to_string(), "43".to_string()],
            Some("stable-7-abcdef0"),
            akmods.then_some(("ghcr.io/o/akmods-candidate:main-43", "ghcr.io/o/akmods:main-43")),
            expect,
        )
        .unwrap()
    }

    fn content(repo: &str, d: char) -> Content {
        Content {
            source: ImageRef::parse(&format!("ghcr.io/o/{repo}@{}", digest(d))).unwrap(),
            top: RawManifest { digest: digest(d), media_type: media_types::OCI_MANIFEST.into(), bytes: Bytes::new() },
            children: Vec::new(),
            blobs: vec![(digest('1'), 10)],
        }
    }

    fn tag(name: &str, d: Option<char>) -> TagState {
        TagState { tag: name.into(), digest: d.map(digest) }
    }

    /// A first promotion: nothing in the stable repositories.
    fn fresh(akmods: bool) -> Observed {
        Observed {
            image: Source::Present(content("candidate", 'c')),
            image_in_stable: false,
            tags: vec![tag("latest", None), tag("43", None)],
            audit: Some(tag("stable-7-abcdef0", None)),
            akmods: akmods.then(|| AkmodsObserved {
                source: Source::Present(content("akmods-candidate", 'a')),
                in_stable: false,
                stable_tag: tag("main-43", Some('0')),
            }),
            signed: None,
        }
    }

    fn names(plan: &Plan) -> Vec<(String, bool)> {
        plan.steps.iter().map(|s| (s.kind.name(), s.done)).collect()
    }

    fn reason(result: Result<Plan, Error>) -> RefusalReason {
        match result {
            Err(Error::Refused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn first_promotion_plans_every_step_in_order() {
        let plan = plan(&request(Some("absent"), true), &fresh(true)).unwrap();
        let expected: Vec<(String, bool)> =
            ["copy-image", "copy-akmods", "audit-tag", "tag:latest", "tag:43", "akmods-tag", "confirm"]
                .iter()
                .map(|n| (n.to_string(), false))
                .collect();
        assert_eq!(names(&plan), expected);
        assert_eq!(plan.expected_stable, None);
        assert_eq!(plan.akmods_digest(), Some(digest('a').as_str()));
        assert!(plan.steps.iter().any(|s| s.kind == StepKind::StableTag { tag: "latest".into(), guarded: true }));
        assert!(plan.steps.iter().any(|s| s.kind == StepKind::StableTag { tag: "43".into(), guarded: false }));
        assert!(!plan.nothing_to_write());
    }

    #[test]
    fn without_akmods_or_audit_there_are_no_such_steps() {
        let mut request = request(Some("absent"), false);
        request.audit_tag = None;
        let mut observed = fresh(false);
        observed.audit = None;
        let plan = plan(&request, &observed).unwrap();
        let got: Vec<String> = plan.steps.iter().map(|s| s.kind.name()).collect();
        assert_eq!(got, ["copy-image", "tag:latest", "tag:43", "confirm"]);
    }

    #[test]
    fn what_the_registry_already_shows_is_done() {
        let mut observed = fresh(true);
        observed.image_in_stable = true;
        observed.audit = Some(tag("stable-7-abcdef0", Some('c')));
        observed.tags[0] = tag("latest", Some('c'));
        let plan = plan(&request(Some("absent"), true), &observed).unwrap();
        let done: Vec<String> = plan.steps.iter().filter(|s| s.done).map(|s| s.kind.name()).collect();
        assert_eq!(done, ["copy-image", "audit-tag", "tag:latest"]);
        let progress = plan.progress_steps();
        assert_eq!(progress[0].state, StepState::Done);
        assert_eq!(progress[2].digest, Some(digest('c')));
        assert_eq!(progress[4], PromotionStep { name: "tag:43".into(), state: StepState::Pending, digest: None });

        // Everything in place: only the re-read remains (a repeated promotion writes nothing).
        observed.tags[1] = tag("43", Some('c'));
        let akmods = observed.akmods.as_mut().unwrap();
        akmods.in_stable = true;
        akmods.stable_tag = tag("main-43", Some('a'));
        let again = super::plan(&request(Some("absent"), true), &observed).unwrap();
        assert!(again.nothing_to_write());
        assert_eq!(again.pending().map(|s| s.kind.name()).collect::<Vec<_>>(), ["confirm"]);
    }

    #[test]
    fn compare_and_swap_on_the_first_tag() {
        let mut observed = fresh(false);
        observed.audit = Some(tag("stable-7-abcdef0", None));
        // Expected absent, but the tag exists elsewhere.
        observed.tags[0] = tag("latest", Some('9'));
        assert_eq!(reason(plan(&request(Some("absent"), false), &observed)), RefusalReason::StableTagMoved);
        // Expected a digest, found another.
        let expect = digest('8');
        assert_eq!(reason(plan(&request(Some(&expect), false), &observed)), RefusalReason::StableTagMoved);
        // Expected a digest, found the tag absent.
        observed.tags[0] = tag("latest", None);
        assert_eq!(reason(plan(&request(Some(&expect), false), &observed)), RefusalReason::StableTagMoved);
        // At the expected digest, or already at the candidate: go.
        observed.tags[0] = tag("latest", Some('8'));
        let ok = plan(&request(Some(&expect), false), &observed).unwrap();
        assert_eq!(
            (ok.expected_stable.as_deref(), ok.previous_stable.as_deref()),
            (Some(expect.as_str()), Some(expect.as_str()))
        );
        observed.tags[0] = tag("latest", Some('c'));
        assert!(plan(&request(Some(&expect), false), &observed).is_ok());
        // Only the first tag is guarded: the others may point anywhere.
        observed.tags[1] = tag("43", Some('7'));
        assert!(plan(&request(Some(&expect), false), &observed).is_ok());
        // Without an expectation, whatever the tag holds now is the expectation.
        observed.tags[0] = tag("latest", Some('5'));
        assert_eq!(plan(&request(None, false), &observed).unwrap().expected_stable, Some(digest('5')));
    }

    #[test]
    fn refusals_name_the_reason_and_what_to_do() {
        let mut observed = fresh(true);
        observed.audit = Some(tag("stable-7-abcdef0", Some('9')));
        let err = plan(&request(Some("absent"), true), &observed).unwrap_err();
        assert!(matches!(err, Error::Refused { reason: RefusalReason::AuditTagConflict, .. }));
        assert!(err.to_string().contains("audit tags are immutable"), "{err}");

        let mut observed = fresh(true);
        observed.akmods.as_mut().unwrap().source =
            Source::Missing { reference: "ghcr.io/o/akmods-candidate:main-43".into() };
        let err = plan(&request(Some("absent"), true), &observed).unwrap_err();
        assert!(matches!(err, Error::Refused { reason: RefusalReason::CandidateAkmodsMissing, .. }));
        assert!(err.to_string().contains("fail closed"), "{err}");

        let mut observed = fresh(false);
        observed.image = Source::Missing { reference: "ghcr.io/o/candidate@sha256:cc".into() };
        assert_eq!(reason(plan(&request(Some("absent"), false), &observed)), RefusalReason::CandidateMissing);
        observed.image = Source::Incomplete { reference: "x".into(), detail: "blob".into() };
        assert_eq!(reason(plan(&request(Some("absent"), false), &observed)), RefusalReason::CandidateIncomplete);
        observed.image = Source::Unsupported { reference: "x".into(), detail: "nested".into() };
        assert_eq!(reason(plan(&request(Some("absent"), false), &observed)), RefusalReason::UnsupportedContent);
    }

    #[test]
    fn candidate_checks_come_before_the_swap() {
        // Both the candidate akmods are missing and the tag moved: the akmods reason is reported,
        // because it is the one no expectation can fix.
        let mut observed = fresh(true);
        observed.akmods.as_mut().unwrap().source = Source::Missing { reference: "x".into() };
        observed.tags[0] = tag("latest", Some('9'));
        assert_eq!(reason(plan(&request(Some("absent"), true), &observed)), RefusalReason::CandidateAkmodsMissing);
    }
}
