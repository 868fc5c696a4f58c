//! One reconcile of a `ZfsImageBuild`: observe -> plan (pure, [`super::plan::plan`]) -> registry
//! work and plan again -> status -> children -> events -> requeue.
//!
//! The status is written before the children are applied. A status write that fails after a Job
//! was created would leave a Job of a run the status does not know, and the next plan would start
//! another run beside it; the other way round, the next plan finds its run recorded and creates
//! the missing Job (deterministic name, server-side apply), so a crash between the two writes
//! converges without a duplicate.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType as KubeEventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info};

use super::controller::{CONTROLLER, Context, Error};
use super::executor::outcome_label;
use super::observed::{ObservedCluster, observe_config_map, observe_lock, pinned_runs};
use super::plan::{Child, ChildKind, EventType, Plan, PlanInput, plan};
use super::reasons::events;
use super::work::{FailureClass, RegistryFailure, RegistryResults, WorkOutcome};
use crate::api::{Promotion, ZfsImageBuild};
use crate::controllers::decoded::{Decoded, record_unreadable};
use crate::controllers::runtime::{CACHE_RETRY, CACHE_WAIT, MAX_EVENT_NOTE, secret_credentials, truncate};
use crate::jobs::MANAGER;
use crate::jobs::observe::{JobState, ObservedJob, ObservedPod, observe_job, observe_pod};
use crate::registry::OciRegistry;

/// Plans per reconcile at most: each pass answers the registry work of the previous one. A run
/// needs at most four in a row (resolve, cache, confirm, verify); the bound only guards against
/// a planner that keeps asking.
const MAX_PASSES: usize = 8;

pub(super) async fn reconcile(cached: Arc<Decoded<ZfsImageBuild>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconcile_started(CONTROLLER);
    if ctx.memory().results.len() > ctx.caches.builds.len() {
        // Deleted builds are never reconciled again: drop what was kept for them.
        forget_deleted_builds(&ctx);
    }
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let span = tracing::info_span!(
        "reconcile",
        kind = "ZfsImageBuild",
        namespace = %namespace,
        name = %name,
        generation = tracing::field::Empty
    );
    let result = tracing::Instrument::instrument(reconcile_build(&namespace, &name, &ctx), span).await;
    ctx.metrics.reconcile_duration(CONTROLLER, started.elapsed().as_secs_f64());
    if result.is_ok()
        && let Some(uid) = cached.uid()
    {
        ctx.memory().errors.remove(&uid);
    }
    result
}

async fn reconcile_build(namespace: &str, name: &str, ctx: &Context) -> Result<Action, Error> {
    // kube-runtime starts reconciling once the builds are listed; the Jobs, Pods and ConfigMaps
    // may still be loading. Observing a half-loaded cache would report a recorded Job as lost.
    // The wait is bounded so that a cache that cannot list (RBAC, an outage) never holds a
    // reconcile, and with it shutdown, forever.
    if tokio::time::timeout(CACHE_WAIT, ctx.caches.synced()).await.is_err() {
        debug!("caches not synced yet");
        return Ok(Action::requeue(CACHE_RETRY));
    }
    // The cache can lag behind this controller's own last status write; planning from a stale
    // status could start a run twice. A read from the API server is always current.
    let decoded = Api::<Decoded<ZfsImageBuild>>::namespaced(ctx.client.clone(), namespace);
    let build = match decoded.get_opt(name).await? {
        None => return Ok(Action::await_change()),
        Some(Decoded::Typed(build)) => build,
        Some(Decoded::Unreadable(unreadable)) => {
            // Any edit of the object is a watch event: nothing to come back for before that.
            record_unreadable(&decoded, &ctx.recorder, &unreadable, &Time(ctx.now())).await?;
            return Ok(Action::await_change());
        }
    };
    let builds = Api::<ZfsImageBuild>::namespaced(ctx.client.clone(), namespace);
    if build.meta().deletion_timestamp.is_some() {
        // Owner references delete the children; nothing outside the cluster is undone.
        return Ok(Action::await_change());
    }
    let uid = build.uid().ok_or_else(|| Error::Metadata(format!("{namespace}/{name}")))?;
    tracing::Span::current().record("generation", build.meta().generation);

    let cluster = observe(&build, namespace, &uid, ctx).await?;
    let mut results = ctx.memory().results.get(&uid).cloned().unwrap_or_default();
    let planned = plan_with_registry(&build, &cluster, &mut results, ctx).await?;
    results.retain(&planned.keep_results);
    ctx.memory().results.insert(uid, results);

    let status_written = write_status(&builds, &build, &planned).await?;
    apply_children(namespace, &planned, ctx).await?;
    publish_events(&build, &planned, ctx).await;

    let action = match planned.requeue_after {
        Some(after) => Action::requeue(after),
        // Only when the pass bound was hit: come back soon rather than wait for a watch event.
        None if !planned.registry_work.is_empty() => Action::requeue(Duration::from_secs(1)),
        None => Action::await_change(),
    };
    debug!(
        status_written,
        applied = planned.apply.len(),
        deleted = planned.delete.len(),
        requeue_s = planned.requeue_after.map(|d| d.as_secs()),
        "reconciled"
    );
    Ok(action)
}

