//! Runs that go through: a first run without a cache (akmods Job, image Job, verification,
//! Ready, records, Events, metrics, then quiet), a covering cache (no akmods Job), a schedule
//! tick with unchanged inputs (nothing) and with a new base (a new run supersedes the old one),
//! and a controller restart mid-run (no duplicate Jobs).

use std::time::Duration;

use kinoite_zfs_operator::api::build::{CacheCheckMethod, CacheStatus, RunPhase, RunTrigger};

use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_without_cache_builds_akmods_and_image_verifies_and_then_stays_quiet() {
    let env = Env::start().await;
    let (status, body) = env.http_get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    env.create(&env.build("kinoite", "Main", "")).await;

    // Resolution, then the cache decision: nothing in the candidate akmods repository.
    let build =
        env.wait_for("kinoite", "an akmods Job is recorded", |b| phase(b).as_deref() == Some("BuildingAkmods")).await;
    let run = build.status.as_ref().unwrap().current_run.clone().unwrap();
    assert_eq!((run.number, run.trigger), (1, RunTrigger::Created));
    let inputs = run.inputs.as_ref().expect("inputs recorded");
    assert_eq!(inputs.base_image_digest, env.base_pushed.digest);
    assert_eq!(inputs.kernel_releases, [K1, K2]);
    assert_eq!(inputs.base_image_tag, "latest-20260227.1");
    assert_eq!(inputs.build_container_digest, env.builder_digest);
    let decision = run.akmods.as_ref().unwrap();
    assert_eq!((decision.status, decision.rebuilt), (CacheStatus::MissingImage, true));
    assert!(has_condition(&build, "InputsResolved", "True", "Resolved"));
    assert!(has_condition(&build, "Reconciling", "True", "BuildingAkmods"));

    // The akmods Job: builder image by digest, owned by the build, push credentials mounted,
    // pushes only to the candidate akmods repository.
    let job = env.job("kinoite-1-akmods").await;
    assert_eq!(job.owner_references()[0].name, "kinoite");
    let container = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(format!("{}/{BUILDER_REPO}@{}", env.host(), env.builder_digest).as_str())
    );
    assert!(job_volumes(&job).contains(&"push-credentials".to_string()));
    let refs = job_env(&job, "KZO_PUSH_REFS").unwrap();
    assert_eq!(
        refs,
        format!("{h}/{CANDIDATE_AKMODS_REPO}:main-43 {h}/{CANDIDATE_AKMODS_REPO}:1-43", h = env.host()),
        "rebuilt akmods go to the candidate repository only (H1)"
    );
    // The run record has the inputs as soon as they are resolved.
    let record = run_record(&env, "kinoite", 1, "build-inputs.json").await;
    let inputs_doc = json_of(&record["build-inputs.json"]);
    assert_eq!(inputs_doc["inputs"]["base_image_digest"], env.base_pushed.digest.as_str());
    assert_eq!(inputs_doc["run"]["ref"], format!("{NS}/kinoite"));
    assert!(!record.contains_key("build-provenance.json"));

    // The builder pushes and reports; the controller confirms the coverage in the registry.
    let akmods = env.finish_akmods("kinoite", 1, &[K1, K2]).await;
    let build =
        env.wait_for("kinoite", "the image Job is recorded", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    let decision = build.status.as_ref().unwrap().current_run.as_ref().unwrap().akmods.clone().unwrap();
    assert_eq!(decision.image.as_deref(), Some(format!("{}/{CANDIDATE_AKMODS_REPO}@{akmods}", env.host()).as_str()));
    assert!(has_condition(&build, "AkmodsReady", "True", "AkmodsBuilt"));
    let image_job = env.job("kinoite-1-image").await;
    assert_eq!(job_env(&image_job, "AKMODS_IMAGE"), decision.image);
    assert_eq!(
        job_env(&image_job, "BASE_IMAGE"),
        Some(format!("{}/{BASE_REPO}@{}", env.host(), env.base_pushed.digest))
    );
    // BlueBuild (the default strategy): the rewritten recipe lines are mounted from a ConfigMap.
    assert!(job_volumes(&image_job).contains(&"recipe-lines".to_string()));
    env.config_maps().get("kinoite-1-recipe").await.expect("the recipe ConfigMap exists");

    // The candidate is pushed, confirmed and verified from the registry.
    let candidate = env.finish_image("kinoite", 1, &[K1, K2]).await;
    let build = env.wait_for("kinoite", "Ready", |b| has_condition(b, "Ready", "True", "Succeeded")).await;
    let status = build.status.as_ref().unwrap();
    let run = status.current_run.as_ref().unwrap();
    assert_eq!(run.phase, RunPhase::Succeeded);
    assert_eq!(run.candidate.as_ref().unwrap().digest, candidate);
    assert!(run.verification.as_ref().unwrap().verified);
    assert!(has_condition(&build, "CandidateVerified", "True", "Verified"));
    assert!(condition(&build, "Reconciling").is_none() && condition(&build, "Stalled").is_none());
    let succeeded = status.last_succeeded_run.as_ref().unwrap();
    assert_eq!((succeeded.number, succeeded.candidate_digest.as_deref()), (1, Some(candidate.as_str())));
    assert_eq!(status.observed_generation, Some(1));

    // Provenance in the reference format, with the digests the steps confirmed.
    let record = run_record(&env, "kinoite", 1, "build-provenance.json").await;
    let provenance = json_of(&record["build-provenance.json"]);
    assert_eq!(provenance["candidate"]["image"]["digest"], candidate.as_str(), "{provenance}");
    assert_eq!(provenance["candidate"]["akmods"]["digest"], akmods.as_str(), "{provenance}");

    // Events on transitions only.
    let reasons: Vec<String> = env.events("kinoite").await.into_iter().map(|(r, _)| r).collect();
    assert_eq!(reasons, ["RunStarted", "JobCreated", "JobCreated", "RunSucceeded"]);

    // Metrics: the run, registry answers by class, registry work by outcome.
    assert_eq!(env.metric("kzo_runs_started_total{trigger=\"Created\"}").await, 1.0);
    assert_eq!(env.metric("kzo_runs_finished_total{outcome=\"succeeded\",reason=\"Succeeded\"}").await, 1.0);
    assert!(env.metric("kzo_registry_requests_total{result=\"present\"}").await > 0.0);
    assert_eq!(env.metric("kzo_registry_work_total{work=\"verify\",outcome=\"ok\"}").await, 1.0);
    assert_eq!(env.metric("kzo_builds").await, 1.0);

    // Converged: nothing happens by itself, and a reconcile with the same inputs writes nothing.
    env.assert_quiet(Duration::from_secs(2)).await;
    env.assert_resync_writes_nothing().await;
    assert_eq!(env.job_names().await, ["kinoite-1-akmods", "kinoite-1-image"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_covering_cache_means_no_akmods_job() {
    let env = Env::start().await;
    let cache = env.push_cache(&[K1, K2]).await;
    env.create(&env.build("kinoite", "Main", "")).await;
    let build = env.wait_for("kinoite", "the image Job", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    let decision = build.status.as_ref().unwrap().current_run.as_ref().unwrap().akmods.clone().unwrap();
    assert_eq!(
        (decision.status, decision.rebuilt, decision.method),
        (CacheStatus::Reusable, false, Some(CacheCheckMethod::Labels))
    );
    assert_eq!(decision.image, Some(format!("{}/{CANDIDATE_AKMODS_REPO}@{cache}", env.host())));
    assert!(has_condition(&build, "AkmodsReady", "True", "CacheReusable"));
    env.finish_image("kinoite", 1, &[K1, K2]).await;
    env.wait_for("kinoite", "Ready", |b| has_condition(b, "Ready", "True", "Succeeded")).await;
    assert_eq!(env.job_names().await, ["kinoite-1-image"], "no akmods Job");
    let record = run_record(&env, "kinoite", 1, "build-provenance.json").await;
    let provenance = json_of(&record["build-provenance.json"]);
    assert_eq!(provenance["candidate"]["akmods"]["tag"], "main-43", "the reused cache tag: {provenance}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_tick_with_a_new_base_supersedes_the_running_run() {
    let mut env = Env::start().await;
    env.push_cache(&[K1, K2]).await;
    env.create(&env.build("kinoite", "Main", "  schedule: '0 6 * * *'")).await;
    let build =
        env.wait_for("kinoite", "run 1 builds its image", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    let status = build.status.as_ref().unwrap();
    assert_eq!(status.next_scheduled_at.as_ref().unwrap().0.to_string(), "2026-03-01T06:00:00Z");
    let first_resolution = status.last_resolved_at.clone().unwrap();

    // A tick with the same inputs: one resolution, no run, no Job.
    env.clock.advance(3600 + 30);
    env.resync();
    let build = env
        .wait_for("kinoite", "the tick is handled", |b| {
            b.status
                .as_ref()
                .unwrap()
                .next_scheduled_at
                .as_ref()
                .is_some_and(|t| t.0.to_string() == "2026-03-02T06:00:00Z")
        })
        .await;
    let status = build.status.as_ref().unwrap();
    assert!(status.last_resolved_at.as_ref().unwrap().0 > first_resolution.0, "the tick re-resolved the inputs");
    assert_eq!(run_number(&build), Some(1));
    assert_eq!(env.job_names().await, ["kinoite-1-image"]);

    // The next nightly has a new kernel; at the next tick a new run starts and supersedes run 1.
    let new_base = env.push_new_base(&[K1, K2, K3], "20260302.1").await;
    env.clock.advance(24 * 3600);
    env.resync();
    let build = env.wait_for("kinoite", "run 2 starts", |b| run_number(b) == Some(2)).await;
    let status = build.status.as_ref().unwrap();
    let run = status.current_run.as_ref().unwrap();
    assert_eq!(run.trigger, RunTrigger::Schedule);
    assert_eq!(run.inputs.as_ref().unwrap().base_image_digest, new_base);
    assert_eq!(run.inputs.as_ref().unwrap().kernel_releases, [K1, K2, K3]);
    let superseded = &status.history[0];
    assert_eq!((superseded.number, superseded.phase), (1, RunPhase::Superseded));
    // The cache lacks the new kernel: run 2 rebuilds it; run 1's Job is gone.
    let build =
        env.wait_for("kinoite", "run 2 rebuilds akmods", |b| phase(b).as_deref() == Some("BuildingAkmods")).await;
    let decision = build.status.as_ref().unwrap().current_run.as_ref().unwrap().akmods.clone().unwrap();
    assert_eq!((decision.status, decision.missing_kernels.clone()), (CacheStatus::Stale, vec![K3.to_string()]));
    eventually("run 1's Job is deleted", || async { env.job_names().await == ["kinoite-2-akmods"] }).await;
    let reasons: Vec<String> = env.events("kinoite").await.into_iter().map(|(r, _)| r).collect();
    assert!(reasons.contains(&"RunSuperseded".to_string()), "{reasons:?}");
    assert_eq!(env.metric("kzo_runs_finished_total{outcome=\"superseded\",reason=\"Superseded\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_run_resumes_without_duplicate_jobs() {
    let mut env = Env::start().await;
    env.create(&env.build("kinoite", "Main", "")).await;
    env.wait_for("kinoite", "the akmods Job", |b| phase(b).as_deref() == Some("BuildingAkmods")).await;
    env.job("kinoite-1-akmods").await;

    // The operator goes away; the akmods Job finishes while it is down.
    env.stop_operator().await;
    env.finish_akmods("kinoite", 1, &[K1, K2]).await;
    env.start_operator().await;

    let build =
        env.wait_for("kinoite", "run 1 builds its image", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    assert_eq!(run_number(&build), Some(1), "the same run resumed");
    env.job("kinoite-1-image").await;
    assert_eq!(env.job_names().await, ["kinoite-1-akmods", "kinoite-1-image"]);
    // A second restart while the image Job runs changes nothing either.
    env.stop_operator().await;
    env.start_operator().await;
    env.assert_resync_writes_nothing().await;
    env.finish_image("kinoite", 1, &[K1, K2]).await;
    env.wait_for("kinoite", "Ready", |b| has_condition(b, "Ready", "True", "Succeeded")).await;
    assert_eq!(env.job_names().await, ["kinoite-1-akmods", "kinoite-1-image"]);
    let created: Vec<String> =
        env.events("kinoite").await.into_iter().filter(|(r, _)| r == "JobCreated").map(|(_, n)| n).collect();
    assert_eq!(created.len(), 2, "one JobCreated per Job: {created:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_keeps_its_run_record_until_it_lets_go() {
    let env = Env::start().await;
    env.push_cache(&[K1, K2]).await;
    env.create(&env.build("kinoite", "Main", "  historyLimit: 1")).await;
    env.wait_for("kinoite", "run 1 builds its image", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    env.finish_image("kinoite", 1, &[K1, K2]).await;
    env.wait_for("kinoite", "run 1 Ready", |b| has_condition(b, "Ready", "True", "Succeeded")).await;

    // A Promotion pins run 1; then run 2 (a new source revision) succeeds.
    let promotions = Api::<kinoite_zfs_operator::api::Promotion>::namespaced(env.client.clone(), NS);
    let promotion = serde_json::from_value(json!({
        "apiVersion": "kinoite-zfs.io/v1alpha1", "kind": "Promotion",
        "metadata": {"name": "stable", "namespace": NS},
        "spec": {"buildRef": {"name": "kinoite"}, "policy": "Pinned", "candidate": {"run": 1}}
    }))
    .unwrap();
    promotions.create(&PostParams::default(), &promotion).await.unwrap();
    let change = json!({"spec": {"source": {"git": {"revision": "1111111111111111111111111111111111111111"}}}});
    env.builds().patch("kinoite", &PatchParams::default(), &Patch::Merge(change)).await.unwrap();
    env.wait_for("kinoite", "run 2 builds its image", |b| {
        run_number(b) == Some(2) && phase(b).as_deref() == Some("BuildingImage")
    })
    .await;
    env.finish_image("kinoite", 2, &[K1, K2]).await;
    env.wait_for("kinoite", "run 2 Ready", |b| {
        run_number(b) == Some(2) && has_condition(b, "Ready", "True", "Succeeded")
    })
    .await;
    run_record(&env, "kinoite", 2, "build-provenance.json").await;
    assert!(env.config_maps().get_opt("kinoite-run-1").await.unwrap().is_some(), "the pinned run's record stays");

    // Only the Promotion changes: its watch wakes the build, which prunes run 1 (historyLimit 1).
    promotions.delete("stable", &Default::default()).await.unwrap();
    eventually("run 1's record is pruned", || async {
        env.config_maps().get_opt("kinoite-run-1").await.unwrap().is_none()
    })
    .await;
    assert!(env.config_maps().get_opt("kinoite-1-recipe").await.unwrap().is_none());
    assert!(env.config_maps().get_opt("kinoite-run-2").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_pod_cache_has_not_seen_yet_is_read_from_the_api_server() {
    let env = Env::start().await;
    env.push_cache(&[K1, K2]).await;
    env.create(&env.build("kinoite", "Main", "")).await;
    env.wait_for("kinoite", "the image Job", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    // The builder pod starts and the controller's cache sees it running...
    let pod = env.create_job_pod("kinoite-1-image", "x7k2p").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...then the pod watch breaks and stays broken, so the cache keeps the running copy.
    env.sim.fail_next(crate::support::apisim::Verb::Watch, "pods", 1000, 500);
    env.sim.drop_watches();
    let candidate = candidate_image(&env.base, &[K1, K2]);
    let pushed = env.pusher.push_image(CANDIDATE_REPO, Some("1-43"), &candidate).await;
    env.terminate_pod(&pod, 0, &json!({"version": 1, "step": "image", "digest": pushed.digest}).to_string()).await;
    let done = json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
    env.jobs().patch_status("kinoite-1-image", &PatchParams::default(), &Patch::Merge(done)).await.unwrap();
    // The Job's Complete arrives; the result comes from a fresh read of the Job's pods.
    let build = env.wait_for("kinoite", "Ready", |b| has_condition(b, "Ready", "True", "Succeeded")).await;
    assert_eq!(build.status.unwrap().current_run.unwrap().candidate.unwrap().digest, pushed.digest);
    env.sim.clear_faults();
}
