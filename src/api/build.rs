//! `ZfsImageBuild`: a long-lived image stream that follows a Kinoite base image and produces
//! verified candidate images with ZFS for exactly the kernels inside it.

// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated `type_ = "string"`
// arguments as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    COMMIT_PATTERN, CRON_PATTERN, DIGEST_PATTERN, IMAGE_REF_PATTERN, LocalObjectRef, OBJECT_NAME_PATTERN,
    REGISTRY_HOST_PATTERN, REPOSITORY_PATTERN, ZFS_MINOR_PATTERN, conditions_schema,
};
use super::lock::InputLock;

/// Annotation requesting a forced akmods rebuild and a new run; acknowledged in
/// `status.lastHandledRebuildAt`. Any new value (conventionally a timestamp) triggers once.
pub const REBUILD_REQUESTED_ANNOTATION: &str = "kinoite-zfs.io/rebuild-requested-at";
/// Annotation requesting an immediate re-resolution of the inputs; acknowledged in
/// `status.lastHandledRefreshAt`.
pub const REFRESH_REQUESTED_ANNOTATION: &str = "kinoite-zfs.io/refresh-requested-at";

pub const DEFAULT_BASE_IMAGE: &str = "ghcr.io/ublue-os/kinoite-main:latest";
pub const DEFAULT_BUILDER_IMAGE: &str = "ghcr.io/ublue-os/devcontainer:latest";
pub const DEFAULT_ZFS_MINOR_VERSION: &str = "2.4";
pub const DEFAULT_AKMODS_REPOSITORY: &str = "https://github.com/Danathar/akmods.git";
pub const DEFAULT_AKMODS_REVISION: &str = "9d13b6950811cdaae2e8ab748c85c5da35810ae3";

/// Desired state of a ZFS-enabled Kinoite image stream.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kinoite-zfs.io",
    version = "v1alpha1",
    kind = "ZfsImageBuild",
    namespaced,
    status = "ZfsImageBuildStatus",
    shortname = "zib",
    category = "kinoite-zfs",
    doc = "A ZFS-enabled Fedora Kinoite image stream: follows a base image, resolves it to immutable inputs, makes sure ZFS kernel modules exist for exactly its kernels, builds and verifies candidate images.",
    derive = "PartialEq",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Kernel", type_ = "string", json_path = ".status.currentRun.inputs.kernelRelease"),
    printcolumn(name = "Run", type_ = "integer", json_path = ".status.currentRun.number"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.currentRun.phase"),
    printcolumn(
        name = "Digest",
        type_ = "string",
        description = "Short digest of the last verified candidate",
        json_path = ".status.lastSucceededRun.shortDigest"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.mode == 'Branch' ? (has(self.branch) && size(self.branch) > 0) : !has(self.branch)",
        "message": "branch is required when mode is Branch and must not be set for other modes"
    },
    {
        "rule": "!has(self.inputLock) || self.mode == 'Main'",
        "message": "inputLock (replay) is only allowed in Main mode"
    }
]))]
pub struct ZfsImageBuildSpec {
    /// What a run may publish. `Main`: builds and publishes candidates and the candidate akmods
    /// cache, and its verified runs are promotable. `Branch`: publishes only `br-<branch>-<fedora>`
    /// tags and a branch akmods alias, never rebuilds the shared akmods cache, not promotable.
    /// `Validate`: builds without pushing anything (pull-request style), not promotable.
    #[serde(default)]
    pub mode: BuildMode,

    /// Branch name for `Branch` mode (required there, forbidden otherwise). It is made tag-safe
    /// (`br-<safe-branch>`) for the tags this build writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: Option<String>,

    /// Kinoite base image to follow, fully qualified (`host/path:tag` or `host/path@sha256:...`).
    /// A tag is resolved to its digest at the start of every run.
    #[serde(default = "default_base_image")]
    #[schemars(regex(pattern = IMAGE_REF_PATTERN))]
    pub base_image: String,

    /// Builder image for the builder Jobs (must contain the build toolchain). Resolved to a
    /// digest at the start of every run; Jobs always run it by digest.
    #[serde(default = "default_builder_image")]
    #[schemars(regex(pattern = IMAGE_REF_PATTERN))]
    pub builder_image: String,

