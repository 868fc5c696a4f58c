//! Watch semantics kube's watcher relies on: resumption from a resourceVersion, 410 Gone and the
//! re-list it causes, streaming lists (initial events + `k8s.io/initial-events-end` bookmark),
//! selector transitions, bookmarks, dropped connections, and no events for no-op writes.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use super::{Widget, create_widget, eventually, rv, sim_with_widgets, widget_crd};
use crate::support::apisim::{ApiSim, Options, Verb};

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Widget>>> + Unpin),
) -> WatchEvent<Widget> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch event within 10s")
        .expect("the watch stream is open")
        .expect("a decodable watch event")
}

fn describe(event: &WatchEvent<Widget>) -> String {
    match event {
        WatchEvent::Added(w) => format!("ADDED {}", w.name_any()),
        WatchEvent::Modified(w) => format!("MODIFIED {}", w.name_any()),
        WatchEvent::Deleted(w) => format!("DELETED {}", w.name_any()),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

#[tokio::test]
async fn watch_resumes_after_a_version_and_reports_410_for_compacted_ones() {
    let (sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let a = create_widget(&client, "test", "a", 1).await;
    create_widget(&client, "test", "b", 1).await;
    widgets.patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();

    let mut stream = widgets.watch(&WatchParams::default(), &a.resource_version().unwrap()).await.unwrap().boxed();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED b");
    assert_eq!(describe(&next_event(&mut stream).await), "MODIFIED a");
    widgets.delete("b", &Default::default()).await.unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "DELETED b");

    sim.compact();
    let mut stale = widgets.watch(&WatchParams::default(), &a.resource_version().unwrap()).await.unwrap().boxed();
    match next_event(&mut stale).await {
        WatchEvent::Error(status) => assert_eq!((status.code, status.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn watcher_relists_after_410_and_recovers_from_dropped_connections() {
    let (sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    create_widget(&client, "test", "a", 1).await;
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = kube::runtime::reflector(writer, watcher::watcher(widgets.clone(), watcher::Config::default()));
    let task = tokio::spawn(stream.for_each(|_| async {}));
    eventually("the reflector sees a", || async {
        reader.get(&kube::runtime::reflector::ObjectRef::new("a").within("test")).is_some()
    })
    .await;
    let lists_before = sim.stats().requests(Verb::List, "widgets");
    assert_eq!(lists_before, 1, "default watcher config lists first");

    // The connection drops; the watcher resumes from its last version without re-listing.
    sim.drop_watches();
    create_widget(&client, "test", "b", 1).await;
    eventually("b after a dropped watch", || async { reader.state().len() == 2 }).await;
    assert_eq!(sim.stats().requests(Verb::List, "widgets"), 1);

    // Another type moves the store's version past the watcher's, then history is compacted:
    // resuming gets 410 Gone and the watcher re-lists.
    sim.create_namespace("elsewhere");
    sim.compact();
    sim.drop_watches();
    widgets.delete("a", &Default::default()).await.unwrap();
    eventually("a gone after re-list", || async { reader.state().len() == 1 }).await;
    eventually("a second list", || async { sim.stats().requests(Verb::List, "widgets") >= 2 }).await;
    task.abort();
}

#[tokio::test]
async fn streaming_list_sends_initial_events_then_the_end_bookmark() {
    let (sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    create_widget(&client, "test", "a", 1).await;
    create_widget(&client, "test", "b", 1).await;
    let mut events = watcher::watcher(widgets.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next()).await.unwrap().unwrap().unwrap();
        match event {
            Event::Init => seen.push("init".to_string()),
            Event::InitApply(w) => seen.push(format!("init-apply {}", w.name_any())),
            Event::InitDone => {
                seen.push("init-done".into());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["init", "init-apply a", "init-apply b", "init-done"]);
    create_widget(&client, "test", "c", 1).await;
    let event = tokio::time::timeout(Duration::from_secs(10), events.try_next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(event, Event::Apply(ref w) if w.name_any() == "c"), "{event:?}");
    assert_eq!(sim.stats().requests(Verb::List, "widgets"), 0, "a streaming list needs no list call");
}

#[tokio::test]
async fn selector_watches_see_objects_enter_and_leave() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let a = create_widget(&client, "test", "a", 1).await;
    let wp = WatchParams::default().labels("team=blue");
    let mut stream = widgets.watch(&wp, &a.resource_version().unwrap()).await.unwrap().boxed();
    let label = |v: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"team": v}}}));
    widgets.patch("a", &PatchParams::default(), &label(Some("blue"))).await.unwrap();
    widgets.patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 3}}))).await.unwrap();
    widgets.patch("a", &PatchParams::default(), &label(None)).await.unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED a");
    assert_eq!(describe(&next_event(&mut stream).await), "MODIFIED a");
    assert_eq!(describe(&next_event(&mut stream).await), "DELETED a");
}

#[tokio::test]
async fn no_op_writes_send_no_events_and_bookmarks_arrive() {
    let sim = ApiSim::start_with(Options { bookmark_interval: Duration::from_millis(200), ..Default::default() });
    sim.install_crds(&[widget_crd()]);
    sim.create_namespace("test");
    let client = sim.client().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let a = create_widget(&client, "test", "a", 1).await;
    let mut stream = widgets.watch(&WatchParams::default(), &a.resource_version().unwrap()).await.unwrap().boxed();
    widgets.patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 1}}))).await.unwrap();
    let changed =
        widgets.patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
    match next_event(&mut stream).await {
        WatchEvent::Modified(w) => assert_eq!(rv(&w), rv(&changed), "the no-op patch produced no event"),
        other => panic!("expected MODIFIED, got {}", describe(&other)),
    }

    let wp = WatchParams { bookmarks: true, ..Default::default() };
    let mut stream = widgets.watch(&wp, &changed.resource_version().unwrap()).await.unwrap().boxed();
    match next_event(&mut stream).await {
        WatchEvent::Bookmark(b) => assert!(b.metadata.resource_version.parse::<u64>().unwrap() >= rv(&changed)),
        other => panic!("expected a bookmark, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn watches_of_a_deleted_crd_end() {
    let (sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    create_widget(&client, "test", "a", 1).await;
    let mut stream = widgets.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED a");
    let crds = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(
        client.clone(),
    );
    crds.delete("widgets.apisim.test", &Default::default()).await.unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "DELETED a", "CRD deletion removes its objects");
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("stream ends");
    assert!(end.is_none());
    assert!(sim.object("customresourcedefinitions", "", "widgets.apisim.test").is_none());
    assert!(widgets.list(&Default::default()).await.is_err(), "the type is no longer served");
}

#[tokio::test]
async fn metadata_watchers_get_partial_objects() {
    let (_sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    let mut w = super::widget("a", 1);
    w.metadata.labels = Some([("team".to_string(), "blue".to_string())].into());
    widgets.create(&Default::default(), &w).await.unwrap();
    let listed = widgets.list_metadata(&Default::default()).await.unwrap();
    assert_eq!(listed.items[0].metadata.labels.as_ref().unwrap()["team"], "blue");
    let metadata_only = Api::<kube::core::PartialObjectMeta<Widget>>::namespaced(client.clone(), "test");
    let mut events = watcher::watcher(metadata_only, watcher::Config::default()).boxed();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await.unwrap().unwrap().unwrap() {
            Event::InitApply(meta) => {
                assert_eq!(meta.metadata.name.as_deref(), Some("a"));
                assert_eq!(meta.types.as_ref().map(|t| t.kind.as_str()), Some("PartialObjectMetadata"));
                break;
            }
            _ => continue,
        }
    }
}
