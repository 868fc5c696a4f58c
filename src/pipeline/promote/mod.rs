//! Promotion steps (issue 7): move stable tags to a verified candidate by digest, with an
//! immutable audit tag and the stable akmods tag aligned, or not at all. Shared by
//! `kinoite-zfs-operator promote` and the Promotion controller.
//!
//! observe → plan → execute, one step at a time:
//! - [`observe`] reads the registry state into [`Observed`] (read-only);
//! - [`plan`] (pure) checks every precondition (candidate exists at the digest, candidate akmods
//!   exist when alignment is asked for, compare-and-swap on the first stable tag, audit tag
//!   absent or already at the candidate) and returns the ordered [`Step`]s, the ones already in
//!   place marked done, or refuses before anything is written;
//! - [`execute_step`] runs one step: it reads the state the step changes first, writes only when
//!   needed, and re-reads what it wrote.
//!
//! A controller persists `status.inProgress` ([`Plan::progress`]) before the first step and
//! after each one, and after a restart rebuilds the request with
//! [`PromotionRequest::from_progress`], observes and plans again (done steps come back done) and
//! continues. [`promote`] runs all steps in one go for the command line.

mod driver;
mod execute;
mod observe;
mod plan;
mod request;
#[cfg(test)]
mod tests;

pub use driver::{
    AkmodsReport, PromotionOutcome, PromotionReport, PromotionRun, SignatureReport, StepReport, TagReport, promote,
};
pub use execute::{BlobCounts, StepOutcome, execute_step};
pub use observe::{AkmodsObserved, Content, Observed, Source, TagState, observe};
pub use plan::{Plan, RefusalReason, Step, StepKind, plan};
pub use request::{ABSENT, AkmodsAlignment, PromotionRequest, StableExpectation};

use crate::registry;

/// Errors of a promotion. Only `Registry` errors can be worth retrying; a refusal needs a change
/// (a new candidate, a corrected expectation) and says which.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is unusable (bad reference, tag, expectation).
    #[error("invalid promotion request: {0}")]
    Request(String),
    /// A signature could not be made or does not verify (the reason is `SignatureNotVerified`
    /// or `SignatureAttachmentInvalid`); no stable tag moved.
    #[error("{step}: {source}")]
    Signing {
        step: String,
        #[source]
        source: Box<crate::signing::Error>,
    },
    /// A precondition does not hold. Raised by the planner before any write; raised by a step
    /// only when another writer changed a tag while the promotion ran.
    #[error("promotion refused ({reason}): {message}")]
    Refused { reason: RefusalReason, message: String },
    /// The registry failed (unreachable, rate limited, unauthorized, ...). Boxed: registry
    /// errors are large and rare.
    #[error("{step}: {source}")]
    Registry {
        step: String,
        #[source]
        source: Box<registry::Error>,
    },
}

impl Error {
    fn registry(step: &str, source: registry::Error) -> Error {
        Error::Registry { step: step.to_string(), source: Box::new(source) }
    }

    /// A signing error: its registry failures stay registry errors (transient ones are retried).
    fn signing(step: &str, source: crate::signing::Error) -> Error {
        match source {
            crate::signing::Error::Registry { source, .. } => Error::Registry { step: step.to_string(), source },
            other => Error::Signing { step: step.to_string(), source: Box::new(other) },
        }
    }

    /// Rate limited or unreachable: retry later (a resumed promotion continues where it stopped).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Registry { source, .. } if source.is_transient())
    }

    /// The refusal reason, for refusals.
    pub fn refusal(&self) -> Option<RefusalReason> {
        match self {
            Error::Refused { reason, .. } => Some(*reason),
            Error::Signing { source, .. } => Some(match **source {
                crate::signing::Error::Attachment { .. } => RefusalReason::SignatureAttachmentInvalid,
                _ => RefusalReason::SignatureNotVerified,
            }),
            _ => None,
        }
    }
}