/// Plans, does the registry work the plan asks for, and plans again until no work is left.
/// Only the final plan is applied: each pass starts from the same status, so it contains every
/// transition of the earlier ones.
async fn plan_with_registry(
    build: &ZfsImageBuild,
    cluster: &ObservedCluster,
    results: &mut RegistryResults,
    ctx: &Context,
) -> Result<Plan, Error> {
    let plan_now = |results: &RegistryResults| {
        plan(&PlanInput { build, cluster, registry: results, config: &ctx.config, now: ctx.now() })
    };
    let mut planned = plan_now(results);
    // The build's registry client is made once per reconcile, and only when there is work.
    let mut registry: Option<Result<Arc<OciRegistry>, RegistryFailure>> = None;
    for _ in 0..MAX_PASSES {
        if planned.registry_work.is_empty() {
            break;
        }
        if registry.is_none() {
            registry = Some(registry_for(build, ctx).await?);
        }
        let Some(client) = registry.as_ref() else { break };
        for work in &planned.registry_work {
            let outcome = match client {
                Ok(client) => ctx.executor.execute(client, work).await,
                Err(failure) => WorkOutcome::Failed(failure.clone()),
            };
            let label = outcome_label(&outcome);
            ctx.metrics.registry_work(work.kind(), label);
            match &outcome {
                WorkOutcome::Failed(failure) => {
                    info!(work = work.kind(), outcome = label, message = %failure.message, "registry work")
                }
                _ => debug!(work = work.kind(), outcome = label, "registry work"),
            }
            results.record(work.clone(), outcome, ctx.now());
        }
        planned = plan_now(results);
    }
    Ok(planned)
}

// ---------------------------------------------------------------------------------------------
// Observe

/// The build's children and related objects as plain data, from the caches. A builder pod that
/// the cache has not seen yet for a Job that already succeeded is read from the API server: the
/// Job and Pod watches are independent, and a Job's `Complete` may arrive first.
async fn observe(build: &ZfsImageBuild, namespace: &str, uid: &str, ctx: &Context) -> Result<ObservedCluster, Error> {
    let owned = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.namespace.as_deref() == Some(namespace)
            && meta.owner_references.iter().flatten().any(|o| o.controller == Some(true) && o.uid == uid)
    };
    let jobs: Vec<ObservedJob> =
        ctx.caches.jobs.state().iter().filter(|j| owned(j.meta())).filter_map(|j| observe_job(j)).collect();
    let job_uids: BTreeSet<&str> = jobs.iter().map(|j| j.uid.as_str()).collect();
    let mut pods: Vec<ObservedPod> = ctx
        .caches
        .pods
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .map(|p| observe_pod(p))
        .filter(|p| p.job_uid.as_deref().is_some_and(|u| job_uids.contains(u)))
        .collect();
    let current_run = build.status.as_ref().and_then(|s| s.current_run.as_ref()).filter(|r| !r.phase.is_terminal());
    for job in &jobs {
        let awaited = current_run.is_some_and(|r| job.run == Some(r.number)) && job.state == JobState::Succeeded;
        if awaited && !has_result_pod(&pods, &job.uid) {
            let api = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
            let selector = format!("batch.kubernetes.io/controller-uid={}", job.uid);
            for pod in api.list(&ListParams::default().labels(&selector)).await? {
                // The fresh read wins over a cached copy that may predate the termination.
                let observed = observe_pod(&pod);
                pods.retain(|p| p.name != observed.name);
                pods.push(observed);
            }
        }
    }
    let config_maps = ctx
        .caches
        .config_maps
        .state()
        .iter()
        .filter(|c| owned(c.meta()))
        .filter_map(|c| observe_config_map(c))
        .collect();
    let promotions: Vec<Promotion> = ctx
        .caches
        .promotions
        .state()
        .iter()
        .filter_map(|p| p.typed())
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .cloned()
        .collect();
    let lock_source = build.spec.input_lock.as_ref();
    let lock_config_map = match lock_source.and_then(|l| l.config_map_ref.as_ref()) {
        // The lock ConfigMap is the user's, not ours: read it, do not cache every ConfigMap.
        Some(reference) => Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace).get_opt(&reference.name).await?,
        None => None,
    };
    Ok(ObservedCluster {
        jobs,
        pods,
        config_maps,
        pinned_runs: pinned_runs(build, &promotions),
        lock: observe_lock(lock_source, lock_config_map.as_ref()),
    })
}

fn has_result_pod(pods: &[ObservedPod], job_uid: &str) -> bool {
    pods.iter().any(|p| p.job_uid.as_deref() == Some(job_uid) && p.builder.as_ref().is_some_and(|t| t.exit_code == 0))
}

