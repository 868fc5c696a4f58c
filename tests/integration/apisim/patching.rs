//! Patch types through kube's client: JSON merge patch, JSON patch, strategic merge patch
//! (built-in kinds only) and server-side apply with field ownership.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{Widget, create_widget, owned_job, sim_with_widgets};

fn code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn status_apply(conditions: Value) -> Value {
    json!({"apiVersion": "apisim.test/v1", "kind": "Widget", "status": {"conditions": conditions}})
}

fn cond(type_: &str, status: &str) -> Value {
    json!({"type": type_, "status": status, "reason": "R", "message": "m", "lastTransitionTime": "2025-01-01T00:00:00Z"})
}

#[tokio::test]
async fn json_patch_and_merge_patch() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    create_widget(&client, "test", "w", 1).await;
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/size", "value": 1},
        {"op": "replace", "path": "/spec/size", "value": 5},
        {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}
    ]))
    .unwrap();
    let w = widgets.patch("w", &PatchParams::default(), &Patch::<()>::Json(patch)).await.unwrap();
    assert_eq!((w.spec.size, w.labels()["a"].as_str()), (5, "b"));

    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/size", "value": 1}])).unwrap();
    assert_eq!(code(widgets.patch("w", &PatchParams::default(), &Patch::<()>::Json(failing)).await.unwrap_err()), 422);

    // Merge patch: null deletes, objects merge, lists replace.
    let w = widgets
        .patch("w", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": null, "c": "d"}}})))
        .await
        .unwrap();
    assert_eq!(w.labels().len(), 1);
    assert_eq!(w.labels()["c"], "d");
    // Schema validation applies to the patched object.
    let err =
        widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 0}}))).await.unwrap_err();
    assert_eq!(code(err), 422);
}

#[tokio::test]
async fn strategic_merge_patch_for_builtins_only() {
    let (_sim, client) = sim_with_widgets().await;
    let jobs = Api::<Job>::namespaced(client.clone(), "test");
    let owner = create_widget(&client, "test", "o", 1).await;
    let mut job = owned_job("j", &owner);
    job.metadata.labels = Some([("a".to_string(), "1".to_string())].into());
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let patch = json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["apisim.test/x"]}});
    let patched = jobs.patch("j", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    assert_eq!(patched.labels().len(), 2);
    // A template change is refused: Job templates are immutable.
    let template = json!({"spec": {"template": {"spec": {"containers": [{"name": "build", "image": "other:2"}]}}}});
    assert_eq!(code(jobs.patch("j", &PatchParams::default(), &Patch::Strategic(template)).await.unwrap_err()), 422);

    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let err =
        widgets.patch("o", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"size": 2}}))).await.unwrap_err();
    assert_eq!(code(err), 415, "custom resources do not support strategic merge patch");
}

#[tokio::test]
async fn server_side_apply_tracks_field_ownership() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    // Apply creates.
    let config = json!({"apiVersion": "apisim.test/v1", "kind": "Widget", "metadata": {"name": "w", "labels": {"app": "x"}}, "spec": {"size": 2}});
    let w = widgets.patch("w", &PatchParams::apply("owner-a"), &Patch::Apply(&config)).await.unwrap();
    assert_eq!(w.spec.size, 2);
    assert_eq!(w.metadata.generation, Some(1));
    let managed = w.metadata.managed_fields.clone().unwrap();
    assert_eq!((managed[0].manager.as_deref(), managed[0].operation.as_deref()), (Some("owner-a"), Some("Apply")));

    // Another manager changing an owned field conflicts unless forced.
    let other =
        json!({"apiVersion": "apisim.test/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}});
    let err = widgets.patch("w", &PatchParams::apply("owner-b"), &Patch::Apply(&other)).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(s.message.contains("conflict with \"owner-a\""), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
    let w = widgets.patch("w", &PatchParams::apply("owner-b").force(), &Patch::Apply(&other)).await.unwrap();
    assert_eq!((w.spec.size, w.metadata.generation), (3, Some(2)));

    // owner-a stops applying its label: it is removed (owner-a was its only manager).
    let without_label =
        json!({"apiVersion": "apisim.test/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}});
    let w = widgets.patch("w", &PatchParams::apply("owner-a"), &Patch::Apply(&without_label)).await.unwrap();
    assert!(w.labels().is_empty(), "{:?}", w.labels());

    // YAML bodies are accepted as kubectl sends them.
    let yaml = "apiVersion: apisim.test/v1\nkind: Widget\nmetadata:\n  name: from-yaml\nspec:\n  size: 4\n";
    let request = http::Request::patch("/apis/apisim.test/v1/namespaces/test/widgets/from-yaml?fieldManager=yaml")
        .header("Content-Type", "application/apply-patch+yaml")
        .body(yaml.as_bytes().to_vec())
        .unwrap();
    let y: Widget = client.request(request).await.unwrap();
    assert_eq!(y.spec.size, 4);
}

#[tokio::test]
async fn applied_status_conditions_merge_by_type_and_drop_when_no_longer_applied() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    create_widget(&client, "test", "w", 1).await;
    let pp = PatchParams::apply("controller").force();
    widgets
        .patch_status("w", &pp, &Patch::Apply(status_apply(json!([cond("Ready", "False"), cond("Stalled", "True")]))))
        .await
        .unwrap();
    // Someone else owns a condition of their own (e.g. another controller).
    let other = PatchParams::apply("auditor").force();
    widgets.patch_status("w", &other, &Patch::Apply(status_apply(json!([cond("Audited", "True")])))).await.unwrap();

    // The controller recomputes its status: Ready True, Stalled no longer present.
    let w = widgets.patch_status("w", &pp, &Patch::Apply(status_apply(json!([cond("Ready", "True")])))).await.unwrap();
    let mut types: Vec<(String, String)> =
        w.status.unwrap().conditions.iter().map(|c| (c.type_.clone(), c.status.clone())).collect();
    types.sort();
    assert_eq!(types, [("Audited".to_string(), "True".to_string()), ("Ready".into(), "True".into())]);
}

#[tokio::test]
async fn applying_children_is_idempotent_and_other_fields_survive() {
    let (sim, client) = sim_with_widgets().await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "test");
    let pp = PatchParams::apply("operator").force();
    let config =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "run-1"}, "data": {"inputs.json": "{}"}});
    let first = cms.patch("run-1", &pp, &Patch::Apply(&config)).await.unwrap();
    // A human adds an annotation with kubectl-style update.
    cms.patch("run-1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"note": "x"}}})))
        .await
        .unwrap();
    let writes = sim.stats().writes;
    let again = cms.patch("run-1", &pp, &Patch::Apply(&config)).await.unwrap();
    assert_eq!(sim.stats().writes, writes, "re-applying the same configuration stores nothing");
    assert_eq!(again.annotations()["note"], "x");
    assert!(again.resource_version() != first.resource_version());
}
