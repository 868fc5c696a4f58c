//! End-to-end tests of the operator (the `ZfsImageBuild` controller, and with it the `Promotion`
//! controller): the real controllers (in-process through `operator::Operator`, and the `run` binary) against the Kubernetes API simulator and the
//! `docker-registry` fixture behind htpasswd auth, with per-build credentials from a
//! `kubernetes.io/dockerconfigjson` Secret.
//!
//! Builder Jobs are completed the envtest way: the test pushes what the builder would have
//! pushed (synthetic images from tests/support/image.rs), creates the Job's pod with the
//! builder's termination message per the result contract, and sets the Job's `Complete` (or
//! `Failed`) condition. Time is a test clock the controller reads as "now"; schedule ticks are
//! reached by moving it and asking the controller to reconcile every build.

mod binary;
mod deploy;
mod failures;
mod plan;
mod promotion;
mod real_builder;
mod runs;
mod unreadable;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::support::apisim::ApiSim;
use crate::support::image::{Entry, ImageSpec, Layer, OCI_MANIFEST, PushedImage, Pusher};
use crate::support::init;
use crate::support::registry::Registry;
use kinoite_zfs_operator::api::ZfsImageBuild;
use kinoite_zfs_operator::api::build::DEFAULT_AKMODS_REVISION;
use kinoite_zfs_operator::controllers::image_build::controller::Settings as BuildSettings;
use kinoite_zfs_operator::controllers::image_build::work::RetryPolicy;
use kinoite_zfs_operator::controllers::promotion::controller::{Settings as PromotionSettings, Timing};
use kinoite_zfs_operator::operator::{Operator, Settings};
use kinoite_zfs_operator::pipeline::cache::labels;
use kinoite_zfs_operator::registry::{ClientPool, CredentialSet, RequestCounters};

pub const NS: &str = "kinoite-builds";
/// The registry namespace (`<org>`) of every image in these tests.
pub const ORG: &str = "danathar";
pub const K1: &str = "6.18.9-200.fc43.x86_64";
pub const K2: &str = "6.18.12-200.fc43.x86_64";
pub const K3: &str = "6.18.13-200.fc43.x86_64";
pub const REVISION: &str = "02701fe4c3b2a1908f7e6d5c4b3a29180f7e6d5c";
pub const SECRET: &str = "registry-push";
pub const USER: &str = "builder";
pub const PASSWORD: &str = "s3cret-push-password";
pub const TOOLS_IMAGE: &str =
    "example.test/kinoite-zfs-operator@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const BASE_REPO: &str = "danathar/kinoite-main";
const BUILDER_REPO: &str = "danathar/devcontainer";
pub const CANDIDATE_REPO: &str = "danathar/kinoite-zfs-candidate";
pub const CANDIDATE_AKMODS_REPO: &str = "danathar/kinoite-zfs-bluebuild-akmods-candidate";
/// The first test time: a day before any schedule tick used here.
pub const T0: &str = "2026-03-01T05:00:00Z";

/// The time the controller sees.
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<Timestamp>>);

impl TestClock {
    pub fn new(start: &str) -> TestClock {
        TestClock(Arc::new(Mutex::new(start.parse().expect("RFC 3339 start time"))))
    }
    pub fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
    pub fn advance(&self, seconds: i64) {
        let mut t = self.0.lock().unwrap();
        *t = t.checked_add(SignedDuration::from_secs(seconds)).unwrap();
    }
}

/// A Kinoite-like base with these kernels (`lib -> usr/lib`, one `vmlinuz` per kernel), the two
/// labels resolution reads.
pub fn base_image(kernels: &[&str], version: &str) -> ImageSpec {
    let mut entries =
        vec![Entry::symlink("lib", "usr/lib"), Entry::executable("usr/bin/rpm-ostree", b"rpm-ostree".to_vec())];
    for k in kernels {
        entries.push(Entry::file(&format!("usr/lib/modules/{k}/vmlinuz"), format!("kernel {k}").into_bytes()));
    }
    ImageSpec::new(vec![
        Layer::gzip(entries),
        Layer::gzip(vec![Entry::file("etc/os-release", b"NAME=Kinoite\n".to_vec())]),
    ])
    .label("ostree.linux", kernels.last().copied().unwrap_or_default())
    .label("org.opencontainers.image.version", version)
}

