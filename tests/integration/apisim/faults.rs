//! Fault injection and counters: failing the next N matching requests with a chosen status, and
//! the request/write counters controller tests assert "stays quiet" with.

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use serde_json::json;

use super::{Widget, create_widget, eventually, sim_with_widgets, widget};
use crate::support::apisim::Verb;

fn code(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn next_requests_fail_as_injected_then_recover() {
    let (sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    create_widget(&client, "test", "w", 1).await;
    sim.fail_next(Verb::Patch, "widgets/status", 2, 500);
    sim.fail_next(Verb::Create, "widgets.apisim.test", 1, 429);
    let status = Patch::Merge(json!({"status": {"phase": "P"}}));

    // Other verbs and the main resource are unaffected.
    widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
    assert_eq!(code(widgets.patch_status("w", &PatchParams::default(), &status).await), (500, "InternalError".into()));
    assert_eq!(code(widgets.patch_status("w", &PatchParams::default(), &status).await), (500, "InternalError".into()));
    widgets.patch_status("w", &PatchParams::default(), &status).await.unwrap();

    // kube 5's client retries 429, 503 and 504 by itself: the caller only sees the success.
    widgets.create(&PostParams::default(), &widget("x", 1)).await.unwrap();

    let stats = sim.stats();
    assert_eq!(stats.requests(Verb::Patch, "widgets/status"), 3);
    assert_eq!(stats.requests(Verb::Patch, "widgets"), 1, "the main resource is counted apart");
    assert_eq!(stats.requests(Verb::Create, "widgets"), 3, "setup, the refused create, its retry");
    assert_eq!(stats.write_requests("widgets"), 4, "subresources are counted apart");
    assert_eq!(stats.write_requests("widgets/status"), 3);

    sim.fail_next(Verb::Get, "*", 5, 503);
    sim.clear_faults();
    widgets.get("w").await.unwrap();
}

#[tokio::test]
async fn a_watcher_retries_a_failed_list_and_counters_reset() {
    let (sim, client) = sim_with_widgets().await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "test");
    create_widget(&client, "test", "w", 1).await;
    sim.reset_stats();
    // 500 is not retried by the client: the watcher sees the errors and backs off.
    sim.fail_next(Verb::List, "widgets", 2, 500);
    let mut stream = watcher::watcher(widgets.clone(), watcher::Config::default()).default_backoff().boxed();
    let mut errors = 0;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(20), stream.next()).await.unwrap().unwrap() {
            Err(_) => errors += 1,
            Ok(watcher::Event::InitApply(w)) => {
                assert_eq!(w.metadata.name.as_deref(), Some("w"));
                break;
            }
            Ok(_) => {}
        }
    }
    assert_eq!(errors, 2);
    assert_eq!(sim.stats().requests(Verb::List, "widgets"), 3, "two failures, then the list that worked");
    let task = tokio::spawn(stream.for_each(|_| async {}));
    eventually("the watch is open", || async { sim.stats().requests(Verb::Watch, "widgets") == 1 }).await;
    task.abort();

    sim.reset_stats();
    let stats = sim.stats();
    assert_eq!((stats.writes, stats.requests.len()), (0, 0));
}
