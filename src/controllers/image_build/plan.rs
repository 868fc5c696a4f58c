//! The pure run planner of the `ZfsImageBuild` controller.
//!
//! `plan(input) -> Plan` takes the build (spec, metadata, status), the observed cluster state,
//! the outcomes of registry work done so far and `now`, and returns the whole next status, the
//! children to apply and delete, the registry work still needed, the Events to emit and when to
//! look again. It never does I/O, never reads a clock and never branches on why it was called,
//! so the reconcile around it is: observe -> plan -> (do registry work / apply children / write
//! status / emit events) -> requeue, and any reconcile after a crash converges to the same state.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::observed::{ObservedCluster, ObservedLock};
use super::reasons::{self, Step, events};
use super::spec;
use super::work::{
    CacheRequest, FailureClass, LockRequest, RegistryResults, RegistryWork, ResolvePurpose, ResolveRequest,
    RetryPolicy, VerifyRequest, WorkOutcome,
};
use crate::api::ZfsImageBuild;
use crate::api::build::{
    AkmodsDecision, BuildMode, CacheStatus, CandidateImage, JobRef, REBUILD_REQUESTED_ANNOTATION,
    REFRESH_REQUESTED_ANNOTATION, ResolvedInputs, RunJobs, RunPhase, RunStatus, RunTrigger, ZfsImageBuildStatus,
    build_condition_types as step_types,
};
use crate::api::common::condition_types;
use crate::controllers::conditions::{DesiredCondition, FALSE, TRUE, UNKNOWN, remove_condition, set_condition};
use crate::jobs::observe::{JobState, result_for_job};
use crate::jobs::render::{self, JobInputs, is_pinned};
use crate::jobs::result::BuilderResult;
use crate::jobs::{self, JobKind};
use crate::pipeline::hashing::inputs_hash;
use crate::pipeline::records::{self, RefBundle, RunIdentity};
use crate::pipeline::resolve::apply_kernel_policy;
use crate::pipeline::schedule::Schedule;
use crate::pipeline::targets::{CACHE_TAG_PREFIX, RunTargets, run_targets};

/// Settings of the controller process (not of a build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Operator image that provides the builder entrypoint (`install-builder` init container).
    pub tools_image: String,
    pub retry: RetryPolicy,
}

/// Everything the planner reads.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The build as read from the API (spec, metadata incl. generation and annotations, status).
    pub build: &'a ZfsImageBuild,
    pub cluster: &'a ObservedCluster,
    pub registry: &'a RegistryResults,
    pub config: &'a ControllerConfig,
    pub now: Timestamp,
}

/// A child object to create or update (server-side apply), in order: a ConfigMap a Job mounts
/// comes before the Job.
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    ConfigMap(Box<ConfigMap>),
    Job(Box<Job>),
}

impl Child {
    pub fn name(&self) -> &str {
        match self {
            Child::ConfigMap(cm) => cm.metadata.name.as_deref().unwrap_or_default(),
            Child::Job(job) => job.metadata.name.as_deref().unwrap_or_default(),
        }
    }
}

/// Kind of a child to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChildKind {
    Job,
    ConfigMap,
}

/// A child to delete (Jobs with background propagation, so their pods go too).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChildRef {
    pub kind: ChildKind,
    pub name: String,
}

/// Event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// An Event to emit on the build (only for transitions; emitted after the children were applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The whole next status (write it when it differs from the current one).
    pub status: ZfsImageBuildStatus,
    pub apply: Vec<Child>,
    pub delete: Vec<ChildRef>,
    /// Registry work whose outcome the plan needs; do it, record the outcomes, plan again.
    pub registry_work: Vec<RegistryWork>,
    /// Results the plan looked at or asked for; the controller may drop every other one.
    pub keep_results: BTreeSet<RegistryWork>,
    pub events: Vec<PlannedEvent>,
    /// When to reconcile again at the latest (schedule tick, retry after a registry failure).
    /// Changes of owned Jobs wake the controller through its watches anyway.
    pub requeue_after: Option<Duration>,
}

/// Plans the next step of a build. Pure: same input, same plan.
pub fn plan(input: &PlanInput) -> Plan {
    let mut planner = Planner::new(input);
    planner.run();
    planner.finish()
}

/// Why a step cannot go on right now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    stalled: bool,
    reason: &'static str,
    message: String,
}

enum Lookup<'r> {
    Pending,
    Failed(Block),
    Done(&'r WorkOutcome, Timestamp),
}

enum Flow {
    Continue,
    Stop,
}

enum JobOutcome {
    Waiting,
    Failed,
    Done(BuilderResult),
}

struct NewRun {
    trigger: RunTrigger,
    force: bool,
    resolved: Option<(ResolvedInputs, Timestamp)>,
}

struct Planner<'a> {
    input: &'a PlanInput<'a>,
    name: String,
    namespace: String,
    generation: Option<i64>,
    now: Timestamp,
    status: ZfsImageBuildStatus,
    apply: Vec<Child>,
    delete: Vec<ChildRef>,
    work: Vec<RegistryWork>,
    keep: BTreeSet<RegistryWork>,
    events: Vec<PlannedEvent>,
    wake_at: Option<Timestamp>,
    invalid: Option<String>,
    run_block: Option<Block>,
    probe_block: Option<Block>,
    tick_due: Option<Timestamp>,
}

impl<'a> Planner<'a> {
    fn new(input: &'a PlanInput<'a>) -> Self {
        let meta = &input.build.metadata;
        Self {
            input,
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            generation: meta.generation,
            now: input.now,
            status: input.build.status.clone().unwrap_or_default(),
            apply: Vec::new(),
            delete: Vec::new(),
            work: Vec::new(),
            keep: BTreeSet::new(),
            events: Vec::new(),
            wake_at: None,
            invalid: None,
            run_block: None,
            probe_block: None,
            tick_due: None,
        }
    }

