//! Discovery, create/get/list/update, optimistic concurrency, the status subresource, generation,
//! no-op writes and schema validation, through kube's `Client`.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::discovery::Discovery;
use kube::{Error, ResourceExt};
use serde_json::json;

use super::{Widget, WidgetSpec, WidgetStatus, condition, create_widget, rv, sim_with_widgets, widget};
use crate::support::apisim::{ApiSim, Verb};

fn api_error(result: Result<impl std::fmt::Debug, Error>) -> Status {
    match result {
        Err(Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_lists_builtins_and_crd_resources() {
    let (_sim, client) = sim_with_widgets().await;
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            found.push(format!("{}/{} {} {:?}", resource.group, resource.plural, resource.kind, caps.scope));
        }
    }
    for expected in [
        "apisim.test/widgets Widget Namespaced",
        "batch/jobs Job Namespaced",
        "/configmaps ConfigMap Namespaced",
        "/namespaces Namespace Cluster",
        "coordination.k8s.io/leases Lease Namespaced",
        "events.k8s.io/events Event Namespaced",
        "apiextensions.k8s.io/customresourcedefinitions CustomResourceDefinition Cluster",
    ] {
        assert!(found.iter().any(|f| f == expected), "{expected} missing from {found:#?}");
    }
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn create_sets_server_fields_and_rejects_duplicates() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let created = widgets.create(&PostParams::default(), &widget("a", 3)).await.unwrap();
    assert!(created.uid().is_some_and(|u| u.len() == 36));
    assert!(created.creation_timestamp().is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.spec.color.as_deref(), Some("red"), "schema default applied");
    assert_eq!(created.metadata.namespace.as_deref(), Some("test"));

    let err = api_error(widgets.create(&PostParams::default(), &widget("a", 3)).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));

    let mut generated = widget("", 1);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let g = widgets.create(&PostParams::default(), &generated).await.unwrap();
    assert!(g.name_any().starts_with("gen-") && g.name_any().len() == 9, "{}", g.name_any());

    let err = api_error(
        Api::<Widget>::namespaced(client.clone(), "missing").create(&PostParams::default(), &widget("a", 1)).await,
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"), "namespace must exist");

    // Status cannot be set on create when the type has a status subresource.
    let mut with_status = widget("b", 1);
    with_status.status = Some(WidgetStatus { phase: Some("Done".into()), ..Default::default() });
    let b = widgets.create(&PostParams::default(), &with_status).await.unwrap();
    assert_eq!(b.status, None);
}

#[tokio::test]
async fn list_filters_by_labels_fields_and_pages() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    for i in 0..5 {
        let mut w = widget(&format!("w{i}"), i + 1);
        w.metadata.labels = Some([("parity".to_string(), if i % 2 == 0 { "even" } else { "odd" }.to_string())].into());
        widgets.create(&PostParams::default(), &w).await.unwrap();
    }
    let even = widgets.list(&ListParams::default().labels("parity=even")).await.unwrap();
    assert_eq!(even.items.iter().map(|w| w.name_any()).collect::<Vec<_>>(), ["w0", "w2", "w4"]);
    let not_even = widgets.list(&ListParams::default().labels("parity notin (even)")).await.unwrap();
    assert_eq!(not_even.items.len(), 2);
    let by_name = widgets.list(&ListParams::default().fields("metadata.name=w3")).await.unwrap();
    assert_eq!(by_name.items.len(), 1);
    let all_ns = Api::<Widget>::all(client.clone())
        .list(&ListParams::default().fields("metadata.namespace=test"))
        .await
        .unwrap();
    assert_eq!(all_ns.items.len(), 5);
    let err = api_error(widgets.list(&ListParams::default().fields("spec.size=3")).await);
    assert_eq!(err.code, 400, "unsupported field selectors are rejected like on a real server");

    let page1 = widgets.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page1.items.len(), 2);
    let token = page1.metadata.continue_.clone().expect("continue token");
    assert_eq!(page1.metadata.remaining_item_count, Some(3));
    let page2 = widgets.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(page2.items.iter().map(|w| w.name_any()).collect::<Vec<_>>(), ["w2", "w3"]);
    assert_eq!(page2.metadata.resource_version, page1.metadata.resource_version);
}

