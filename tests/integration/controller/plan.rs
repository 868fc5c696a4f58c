//! `kinoite-zfs-operator plan` against the registry: inputs resolved and the cache decided the
//! way the controller does (same executor), a replay lock, and a registry failure that stops the
//! plan with exit code 2. The offline mode (`--inputs`) is tested in plan_cli.rs.

use std::process::Command;

use super::*;

/// Runs `plan` on `build` against the test registry: (exit code, stdout as JSON, stderr).
async fn plan(env: &Env, build: &ZfsImageBuild, extra: &[&str], credentials: bool) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("build.yaml");
    std::fs::write(&file, serde_saphyr::to_string(build).unwrap()).unwrap();
    let mut args: Vec<String> =
        ["plan", "-o", "json", "--now", "2026-03-01T05:00:00Z", "--insecure-registry", env.host(), "-f"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.push(file.display().to_string());
    if credentials {
        let config = dir.path().join("config.json");
        std::fs::write(&config, docker_config(env.host(), USER, PASSWORD)).unwrap();
        args.extend(["--registry-config".to_string(), config.display().to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator")).args(&args).output().expect("run plan")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let json =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("plan printed no JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_resolves_and_decides_the_cache_from_the_registry() {
    let env = Env::without_operator().await;
    let build = env.build("kinoite", "Main", "");

    // Nothing in the candidate akmods repository: the akmods Job.
    let (code, out, stderr) = plan(&env, &build, &[], true).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out["run"]["phase"], "BuildingAkmods", "{out}");
    assert_eq!(out["inputs"]["base_image_digest"], env.base_pushed.digest.as_str());
    assert_eq!(out["inputs"]["kernel_releases"], json!([K1, K2]));
    assert_eq!(out["cacheDecision"]["status"], "MissingImage");
    assert_eq!(out["jobs"][0]["metadata"]["name"], "kinoite-1-akmods");
    assert_eq!(out["registryWork"], json!([]), "nothing left that plan could not do");

    // A covering cache: the image Job, with the cache by digest.
    let cache = env.push_cache(&[K1, K2]).await;
    let (code, out, stderr) = plan(&env, &build, &[], true).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out["run"]["phase"], "BuildingImage", "{out}");
    assert_eq!(out["cacheDecision"]["status"], "Reusable");
    assert_eq!(out["cacheDecision"]["image"], format!("{}/{CANDIDATE_AKMODS_REPO}@{cache}", env.host()));
    let names: Vec<&str> =
        out["jobs"].as_array().unwrap().iter().map(|j| j["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["kinoite-1-image"]);
    // `--cache` still overrides the registry.
    let (code, out, _) = plan(&env, &build, &["--cache", "missing"], true).await;
    assert_eq!((code, out["run"]["phase"].as_str()), (0, Some("BuildingAkmods")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_replays_a_lock_from_the_registry() {
    let mut env = Env::without_operator().await;
    let old_base = env.base_pushed.digest.clone();
    env.push_new_base(&[K1, K2, K3], "20260302.1").await;
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("inputs.lock.json");
    let locked = format!("{}/danathar/kinoite-main:43-20260227.1", env.host());
    std::fs::write(&lock, json!({"version": 1, "base_image": locked}).to_string()).unwrap();
    let build = env.build("kinoite", "Main", "");
    let (code, out, stderr) = plan(&env, &build, &["--lock", lock.to_str().unwrap()], true).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out["inputs"]["use_input_lock"], true);
    assert_eq!(out["inputs"]["lock_file_path"], lock.display().to_string());
    assert_eq!(out["inputs"]["base_image_digest"], old_base.as_str(), "the lock, not latest");
    assert_eq!(out["inputs"]["kernel_releases"], json!([K1, K2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_failure_stops_the_plan_with_exit_code_2() {
    let env = Env::without_operator().await;
    let build = env.build("kinoite", "Main", "");
    let (code, out, stderr) = plan(&env, &build, &[], false).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("stopped by a registry failure: resolve:"), "{stderr}");
    assert_eq!(out["run"]["phase"], "Resolving");
    let notes = out["notes"].to_string();
    assert!(notes.contains("RegistryUnauthorized"), "{notes}");
    assert_eq!(out["jobs"], json!([]));
}