    fn spec(&self) -> &'a crate::api::ZfsImageBuildSpec {
        &self.input.build.spec
    }

    fn run(&mut self) {
        let problems = spec::problems(self.spec());
        if !problems.is_empty() {
            self.invalid = Some(problems.join("; "));
            self.status.next_scheduled_at = None;
            // A run started from another spec cannot be continued with this one.
            let spec_hash = spec::spec_hash(self.spec());
            if let Some(run) = self.status.current_run.as_ref()
                && !run.phase.is_terminal()
                && run.spec_hash.as_deref() != Some(spec_hash.as_str())
            {
                let note = format!("an invalid spec (generation {})", self.generation.unwrap_or_default());
                self.supersede_current(&note);
            }
        } else {
            self.update_schedule();
            self.start_run_if_needed();
        }
        self.drive_current_run();
        self.delete_stray_jobs();
        self.records();
    }

    // ---------------------------------------------------------------------------------------
    // Triggers

    fn update_schedule(&mut self) {
        let spec = self.spec();
        let schedule = match (&spec.schedule, spec.suspend) {
            (Some(expression), false) => Schedule::parse(expression).ok(),
            _ => None,
        };
        let Some(schedule) = schedule else {
            self.status.next_scheduled_at = None;
            return;
        };
        match self.status.next_scheduled_at.as_ref().map(|t| t.0) {
            Some(tick) if tick <= self.now => self.tick_due = Some(tick),
            // Recomputing from `now` gives the same tick for an unchanged expression and picks up
            // a changed one.
            _ => self.status.next_scheduled_at = schedule.next_after(self.now).ok().map(Time),
        }
    }

    fn advance_schedule(&mut self) {
        if self.tick_due.take().is_some()
            && let Some(schedule) = self.spec().schedule.as_deref().and_then(|s| Schedule::parse(s).ok())
        {
            self.status.next_scheduled_at = schedule.next_after(self.now).ok().map(Time);
        }
    }

    fn pending_annotation(&self, key: &str, handled: &Option<String>) -> Option<String> {
        let value = self.input.build.metadata.annotations.as_ref()?.get(key)?;
        (!value.is_empty() && Some(value) != handled.as_ref()).then(|| value.clone())
    }

    fn start_run_if_needed(&mut self) {
        let spec = self.spec();
        if spec.suspend {
            return;
        }
        let rebuild = self.pending_annotation(REBUILD_REQUESTED_ANNOTATION, &self.status.last_handled_rebuild_at);
        let refresh = self.pending_annotation(REFRESH_REQUESTED_ANNOTATION, &self.status.last_handled_refresh_at);
        let spec_hash = spec::spec_hash(spec);
        let current = self.status.current_run.as_ref();
        let fresh = match current {
            None => Some(RunTrigger::Created),
            Some(run) if run.spec_hash.as_deref() != Some(spec_hash.as_str()) => Some(RunTrigger::SpecChanged),
            // Only a cancelled run (invalid spec) can be superseded without a successor.
            Some(run) if run.phase == RunPhase::Superseded => Some(RunTrigger::SpecChanged),
            Some(_) if rebuild.is_some() => Some(RunTrigger::Manual),
            Some(_) => None,
        };
        if let Some(trigger) = fresh {
            // A fresh run resolves its own inputs: it answers a pending refresh or tick too.
            let force = rebuild.is_some();
            self.acknowledge(rebuild, refresh);
            self.advance_schedule();
            self.start(NewRun { trigger, force, resolved: None });
            return;
        }
        if refresh.is_none() && self.tick_due.is_none() {
            return;
        }
        let Some(current) = self.status.current_run.as_ref() else { return };
        let in_progress = !current.phase.is_terminal();
        let current_hash = current.inputs_hash.clone();
        if in_progress && current.inputs.is_none() {
            self.acknowledge(None, refresh);
            self.advance_schedule();
            return;
        }
        if refresh.is_none() && spec.rebuild_akmods_on_schedule {
            // The reference's nightly rebuild (R1.4), as a policy; never on top of a running run.
            self.advance_schedule();
            if !in_progress {
                self.start(NewRun { trigger: RunTrigger::Schedule, force: true, resolved: None });
            }
            return;
        }
        let purpose = match (&refresh, self.tick_due) {
            (Some(value), _) => ResolvePurpose::Refresh(value.clone()),
            (None, Some(tick)) => ResolvePurpose::Schedule(records::reference_time(tick)),
            (None, None) => return,
        };
        let request = match self.resolve_request(purpose) {
            Ok(request) => request,
            Err(block) => {
                self.probe_block = Some(block);
                self.wake_after_permanent_failure();
                return;
            }
        };
        let (inputs, at) = match self.lookup(RegistryWork::Resolve(request)) {
            Lookup::Pending => return,
            Lookup::Failed(block) => {
                self.probe_block = Some(block);
                return;
            }
            Lookup::Done(WorkOutcome::Resolved(inputs), at) => ((**inputs).clone(), at),
            Lookup::Done(other, _) => {
                self.probe_block = Some(unexpected("resolve", other));
                return;
            }
        };
        let inputs = apply_kernel_policy(inputs, spec.kernels);
        let hash = inputs_hash(&inputs, &spec.source.git.revision, spec.mode);
        self.status.last_resolved_at = Some(Time(at));
        let changed = current_hash.as_deref() != Some(hash.as_str());
        let trigger = if refresh.is_some() { RunTrigger::InputsChanged } else { RunTrigger::Schedule };
        self.acknowledge(None, refresh);
        self.advance_schedule();
        if changed {
            self.start(NewRun { trigger, force: false, resolved: Some((inputs, at)) });
        }
    }

    fn acknowledge(&mut self, rebuild: Option<String>, refresh: Option<String>) {
        if rebuild.is_some() {
            self.status.last_handled_rebuild_at = rebuild;
        }
        if refresh.is_some() {
            self.status.last_handled_refresh_at = refresh;
        }
    }

    fn next_run_number(&self) -> i64 {
        let status = &self.status;
        let cluster = self.input.cluster;
        status
            .current_run
            .iter()
            .map(|r| r.number)
            .chain(status.history.iter().map(|r| r.number))
            .chain(status.last_succeeded_run.iter().map(|r| r.number))
            // Children survive a lost status: never reuse a number they carry.
            .chain(cluster.jobs.iter().filter_map(|j| j.run))
            .chain(cluster.config_maps.iter().map(|c| c.run))
            .max()
            .unwrap_or(0)
            + 1
    }

    fn start(&mut self, new: NewRun) {
        let number = self.next_run_number();
        let trigger = new.trigger;
        if self.status.current_run.as_ref().is_some_and(|r| !r.phase.is_terminal()) {
            self.supersede_current(&format!("run {number} ({trigger:?})"));
        }
        let spec = self.spec();
        let mut run = RunStatus {
            number,
            trigger,
            phase: RunPhase::Resolving,
            generation: self.generation.unwrap_or_default(),
            mode: spec.mode,
            source_revision: spec.source.git.revision.clone(),
            force_akmods_rebuild: new.force && spec.mode == BuildMode::Main,
            spec_hash: Some(spec::spec_hash(spec)),
            started_at: Time(self.now),
            finished_at: None,
            resolved_at: None,
            inputs: None,
            inputs_hash: None,
            akmods: None,
            jobs: None,
            candidate: None,
            verification: None,
            reason: Some(reasons::RESOLVING.into()),
            message: None,
        };
        let mut note = format!("Run {number} started ({trigger:?})");
        if let Some((inputs, at)) = new.resolved {
            note.push_str(&format!(
                ": inputs changed, base {}, kernels {}",
                inputs.base_image_digest,
                inputs.kernel_releases.join(" ")
            ));
            self.record_inputs(&mut run, inputs, at);
        }
        self.event(EventType::Normal, events::RUN_STARTED, note);
        self.status.current_run = Some(run);
    }

    fn supersede_current(&mut self, by: &str) {
        let Some(mut run) = self.status.current_run.take() else { return };
        let names: BTreeSet<String> = self
            .input
            .cluster
            .jobs
            .iter()
            .filter(|j| j.run == Some(run.number))
            .map(|j| j.name.clone())
            .chain(run.jobs.iter().flat_map(|j| [&j.akmods, &j.image]).flatten().map(|j| j.name.clone()))
            .collect();
        for name in names {
            self.delete_child(ChildKind::Job, name);
        }
        let message = format!("Superseded by {by}");
        self.event(EventType::Normal, events::RUN_SUPERSEDED, format!("Run {}: {message}", run.number));
        self.finish_run(&mut run, RunPhase::Superseded, reasons::SUPERSEDED, message, false);
        self.status.current_run = Some(run);
    }

    // ---------------------------------------------------------------------------------------
    // Steps of the current run

    fn drive_current_run(&mut self) {
        let Some(mut run) = self.status.current_run.take() else { return };
        // Each step either stops or moves forward; the bound only guards against a status that
        // was edited into a contradiction (steps send such a run back to the step it lacks).
        for _ in 0..16 {
            if run.phase.is_terminal() {
                break;
            }
            let flow = match run.phase {
                RunPhase::Resolving => self.step_resolve(&mut run),
                RunPhase::CheckingCache => self.step_cache(&mut run),
                RunPhase::BuildingAkmods => self.step_akmods(&mut run),
                RunPhase::BuildingImage => self.step_image(&mut run),
                RunPhase::Verifying => self.step_verify(&mut run),
                RunPhase::Succeeded | RunPhase::Failed | RunPhase::Superseded => Flow::Stop,
            };
            if matches!(flow, Flow::Stop) {
                break;
            }
        }
        self.status.current_run = Some(run);
    }

    fn step_resolve(&mut self, run: &mut RunStatus) -> Flow {
        if run.inputs.is_some() {
            run.phase = RunPhase::CheckingCache;
            return Flow::Continue;
        }
        progress(run, reasons::RESOLVING, "Resolving the run's inputs from the registries");
        let request = match self.resolve_request(ResolvePurpose::Run(run.number)) {
            Ok(request) => request,
            Err(block) => {
                self.wake_after_permanent_failure();
                return self.block(block);
            }
        };
        match self.lookup(RegistryWork::Resolve(request)) {
            Lookup::Pending => Flow::Stop,
            Lookup::Failed(block) => self.block(block),
            Lookup::Done(WorkOutcome::Resolved(inputs), at) => {
                let inputs = apply_kernel_policy((**inputs).clone(), self.spec().kernels);
                self.record_inputs(run, inputs, at);
                Flow::Continue
            }
            Lookup::Done(other, _) => self.block(unexpected("resolve", other)),
        }
    }

    fn record_inputs(&mut self, run: &mut RunStatus, inputs: ResolvedInputs, at: Timestamp) {
        run.inputs_hash = Some(inputs_hash(&inputs, &run.source_revision, run.mode));
        run.inputs = Some(inputs);
        run.resolved_at = Some(Time(at));
        run.phase = RunPhase::CheckingCache;
        if self.status.last_resolved_at.as_ref().is_none_or(|t| t.0 < at) {
            self.status.last_resolved_at = Some(Time(at));
        }
    }

    fn step_cache(&mut self, run: &mut RunStatus) -> Flow {
        let Some(inputs) = run.inputs.clone() else { return back_to(run, RunPhase::Resolving) };
        let targets = run_targets(self.spec(), run.number, &inputs.fedora_version);
        progress(run, reasons::CHECKING_CACHE, format!("Checking akmods cache {}", targets.cache_source));
        let request = cache_request(&targets.cache_source, &inputs);
        let verdict = match self.lookup(RegistryWork::CheckCache(request)) {
            Lookup::Pending => return Flow::Stop,
            Lookup::Failed(block) => return self.block(block),
            Lookup::Done(WorkOutcome::Cache(verdict), _) => verdict.clone(),
            Lookup::Done(other, _) => return self.block(unexpected("cache check", other)),
        };
        let main = run.mode == BuildMode::Main;
        let reusable = verdict.status == CacheStatus::Reusable;
        let mut decision = AkmodsDecision {
            status: verdict.status,
            missing_kernels: verdict.missing_kernels.clone(),
            method: verdict.method,
            source_image: verdict.source_image.clone(),
            reason: verdict.reason.clone(),
            rebuilt: false,
            image: None,
        };
        if reusable && !run.force_akmods_rebuild {
            if !is_pinned(&verdict.source_image) {
                return self.block(Block {
                    stalled: true,
                    reason: reasons::REGISTRY_ERROR,
                    message: format!("the cache decision for {} returned no digest", targets.cache_source),
                });
            }
            decision.image = Some(verdict.source_image);
            run.akmods = Some(decision);
            run.phase = RunPhase::BuildingImage;
            Flow::Continue
        } else if main {
            decision.rebuilt = true;
            if reusable {
                decision.reason = Some(format!("rebuild requested (trigger {:?})", run.trigger));
            }
            run.akmods = Some(decision);
            run.phase = RunPhase::BuildingAkmods;
            Flow::Continue
        } else {
            let message = fail_closed_message(self.spec().mode, &self.namespace, &self.name, &decision);
            run.akmods = Some(decision);
            self.fail(run, reasons::AKMODS_CACHE_NOT_REUSABLE, message);
            Flow::Stop
        }
    }

    fn step_akmods(&mut self, run: &mut RunStatus) -> Flow {
        let Some(inputs) = run.inputs.clone() else { return back_to(run, RunPhase::Resolving) };
        let targets = run_targets(self.spec(), run.number, &inputs.fedora_version);
        let hash = run.inputs_hash.clone().unwrap_or_default();
        let outcome = self.job_step(run, JobKind::Akmods, |planner, number| {
            let ji = planner.job_inputs(number, &inputs, &hash, &targets);
            Ok(vec![Child::Job(Box::new(render::akmods_job(&ji)?))])
        });
        let (digest, covered) = match outcome {
            JobOutcome::Waiting => return Flow::Stop,
            JobOutcome::Failed => return Flow::Stop,
            JobOutcome::Done(BuilderResult::Akmods { digest, kernel_releases }) => (digest, kernel_releases),
            JobOutcome::Done(BuilderResult::Image { digest }) => {
                // result_for_job parses by Job kind; keep bad input from ever panicking anyway.
                let message = format!("akmods Job reported an image result ({digest})");
                self.fail(run, reasons::AKMODS_RESULT_INVALID, message);
                return Flow::Stop;
            }
        };
        let job = jobs::job_name(&self.name, run.number, JobKind::Akmods);
        let missing: Vec<&String> = inputs.kernel_releases.iter().filter(|k| !covered.contains(k)).collect();
        if !missing.is_empty() {
            let message = format!(
                "akmods Job {job} reported {digest} covering [{}], but the run needs [{}]: missing {}",
                covered.join(" "),
                inputs.kernel_releases.join(" "),
                join(&missing)
            );
            self.fail(run, reasons::AKMODS_RESULT_INVALID, message);
            return Flow::Stop;
        }
        let image = format!("{}@{digest}", targets.akmods_repository);
        progress(run, reasons::BUILDING_AKMODS, format!("Confirming akmods image {image} in the registry"));
        let verdict = match self.lookup(RegistryWork::ConfirmAkmods(cache_request(&image, &inputs))) {
            Lookup::Pending => return Flow::Stop,
            Lookup::Failed(block) => return self.block(block),
            Lookup::Done(WorkOutcome::Cache(verdict), _) => verdict.clone(),
            Lookup::Done(other, _) => return self.block(unexpected("akmods confirmation", other)),
        };
        if verdict.status != CacheStatus::Reusable {
            let message = format!(
                "akmods Job {job} reported {image}, but the registry check says {:?}{}{}",
                verdict.status,
                if verdict.missing_kernels.is_empty() {
                    String::new()
                } else {
                    format!(" (missing kernels {})", verdict.missing_kernels.join(" "))
                },
                verdict.reason.map(|r| format!(": {r}")).unwrap_or_default()
            );
            self.fail(run, reasons::AKMODS_NOT_CONFIRMED, message);
            return Flow::Stop;
        }
        if let Some(decision) = run.akmods.as_mut() {
            decision.image = Some(image);
        }
        run.phase = RunPhase::BuildingImage;
        Flow::Continue
    }

    fn step_image(&mut self, run: &mut RunStatus) -> Flow {
        let Some(inputs) = run.inputs.clone() else { return back_to(run, RunPhase::Resolving) };
        let targets = run_targets(self.spec(), run.number, &inputs.fedora_version);
        let hash = run.inputs_hash.clone().unwrap_or_default();
        let Some(akmods_image) = run.akmods.as_ref().and_then(|a| a.image.clone()) else {
            return back_to(run, RunPhase::CheckingCache);
        };
        let outcome = self.job_step(run, JobKind::Image, |planner, number| {
            let ji = planner.job_inputs(number, &inputs, &hash, &targets);
            let mut children = Vec::new();
            if let Some(cm) = render::recipe_config_map(&ji, &akmods_image)? {
                children.push(Child::ConfigMap(Box::new(cm)));
            }
            children.push(Child::Job(Box::new(render::image_job(&ji, &akmods_image)?)));
            Ok(children)
        });
        let digest = match outcome {
            JobOutcome::Waiting | JobOutcome::Failed => return Flow::Stop,
            JobOutcome::Done(result) => result.digest().to_string(),
        };
        let image = format!("{}@{digest}", targets.image_repository);
        if !targets.pushes {
            run.candidate = Some(CandidateImage { image: image.clone(), digest, tag: None });
            let message = format!("Built {image} (Validate mode: nothing pushed)");
            self.finish_run(run, RunPhase::Succeeded, reasons::SUCCEEDED, message, true);
            return Flow::Stop;
        }
        let job = jobs::job_name(&self.name, run.number, JobKind::Image);
        progress(run, reasons::BUILDING_IMAGE, format!("Confirming candidate {image} in the registry"));
        match self.lookup(RegistryWork::ConfirmImage { image: image.clone() }) {
            Lookup::Pending => Flow::Stop,
            Lookup::Failed(block) => self.block(block),
            Lookup::Done(WorkOutcome::Confirmed { present: true }, _) => {
                run.candidate = Some(CandidateImage { image, digest, tag: targets.image_tags.first().cloned() });
                run.phase = RunPhase::Verifying;
                Flow::Continue
            }
            Lookup::Done(WorkOutcome::Confirmed { present: false }, _) => {
                let message = format!("image Job {job} reported {digest}, but {image} is not in the registry");
                self.fail(run, reasons::CANDIDATE_DIGEST_NOT_FOUND, message);
                Flow::Stop
            }
            Lookup::Done(other, _) => self.block(unexpected("candidate confirmation", other)),
        }
    }

    fn step_verify(&mut self, run: &mut RunStatus) -> Flow {
        let Some(inputs) = run.inputs.clone() else { return back_to(run, RunPhase::Resolving) };
        let Some(candidate) = run.candidate.clone() else {
            return back_to(run, RunPhase::BuildingImage);
        };
        progress(
            run,
            reasons::VERIFYING,
            format!("Verifying {} for kernels {}", candidate.image, inputs.kernel_releases.join(" ")),
        );
        let request = VerifyRequest {
            image: candidate.image.clone(),
            kernel_releases: inputs.kernel_releases.clone(),
            base_image: Some(inputs.base_image_pinned.clone()),
        };
        let verdict = match self.lookup(RegistryWork::Verify(request)) {
            Lookup::Pending => return Flow::Stop,
            Lookup::Failed(block) => return self.block(block),
            Lookup::Done(WorkOutcome::Verified(verdict), _) => verdict.clone(),
            Lookup::Done(other, _) => return self.block(unexpected("verification", other)),
        };
        run.verification = Some(verdict.clone());
        if verdict.verified {
            let message = format!("Verified {} for kernels {}", candidate.image, inputs.kernel_releases.join(" "));
            self.finish_run(run, RunPhase::Succeeded, reasons::SUCCEEDED, message, true);
        } else {
            let message = verdict.message.unwrap_or_else(|| format!("{} failed verification", candidate.image));
            self.fail(run, reasons::VERIFICATION_FAILED, message);
        }
        Flow::Stop
    }

    /// Creates the Job of `kind` when needed and reads its outcome. Never creates a second Job
    /// for a run: the name is deterministic, and once a Job UID is recorded, only that Job counts.
    fn job_step(
        &mut self,
        run: &mut RunStatus,
        kind: JobKind,
        render: impl FnOnce(&Self, i64) -> Result<Vec<Child>, jobs::Error>,
    ) -> JobOutcome {
        let name = jobs::job_name(&self.name, run.number, kind);
        let (running_reason, failed_reason, invalid_reason) = match kind {
            JobKind::Akmods => (reasons::BUILDING_AKMODS, reasons::AKMODS_JOB_FAILED, reasons::AKMODS_RESULT_INVALID),
            JobKind::Image => (reasons::BUILDING_IMAGE, reasons::IMAGE_JOB_FAILED, reasons::IMAGE_RESULT_INVALID),
        };
        let recorded = run.jobs.as_ref().and_then(|j| match kind {
            JobKind::Akmods => j.akmods.clone(),
            JobKind::Image => j.image.clone(),
        });
        let observed = self.input.cluster.jobs.iter().find(|j| j.name == name);
        let record = |run: &mut RunStatus, job: JobRef| {
            let jobs = run.jobs.get_or_insert_with(RunJobs::default);
            match kind {
                JobKind::Akmods => jobs.akmods = Some(job),
                JobKind::Image => jobs.image = Some(job),
            }
        };
        let Some(job) = observed else {
            if let Some(uid) = recorded.as_ref().and_then(|r| r.uid.clone()) {
                let message = format!(
                    "{} Job {name} (uid {uid}) disappeared before it reported a result; request a new run with the {REBUILD_REQUESTED_ANNOTATION} annotation",
                    kind.as_str()
                );
                self.fail(run, reasons::BUILDER_JOB_LOST, message);
                return JobOutcome::Failed;
            }
            match render(self, run.number) {
                Ok(children) => self.apply.extend(children),
                Err(e) => {
                    self.fail(run, reasons::RENDER_FAILED, format!("cannot render {} Job {name}: {e}", kind.as_str()));
                    return JobOutcome::Failed;
                }
            }
            if recorded.is_none() {
                self.event(
                    EventType::Normal,
                    events::JOB_CREATED,
                    format!("Created {} Job {name} for run {}", kind.as_str(), run.number),
                );
            }
            record(run, JobRef { name: name.clone(), uid: None });
            progress(run, running_reason, format!("{} Job {name} created", kind.as_str()));
            return JobOutcome::Waiting;
        };
        if let Some(uid) = recorded.as_ref().and_then(|r| r.uid.as_deref())
            && uid != job.uid
        {
            let message = format!(
                "{} Job {name} was replaced (uid {uid} became {}); its result cannot be trusted",
                kind.as_str(),
                job.uid
            );
            self.fail(run, reasons::BUILDER_JOB_LOST, message);
            return JobOutcome::Failed;
        }
        record(run, JobRef { name: name.clone(), uid: Some(job.uid.clone()) });
        match &job.state {
            JobState::Active => {
                progress(run, running_reason, format!("{} Job {name} is running", kind.as_str()));
                JobOutcome::Waiting
            }
            JobState::Failed { reason, message } => {
                let message = format!("{} Job {name} failed ({reason}): {message}", kind.as_str());
                self.fail(run, failed_reason, message);
                JobOutcome::Failed
            }
            JobState::Succeeded => match result_for_job(kind, job, &self.input.cluster.pods) {
                Ok(result) => JobOutcome::Done(result),
                Err(e) => {
                    let message = format!("{} Job {name} succeeded but its result is unusable: {e}", kind.as_str());
                    self.fail(run, invalid_reason, message);
                    JobOutcome::Failed
                }
            },
        }
    }

    fn job_inputs<'j>(
        &'j self,
        run: i64,
        inputs: &'j ResolvedInputs,
        hash: &'j str,
        targets: &'j RunTargets,
    ) -> JobInputs<'j> {
        JobInputs {
            build: self.input.build,
            run,
            inputs,
            inputs_hash: hash,
            targets,
            tools_image: &self.input.config.tools_image,
        }
    }

    fn fail(&mut self, run: &mut RunStatus, reason: &'static str, message: String) {
        self.finish_run(run, RunPhase::Failed, reason, message, true);
    }

    fn finish_run(&mut self, run: &mut RunStatus, phase: RunPhase, reason: &str, message: String, announce: bool) {
        run.phase = phase;
        run.finished_at = Some(Time(self.now));
        run.reason = Some(reason.to_string());
        run.message = Some(message.clone());
        let summary = records::summary_of(run);
        let limit = self.spec().history_limit;
        records::push_history(&mut self.status.history, summary.clone(), limit);
        match phase {
            RunPhase::Succeeded => {
                self.status.last_succeeded_run = Some(summary);
                if announce {
                    self.event(EventType::Normal, events::RUN_SUCCEEDED, format!("Run {}: {message}", run.number));
                }
            }
            RunPhase::Failed if announce => {
                self.event(
                    EventType::Warning,
                    events::RUN_FAILED,
                    format!("Run {} failed ({reason}): {message}", run.number),
                );
            }
            _ => {}
        }
    }

    fn block(&mut self, block: Block) -> Flow {
        self.run_block = Some(block);
        Flow::Stop
    }

    // ---------------------------------------------------------------------------------------
    // Registry work

    fn resolve_request(&self, purpose: ResolvePurpose) -> Result<ResolveRequest, Block> {
        let spec = self.spec();
        let lock = match &spec.input_lock {
            None => None,
            Some(source) => match (&source.inline, &source.config_map_ref) {
                (Some(inline), _) => Some(LockRequest {
                    path: "inline".into(),
                    json: serde_json::to_string_pretty(inline).unwrap_or_default(),
                }),
                (None, Some(reference)) => {
                    let where_ = format!("ConfigMap {}/{}", self.namespace, reference.name);
                    let missing = |what: String| Block { stalled: true, reason: reasons::INVALID_LOCK, message: what };
                    match &self.input.cluster.lock {
                        Some(ObservedLock::Found(json)) => Some(LockRequest {
                            path: format!("configmap/{}/{}", reference.name, reference.key),
                            json: json.clone(),
                        }),
                        Some(ObservedLock::KeyMissing) => {
                            return Err(missing(format!(
                                "spec.inputLock.configMapRef: {where_} has no key {:?}",
                                reference.key
                            )));
                        }
                        Some(ObservedLock::ConfigMapMissing) | None => {
                            return Err(missing(format!("spec.inputLock.configMapRef: {where_} not found")));
                        }
                    }
                }
                (None, None) => None,
            },
        };
        Ok(ResolveRequest {
            purpose,
            base_image: spec.base_image.clone(),
            builder_image: spec.builder_image.clone(),
            zfs_minor_version: spec.zfs.minor_version.clone(),
            akmods_ref: spec.akmods.revision.clone(),
            lock,
        })
    }

    /// Looks up the outcome of `work`, asking for it when there is none or when a failed attempt
    /// is due for a retry.
    fn lookup(&mut self, work: RegistryWork) -> Lookup<'a> {
        let results: &'a RegistryResults = self.input.registry;
        self.keep.insert(work.clone());
        let Some(result) = results.get(&work) else {
            self.work.push(work);
            return Lookup::Pending;
        };
        let WorkOutcome::Failed(failure) = &result.outcome else {
            return Lookup::Done(&result.outcome, result.at);
        };
        let delay = self.input.config.retry.delay(failure.class, result.attempts);
        let due = result
            .at
            .checked_add(SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX);
        if due <= self.now {
            self.work.push(work.clone());
        } else {
            self.wake(due);
        }
        let what = match &work {
            RegistryWork::Resolve(_) => "resolving inputs",
            RegistryWork::CheckCache(_) => "checking the akmods cache",
            RegistryWork::ConfirmAkmods(_) => "confirming the akmods image",
            RegistryWork::ConfirmImage { .. } => "confirming the candidate image",
            RegistryWork::Verify(_) => "verifying the candidate",
        };
        let retry = format!("retrying in {}s", delay.as_secs());
        Lookup::Failed(match failure.class {
            FailureClass::Transient => Block {
                stalled: false,
                reason: reasons::REGISTRY_UNAVAILABLE,
                message: format!("{what}: {} ({retry}, attempt {})", failure.message, result.attempts),
            },
            FailureClass::Unauthorized => Block {
                stalled: true,
                reason: reasons::REGISTRY_UNAUTHORIZED,
                message: format!(
                    "{what}: {}; check spec.registry.credentialsSecretRef and the registry permissions (nothing is rebuilt; {retry})",
                    failure.message
                ),
            },
            FailureClass::Permanent => Block {
                stalled: true,
                reason: if matches!(work, RegistryWork::Resolve(_)) {
                    reasons::RESOLUTION_FAILED
                } else {
                    reasons::REGISTRY_ERROR
                },
                message: format!("{what}: {} ({retry})", failure.message),
            },
        })
    }

    /// Something outside the build is missing (e.g. the lock ConfigMap): look again later even
    /// if no watch tells us it appeared.
    fn wake_after_permanent_failure(&mut self) {
        let delay = SignedDuration::try_from(self.input.config.retry.permanent).unwrap_or(SignedDuration::MAX);
        self.wake(self.now.checked_add(delay).unwrap_or(Timestamp::MAX));
    }

    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    // ---------------------------------------------------------------------------------------
    // Children

    fn delete_child(&mut self, kind: ChildKind, name: String) {
        let child = ChildRef { kind, name };
        if !self.delete.contains(&child) {
            self.delete.push(child);
        }
    }

    /// Running Jobs of any other run than the current one are left over from a supersede whose
    /// delete did not happen yet: delete them (again).
    fn delete_stray_jobs(&mut self) {
        let current = self.status.current_run.as_ref().filter(|r| !r.phase.is_terminal()).map(|r| r.number);
        let strays: Vec<String> = self
            .input
            .cluster
            .jobs
            .iter()
            .filter(|j| j.state == JobState::Active && j.run.is_some() && j.run != current)
            .map(|j| j.name.clone())
            .collect();
        for name in strays {
            self.delete_child(ChildKind::Job, name);
        }
    }

    /// The run record of the current run, and pruning of old per-run ConfigMaps.
    fn records(&mut self) {
        let cluster = self.input.cluster;
        if let Some(run) = self.status.current_run.clone()
            && let (Some(inputs), Some(resolved_at)) = (&run.inputs, &run.resolved_at)
        {
            let spec = self.spec();
            let identity = RunIdentity {
                namespace: &self.namespace,
                name: &self.name,
                run: run.number,
                source_url: &spec.source.git.url,
                source_revision: &run.source_revision,
                mode: run.mode,
                trigger: run.trigger,
            };
            let mut data = std::collections::BTreeMap::from([(
                records::BUILD_INPUTS_KEY.to_string(),
                records::build_inputs_json(&identity, inputs, resolved_at.0),
            )]);
            if let Some(provenance) = self.provenance(&run, &identity, inputs) {
                data.insert(records::PROVENANCE_KEY.to_string(), provenance);
            }
            let name = jobs::run_record_name(&self.name, run.number);
            let present = cluster.config_maps.iter().find(|c| c.name == name);
            if present.is_none_or(|c| data.keys().any(|k| !c.keys.contains(k))) {
                // Only a build without name/uid cannot be rendered, and such a build has no run.
                let hash = run.inputs_hash.as_deref().unwrap_or_default();
                if let Ok(cm) = records::run_record_config_map(self.input.build, run.number, hash, data) {
                    self.apply.insert(0, Child::ConfigMap(Box::new(cm)));
                }
            }
        }
        let keep = records::runs_to_keep(
            cluster.config_maps.iter().map(|c| c.run),
            self.status.current_run.as_ref().map(|r| r.number),
            self.status.last_succeeded_run.as_ref().map(|r| r.number),
            &cluster.pinned_runs,
            self.spec().history_limit,
        );
        let prune: Vec<String> =
            cluster.config_maps.iter().filter(|c| !keep.contains(&c.run)).map(|c| c.name.clone()).collect();
        for name in prune {
            self.delete_child(ChildKind::ConfigMap, name);
        }
    }

    fn provenance(&self, run: &RunStatus, identity: &RunIdentity, inputs: &ResolvedInputs) -> Option<String> {
        if run.phase != RunPhase::Succeeded || run.mode == BuildMode::Validate {
            return None;
        }
        let targets = run_targets(self.spec(), run.number, &inputs.fedora_version);
        let candidate = run.candidate.as_ref()?;
        let decision = run.akmods.as_ref()?;
        let (akmods_repo, akmods_digest) = decision.image.as_deref()?.rsplit_once('@')?;
        let akmods_tag = match (&targets.akmods_alias, decision.rebuilt) {
            (Some(alias), _) => alias.rsplit_once(':').map(|(_, t)| t.to_string())?,
            (None, true) => format!("{}-{}", run.number, inputs.fedora_version),
            (None, false) => format!("{CACHE_TAG_PREFIX}-{}", inputs.fedora_version),
        };
        let image =
            RefBundle::new(&targets.image_repository, candidate.tag.as_deref().unwrap_or_default(), &candidate.digest);
        let akmods = RefBundle::new(akmods_repo, &akmods_tag, akmods_digest);
        let at = run.finished_at.as_ref().map_or(self.now, |t| t.0);
        Some(records::provenance_json(identity, inputs, image, akmods, at))
    }

    fn event(&mut self, type_: EventType, reason: &'static str, note: String) {
        self.events.push(PlannedEvent { type_, reason, note });
    }

    // ---------------------------------------------------------------------------------------
    // Conditions and result

    fn finish(mut self) -> Plan {
        self.conditions();
        self.status.observed_generation = self.generation;
        let mut wake = self.wake_at;
        // A tick that is already due is waiting for registry work (and its retry time), not for
        // itself: counting it again would wake the controller every second.
        if let Some(next) = self.status.next_scheduled_at.as_ref().filter(|t| t.0 > self.now) {
            wake = Some(wake.map_or(next.0, |w| w.min(next.0)));
        }
        let requeue_after = wake.map(|at| {
            let wait = at.duration_since(self.now);
            Duration::try_from(wait).unwrap_or(Duration::ZERO).max(Duration::from_secs(1))
        });
        // ConfigMaps a Job mounts must exist first.
        self.apply.sort_by_key(|c| matches!(c, Child::Job(_)));
        Plan {
            status: self.status,
            apply: self.apply,
            delete: self.delete,
            registry_work: self.work,
            keep_results: self.keep,
            events: self.events,
            requeue_after,
        }
    }

    fn conditions(&mut self) {
        let generation = self.generation;
        let now = Time(self.now);
        let run = self.status.current_run.clone();
        let in_progress = run.as_ref().is_some_and(|r| !r.phase.is_terminal());
        let block = self.run_block.clone().or_else(|| if in_progress { None } else { self.probe_block.clone() });
        let mut desired: Vec<DesiredCondition> = step_conditions(run.as_ref(), self.run_block.as_ref());

        let (ready, reconciling, stalled) = match (&self.invalid, &run) {
            (Some(problems), _) => {
                let d = DesiredCondition::new(condition_types::READY, FALSE, reasons::INVALID_SPEC, problems.clone());
                let stalled =
                    DesiredCondition::new(condition_types::STALLED, TRUE, reasons::INVALID_SPEC, problems.clone());
                let reconciling = run.as_ref().filter(|_| in_progress).map(|r| run_progress(r, None));
                (d, reconciling, Some(stalled))
            }
            (None, None) => {
                let message = if self.spec().suspend {
                    "spec.suspend is true: no run has started"
                } else {
                    "No run has started yet"
                };
                (DesiredCondition::new(condition_types::READY, FALSE, reasons::SUSPENDED, message), None, None)
            }
            (None, Some(run)) => match (&block, in_progress) {
                (Some(b), _) if b.stalled => (
                    DesiredCondition::new(condition_types::READY, FALSE, b.reason, b.message.clone()),
                    None,
                    Some(DesiredCondition::new(condition_types::STALLED, TRUE, b.reason, b.message.clone())),
                ),
                (Some(b), _) => (
                    DesiredCondition::new(condition_types::READY, FALSE, b.reason, b.message.clone()),
                    Some(DesiredCondition::new(condition_types::RECONCILING, TRUE, b.reason, b.message.clone())),
                    None,
                ),
                (None, true) => {
                    let p = run_progress(run, None);
                    (DesiredCondition::new(condition_types::READY, FALSE, &p.reason, p.message.clone()), Some(p), None)
                }
                (None, false) => {
                    let reason = run.reason.clone().unwrap_or_else(|| format!("{:?}", run.phase));
                    let message = run.message.clone().unwrap_or_default();
                    match run.phase {
                        RunPhase::Succeeded => {
                            (DesiredCondition::new(condition_types::READY, TRUE, &reason, message), None, None)
                        }
                        _ => (
                            DesiredCondition::new(condition_types::READY, FALSE, &reason, message.clone()),
                            None,
                            Some(DesiredCondition::new(condition_types::STALLED, TRUE, &reason, message)),
                        ),
                    }
                }
            },
        };
        desired.push(ready);
        let conditions = &mut self.status.conditions;
        for d in desired {
            set_condition(conditions, d, generation, &now);
        }
        match reconciling {
            Some(d) => set_condition(conditions, d, generation, &now),
            None => remove_condition(conditions, condition_types::RECONCILING),
        }
        match stalled {
            Some(d) => set_condition(conditions, d, generation, &now),
            None => remove_condition(conditions, condition_types::STALLED),
        }
        // A stable order keeps status writes free of no-op reorderings.
        let order = |t: &str| {
            [
                condition_types::READY,
                condition_types::RECONCILING,
                condition_types::STALLED,
                step_types::INPUTS_RESOLVED,
                step_types::AKMODS_READY,
                step_types::CANDIDATE_BUILT,
                step_types::CANDIDATE_VERIFIED,
            ]
            .iter()
            .position(|x| *x == t)
            .unwrap_or(usize::MAX)
        };
        conditions.sort_by_key(|c| order(&c.type_));
    }
}

