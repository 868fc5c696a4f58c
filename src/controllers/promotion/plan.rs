//! The Promotion controller's pure core: what to do ([`decide`]), the status after each step of
//! doing it ([`next_status`]) and the Events of a status transition ([`events`]). No I/O and no
//! clock: the reconcile passes in what it read and `now`.
//!
//! [`decide`], in order:
//! 1. a promotion in flight (`status.inProgress`) is resumed, whatever the spec, the build or
//!    `suspend` say by now (design §3 invariant 6: a newer run never interrupts it);
//! 2. the build must exist, no older Promotion may claim the same stable tags
//!    ([`super::claims`]), and the run the spec wants must be a verified Main run
//!    ([`super::candidate`]); otherwise `Stalled` (or waiting for a run still in progress);
//! 3. when the channel already holds that run with these tags, audit tag and akmods: done;
//! 4. `suspend` holds back a new promotion;
//! 5. a run known only from its run record is re-checked in the registry first
//!    ([`super::trust`]: [`Decision::CheckRecord`], then decided again with the
//!    [`RecordCheck`]); a record the registry does not confirm is refused `RunRecordNotVerified`;
//! 6. otherwise a new promotion starts with a request fixed here: the candidate and its akmods
//!    by digest, the stable repository (`registry.image`), the stable akmods tag
//!    (`<registry.akmods>:main-<fedora>`), the audit tag from `auditTagTemplate`, and the
//!    compare-and-swap expectation (`spec.expectedStableDigest`, else the digest this
//!    Promotion last promoted on the same first tag, else `absent`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::Promotion;
use crate::api::build::ZfsImageBuild;
use crate::api::promotion::{
    PromotionProgress, PromotionRecord, PromotionResult, PromotionSpec, PromotionStatus, StableState, StepState,
    promotion_condition_types::{PROMOTED, SIGNED},
};
use crate::controllers::conditions::{DesiredCondition, FALSE, TRUE, remove_condition, set_condition};
use crate::pipeline::promote::{ABSENT, PromotionRequest};
use crate::pipeline::records::{RecordedRun, short_digest};
use crate::pipeline::targets::{CACHE_TAG_PREFIX, repository_ref};
use crate::registry::ImageRef;

use super::candidate::{Candidate, Selection, select};
use super::claims::Conflict;
use super::reasons::{self, events as event_reasons};
use super::trust::{self, RecordCheck, RecordQuery};

/// History entries kept in `status.history` (newest first). The audit tags in the registry are
/// the durable record; this is the recent trail in the cluster.
pub const HISTORY_LIMIT: usize = 20;

/// kstatus condition types.
const READY: &str = "Ready";
const RECONCILING: &str = "Reconciling";
const STALLED: &str = "Stalled";

/// What the reconcile read, as plain data.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub promotion: &'a Promotion,
    /// `spec.buildRef`, when it exists.
    pub build: Option<&'a ZfsImageBuild>,
    /// The build's run records; `None` when not read (only a pinned run outside the build's
    /// status needs them: [`Decision::NeedRecords`]).
    pub records: Option<&'a [RecordedRun]>,
    /// An older Promotion claiming one of the same targets.
    pub conflict: Option<&'a Conflict>,
    /// The registry's answers about a run known only from its record (`None`: not read yet;
    /// only [`Decision::CheckRecord`] asks for them).
    pub record_check: Option<&'a RecordCheck>,
}

/// What the reconcile does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Continue the promotion in flight, exactly as recorded.
    Resume(Box<PromotionProgress>),
    /// Start a new promotion.
    Start(Box<Start>),
    /// Nothing to write to the registry; this is the outcome.
    Settled(Outcome),
    /// Read the build's run records, then decide again.
    NeedRecords,
    /// Check this recorded run in the registry ([`trust::check`]), then decide again.
    CheckRecord(Box<RecordQuery>),
}

/// A new promotion: the run and the validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub candidate: Candidate,
    pub request: PromotionRequest,
}

/// Where a reconcile (or one step of it) got to; [`next_status`] turns it into the status.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The channel already holds the wanted run.
    UpToDate,
    /// A promotion completed just now.
    Promoted(Box<StableState>),
    /// A promotion is in flight (written before and after each step).
    InFlight(Box<PromotionProgress>),
    /// Nothing verified to promote yet.
    Waiting(String),
    /// `spec.suspend` holds back a new promotion.
    Suspended(String),
    /// The registry could not be used or failed. A promotion in flight stays recorded and is
    /// resumed when the registry answers again.
    RegistryFailed {
        reason: &'static str,
        message: String,
        /// Rate limited or unreachable (retried with backoff) rather than a failure that needs a
        /// change (credentials, a rejected write).
        transient: bool,
        in_progress: Option<Box<PromotionProgress>>,
    },
    /// Not promoted, and not retried until something changes. `record` is the history entry
    /// for a refusal of a concrete candidate by the registry checks.
    Refused { reason: &'static str, message: String, record: Option<Box<PromotionRecord>> },
}

