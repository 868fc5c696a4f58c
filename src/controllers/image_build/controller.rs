//! The `ZfsImageBuild` controller on kube-runtime: one watch per kind feeds both the
//! controller's triggers and the caches the observe step reads (builds, their Jobs, the Jobs'
//! Pods, their ConfigMaps, and Promotions, which pin runs), the reconcile context, and the error
//! policy. The reconcile itself is in [`super::reconcile`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::executor::Executor;
use super::plan::ControllerConfig;
use super::reconcile;
use super::work::{RegistryResults, RetryPolicy};
use crate::api::{Promotion, ZfsImageBuild};
use crate::controllers::decoded::Decoded;
use crate::controllers::metrics::Metrics;
use crate::controllers::runtime::{api, backoff, log_stream_error, ready};
use crate::jobs::{LABEL_MANAGED_BY, MANAGER};
use crate::registry::{ClientPool, CredentialSet};

/// Name of this controller in metrics, logs and as the Events' reporting controller.
pub const CONTROLLER: &str = "zfsimagebuild";

pub use crate::controllers::{Clock, system_clock};

/// Settings of the build controller.
#[derive(Clone)]
pub struct Settings {
    /// Operator image providing the builder entrypoint (`install-builder` init container).
    pub tools_image: String,
    /// Retry timing of failed registry work.
    pub retry: RetryPolicy,
    /// Builds reconciled at the same time.
    pub concurrency: u16,
    /// Watch only this namespace (default: all).
    pub namespace: Option<String>,
    /// Credentials for builds without `spec.registry.credentialsSecretRef` (`--registry-config`).
    pub default_credentials: CredentialSet,
    /// Where "now" comes from.
    pub clock: Clock,
}

