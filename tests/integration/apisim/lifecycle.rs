//! Deletion: finalizers with deletionTimestamp (kube-runtime's finalizer helper), garbage
//! collection of owned Jobs (background, orphan, foreground, the Job default), namespace
//! termination and delete preconditions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{Widget, create_widget, owned_job, sim_with_widgets};

const FINALIZER: &str = "apisim.test/cleanup";

#[derive(Debug, thiserror::Error)]
#[error("never fails")]
struct Never;

fn pod_of(job: &Job, name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "ownerReferences": [job.controller_owner_ref(&()).unwrap()],
            "labels": {"batch.kubernetes.io/job-name": job.name_any()}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "build", "image": "builder:1"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn finalizer_flow_with_kube_runtime() {
    let (sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    create_widget(&client, "test", "w", 1).await;
    let cleanups = Arc::new(AtomicUsize::new(0));
    let run = |obj: Widget| {
        let widgets = widgets.clone();
        let cleanups = cleanups.clone();
        async move {
            finalizer(&widgets, FINALIZER, Arc::new(obj), |event| async move {
                if let Finalizer::Cleanup(_) = event {
                    cleanups.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, Never>(Action::await_change())
            })
            .await
            .expect("finalizer step")
        }
    };
    // First reconcile adds the finalizer (a JSON patch with a test op), the second applies.
    run(widgets.get("w").await.unwrap()).await;
    assert_eq!(widgets.get("w").await.unwrap().finalizers(), [FINALIZER]);
    run(widgets.get("w").await.unwrap()).await;

    let deleted = widgets.delete("w", &DeleteParams::default()).await.unwrap();
    let marked = deleted.left().expect("still there while the finalizer is set");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.generation, Some(2), "deletion bumps generation");

    // No new finalizers on an object being deleted.
    let add = Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER, "other.test/late"]}}));
    let err = widgets.patch("w", &PatchParams::default(), &add).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err:?}");

    run(widgets.get("w").await.unwrap()).await;
    assert_eq!(cleanups.load(Ordering::SeqCst), 1);
    assert!(widgets.get_opt("w").await.unwrap().is_none(), "removing the last finalizer deletes the object");
    assert!(sim.object("widgets", "test", "w").is_none());
}

#[tokio::test]
async fn deleting_an_owner_collects_its_jobs_and_their_pods() {
    let (_sim, client) = sim_with_widgets().await;
    let jobs = Api::<Job>::namespaced(client.clone(), "test");
    let pods = Api::<Pod>::namespaced(client.clone(), "test");
    let owner = create_widget(&client, "test", "owner", 1).await;
    let job = jobs.create(&PostParams::default(), &owned_job("owner-1-image", &owner)).await.unwrap();
    // Server-side Job defaults: generated selector and pod template labels.
    let uid = job.uid().unwrap();
    let selector = job.spec.as_ref().unwrap().selector.as_ref().unwrap().match_labels.clone().unwrap();
    assert_eq!(selector["batch.kubernetes.io/controller-uid"], uid);
    assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(6));
    pods.create(&PostParams::default(), &pod_of(&job, "owner-1-image-abcde")).await.unwrap();

    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    widgets.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(jobs.get_opt("owner-1-image").await.unwrap().is_none(), "owned Job collected");
    assert!(pods.get_opt("owner-1-image-abcde").await.unwrap().is_none(), "the Job's pod collected in cascade");
}

