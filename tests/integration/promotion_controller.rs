//! The Promotion controller end to end: the real controller (kube-runtime, in-process) against
//! the Kubernetes API simulator and the registry fixture (docker-registry) behind the
//! fault-injecting proxy. Verified runs are produced the envtest way: the test pushes the
//! candidate image and akmods with its own HTTP client and writes the ZfsImageBuild status
//! through the status subresource, as the build controller would. What ends up in the registry
//! is checked independently with `skopeo inspect --raw`.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::apisim::ApiSim;
use crate::support::faults::{Fault, FaultProxy};
use crate::support::image::{Entry, ImageSpec, Layer, Pusher, digest_of, noise};
use crate::support::registry::{Registry, find_tool};
use crate::support::{init, skopeo};
use kinoite_zfs_operator::api::promotion::{PromotionStatus, StepState};
use kinoite_zfs_operator::api::{Promotion, ZfsImageBuild};
use kinoite_zfs_operator::controllers::conditions::find;
use kinoite_zfs_operator::controllers::metrics::Metrics;
use kinoite_zfs_operator::controllers::promotion::controller::{self, Settings, Timing, system_clock};
use kinoite_zfs_operator::registry::{ClientPool, CredentialSet, RequestCounters, RetryPolicy};

const NS: &str = "kz";
const REV: &str = "02701fe0000000000000000000000000000000ab";
const CANDIDATE: &str = "o/kinoite-zfs-candidate";
const AKMODS_CANDIDATE: &str = "o/kinoite-zfs-bluebuild-akmods-candidate";
const STABLE: &str = "o/kinoite-zfs";
const AKMODS: &str = "o/kinoite-zfs-bluebuild-akmods";

/// Registry (behind the proxy), API simulator, and the controller.
struct World {
    registry: Registry,
    proxy: FaultProxy,
    sim: ApiSim,
    client: kube::Client,
}

/// A running controller; `stop` shuts it down gracefully and waits for it.
struct RunningController {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningController {
    async fn stop(self) {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the controller shuts down")
            .expect("the controller task ends cleanly");
    }
}

impl World {
    async fn start() -> World {
        init();
        World::launch(Registry::start().await).await
    }

    /// With a registry that requires these credentials (htpasswd).
    async fn start_with_auth(user: &str, password: &str) -> World {
        init();
        World::launch(Registry::start_with_auth(user, password).await).await
    }

    async fn launch(registry: Registry) -> World {
        let proxy = FaultProxy::start(registry.host()).await;
        let sim = ApiSim::start();
        sim.install_crds(&kinoite_zfs_operator::api::crds());
        sim.create_namespace(NS);
        let client = sim.client().await;
        World { registry, proxy, sim, client }
    }

    /// The registry host as the operator sees it (through the proxy).
    fn host(&self) -> &str {
        self.proxy.host()
    }

    fn start_controller(&self) -> RunningController {
        let pool = Arc::new(ClientPool::new(
            [self.host().to_string()].into(),
            RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(50),
                max_retry_after: Duration::from_secs(1),
            },
            Arc::default(),
        ));
        let settings = Settings {
            concurrency: 4,
            namespace: Some(NS.to_string()),
            default_credentials: CredentialSet::anonymous(),
            clock: system_clock(),
            timing: Timing {
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_millis(500),
                // Long enough that a refusal seen during a test is never re-checked by time.
                recheck: Duration::from_secs(600),
            },
        };
        let (shutdown, mut rx) = watch::channel(false);
        let stopped = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let metrics = Arc::new(Metrics::new(Arc::new(RequestCounters::new())));
        let running =
            controller::start(self.client.clone(), settings, pool, metrics, stopped, futures::stream::pending());
        RunningController { shutdown, task: tokio::spawn(running.task) }
    }

    fn builds(&self) -> Api<ZfsImageBuild> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn promotions(&self) -> Api<Promotion> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create_build(&self, name: &str, mode: &str) {
        self.create_build_with(name, mode, "").await;
    }

    /// `registry` is added to `spec.registry` (e.g. `credentialsSecretRef: {name: x}`).
    async fn create_build_with(&self, name: &str, mode: &str, registry: &str) {
        let branch = if mode == "Branch" { "  branch: feature/x\n" } else { "" };
        let build: ZfsImageBuild = serde_saphyr::from_str(&format!(
            "apiVersion: kinoite-zfs.io/v1alpha1
kind: ZfsImageBuild
metadata: {{name: {name}, namespace: {NS}}}
spec:
  mode: {mode}
{branch}  source: {{git: {{url: 'https://example.com/kinoite-zfs.git', revision: '{REV}'}}}}
  registry: {{host: '{host}', namespace: o, {registry}}}
",
            host = self.host()
        ))
        .unwrap();
        self.builds().create(&PostParams::default(), &build).await.expect("create the build");
    }

    /// Writes the build's status (history newest first; the first succeeded run is
    /// `lastSucceededRun`), as the build controller does.
    async fn set_runs(&self, build: &str, runs: &[Value]) {
        let last = runs.iter().find(|r| r["phase"] == "Succeeded" && r["verified"] == true).cloned();
        let status = json!({"status": {"lastSucceededRun": last, "history": runs}});
        self.builds().patch_status(build, &PatchParams::default(), &Patch::Merge(status)).await.expect("build status");
    }