/// An akmods cache image as the akmods Job pushes it: kmod RPMs for `kernels` and the cache
/// labels recording the inputs it was built from.
pub fn akmods_image(kernels: &[&str], builder_digest: &str) -> ImageSpec {
    let mut entries = vec![
        Entry::dir("rpms/kmods/zfs"),
        Entry::file("rpms/kmods/zfs/zfs-2.4.1-1.fc43.x86_64.rpm", b"userspace".to_vec()),
    ];
    for k in kernels {
        entries.push(Entry::file(
            &format!("rpms/kmods/zfs/kmod-zfs-{k}-2.4.1-1.fc43.x86_64.rpm"),
            format!("kmod for {k}").into_bytes(),
        ));
    }
    ImageSpec::new(vec![Layer::gzip(entries)])
        .label(labels::CACHE_FORMAT, labels::FORMAT_VERSION)
        .label(labels::KERNEL_RELEASES, &kernels.join(" "))
        .label(labels::ZFS_MINOR_VERSION, "2.4")
        .label(labels::AKMODS_REF, DEFAULT_AKMODS_REVISION)
        .label(labels::BUILDER_DIGEST, builder_digest)
}

/// A candidate as the image Job pushes it: the base's layers plus a ZFS layer (commands and a
/// `zfs.ko.xz` per kernel).
pub fn candidate_image(base: &ImageSpec, kernels: &[&str]) -> ImageSpec {
    let mut entries = vec![
        Entry::executable("usr/sbin/zfs", b"zfs".to_vec()),
        Entry::executable("usr/sbin/zpool", b"zpool".to_vec()),
    ];
    for k in kernels {
        entries
            .push(Entry::file(&format!("usr/lib/modules/{k}/extra/zfs/zfs.ko.xz"), format!("zfs.ko {k}").into_bytes()));
    }
    let mut layers = base.layers.clone();
    layers.push(Layer::gzip(entries));
    ImageSpec::new(layers)
}

/// A test environment: simulator, registry (basic auth), the build namespace with the push
/// Secret, the seeded base and builder images, and an in-process operator.
pub struct Env {
    pub sim: ApiSim,
    pub registry: Registry,
    pub client: kube::Client,
    pub clock: TestClock,
    pub pusher: Pusher,
    pub base: ImageSpec,
    pub base_pushed: PushedImage,
    pub builder_digest: String,
    pub operator: Option<Operator>,
    pub requests: Arc<RequestCounters>,
}

impl Env {
    /// Everything up and the operator running.
    pub async fn start() -> Env {
        let mut env = Env::without_operator().await;
        env.start_operator().await;
        env
    }

    /// Everything up except the operator.
    pub async fn without_operator() -> Env {
        init();
        // The operator's logs in the test output (RUST_LOG, default warnings only).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        let sim = ApiSim::start();
        sim.install_crds(&kinoite_zfs_operator::api::crds());
        sim.create_namespace(NS);
        let registry = Registry::start_with_auth(USER, PASSWORD).await;
        let client = sim.client().await;
        let pusher = Pusher::new(&registry);
        let base = base_image(&[K1, K2], "43.20260227.1");
        let base_pushed = push_base(&pusher, &base, "20260227.1").await;
        let builder =
            ImageSpec::new(vec![Layer::gzip(vec![Entry::executable("usr/bin/just", b"#!/bin/sh\n".to_vec())])]);
        let builder_digest = pusher.push_image(BUILDER_REPO, Some("latest"), &builder).await.digest;
        let env = Env {
            sim,
            registry,
            client,
            clock: TestClock::new(T0),
            pusher,
            base,
            base_pushed,
            builder_digest,
            operator: None,
            requests: Arc::new(RequestCounters::new()),
        };
        env.create_secret(SECRET, USER, PASSWORD).await;
        env
    }

    pub fn host(&self) -> &str {
        self.registry.host()
    }

    /// Starts an operator (fresh memory, as after a restart of the process) and waits until it
    /// is ready.
    pub async fn start_operator(&mut self) {
        self.launch_operator().await;
        eventually("the operator is ready", || async { self.operator().is_ready() }).await;
    }

