//! The `Promotion` controller on kube-runtime: the watches (Promotions; ZfsImageBuilds mapped to
//! the Promotions that reference them, so a newly verified run triggers `Auto`; a changed or
//! deleted Promotion mapped to the Promotions stalled on a conflict with it), the caches the
//! observe step reads, the reconcile context and the error policy. The reconcile itself is in
//! [`super::reconcile`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use super::reasons;
use super::reconcile;
use crate::api::{Promotion, ZfsImageBuild};
use crate::controllers::conditions;
use crate::controllers::decoded::Decoded;
use crate::controllers::metrics::Metrics;
use crate::controllers::runtime::{api, backoff, log_stream_error, ready};
use crate::registry::{ClientPool, CredentialSet};

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "promotion";

pub use crate::controllers::{Clock, system_clock};

/// Retry timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// First retry after a transient registry failure or a failed reconcile; doubles per
    /// consecutive failure.
    pub backoff_base: Duration,
    /// Longest wait between those retries.
    pub backoff_max: Duration,
    /// Re-check of a `Stalled` Promotion when nothing it watches changed (a refusal by the
    /// registry can be fixed in the registry, e.g. a tag moved back).
    pub recheck: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            recheck: Duration::from_secs(15 * 60),
        }
    }
}

impl Timing {
    /// The wait before retry number `attempts` (1-based): base, doubling, capped.
    pub fn backoff(&self, attempts: u32) -> Duration {
        backoff(self.backoff_base, self.backoff_max, attempts)
    }
}

/// Settings of the Promotion controller.
#[derive(Clone)]
pub struct Settings {
    /// Promotions reconciled at the same time.
    pub concurrency: u16,
    /// Watch only this namespace (default: all).
    pub namespace: Option<String>,
    /// Credentials for builds without `spec.registry.credentialsSecretRef` (`--registry-config`).
    pub default_credentials: CredentialSet,
    pub clock: Clock,
    pub timing: Timing,
}

/// Errors of a reconcile (Kubernetes API only: registry failures are outcomes recorded in
/// status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Promotion {0} has no namespace or uid")]
    Metadata(String),
    #[error("cannot serialize the status: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl Error {
    /// A bounded label for `kzo_reconcile_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(e) => crate::controllers::metrics::api_error_kind(e),
            Error::Metadata(_) => "metadata",
            Error::Serialize(_) => "serialize",
        }
    }
}

/// The caches the observe step reads.
#[derive(Clone)]
pub struct Caches {
    pub promotions: Store<Decoded<Promotion>>,
    pub builds: Store<Decoded<ZfsImageBuild>>,
}

impl Caches {
    /// Resolves once both caches hold a complete first list (`/readyz`).
    pub async fn synced(&self) {
        ready(&self.promotions).await;
        ready(&self.builds).await;
    }
}

/// Shared state of every reconcile.
pub struct Context {
    pub(super) client: Client,
    pub(super) caches: Caches,
    pub(super) pool: Arc<ClientPool>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) recorder: Recorder,
    pub(super) default_credentials: CredentialSet,
    pub(super) clock: Clock,
    pub(super) timing: Timing,
    /// Consecutive failures per Promotion UID (transient registry failures and failed
    /// reconciles), for the backoff. In memory only: after a restart the first retry is soon.
    pub(super) failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub(super) fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Counts one more consecutive failure of `uid`; returns the count.
    pub(super) fn failed(&self, uid: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(uid.to_string()).or_default();
        *count = count.saturating_add(1);
        *count
    }

    pub(super) fn succeeded(&self, uid: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

/// A running Promotion controller.
pub struct Running {
    /// Drives the watches and reconciles until the shutdown future resolves and the reconciles
    /// in flight have finished (a promotion in flight stops after its current step at the
    /// latest when the process ends; the next controller resumes it).
    pub task: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    pub caches: Caches,
}

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

    // Promotions and builds are read one by one (`Decoded`): one object the types cannot read
    // never fails the list for the others.
    let (promotions, promotions_writer) = reflector::store::<Decoded<Promotion>>();
    // Every change of a Promotion (deletions included) may release a tag another one waits
    // for: those are sent on to the conflict mapper below.
    let (changed_tx, changed_rx) = mpsc::unbounded_channel::<Decoded<Promotion>>();
    let promotion_events = watcher(api::<Decoded<Promotion>>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(|p: &mut Decoded<Promotion>| p.managed_fields_mut().clear())
        .reflect(promotions_writer)
        .inspect_ok(move |event| {
            if let watcher::Event::Apply(p) | watcher::Event::Delete(p) = event {
                let _ = changed_tx.send(p.clone());
            }
        })
        .applied_objects();
    let changed = futures::stream::unfold(changed_rx, |mut rx| async move { rx.recv().await.map(|p| (Ok(p), rx)) });

    let (builds, builds_writer) = reflector::store::<Decoded<ZfsImageBuild>>();
    let build_events = watcher(api::<Decoded<ZfsImageBuild>>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(|b: &mut Decoded<ZfsImageBuild>| b.managed_fields_mut().clear())
        .reflect(builds_writer)
        .touched_objects();

    let caches = Caches { promotions: promotions.clone(), builds };
    let context = Arc::new(Context {
        client: client.clone(),
        caches: caches.clone(),
        pool,
        metrics,
        recorder: Recorder::new(client, Reporter { controller: "kinoite-zfs-operator".into(), instance: None }),
        default_credentials: settings.default_credentials,
        clock: settings.clock,
        timing: settings.timing,
        failures: Mutex::default(),
    });

    let referencing = promotions.clone();
    let stalled = promotions.clone();
    let controller = Controller::for_stream(promotion_events, promotions)
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        // A build's new status (a newly verified run) concerns the Promotions that take from it.
        .watches_stream(build_events, move |build: Decoded<ZfsImageBuild>| {
            let namespace = build.namespace();
            let name = build.name_any();
            referencing
                .state()
                .iter()
                .filter(|p| p.namespace() == namespace && p.typed().is_some_and(|p| p.spec.build_ref.name == name))
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(changed, move |changed: Decoded<Promotion>| waiting_on_conflict(&changed, &stalled))
        .reconcile_all_on(resync)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, context);
    let task = controller.for_each(|result| async move { log_stream_error(CONTROLLER, result) });
    Running { task: Box::pin(task), caches }
}

/// The Promotions (other than `changed`) stalled on a conflict: the change may have released
/// the tag they wait for.
fn waiting_on_conflict(
    changed: &Decoded<Promotion>,
    promotions: &Store<Decoded<Promotion>>,
) -> Vec<ObjectRef<Decoded<Promotion>>> {
    promotions
        .state()
        .iter()
        .filter(|p| p.uid() != changed.uid())
        .filter(|p| {
            p.typed().and_then(|p| p.status.as_ref()).is_some_and(|s| {
                conditions::find(&s.conditions, "Stalled").is_some_and(|c| c.reason == reasons::CONFLICTING_PROMOTION)
            })
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// A failed reconcile (Kubernetes API errors) is retried with backoff per Promotion, never in a
/// hot loop.
fn error_policy(promotion: Arc<Decoded<Promotion>>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(CONTROLLER, error.kind());
    let attempts = ctx.failed(&promotion.uid().unwrap_or_default());
    let delay = ctx.timing.backoff(attempts);
    tracing::warn!(
        promotion = %format!("{}/{}", promotion.namespace().unwrap_or_default(), promotion.name_any()),
        error = %error,
        attempts,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let timing = Timing::default();
        let secs: Vec<u64> = (1..=8).map(|n| timing.backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(timing.backoff(u32::MAX), Duration::from_secs(300));
    }
}
