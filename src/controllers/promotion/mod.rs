//! The `Promotion` controller: moves a stable channel to verified runs of a Main build with the
//! promotion steps of [`crate::pipeline::promote`], recording every step in status so a
//! restarted controller resumes the promotion in flight.
//!
//! The pure core: which run is wanted and whether it is promotable ([`candidate`]), one writer
//! per stable tag ([`claims`]), the decision, the status after each step and the Events of a
//! transition ([`plan`]), condition and event reasons ([`reasons`]). The step driver
//! ([`drive`]) runs a promotion against any registry client and any status journal. Around it,
//! with Kubernetes I/O: the kube-runtime wiring ([`controller`]: watches, caches, context, error policy) and the
//! reconcile (`reconcile`).
//!
//! A reconcile:
//!
//! 1. observe: read the Promotion from the API server (its `status.inProgress` is the journal
//!    of a promotion in flight; a cache could be behind the last step written), the build and
//!    the other Promotions' claims from the caches, and the build's run records only when a
//!    pinned run is not in the build's status;
//! 2. [`plan::decide`]; a run known only from its record is first re-checked in the registry
//!    ([`trust`]) and decided again with the answers;
//! 3. for a promotion to start or resume: the build's registry client, then the promotion
//!    steps' observe and plan (every precondition before the first write), then each pending
//!    step, with the status written before and after it;
//! 4. write the status when it changed, emit the Events of the transition, requeue.

pub mod candidate;
pub mod claims;
pub mod controller;
pub mod drive;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod reasons;
mod reconcile;
pub mod trust;