    async fn create_promotion(&self, name: &str, spec: &str) {
        let promotion: Promotion = serde_saphyr::from_str(&format!(
            "apiVersion: kinoite-zfs.io/v1alpha1
kind: Promotion
metadata: {{name: {name}, namespace: {NS}}}
spec:
{spec}"
        ))
        .unwrap();
        self.promotions().create(&PostParams::default(), &promotion).await.expect("create the promotion");
    }

    async fn patch_spec(&self, name: &str, spec: Value) {
        self.promotions()
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
            .await
            .expect("patch the promotion");
    }

    /// Changes the Promotion's metadata only: a watch event, as any edit by a user.
    async fn touch(&self, name: &str) {
        let stamp = format!("{:?}", std::time::SystemTime::now());
        self.promotions()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/touched": stamp}}})),
            )
            .await
            .expect("annotate the promotion");
    }

    async fn status(&self, name: &str) -> PromotionStatus {
        self.promotions().get(name).await.expect("get the promotion").status.unwrap_or_default()
    }

    /// Waits until `check` holds for the Promotion's status; panics with the last status.
    async fn wait_for(&self, name: &str, what: &str, check: impl Fn(&PromotionStatus) -> bool) -> PromotionStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(name).await;
            if check(&status) {
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {name}: {what}; status:\n{}",
                    serde_json::to_string_pretty(&status).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_promoted(&self, name: &str, run: i64) -> PromotionStatus {
        self.wait_for(name, &format!("run {run} promoted"), |s| {
            s.stable.as_ref().is_some_and(|st| st.run == run) && s.in_progress.is_none() && ready(s) == Some("True")
        })
        .await
    }

    async fn wait_stalled(&self, name: &str, reason: &str) -> PromotionStatus {
        self.wait_for(name, &format!("Stalled {reason}"), |s| {
            find(&s.conditions, "Stalled").is_some_and(|c| c.status == "True" && c.reason == reason)
        })
        .await
    }

    /// Pushes run `n`'s candidate image and akmods image (distinct content per run): the base
    /// layer ([`BASE`]) plus a ZFS layer for [`KERNEL`] that verification accepts.
    async fn push_run(&self, n: i64) -> Run {
        self.push_run_for(n, KERNEL).await
    }

    /// [`World::push_run`] with the ZFS module built for `kernel`.
    async fn push_run_for(&self, n: i64, kernel: &str) -> Run {
        let pusher = Pusher::new(&self.registry);
        let image = ImageSpec::new(vec![
            base_layer(),
            Layer::gzip(vec![
                Entry::file(
                    &format!("usr/lib/modules/{kernel}/extra/zfs/zfs.ko.xz"),
                    format!("zfs of run {n}").into_bytes(),
                ),
                Entry::executable("usr/sbin/zfs", b"zfs".to_vec()),
                Entry::executable("usr/sbin/zpool", b"zpool".to_vec()),
            ]),
        ]);
        let akmods = ImageSpec::new(vec![Layer::gzip(vec![Entry::file(
            "rpms/kmods/zfs/kmod-zfs-6.18.13-200.fc43.x86_64-2.4.1-1.fc43.x86_64.rpm",
            format!("kmods of run {n}").into_bytes(),
        )])]);
        let image = pusher.push_image(CANDIDATE, Some(&format!("{n}-43")), &image).await.digest;
        let akmods = pusher.push_image(AKMODS_CANDIDATE, Some(&format!("{n}-43")), &akmods).await.digest;
        Run { n, image, akmods }
    }

    /// `build-provenance.json` of run `n` of the build `kinoite` with this candidate and akmods
    /// digest (in the candidate repositories) and kernels, as the build controller writes it;
    /// the base is pushed to [`BASE`] and named by digest.
    async fn provenance(&self, n: i64, image: &str, akmods: &str, kernels: &[&str]) -> String {
        use kinoite_zfs_operator::api::build::{BuildMode, ResolvedInputs, RunTrigger};
        use kinoite_zfs_operator::pipeline::records::{RefBundle, RunIdentity, provenance_json};
        let base = Pusher::new(&self.registry)
            .push_image(BASE, Some("latest"), &ImageSpec::new(vec![base_layer()]))
            .await
            .digest;
        let host = self.host();
        let inputs: ResolvedInputs = serde_json::from_value(json!({
            "useInputLock": false, "lockFilePath": "", "fedoraVersion": "43",
            "kernelRelease": kernels.last().unwrap(), "kernelReleases": kernels,
            "baseImageRef": format!("{host}/{BASE}:latest"), "baseImageName": format!("{host}/{BASE}"),
            "baseImageTag": "latest-20260420", "baseImagePinned": format!("{host}/{BASE}@{base}"),
            "baseImageDigest": base, "buildContainerRef": "ghcr.io/ublue-os/devcontainer:latest",
            "buildContainerPinned": format!("ghcr.io/ublue-os/devcontainer@{image}"),
            "buildContainerDigest": image, "zfsMinorVersion": "2.4",
            "akmodsUpstreamRef": "9d13b6950811cdaae2e8ab748c85c5da35810ae3",
        }))
        .unwrap();
        let identity = RunIdentity {
            namespace: NS,
            name: "kinoite",
            run: n,
            source_url: "https://example.com/kinoite-zfs.git",
            source_revision: REV,
            mode: BuildMode::Main,
            trigger: RunTrigger::Created,
        };
        provenance_json(
            &identity,
            &inputs,
            RefBundle::new(&format!("{host}/{CANDIDATE}"), &format!("{n}-43"), image),
            RefBundle::new(&format!("{host}/{AKMODS_CANDIDATE}"), &format!("{n}-43"), akmods),
            k8s_openapi::jiff::Timestamp::now(),
        )
    }

    /// Writes a run record `kinoite-run-<n>` owned by the build, exactly as the build
    /// controller's (which anyone allowed to create ConfigMaps can also write).
    async fn write_record(&self, n: i64, provenance: String) {
        use kinoite_zfs_operator::pipeline::records::{PROVENANCE_KEY, run_record_config_map};
        let build = self.builds().get("kinoite").await.unwrap();
        let record =
            run_record_config_map(&build, n, "sha256:h", [(PROVENANCE_KEY.to_string(), provenance)].into()).unwrap();
        let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(self.client.clone(), NS);
        config_maps.create(&PostParams::default(), &record).await.unwrap();
    }

    /// What `skopeo inspect --raw` serves for `repo:tag` (or `repo@digest`), read from the
    /// registry directly; `None` when it does not exist.
    fn skopeo_digest(&self, repo_and_tag: &str) -> Option<String> {
        let reference = format!("docker://{}/{repo_and_tag}", self.registry.host());
        let mut skopeo = Command::new(find_tool("skopeo", "skopeo"));
        skopeo.args(["inspect", "--raw", "--tls-verify=false", &reference]);
        if let Some((user, password)) = self.registry.credentials() {
            skopeo.args(["--creds", &format!("{user}:{password}")]);
        }
        let output = skopeo.output().expect("run skopeo");
        if output.status.success() {
            return Some(digest_of(&output.stdout));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("manifest unknown") || stderr.contains("name unknown"), "skopeo {reference}: {stderr}");
        None
    }

    /// Every tag of `repo` with its digest (tags list over HTTP, digests by skopeo).
    async fn tags(&self, repo: &str) -> BTreeMap<String, String> {
        let url = format!("{}/v2/{repo}/tags/list", self.registry.base_url());
        let answer = reqwest::get(&url).await.unwrap();
        if answer.status() == reqwest::StatusCode::NOT_FOUND {
            return BTreeMap::new();
        }
        let list: Value = answer.json().await.unwrap();
        list["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let tag = t.as_str().unwrap().to_string();
                let digest = self.skopeo_digest(&format!("{repo}:{tag}")).expect("a listed tag exists");
                (tag, digest)
            })
            .collect()
    }

    /// The Events (events.k8s.io/v1) about a Promotion, as `(type, reason)`, one per publish
    /// (kube's Recorder turns a repeated identical Event into a series with a count).
    async fn events(&self, name: &str) -> Vec<(String, String)> {
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), NS);
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .flat_map(|e| {
                let count = e.series.as_ref().map_or(1, |s| s.count.max(1) as usize);
                std::iter::repeat_n((e.type_.unwrap_or_default(), e.reason.unwrap_or_default()), count)
            })
            .collect()
    }

    /// Requests the proxy saw: `(method, path)`.
    fn seen(&self) -> Vec<(String, String)> {
        self.proxy.seen().into_iter().map(|s| (s.method, s.path)).collect()
    }
}

