//! `kinoite-zfs-operator plan`, run as a process on the example builds and the example
//! build-inputs.json: offline, it prints the run's inputs, the Jobs and ConfigMaps the
//! controller would create, and the tags it would write.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/examples").join(name).display().to_string()
}

const AKMODS: &str = "ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate@sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Runs `plan` and returns (exit success, stdout parsed as YAML or JSON, stderr).
fn plan(args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator"))
        .arg("plan")
        .args(["--now", "2026-04-20T06:00:07Z"])
        .args(args)
        .output()
        .expect("run kinoite-zfs-operator");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let value = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_saphyr::from_str(&stdout).unwrap_or_else(|e| panic!("plan printed no YAML ({e}):\n{stdout}"))
    };
    (out.status.success(), value, stderr)
}

fn env_of(job: &Value) -> Vec<(String, String)> {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap_or_default().to_string()))
        .collect()
}

fn env(job: &Value, name: &str) -> String {
    env_of(job).into_iter().find(|(n, _)| n == name).map(|(_, v)| v).unwrap_or_else(|| panic!("no env {name}"))
}

#[test]
fn main_build_without_cache_plans_the_akmods_job() {
    let (ok, out, err) =
        plan(&["-f", &example("main-build.yaml"), "--inputs", &example("build-inputs.json"), "--cache", "missing"]);
    assert!(ok, "{err}");
    assert_eq!(out["build"], "kinoite-builds/kinoite-zfs");
    assert_eq!(out["run"]["number"], 1);
    assert_eq!(out["run"]["phase"], "BuildingAkmods");
    let inputs_file: Value =
        serde_json::from_str(&std::fs::read_to_string(example("build-inputs.json")).unwrap()).unwrap();
    assert_eq!(out["inputs"], inputs_file["inputs"], "the inputs are printed exactly as build-inputs.json has them");
    assert_eq!(out["cacheDecision"]["status"], "MissingImage");
    assert_eq!(out["cacheDecision"]["rebuilt"], true);

    let jobs = out["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job["metadata"]["name"], "kinoite-zfs-1-akmods");
    assert_eq!(job["metadata"]["namespace"], "kinoite-builds");
    assert_eq!(job["metadata"]["ownerReferences"][0]["controller"], true);
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], inputs_file["inputs"]["build_container_pinned"], "builder by digest");
    assert_eq!(job["spec"]["template"]["spec"]["serviceAccountName"], "kinoite-builder");
    assert_eq!(container["resources"]["requests"]["ephemeral-storage"], "40Gi");
    let refs = env(job, "KZO_PUSH_REFS");
    assert_eq!(
        refs,
        "ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate:main-43 ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate:1-43"
    );
    let tags: Vec<&str> = out["tagsWritten"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tags.contains(&"ghcr.io/danathar/kinoite-zfs-candidate:1-43"), "{tags:?}");
    assert!(tags.iter().all(|t| !t.starts_with("ghcr.io/danathar/kinoite-zfs:")
        && !t.starts_with("ghcr.io/danathar/kinoite-zfs-bluebuild-akmods:")));

    let record = &out["configMaps"][0];
    assert_eq!(record["metadata"]["name"], "kinoite-zfs-run-1");
    let recorded: Value = serde_json::from_str(record["data"]["build-inputs.json"].as_str().unwrap()).unwrap();
    assert_eq!(recorded["inputs"], inputs_file["inputs"]);
    assert_eq!(recorded["run"]["ref"], "kinoite-builds/kinoite-zfs");
    assert!(out["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("--cache NAME@sha256")));
}

#[test]
fn main_build_with_a_covering_cache_plans_the_image_job_and_recipe_lines() {
    let (ok, out, err) =
        plan(&["-f", &example("main-build.yaml"), "--inputs", &example("build-inputs.json"), "--cache", AKMODS]);
    assert!(ok, "{err}");
    assert_eq!(out["run"]["phase"], "BuildingImage");
    let job = &out["jobs"][0];
    assert_eq!(job["metadata"]["name"], "kinoite-zfs-1-image");
    assert_eq!(env(job, "AKMODS_IMAGE"), AKMODS);
    assert_eq!(env(job, "KZO_PUSH_REFS"), "ghcr.io/danathar/kinoite-zfs-candidate:1-43");
    let recipe =
        out["configMaps"].as_array().unwrap().iter().find(|c| c["metadata"]["name"] == "kinoite-zfs-1-recipe").unwrap();
    assert_eq!(recipe["data"]["recipe-name"], "name: kinoite-zfs-candidate");
    assert_eq!(recipe["data"]["recipe-image-version"], "image-version: latest-20260420");
    assert_eq!(
        recipe["data"]["containerfile-akmods-image-template"],
        format!("ENV AKMODS_IMAGE_TEMPLATE=\"{AKMODS}\"")
    );
}

#[test]
fn validate_build_plans_no_credentials_and_no_tags() {
    let (ok, out, err) = plan(&[
        "-f",
        &example("validate-build.yaml"),
        "--inputs",
        &example("build-inputs.json"),
        "--cache",
        AKMODS,
        "-o",
        "json",
    ]);
    assert!(ok, "{err}");
    let job = &out["jobs"][0];
    let volumes = job["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().all(|v| v.get("secret").is_none()), "{volumes:?}");
    assert!(env_of(job).iter().all(|(n, _)| n != "REGISTRY_AUTH_FILE"));
    assert_eq!(env(job, "KZO_PUSH"), "false");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(out["tagsWritten"], serde_json::json!([]));
}

#[test]
fn branch_build_with_a_missing_cache_fails_closed() {
    let (ok, out, err) =
        plan(&["-f", &example("branch-build.yaml"), "--inputs", &example("build-inputs.json"), "--cache", "missing"]);
    assert!(ok, "{err}");
    assert_eq!(out["run"]["phase"], "Failed");
    assert_eq!(out["run"]["reason"], "AkmodsCacheNotReusable");
    assert_eq!(out["jobs"], serde_json::json!([]));
    assert_eq!(out["inputs"]["kernel_releases"], serde_json::json!(["6.18.12-200.fc43.x86_64"]), "kernels: Newest");
    let notes = serde_json::to_string(&out["notes"]).unwrap();
    assert!(notes.contains("rebuild-requested-at"), "{notes}");
}

#[test]
fn without_a_cache_assumption_the_plan_stops_at_the_cache_decision() {
    let (ok, out, err) = plan(&["-f", &example("main-build.yaml"), "--inputs", &example("build-inputs.json")]);
    assert!(ok, "{err}");
    assert_eq!(out["run"]["phase"], "CheckingCache");
    let work = out["registryWork"][0].as_str().unwrap();
    assert!(work.starts_with("check-cache ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate:main-43"), "{work}");
}

#[test]
fn bad_arguments_give_one_clear_line() {
    let (ok, _, err) = plan(&["-f", &example("main-build.yaml"), "--lock", "no-such-lock.json"]);
    assert!(!ok && err.contains("cannot read no-such-lock.json"), "{err}");
    let (ok, _, err) = plan(&["-f", &example("main-build.yaml"), "--insecure-registry", "http://x"]);
    assert!(!ok && err.contains("--insecure-registry"), "{err}");
    let (ok, _, err) = plan(&[
        "-f",
        &example("main-build.yaml"),
        "--inputs",
        &example("build-inputs.json"),
        "--cache",
        "ghcr.io/x:latest",
    ]);
    assert!(!ok && err.contains("--cache must be"), "{err}");
    let (ok, _, err) = plan(&["-f", &example("build-inputs.json"), "--inputs", &example("build-inputs.json")]);
    assert!(!ok && err.contains("is not a ZfsImageBuild"), "{err}");
    let (ok, _, err) = plan(&["-f", &example("main-build.yaml"), "--inputs", &example("main-build.yaml")]);
    assert!(!ok && err.contains("is not a build-inputs document"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
