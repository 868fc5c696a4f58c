//! `kinoite-zfs-operator plan -f BUILD.yaml [--inputs build-inputs.json | --lock LOCK]`: what a
//! run of this build would do, without a cluster. It runs the controller's own planner, so the
//! Jobs, ConfigMaps and tags it prints are exactly what the controller would create.
//!
//! With `--inputs` it works offline: the file stands in for resolution, and `--cache` for the
//! cache decision. Without `--inputs` it reads the registries like the controller does (same
//! executor): it resolves the inputs (replaying `--lock LOCK` when given) and decides whether the
//! akmods cache covers them, with `--registry-config` credentials.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::common::{OutputFormat, RegistryArgs};
use crate::api::ZfsImageBuild;
use crate::api::build::{AkmodsDecision, BuildMode, CacheCheckMethod, CacheStatus, ResolvedInputs, RunPhase};
use crate::controllers::image_build::executor::Executor;
use crate::controllers::image_build::observed::{ObservedCluster, observe_lock};
use crate::controllers::image_build::plan::{Child, ControllerConfig, PlanInput, plan};
use crate::controllers::image_build::work::{CacheVerdict, LockRequest, RegistryResults, RegistryWork, WorkOutcome};
use crate::jobs::render::is_pinned;
use crate::jobs::result::is_digest;
use crate::pipeline::targets::run_targets;
use crate::registry::OciRegistry;

/// Default image of the `install-builder` init container in printed Jobs.
const DEFAULT_TOOLS_IMAGE: &str = "ghcr.io/kinoite-zfs/kinoite-zfs-operator:latest";

/// Errors of `plan`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a ZfsImageBuild: {message}")]
    Build { path: PathBuf, message: String },
    #[error("{path} is not a build-inputs document: {message}")]
    Inputs { path: PathBuf, message: String },
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    #[error("--cache must be `missing` or an image pinned by digest (NAME@sha256:...), not {0:?}")]
    Cache(String),
    #[error("--now {0:?} is not an RFC 3339 time")]
    Now(String),
    #[error("cannot render the plan: {0}")]
    Render(String),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The ZfsImageBuild (YAML or JSON). A `status` in it is taken into account (run numbers,
    /// acknowledged requests), as the controller would.
    #[arg(short = 'f', long = "file", value_name = "BUILD.yaml")]
    pub file: PathBuf,

    /// Resolved inputs: a build-inputs.json (from a run record or `resolve`). Offline: nothing
    /// is read from a registry.
    #[arg(long, value_name = "FILE", conflicts_with = "lock")]
    pub inputs: Option<PathBuf>,

    /// A replay lock (the reference lock schema, R14) to resolve from the registry instead of
    /// the build's own inputs; it stands in for `spec.inputLock`.
    #[arg(long, value_name = "LOCK")]
    pub lock: Option<PathBuf>,

    /// The akmods cache decision to assume instead of asking the registry: `missing` (the cache
    /// does not cover the kernels) or `NAME@sha256:...` (this cache image covers them). Offline
    /// (`--inputs`) without it, the plan stops at the cache decision.
    #[arg(long, value_name = "missing|IMAGE@DIGEST")]
    pub cache: Option<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Image of the builder entrypoint (the operator image) in the printed Jobs.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_TOOLS_IMAGE)]
    pub tools_image: String,

    /// Time to plan at (RFC 3339), for reproducible output; default: now.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
}