impl Outcome {
    pub fn refused(reason: &'static str, message: impl Into<String>) -> Outcome {
        Outcome::Refused { reason, message: message.into(), record: None }
    }
}

/// Decides what to do (see the module documentation for the order).
pub fn decide(input: &Input) -> Decision {
    let promotion = input.promotion;
    let spec = &promotion.spec;
    let status = promotion.status.clone().unwrap_or_default();
    if let Some(progress) = status.in_progress {
        return Decision::Resume(Box::new(progress));
    }
    let namespace = promotion.metadata.namespace.as_deref().unwrap_or_default();
    let Some(build) = input.build else {
        return Decision::Settled(Outcome::refused(
            reasons::BUILD_NOT_FOUND,
            format!(
                "ZfsImageBuild {namespace}/{} (spec.buildRef) does not exist; create it or fix spec.buildRef.name",
                spec.build_ref.name
            ),
        ));
    };
    if let Some(conflict) = input.conflict {
        return Decision::Settled(Outcome::refused(
            reasons::CONFLICTING_PROMOTION,
            format!(
                "Promotion {}/{} (created earlier) already moves {}: one writer per stable tag; give this Promotion other tags (or alignAkmods: false), or delete one of them",
                conflict.namespace, conflict.name, conflict.target
            ),
        ));
    }
    let (candidate, record) = match select(spec, build, input.records) {
        Selection::Found(candidate) => (candidate, None),
        Selection::Recorded(candidate, record) => (candidate, Some(record)),
        Selection::Waiting(message) => return Decision::Settled(Outcome::Waiting(message)),
        Selection::Refused { reason, message } => return Decision::Settled(Outcome::refused(reason, message)),
        Selection::NeedRecords => return Decision::NeedRecords,
    };
    let request = match request_for(spec, build, &candidate, status.stable.as_ref()) {
        Ok(request) => request,
        Err(outcome) => return Decision::Settled(outcome),
    };
    if status.stable.as_ref().is_some_and(|stable| holds(stable, &request, &candidate)) {
        return Decision::Settled(Outcome::UpToDate);
    }
    if spec.suspend {
        return Decision::Settled(Outcome::Suspended(format!(
            "suspended: run {} ({}) waits to be promoted; set spec.suspend to false to promote it",
            candidate.run,
            short_digest(&candidate.digest)
        )));
    }
    if let Some(record) = record {
        let query = match trust::query(build, &record) {
            Ok(query) => query,
            Err(message) => return Decision::Settled(Outcome::refused(reasons::RUN_RECORD_NOT_VERIFIED, message)),
        };
        // Only an answer to this very question counts.
        let Some(check) = input.record_check.filter(|c| c.query == query) else {
            return Decision::CheckRecord(Box::new(query));
        };
        match &check.result {
            Err(failure) => {
                return Decision::Settled(Outcome::RegistryFailed {
                    reason: failure.reason,
                    message: format!("cannot re-verify run {} from its run record: {}", query.run, failure.message),
                    transient: failure.transient,
                    in_progress: None,
                });
            }
            Ok(findings) => {
                if let Err(message) = trust::judge(&query, findings) {
                    return Decision::Settled(Outcome::refused(reasons::RUN_RECORD_NOT_VERIFIED, message));
                }
            }
        }
    }
    Decision::Start(Box::new(Start { candidate, request }))
}

/// `auditTagTemplate` with `{run}` and `{rev7}` (the first 7 characters of the source revision).
pub fn audit_tag(template: &str, run: i64, source_revision: &str) -> String {
    let rev7: String = source_revision.chars().take(7).collect();
    template.replace("{run}", &run.to_string()).replace("{rev7}", &rev7)
}