/// The kernel every pushed run carries ZFS for.
const KERNEL: &str = "6.18.13-200.fc43.x86_64";
/// The base the candidates are built on (its one layer starts every candidate).
const BASE: &str = "o/kinoite-main";

fn base_layer() -> Layer {
    Layer::gzip(vec![Entry::file("usr/share/base", noise(32 * 1024, 7))])
}

/// A pushed run.
struct Run {
    n: i64,
    image: String,
    akmods: String,
}

impl Run {
    /// Its `status.history` entry; `phase` `Succeeded` with `verified` makes it promotable.
    fn summary(&self, host: &str, phase: &str, verified: bool) -> Value {
        json!({
            "number": self.n, "trigger": "Schedule", "phase": phase, "mode": "Main", "sourceRevision": REV,
            "verified": verified, "startedAt": "2026-04-20T06:00:00Z", "finishedAt": "2026-04-20T07:00:00Z",
            "fedoraVersion": "43", "kernelReleases": ["6.18.13-200.fc43.x86_64"],
            "candidateImage": format!("{host}/{CANDIDATE}@{}", self.image), "candidateDigest": self.image,
            "shortDigest": self.image.trim_start_matches("sha256:")[..12].to_string(),
            "akmodsImage": format!("{host}/{AKMODS_CANDIDATE}@{}", self.akmods),
            "reason": if verified { "Succeeded" } else { "VerificationFailed" },
        })
    }

    fn audit(&self) -> String {
        format!("stable-{}-02701fe", self.n)
    }
}