/// A status edited by hand (or written by another version) may lack what a phase relies on:
/// redo the step that produces it instead of trusting the phase.
fn back_to(run: &mut RunStatus, phase: RunPhase) -> Flow {
    run.phase = phase;
    Flow::Continue
}

fn progress(run: &mut RunStatus, reason: &str, message: impl Into<String>) {
    run.reason = Some(reason.to_string());
    run.message = Some(message.into());
}

fn run_progress(run: &RunStatus, block: Option<&Block>) -> DesiredCondition {
    match block {
        Some(b) => DesiredCondition::new(condition_types::RECONCILING, TRUE, b.reason, b.message.clone()),
        None => DesiredCondition::new(
            condition_types::RECONCILING,
            TRUE,
            run.reason.as_deref().unwrap_or(reasons::RESOLVING),
            format!("Run {}: {}", run.number, run.message.clone().unwrap_or_default()),
        ),
    }
}

/// The four step conditions of the current run.
fn step_conditions(run: Option<&RunStatus>, block: Option<&Block>) -> Vec<DesiredCondition> {
    let types = [
        step_types::INPUTS_RESOLVED,
        step_types::AKMODS_READY,
        step_types::CANDIDATE_BUILT,
        step_types::CANDIDATE_VERIFIED,
    ];
    let Some(run) = run else {
        return types
            .iter()
            .map(|t| DesiredCondition::new(t, UNKNOWN, reasons::NO_RUN, "No run has started"))
            .collect();
    };
    let failed_step =
        (run.phase == RunPhase::Failed).then(|| run.reason.as_deref().and_then(reasons::step_of)).flatten();
    let message = run.message.clone().unwrap_or_default();
    // The step the run is working on shows its progress (or what blocks it).
    let working = |t: &str, reason: &str| -> DesiredCondition {
        match block {
            Some(b) => DesiredCondition::new(t, FALSE, b.reason, b.message.clone()),
            None => DesiredCondition::new(t, FALSE, reason, message.clone()),
        }
    };
    let failed = |t: &str| DesiredCondition::new(t, FALSE, run.reason.as_deref().unwrap_or("Failed"), message.clone());

    let inputs = match &run.inputs {
        Some(i) => DesiredCondition::new(
            types[0],
            TRUE,
            reasons::RESOLVED,
            format!(
                "Run {}: {} kernel(s) {} from {} (Fedora {})",
                run.number,
                i.kernel_releases.len(),
                i.kernel_releases.join(" "),
                i.base_image_pinned,
                i.fedora_version
            ),
        ),
        None if run.phase == RunPhase::Resolving => working(types[0], reasons::RESOLVING),
        None if failed_step == Some(Step::Inputs) => failed(types[0]),
        None => {
            DesiredCondition::new(types[0], UNKNOWN, run.reason.as_deref().unwrap_or(reasons::NO_RUN), message.clone())
        }
    };
    let akmods = match run.akmods.as_ref().and_then(|a| a.image.as_ref().map(|image| (a, image))) {
        Some((a, image)) => {
            let (reason, how) =
                if a.rebuilt { (reasons::AKMODS_BUILT, "built") } else { (reasons::CACHE_REUSABLE, "reused") };
            DesiredCondition::new(types[1], TRUE, reason, format!("Run {}: akmods {how}: {image}", run.number))
        }
        None => match run.phase {
            RunPhase::CheckingCache => working(types[1], reasons::CHECKING_CACHE),
            RunPhase::BuildingAkmods => working(types[1], reasons::BUILDING_AKMODS),
            _ if failed_step == Some(Step::Akmods) => failed(types[1]),
            _ => DesiredCondition::new(types[1], UNKNOWN, reasons::WAITING_FOR_INPUTS, "Waiting for the run's inputs"),
        },
    };
    let candidate = match &run.candidate {
        Some(c) => {
            let reason = if run.mode == BuildMode::Validate {
                reasons::CANDIDATE_BUILT_NOT_PUSHED
            } else {
                reasons::CANDIDATE_PUSHED
            };
            DesiredCondition::new(types[2], TRUE, reason, format!("Run {}: {}", run.number, c.image))
        }
        None => match run.phase {
            RunPhase::BuildingImage => working(types[2], reasons::BUILDING_IMAGE),
            _ if failed_step == Some(Step::Candidate) => failed(types[2]),
            _ => DesiredCondition::new(types[2], UNKNOWN, reasons::WAITING_FOR_AKMODS, "Waiting for the akmods image"),
        },
    };
    let verified = match &run.verification {
        Some(v) if v.verified => DesiredCondition::new(types[3], TRUE, reasons::VERIFIED, message.clone()),
        Some(_) => failed(types[3]),
        None if run.mode == BuildMode::Validate && run.candidate.is_some() => DesiredCondition::new(
            types[3],
            UNKNOWN,
            reasons::NOT_PUSHED,
            "Validate mode pushes nothing, so there is nothing to verify in a registry",
        ),
        None => match run.phase {
            RunPhase::Verifying => working(types[3], reasons::VERIFYING),
            _ if failed_step == Some(Step::Verification) => failed(types[3]),
            _ => DesiredCondition::new(
                types[3],
                UNKNOWN,
                reasons::WAITING_FOR_CANDIDATE,
                "Waiting for the candidate image",
            ),
        },
    };
    vec![inputs, akmods, candidate, verified]
}

