//! Registry work the planner asks for, and its results as plain data.
//!
//! The planner never talks to a registry. It returns [`RegistryWork`] items; the controller does
//! them (with the registry layer, the resolver, the cache decision and the verifier) and records
//! each outcome in [`RegistryResults`], keyed by the exact request, then plans again. A request
//! that changes (other inputs, another run, another tick) is a new key, so a stale result can
//! never be applied to a different question.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::build::{ResolvedInputs, VerificationResult};
pub use crate::pipeline::cache::CacheVerdict;
use crate::pipeline::cache::{CacheInputs, CacheQuery};
use crate::pipeline::verify::VerifyQuery;
use crate::pipeline::{lock, resolve};
use crate::registry::{AnswerClass, ImageRef};

/// One piece of registry work.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegistryWork {
    /// Resolve the inputs (R2, or R14 with a lock). Answer: [`WorkOutcome::Resolved`].
    Resolve(ResolveRequest),
    /// Decide whether the akmods cache image (by tag) covers the kernels (R4). Answer:
    /// [`WorkOutcome::Cache`] with `source_image` by digest.
    CheckCache(CacheRequest),
    /// Confirm the akmods image an akmods Job reported (by digest): the cache decision on that
    /// digest, with coverage from its layers only (never the labels the Job wrote, H11), must
    /// say `Reusable`. Answer: [`WorkOutcome::Cache`] with method `LayerScan`.
    ConfirmAkmods(CacheRequest),
    /// Confirm that the image an image Job reported exists (`image` is `NAME@sha256:...`).
    /// Answer: [`WorkOutcome::Confirmed`].
    ConfirmImage { image: String },
    /// Verify the candidate by digest (R10). Answer: [`WorkOutcome::Verified`].
    Verify(VerifyRequest),
}

impl RegistryWork {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryWork::Resolve(_) => "resolve",
            RegistryWork::CheckCache(_) => "check-cache",
            RegistryWork::ConfirmAkmods(_) => "confirm-akmods",
            RegistryWork::ConfirmImage { .. } => "confirm-image",
            RegistryWork::Verify(_) => "verify",
        }
    }
}

/// Why inputs are resolved; part of the key so each run, tick and refresh request gets its own
/// fresh answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResolvePurpose {
    /// The inputs of run N.
    Run(i64),
    /// The schedule tick at this time (`YYYY-MM-DDTHH:MM:SSZ`).
    Schedule(String),
    /// The `refresh-requested-at` annotation with this value.
    Refresh(String),
}

/// Input resolution, with exactly the parameters of `kinoite-zfs-operator resolve`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResolveRequest {
    pub purpose: ResolvePurpose,
    pub base_image: String,
    pub builder_image: String,
    pub zfs_minor_version: String,
    pub akmods_ref: String,
    /// Replay lock: its JSON text and where it came from (`inline` or `configmap/<name>/<key>`).
    pub lock: Option<LockRequest>,
}

/// A replay lock for the resolver (validated there, R14).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockRequest {
    pub path: String,
    pub json: String,
}

/// A cache decision for `image` (a tag for [`RegistryWork::CheckCache`], a digest reference for
/// [`RegistryWork::ConfirmAkmods`]) and the run's inputs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheRequest {
    pub image: String,
    pub kernel_releases: Vec<String>,
    pub zfs_minor_version: String,
    pub akmods_ref: String,
    pub builder_digest: String,
}

/// Candidate verification by digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VerifyRequest {
    /// `NAME@sha256:...`.
    pub image: String,
    pub kernel_releases: Vec<String>,
    /// The pinned base (`NAME@sha256:...`) so only the layers on top of it are read.
    pub base_image: Option<String>,
}

/// How a registry operation failed. Only "absent" is ever an answer; it is never a failure
/// (design §3 invariant 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Unreachable, 5xx, rate limited: retried with backoff, the run waits (`Reconciling`).
    Transient,
    /// 401/403: never a rebuild; `Stalled` until credentials work (H5).
    Unauthorized,
    /// Anything a retry cannot fix (bad label, invalid lock, no immutable tag): `Stalled`.
    Permanent,
}

impl FailureClass {
    /// The class of a failure whose registry answer had `class` (`None`: not a registry answer,
    /// e.g. bad input or unusable content, which no retry fixes).
    pub fn of(class: Option<AnswerClass>) -> FailureClass {
        match class {
            Some(AnswerClass::RateLimited | AnswerClass::Unreachable) => FailureClass::Transient,
            Some(AnswerClass::Unauthorized) => FailureClass::Unauthorized,
            _ => FailureClass::Permanent,
        }
    }
}

/// A failed registry operation. `message` must not contain credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryFailure {
    pub class: FailureClass,
    pub message: String,
}

impl ResolveRequest {
    /// The resolver's request. The lock is parsed and validated here with the same code as
    /// `resolve --lock FILE` (R14), so a bad lock is a permanent failure with the reference's
    /// message.
    pub fn query(&self) -> Result<resolve::Request, lock::Error> {
        let lock = self.lock.as_ref().map(|l| lock::parse(&l.json, &l.path)).transpose()?;
        Ok(resolve::Request {
            base_image: self.base_image.clone(),
            builder_image: self.builder_image.clone(),
            zfs_minor_version: self.zfs_minor_version.clone(),
            akmods_ref: self.akmods_ref.clone(),
            lock,
        })
    }
}