fn ready(status: &PromotionStatus) -> Option<&str> {
    find(&status.conditions, "Ready").map(|c| c.status.as_str())
}

fn history(status: &PromotionStatus) -> Vec<(i64, String)> {
    status.history.iter().map(|h| (h.run, format!("{:?}", h.result))).collect()
}

fn tagmap(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(t, d)| (t.to_string(), d.to_string())).collect()
}

#[tokio::test]
async fn auto_promotes_each_new_verified_run_and_pinned_rolls_back() {
    let w = World::start().await;
    let ctl = w.start_controller();
    w.create_build("kinoite", "Main").await;
    w.create_promotion("stable", "  buildRef: {name: kinoite}\n  policy: Auto\n  tags: [latest, '43']").await;

    // No verified run yet: waiting (Reconciling), not Stalled, nothing in the registry.
    let waiting = w
        .wait_for("stable", "waiting", |s| {
            find(&s.conditions, "Ready").is_some_and(|c| c.reason == "WaitingForVerifiedRun")
        })
        .await;
    assert_eq!(find(&waiting.conditions, "Reconciling").unwrap().status, "True");
    assert_eq!(find(&waiting.conditions, "Promoted").unwrap().status, "False");
    assert!(w.tags(STABLE).await.is_empty());

    // Run 1 verified: promoted by digest, audit tag and akmods aligned.
    let r1 = w.push_run(1).await;
    w.set_runs("kinoite", &[r1.summary(w.host(), "Succeeded", true)]).await;
    let status = w.wait_promoted("stable", 1).await;
    assert_eq!(w.tags(STABLE).await, tagmap(&[("43", &r1.image), ("latest", &r1.image), (&r1.audit(), &r1.image)]));
    assert_eq!(w.skopeo_digest(&format!("{AKMODS}:main-43")), Some(r1.akmods.clone()));
    let stable = status.stable.as_ref().unwrap();
    assert_eq!(stable.image, format!("{}/{STABLE}@{}", w.host(), r1.image));
    assert_eq!(stable.audit_tag, r1.audit());
    assert_eq!(stable.akmods_digest.as_deref(), Some(r1.akmods.as_str()));
    assert_eq!(status.observed_generation, Some(1));
    assert!(status.conditions.iter().all(|c| c.observed_generation == Some(1)), "{:?}", status.conditions);
    assert!(find(&status.conditions, "Reconciling").is_none() && find(&status.conditions, "Stalled").is_none());
    // skopeo copies the promoted image from the stable repository, verifying every blob.
    let out = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/{STABLE}:latest", w.registry.host()),
        &format!("dir:{}", out.path().display()),
    ]);

    // Suspended: run 2 verifies and waits.
    w.patch_spec("stable", json!({"suspend": true})).await;
    let r2 = w.push_run(2).await;
    w.set_runs("kinoite", &[r2.summary(w.host(), "Succeeded", true), r1.summary(w.host(), "Succeeded", true)]).await;
    let suspended = w
        .wait_for("stable", "suspended", |s| find(&s.conditions, "Ready").is_some_and(|c| c.reason == "Suspended"))
        .await;
    assert!(find(&suspended.conditions, "Ready").unwrap().message.contains("run 2"));
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:latest")), Some(r1.image.clone()));

    // Resumed: run 2 is promoted; the channel's CAS expected run 1's digest.
    w.patch_spec("stable", json!({"suspend": false})).await;
    let status = w.wait_promoted("stable", 2).await;
    assert_eq!(history(&status), [(2, "Promoted".into()), (1, "Promoted".into())]);
    assert_eq!(
        w.tags(STABLE).await,
        tagmap(&[("43", &r2.image), ("latest", &r2.image), (&r1.audit(), &r1.image), (&r2.audit(), &r2.image)])
    );
    assert_eq!(w.skopeo_digest(&format!("{AKMODS}:main-43")), Some(r2.akmods.clone()));

    // Rollback: pin run 1. Its audit tag already names it: not written again.
    w.proxy.reset_seen();
    w.patch_spec("stable", json!({"policy": "Pinned", "candidate": {"run": 1}})).await;
    let status = w.wait_promoted("stable", 1).await;
    assert_eq!(status.observed_generation, Some(4));
    assert_eq!(history(&status)[0], (1, "Promoted".into()));
    assert_eq!(
        w.tags(STABLE).await,
        tagmap(&[("43", &r1.image), ("latest", &r1.image), (&r1.audit(), &r1.image), (&r2.audit(), &r2.image)])
    );
    assert_eq!(w.skopeo_digest(&format!("{AKMODS}:main-43")), Some(r1.akmods.clone()));
    let puts: Vec<String> = w
        .seen()
        .into_iter()
        .filter(|(m, _)| m == "PUT")
        .map(|(_, p)| p.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(puts, ["latest", "43", "main-43"], "the rollback writes only the moving tags");

    // Events on transitions: started and promoted, once per promotion.
    let events = w.events("stable").await;
    let count = |reason: &str| events.iter().filter(|(_, r)| r == reason).count();
    assert_eq!((count("PromotionStarted"), count("Promoted")), (3, 3), "{events:?}");
    assert!(events.iter().all(|(t, _)| t == "Normal"), "{events:?}");
    ctl.stop().await;
}