fn cache_request(image: &str, inputs: &ResolvedInputs) -> CacheRequest {
    CacheRequest {
        image: image.to_string(),
        kernel_releases: inputs.kernel_releases.clone(),
        zfs_minor_version: inputs.zfs_minor_version.clone(),
        akmods_ref: inputs.akmods_upstream_ref.clone(),
        builder_digest: inputs.build_container_digest.clone(),
    }
}

/// R4.7 for the operator: name the cache, the missing kernels, and exactly what to run.
fn fail_closed_message(mode: BuildMode, namespace: &str, name: &str, decision: &AkmodsDecision) -> String {
    let what = match decision.status {
        CacheStatus::MissingImage => "does not exist".to_string(),
        _ => {
            let mut s = format!("is {:?}", decision.status).to_lowercase();
            if !decision.missing_kernels.is_empty() {
                s.push_str(&format!(" (missing kernels: {})", decision.missing_kernels.join(" ")));
            }
            if let Some(reason) = &decision.reason {
                s.push_str(&format!(" ({reason})"));
            }
            s
        }
    };
    format!(
        "Akmods cache {} {what}; {mode:?} builds never rebuild the shared cache. Run the Main ZfsImageBuild that publishes this cache with a rebuild \
         (kubectl annotate zfsimagebuild <main-build> {REBUILD_REQUESTED_ANNOTATION}=\"$(date -u +%FT%TZ)\" --overwrite), \
         then rerun this build (kubectl -n {namespace} annotate zfsimagebuild {name} {REBUILD_REQUESTED_ANNOTATION}=\"$(date -u +%FT%TZ)\" --overwrite).",
        decision.source_image
    )
}

fn unexpected(what: &str, outcome: &WorkOutcome) -> Block {
    Block {
        stalled: true,
        reason: reasons::REGISTRY_ERROR,
        message: format!("internal error: unexpected answer to the {what} request: {outcome:?}"),
    }
}

fn join(items: &[&String]) -> String {
    items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
