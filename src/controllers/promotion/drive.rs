//! Drives one promotion through the steps of [`crate::pipeline::promote`], persisting progress
//! through a [`Journal`] (the Promotion's status in the cluster) before and after every step,
//! so that a controller that stops at any point resumes from `status.inProgress`.
//!
//! Generic over the registry and the journal: the controller passes its registry client and a
//! status writer; unit tests pass the in-memory registry and a journal that keeps the outcomes.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::promotion::{PromotionProgress, StepState};
use crate::pipeline::promote::{self, PromotionRequest, execute_step, observe};
use crate::registry::{AnswerClass, RegistryClient};
use crate::signing::PrivateKey;

use super::plan::{Outcome, Start, refusal_record, stable_after};
use super::reasons;

/// Where the controller persists each outcome before it goes on.
pub trait Journal: Send {
    type Error;
    /// Persists the status after `outcome`; the next registry write happens only after this
    /// returned `Ok`.
    fn record(&mut self, outcome: &Outcome) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// The time for `startedAt` and `promotedAt`.
    fn now(&self) -> Time;
}

/// How a promotion begins.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// A new promotion (nothing recorded yet).
    New(Box<Start>),
    /// The promotion recorded in `status.inProgress`.
    Resume(Box<PromotionProgress>),
}

/// How a driven promotion ended: the last outcome (not yet recorded) and, for a transient
/// registry failure, the registry's `Retry-After`.
#[derive(Debug, Clone, PartialEq)]
pub struct Driven {
    pub outcome: Outcome,
    pub retry_after: Option<Duration>,
}

impl Driven {
    fn end(outcome: Outcome) -> Driven {
        Driven { outcome, retry_after: None }
    }
}

/// Observes, plans (every precondition before the first write) and executes the pending steps,
/// recording `InFlight` before the first step and before and after each one. Journal errors
/// stop it at once (the status write failed, so nothing more may be written to the registry).
///
/// `signing` is the decrypted key of `spec.signing` (the reconcile read it before anything
/// else). A resumed promotion that recorded a signing key needs that same key.
pub async fn drive<R, J>(
    registry: &R,
    journal: &mut J,
    begin: Begin,
    signing: Option<PrivateKey>,
) -> Result<Driven, J::Error>
where
    R: RegistryClient + ?Sized,
    J: Journal,
{
    let (request, resumed) = match &begin {
        Begin::New(start) => (start.request.clone().with_signing(signing), None),
        Begin::Resume(progress) => match PromotionRequest::from_progress(progress) {
            Ok(request) => {
                let given = signing.as_ref().map(|k| k.public().fingerprint());
                if progress.signing_key.is_some() && given != progress.signing_key {
                    let outcome = Outcome::RegistryFailed {
                        reason: reasons::SIGNING_KEY_CHANGED,
                        message: format!(
                            "the promotion in flight signs with key {} but spec.signing gives {}: it neither skips the signature nor signs with another key; restore the Secret with that key (or delete status.inProgress to plan again)",
                            progress.signing_key.as_deref().unwrap_or_default(),
                            given.as_deref().unwrap_or("no key")
                        ),
                        transient: false,
                        in_progress: Some(progress.clone()),
                    };
                    return Ok(Driven::end(outcome));
                }
                (
                    request.with_signing(signing.filter(|_| progress.signing_key.is_some())),
                    Some(progress.as_ref().clone()),
                )
            }
            Err(e) => {
                return Ok(Driven::end(Outcome::refused(
                    reasons::INVALID_PROGRESS,
                    format!("{e}; the promotion in flight was dropped and is planned again from the spec"),
                )));
            }
        },
    };
    let (run, source_revision) = match &begin {
        Begin::New(start) => (start.candidate.run, start.candidate.source_revision.clone()),
        Begin::Resume(progress) => (progress.run, progress.source_revision.clone()),
    };
    let candidate_digest = request.candidate.digest().unwrap_or_default().to_string();

    let observed = match observe(registry, &request).await {
        Ok(observed) => observed,
        Err(e) => return Ok(failed(e, resumed, run, &candidate_digest, journal.now())),
    };
    let plan = match promote::plan(&request, &observed) {
        Ok(plan) => plan,
        Err(e) => return Ok(failed(e, resumed, run, &candidate_digest, journal.now())),
    };
    let mut progress = match resumed {
        // The recorded parameters stay; the step states are the registry's truth now.
        Some(mut progress) => {
            progress.steps = plan.progress_steps();
            progress
        }
        None => match plan.progress(run, &source_revision, journal.now()) {
            Ok(progress) => progress,
            Err(e) => return Ok(Driven::end(Outcome::refused(reasons::INVALID_SPEC, e.to_string()))),
        },
    };
    journal.record(&in_flight(&progress)).await?;

    for (i, step) in plan.steps.iter().enumerate().filter(|(_, s)| !s.done) {
        progress.steps[i].state = StepState::Running;
        journal.record(&in_flight(&progress)).await?;
        match execute_step(registry, &plan, &step.kind).await {
            Ok(outcome) => {
                progress.steps[i].state = StepState::Done;
                progress.steps[i].digest = outcome.digest.or_else(|| plan.step_digest(&step.kind));
                journal.record(&in_flight(&progress)).await?;
            }
            Err(e) => return Ok(failed(e, Some(progress), run, &candidate_digest, journal.now())),
        }
    }
    Ok(Driven::end(Outcome::Promoted(Box::new(stable_after(&progress, journal.now())))))
}

fn in_flight(progress: &PromotionProgress) -> Outcome {
    Outcome::InFlight(Box::new(progress.clone()))
}

/// The outcome of a promotion error. A refusal ends the promotion (its `inProgress` is
/// dropped: it cannot complete as recorded) and is recorded in history; a registry error keeps
/// the promotion in flight for the next attempt.
fn failed(error: promote::Error, in_progress: Option<PromotionProgress>, run: i64, digest: &str, now: Time) -> Driven {
    match error {
        promote::Error::Refused { reason, message } => Driven::end(Outcome::Refused {
            reason: reason.as_str(),
            record: Some(Box::new(refusal_record(run, digest, reason.as_str(), &message, now))),
            message,
        }),
        promote::Error::Signing { .. } => {
            let reason = error.refusal().map(|r| r.as_str()).unwrap_or(reasons::REGISTRY_ERROR);
            let message = format!("{error}; no stable tag was moved");
            Driven::end(Outcome::Refused {
                reason,
                record: Some(Box::new(refusal_record(run, digest, reason, &message, now))),
                message,
            })
        }
        promote::Error::Request(message) => {
            let reason = if in_progress.is_some() { reasons::INVALID_PROGRESS } else { reasons::INVALID_SPEC };
            Driven::end(Outcome::refused(reason, message))
        }
        promote::Error::Registry { ref source, .. } => {
            let (reason, transient) = match source.class() {
                _ if source.is_transient() => (reasons::REGISTRY_UNAVAILABLE, true),
                Some(AnswerClass::Unauthorized) => (reasons::REGISTRY_UNAUTHORIZED, false),
                _ => (reasons::REGISTRY_ERROR, false),
            };
            let retry_after = source.retry_after();
            Driven {
                outcome: Outcome::RegistryFailed {
                    reason,
                    message: error.to_string(),
                    transient,
                    in_progress: in_progress.map(Box::new),
                },
                retry_after,
            }
        }
    }
}
