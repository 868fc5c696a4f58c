//! The rendered Job is the thing that runs: the controller's akmods Job is run by the kubelet
//! stand-in (its init container installs the operator binary, its builder container runs
//! `builder akmods` with the Job's env, mounts and the mounted push Secret, against real git,
//! buildah and rpmbuild with the `just` stand-in), the pod status it reports is written to the
//! API, and the controller confirms that result in the registry and moves on to the image step.

use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::*;
use crate::support::akmods::{Node, Remote, Shape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_akmods_job_the_controller_rendered_runs_and_its_result_is_confirmed() {
    let env = Env::start().await;
    let remote = Remote::create(Shape::Upstream);
    let extra = format!("  akmods: {{repository: '{}', revision: '{}'}}\n", remote.url(), remote.commit);
    env.create(&env.build("kinoite", "Main", &extra)).await;
    env.wait_for("kinoite", "an akmods Job is recorded", |b| phase(b).as_deref() == Some("BuildingAkmods")).await;
    let job = env.job("kinoite-1-akmods").await;

    // The node has the Secret the Job mounts, read from the API like the kubelet would.
    let secret = Api::<Secret>::namespaced(env.client.clone(), NS).get(SECRET).await.unwrap();
    let data = secret.data.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect();
    let node = Node::new(&[env.host()]);
    let mut kubelet = node.kubelet(Path::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator")), b"{}");
    kubelet.tools_image = TOOLS_IMAGE.to_string();
    kubelet.secrets.insert(SECRET.to_string(), data);
    let pod_job = job.clone();
    let run = tokio::task::spawn_blocking(move || kubelet.run(&pod_job, "kinoite-1-akmods-pod")).await.unwrap();
    let builder = run.builder();
    assert_eq!(builder.exit_code, 0, "the rendered Job must run as rendered; logs:\n{}", builder.logs);
    assert!(!builder.logs.contains(PASSWORD));

    // What the kubelet reports goes into the pod status, then the Job completes.
    let pod = env.create_job_pod("kinoite-1-akmods", "real").await;
    let status = json!({"status": serde_json::to_value(&run.status).unwrap()});
    Api::<Pod>::namespaced(env.client.clone(), NS)
        .patch_status(&pod, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    let done = json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
    env.jobs().patch_status("kinoite-1-akmods", &PatchParams::default(), &Patch::Merge(done)).await.unwrap();

    // The controller reads the builder's own result, confirms it in the registry by content and
    // labels, and renders the image Job with that digest.
    let build =
        env.wait_for("kinoite", "the image Job is recorded", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    assert!(has_condition(&build, "AkmodsReady", "True", "AkmodsBuilt"));
    let decision = build.status.as_ref().unwrap().current_run.as_ref().unwrap().akmods.clone().unwrap();
    let pushed = crate::support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        "--format",
        "{{.Digest}}",
        &format!("docker://{}/{CANDIDATE_AKMODS_REPO}:1-43", env.host()),
    ]);
    assert_eq!(decision.image, Some(format!("{}/{CANDIDATE_AKMODS_REPO}@{}", env.host(), pushed.trim())));
    let image_job = env.job("kinoite-1-image").await;
    assert_eq!(job_env(&image_job, "AKMODS_IMAGE"), decision.image);
}