/// The registry client for `build`: its credentials Secret when it names one, else the
/// operator's `--registry-config`. A Secret that is missing, unreadable or not a docker config
/// is a failure of every registry request (`Unauthorized`: nothing is rebuilt because of it).
async fn registry_for(
    build: &ZfsImageBuild,
    ctx: &Context,
) -> Result<Result<Arc<OciRegistry>, RegistryFailure>, Error> {
    let unauthorized = |message: String| Ok(Err(RegistryFailure { class: FailureClass::Unauthorized, message }));
    let credentials = match &build.spec.registry.credentials_secret_ref {
        None => ctx.default_credentials.clone(),
        Some(reference) => {
            let namespace = build.namespace().unwrap_or_default();
            let what =
                format!("credentials Secret {namespace}/{} (spec.registry.credentialsSecretRef)", reference.name);
            match secret_credentials(&ctx.client, &namespace, &reference.name, &what).await? {
                Ok(set) => set,
                Err(message) => return unauthorized(message),
            }
        }
    };
    Ok(ctx
        .pool
        .client(&credentials)
        .map_err(|e| RegistryFailure { class: FailureClass::Permanent, message: e.to_string() }))
}

// ---------------------------------------------------------------------------------------------
// Act

/// Writes the planned status with server-side apply, only when it differs from the current one
/// (a converged build causes no writes). Returns whether it wrote.
async fn write_status(builds: &Api<ZfsImageBuild>, build: &ZfsImageBuild, planned: &Plan) -> Result<bool, Error> {
    let current = serde_json::to_value(build.status.clone().unwrap_or_default())
        .map_err(|source| Error::Serialize { what: "the current status", source })?;
    let next =
        serde_json::to_value(&planned.status).map_err(|source| Error::Serialize { what: "the status", source })?;
    if current == next {
        return Ok(false);
    }
    let patch = json!({
        "apiVersion": ZfsImageBuild::api_version(&()),
        "kind": ZfsImageBuild::kind(&()),
        "status": next,
    });
    builds.patch_status(&build.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(patch)).await?;
    Ok(true)
}

/// Server-side applies the children in the plan's order (a ConfigMap a Job mounts first), then
/// deletes (Jobs with background propagation so their pods go too). A child already gone is fine.
async fn apply_children(namespace: &str, planned: &Plan, ctx: &Context) -> Result<(), Error> {
    let params = PatchParams::apply(MANAGER).force();
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), namespace);
    let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
    for child in &planned.apply {
        match child {
            Child::ConfigMap(cm) => {
                config_maps.patch(child.name(), &params, &Patch::Apply(cm.as_ref())).await?;
            }
            Child::Job(job) => {
                jobs.patch(child.name(), &params, &Patch::Apply(job.as_ref())).await?;
            }
        }
        debug!(child = child.name(), "applied");
    }
    for child in &planned.delete {
        let result = match child.kind {
            ChildKind::Job => jobs
                .delete(
                    &child.name,
                    &DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() },
                )
                .await
                .map(|_| ()),
            ChildKind::ConfigMap => config_maps.delete(&child.name, &DeleteParams::default()).await.map(|_| ()),
        };
        match result {
            Ok(()) => debug!(child = %child.name, "deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Emits the plan's Events (transitions only) and counts runs. Events are notification, not
/// audit: a failed publish is logged, never retried by failing the reconcile (the transition is
/// already recorded in the status, so a retry would not emit it again anyway).
async fn publish_events(build: &ZfsImageBuild, planned: &Plan, ctx: &Context) {
    // The build at the version whose transition the events report. kube's Recorder folds events
    // with the same reason about the same object into one series for six minutes, keeping the
    // first note; with the version in the reference, each transition (run 2's RunStarted after
    // run 1's, the image Job's JobCreated after the akmods Job's) stays its own Event.
    let mut reference = build.object_ref(&());
    reference.resource_version = build.resource_version();
    let run = planned.status.current_run.as_ref();
    for event in &planned.events {
        match event.reason {
            events::RUN_STARTED => {
                ctx.metrics.run_started(&run.map(|r| format!("{:?}", r.trigger)).unwrap_or_default())
            }
            events::RUN_SUCCEEDED => ctx.metrics.run_finished("succeeded", super::reasons::SUCCEEDED),
            events::RUN_FAILED => {
                ctx.metrics.run_finished("failed", run.and_then(|r| r.reason.as_deref()).unwrap_or("Failed"))
            }
            events::RUN_SUPERSEDED => ctx.metrics.run_finished("superseded", super::reasons::SUPERSEDED),
            _ => {}
        }
        info!(reason = event.reason, note = %event.note, "event");
        let published = Event {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.to_string(),
            note: Some(truncate(&event.note, MAX_EVENT_NOTE)),
            action: event.reason.to_string(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&published, &reference).await {
            tracing::warn!(reason = event.reason, error = %e, "cannot publish event");
        }
    }
}

/// Drops the in-memory state of builds that no longer exist.
fn forget_deleted_builds(ctx: &Context) {
    let live: BTreeSet<String> = ctx.caches.builds.state().iter().filter_map(|b| b.uid()).collect();
    let mut memory = ctx.memory();
    memory.results.retain(|uid, _| live.contains(uid));
    memory.errors.retain(|uid, _| live.contains(uid));
}