#[tokio::test]
async fn orphan_propagation_keeps_dependents_and_jobs_orphan_pods_by_default() {
    let (_sim, client) = sim_with_widgets().await;
    let jobs = Api::<Job>::namespaced(client.clone(), "test");
    let pods = Api::<Pod>::namespaced(client.clone(), "test");
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let owner = create_widget(&client, "test", "owner", 1).await;
    let job = jobs.create(&PostParams::default(), &owned_job("j", &owner)).await.unwrap();
    widgets.delete("owner", &DeleteParams::orphan()).await.unwrap();
    let kept = jobs.get("j").await.unwrap();
    assert!(kept.owner_references().is_empty(), "the owner reference is removed from the orphan");
    assert!(widgets.get_opt("owner").await.unwrap().is_none());

    // batch/v1 Jobs deleted without a propagation policy orphan their pods (apiserver default).
    pods.create(&PostParams::default(), &pod_of(&job, "p1")).await.unwrap();
    jobs.delete("j", &DeleteParams::default()).await.unwrap();
    assert!(pods.get("p1").await.unwrap().owner_references().is_empty());

    let job2 = jobs
        .create(&PostParams::default(), &owned_job("j2", &create_widget(&client, "test", "o2", 1).await))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod_of(&job2, "p2")).await.unwrap();
    jobs.delete("j2", &DeleteParams::background()).await.unwrap();
    assert!(pods.get_opt("p2").await.unwrap().is_none());
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocked_dependents() {
    let (_sim, client) = sim_with_widgets().await;
    let jobs = Api::<Job>::namespaced(client.clone(), "test");
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let owner = create_widget(&client, "test", "owner", 1).await;
    let mut job = owned_job("held", &owner);
    job.metadata.finalizers = Some(vec!["apisim.test/hold".into()]);
    jobs.create(&PostParams::default(), &job).await.unwrap();

    widgets.delete("owner", &DeleteParams::foreground()).await.unwrap();
    let waiting = widgets.get("owner").await.unwrap();
    assert!(waiting.finalizers().contains(&"foregroundDeletion".to_string()));
    assert!(jobs.get("held").await.unwrap().metadata.deletion_timestamp.is_some());

    jobs.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    assert!(jobs.get_opt("held").await.unwrap().is_none());
    assert!(widgets.get_opt("owner").await.unwrap().is_none(), "the owner goes once its dependents are gone");
}

#[tokio::test]
async fn dependents_of_missing_owners_are_collected() {
    let (_sim, client) = sim_with_widgets().await;
    let jobs = Api::<Job>::namespaced(client.clone(), "test");
    let ghost = Widget {
        metadata: ObjectMeta {
            name: Some("ghost".into()),
            uid: Some("00000000-0000-4000-8000-000000000000".into()),
            ..Default::default()
        },
        ..super::widget("ghost", 1)
    };
    let created = jobs.create(&PostParams::default(), &owned_job("dangling", &ghost)).await.unwrap();
    assert_eq!(created.name_any(), "dangling");
    assert!(jobs.get_opt("dangling").await.unwrap().is_none(), "the garbage collector removes it at once");

    // One live owner keeps it; the dangling reference is dropped.
    let live = create_widget(&client, "test", "live", 1).await;
    let mut job = owned_job("two-owners", &live);
    let mut dangling_ref = ghost.controller_owner_ref(&()).unwrap();
    dangling_ref.controller = Some(false);
    job.metadata.owner_references.as_mut().unwrap().push(dangling_ref);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let kept = jobs.get("two-owners").await.unwrap();
    assert_eq!(kept.owner_references().len(), 1);
    assert_eq!(kept.owner_references()[0].name, "live");
}

#[tokio::test]
async fn namespace_termination_deletes_its_content() {
    let (sim, client) = sim_with_widgets().await;
    sim.create_namespace("doomed");
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "doomed");
    let cm = ConfigMap { metadata: ObjectMeta { name: Some("c".into()), ..Default::default() }, ..Default::default() };
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let widgets = Api::<Widget>::namespaced(client.clone(), "doomed");
    let mut w = super::widget("held", 1);
    w.metadata.finalizers = Some(vec![FINALIZER.into()]);
    widgets.create(&PostParams::default(), &w).await.unwrap();

    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    namespaces.delete("doomed", &DeleteParams::default()).await.unwrap();
    let ns = namespaces.get("doomed").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert!(cms.get_opt("c").await.unwrap().is_none());
    let err = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 403), "{err:?}");

    widgets
        .patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    assert!(namespaces.get_opt("doomed").await.unwrap().is_none());
}

#[tokio::test]
async fn delete_preconditions_are_checked() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let w = create_widget(&client, "test", "w", 1).await;
    let wrong = DeleteParams {
        preconditions: Some(Preconditions { uid: Some("not-the-uid".into()), resource_version: None }),
        ..Default::default()
    };
    let err = widgets.delete("w", &wrong).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err:?}");
    let right = DeleteParams {
        preconditions: Some(Preconditions { uid: w.uid(), resource_version: w.resource_version() }),
        ..Default::default()
    };
    let gone = widgets.delete("w", &right).await.unwrap();
    assert!(gone.is_left(), "custom resources return the deleted object");
    let err = widgets.delete("w", &DeleteParams::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");
}