#[tokio::test]
async fn stale_update_conflicts() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let first = create_widget(&client, "test", "w", 1).await;
    let mut a = first.clone();
    a.spec.size = 2;
    let updated = widgets.replace("w", &PostParams::default(), &a).await.unwrap();
    assert!(rv(&updated) > rv(&first));
    assert_eq!(updated.metadata.generation, Some(2));

    let mut stale = first.clone();
    stale.spec.size = 3;
    let err = api_error(widgets.replace("w", &PostParams::default(), &stale).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(err.message.contains("the object has been modified"), "{}", err.message);

    // A custom resource PUT must name the version it replaces.
    let mut unconditional = updated.clone();
    unconditional.metadata.resource_version = None;
    let err = api_error(widgets.replace("w", &PostParams::default(), &unconditional).await);
    assert_eq!(err.code, 422);

    // Merge patches with a stale resourceVersion conflict too.
    let patch = json!({"metadata": {"resourceVersion": first.resource_version()}, "spec": {"size": 9}});
    let err = api_error(widgets.patch("w", &PatchParams::default(), &Patch::Merge(&patch)).await);
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn status_subresource_separates_status_and_spec() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    create_widget(&client, "test", "w", 1).await;

    // A spec write through the main resource ignores status.
    let patch = json!({"spec": {"size": 2}, "status": {"phase": "Sneaky"}});
    let w = widgets.patch("w", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert_eq!((w.spec.size, w.status.clone(), w.metadata.generation), (2, None, Some(2)));

    // A status write ignores spec and metadata, and does not bump generation.
    let patch = json!({"spec": {"size": 50}, "metadata": {"labels": {"x": "y"}}, "status": {"phase": "Ready"}});
    let w = widgets.patch_status("w", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert_eq!(w.spec.size, 2);
    assert_eq!(w.labels().get("x"), None);
    assert_eq!(w.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Ready"));
    assert_eq!(w.metadata.generation, Some(2));

    // replace_status with a full object.
    let mut full = w.clone();
    full.status = Some(WidgetStatus { conditions: vec![condition("Ready", "True", "Done")], ..Default::default() });
    full.spec.size = 77;
    let w = widgets.replace_status("w", &PostParams::default(), &full).await.unwrap();
    assert_eq!(w.spec.size, 2);
    assert_eq!(w.status.unwrap().conditions[0].type_, "Ready");

    // GET on the status subresource returns the object.
    let s = widgets.get_status("w").await.unwrap();
    assert_eq!(s.name_any(), "w");
}

#[tokio::test]
async fn writes_that_change_nothing_are_not_stored() {
    let (sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let w = create_widget(&client, "test", "w", 1).await;
    let before = sim.stats().writes;
    let again = widgets.replace("w", &PostParams::default(), &w).await.unwrap();
    assert_eq!(again.resource_version(), w.resource_version());
    let patched =
        widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 1}}))).await.unwrap();
    assert_eq!(patched.resource_version(), w.resource_version());
    let applied = json!({"apiVersion": "apisim.test/v1", "kind": "Widget", "status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "Done", "message": "m", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}});
    let pp = PatchParams::apply("ctl").force();
    let first = widgets.patch_status("w", &pp, &Patch::Apply(&applied)).await.unwrap();
    let second = widgets.patch_status("w", &pp, &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(first.resource_version(), second.resource_version(), "idempotent apply is a no-op");
    assert_eq!(sim.stats().writes, before + 1, "only the first apply was stored");
    assert_eq!(sim.stats().requests(Verb::Patch, "widgets/status"), 2);
}

#[tokio::test]
async fn schema_validation_defaults_and_cel() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let bad = Widget::new("bad", WidgetSpec { size: 0, color: Some("purple".into()), owner: Some("Not Valid".into()) });
    let err = api_error(widgets.create(&PostParams::default(), &bad).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    for needle in ["spec.size", "spec.color", "spec.owner"] {
        assert!(err.message.contains(needle), "{needle} in {}", err.message);
    }
    let big = Widget::new("big", WidgetSpec { size: 500, color: None, owner: None });
    let err = api_error(widgets.create(&PostParams::default(), &big).await);
    assert!(err.message.contains("big widgets need an owner"), "{}", err.message);

    // Unknown fields: pruned with a warning by default, rejected with fieldValidation=Strict.
    let raw = json!({"apiVersion": "apisim.test/v1", "kind": "Widget", "metadata": {"name": "u"}, "spec": {"size": 1, "extra": true}});
    let dynamic = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "test",
        &kube::api::ApiResource::erase::<Widget>(&()),
    );
    let obj: kube::api::DynamicObject = serde_json::from_value(raw.clone()).unwrap();
    let created = dynamic.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.data["spec"], json!({"size": 1, "color": "red"}));
    let mut strict_obj = obj.clone();
    strict_obj.metadata.name = Some("u2".into());
    let err = api_error(
        client
            .request::<kube::api::DynamicObject>(
                http::Request::post("/apis/apisim.test/v1/namespaces/test/widgets?fieldValidation=Strict")
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(&strict_obj).unwrap())
                    .unwrap(),
            )
            .await,
    );
    assert_eq!(err.code, 400);
    assert!(err.message.contains("unknown field \"spec.extra\""), "{}", err.message);

    // Dry run validates and answers without storing.
    let dry = widgets.create(&PostParams { dry_run: true, field_manager: None }, &widget("dry", 1)).await.unwrap();
    assert_eq!(dry.name_any(), "dry");
    assert!(widgets.get_opt("dry").await.unwrap().is_none());
}

