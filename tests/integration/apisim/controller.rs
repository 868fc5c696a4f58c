//! A kube-runtime `Controller` on the real ZfsImageBuild CRD with `.owns(Job)`, written the way
//! the operator's controllers are (observe -> plan -> apply with server-side apply -> status,
//! events on transitions): it converges, reacts to a Job the test completes (envtest style), and
//! then stays quiet — no reconciles and no writes over a quiet period.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{eventually, owned_job};
use crate::support::apisim::{ApiSim, Verb};
use kinoite_zfs_operator::api::ZfsImageBuild;
use kinoite_zfs_operator::controllers::conditions::{DesiredCondition, FALSE, TRUE, find, set_condition};

const MANAGER: &str = "apisim-test-controller";
const NS: &str = "kinoite-builds";

struct Ctx {
    client: kube::Client,
    recorder: Recorder,
    reconciles: AtomicUsize,
    errors: AtomicUsize,
}

/// Observed state of one build.
struct Observed {
    job_succeeded: bool,
}

/// Pure plan: the Ready condition for what was observed.
fn plan(observed: &Observed) -> DesiredCondition {
    if observed.job_succeeded {
        DesiredCondition::new("Ready", TRUE, "Succeeded", "the image job succeeded")
    } else {
        DesiredCondition::new("Ready", FALSE, "Building", "the image job is running")
    }
}

async fn reconcile(build: Arc<ZfsImageBuild>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let name = build.name_any();
    let ns = build.namespace().unwrap_or_default();
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ns);
    let job_name = format!("{name}-1-image");
    let observed = Observed {
        job_succeeded: jobs
            .get_opt(&job_name)
            .await?
            .and_then(|j| j.status)
            .and_then(|s| s.succeeded)
            .is_some_and(|n| n > 0),
    };
    let desired = plan(&observed);
    jobs.patch(&job_name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(owned_job(&job_name, build.as_ref())))
        .await?;
    let mut conditions = build.status.clone().unwrap_or_default().conditions;
    let before = find(&conditions, "Ready").map(|c| (c.status.clone(), c.reason.clone()));
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    set_condition(&mut conditions, desired.clone(), build.metadata.generation, &now);
    let status = json!({
        "apiVersion": "kinoite-zfs.io/v1alpha1",
        "kind": "ZfsImageBuild",
        "status": {"observedGeneration": build.metadata.generation, "conditions": conditions},
    });
    let builds = Api::<ZfsImageBuild>::namespaced(ctx.client.clone(), &ns);
    builds.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(status)).await?;
    if before != Some((desired.status.to_string(), desired.reason.clone())) {
        let event = Event {
            type_: if desired.status == TRUE { EventType::Normal } else { EventType::Warning },
            reason: desired.reason.clone(),
            note: Some(desired.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        ctx.recorder.publish(&event, &build.object_ref(&())).await?;
    }
    Ok(Action::await_change())
}

fn error_policy(_build: Arc<ZfsImageBuild>, _error: &kube::Error, ctx: Arc<Ctx>) -> Action {
    ctx.errors.fetch_add(1, Ordering::SeqCst);
    Action::requeue(Duration::from_millis(100))
}

fn example_build() -> ZfsImageBuild {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/main-build.yaml");
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).expect("the main example parses")
}

async fn ready(builds: &Api<ZfsImageBuild>, status: &str, generation: i64) -> bool {
    builds.get_opt("kinoite-zfs").await.ok().flatten().and_then(|b| b.status).is_some_and(|s| {
        s.observed_generation == Some(generation) && find(&s.conditions, "Ready").is_some_and(|c| c.status == status)
    })
}

#[tokio::test]
async fn controller_with_owned_jobs_converges_then_stays_quiet() {
    let sim = ApiSim::start();
    sim.install_crds(&kinoite_zfs_operator::api::crds());
    sim.create_namespace(NS);
    let client = sim.client().await;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), Reporter { controller: MANAGER.into(), instance: None }),
        reconciles: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
    });
    // The first status write fails: the controller must retry through its error policy.
    sim.fail_next(Verb::Patch, "zfsimagebuilds/status", 1, 500);
    let controller = Controller::new(Api::<ZfsImageBuild>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Job>::all(client.clone()), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);

    let builds = Api::<ZfsImageBuild>::namespaced(client.clone(), NS);
    builds.create(&PostParams::default(), &example_build()).await.unwrap();
    eventually("Ready=False while the job runs", || ready(&builds, FALSE, 1)).await;
    assert_eq!(ctx.errors.load(Ordering::SeqCst), 1, "the injected failure was retried");
    let jobs = Api::<Job>::namespaced(client.clone(), NS);
    let job = jobs.get("kinoite-zfs-1-image").await.unwrap();
    assert_eq!(job.owner_references()[0].name, "kinoite-zfs");

    // Envtest style: the simulator runs no Jobs; the test completes it and leaves a pod with the
    // builder's termination message.
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kinoite-zfs-1-image-x7k2p", "labels": job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone(),
            "ownerReferences": [job.controller_owner_ref(&()).unwrap()]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "build", "image": "builder:1"}]}
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let terminated = json!({"status": {"phase": "Succeeded", "containerStatuses": [{"name": "build", "image": "builder:1", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": "{\"digest\":\"sha256:00\"}"}}}]}});
    pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(terminated)).await.unwrap();
    let done = json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
    jobs.patch_status("kinoite-zfs-1-image", &PatchParams::default(), &Patch::Merge(done)).await.unwrap();
    eventually("Ready=True after the job succeeded", || ready(&builds, TRUE, 1)).await;

    // A spec change bumps generation and is observed.
    builds
        .patch("kinoite-zfs", &PatchParams::default(), &Patch::Merge(json!({"spec": {"historyLimit": 5}})))
        .await
        .unwrap();
    eventually("observedGeneration 2", || ready(&builds, TRUE, 2)).await;

    // Quiet: the controller's own no-op writes produce no events, so nothing triggers it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reconciles = ctx.reconciles.load(Ordering::SeqCst);
    let stats = sim.stats();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = sim.stats();
    assert_eq!(ctx.reconciles.load(Ordering::SeqCst), reconciles, "no reconciles during the quiet period");
    assert_eq!(after.writes, stats.writes, "no writes during the quiet period");
    assert_eq!(after.requests(Verb::Patch, "*"), stats.requests(Verb::Patch, "*"));
    assert!(reconciles <= 12, "converged in a handful of reconciles, took {reconciles}");

    // Events were recorded on the two transitions (events.k8s.io/v1).
    let events = Api::<K8sEvent>::namespaced(client.clone(), NS).list(&Default::default()).await.unwrap();
    let mut reasons: Vec<String> = events.items.iter().filter_map(|e| e.reason.clone()).collect();
    reasons.sort();
    assert_eq!(reasons, ["Building", "Succeeded"]);

    // Deleting the build garbage-collects its Job and the Job's pod.
    builds.delete("kinoite-zfs", &Default::default()).await.unwrap();
    assert!(jobs.get_opt("kinoite-zfs-1-image").await.unwrap().is_none());
    assert!(pods.list(&Default::default()).await.unwrap().items.is_empty());
    handle.abort();
}