/// The reference build-inputs manifest (§2.3) or `resolve`'s output: only `inputs` is read.
#[derive(Deserialize)]
struct InputsDocument {
    inputs: InputsFields,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct InputsFields {
    use_input_lock: bool,
    lock_file_path: String,
    fedora_version: String,
    kernel_release: String,
    kernel_releases: Vec<String>,
    base_image_ref: String,
    base_image_name: String,
    base_image_tag: String,
    base_image_pinned: String,
    base_image_digest: String,
    build_container_ref: String,
    build_container_pinned: String,
    build_container_digest: String,
    zfs_minor_version: String,
    akmods_upstream_ref: String,
}

/// What `plan` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    build: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<RunView>,
    /// The inputs exactly as build-inputs.json records them.
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<InputsFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_decision: Option<AkmodsDecision>,
    /// Tags the run would write (nothing in a stable repository, nothing in Validate mode).
    tags_written: Vec<String>,
    /// Registry work the controller would do next (what `plan` cannot do offline).
    registry_work: Vec<String>,
    config_maps: Vec<ConfigMap>,
    jobs: Vec<Job>,
    notes: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunView {
    number: i64,
    trigger: String,
    phase: String,
    inputs_hash: Option<String>,
    reason: Option<String>,
    message: Option<String>,
}

/// Exit code when registry failures kept the plan from getting as far as a run would (the plan is
/// still printed; the reason is on stderr).
pub const EXIT_REGISTRY_FAILED: u8 = 2;

pub async fn run(args: &PlanArgs) -> Result<ExitCode, Error> {
    let (output, failure) = build_plan(args).await?;
    let text = match args.output {
        OutputFormat::Yaml => serde_saphyr::to_string(&output).map_err(|e| Error::Render(e.to_string()))?,
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&output).map_err(|e| Error::Render(e.to_string()))?;
            s.push('\n');
            s
        }
    };
    std::io::stdout().write_all(text.as_bytes()).map_err(Error::Stdout)?;
    match failure {
        Some(message) => {
            eprintln!("plan: stopped by a registry failure: {message}");
            Ok(ExitCode::from(EXIT_REGISTRY_FAILED))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })
}

fn load_build(path: &Path) -> Result<ZfsImageBuild, Error> {
    let text = read(path)?;
    let mut build: ZfsImageBuild =
        serde_saphyr::from_str(&text).map_err(|e| Error::Build { path: path.to_path_buf(), message: e.to_string() })?;
    let meta = &mut build.metadata;
    if meta.name.as_deref().is_none_or(str::is_empty) {
        return Err(Error::Build { path: path.to_path_buf(), message: "metadata.name is missing".into() });
    }
    // The API server assigns these; printed owner references show a placeholder uid.
    meta.namespace.get_or_insert_with(|| "default".into());
    meta.uid.get_or_insert_with(|| "<uid of the ZfsImageBuild>".into());
    meta.generation.get_or_insert(1);
    Ok(build)
}

fn load_inputs(path: &Path) -> Result<ResolvedInputs, Error> {
    let text = read(path)?;
    let bad = |message: String| Error::Inputs { path: path.to_path_buf(), message };
    let doc: InputsDocument = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let i = doc.inputs;
    if i.kernel_releases.is_empty() {
        return Err(bad("inputs.kernel_releases is empty".into()));
    }
    for (field, value) in
        [("base_image_digest", &i.base_image_digest), ("build_container_digest", &i.build_container_digest)]
    {
        if !is_digest(value) {
            return Err(bad(format!("inputs.{field} {value:?} is not sha256:<64 hex>")));
        }
    }
    for (field, value) in
        [("base_image_pinned", &i.base_image_pinned), ("build_container_pinned", &i.build_container_pinned)]
    {
        if !is_pinned(value) {
            return Err(bad(format!("inputs.{field} {value:?} is not pinned by digest")));
        }
    }
    Ok(ResolvedInputs {
        use_input_lock: i.use_input_lock,
        lock_file_path: i.lock_file_path,
        fedora_version: i.fedora_version,
        kernel_release: i.kernel_release,
        kernel_releases: i.kernel_releases,
        base_image_ref: i.base_image_ref,
        base_image_name: i.base_image_name,
        base_image_tag: i.base_image_tag,
        base_image_pinned: i.base_image_pinned,
        base_image_digest: i.base_image_digest,
        build_container_ref: i.build_container_ref,
        build_container_pinned: i.build_container_pinned,
        build_container_digest: i.build_container_digest,
        zfs_minor_version: i.zfs_minor_version,
        akmods_upstream_ref: i.akmods_upstream_ref,
    })
}

enum AssumedCache {
    Unknown,
    Missing,
    Covers(String),
}

/// Where registry work is answered from: files and assumptions (offline), or the registry.
struct Sources {
    inputs: Option<ResolvedInputs>,
    cache: AssumedCache,
    /// `--lock`: path and text.
    lock: Option<(String, String)>,
    /// The controller's executor and a client with `--registry-config` (registry mode).
    online: Option<(Executor, OciRegistry)>,
}

