//! The `kinoite-zfs-operator run` binary against the simulator's kubeconfig: health, readiness
//! after the caches synced, real work (a build resolved, its cache checked, its image Job
//! created), `/metrics`, JSON logs without credentials, and a graceful exit on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// Kills the operator process if the test fails before it stopped it.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_binary_serves_health_readiness_metrics_and_stops_on_sigterm() {
    let env = Env::without_operator().await;
    env.push_cache(&[K1, K2]).await;
    // The tools image given by tag (H8): resolved once at startup, Jobs carry its digest.
    let tools =
        ImageSpec::new(vec![Layer::gzip(vec![Entry::executable("usr/local/bin/kinoite-zfs-operator", b"x".to_vec())])]);
    let tools_digest = env.pusher.push_image("danathar/kinoite-zfs-operator", Some("v1"), &tools).await.digest;
    let tools_tag = format!("{}/danathar/kinoite-zfs-operator:v1", env.host());
    let registry_config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(registry_config.path(), docker_config(env.host(), USER, PASSWORD)).unwrap();
    let logs = tempfile::NamedTempFile::new().unwrap();
    let port = free_port();
    let mut child = Process(
        Command::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator"))
            .args(["run", "--log-format", "json", "--http-address", &format!("127.0.0.1:{port}")])
            .args(["--insecure-registry", env.host(), "--tools-image", &tools_tag])
            .arg("--registry-config")
            .arg(registry_config.path())
            .env("KUBECONFIG", env.sim.kubeconfig())
            .env("RUST_LOG", "info,kinoite_zfs_operator=debug")
            .stdout(Stdio::null())
            .stderr(logs.reopen().unwrap())
            .spawn()
            .expect("start the operator"),
    );
    let base = format!("http://127.0.0.1:{port}");

    // Alive, then ready once every watch has listed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = reqwest::get(format!("{base}/healthz")).await {
            assert_eq!(response.status().as_u16(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "no /healthz: {}", std::fs::read_to_string(logs.path()).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("/readyz is 200", || async { http_get(&format!("{base}/readyz")).await.0 == 200 }).await;
    assert_eq!(http_get(&format!("{base}/nope")).await.0, 404);

    // Real work: resolved from the registry with the build's Secret, cache reused, image Job.
    env.create(&env.build("kinoite", "Main", "")).await;
    env.wait_for("kinoite", "the image Job", |b| phase(b).as_deref() == Some("BuildingImage")).await;
    let job = env.job("kinoite-1-image").await;
    let init = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert_eq!(init.image, Some(format!("{}/danathar/kinoite-zfs-operator@{tools_digest}", env.host())));

    let (status, metrics) = http_get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert!(metric_value(&metrics, "kzo_reconciles_total{controller=\"zfsimagebuild\"}") >= 1.0, "{metrics}");
    assert!(metric_value(&metrics, "kzo_registry_requests_total{result=\"present\"}") > 0.0, "{metrics}");
    assert_eq!(metric_value(&metrics, "kzo_runs_started_total{trigger=\"Created\"}"), 1.0, "{metrics}");
    assert!(metrics.contains("# TYPE kzo_reconcile_duration_seconds histogram"), "{metrics}");

    // SIGTERM: graceful shutdown, exit 0.
    let stopped = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the operator did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(logs.path()).unwrap();
    assert!(exit.success(), "exit {exit:?}; logs:\n{text}");

    // Logs are JSON lines, mention the reconcile, and never the registry password.
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(value.get("level").is_some(), "{line}");
    }
    assert!(text.contains("reconcile"), "{text}");
    assert!(text.contains("SIGTERM"), "{text}");
    assert!(!text.contains(PASSWORD), "the registry password leaked into the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_to_start_with_a_tools_image_tag_it_cannot_resolve() {
    let env = Env::without_operator().await;
    let absent = format!("{}/danathar/kinoite-zfs-operator:no-such-tag", env.host());
    let registry_config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(registry_config.path(), docker_config(env.host(), USER, PASSWORD)).unwrap();
    for (image, says) in [(absent.as_str(), "not found"), ("kinoite-zfs-operator:latest", "not fully qualified")] {
        let out = Command::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator"))
            .args(["run", "--http-address", "127.0.0.1:0", "--insecure-registry", env.host(), "--tools-image", image])
            .arg("--registry-config")
            .arg(registry_config.path())
            .env("KUBECONFIG", env.sim.kubeconfig())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("refusing to start: --tools-image {image} cannot be resolved")), "{stderr}");
        assert!(stderr.to_lowercase().contains(says), "{stderr}");
        assert!(!stderr.contains(PASSWORD));
    }
}
