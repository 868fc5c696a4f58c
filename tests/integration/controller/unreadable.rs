//! Objects the operator's types cannot read (stored under an older, looser CRD schema) never
//! stop the others: the lists still load, `/readyz` turns ready, other builds and Promotions are
//! reconciled, and the unreadable object is `Stalled` with the field to fix. And shutdown is
//! bounded whatever state the caches are in.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kinoite_zfs_operator::api::{Promotion, crds};
use kinoite_zfs_operator::operator::SHUTDOWN_GRACE;
use kube::api::{ApiResource, DynamicObject};
use serde_json::json;

use super::*;
use crate::support::apisim::Verb;

/// The ZfsImageBuild CRD as an earlier version shipped it: `ttlSecondsAfterFinished` with a
/// minimum of 0 and no maximum, so the API server stores values no i32 can hold.
fn loose_build_crd() -> CustomResourceDefinition {
    let mut crd = crds().into_iter().find(|c| c.spec.names.kind == "ZfsImageBuild").unwrap();
    let schema = crd.spec.versions[0].schema.as_mut().unwrap().open_api_v3_schema.as_mut().unwrap();
    let spec = schema.properties.as_mut().unwrap().get_mut("spec").unwrap();
    let builder = spec.properties.as_mut().unwrap().get_mut("builder").unwrap();
    let ttl = builder.properties.as_mut().unwrap().get_mut("ttlSecondsAfterFinished").unwrap();
    ttl.minimum = Some(0.0);
    ttl.maximum = None;
    crd
}

/// A build with `ttlSecondsAfterFinished: 3000000000`, stored as the loose schema allows.
async fn create_unreadable(env: &Env, name: &str) {
    let mut bad = serde_json::to_value(env.build(name, "Main", "")).unwrap();
    bad["spec"]["builder"] = json!({"ttlSecondsAfterFinished": 3_000_000_000u64});
    let bad: DynamicObject = serde_json::from_value(bad).unwrap();
    raw_builds(env).create(&PostParams::default(), &bad).await.expect("the loose schema stores it");
}

fn raw_builds(env: &Env) -> Api<DynamicObject> {
    Api::namespaced_with(env.client.clone(), NS, &ApiResource::erase::<ZfsImageBuild>(&()))
}

fn promotion(name: &str, build: &str) -> Promotion {
    serde_json::from_value(json!({
        "apiVersion": "kinoite-zfs.io/v1alpha1", "kind": "Promotion",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"buildRef": {"name": build}, "policy": "Auto", "tags": [format!("{name}-latest")]}
    }))
    .unwrap()
}

fn raw_condition(object: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let conditions = object.data.pointer("/status/conditions")?.as_array()?;
    let c = conditions.iter().find(|c| c["type"] == type_)?;
    Some((c["status"].as_str()?.into(), c["reason"].as_str()?.into(), c["message"].as_str()?.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_build_is_stalled_alone_and_the_others_go_on() {
    let mut env = Env::without_operator().await;
    env.push_cache(&[K1, K2]).await;
    // A cluster whose CRD is older than the operator (the chart with `crds.install: false`, or
    // the operator upgraded first): it stores values no i32 can hold.
    env.sim.install_crds(&[loose_build_crd()]);
    create_unreadable(&env, "legacy").await;
    let promotions = Api::<Promotion>::namespaced(env.client.clone(), NS);
    promotions.create(&PostParams::default(), &promotion("legacy-stable", "legacy")).await.unwrap();
    env.create(&env.build("kinoite", "Main", "")).await;

    // The lists load although one item cannot be read: the operator becomes ready.
    env.start_operator().await;
    assert_eq!(env.http_get("/readyz").await.0, 200);

    // The readable build is reconciled (a covering cache: straight to its image Job).
    env.wait_for("kinoite", "its image Job", |b| phase(b).as_deref() == Some("BuildingImage")).await;

    // The unreadable one is Stalled with the field to fix, its run bookkeeping untouched.
    eventually("the unreadable build is Stalled", || async {
        let object = raw_builds(&env).get("legacy").await.unwrap();
        raw_condition(&object, "Stalled").is_some_and(|(status, reason, _)| status == "True" && reason == "Unreadable")
    })
    .await;
    let (_, _, message) = raw_condition(&raw_builds(&env).get("legacy").await.unwrap(), "Stalled").unwrap();
    assert!(message.contains("spec.builder.ttlSecondsAfterFinished"), "{message}");
    assert!(message.contains("kubectl edit zfsimagebuild legacy"), "{message}");
    let object = raw_builds(&env).get("legacy").await.unwrap();
    assert_eq!(raw_condition(&object, "Ready").map(|c| (c.0, c.1)), Some(("False".into(), "Unreadable".into())));
    assert!(object.data.pointer("/status/currentRun").is_none(), "no run for an unreadable build");
    assert!(!env.job_names().await.iter().any(|j| j.starts_with("legacy")), "{:?}", env.job_names().await);

    // Its Promotion says why it promotes nothing.
    eventually("the Promotion of the unreadable build is Stalled", || async {
        let p = promotions.get("legacy-stable").await.unwrap();
        p.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Stalled" && c.reason == "BuildUnreadable" && c.message.contains("ttlSecondsAfterFinished")
            })
        })
    })
    .await;

    // Fixing the field is a watch event: the build is read again and its first run starts.
    let fix = json!({"spec": {"builder": {"ttlSecondsAfterFinished": 86400}}});
    raw_builds(&env).patch("legacy", &PatchParams::default(), &Patch::Merge(fix)).await.unwrap();
    let fixed = env.wait_for("legacy", "a run", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    assert!(condition(&fixed, "Stalled").is_none(), "{:?}", condition(&fixed, "Stalled"));

    // Another such build is stored while the operator is down, then the operator's own, stricter
    // CRD is installed and the operator starts. An API server without CRD validation ratcheting
    // (like the simulator) refuses any status write to the object still stored with the old
    // value: a Warning Event says what to fix instead, and the rest goes on.
    env.stop_operator().await;
    create_unreadable(&env, "legacy-2").await;
    env.sim.install_crds(&crds());
    env.start_operator().await;
    eventually("a Warning Event on the build that cannot take a status", || async {
        env.events("legacy-2")
            .await
            .iter()
            .any(|(reason, note)| reason == "Unreadable" && note.contains("spec.builder.ttlSecondsAfterFinished"))
    })
    .await;
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_when_a_cache_never_lists() {
    let mut env = Env::without_operator().await;
    Api::<Promotion>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &promotion("stable", "kinoite"))
        .await
        .unwrap();
    // Every list of builds fails: the Promotion's reconcile waits for a build cache that never
    // fills.
    env.sim.fail_next(Verb::List, "zfsimagebuilds", u32::MAX, 500);
    env.launch_operator().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!env.operator().is_ready());
    assert_eq!(env.http_get("/readyz").await.0, 503);

    let started = tokio::time::Instant::now();
    let limit = SHUTDOWN_GRACE + Duration::from_secs(5);
    tokio::time::timeout(limit, env.stop_operator()).await.expect("shutdown ends within the grace period");
    assert!(started.elapsed() <= limit, "{:?}", started.elapsed());
    env.sim.clear_faults();
}
