//! Runs that must not go through, and must not loop: Branch with a stale cache fails closed,
//! Validate pushes nothing and mounts no credentials, a reported digest missing from the
//! registry, a failed builder Job, an unauthorized registry (no rebuild, Stalled, healed by a
//! fixed Secret), and invalid specs (rejected by the CRD schema, or reported Stalled).

use std::time::Duration;

use kinoite_zfs_operator::api::build::RunPhase;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_mode_with_a_stale_cache_fails_closed() {
    let env = Env::start().await;
    env.push_cache(&[K1]).await;
    env.create(&env.build("feature", "Branch", "  branch: feature/zfs-2.4")).await;
    let build =
        env.wait_for("feature", "Stalled", |b| has_condition(b, "Stalled", "True", "AkmodsCacheNotReusable")).await;
    let run = build.status.as_ref().unwrap().current_run.clone().unwrap();
    assert_eq!(run.phase, RunPhase::Failed);
    let message = &condition(&build, "Stalled").unwrap().message;
    assert!(message.contains(K2), "names the missing kernel: {message}");
    assert!(message.contains("kubectl -n kinoite-builds annotate zfsimagebuild feature"), "{message}");
    assert!(has_condition(&build, "AkmodsReady", "False", "AkmodsCacheNotReusable"));
    assert!(has_condition(&build, "Ready", "False", "AkmodsCacheNotReusable"));
    assert!(env.job_names().await.is_empty(), "Branch never rebuilds the shared cache");
    env.assert_quiet(Duration::from_secs(1)).await;
    env.assert_resync_writes_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_mode_pushes_nothing_and_mounts_no_credentials() {
    let env = Env::start().await;
    env.push_cache(&[K1, K2]).await;
    env.create(&env.build("pr-42", "Validate", "")).await;
    env.wait_for("pr-42", "the image Job", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    let job = env.job("pr-42-1-image").await;
    assert!(!job_volumes(&job).contains(&"push-credentials".to_string()), "{:?}", job_volumes(&job));
    assert_eq!(job_env(&job, "KZO_PUSH").as_deref(), Some("false"));
    assert_eq!(job_env(&job, "KZO_PUSH_REFS").as_deref(), Some(""));
    assert_eq!(job_env(&job, "REGISTRY_AUTH_FILE"), None);
    assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));

    // The builder built but pushed nothing: its digest is recorded, not confirmed.
    let digest = format!("sha256:{}", "7".repeat(64));
    let result = json!({"version": 1, "step": "image", "digest": digest});
    env.complete_job("pr-42-1-image", &result.to_string()).await;
    let build = env.wait_for("pr-42", "Ready", |b| has_condition(b, "Ready", "True", "Succeeded")).await;
    assert!(has_condition(&build, "CandidateBuilt", "True", "BuiltNotPushed"));
    assert!(has_condition(&build, "CandidateVerified", "Unknown", "NotPushed"));
    let record = run_record(&env, "pr-42", 1, "build-inputs.json").await;
    assert!(!record.contains_key("build-provenance.json"), "Validate runs have no provenance");
    // Nothing in the registry under the candidate repository.
    let url = format!("{}/v2/{CANDIDATE_REPO}/tags/list", env.registry.base_url());
    let response = reqwest::Client::new().get(&url).basic_auth(USER, Some(PASSWORD)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404, "the candidate repository does not exist");
    assert_eq!(env.metric("kzo_registry_work_total{work=\"verify\",outcome=\"ok\"}").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_digest_missing_from_the_registry_fails_the_step() {
    let env = Env::start().await;
    env.push_cache(&[K1, K2]).await;
    env.create(&env.build("kinoite", "Main", "")).await;
    env.wait_for("kinoite", "the image Job", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    let phantom = format!("sha256:{}", "e".repeat(64));
    let result = json!({"version": 1, "step": "image", "digest": phantom});
    env.complete_job("kinoite-1-image", &result.to_string()).await;
    let build =
        env.wait_for("kinoite", "Stalled", |b| has_condition(b, "Stalled", "True", "CandidateDigestNotFound")).await;
    assert!(condition(&build, "Stalled").unwrap().message.contains(&phantom));
    assert!(has_condition(&build, "CandidateBuilt", "False", "CandidateDigestNotFound"));
    assert!(build.status.as_ref().unwrap().last_succeeded_run.is_none());
    assert_eq!(env.metric("kzo_registry_work_total{work=\"confirm-image\",outcome=\"absent\"}").await, 1.0);
    env.assert_quiet(Duration::from_secs(1)).await;
    env.assert_resync_writes_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_builder_job_fails_the_run_without_a_retry_loop() {
    let env = Env::start().await;
    env.create(&env.build("kinoite", "Main", "")).await;
    env.wait_for("kinoite", "the akmods Job", |b| phase(b).as_deref() == Some("BuildingAkmods")).await;
    env.fail_job("kinoite-1-akmods").await;
    let build = env.wait_for("kinoite", "Stalled", |b| has_condition(b, "Stalled", "True", "AkmodsJobFailed")).await;
    assert!(condition(&build, "Stalled").unwrap().message.contains("BackoffLimitExceeded"));
    assert_eq!(env.metric("kzo_runs_finished_total{outcome=\"failed\",reason=\"AkmodsJobFailed\"}").await, 1.0);
    env.assert_quiet(Duration::from_secs(1)).await;
    env.assert_resync_writes_nothing().await;
    assert_eq!(env.job_names().await, ["kinoite-1-akmods"], "no second Job");

    // The rebuild annotation is the way out: a new run.
    let annotate =
        json!({"metadata": {"annotations": {"kinoite-zfs.io/rebuild-requested-at": "2026-03-01T05:10:00Z"}}});
    env.builds().patch("kinoite", &PatchParams::default(), &Patch::Merge(annotate)).await.unwrap();
    let build = env
        .wait_for("kinoite", "run 2", |b| phase(b).as_deref() == Some("BuildingAkmods") && run_number(b) == Some(2))
        .await;
    assert_eq!(build.status.as_ref().unwrap().last_handled_rebuild_at.as_deref(), Some("2026-03-01T05:10:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_registry_stalls_without_a_rebuild_and_heals_with_a_fixed_secret() {
    let env = Env::start().await;
    env.create_secret("wrong-push", USER, "not-the-password").await;
    let mut build = env.build("kinoite", "Main", "");
    build.spec.registry.credentials_secret_ref.as_mut().unwrap().name = "wrong-push".into();
    env.create(&build).await;
    let build =
        env.wait_for("kinoite", "Stalled", |b| has_condition(b, "Stalled", "True", "RegistryUnauthorized")).await;
    let message = &condition(&build, "Stalled").unwrap().message;
    assert!(message.contains("credentialsSecretRef"), "{message}");
    assert!(!message.contains("not-the-password"), "credentials never in status");
    assert!(has_condition(&build, "InputsResolved", "False", "RegistryUnauthorized"));
    assert!(env.job_names().await.is_empty(), "an auth error is never a reason to build (H5)");
    assert!(env.metric("kzo_registry_requests_total{result=\"unauthorized\"}").await > 0.0);
    env.assert_quiet(Duration::from_secs(1)).await;

    // A missing Secret is reported the same way.
    let mut other = env.build("other", "Main", "");
    other.spec.registry.credentials_secret_ref.as_mut().unwrap().name = "no-such-secret".into();
    env.create(&other).await;
    let other = env.wait_for("other", "Stalled", |b| has_condition(b, "Stalled", "True", "RegistryUnauthorized")).await;
    assert!(condition(&other, "Stalled").unwrap().message.contains("kinoite-builds/no-such-secret"));

    // The Secret is fixed; the re-check (every 15 minutes) finds it and the run goes on.
    let secrets = Api::<Secret>::namespaced(env.client.clone(), NS);
    let fixed = json!({"stringData": {".dockerconfigjson": docker_config(env.host(), USER, PASSWORD)}});
    secrets.patch("wrong-push", &PatchParams::default(), &Patch::Merge(fixed)).await.unwrap();
    env.clock.advance(15 * 60 + 1);
    env.resync();
    let build = env.wait_for("kinoite", "the run goes on", |b| phase(b).as_deref() == Some("BuildingAkmods")).await;
    assert!(condition(&build, "Stalled").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_rejected_by_the_schema_or_reported_stalled() {
    let env = Env::start().await;
    // The CRD schema rejects what it can express (CEL: Branch needs a branch).
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/build-branch-missing.yaml");
    env.sim.create_namespace("t");
    let out = env.sim.kubectl(&["apply", "-f", fixture.to_str().unwrap()]).await;
    assert!(!out.success && out.stderr.contains("branch is required when mode is Branch"), "{}", out.stderr);
    let mut bad = env.build("bad", "Branch", "");
    bad.spec.branch = None;
    assert!(env.builds().create(&Default::default(), &bad).await.is_err(), "the API rejects it too");

    // A schedule the pattern admits but no cron parser does: Stalled with what to fix, no run.
    env.create(&env.build("kinoite", "Main", "  schedule: '0 25 * * *'")).await;
    let build = env.wait_for("kinoite", "Stalled", |b| has_condition(b, "Stalled", "True", "InvalidSpec")).await;
    assert!(condition(&build, "Stalled").unwrap().message.contains("schedule"), "{:?}", condition(&build, "Stalled"));
    assert!(build.status.as_ref().unwrap().current_run.is_none());
    assert!(env.job_names().await.is_empty());
    env.assert_quiet(Duration::from_secs(1)).await;

    // Fixing the spec starts the first run.
    let fix = json!({"spec": {"schedule": "0 6 * * *"}});
    env.builds().patch("kinoite", &PatchParams::default(), &Patch::Merge(fix)).await.unwrap();
    let build = env.wait_for("kinoite", "a run", |b| phase(b).as_deref() == Some("BuildingAkmods")).await;
    assert!(condition(&build, "Stalled").is_none());
    assert_eq!(build.status.as_ref().unwrap().observed_generation, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_is_waited_out_and_never_fails_the_run() {
    let mut env = Env::start().await;
    env.push_cache(&[K1, K2]).await;
    env.registry.stop();
    env.create(&env.build("kinoite", "Main", "")).await;
    let build = env
        .wait_for("kinoite", "Reconciling", |b| has_condition(b, "Reconciling", "True", "RegistryUnavailable"))
        .await;
    assert!(has_condition(&build, "Ready", "False", "RegistryUnavailable"));
    assert!(condition(&build, "Stalled").is_none(), "a transient failure is not Stalled");
    assert_eq!(phase(&build).as_deref(), Some("Resolving"));
    assert!(env.job_names().await.is_empty());
    assert!(env.metric("kzo_registry_work_total{work=\"resolve\",outcome=\"transient\"}").await >= 1.0);
    assert!(env.metric("kzo_registry_requests_total{result=\"unreachable\"}").await >= 1.0);

    // The registry comes back; the retry (10 s after the failure) finds it.
    env.registry.restart().await;
    env.clock.advance(11);
    env.resync();
    let build = env.wait_for("kinoite", "the run goes on", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    assert!(condition(&build, "Reconciling").is_some_and(|c| c.reason == "BuildingImage"));
    assert_eq!(run_number(&build), Some(1), "the same run, not a new one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_akmods_image_whose_labels_claim_a_kernel_its_layers_lack_is_not_accepted() {
    let env = Env::start().await;
    env.create(&env.build("kinoite", "Main", "")).await;
    env.wait_for("kinoite", "the akmods Job", |b| phase(b).as_deref() == Some("BuildingAkmods")).await;
    // The Job pushes an image with kmods for K1 only, but labels (and a report) claiming K1 and
    // K2: exactly what a label-trusting check would reuse.
    let lying = akmods_image(&[K1], &env.builder_digest).label(labels::KERNEL_RELEASES, &format!("{K1} {K2}"));
    let pushed = env.pusher.push_image(CANDIDATE_AKMODS_REPO, Some("1-43"), &lying).await;
    let result = json!({"version": 1, "step": "akmods", "digest": pushed.digest, "kernel_releases": [K1, K2]});
    env.complete_job("kinoite-1-akmods", &result.to_string()).await;

    let build = env.wait_for("kinoite", "Stalled", |b| has_condition(b, "Stalled", "True", "AkmodsNotConfirmed")).await;
    let message = &condition(&build, "Stalled").unwrap().message;
    assert!(message.contains(&pushed.digest), "names the image: {message}");
    assert!(message.contains(K2) && message.contains("in its layers"), "names the kernel its layers lack: {message}");
    assert!(message.contains("its labels claim"), "says the labels are not what counts: {message}");
    let run = build.status.as_ref().unwrap().current_run.clone().unwrap();
    assert_eq!(run.phase, RunPhase::Failed);
    assert!(has_condition(&build, "AkmodsReady", "False", "AkmodsNotConfirmed"));
    assert!(env.jobs().get_opt("kinoite-1-image").await.unwrap().is_none(), "no image is built on it");
    env.assert_quiet(Duration::from_secs(1)).await;
}