    /// ZFS release selection.
    #[serde(default)]
    pub zfs: ZfsSpec,

    /// Source of the akmods build tooling (a fork of ublue-os/akmods), pinned to a commit.
    #[serde(default)]
    pub akmods: AkmodsSpec,

    /// Where the OS image build context comes from and how it is built.
    pub source: SourceSpec,

    /// Which kernels of the base image need ZFS modules. `All`: every kernel directory under
    /// `/lib/modules` (Fedora keeps several installonly kernels). `Newest`: only the newest one.
    #[serde(default)]
    pub kernels: KernelPolicy,

    /// Output registry, credentials and repository names.
    pub registry: RegistrySpec,

    /// Pinned inputs in the reference lock format (replay mode): when set, runs use exactly these
    /// inputs instead of resolving floating references. Main mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_lock: Option<InputLockSource>,

    /// Cron expression (5 fields, UTC) at which inputs are re-resolved, e.g. `0 6 * * *` to track
    /// the nightly kernel. A tick starts a run only when the inputs changed (or when
    /// `rebuildAkmodsOnSchedule` is set). Unset: resolve only on creation, spec change or request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub schedule: Option<String>,

    /// Rebuild the akmods cache at every schedule tick even when the cache covers the kernels
    /// (the reference pipeline's nightly behavior). Default false: rebuild only when the cache
    /// does not provably cover the run's inputs.
    #[serde(default)]
    pub rebuild_akmods_on_schedule: bool,

    /// Settings shared by the builder Jobs.
    #[serde(default)]
    pub builder: BuilderSpec,

    /// Number of finished runs kept in `status.history` and as run-record ConfigMaps. Records a
    /// Promotion currently points at are kept beyond this limit.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: i32,

    /// Stop starting new runs (a run in progress finishes). Schedules are not evaluated while
    /// suspended.
    #[serde(default)]
    pub suspend: bool,
}

/// Publishing mode of a build. Values: `Main`, `Branch`, `Validate` (see `spec.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BuildMode {
    #[default]
    Main,
    Branch,
    Validate,
}

/// Kernel selection policy. Values: `All`, `Newest` (see `spec.kernels`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum KernelPolicy {
    #[default]
    All,
    Newest,
}

/// ZFS release selection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZfsSpec {
    /// OpenZFS minor release line to build (e.g. `2.4`); the akmods tooling picks the newest
    /// patch release of that line.
    #[serde(default = "default_zfs_minor")]
    #[schemars(regex(pattern = ZFS_MINOR_PATTERN))]
    pub minor_version: String,
}

impl Default for ZfsSpec {
    fn default() -> Self {
        Self { minor_version: default_zfs_minor() }
    }
}

/// The akmods build tooling source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AkmodsSpec {
    /// Git URL of the akmods tooling.
    #[serde(default = "default_akmods_repository")]
    #[schemars(regex(pattern = GIT_URL_PATTERN))]
    pub repository: String,
    /// Full 40-hex commit of the akmods tooling; the builder verifies the checkout equals it.
    #[serde(default = "default_akmods_revision")]
    #[schemars(regex(pattern = COMMIT_PATTERN))]
    pub revision: String,
}

impl Default for AkmodsSpec {
    fn default() -> Self {
        Self { repository: default_akmods_repository(), revision: default_akmods_revision() }
    }
}

/// A git URL: `https://`, `http://`, `ssh://`, `git://`, `file://` or scp-like `user@host:path`.
pub const GIT_URL_PATTERN: &str = "^((https?|ssh|git|file)://[^\\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\\s]+)$";

/// The OS image build context and strategy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.strategy == 'BlueBuild' ? !has(self.containerfile) : !has(self.blueBuild)",
        "message": "set blueBuild only with strategy BlueBuild and containerfile only with strategy Containerfile"
    }
]))]
pub struct SourceSpec {
    /// Git repository and commit of the build context.
    pub git: GitSource,
    /// How the image is built. `BlueBuild`: a BlueBuild recipe whose `name:`, `base-image:` and
    /// `image-version:` lines and the akmods Containerfile's `ENV AKMODS_IMAGE_TEMPLATE=` line are
    /// rewritten per run. `Containerfile`: a plain Containerfile built with the build args
    /// `BASE_IMAGE` and `AKMODS_IMAGE`, both digest-pinned.
    #[serde(default)]
    pub strategy: BuildStrategy,
    /// Paths for the `BlueBuild` strategy (defaults apply when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_build: Option<BlueBuildSource>,
    /// Paths for the `Containerfile` strategy (defaults apply when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerfile: Option<ContainerfileSource>,
}