impl Sources {
    async fn answer(&self, work: &RegistryWork) -> Option<WorkOutcome> {
        if let Some(outcome) = offline_answer(work, self.inputs.as_ref(), &self.cache) {
            return Some(outcome);
        }
        let (executor, registry) = self.online.as_ref()?;
        match work {
            RegistryWork::Resolve(request) => {
                let mut request = request.clone();
                if let Some((path, json)) = &self.lock {
                    request.lock = Some(LockRequest { path: path.clone(), json: json.clone() });
                }
                Some(executor.execute(registry, &RegistryWork::Resolve(request)).await)
            }
            RegistryWork::CheckCache(_) => Some(executor.execute(registry, work).await),
            // Confirmations and verification need a finished builder Job: never in a plan.
            _ => None,
        }
    }
}

async fn build_plan(args: &PlanArgs) -> Result<(Output, Option<String>), Error> {
    let build = load_build(&args.file)?;
    let inputs = args.inputs.as_deref().map(load_inputs).transpose()?;
    let cache = match args.cache.as_deref() {
        None => AssumedCache::Unknown,
        Some("missing") => AssumedCache::Missing,
        Some(image) if is_pinned(image) => AssumedCache::Covers(image.to_string()),
        Some(other) => return Err(Error::Cache(other.to_string())),
    };
    let now = match &args.now {
        Some(text) => text.parse::<Timestamp>().map_err(|_| Error::Now(text.clone()))?,
        None => Timestamp::now(),
    };
    let lock = match &args.lock {
        Some(path) => Some((path.display().to_string(), read(path)?)),
        None => None,
    };
    let online = match inputs {
        Some(_) => None,
        None => Some((Executor::new(), OciRegistry::from_args(&args.registry)?)),
    };
    let offline = online.is_none();
    let config = ControllerConfig { tools_image: args.tools_image.clone(), retry: Default::default() };
    let mut cluster = ObservedCluster::default();
    // A lock file stands in for the ConfigMap a build's `inputLock.configMapRef` names.
    if let Some((_, json)) = &lock {
        cluster.lock = observe_lock(
            build.spec.input_lock.as_ref(),
            Some(&ConfigMap {
                data: build
                    .spec
                    .input_lock
                    .as_ref()
                    .and_then(|l| l.config_map_ref.as_ref())
                    .map(|r| [(r.key.clone(), json.clone())].into_iter().collect()),
                ..Default::default()
            }),
        );
    }
    let sources = Sources { inputs, cache, lock, online };
    let mut results = RegistryResults::default();
    let mut notes = Vec::new();
    let mut pending = Vec::new();
    let mut failure = None;

    // The controller's loop; work nobody can answer here ends it and is reported.
    let mut planned = plan(&PlanInput { build: &build, cluster: &cluster, registry: &results, config: &config, now });
    for _ in 0..8 {
        let mut answered = false;
        pending.clear();
        for work in &planned.registry_work {
            match sources.answer(work).await {
                Some(outcome) => {
                    if let WorkOutcome::Failed(f) = &outcome {
                        failure = Some(format!("{}: {}", work.kind(), f.message));
                    }
                    results.record(work.clone(), outcome, now);
                    answered = true;
                }
                None => pending.push(describe(work)),
            }
        }
        if !answered {
            break;
        }
        planned = plan(&PlanInput { build: &build, cluster: &cluster, registry: &results, config: &config, now });
    }
    let inputs = sources.inputs.as_ref();
    let cache = &sources.cache;

    let status = &planned.status;
    let run = status.current_run.as_ref();
    let mut config_maps = Vec::new();
    let mut jobs = Vec::new();
    for child in planned.apply {
        match child {
            Child::ConfigMap(cm) => config_maps.push(*cm),
            Child::Job(job) => jobs.push(*job),
        }
    }
    let spec = &build.spec;
    if let Some(inputs) = inputs
        && inputs.base_image_ref != spec.base_image
    {
        notes.push(format!(
            "the inputs were resolved from {} but the build follows {}",
            inputs.base_image_ref, spec.base_image
        ));
    }
    if let Some(run) = run {
        if run.phase == RunPhase::BuildingAkmods {
            notes.push(
                "the image Job is created once the akmods Job reports its digest; pass --cache NAME@sha256:... to see it"
                    .into(),
            );
        }
        if run.phase == RunPhase::CheckingCache && offline && matches!(cache, AssumedCache::Unknown) {
            notes.push(
                "the akmods cache decision needs the registry; pass --cache missing or --cache NAME@sha256:...".into(),
            );
        }
    } else {
        notes.push("no run would start".into());
    }
    for condition in status.conditions.iter().filter(|c| c.type_ == "Stalled") {
        notes.push(format!("Stalled ({}): {}", condition.reason, condition.message));
    }
    let rebuilds = run.and_then(|r| r.akmods.as_ref()).is_some_and(|a| a.rebuilt);
    let tags_written = run
        .filter(|r| r.phase != RunPhase::Failed)
        .and_then(|r| r.inputs.as_ref().map(|i| run_targets(spec, r.number, &i.fedora_version)))
        .map(|t| t.all_written_refs(rebuilds))
        .unwrap_or_default();
    if spec.mode == BuildMode::Validate {
        notes.push("Validate mode pushes nothing and mounts no credentials".into());
    }
    let output = Output {
        build: format!(
            "{}/{}",
            build.metadata.namespace.as_deref().unwrap_or_default(),
            build.metadata.name.as_deref().unwrap_or_default()
        ),
        run: run.map(|r| RunView {
            number: r.number,
            trigger: format!("{:?}", r.trigger),
            phase: format!("{:?}", r.phase),
            inputs_hash: r.inputs_hash.clone(),
            reason: r.reason.clone(),
            message: r.message.clone(),
        }),
        inputs: run.and_then(|r| r.inputs.as_ref()).map(fields_of),
        cache_decision: run.and_then(|r| r.akmods.clone()),
        tags_written,
        registry_work: pending,
        config_maps,
        jobs,
        notes,
    };
    Ok((output, failure))
}