    /// Starts an operator without waiting for its caches.
    pub async fn launch_operator(&mut self) {
        assert!(self.operator.is_none(), "an operator is already running");
        let insecure = [self.host().to_string()].into_iter().collect();
        let pool = Arc::new(ClientPool::new(insecure, Default::default(), self.requests.clone()));
        let clock = self.clock.clone();
        let settings = Settings {
            http_address: "127.0.0.1:0".parse().unwrap(),
            build: BuildSettings {
                tools_image: TOOLS_IMAGE.into(),
                retry: RetryPolicy::default(),
                concurrency: 4,
                namespace: None,
                default_credentials: CredentialSet::anonymous(),
                clock: Arc::new(move || clock.now()),
            },
            promotion: PromotionSettings {
                concurrency: 4,
                namespace: None,
                default_credentials: CredentialSet::anonymous(),
                clock: {
                    let clock = self.clock.clone();
                    Arc::new(move || clock.now())
                },
                timing: Timing::default(),
            },
        };
        let operator = Operator::start(self.client.clone(), settings, pool).await.expect("operator starts");
        self.operator = Some(operator);
    }

    /// Graceful shutdown of the running operator.
    pub async fn stop_operator(&mut self) {
        self.operator.take().expect("an operator is running").shutdown().await;
    }

    pub fn operator(&self) -> &Operator {
        self.operator.as_ref().expect("an operator is running")
    }

    /// Reconciles every build now (after moving the clock).
    pub fn resync(&self) {
        self.operator().resync();
    }