/// The request of a new promotion of `candidate`, or the refusal that prevents one.
fn request_for(
    spec: &PromotionSpec,
    build: &ZfsImageBuild,
    candidate: &Candidate,
    stable: Option<&StableState>,
) -> Result<PromotionRequest, Outcome> {
    let repository = repository_ref(&build.spec, &build.spec.registry.image);
    let audit = audit_tag(&spec.audit_tag_template, candidate.run, &candidate.source_revision);
    let akmods = if spec.align_akmods {
        match (&candidate.akmods_image, &candidate.fedora_version) {
            (Some(image), Some(fedora)) => Some((
                image.clone(),
                format!("{}:{CACHE_TAG_PREFIX}-{fedora}", repository_ref(&build.spec, &build.spec.registry.akmods)),
            )),
            _ => {
                return Err(Outcome::refused(
                    crate::pipeline::promote::RefusalReason::CandidateAkmodsMissing.as_str(),
                    format!(
                        "run {} records no akmods image (or no Fedora version), so the stable akmods tag cannot be aligned and nothing is promoted (fail closed, R11.4); promote a run with akmods, or set alignAkmods: false if this channel must not move the akmods tag",
                        candidate.run
                    ),
                ));
            }
        }
    } else {
        None
    };
    let first = spec.tags.first().map(String::as_str).unwrap_or_default();
    let expect = match &spec.expected_stable_digest {
        Some(digest) => digest.clone(),
        None => match stable {
            // What this Promotion put there, if it still manages that tag in that repository.
            Some(s) if repository_of(&s.image) == repository && s.tags.iter().any(|t| t == first) => {
                s.image_digest.clone()
            }
            _ => ABSENT.to_string(),
        },
    };
    PromotionRequest::parse(
        &candidate.image,
        &repository,
        &spec.tags,
        Some(&audit),
        akmods.as_ref().map(|(c, s)| (c.as_str(), s.as_str())),
        Some(&expect),
    )
    .map_err(|e| Outcome::refused(reasons::INVALID_SPEC, format!("run {}: {e}", candidate.run)))
}

/// `host/path` of `host/path@sha256:...`.
fn repository_of(image: &str) -> &str {
    image.split_once('@').map_or(image, |(name, _)| name)
}

/// Whether the channel as last promoted already is what `request` would make it.
fn holds(stable: &StableState, request: &PromotionRequest, candidate: &Candidate) -> bool {
    let akmods_in_place = match &request.akmods {
        None => true,
        Some(alignment) => alignment.candidate.digest().is_some_and(|digest| {
            stable.akmods_digest.as_deref() == Some(digest)
                && stable.akmods_image.as_deref() == Some(format!("{}@{digest}", alignment.stable.name()).as_str())
        }),
    };
    stable.run == candidate.run
        && stable.image_digest == candidate.digest
        && stable.image == format!("{}@{}", request.stable.name(), candidate.digest)
        && stable.tags == request.tags
        && Some(&stable.audit_tag) == request.audit_tag.as_ref()
        && akmods_in_place
}

/// The stable channel after `progress` completed.
pub fn stable_after(progress: &PromotionProgress, now: Time) -> StableState {
    let akmods_digest = progress
        .candidate_akmods
        .as_deref()
        .and_then(|c| ImageRef::parse(c).ok())
        .and_then(|r| r.digest().map(str::to_string));
    let akmods_image = match (&progress.stable_akmods, &akmods_digest) {
        (Some(stable), Some(digest)) => ImageRef::parse(stable).ok().map(|r| format!("{}@{digest}", r.name())),
        _ => None,
    };
    StableState {
        run: progress.run,
        source_revision: Some(progress.source_revision.clone()),
        image: format!("{}@{}", progress.stable_repository, progress.candidate_digest),
        image_digest: progress.candidate_digest.clone(),
        short_digest: short_digest(&progress.candidate_digest),
        tags: progress.tags.clone(),
        audit_tag: progress.audit_tag.clone(),
        akmods_image,
        akmods_digest,
        signature: progress.signing_key.as_ref().and_then(|_| {
            crate::signing::signature_tag(&progress.candidate_digest)
                .ok()
                .map(|tag| format!("{}:{tag}", progress.stable_repository))
        }),
        signature_key: progress.signing_key.clone(),
        provenance: None,
        promoted_at: now,
    }
}

/// The history entry of a refusal by the registry checks of a promotion of `progress`-like
/// parameters (run and candidate digest known).
pub fn refusal_record(run: i64, digest: &str, reason: &str, message: &str, now: Time) -> PromotionRecord {
    PromotionRecord {
        run,
        result: PromotionResult::Refused,
        image_digest: digest.to_string(),
        audit_tag: None,
        akmods_digest: None,
        signature: None,
        at: now,
        message: Some(format!("{reason}: {message}")),
    }
}