impl CacheRequest {
    /// The pipeline's query for this request (empty inputs are not compared).
    pub fn query(&self) -> Result<CacheQuery, crate::registry::reference::Error> {
        let given = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Ok(CacheQuery {
            image: ImageRef::parse(&self.image)?,
            kernel_releases: self.kernel_releases.clone(),
            inputs: CacheInputs {
                zfs_minor_version: given(&self.zfs_minor_version),
                akmods_ref: given(&self.akmods_ref),
                builder_digest: given(&self.builder_digest),
            },
        })
    }
}

impl VerifyRequest {
    /// The pipeline's query for this request.
    pub fn query(&self) -> Result<VerifyQuery, crate::registry::reference::Error> {
        Ok(VerifyQuery {
            image: ImageRef::parse(&self.image)?,
            kernel_releases: self.kernel_releases.clone(),
            base_image: self.base_image.as_deref().map(ImageRef::parse).transpose()?,
        })
    }
}

/// The answer to one piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkOutcome {
    Resolved(Box<ResolvedInputs>),
    Cache(CacheVerdict),
    /// Whether the image exists (an "absent" registry answer is `false`).
    Confirmed {
        present: bool,
    },
    Verified(VerificationResult),
    Failed(RegistryFailure),
}

/// An outcome, when it was obtained, and how many transient failures in a row led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryResult {
    pub outcome: WorkOutcome,
    pub at: Timestamp,
    /// 1 for a first answer; +1 for each transient failure that follows a transient failure.
    pub attempts: u32,
}

/// Outcomes of registry work for one build, kept by the controller between plans (in memory:
/// after a restart the work is simply done again; every request is a read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryResults {
    entries: BTreeMap<RegistryWork, RegistryResult>,
}

impl RegistryResults {
    pub fn get(&self, work: &RegistryWork) -> Option<&RegistryResult> {
        self.entries.get(work)
    }

    /// Records the outcome of `work` obtained at `at`.
    pub fn record(&mut self, work: RegistryWork, outcome: WorkOutcome, at: Timestamp) {
        let transient = |o: &WorkOutcome| matches!(o, WorkOutcome::Failed(f) if f.class == FailureClass::Transient);
        let attempts = match self.entries.get(&work) {
            Some(previous) if transient(&previous.outcome) && transient(&outcome) => previous.attempts + 1,
            _ => 1,
        };
        self.entries.insert(work, RegistryResult { outcome, at, attempts });
    }

    /// Drops every result the last plan no longer needs ([`super::plan::Plan::keep_results`]).
    pub fn retain(&mut self, keep: &BTreeSet<RegistryWork>) {
        self.entries.retain(|work, _| keep.contains(work));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Retry timing for failed registry work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First retry after a transient failure; doubles per attempt.
    pub transient_base: Duration,
    /// Longest wait between transient retries.
    pub transient_max: Duration,
    /// Wait before re-checking after an unauthorized or permanent failure (a cheap read, so a
    /// fixed Secret or registry heals without a human, but never a hot loop).
    pub permanent: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            transient_base: Duration::from_secs(10),
            transient_max: Duration::from_secs(300),
            permanent: Duration::from_secs(900),
        }
    }
}

impl RetryPolicy {
    /// How long after a failure of `class` (the `attempts`-th in a row) to try again.
    pub fn delay(&self, class: FailureClass, attempts: u32) -> Duration {
        match class {
            FailureClass::Transient => {
                let factor = 1u32 << attempts.saturating_sub(1).min(16);
                self.transient_base.saturating_mul(factor).min(self.transient_max)
            }
            FailureClass::Unauthorized | FailureClass::Permanent => self.permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work() -> RegistryWork {
        RegistryWork::ConfirmImage { image: "r/x@sha256:1".into() }
    }

    fn failed(class: FailureClass) -> WorkOutcome {
        WorkOutcome::Failed(RegistryFailure { class, message: "x".into() })
    }

    #[test]
    fn consecutive_transient_failures_count_attempts() {
        let mut r = RegistryResults::default();
        let t = Timestamp::UNIX_EPOCH;
        r.record(work(), failed(FailureClass::Transient), t);
        r.record(work(), failed(FailureClass::Transient), t);
        assert_eq!(r.get(&work()).unwrap().attempts, 2);
        r.record(work(), failed(FailureClass::Unauthorized), t);
        assert_eq!(r.get(&work()).unwrap().attempts, 1);
        r.record(work(), WorkOutcome::Confirmed { present: true }, t);
        assert_eq!(r.get(&work()).unwrap().attempts, 1);
        r.retain(&BTreeSet::new());
        assert!(r.is_empty());
    }

    #[test]
    fn lock_requests_are_validated_like_lock_files() {
        let request = |json: &str| ResolveRequest {
            purpose: ResolvePurpose::Run(1),
            base_image: "ghcr.io/a/b:latest".into(),
            builder_image: "ghcr.io/a/builder:latest".into(),
            zfs_minor_version: "2.4".into(),
            akmods_ref: "9d13b6950811cdaae2e8ab748c85c5da35810ae3".into(),
            lock: Some(LockRequest { path: "configmap/locks/inputs.lock.json".into(), json: json.into() }),
        };
        let err = request(r#"{"version": 1}"#).query().unwrap_err();
        assert_eq!(err.to_string(), "Lock file missing required field: base_image");
        let ok = request(r#"{"base_image": "ghcr.io/a/b:43-20260227"}"#).query().unwrap();
        assert_eq!(ok.lock.unwrap().source, "configmap/locks/inputs.lock.json");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(FailureClass::Transient, 1), Duration::from_secs(10));
        assert_eq!(p.delay(FailureClass::Transient, 3), Duration::from_secs(40));
        assert_eq!(p.delay(FailureClass::Transient, 40), Duration::from_secs(300));
        assert_eq!(p.delay(FailureClass::Unauthorized, 1), Duration::from_secs(900));
    }
}