#[tokio::test]
async fn unpromotable_runs_are_refused_and_nothing_moves() {
    let w = World::start().await;
    let ctl = w.start_controller();
    let r1 = w.push_run(1).await;
    let r2 = w.push_run(2).await;
    let r3 = w.push_run(3).await;
    w.create_build("branch", "Branch").await;
    w.set_runs("branch", &[r1.summary(w.host(), "Succeeded", true)]).await;
    w.create_build("main", "Main").await;
    w.set_runs(
        "main",
        &[
            r3.summary(w.host(), "Superseded", false),
            r2.summary(w.host(), "Failed", false),
            r1.summary(w.host(), "Succeeded", true),
        ],
    )
    .await;
    w.proxy.reset_seen();

    w.create_promotion("from-branch", "  buildRef: {name: branch}\n  policy: Auto\n  tags: [b]").await;
    w.create_promotion("failed-run", "  buildRef: {name: main}\n  policy: Pinned\n  candidate: {run: 2}\n  tags: [f]")
        .await;
    // Each channel its own tags; only one of them aligns the akmods channel (one writer per
    // stable akmods tag).
    w.create_promotion(
        "superseded-run",
        "  buildRef: {name: main}\n  policy: Pinned\n  candidate: {run: 3}\n  tags: [s]\n  alignAkmods: false",
    )
    .await;
    let unknown = format!("sha256:{}", "9".repeat(64));
    w.create_promotion(
        "unknown-digest",
        &format!(
            "  buildRef: {{name: main}}\n  policy: Pinned\n  candidate: {{digest: '{unknown}'}}\n  tags: [u]\n  alignAkmods: false"
        ),
    )
    .await;
    w.create_promotion("no-build", "  buildRef: {name: missing}\n  policy: Auto\n  tags: [n]").await;

    let s = w.wait_stalled("from-branch", "BuildNotPromotable").await;
    assert!(find(&s.conditions, "Stalled").unwrap().message.contains("Branch build"), "{:?}", s.conditions);
    let s = w.wait_stalled("failed-run", "RunNotVerified").await;
    assert!(find(&s.conditions, "Stalled").unwrap().message.contains("run 2"), "{:?}", s.conditions);
    w.wait_stalled("superseded-run", "RunNotVerified").await;
    let s = w.wait_stalled("unknown-digest", "RunNotFound").await;
    assert!(find(&s.conditions, "Stalled").unwrap().message.contains(&unknown));
    w.wait_stalled("no-build", "BuildNotFound").await;
    for name in ["from-branch", "failed-run", "superseded-run", "unknown-digest", "no-build"] {
        let s = w.status(name).await;
        assert_eq!(ready(&s), Some("False"), "{name}");
        assert!(s.stable.is_none() && s.in_progress.is_none() && s.history.is_empty(), "{name}");
        assert!(w.events(name).await.contains(&("Warning".into(), "PromotionStalled".into())), "{name}");
    }
    // Refused before the registry is asked anything, and not retried in a loop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(w.seen().is_empty(), "registry requests: {:?}", w.seen());
    assert!(w.tags(STABLE).await.is_empty());
    assert_eq!(w.skopeo_digest(&format!("{AKMODS}:main-43")), None);
    let writes = w.sim.stats().writes;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(w.sim.stats().writes, writes, "no status writes while nothing changes");

    // The fix: pin the verified run. Promoted.
    w.patch_spec("failed-run", json!({"candidate": {"run": 1}})).await;
    w.wait_promoted("failed-run", 1).await;
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:f")), Some(r1.image.clone()));
    ctl.stop().await;
}

#[tokio::test]
async fn two_promotions_on_one_tag_the_second_is_stalled() {
    let w = World::start().await;
    let ctl = w.start_controller();
    let r1 = w.push_run(1).await;
    w.create_build("kinoite", "Main").await;
    w.set_runs("kinoite", &[r1.summary(w.host(), "Succeeded", true)]).await;
    w.create_promotion("first", "  buildRef: {name: kinoite}\n  policy: Auto\n  tags: [latest]").await;
    w.wait_promoted("first", 1).await;
    // A second channel on the same tag (it also aligns the same akmods channel).
    w.create_promotion("second", "  buildRef: {name: kinoite}\n  policy: Auto\n  tags: [latest, testing]").await;
    let s = w.wait_stalled("second", "ConflictingPromotion").await;
    let message = &find(&s.conditions, "Stalled").unwrap().message;
    assert!(message.contains("kz/first") && message.contains(&format!("{STABLE}:latest")), "{message}");
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:testing")), None, "the second wrote nothing");
    // A channel of its own tags, without akmods alignment, coexists with both.
    w.create_promotion(
        "third",
        "  buildRef: {name: kinoite}\n  policy: Auto\n  tags: [edge]\n  alignAkmods: false\n  auditTagTemplate: 'edge-{run}'",
    )
    .await;
    w.wait_promoted("third", 1).await;
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:edge-1")), Some(r1.image.clone()));

    // The first goes away: the second is reconciled at once and takes over. Its guarded tag
    // already holds the very candidate it promotes, which the compare-and-swap accepts.
    w.promotions().delete("first", &DeleteParams::default()).await.unwrap();
    w.wait_promoted("second", 1).await;
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:testing")), Some(r1.image.clone()));
    ctl.stop().await;
}