fn offline_answer(work: &RegistryWork, inputs: Option<&ResolvedInputs>, cache: &AssumedCache) -> Option<WorkOutcome> {
    match (work, cache) {
        (RegistryWork::Resolve(_), _) => inputs.map(|i| WorkOutcome::Resolved(Box::new(i.clone()))),
        (RegistryWork::CheckCache(req), AssumedCache::Missing) => Some(WorkOutcome::Cache(CacheVerdict {
            status: CacheStatus::MissingImage,
            missing_kernels: req.kernel_releases.clone(),
            method: None,
            source_image: req.image.clone(),
            reason: Some("assumed by `plan --cache missing`".into()),
        })),
        (RegistryWork::CheckCache(_), AssumedCache::Covers(image)) => Some(WorkOutcome::Cache(CacheVerdict {
            status: CacheStatus::Reusable,
            missing_kernels: Vec::new(),
            method: Some(CacheCheckMethod::Labels),
            source_image: image.clone(),
            reason: Some("assumed by `plan --cache`".into()),
        })),
        _ => None,
    }
}

fn describe(work: &RegistryWork) -> String {
    match work {
        RegistryWork::Resolve(r) => format!("resolve {} (builder {})", r.base_image, r.builder_image),
        RegistryWork::CheckCache(r) => format!("check-cache {} for kernels {}", r.image, r.kernel_releases.join(" ")),
        RegistryWork::ConfirmAkmods(r) => format!("confirm-akmods {}", r.image),
        RegistryWork::ConfirmImage { image } => format!("confirm-image {image}"),
        RegistryWork::Verify(r) => format!("verify {} for kernels {}", r.image, r.kernel_releases.join(" ")),
    }
}

fn fields_of(i: &ResolvedInputs) -> InputsFields {
    InputsFields {
        use_input_lock: i.use_input_lock,
        lock_file_path: i.lock_file_path.clone(),
        fedora_version: i.fedora_version.clone(),
        kernel_release: i.kernel_release.clone(),
        kernel_releases: i.kernel_releases.clone(),
        base_image_ref: i.base_image_ref.clone(),
        base_image_name: i.base_image_name.clone(),
        base_image_tag: i.base_image_tag.clone(),
        base_image_pinned: i.base_image_pinned.clone(),
        base_image_digest: i.base_image_digest.clone(),
        build_container_ref: i.build_container_ref.clone(),
        build_container_pinned: i.build_container_pinned.clone(),
        build_container_digest: i.build_container_digest.clone(),
        zfs_minor_version: i.zfs_minor_version.clone(),
        akmods_upstream_ref: i.akmods_upstream_ref.clone(),
    }
}
