//! The controllers' Prometheus metrics, served on `/metrics` by `kinoite-zfs-operator run`.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `kzo_reconciles_total` | `controller` | reconciles started |
//! | `kzo_reconcile_errors_total` | `controller`, `kind` | reconciles that failed (requeued with backoff) |
//! | `kzo_reconcile_duration_seconds` | `controller` | reconcile duration (histogram) |
//! | `kzo_runs_started_total` | `trigger` | runs started |
//! | `kzo_runs_finished_total` | `outcome`, `reason` | runs that ended (`succeeded`, `failed`, `superseded`) |
//! | `kzo_promotion_events_total` | `reason` | Promotion transitions (`PromotionStarted`, `Promoted`, `PromotionStalled`, `RegistryUnavailable`) |
//! | `kzo_registry_work_total` | `work`, `outcome` | registry work items done by the controller |
//! | `kzo_registry_requests_total` | `result` | registry HTTP answers by class (the client pool's counters) |
//! | `kzo_layer_bytes_total` | `work`, `source` | compressed layer bytes scanned by `work` (`resolve`, `check-cache`, `verify`): `source="registry"` downloaded, `source="memory"` answered by the scan memory instead |
//! | `kzo_builds` | | `ZfsImageBuild`s in the controller's cache |
//!
//! Label values are bounded sets (kinds, triggers, reasons), never object names.

use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pipeline::scan_memory::{Question, ScanMemory};
use crate::registry::RequestCounters;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// All metrics of the operator process, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    reconcile_errors: Family<Labels, Counter>,
    reconcile_duration: Family<Labels, Histogram>,
    runs_started: Family<Labels, Counter>,
    runs_finished: Family<Labels, Counter>,
    registry_work: Family<Labels, Counter>,
    promotion_events: Family<Labels, Counter>,
    builds: BuildCount,
    scan_memory: MemorySource,
}

/// Where `kzo_layer_bytes_total` is read from at scrape time (the client pool's scan memory).
type MemorySource = Arc<Mutex<Option<Arc<ScanMemory>>>>;

/// Where `kzo_builds` is read from at scrape time (the controller's cache).
type BuildCount = Arc<Mutex<Option<Box<dyn Fn() -> usize + Send + Sync>>>>;

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics whose `kzo_registry_requests_total` reads `requests` (the client pool's counters)
    /// at every scrape.
    pub fn new(requests: Arc<RequestCounters>) -> Metrics {
        let mut registry = Registry::default();
        let reconciles = Family::<Labels, Counter>::default();
        registry.register("kzo_reconciles", "Reconciles started", reconciles.clone());
        let reconcile_errors = Family::<Labels, Counter>::default();
        registry.register(
            "kzo_reconcile_errors",
            "Reconciles that failed and were requeued with backoff, by error kind",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 4.0, 9)));
        registry.register("kzo_reconcile_duration_seconds", "Reconcile duration", reconcile_duration.clone());
        let runs_started = Family::<Labels, Counter>::default();
        registry.register("kzo_runs_started", "Runs started, by trigger", runs_started.clone());
        let runs_finished = Family::<Labels, Counter>::default();
        registry.register(
            "kzo_runs_finished",
            "Runs that ended, by outcome (succeeded, failed, superseded) and reason",
            runs_finished.clone(),
        );
        let registry_work = Family::<Labels, Counter>::default();
        registry.register(
            "kzo_registry_work",
            "Registry work done by the controller (resolve, check-cache, confirm-akmods, confirm-image, verify), by outcome",
            registry_work.clone(),
        );
        let promotion_events = Family::<Labels, Counter>::default();
        registry.register(
            "kzo_promotion_events",
            "Promotion transitions (PromotionStarted, Promoted, PromotionStalled, RegistryUnavailable), by reason",
            promotion_events.clone(),
        );
        let builds = BuildCount::default();
        let scan_memory = MemorySource::default();
        registry.register_collector(Box::new(Snapshot {
            requests,
            builds: builds.clone(),
            scan_memory: scan_memory.clone(),
        }));
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            runs_started,
            runs_finished,
            registry_work,
            promotion_events,
            builds,
            scan_memory,
        }
    }

    pub fn reconcile_started(&self, controller: &str) {
        self.reconciles.get_or_create(&labels(&[("controller", controller)])).inc();
    }

    pub fn reconcile_failed(&self, controller: &str, kind: &str) {
        self.reconcile_errors.get_or_create(&labels(&[("controller", controller), ("kind", kind)])).inc();
    }

    pub fn reconcile_duration(&self, controller: &str, seconds: f64) {
        self.reconcile_duration.get_or_create(&labels(&[("controller", controller)])).observe(seconds);
    }

    pub fn run_started(&self, trigger: &str) {
        self.runs_started.get_or_create(&labels(&[("trigger", trigger)])).inc();
    }

    pub fn run_finished(&self, outcome: &str, reason: &str) {
        self.runs_finished.get_or_create(&labels(&[("outcome", outcome), ("reason", reason)])).inc();
    }

    pub fn registry_work(&self, work: &str, outcome: &str) {
        self.registry_work.get_or_create(&labels(&[("work", work), ("outcome", outcome)])).inc();
    }

    pub fn promotion_event(&self, reason: &str) {
        self.promotion_events.get_or_create(&labels(&[("reason", reason)])).inc();
    }

    /// `kzo_builds` reads `count` at every scrape.
    pub fn count_builds_with(&self, count: impl Fn() -> usize + Send + Sync + 'static) {
        *self.builds.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(count));
    }

    /// `kzo_layer_bytes_total` reads `memory`'s byte counters at every scrape.
    pub fn count_layer_bytes_from(&self, memory: Arc<ScanMemory>) {
        *self.scan_memory.lock().unwrap_or_else(|e| e.into_inner()) = Some(memory);
    }

    /// The Prometheus text format (0.0.4) of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a metric.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        text
    }
}