/// A git repository at an exact commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// Git URL of the build context repository.
    #[schemars(regex(pattern = GIT_URL_PATTERN))]
    pub url: String,
    /// Full 40-hex commit to build. Changing it starts a new run; its first 7 characters appear
    /// in audit tags.
    #[schemars(regex(pattern = COMMIT_PATTERN))]
    pub revision: String,
}

/// Image build strategy. Values: `BlueBuild`, `Containerfile` (see `spec.source.strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BuildStrategy {
    #[default]
    BlueBuild,
    Containerfile,
}

/// Paths of a BlueBuild build context, relative to the repository root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueBuildSource {
    /// The BlueBuild recipe.
    #[serde(default = "default_recipe_path")]
    #[schemars(regex(pattern = RELATIVE_PATH_PATTERN))]
    pub recipe_path: String,
    /// The Containerfile snippet that installs ZFS and carries `ENV AKMODS_IMAGE_TEMPLATE=`.
    #[serde(default = "default_akmods_containerfile")]
    #[schemars(regex(pattern = RELATIVE_PATH_PATTERN))]
    pub akmods_containerfile_path: String,
}

impl Default for BlueBuildSource {
    fn default() -> Self {
        Self { recipe_path: default_recipe_path(), akmods_containerfile_path: default_akmods_containerfile() }
    }
}

/// Paths of a Containerfile build context, relative to the repository root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerfileSource {
    /// The Containerfile.
    #[serde(default = "default_containerfile_path")]
    #[schemars(regex(pattern = RELATIVE_PATH_PATTERN))]
    pub path: String,
    /// The build context directory.
    #[serde(default = "default_context_dir")]
    #[schemars(regex(pattern = RELATIVE_PATH_PATTERN))]
    pub context_dir: String,
}

impl Default for ContainerfileSource {
    fn default() -> Self {
        Self { path: default_containerfile_path(), context_dir: default_context_dir() }
    }
}

/// A repository-relative path without `..` components.
pub const RELATIVE_PATH_PATTERN: &str = "^(\\.|[A-Za-z0-9_.][A-Za-z0-9_.-]*(/[A-Za-z0-9_.][A-Za-z0-9_.-]*)*)$";

/// Output registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.candidateImage != self.image",
        "message": "candidateImage must differ from image: builds write candidates, only a Promotion writes the stable repository"
    },
    {
        "rule": "self.candidateAkmods != self.akmods",
        "message": "candidateAkmods must differ from akmods: rebuilt caches go to the candidate repository, only a Promotion moves the stable akmods tag"
    }
]))]
pub struct RegistrySpec {
    /// Registry host (and port) of all outputs, e.g. `ghcr.io`.
    #[schemars(regex(pattern = REGISTRY_HOST_PATTERN))]
    pub host: String,
    /// Namespace below the host (the `<org>`), e.g. `danathar`.
    #[schemars(regex(pattern = REPOSITORY_PATTERN))]
    pub namespace: String,
    /// A `kubernetes.io/dockerconfigjson` Secret in the build's namespace with pull and push
    /// credentials. Read by the operator for registry checks and mounted only into Jobs that push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectRef>,
    /// Stable OS image repository (written only by a Promotion; Branch builds write
    /// `br-<branch>-<fedora>` tags here).
    #[serde(default = "default_image_repo")]
    #[schemars(regex(pattern = REPOSITORY_PATTERN))]
    pub image: String,
    /// Candidate OS image repository (Main builds push run-unique candidate tags here).
    #[serde(default = "default_candidate_image_repo")]
    #[schemars(regex(pattern = REPOSITORY_PATTERN))]
    pub candidate_image: String,
    /// Stable akmods cache repository (its `main-<fedora>` tag moves only through a Promotion).
    #[serde(default = "default_akmods_repo")]
    #[schemars(regex(pattern = REPOSITORY_PATTERN))]
    pub akmods: String,
    /// Candidate akmods cache repository (rebuilt caches and branch aliases are pushed here).
    #[serde(default = "default_candidate_akmods_repo")]
    #[schemars(regex(pattern = REPOSITORY_PATTERN))]
    pub candidate_akmods: String,
}