    /// `GET` of an operator endpoint: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(&format!("http://{}{path}", self.operator().http_address())).await
    }

    /// The value of a metric line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.http_get("/metrics").await;
        assert_eq!(status, 200, "/metrics: {body}");
        metric_value(&body, series)
    }

    pub async fn create_secret(&self, name: &str, user: &str, password: &str) {
        let secrets = Api::<Secret>::namespaced(self.client.clone(), NS);
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": docker_config(self.host(), user, password)}
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.expect("create the push Secret");
    }

    /// A build in [`NS`] that follows the seeded base in this registry; `extra` is YAML appended
    /// to the spec (two-space indented lines).
    pub fn build(&self, name: &str, mode: &str, extra: &str) -> ZfsImageBuild {
        let host = self.host();
        let yaml = format!(
            "apiVersion: kinoite-zfs.io/v1alpha1
kind: ZfsImageBuild
metadata: {{name: {name}, namespace: {NS}}}
spec:
  mode: {mode}
  baseImage: {host}/{BASE_REPO}:latest
  builderImage: {host}/{BUILDER_REPO}:latest
  source:
    git: {{url: 'https://github.com/Danathar/Kinoite-ZFS.git', revision: '{REVISION}'}}
  registry: {{host: '{host}', namespace: {ORG}, credentialsSecretRef: {{name: {SECRET}}}}}
{extra}"
        );
        serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("test build YAML: {e}\n{yaml}"))
    }

    pub async fn create(&self, build: &ZfsImageBuild) {
        self.builds().create(&PostParams::default(), build).await.expect("create the build");
    }

    pub fn builds(&self) -> Api<ZfsImageBuild> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn job_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.jobs().list(&ListParams::default()).await.unwrap().items.iter().map(|j| j.name_any()).collect();
        names.sort();
        names
    }

    /// Polls the build until `check` holds (30 s at most); returns it.
    pub async fn wait_for(&self, name: &str, what: &str, check: impl Fn(&ZfsImageBuild) -> bool) -> ZfsImageBuild {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            if let Some(build) = self.builds().get_opt(name).await.unwrap() {
                if check(&build) {
                    return build;
                }
                last = Some(build);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = last.and_then(|b| b.status).map(|s| serde_json::to_string_pretty(&s).unwrap());
        panic!("timed out waiting for {name}: {what}; last status:\n{}", status.unwrap_or_default());
    }

    /// Waits for a Job to exist.
    pub async fn job(&self, name: &str) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(job) = self.jobs().get_opt(name).await.unwrap() {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for Job {name}; Jobs: {:?}",
                self.job_names().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pushes the seeded base again with these kernels under `latest` and new dated tags (a new
    /// nightly); returns its digest.
    pub async fn push_new_base(&mut self, kernels: &[&str], suffix: &str) -> String {
        self.base = base_image(kernels, &format!("43.{suffix}"));
        self.base_pushed = push_base(&self.pusher, &self.base, suffix).await;
        self.base_pushed.digest.clone()
    }

    /// Pushes an akmods cache covering `kernels` to `<candidateAkmods>:main-43` (what Main's last
    /// akmods Job left); returns its digest.
    pub async fn push_cache(&self, kernels: &[&str]) -> String {
        self.pusher
            .push_image(CANDIDATE_AKMODS_REPO, Some("main-43"), &akmods_image(kernels, &self.builder_digest))
            .await
            .digest
    }

    /// The akmods Job of `run` does its work: pushes the cache to `main-43` and `<run>-43`,
    /// reports it, and completes. Returns the digest.
    pub async fn finish_akmods(&self, build: &str, run: i64, kernels: &[&str]) -> String {
        let spec = akmods_image(kernels, &self.builder_digest);
        let pushed = self.pusher.push_image(CANDIDATE_AKMODS_REPO, Some("main-43"), &spec).await;
        self.pusher
            .put_manifest(CANDIDATE_AKMODS_REPO, Some(&format!("{run}-43")), OCI_MANIFEST, pushed.manifest)
            .await;
        let result = json!({"version": 1, "step": "akmods", "digest": pushed.digest, "kernel_releases": kernels});
        self.complete_job(&format!("{build}-{run}-akmods"), &result.to_string()).await;
        pushed.digest
    }

    /// The image Job of `run` does its work: pushes the candidate to `<candidateImage>:<run>-43`,
    /// reports it, and completes. Returns the digest.
    pub async fn finish_image(&self, build: &str, run: i64, kernels: &[&str]) -> String {
        let spec = candidate_image(&self.base, kernels);
        let pushed = self.pusher.push_image(CANDIDATE_REPO, Some(&format!("{run}-43")), &spec).await;
        let result = json!({"version": 1, "step": "image", "digest": pushed.digest});
        self.complete_job(&format!("{build}-{run}-image"), &result.to_string()).await;
        pushed.digest
    }

    /// Envtest-style completion: the Job's pod with the builder's termination message (exit 0),
    /// then the Job's `Complete` condition.
    pub async fn complete_job(&self, name: &str, message: &str) {
        self.job_pod(name, 0, message).await;
        let done = json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
        self.jobs().patch_status(name, &PatchParams::default(), &Patch::Merge(done)).await.unwrap();
    }

    /// Envtest-style failure: a pod whose builder exited 1, then the Job's `Failed` condition.
    pub async fn fail_job(&self, name: &str) {
        self.job_pod(name, 1, "podman build failed").await;
        let failed = json!({"status": {"failed": 2, "conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}});
        self.jobs().patch_status(name, &PatchParams::default(), &Patch::Merge(failed)).await.unwrap();
    }

    async fn job_pod(&self, job_name: &str, exit_code: i32, message: &str) {
        let pod = self.create_job_pod(job_name, if exit_code == 0 { "ok" } else { "failed" }).await;
        self.terminate_pod(&pod, exit_code, message).await;
    }

    /// Creates a pod of the Job (running, no status yet) the way the Job controller would;
    /// returns its name.
    pub async fn create_job_pod(&self, job_name: &str, suffix: &str) -> String {
        let job = self.job(job_name).await;
        let template_labels =
            job.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.clone());
        let pods = Api::<Pod>::namespaced(self.client.clone(), NS);
        let name = format!("{job_name}-{suffix}");
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": template_labels,
                "ownerReferences": [job.controller_owner_ref(&()).unwrap()]},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "builder", "image": "builder"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        name
    }

    /// The pod's builder container terminates with this exit code and termination message.
    pub async fn terminate_pod(&self, pod: &str, exit_code: i32, message: &str) {
        let pods = Api::<Pod>::namespaced(self.client.clone(), NS);
        let phase = if exit_code == 0 { "Succeeded" } else { "Failed" };
        let terminated = json!({"status": {"phase": phase, "containerStatuses": [{"name": "builder", "image": "builder",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "reason": "Completed", "message": message,
                "finishedAt": self.clock.now().to_string()}}}]}});
        pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(terminated)).await.unwrap();
    }

    /// Events of the build (events.k8s.io/v1), as `(reason, note)` in creation order.
    pub async fn events(&self, build: &str) -> Vec<(String, String)> {
        let events = Api::<Event>::namespaced(self.client.clone(), NS).list(&ListParams::default()).await.unwrap();
        let mut items: Vec<&Event> = events
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(build))
            .collect();
        items.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        items.iter().map(|e| (e.reason.clone().unwrap_or_default(), e.note.clone().unwrap_or_default())).collect()
    }

    /// Asserts the controller is quiet: over `period`, neither a reconcile nor an API write.
    pub async fn assert_quiet(&self, period: Duration) {
        // Let the last status write's watch event come back and be reconciled first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reconciles = self.metric("kzo_reconciles_total{controller=\"zfsimagebuild\"}").await;
        let writes = self.sim.stats().writes;
        tokio::time::sleep(period).await;
        assert_eq!(self.sim.stats().writes, writes, "API writes during the quiet period");
        assert_eq!(
            self.metric("kzo_reconciles_total{controller=\"zfsimagebuild\"}").await,
            reconciles,
            "reconciles during the quiet period"
        );
    }

    /// Reconciles every build and asserts that this writes nothing (same inputs: no run, no Job,
    /// no status change).
    pub async fn assert_resync_writes_nothing(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = self.metric("kzo_reconciles_total{controller=\"zfsimagebuild\"}").await;
        let writes = self.sim.stats().writes;
        self.resync();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.metric("kzo_reconciles_total{controller=\"zfsimagebuild\"}").await <= before {
            assert!(tokio::time::Instant::now() < deadline, "the resync reconciled nothing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(self.sim.stats().writes, writes, "a reconcile with the same inputs wrote something");
    }
}

/// Pushes a base under `latest`, `latest-<suffix>` and `43-<suffix>` (the immutable tags
/// resolution looks for).
async fn push_base(pusher: &Pusher, base: &ImageSpec, suffix: &str) -> PushedImage {
    let pushed = pusher.push_image(BASE_REPO, Some("latest"), base).await;
    for tag in [format!("latest-{suffix}"), format!("43-{suffix}")] {
        pusher.put_manifest(BASE_REPO, Some(&tag), OCI_MANIFEST, pushed.manifest.clone()).await;
    }
    pushed
}

pub fn docker_config(host: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    json!({"auths": {host: {"auth": auth}}}).to_string()
}

pub fn condition<'a>(build: &'a ZfsImageBuild, type_: &str) -> Option<&'a Condition> {
    build.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// Whether condition `type_` has this status and reason.
