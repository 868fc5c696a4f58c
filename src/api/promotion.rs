//! `Promotion`: a GitOps-managed stable channel that moves stable tags to a verified candidate by
//! digest, with an immutable audit tag and the stable akmods tag aligned, or not at all.

// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated `type_ = "string"`
// arguments as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DIGEST_PATTERN, LocalObjectRef, TAG_PATTERN, conditions_schema};

pub const DEFAULT_AUDIT_TAG_TEMPLATE: &str = "stable-{run}-{rev7}";

/// Desired state of a stable channel.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kinoite-zfs.io",
    version = "v1alpha1",
    kind = "Promotion",
    namespaced,
    status = "PromotionStatus",
    shortname = "promo",
    category = "kinoite-zfs",
    doc = "A stable channel of a Main ZfsImageBuild: moves stable tags to a verified candidate by digest, writes an immutable audit tag and aligns the stable akmods tag, never when a condition is not met.",
    derive = "PartialEq",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Build", type_ = "string", json_path = ".spec.buildRef.name"),
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.policy"),
    printcolumn(name = "Run", type_ = "integer", json_path = ".status.stable.run"),
    printcolumn(
        name = "Digest",
        type_ = "string",
        description = "Short digest of the promoted image",
        json_path = ".status.stable.shortDigest"
    ),
    printcolumn(name = "Audit", type_ = "string", priority = 1, json_path = ".status.stable.auditTag"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.policy == 'Pinned' ? has(self.candidate) : !has(self.candidate)",
        "message": "candidate is required when policy is Pinned and must not be set when policy is Auto"
    }
]))]
pub struct PromotionSpec {
    /// The `ZfsImageBuild` in the same namespace whose verified runs this channel takes. Only
    /// `Main` builds are promotable.
    pub build_ref: LocalObjectRef,

    /// `Auto`: promote every newly verified run of the build. `Pinned`: promote exactly
    /// `candidate` (manual approval; pin an older run to roll back).
    pub policy: PromotionPolicy,

    /// The run or digest to promote with policy `Pinned` (forbidden with `Auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<PinnedCandidate>,

    /// Stable tags moved to the candidate digest in the build's stable image repository.
    #[serde(default = "default_tags")]
    #[schemars(length(min = 1, max = 16), inner(regex(pattern = TAG_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub tags: Vec<String>,

    /// Template of the immutable audit tag written with each promotion. Placeholders: `{run}`
    /// (run number, required) and `{rev7}` (first 7 characters of the source revision).
    #[serde(default = "default_audit_tag_template")]
    #[schemars(length(min = 1, max = 128), regex(pattern = "^[A-Za-z0-9_{][A-Za-z0-9._{}-]*$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.contains('{run}')",
            "message": "auditTagTemplate must contain {run} so every promotion writes its own immutable tag"
        }
    ]))]
    pub audit_tag_template: String,

    /// Move the stable akmods tag (`<akmods>:main-<fedora>`) to the candidate akmods digest
    /// together with the image. Fails closed when the candidate akmods image is missing.
    #[serde(default = "default_true")]
    pub align_akmods: bool,

    /// Compare-and-swap guard: the first stable tag must currently point at this digest, or the
    /// promotion is refused and nothing moves. Without it, the controller expects the digest it
    /// last promoted (or no tag at all on a first promotion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST_PATTERN))]
    pub expected_stable_digest: Option<String>,

    /// Stop starting promotions (a promotion in flight still completes).
    #[serde(default)]
    pub suspend: bool,

    /// Sign the stable digest before any stable tag moves (sigstore `.sig` attachment in the
    /// stable repository, what hosts with a `sigstoreSigned` policy verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningSpec>,
}

/// Image signing with a cosign key pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningSpec {
    /// A Secret in the same namespace with `cosign.key` (cosign's encrypted private key,
    /// `ENCRYPTED SIGSTORE PRIVATE KEY` or `ENCRYPTED COSIGN PRIVATE KEY`) and optionally
    /// `cosign.password` (absent or empty: empty password). The key is read and decrypted before
    /// anything is written; a missing or unreadable key stalls the promotion with nothing moved.
    pub key_secret_ref: LocalObjectRef,
}

/// Secret key holding the cosign private key.
pub const SIGNING_KEY_SECRET_KEY: &str = "cosign.key";
/// Secret key holding the private key's password (optional).
pub const SIGNING_PASSWORD_SECRET_KEY: &str = "cosign.password";

/// Promotion policy. Values: `Auto`, `Pinned` (see `spec.policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PromotionPolicy {
    Auto,
    Pinned,
}