/// Where the replay lock comes from: exactly one of `inline` or `configMapRef`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.inline) != has(self.configMapRef)",
        "message": "set exactly one of inputLock.inline and inputLock.configMapRef"
    }
]))]
pub struct InputLockSource {
    /// The lock itself, in the reference lock format (snake_case keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InputLock>,
    /// A ConfigMap in the build's namespace holding the lock file as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
}

/// A key of a ConfigMap in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// ConfigMap name.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
    /// Key holding the lock JSON.
    #[serde(default = "default_lock_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Settings shared by the builder Jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuilderSpec {
    /// Service account the builder pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = OBJECT_NAME_PATTERN))]
    pub service_account_name: Option<String>,
    /// Node selector for builder pods (e.g. a dedicated build node pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations for builder pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Compute resources of the builder container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Size of the scratch volume for container storage and build roots; also requested as
    /// ephemeral storage. Builds of Kinoite images need at least 20Gi.
    #[serde(default = "default_ephemeral_storage")]
    pub ephemeral_storage: Quantity,
    /// Run the builder container privileged (nested podman/buildah needs it). Run builder Jobs in
    /// a namespace whose Pod Security admission allows it.
    #[serde(default = "default_true")]
    pub privileged: bool,
    /// Deadline of each builder Job in seconds (at most a week).
    #[serde(default = "default_active_deadline")]
    #[schemars(range(min = 60, max = 604800))]
    pub active_deadline_seconds: i64,
    /// Retries of a failed builder pod. Default: 1 for Jobs that push, 0 in `Validate` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 6))]
    pub backoff_limit: Option<i32>,
    /// Seconds a finished builder Job is kept before Kubernetes deletes it. At least an hour: the
    /// operator reads the builder's result from the finished Job's pod, and an operator outage
    /// (upgrade, node drain) shorter than this never loses a result.
    #[serde(default = "default_ttl_after_finished")]
    #[schemars(range(min = 3600, max = 2147483647))]
    pub ttl_seconds_after_finished: i32,
}

impl Default for BuilderSpec {
    fn default() -> Self {
        Self {
            service_account_name: None,
            node_selector: None,
            tolerations: None,
            resources: None,
            ephemeral_storage: default_ephemeral_storage(),
            privileged: true,
            active_deadline_seconds: default_active_deadline(),
            backoff_limit: None,
            ttl_seconds_after_finished: default_ttl_after_finished(),
        }
    }
}

/// Observed state of a `ZfsImageBuild`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZfsImageBuildStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready`, `Reconciling`, `Stalled`, and the step conditions
    /// `InputsResolved`, `AkmodsReady`, `CandidateBuilt`, `CandidateVerified`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The newest run (in progress or finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run: Option<RunStatus>,
    /// The newest run that built and verified a candidate: what a Promotion may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_succeeded_run: Option<RunSummary>,
    /// Finished runs, newest first, at most `spec.historyLimit` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RunSummary>,
    /// When the inputs were last resolved from the registries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resolved_at: Option<Time>,
    /// Next schedule tick (UTC), when `spec.schedule` is set and the build is not suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_at: Option<Time>,
    /// The last handled value of the `kinoite-zfs.io/rebuild-requested-at` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rebuild_at: Option<String>,
    /// The last handled value of the `kinoite-zfs.io/refresh-requested-at` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_refresh_at: Option<String>,
}