#[tokio::test]
async fn a_restarted_controller_resumes_the_promotion_in_flight() {
    let w = World::start().await;
    let ctl = w.start_controller();
    let r1 = w.push_run(1).await;
    w.create_build("kinoite", "Main").await;
    w.set_runs("kinoite", &[r1.summary(w.host(), "Succeeded", true)]).await;
    // The registry refuses to move `latest`: the promotion stops after copy-*, audit-tag.
    w.proxy.inject_on_method("PUT", "/manifests/latest", Fault::Unavailable, 100_000);
    w.create_promotion("stable", "  buildRef: {name: kinoite}\n  policy: Auto\n  tags: [latest, '43']").await;
    let stuck = w
        .wait_for("stable", "stuck at tag:latest", |s| {
            find(&s.conditions, "Reconciling").is_some_and(|c| c.reason == "RegistryUnavailable")
                && s.in_progress.as_ref().is_some_and(|p| {
                    p.steps.iter().take(3).all(|st| st.state == StepState::Done)
                        && p.steps.iter().find(|st| st.name == "tag:latest").unwrap().state != StepState::Done
                })
        })
        .await;
    assert!(find(&stuck.conditions, "Stalled").is_none());
    ctl.stop().await;

    // Stopped mid-promotion: the audit tag is there, the channel has not moved.
    assert_eq!(w.tags(STABLE).await, tagmap(&[(&r1.audit(), &r1.image)]));
    assert_eq!(w.skopeo_digest(&format!("{AKMODS}:main-43")), None);
    let recorded = w.status("stable").await.in_progress.expect("the promotion is recorded in flight");
    assert_eq!((recorded.run, recorded.expected_stable_digest.as_str()), (1, "absent"));

    // The registry recovers; a new controller resumes from status.inProgress and completes.
    w.proxy.clear();
    w.proxy.reset_seen();
    let ctl = w.start_controller();
    let status = w.wait_promoted("stable", 1).await;
    assert_eq!(status.stable.as_ref().unwrap().audit_tag, r1.audit());
    assert_eq!(w.tags(STABLE).await, tagmap(&[("43", &r1.image), ("latest", &r1.image), (&r1.audit(), &r1.image)]));
    assert_eq!(w.skopeo_digest(&format!("{AKMODS}:main-43")), Some(r1.akmods.clone()));
    // Nothing done before was done again: no blob mount or upload, no audit tag write.
    let seen = w.seen();
    let writes: Vec<&(String, String)> = seen.iter().filter(|(m, _)| m != "GET" && m != "HEAD").collect();
    let targets: Vec<&str> = writes.iter().map(|(_, p)| p.rsplit('/').next().unwrap()).collect();
    assert_eq!(targets, ["latest", "43", "main-43"], "writes after the restart: {writes:?}");
    assert_eq!(status.history.len(), 1);
    ctl.stop().await;
}

#[tokio::test]
async fn a_tag_moved_by_someone_else_is_reported_not_overwritten() {
    let w = World::start().await;
    let ctl = w.start_controller();
    let r1 = w.push_run(1).await;
    w.create_build("kinoite", "Main").await;
    w.set_runs("kinoite", &[r1.summary(w.host(), "Succeeded", true)]).await;
    w.create_promotion("stable", "  buildRef: {name: kinoite}\n  policy: Auto").await;
    w.wait_promoted("stable", 1).await;

    // Someone pushes another image to the stable tag by hand.
    let intruder = Pusher::new(&w.registry)
        .push_image(
            STABLE,
            Some("latest"),
            &ImageSpec::new(vec![Layer::gzip(vec![Entry::file("x", b"hand".to_vec())])]),
        )
        .await
        .digest;
    let r2 = w.push_run(2).await;
    w.set_runs("kinoite", &[r2.summary(w.host(), "Succeeded", true), r1.summary(w.host(), "Succeeded", true)]).await;
    let s = w.wait_stalled("stable", "StableTagMoved").await;
    let message = &find(&s.conditions, "Stalled").unwrap().message;
    assert!(message.contains(&intruder) && message.contains(&r1.image), "{message}");
    assert_eq!(s.stable.as_ref().unwrap().run, 1, "the channel record is unchanged");
    assert_eq!(history(&s)[0], (2, "Refused".into()));
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:latest")), Some(intruder.clone()), "not overwritten");
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:{}", r2.audit())), None, "nothing written");
    assert_eq!(w.skopeo_digest(&format!("{AKMODS}:main-43")), Some(r1.akmods.clone()));

    // Replacing it is intended: the spec names the digest found there.
    w.patch_spec("stable", json!({"expectedStableDigest": intruder})).await;
    let s = w.wait_promoted("stable", 2).await;
    assert!(find(&s.conditions, "Stalled").is_none());
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:latest")), Some(r2.image.clone()));
    ctl.stop().await;
}