#[tokio::test]
async fn builtin_kinds_get_their_server_side_behaviour() {
    let sim = ApiSim::start();
    let client = sim.client().await;
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    let secret = Secret {
        metadata: ObjectMeta { name: Some("s".into()), ..Default::default() },
        string_data: Some([("token".to_string(), "hunter2".to_string())].into()),
        ..Default::default()
    };
    let stored = secrets.create(&PostParams::default(), &secret).await.unwrap();
    assert_eq!(stored.type_.as_deref(), Some("Opaque"));
    assert!(stored.string_data.is_none());
    assert_eq!(stored.data.unwrap()["token"].0, b"hunter2");

    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some("c".into()), ..Default::default() },
        data: Some([("a".to_string(), "1".to_string())].into()),
        immutable: Some(true),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let err = api_error(cms.patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "2"}}))).await);
    assert_eq!(err.code, 422, "immutable ConfigMap data");
    assert!(cms.get("c").await.unwrap().metadata.generation.is_none(), "ConfigMaps have no generation");

    let bad_name = ConfigMap {
        metadata: ObjectMeta { name: Some("Bad_Name".into()), ..Default::default() },
        ..Default::default()
    };
    let err = api_error(cms.create(&PostParams::default(), &bad_name).await);
    assert_eq!(err.code, 422);
    assert!(err.message.contains("metadata.name"), "{}", err.message);
}

#[tokio::test]
async fn leases_and_both_event_apis_are_served() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let sim = ApiSim::start();
    let client = sim.client().await;
    let leases = Api::<Lease>::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "kinoite-zfs-operator"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15, "renewTime": "2025-01-01T00:00:00.000000Z"}
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    let renewed = leases.replace("kinoite-zfs-operator", &PostParams::default(), &renewed).await.unwrap();
    assert_eq!(renewed.spec.unwrap().holder_identity.as_deref(), Some("pod-b"));
    // A competing holder with the old version loses.
    let err = api_error(leases.replace("kinoite-zfs-operator", &PostParams::default(), &created).await);
    assert_eq!(err.code, 409);

    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "x.1"}, "eventTime": "2025-01-01T00:00:00.000000Z", "reason": "Built",
        "action": "Reconcile", "reportingController": "kzo", "reportingInstance": "kzo-1", "type": "Normal",
        "regarding": {"kind": "ZfsImageBuild", "name": "x", "namespace": "default"}
    }))
    .unwrap();
    Api::<Event>::namespaced(client.clone(), "default").create(&PostParams::default(), &event).await.unwrap();
    let core: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "y.1"}, "reason": "Built", "involvedObject": {"kind": "ZfsImageBuild", "name": "y"}
    }))
    .unwrap();
    let core_events = Api::<CoreEvent>::namespaced(client.clone(), "default");
    core_events.create(&PostParams::default(), &core).await.unwrap();
    let selected = core_events.list(&ListParams::default().fields("involvedObject.name=y")).await.unwrap();
    assert_eq!(selected.items.len(), 1);
}
