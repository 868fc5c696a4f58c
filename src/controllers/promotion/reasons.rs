//! CamelCase condition and event reasons of a `Promotion` (docs/runbook.md explains each and
//! what to do). The registry refusals of the promotion steps (`CandidateMissing`,
//! `StableTagMoved`, ...) are the `Stalled` reasons too: `RefusalReason::as_str`.

/// `Ready`/`Promoted` True: the stable channel holds the wanted run.
pub const PROMOTED: &str = "Promoted";
/// `Promoted` False: this Promotion has not completed a promotion yet.
pub const NOT_PROMOTED: &str = "NotPromoted";
/// `Ready` False, `Reconciling` True: a promotion is in flight.
pub const PROMOTING: &str = "Promoting";
/// `Ready` False, `Reconciling` True: `Auto` without a verified run yet, or a pinned run that
/// is still building.
pub const WAITING_FOR_VERIFIED_RUN: &str = "WaitingForVerifiedRun";
/// `Ready` False: `spec.suspend` holds back a promotion.
pub const SUSPENDED: &str = "Suspended";
/// `Ready` False, `Reconciling` True: rate limited or unreachable; retried with backoff.
pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";

// `Stalled` reasons decided without the registry.
/// `spec.buildRef` names no `ZfsImageBuild` in the namespace.
pub const BUILD_NOT_FOUND: &str = "BuildNotFound";
/// The build exists but the operator cannot read it (a field its types do not accept; the
/// build itself says which with `Stalled`/`Unreadable`).
pub const BUILD_UNREADABLE: &str = "BuildUnreadable";
/// The build (or the run) is `Branch` or `Validate`: never promotable (design §3.8).
pub const BUILD_NOT_PROMOTABLE: &str = "BuildNotPromotable";
/// The pinned run or digest is not a run of the build (not in its status nor its run records).
pub const RUN_NOT_FOUND: &str = "RunNotFound";
/// The run failed, was superseded, or did not verify.
pub const RUN_NOT_VERIFIED: &str = "RunNotVerified";
/// The pinned run is known only from a run-record ConfigMap, and the registry does not confirm
/// the record (candidate absent from the candidate repository, verification failed for the
/// record's kernels, akmods absent) or the record points outside the build's repositories.
pub const RUN_RECORD_NOT_VERIFIED: &str = "RunRecordNotVerified";
/// An older Promotion already moves one of the same stable tags.
pub const CONFLICTING_PROMOTION: &str = "ConflictingPromotion";
/// The spec cannot make a valid promotion request (e.g. the audit tag template renders an
/// invalid tag).
pub const INVALID_SPEC: &str = "InvalidSpec";
/// `status.inProgress` cannot be turned back into a request (edited by hand).
pub const INVALID_PROGRESS: &str = "InvalidProgress";
// `Stalled` reasons of signing (nothing was written: the key is read before the first write).
/// `SigningKeyMissing`: `spec.signing.keySecretRef` names a Secret that does not exist or lacks
/// `cosign.key`. `SigningKeyUnreadable`: the key does not decrypt (wrong `cosign.password`) or
/// is not a cosign ECDSA P-256 key.
pub use crate::controllers::signing::{SIGNING_KEY_MISSING, SIGNING_KEY_UNREADABLE};
/// A promotion in flight signs with another key than the Secret holds now.
pub const SIGNING_KEY_CHANGED: &str = "SigningKeyChanged";
/// `Signed` True: the stable digest has a verified signature.
pub const SIGNED: &str = "Signed";
/// `Signed` False: the stable digest was promoted without signing (no `spec.signing`).
pub const UNSIGNED: &str = "Unsigned";
// `Stalled` reasons of the registry that are not refusals.
/// 401/403, or the credentials Secret is missing or unusable.
pub const REGISTRY_UNAUTHORIZED: &str = "RegistryUnauthorized";
/// Any other permanent registry answer (rejected write, invalid content).
pub const REGISTRY_ERROR: &str = "RegistryError";

/// Event reasons (Events are emitted on transitions only).
pub mod events {
    /// Normal: a promotion started (its `inProgress` was written).
    pub const PROMOTION_STARTED: &str = "PromotionStarted";
    /// Normal: a promotion completed; the stable channel moved.
    pub const PROMOTED: &str = "Promoted";
    /// Warning: the Promotion became `Stalled`, or its `Stalled` reason changed.
    pub const PROMOTION_STALLED: &str = "PromotionStalled";
    /// Warning: the registry became unavailable while promoting or before starting.
    pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
}