/// Errors of a reconcile. Registry failures are not errors: they are outcomes the planner turns
/// into conditions and its own retry timing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("ZfsImageBuild {0} has no namespace or uid")]
    Metadata(String),
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A bounded label for `kzo_reconcile_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(e) => crate::controllers::metrics::api_error_kind(e),
            Error::Metadata(_) => "metadata",
            Error::Serialize { .. } => "serialize",
        }
    }
}

/// The caches the observe step reads (filled by the controller's watches).
#[derive(Clone)]
pub struct Caches {
    pub builds: Store<Decoded<ZfsImageBuild>>,
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
    pub config_maps: Store<ConfigMap>,
    pub promotions: Store<Decoded<Promotion>>,
}

impl Caches {
    /// Resolves once every cache holds a complete first list (`/readyz`).
    pub async fn synced(&self) {
        ready(&self.builds).await;
        ready(&self.jobs).await;
        ready(&self.pods).await;
        ready(&self.config_maps).await;
        ready(&self.promotions).await;
    }
}

/// What the controller keeps per build between reconciles (in memory only: after a restart the
/// reads are simply done again; everything decided is in the build's status).
#[derive(Default)]
pub(super) struct Memory {
    /// Outcomes of registry work, per build UID.
    pub(super) results: HashMap<String, RegistryResults>,
    /// Consecutive reconcile errors, per build UID (error backoff).
    pub(super) errors: HashMap<String, u32>,
}

/// Shared state of every reconcile.
pub struct Context {
    pub(super) client: Client,
    pub(super) caches: Caches,
    pub(super) pool: Arc<ClientPool>,
    pub(super) executor: Executor,
    pub(super) recorder: Recorder,
    pub(super) metrics: Arc<Metrics>,
    pub(super) config: ControllerConfig,
    pub(super) default_credentials: CredentialSet,
    pub(super) clock: Clock,
    pub(super) memory: Mutex<Memory>,
}

impl Context {
    pub(super) fn now(&self) -> Timestamp {
        (self.clock)()
    }

    pub(super) fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters.
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running build controller.
pub struct Running {
    /// Drives the watches and reconciles until the shutdown future resolves and the reconciles
    /// in flight have finished.
    pub task: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The caches (for readiness).
    pub caches: Caches,
}

/// First retry after a failed reconcile; doubles per consecutive failure (`runtime::backoff`).
const ERROR_BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest wait between retries of a failing reconcile.
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Sets up the watches and the controller. Nothing runs until `task` is polled.
pub fn start(
    client: Client,
    settings: Settings,
    pool: Arc<ClientPool>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    resync: impl Stream<Item = ()> + Send + 'static,
) -> Running {
    let ns = settings.namespace.as_deref();
    let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));

    // Cached objects are trimmed to what observe reads: managedFields never, Job and Pod specs
    // never (the planner reads Job conditions and the builder's termination only), ConfigMap
    // values never (the planner reads which keys a run record has). This keeps the operator's
    // memory flat in the number of builds and runs.
    // Builds and Promotions are read one by one (`Decoded`): one object the types cannot read
    // never fails the list for the others.
    let (builds, builds_writer) = reflector::store::<Decoded<ZfsImageBuild>>();
    let build_events = watcher(api::<Decoded<ZfsImageBuild>>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(|b: &mut Decoded<ZfsImageBuild>| b.managed_fields_mut().clear())
        .reflect(builds_writer)
        .applied_objects();
    let (jobs, jobs_writer) = reflector::store::<Job>();
    let job_events = watcher(api::<Job>(&client, ns), managed.clone())
        .default_backoff()
        .modify(|j: &mut Job| {
            j.managed_fields_mut().clear();
            j.spec = None;
        })
        .reflect(jobs_writer)
        .touched_objects();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let pod_events = watcher(api::<Pod>(&client, ns), managed.clone())
        .default_backoff()
        .modify(|p: &mut Pod| {
            p.managed_fields_mut().clear();
            p.spec = None;
        })
        .reflect(pods_writer)
        .touched_objects();
    let (config_maps, config_maps_writer) = reflector::store::<ConfigMap>();
    let config_map_events = watcher(api::<ConfigMap>(&client, ns), managed)
        .default_backoff()
        .modify(|c: &mut ConfigMap| {
            c.managed_fields_mut().clear();
            c.binary_data = None;
            for value in c.data.iter_mut().flat_map(|d| d.values_mut()) {
                value.clear();
            }
        })
        .reflect(config_maps_writer)
        .touched_objects();
    let (promotions, promotions_writer) = reflector::store::<Decoded<Promotion>>();
    let promotion_events = watcher(api::<Decoded<Promotion>>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(|p: &mut Decoded<Promotion>| p.managed_fields_mut().clear())
        .reflect(promotions_writer)
        .touched_objects();

    let caches = Caches { builds: builds.clone(), jobs: jobs.clone(), pods, config_maps, promotions };
    let counted = builds.clone();
    metrics.count_builds_with(move || counted.len());
    // The pool's scan memory: every build of the process shares what was learned from a layer.
    let executor = Executor::with_memory(pool.scan_memory().clone());
    let context = Arc::new(Context {
        client: client.clone(),
        caches: caches.clone(),
        pool,
        executor,
        recorder: Recorder::new(client, Reporter { controller: "kinoite-zfs-operator".into(), instance: None }),
        metrics,
        config: ControllerConfig { tools_image: settings.tools_image, retry: settings.retry },
        default_credentials: settings.default_credentials,
        clock: settings.clock,
        memory: Mutex::default(),
    });

    let pod_owner_jobs = jobs.clone();
    let controller = Controller::for_stream(build_events, builds)
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        .owns_stream(job_events)
        .owns_stream(config_map_events)
        // A builder pod is owned by its Job, not by the build: map it through the Job's owner.
        .watches_stream(pod_events, move |pod: Pod| build_of_pod(&pod, &pod_owner_jobs))
        // Promotions pin runs (kept past historyLimit); their build is named in the spec.
        .watches_stream(promotion_events, |promotion: Decoded<Promotion>| {
            let build = &promotion.typed()?.spec.build_ref.name;
            promotion.namespace().map(|ns| ObjectRef::<Decoded<ZfsImageBuild>>::new(build).within(&ns))
        })
        .reconcile_all_on(resync)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, context);
    let task = controller.for_each(|result| async move { log_stream_error(CONTROLLER, result) });
    Running { task: Box::pin(task), caches }
}

/// The build that owns the Job that owns `pod`.
fn build_of_pod(pod: &Pod, jobs: &Store<Job>) -> Option<ObjectRef<Decoded<ZfsImageBuild>>> {
    let ns = pod.namespace()?;
    let job_name = &pod.owner_references().iter().find(|o| o.kind == "Job" && o.controller == Some(true))?.name;
    let job = jobs.get(&ObjectRef::<Job>::new(job_name).within(&ns))?;
    let owner = job.owner_references().iter().find(|o| o.kind == "ZfsImageBuild" && o.controller == Some(true))?;
    Some(ObjectRef::new(&owner.name).within(&ns))
}

/// A failed reconcile is retried with backoff per build (5 s doubling to 5 min), never in a hot
/// loop; the error is logged and counted.
fn error_policy(build: Arc<Decoded<ZfsImageBuild>>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(CONTROLLER, error.kind());
    let uid = build.uid().unwrap_or_default();
    let attempts = {
        let mut memory = ctx.memory();
        let count = memory.errors.entry(uid).or_default();
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(ERROR_BACKOFF_BASE, ERROR_BACKOFF_MAX, attempts);
    tracing::warn!(
        build = %format!("{}/{}", build.namespace().unwrap_or_default(), build.name_any()),
        error = %error,
        attempts,
        retry_in_s = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}
