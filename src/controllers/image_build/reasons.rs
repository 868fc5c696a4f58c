//! CamelCase condition reasons of a `ZfsImageBuild` (docs/runs.md explains each). The same
//! reason is stored in `status.currentRun.reason` and in history.

// In progress (Ready=False, Reconciling=True).
pub const RESOLVING: &str = "Resolving";
pub const CHECKING_CACHE: &str = "CheckingCache";
pub const BUILDING_AKMODS: &str = "BuildingAkmods";
pub const BUILDING_IMAGE: &str = "BuildingImage";
pub const VERIFYING: &str = "Verifying";
/// A registry was unreachable, rate limited or answered 5xx; retried with backoff.
pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";

// Done.
pub const SUCCEEDED: &str = "Succeeded";
pub const RESOLVED: &str = "Resolved";
pub const CACHE_REUSABLE: &str = "CacheReusable";
pub const AKMODS_BUILT: &str = "AkmodsBuilt";
pub const CANDIDATE_PUSHED: &str = "CandidatePushed";
/// `Validate` mode: built, nothing pushed.
pub const CANDIDATE_BUILT_NOT_PUSHED: &str = "BuiltNotPushed";
pub const VERIFIED: &str = "Verified";
/// `Validate` mode: nothing in a registry to verify.
pub const NOT_PUSHED: &str = "NotPushed";

// Waiting for an earlier step (step conditions Unknown).
pub const WAITING_FOR_INPUTS: &str = "WaitingForInputs";
pub const WAITING_FOR_AKMODS: &str = "WaitingForAkmods";
pub const WAITING_FOR_CANDIDATE: &str = "WaitingForCandidate";
pub const NO_RUN: &str = "NoRun";

// Blocked until something changes (Stalled=True).
pub const INVALID_SPEC: &str = "InvalidSpec";
pub const INVALID_LOCK: &str = "InvalidLock";
pub const REGISTRY_UNAUTHORIZED: &str = "RegistryUnauthorized";
pub const RESOLUTION_FAILED: &str = "ResolutionFailed";
pub const REGISTRY_ERROR: &str = "RegistryError";
pub const SUSPENDED: &str = "Suspended";

// Run failures (terminal; Stalled=True until inputs change or a rebuild is requested).
pub const AKMODS_CACHE_NOT_REUSABLE: &str = "AkmodsCacheNotReusable";
pub const AKMODS_JOB_FAILED: &str = "AkmodsJobFailed";
pub const AKMODS_RESULT_INVALID: &str = "AkmodsResultInvalid";
pub const AKMODS_NOT_CONFIRMED: &str = "AkmodsNotConfirmed";
pub const IMAGE_JOB_FAILED: &str = "ImageJobFailed";
pub const IMAGE_RESULT_INVALID: &str = "ImageResultInvalid";
pub const CANDIDATE_DIGEST_NOT_FOUND: &str = "CandidateDigestNotFound";
pub const VERIFICATION_FAILED: &str = "VerificationFailed";
pub const BUILDER_JOB_LOST: &str = "BuilderJobLost";
pub const RENDER_FAILED: &str = "RenderFailed";
pub const SUPERSEDED: &str = "Superseded";

/// Event reasons (transitions only).
pub mod events {
    pub const RUN_STARTED: &str = "RunStarted";
    pub const RUN_SUCCEEDED: &str = "RunSucceeded";
    pub const RUN_FAILED: &str = "RunFailed";
    pub const RUN_SUPERSEDED: &str = "RunSuperseded";
    pub const JOB_CREATED: &str = "JobCreated";
}

/// The pipeline step a failure reason belongs to, so the step condition shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Inputs,
    Akmods,
    Candidate,
    Verification,
}

/// Step of a terminal failure reason (`None` for reasons that are not step failures).
pub fn step_of(reason: &str) -> Option<Step> {
    match reason {
        RESOLUTION_FAILED | INVALID_LOCK => Some(Step::Inputs),
        AKMODS_CACHE_NOT_REUSABLE | AKMODS_JOB_FAILED | AKMODS_RESULT_INVALID | AKMODS_NOT_CONFIRMED => {
            Some(Step::Akmods)
        }
        IMAGE_JOB_FAILED | IMAGE_RESULT_INVALID | CANDIDATE_DIGEST_NOT_FOUND => Some(Step::Candidate),
        VERIFICATION_FAILED => Some(Step::Verification),
        _ => None,
    }
}