/// One run: inputs resolved once, then cache decision, builder Jobs and verification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// Run number, monotonic per build.
    pub number: i64,
    /// Why the run started: `Created`, `SpecChanged`, `InputsChanged`, `Schedule` or `Manual`.
    pub trigger: RunTrigger,
    /// Where the run is: `Resolving`, `CheckingCache`, `BuildingAkmods`, `BuildingImage`,
    /// `Verifying`, `Succeeded`, `Failed` or `Superseded`.
    pub phase: RunPhase,
    /// The spec generation the run was started for.
    pub generation: i64,
    /// Build mode of the run.
    pub mode: BuildMode,
    /// Source revision built by the run.
    pub source_revision: String,
    /// Whether the run rebuilds the akmods cache even when the cache covers its kernels.
    #[serde(default)]
    pub force_akmods_rebuild: bool,
    /// Hash of the spec fields that shape what a run builds (everything except `suspend`,
    /// `schedule`, `rebuildAkmodsOnSchedule`, `historyLimit` and `builder`); a change starts a
    /// new run, a change of the others does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// When the run started.
    pub started_at: Time,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// When the run's inputs were resolved (the `generated_at` of its `build-inputs.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
    /// The resolved inputs, fixed for the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<ResolvedInputs>,
    /// Hash over the resolved inputs, mode and source revision; a change starts a new run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_hash: Option<String>,
    /// The akmods cache decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akmods: Option<AkmodsDecision>,
    /// Builder Jobs of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<RunJobs>,
    /// The candidate image the image Job pushed, confirmed in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateImage>,
    /// Verification of the candidate from the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationResult>,
    /// CamelCase reason of the run's state (e.g. `BuildingImage`, `AkmodsJobFailed`); the same
    /// reason the conditions show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable state or failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why a run started. Values: `Created`, `SpecChanged`, `InputsChanged`, `Schedule`, `Manual`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RunTrigger {
    Created,
    SpecChanged,
    InputsChanged,
    Schedule,
    Manual,
}

/// Run phase. Values: `Resolving`, `CheckingCache`, `BuildingAkmods`, `BuildingImage`,
/// `Verifying`, `Succeeded`, `Failed`, `Superseded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RunPhase {
    Resolving,
    CheckingCache,
    BuildingAkmods,
    BuildingImage,
    Verifying,
    Succeeded,
    Failed,
    Superseded,
}

impl RunPhase {
    /// A finished run never changes phase again.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunPhase::Succeeded | RunPhase::Failed | RunPhase::Superseded)
    }
}

/// Resolved run inputs: the fields of the reference build-inputs manifest, in camelCase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedInputs {
    /// Whether the inputs came from a replay lock.
    pub use_input_lock: bool,
    /// Where the lock came from (`inline`, `configmap/<name>/<key>` or a file path); empty
    /// without a lock.
    pub lock_file_path: String,
    /// Fedora major version derived from the newest kernel release.
    pub fedora_version: String,
    /// Newest kernel release (the primary kernel).
    pub kernel_release: String,
    /// Every kernel release that needs ZFS, natural-sorted.
    pub kernel_releases: Vec<String>,
    /// The base image reference as given.
    pub base_image_ref: String,
    /// Base image repository name (`host/path`).
    pub base_image_name: String,
    /// Immutable date-stamped base tag proven to equal the base digest.
    pub base_image_tag: String,
    /// `<base_image_name>@<base_image_digest>`.
    pub base_image_pinned: String,
    /// Digest the base reference resolved to.
    pub base_image_digest: String,
    /// The builder image reference as given.
    pub build_container_ref: String,
    /// `<name>@<digest>` of the builder image.
    pub build_container_pinned: String,
    /// Digest of the builder image.
    pub build_container_digest: String,
    /// ZFS minor line.
    pub zfs_minor_version: String,
    /// akmods tooling commit.
    pub akmods_upstream_ref: String,
}

/// The akmods cache decision of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AkmodsDecision {
    /// `Reusable`, `Stale` or `MissingImage`.
    pub status: CacheStatus,
    /// Required kernel releases the cache does not cover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_kernels: Vec<String>,
    /// How coverage was decided: `Labels` (cache metadata labels) or `LayerScan` (RPM files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<CacheCheckMethod>,
    /// The cache image that was checked, by digest when it exists.
    pub source_image: String,
    /// Why the cache is not reusable, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether this run rebuilt the cache.
    pub rebuilt: bool,
    /// The akmods image the image build uses, by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Cache verdict. Values: `Reusable`, `Stale`, `MissingImage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CacheStatus {
    Reusable,
    Stale,
    MissingImage,
}

/// How cache coverage was decided. Values: `Labels`, `LayerScan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CacheCheckMethod {
    Labels,
    LayerScan,
}

/// Builder Jobs of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunJobs {
    /// The akmods Job, when the run rebuilds the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akmods: Option<JobRef>,
    /// The image Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<JobRef>,
}