/// The verified run to promote: exactly one of `run` and `digest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.run) != has(self.digest)",
        "message": "set exactly one of candidate.run and candidate.digest"
    }
]))]
pub struct PinnedCandidate {
    /// Run number of the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub run: Option<i64>,
    /// Candidate image digest of a verified run of the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST_PATTERN))]
    pub digest: Option<String>,
}

/// Observed state of a `Promotion`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions `Ready`, `Reconciling`, `Stalled`, and `Promoted`, `Signed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// What the stable channel points at after the last completed promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<StableState>,
    /// A promotion in flight, step by step, so a restarted controller resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<PromotionProgress>,
    /// Completed and refused promotions, newest first (bounded; the audit tag in the registry is
    /// the durable record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<PromotionRecord>,
}

/// The current stable channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StableState {
    /// Run number promoted.
    pub run: i64,
    /// Source revision of that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<String>,
    /// Stable image `name@sha256:...`.
    pub image: String,
    /// Stable image digest.
    pub image_digest: String,
    /// First 12 hex digits of the stable digest (for display).
    pub short_digest: String,
    /// Stable tags pointing at the digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The immutable audit tag written for this promotion.
    pub audit_tag: String,
    /// Stable akmods `name@sha256:...`, when aligned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akmods_image: Option<String>,
    /// Stable akmods digest, when aligned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akmods_digest: Option<String>,
    /// The verified signature of the stable digest, `repository:sha256-<hex>.sig`, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Fingerprint (`sha256:` + 16 hex) of the public key the signature verifies with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_key: Option<String>,
    /// The signed provenance artifact pushed next to the stable digest, `repository@sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// When the promotion completed.
    pub promoted_at: Time,
}

/// A promotion in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionProgress {
    /// Run being promoted.
    pub run: i64,
    /// Source revision of the run.
    pub source_revision: String,
    /// Candidate image `name@sha256:...`.
    pub candidate_image: String,
    /// Candidate digest.
    pub candidate_digest: String,
    /// Candidate akmods `name@sha256:...`, when aligning akmods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_akmods: Option<String>,
    /// Stable akmods `name:tag` to align, when aligning akmods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_akmods: Option<String>,
    /// Stable image repository `host/path` the tags are moved in.
    pub stable_repository: String,
    /// Stable tags being moved; the first is guarded by the compare-and-swap.
    pub tags: Vec<String>,
    /// Audit tag being written.
    pub audit_tag: String,
    /// The digest the first stable tag had to hold before it was moved (`absent` for a first
    /// promotion), fixed when the promotion started.
    pub expected_stable_digest: String,
    /// When the promotion started.
    pub started_at: Time,
    /// Fingerprint of the signing key's public key when the promotion signs; a resumed
    /// promotion signs with that key or not at all (never skips the signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// Steps in execution order: `copy-image`, `copy-akmods`, `sign` (with signing), `audit-tag`, `tag:<tag>` (one per
    /// stable tag), `akmods-tag`, `confirm` (copy-akmods and akmods-tag only when aligning).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<PromotionStep>,
}

/// One step of a promotion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionStep {
    /// Step name: `copy-image`, `copy-akmods`, `sign`, `audit-tag`, `tag:<tag>`, `akmods-tag` or
    /// `confirm`.
    pub name: String,
    /// `Pending`, `Running` (written before the step's registry write) or `Done` (after it).
    pub state: StepState,
    /// Digest the step's tag was confirmed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Step state. Values: `Pending`, `Running`, `Done`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StepState {
    Pending,
    Running,
    Done,
}

/// One entry of the in-cluster promotion audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionRecord {
    /// Run number.
    pub run: i64,
    /// `Promoted` or `Refused`.
    pub result: PromotionResult,
    /// Image digest promoted (or that would have been).
    pub image_digest: String,
    /// Audit tag written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_tag: Option<String>,
    /// Akmods digest aligned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akmods_digest: Option<String>,
    /// The verified signature, `repository:sha256-<hex>.sig`, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// When it happened.
    pub at: Time,
    /// Why it was refused, or a summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome of a promotion. Values: `Promoted`, `Refused`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PromotionResult {
    Promoted,
    Refused,
}

/// Condition types of a `Promotion`, in addition to the kstatus ones.
pub mod promotion_condition_types {
    pub const PROMOTED: &str = "Promoted";
    /// The stable digest carries a verified signature in the stable repository.
    pub const SIGNED: &str = "Signed";
}

fn default_tags() -> Vec<String> {
    vec!["latest".into()]
}
fn default_audit_tag_template() -> String {
    DEFAULT_AUDIT_TAG_TEMPLATE.into()
}
fn default_true() -> bool {
    true
}