pub fn has_condition(build: &ZfsImageBuild, type_: &str, status: &str, reason: &str) -> bool {
    condition(build, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

pub fn phase(build: &ZfsImageBuild) -> Option<String> {
    build.status.as_ref()?.current_run.as_ref().map(|r| format!("{:?}", r.phase))
}

pub fn run_number(build: &ZfsImageBuild) -> Option<i64> {
    build.status.as_ref()?.current_run.as_ref().map(|r| r.number)
}

/// The environment variable `name` of the Job's builder container.
pub fn job_env(job: &Job, name: &str) -> Option<String> {
    let spec = job.spec.as_ref()?.template.spec.as_ref()?;
    let builder = spec.containers.iter().find(|c| c.name == "builder")?;
    builder.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
}

pub fn job_volumes(job: &Job) -> Vec<String> {
    let spec = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten().map(|v| v.name.clone()).collect()
}

pub async fn http_get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of the series `name{labels}` in a Prometheus text body (0 when absent).
pub fn metric_value(body: &str, series: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("metric {series} has value {v:?}")))
        .unwrap_or(0.0)
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The data of the run record `<build>-run-<n>` once it has `key`. The record is written right
/// after the status that reports the step (status first, then children), so a test that saw the
/// status may have to wait a moment for it.
pub async fn run_record(env: &Env, build: &str, run: i64, key: &str) -> std::collections::BTreeMap<String, String> {
    let name = format!("{build}-run-{run}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let data = env.config_maps().get_opt(&name).await.unwrap().and_then(|cm| cm.data).unwrap_or_default();
        if data.contains_key(key) {
            return data;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {key} in ConfigMap {name}: {data:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