#[tokio::test]
async fn a_newer_run_does_not_interrupt_a_promotion_in_flight() {
    let w = World::start().await;
    let ctl = w.start_controller();
    let r1 = w.push_run(1).await;
    let r2 = w.push_run(2).await;
    w.create_build("kinoite", "Main").await;
    w.set_runs("kinoite", &[r1.summary(w.host(), "Succeeded", true)]).await;
    w.proxy.inject_on_method("PUT", "/manifests/43", Fault::Unavailable, 100_000);
    w.create_promotion("stable", "  buildRef: {name: kinoite}\n  policy: Auto\n  tags: [latest, '43']").await;
    w.wait_for("stable", "run 1 stuck at tag:43", |s| {
        s.in_progress.as_ref().is_some_and(|p| p.run == 1)
            && find(&s.conditions, "Reconciling").is_some_and(|c| c.reason == "RegistryUnavailable")
    })
    .await;

    // Run 2 verifies while run 1 is in flight: run 1 keeps going (retried), run 2 waits.
    w.set_runs("kinoite", &[r2.summary(w.host(), "Succeeded", true), r1.summary(w.host(), "Succeeded", true)]).await;
    let retries = || w.seen().iter().filter(|(m, p)| m == "PUT" && p.ends_with("/manifests/43")).count();
    let before = retries();
    w.wait_for("stable", "retried after the new run", |_| retries() > before + 2).await;
    let s = w.status("stable").await;
    assert_eq!(s.in_progress.as_ref().unwrap().run, 1);
    assert_eq!(s.in_progress.as_ref().unwrap().candidate_digest, r1.image);
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:latest")), Some(r1.image.clone()));
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:{}", r2.audit())), None);
    // Retries do not flap the conditions: one RegistryUnavailable Event for the outage.
    let events = w.events("stable").await;
    assert_eq!(events.iter().filter(|(_, r)| r == "RegistryUnavailable").count(), 1, "{events:?}");

    // The registry recovers: run 1 completes, then run 2 is promoted.
    w.proxy.clear();
    let s = w.wait_promoted("stable", 2).await;
    assert_eq!(history(&s), [(2, "Promoted".into()), (1, "Promoted".into())]);
    assert_eq!(
        w.tags(STABLE).await,
        tagmap(&[("43", &r2.image), ("latest", &r2.image), (&r1.audit(), &r1.image), (&r2.audit(), &r2.image)])
    );
    ctl.stop().await;
}

#[tokio::test]
async fn a_pinned_run_outside_the_history_is_read_from_its_run_record() {
    use kinoite_zfs_operator::pipeline::records::{PROVENANCE_KEY, run_record_config_map};
    let w = World::start().await;
    let ctl = w.start_controller();
    let r1 = w.push_run(1).await;
    let r2 = w.push_run(2).await;
    w.create_build("kinoite", "Main").await;
    // Run 1 fell out of the bounded history; only run 2 is in the status.
    w.set_runs("kinoite", &[r2.summary(w.host(), "Succeeded", true)]).await;
    let build = w.builds().get("kinoite").await.unwrap();
    let provenance = w.provenance(1, &r1.image, &r1.akmods, &[KERNEL]).await;
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(w.client.clone(), NS);
    // A look-alike record the build does not own never makes a digest promotable.
    let mut forged =
        run_record_config_map(&build, 1, "sha256:h", [(PROVENANCE_KEY.to_string(), provenance.clone())].into())
            .unwrap();
    forged.metadata.name = Some("kinoite-run-1-forged".into());
    forged.metadata.owner_references = None;
    config_maps.create(&PostParams::default(), &forged).await.unwrap();

    w.create_promotion("rollback", "  buildRef: {name: kinoite}\n  policy: Pinned\n  candidate: {run: 1}").await;
    w.wait_stalled("rollback", "RunNotFound").await;

    // The build's own record (what the build controller writes and keeps while a Promotion
    // points at the run).
    let record =
        run_record_config_map(&build, 1, "sha256:h", [(PROVENANCE_KEY.to_string(), provenance)].into()).unwrap();
    config_maps.create(&PostParams::default(), &record).await.unwrap();
    w.touch("rollback").await;
    let status = w.wait_promoted("rollback", 1).await;
    assert_eq!(status.stable.as_ref().unwrap().akmods_digest.as_deref(), Some(r1.akmods.as_str()));
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:latest")), Some(r1.image.clone()));
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:{}", r1.audit())), Some(r1.image.clone()));
    assert_eq!(w.skopeo_digest(&format!("{AKMODS}:main-43")), Some(r1.akmods.clone()));
    ctl.stop().await;
}