/// A bounded label for `kzo_reconcile_errors_total{kind}` of a Kubernetes API error.
pub fn api_error_kind(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) => match status.code {
            409 => "conflict",
            403 => "forbidden",
            404 => "not_found",
            400 | 422 => "invalid",
            429 => "throttled",
            500..=599 => "server",
            _ => "api",
        },
        _ => "transport",
    }
}

/// `Content-Type` of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Values read at scrape time from state kept elsewhere.
struct Snapshot {
    requests: Arc<RequestCounters>,
    builds: BuildCount,
    scan_memory: MemorySource,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot").finish_non_exhaustive()
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let family = Family::<Labels, Counter>::default();
        for (result, count) in self.requests.snapshot() {
            family.get_or_create(&labels(&[("result", result)])).inc_by(count);
        }
        let metric = encoder.encode_descriptor(
            "kzo_registry_requests",
            "Registry HTTP answers (token requests included) by class: present, absent, unauthorized, rate_limited, unreachable, rejected",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)?;
        let count = self.builds.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |count| count());
        let builds = ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "kzo_builds",
            "ZfsImageBuilds in the controller's cache",
            None,
            builds.metric_type(),
        )?;
        builds.encode(metric)?;
        let memory = self.scan_memory.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let family = Family::<Labels, Counter>::default();
        for question in Question::ALL {
            let (read, remembered) =
                memory.as_ref().map_or((0, 0), |m| (m.bytes_read(question), m.bytes_remembered(question)));
            let work = question.work_label();
            family.get_or_create(&labels(&[("work", work), ("source", "registry")])).inc_by(read);
            family.get_or_create(&labels(&[("work", work), ("source", "memory")])).inc_by(remembered);
        }
        let metric = encoder.encode_descriptor(
            "kzo_layer_bytes",
            "Compressed layer bytes scanned, by registry work (resolve, check-cache, verify) and source: registry (downloaded) or memory (answered by the scan memory)",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::AnswerClass;

    #[test]
    fn text_format_has_every_family() {
        let requests = Arc::new(RequestCounters::new());
        requests.record(AnswerClass::Present);
        requests.record(AnswerClass::Unauthorized);
        let metrics = Metrics::new(requests);
        metrics.reconcile_started("ZfsImageBuild");
        metrics.reconcile_failed("ZfsImageBuild", "kube");
        metrics.reconcile_duration("ZfsImageBuild", 0.02);
        metrics.run_started("Created");
        metrics.run_finished("failed", "ImageJobFailed");
        metrics.registry_work("resolve", "ok");
        metrics.count_builds_with(|| 3);
        let memory = Arc::new(ScanMemory::default());
        memory.record(Question::Kernels, Some(1000), 1000);
        memory.record(Question::Kernels, None, 700);
        memory.record(Question::Verify, Some(5), 5);
        metrics.count_layer_bytes_from(memory);
        let text = metrics.encode();
        for line in [
            "kzo_reconciles_total{controller=\"ZfsImageBuild\"} 1",
            "kzo_reconcile_errors_total{controller=\"ZfsImageBuild\",kind=\"kube\"} 1",
            "kzo_reconcile_duration_seconds_count{controller=\"ZfsImageBuild\"} 1",
            "kzo_runs_started_total{trigger=\"Created\"} 1",
            "kzo_runs_finished_total{outcome=\"failed\",reason=\"ImageJobFailed\"} 1",
            "kzo_registry_work_total{work=\"resolve\",outcome=\"ok\"} 1",
            "kzo_registry_requests_total{result=\"present\"} 1",
            "kzo_registry_requests_total{result=\"unauthorized\"} 1",
            "kzo_registry_requests_total{result=\"absent\"} 0",
            "kzo_builds 3",
            "kzo_layer_bytes_total{work=\"resolve\",source=\"registry\"} 1000",
            "kzo_layer_bytes_total{work=\"resolve\",source=\"memory\"} 700",
            "kzo_layer_bytes_total{work=\"verify\",source=\"registry\"} 5",
            "kzo_layer_bytes_total{work=\"check-cache\",source=\"registry\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(text.contains("# TYPE kzo_registry_requests_total counter"), "{text}");
    }
}