/// A builder Job; results are only accepted from the Job with this UID.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRef {
    /// Job name.
    pub name: String,
    /// Job UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// A pushed candidate image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CandidateImage {
    /// `name@sha256:...` of the candidate.
    #[schemars(regex(pattern = IMAGE_REF_PATTERN))]
    pub image: String,
    /// Digest of the candidate manifest (an index digest when the builder pushed an index).
    #[schemars(regex(pattern = DIGEST_PATTERN))]
    pub digest: String,
    /// The run-unique tag the builder pushed (none in `Validate` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Verification of a candidate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationResult {
    /// Whether every check passed.
    pub verified: bool,
    /// Kernel releases verified to carry `zfs.ko`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_releases: Vec<String>,
    /// Layer bytes read from the registry for the check.
    #[serde(default)]
    pub bytes_read: i64,
    /// What is missing, when verification failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Digest of the `linux/amd64` image that was checked, when the candidate is an index (the
    /// candidate digest is then the index digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST_PATTERN))]
    pub platform_digest: Option<String>,
}

/// A finished run, as kept in history and `lastSucceededRun`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Run number.
    pub number: i64,
    /// Why the run started.
    pub trigger: RunTrigger,
    /// Final phase: `Succeeded`, `Failed` or `Superseded`.
    pub phase: RunPhase,
    /// Build mode of the run.
    pub mode: BuildMode,
    /// Source revision built.
    pub source_revision: String,
    /// Hash of the run's inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_hash: Option<String>,
    /// Fedora major version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fedora_version: Option<String>,
    /// Kernel releases of the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_releases: Vec<String>,
    /// Base image digest of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image_digest: Option<String>,
    /// Verified candidate image, `name@sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_image: Option<String>,
    /// Verified candidate digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_digest: Option<String>,
    /// First 12 hex digits of the candidate digest (for display).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_digest: Option<String>,
    /// Candidate akmods image the run used, `name@sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akmods_image: Option<String>,
    /// Whether the candidate verified.
    pub verified: bool,
    /// When the run started.
    pub started_at: Time,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// CamelCase reason of the final state (e.g. `Succeeded`, `VerificationFailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Failure reason or summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Step condition types of a `ZfsImageBuild`, in addition to the kstatus ones.
pub mod build_condition_types {
    pub const INPUTS_RESOLVED: &str = "InputsResolved";
    pub const AKMODS_READY: &str = "AkmodsReady";
    pub const CANDIDATE_BUILT: &str = "CandidateBuilt";
    pub const CANDIDATE_VERIFIED: &str = "CandidateVerified";
}

fn default_base_image() -> String {
    DEFAULT_BASE_IMAGE.into()
}
fn default_builder_image() -> String {
    DEFAULT_BUILDER_IMAGE.into()
}
fn default_zfs_minor() -> String {
    DEFAULT_ZFS_MINOR_VERSION.into()
}
fn default_akmods_repository() -> String {
    DEFAULT_AKMODS_REPOSITORY.into()
}
fn default_akmods_revision() -> String {
    DEFAULT_AKMODS_REVISION.into()
}
fn default_recipe_path() -> String {
    "recipes/recipe.yml".into()
}
fn default_akmods_containerfile() -> String {
    "containerfiles/zfs-akmods/Containerfile".into()
}
fn default_containerfile_path() -> String {
    "Containerfile".into()
}
fn default_context_dir() -> String {
    ".".into()
}
fn default_image_repo() -> String {
    "kinoite-zfs".into()
}
fn default_candidate_image_repo() -> String {
    "kinoite-zfs-candidate".into()
}
fn default_akmods_repo() -> String {
    "kinoite-zfs-bluebuild-akmods".into()
}
fn default_candidate_akmods_repo() -> String {
    "kinoite-zfs-bluebuild-akmods-candidate".into()
}
fn default_lock_key() -> String {
    "inputs.lock.json".into()
}
fn default_history_limit() -> i32 {
    10
}
fn default_ephemeral_storage() -> Quantity {
    Quantity("20Gi".into())
}
fn default_true() -> bool {
    true
}
fn default_active_deadline() -> i64 {
    4 * 3600
}
fn default_ttl_after_finished() -> i32 {
    24 * 3600
}