/// The whole status after `outcome` (conditions with `observedGeneration`, the stable channel,
/// the promotion in flight, the bounded history).
pub fn next_status(prev: &PromotionStatus, generation: Option<i64>, outcome: &Outcome, now: &Time) -> PromotionStatus {
    let mut status = prev.clone();
    status.observed_generation = generation;
    match outcome {
        Outcome::UpToDate | Outcome::Waiting(_) | Outcome::Suspended(_) => {}
        Outcome::Promoted(stable) => {
            status.in_progress = None;
            status.stable = Some((**stable).clone());
            push_history(
                &mut status.history,
                PromotionRecord {
                    run: stable.run,
                    result: PromotionResult::Promoted,
                    image_digest: stable.image_digest.clone(),
                    audit_tag: Some(stable.audit_tag.clone()),
                    akmods_digest: stable.akmods_digest.clone(),
                    signature: stable.signature.clone(),
                    at: stable.promoted_at.clone(),
                    message: Some(describe(stable)),
                },
            );
        }
        Outcome::InFlight(progress) => status.in_progress = Some((**progress).clone()),
        Outcome::RegistryFailed { in_progress, .. } => status.in_progress = in_progress.as_deref().cloned(),
        Outcome::Refused { record, .. } => {
            status.in_progress = None;
            if let Some(record) = record {
                let repeated = status.history.first().is_some_and(|last| {
                    (last.run, last.result, &last.image_digest, &last.message)
                        == (record.run, record.result, &record.image_digest, &record.message)
                });
                if !repeated {
                    push_history(&mut status.history, (**record).clone());
                }
            }
        }
    }

    let conditions = &mut status.conditions;
    let set = |conditions: &mut Vec<_>, type_: &str, value: &'static str, reason: &str, message: &str| {
        set_condition(conditions, DesiredCondition::new(type_, value, reason, message), generation, now)
    };
    match outcome {
        Outcome::UpToDate | Outcome::Promoted(_) => {
            let message = status.stable.as_ref().map(describe).unwrap_or_default();
            set(conditions, READY, TRUE, reasons::PROMOTED, &message);
            remove_condition(conditions, RECONCILING);
            remove_condition(conditions, STALLED);
        }
        // A retry after an outage stays `RegistryUnavailable` until a step completes, so the
        // conditions (and Events) do not flap with every attempt.
        Outcome::InFlight(progress) if retrying(prev, progress) => remove_condition(conditions, STALLED),
        Outcome::InFlight(progress) => {
            let message = in_flight(progress);
            set(conditions, READY, FALSE, reasons::PROMOTING, &message);
            set(conditions, RECONCILING, TRUE, reasons::PROMOTING, &message);
            remove_condition(conditions, STALLED);
        }
        Outcome::Waiting(message) => {
            set(conditions, READY, FALSE, reasons::WAITING_FOR_VERIFIED_RUN, message);
            set(conditions, RECONCILING, TRUE, reasons::WAITING_FOR_VERIFIED_RUN, message);
            remove_condition(conditions, STALLED);
        }
        Outcome::Suspended(message) => {
            set(conditions, READY, FALSE, reasons::SUSPENDED, message);
            remove_condition(conditions, RECONCILING);
            remove_condition(conditions, STALLED);
        }
        Outcome::RegistryFailed { reason, message, transient: true, .. } => {
            set(conditions, READY, FALSE, reason, message);
            set(conditions, RECONCILING, TRUE, reason, message);
            remove_condition(conditions, STALLED);
        }
        Outcome::RegistryFailed { reason, message, transient: false, .. }
        | Outcome::Refused { reason, message, .. } => {
            set(conditions, READY, FALSE, reason, message);
            set(conditions, STALLED, TRUE, reason, message);
            remove_condition(conditions, RECONCILING);
        }
    }
    match &status.stable {
        Some(stable) => set(conditions, PROMOTED, TRUE, reasons::PROMOTED, &describe(stable)),
        None => {
            set(conditions, PROMOTED, FALSE, reasons::NOT_PROMOTED, "no promotion of this Promotion has completed yet")
        }
    }
    match &status.stable {
        Some(StableState { signature: Some(signature), signature_key, .. }) => {
            let key = signature_key.as_deref().unwrap_or_default();
            let message = format!("the stable digest is signed: {signature} verifies with key {key}");
            set(conditions, SIGNED, TRUE, reasons::SIGNED, &message)
        }
        Some(stable) => set(
            conditions,
            SIGNED,
            FALSE,
            reasons::UNSIGNED,
            &format!(
                "promoted but unsigned: {} has no signature from this Promotion (set spec.signing.keySecretRef so hosts with a sigstoreSigned policy accept it)",
                stable.image
            ),
        ),
        None => {
            set(conditions, SIGNED, FALSE, reasons::NOT_PROMOTED, "no promotion of this Promotion has completed yet")
        }
    }
    status
}

