//! The whole operator: a build's verified run is promoted by an `Auto` Promotion that the same
//! process reconciles (`run` starts both controllers), and skopeo sees the stable tags at the
//! candidate's digest. The Promotion controller's own scenarios are in
//! tests/integration/promotion_controller.rs.

use std::process::Command;

use kube::api::{Api, PostParams};
use serde_json::json;

use kinoite_zfs_operator::api::Promotion;
use kinoite_zfs_operator::controllers::conditions::find;

use super::*;
use crate::support::image::digest_of;
use crate::support::registry::find_tool;

const STABLE_REPO: &str = "danathar/kinoite-zfs";
const STABLE_AKMODS_REPO: &str = "danathar/kinoite-zfs-bluebuild-akmods";

/// The digest skopeo reads for `repo:tag` in the fixture registry (with the push credentials),
/// or None when the tag does not exist.
fn skopeo_digest(env: &Env, repo_and_tag: &str) -> Option<String> {
    let reference = format!("docker://{}/{repo_and_tag}", env.host());
    let output = Command::new(find_tool("skopeo", "skopeo"))
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", &format!("{USER}:{PASSWORD}"), &reference])
        .output()
        .expect("run skopeo");
    if output.status.success() {
        return Some(digest_of(&output.stdout));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("manifest unknown") || stderr.contains("name unknown"), "skopeo {reference}: {stderr}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_promotes_a_verified_run_with_an_auto_promotion() {
    let env = Env::start().await;
    let cache = env.push_cache(&[K1, K2]).await;
    let promotions = Api::<Promotion>::namespaced(env.client.clone(), NS);
    // The Promotion exists before any run: it waits, and writes nothing to the registry.
    let promotion: Promotion = serde_json::from_value(json!({
        "apiVersion": "kinoite-zfs.io/v1alpha1", "kind": "Promotion",
        "metadata": {"name": "stable", "namespace": NS},
        "spec": {"buildRef": {"name": "kinoite"}, "policy": "Auto", "tags": ["latest"], "alignAkmods": true}
    }))
    .unwrap();
    promotions.create(&PostParams::default(), &promotion).await.unwrap();
    eventually("the Promotion waits for the build", || async {
        let p = promotions.get("stable").await.unwrap();
        p.status.as_ref().and_then(|s| find(&s.conditions, "Stalled")).is_some_and(|c| c.reason == "BuildNotFound")
            || p.status.as_ref().and_then(|s| find(&s.conditions, "Reconciling")).is_some()
    })
    .await;
    assert_eq!(skopeo_digest(&env, &format!("{STABLE_REPO}:latest")), None);

    // A run goes through; the build's status change wakes the Promotion.
    env.create(&env.build("kinoite", "Main", "")).await;
    env.wait_for("kinoite", "run 1 builds its image", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    let candidate = env.finish_image("kinoite", 1, &[K1, K2]).await;
    env.wait_for("kinoite", "run 1 Ready", |b| has_condition(b, "Ready", "True", "Succeeded")).await;

    eventually("run 1 is promoted", || async {
        let p = promotions.get("stable").await.unwrap();
        p.status.as_ref().is_some_and(|s| {
            s.stable.as_ref().is_some_and(|st| st.run == 1)
                && s.in_progress.is_none()
                && find(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
        })
    })
    .await;
    let status = promotions.get("stable").await.unwrap().status.unwrap();
    let stable = status.stable.as_ref().unwrap();
    assert_eq!(stable.image_digest, candidate);
    assert_eq!(stable.akmods_digest.as_deref(), Some(cache.as_str()));
    // Independently: skopeo reads the stable tag, the audit tag and the aligned akmods channel.
    assert_eq!(skopeo_digest(&env, &format!("{STABLE_REPO}:latest")), Some(candidate.clone()));
    assert_eq!(skopeo_digest(&env, &format!("{STABLE_REPO}:{}", stable.audit_tag)), Some(candidate.clone()));
    assert_eq!(skopeo_digest(&env, &format!("{STABLE_AKMODS_REPO}:main-43")), Some(cache.clone()));

    // Both controllers report on the one /metrics.
    assert!(env.metric("kzo_reconciles_total{controller=\"promotion\"}").await >= 1.0);
    assert_eq!(env.metric("kzo_promotion_events_total{reason=\"Promoted\"}").await, 1.0);
}