#[tokio::test]
async fn a_forged_run_record_is_re_verified_from_the_registry_and_refused() {
    let w = World::start().await;
    let ctl = w.start_controller();
    let r1 = w.push_run(1).await;
    w.create_build("kinoite", "Main").await;
    w.set_runs("kinoite", &[r1.summary(w.host(), "Succeeded", true)]).await;

    // Run 7: a record naming a candidate digest that is not in the registry.
    let phantom = format!("sha256:{}", "7".repeat(64));
    w.write_record(7, w.provenance(7, &phantom, &r1.akmods, &[KERNEL]).await).await;
    // Run 8: a candidate that is in the candidate repository, but carries ZFS for another
    // kernel than the one its record claims it was verified for.
    let r8 = w.push_run_for(8, "6.18.12-200.fc43.x86_64").await;
    w.write_record(8, w.provenance(8, &r8.image, &r8.akmods, &[KERNEL]).await).await;
    // Run 9: candidate and verification fine, akmods digest not in the registry.
    let r9 = w.push_run(9).await;
    let no_akmods = format!("sha256:{}", "9".repeat(64));
    w.write_record(9, w.provenance(9, &r9.image, &no_akmods, &[KERNEL]).await).await;

    w.create_promotion("absent", "  buildRef: {name: kinoite}\n  policy: Pinned\n  candidate: {run: 7}\n  tags: [a]")
        .await;
    w.create_promotion(
        "no-zfs",
        "  buildRef: {name: kinoite}\n  policy: Pinned\n  candidate: {run: 8}\n  tags: [b]\n  alignAkmods: false",
    )
    .await;
    w.create_promotion(
        "no-akmods",
        "  buildRef: {name: kinoite}\n  policy: Pinned\n  candidate: {run: 9}\n  tags: [c]\n  alignAkmods: false",
    )
    .await;
    let stalled = |s: &PromotionStatus| find(&s.conditions, "Stalled").unwrap().message.clone();
    let s = w.wait_stalled("absent", "RunRecordNotVerified").await;
    assert!(
        stalled(&s).contains(&format!("{}/{CANDIDATE}@{phantom} is not in the candidate repository", w.host())),
        "{}",
        stalled(&s)
    );
    let s = w.wait_stalled("no-zfs", "RunRecordNotVerified").await;
    let message = stalled(&s);
    assert!(message.contains(&format!("does not verify for kernels {KERNEL}")), "{message}");
    assert!(message.contains("missing a ZFS module payload"), "verify's own reason: {message}");
    let s = w.wait_stalled("no-akmods", "RunRecordNotVerified").await;
    assert!(
        stalled(&s).contains(&format!("akmods image {}/{AKMODS_CANDIDATE}@{no_akmods}", w.host())),
        "{}",
        stalled(&s)
    );
    for name in ["absent", "no-zfs", "no-akmods"] {
        let s = w.status(name).await;
        assert!(s.stable.is_none() && s.in_progress.is_none(), "{name}");
        assert!(w.events(name).await.contains(&("Warning".into(), "PromotionStalled".into())), "{name}");
    }
    // Nothing moved: no stable tag, no audit tag, no akmods tag.
    assert!(w.tags(STABLE).await.is_empty());
    assert!(w.tags(AKMODS).await.is_empty());
    // The registry was read (the candidate's layers for the verification), never written.
    assert!(w.seen().iter().any(|(m, p)| m == "GET" && p.contains("/blobs/")));
    assert!(w.seen().iter().all(|(m, _)| m == "GET" || m == "HEAD"), "{:?}", w.seen());
    ctl.stop().await;
}

#[tokio::test]
async fn registry_credentials_come_from_the_builds_secret() {
    use k8s_openapi::api::core::v1::Secret;
    let password = "pr0moter-s3cret";
    let w = World::start_with_auth("promoter", password).await;
    let ctl = w.start_controller();
    let r1 = w.push_run(1).await;
    w.create_build_with("kinoite", "Main", "credentialsSecretRef: {name: push-creds}").await;
    w.set_runs("kinoite", &[r1.summary(w.host(), "Succeeded", true)]).await;
    w.create_promotion("stable", "  buildRef: {name: kinoite}\n  policy: Auto").await;
    let s = w.wait_stalled("stable", "RegistryUnauthorized").await;
    assert!(find(&s.conditions, "Stalled").unwrap().message.contains("kz/push-creds"), "{:?}", s.conditions);

    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), NS);
    let secret = |password: &str| -> Secret {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("promoter:{password}"));
        let config = format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, w.host());
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "push-creds", "namespace": NS},
            "stringData": {".dockerconfigjson": config},
        }))
        .unwrap()
    };
    // Wrong password: the registry says 401, reported as such, never as a missing image.
    secrets.create(&PostParams::default(), &secret("wrong-password")).await.unwrap();
    w.touch("stable").await;
    let s = w
        .wait_for("stable", "401 from the registry", |s| {
            find(&s.conditions, "Stalled")
                .is_some_and(|c| c.reason == "RegistryUnauthorized" && c.message.contains("401"))
        })
        .await;
    assert_eq!(w.skopeo_digest(&format!("{STABLE}:latest")), None, "nothing moved");

    // The right one: promoted.
    secrets.delete("push-creds", &DeleteParams::default()).await.unwrap();
    secrets.create(&PostParams::default(), &secret(password)).await.unwrap();
    w.touch("stable").await;
    let promoted = w.wait_promoted("stable", 1).await;
    // No credential anywhere in status or Events.
    let promotion = w.promotions().get("stable").await.unwrap();
    let text = format!("{}{:?}{:?}", serde_json::to_string(&promotion).unwrap(), s, promoted);
    let events: Api<K8sEvent> = Api::namespaced(w.client.clone(), NS);
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap();
    for secret in [password, "wrong-password", "cHJvbW90ZXI6"] {
        assert!(!text.contains(secret) && !events.contains(secret), "{secret} leaked");
    }
    ctl.stop().await;
}