fn done_steps(progress: &PromotionProgress) -> usize {
    progress.steps.iter().filter(|s| s.state == StepState::Done).count()
}

/// Whether `progress` is a retry after a transient registry failure that has not completed a
/// step yet.
fn retrying(prev: &PromotionStatus, progress: &PromotionProgress) -> bool {
    let unavailable = crate::controllers::conditions::find(&prev.conditions, RECONCILING)
        .is_some_and(|c| c.reason == reasons::REGISTRY_UNAVAILABLE);
    let done_before = prev.in_progress.as_ref().map(done_steps).unwrap_or_default();
    unavailable && done_steps(progress) <= done_before
}

fn push_history(history: &mut Vec<PromotionRecord>, record: PromotionRecord) {
    history.insert(0, record);
    history.truncate(HISTORY_LIMIT);
}

/// "run 7 (0123456789ab) on host/o/kinoite-zfs:latest,43 (audit tag stable-7-02701fe), akmods ...".
fn describe(stable: &StableState) -> String {
    let repository = repository_of(&stable.image);
    let akmods = match &stable.akmods_image {
        Some(akmods) => format!(", akmods {akmods}"),
        None => String::new(),
    };
    format!(
        "run {} ({}) is on {repository}:{} (audit tag {}){akmods}",
        stable.run,
        stable.short_digest,
        stable.tags.join(","),
        stable.audit_tag
    )
}

fn in_flight(progress: &PromotionProgress) -> String {
    let total = progress.steps.len();
    let done = done_steps(progress);
    let next = progress.steps.iter().find(|s| s.state != StepState::Done).map(|s| s.name.as_str()).unwrap_or("none");
    format!(
        "promoting run {} ({}) to {}: {done} of {total} steps done, next {next}",
        progress.run,
        short_digest(&progress.candidate_digest),
        progress.stable_repository
    )
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The Events of the transition `prev` → `next` (none when nothing that matters changed, so a
/// repeated reconcile emits nothing).
pub fn events(prev: &PromotionStatus, next: &PromotionStatus) -> Vec<PlannedEvent> {
    let mut out = Vec::new();
    if let Some(progress) = &next.in_progress {
        let same = prev.in_progress.as_ref().is_some_and(|p| {
            (p.run, &p.candidate_digest, &p.started_at)
                == (progress.run, &progress.candidate_digest, &progress.started_at)
        });
        if !same {
            out.push(PlannedEvent {
                warning: false,
                reason: event_reasons::PROMOTION_STARTED,
                note: format!(
                    "promoting run {} ({}) to {}:{} (expected stable digest {})",
                    progress.run,
                    progress.candidate_digest,
                    progress.stable_repository,
                    progress.tags.join(","),
                    progress.expected_stable_digest
                ),
            });
        }
    }
    if let Some(stable) = &next.stable
        && prev.stable.as_ref() != Some(stable)
    {
        out.push(PlannedEvent { warning: false, reason: event_reasons::PROMOTED, note: describe(stable) });
    }
    let stalled = |s: &PromotionStatus| {
        crate::controllers::conditions::find(&s.conditions, STALLED).map(|c| (c.reason.clone(), c.message.clone()))
    };
    if let Some((reason, message)) = stalled(next)
        && stalled(prev).as_ref() != Some(&(reason.clone(), message.clone()))
    {
        out.push(PlannedEvent {
            warning: true,
            reason: event_reasons::PROMOTION_STALLED,
            note: format!("{reason}: {message}"),
        });
    }
    let reconciling = |s: &PromotionStatus| {
        crate::controllers::conditions::find(&s.conditions, RECONCILING).map(|c| c.reason.clone())
    };
    if reconciling(next).as_deref() == Some(reasons::REGISTRY_UNAVAILABLE)
        && reconciling(prev).as_deref() != Some(reasons::REGISTRY_UNAVAILABLE)
    {
        let message = crate::controllers::conditions::find(&next.conditions, RECONCILING)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        out.push(PlannedEvent { warning: true, reason: event_reasons::REGISTRY_UNAVAILABLE, note: message });
    }
    out
}
