//! Scale benchmark driver (`bench/scale.sh`): many `ZfsImageBuild`s against the Kubernetes API
//! simulator, a real registry and the operator binary.
//!
//! ```sh
//! # a registry with a small Kinoite-like base, a builder, an akmods cache covering the base's
//! # kernels and a ZFS delta layer; runs until SIGTERM
//! bench_scale fixture --env-file /tmp/scale.env
//! # applies N builds, completes their image Jobs envtest-style, waits until all are Ready, then
//! # watches the operator's /metrics for a steady-state period; prints KEY=VALUE lines
//! bench_scale drive --kubeconfig K --registry HOST:PORT --metrics http://127.0.0.1:8080 --builds 500
//! ```
//!
//! Every build shares the base and the akmods cache (so no akmods Job runs) and has its own
//! candidate repository; the driver pushes what an image Job would have pushed (the base layers
//! by cross-repository mount plus the ZFS delta) and completes the Job with the result document.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kinoite_zfs_operator::api::ZfsImageBuild;
use kinoite_zfs_operator::api::build::DEFAULT_AKMODS_REVISION;
use kinoite_zfs_operator::pipeline::cache::labels;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use support::image::{Entry, ImageSpec, Layer, OCI_MANIFEST, Pusher};
use support::registry::Registry;

const KERNELS: [&str; 2] = ["6.18.12-200.fc43.x86_64", "6.18.13-200.fc43.x86_64"];
const ORG: &str = "bench";
const BASE_REPO: &str = "bench/kinoite-main";
const DELTA_REPO: &str = "bench/zfs-delta";
const NS: &str = "scale";
const REVISION: &str = "02701fe4c3b2a1908f7e6d5c4b3a29180f7e6d5c";

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

fn required(args: &[String], flag: &str) -> String {
    arg(args, flag).unwrap_or_else(|| panic!("{flag} is required"))
}

#[tokio::main]
async fn main() {
    support::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fixture") => fixture(PathBuf::from(required(&args, "--env-file"))).await,
        Some("drive") => drive(&args).await,
        _ => panic!(
            "usage: bench_scale fixture --env-file F | drive --kubeconfig K --registry HOST --metrics URL --builds N [--steady-secs S]"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture

async fn fixture(env_file: PathBuf) {
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry);
    let host = registry.host().to_string();
    let base = ImageSpec::new(vec![
        Layer::gzip(
            KERNELS
                .iter()
                .flat_map(|k| {
                    [
                        Entry::dir(&format!("usr/lib/modules/{k}")),
                        Entry::file(&format!("usr/lib/modules/{k}/vmlinuz"), b"kernel".to_vec()),
                    ]
                })
                .chain([Entry::symlink("lib", "usr/lib")])
                .collect(),
        ),
        Layer::gzip(vec![Entry::file("usr/share/bench/payload", support::image::noise(256 * 1024, 1))]),
    ])
    .label("ostree.linux", KERNELS[1])
    .label("org.opencontainers.image.version", "43.20260227.1");
    let pushed = pusher.push_image(BASE_REPO, Some("latest"), &base).await;
    for tag in ["latest-20260227.1", "43-20260227.1"] {
        pusher.put_manifest(BASE_REPO, Some(tag), OCI_MANIFEST, pushed.manifest.clone()).await;
    }
    let builder = ImageSpec::new(vec![Layer::gzip(vec![Entry::executable("usr/bin/just", b"#!/bin/sh\n".to_vec())])]);
    let builder_digest = pusher.push_image("bench/devcontainer", Some("latest"), &builder).await.digest;

    // The shared akmods cache covering the base's kernels (labels decide: no layer scan).
    let mut cache_entries = vec![Entry::dir("rpms/kmods/zfs")];
    for k in KERNELS {
        cache_entries
            .push(Entry::file(&format!("rpms/kmods/zfs/kmod-zfs-{k}-2.4.1-1.fc43.x86_64.rpm"), b"kmod".to_vec()));
    }
    let cache = ImageSpec::new(vec![Layer::gzip(cache_entries)])
        .label(labels::CACHE_FORMAT, labels::FORMAT_VERSION)
        .label(labels::KERNEL_RELEASES, &KERNELS.join(" "))
        .label(labels::ZFS_MINOR_VERSION, "2.4")
        .label(labels::AKMODS_REF, DEFAULT_AKMODS_REVISION)
        .label(labels::BUILDER_DIGEST, &builder_digest);
    pusher.push_image("bench/kinoite-zfs-bluebuild-akmods-candidate", Some("main-43"), &cache).await;

    // The ZFS delta every candidate adds on top of the base.
    let mut delta = vec![
        Entry::executable("usr/sbin/zfs", b"zfs".to_vec()),
        Entry::executable("usr/sbin/zpool", b"zpool".to_vec()),
    ];
    for k in KERNELS {
        delta.push(Entry::file(&format!("usr/lib/modules/{k}/extra/zfs/zfs.ko.xz"), b"ko".to_vec()));
    }
    let mut candidate = base.clone();
    candidate.layers.push(Layer::gzip(delta));
    pusher.push_image(DELTA_REPO, Some("candidate"), &candidate).await;

    std::fs::write(&env_file, format!("REGISTRY={host}\n")).expect("write the env file");
    eprintln!("bench_scale fixture: registry on {host}; SIGTERM stops it");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(registry);
}

// ---------------------------------------------------------------------------------------------
// Driver

async fn drive(args: &[String]) {
    let kubeconfig = PathBuf::from(required(args, "--kubeconfig"));
    let host = required(args, "--registry");
    let metrics_url = format!("{}/metrics", required(args, "--metrics"));
    let builds: usize = required(args, "--builds").parse().expect("--builds N");
    let steady = Duration::from_secs(arg(args, "--steady-secs").map_or(60, |s| s.parse().expect("--steady-secs S")));

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).expect("read the kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("kube config");
    let client = kube::Client::try_from(config).expect("kube client");
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await;

    // The candidate every image Job "pushes": its manifest, and the blobs to mount.
    let http = reqwest::Client::new();
    let base_url = format!("http://{host}");
    let manifest = http
        .get(format!("{base_url}/v2/{DELTA_REPO}/manifests/candidate"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut blobs: Vec<String> =
        parsed["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    blobs.push(parsed["config"]["digest"].as_str().unwrap().to_string());

    let completer = tokio::spawn(complete_image_jobs(client.clone(), host.clone(), manifest, blobs));

    let api = Api::<ZfsImageBuild>::namespaced(client.clone(), NS);
    let started = Instant::now();
    let mut created = tokio::task::JoinSet::new();
    for i in 0..builds {
        let api = api.clone();
        let build = build(&host, i);
        created.spawn(async move { api.create(&PostParams::default(), &build).await.expect("create a build") });
        // A few creates in flight, like `kubectl apply` of many files.
        while created.len() >= 8 {
            created.join_next().await;
        }
    }
    while created.join_next().await.is_some() {}
    let applied = started.elapsed();

    // Until every build is Ready.
    let mut ready_at: BTreeMap<String, Duration> = BTreeMap::new();
    loop {
        for b in api.list(&ListParams::default()).await.unwrap() {
            let conditions = b.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
            let ready = conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            if let Some(stalled) = conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True") {
                panic!("{} is Stalled ({}): {}", b.name_any(), stalled.reason, stalled.message);
            }
            if ready {
                ready_at.entry(b.name_any()).or_insert_with(|| started.elapsed());
            }
        }
        if ready_at.len() >= builds {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "only {} of {builds} Ready after 30 min",
            ready_at.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_ready = started.elapsed();
    let mut times: Vec<Duration> = ready_at.values().copied().collect();
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize].as_secs_f64();

    let jobs = Api::<Job>::namespaced(client.clone(), NS).list(&ListParams::default()).await.unwrap();
    let steps: Vec<String> = jobs.items.iter().filter_map(|j| j.labels().get("kinoite-zfs.io/step").cloned()).collect();
    let akmods_jobs = steps.iter().filter(|s| *s == "akmods").count();
    let image_jobs = steps.iter().filter(|s| *s == "image").count();

    // Steady state: nothing left to do, so the operator should not reconcile at all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = reconciles(&http, &metrics_url).await;
    tokio::time::sleep(steady).await;
    let after = reconciles(&http, &metrics_url).await;
    let per_minute = (after - before) * 60.0 / steady.as_secs_f64();
    completer.abort();

    println!("BUILDS={builds}");
    println!("APPLY_SECONDS={:.2}", applied.as_secs_f64());
    println!("ALL_READY_SECONDS={:.2}", all_ready.as_secs_f64());
    println!("READY_P50_SECONDS={:.2}", pct(0.5));
    println!("READY_P95_SECONDS={:.2}", pct(0.95));
    println!("AKMODS_JOBS={akmods_jobs}");
    println!("IMAGE_JOBS={image_jobs}");
    println!("RECONCILES_TOTAL={after}");
    println!("STEADY_SECONDS={}", steady.as_secs());
    println!("STEADY_RECONCILES_PER_MINUTE={per_minute:.2}");
}

fn build(host: &str, i: usize) -> ZfsImageBuild {
    serde_json::from_value(json!({
        "apiVersion": "kinoite-zfs.io/v1alpha1",
        "kind": "ZfsImageBuild",
        "metadata": {"name": format!("zib-{i:04}"), "namespace": NS},
        "spec": {
            "mode": "Main",
            "baseImage": format!("{host}/{BASE_REPO}:latest"),
            "builderImage": format!("{host}/bench/devcontainer:latest"),
            "source": {"git": {"url": "https://github.com/Danathar/Kinoite-ZFS.git", "revision": REVISION}},
            "registry": {"host": host, "namespace": ORG, "candidateImage": format!("candidate-{i:04}")},
            // A nightly schedule, as real builds have; no tick falls in the benchmark.
            "schedule": "0 3 * * *"
        }
    }))
    .unwrap()
}

async fn reconciles(http: &reqwest::Client, url: &str) -> f64 {
    let body = http.get(url).send().await.unwrap().text().await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("kzo_reconciles_total{controller=\"zfsimagebuild\"} "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Completes every image Job the envtest way: pushes the candidate into the Job's target
/// repository (blobs by cross-repository mount, then the manifest under the run's tag), creates
/// the Job's pod with the result document, and sets the Job's `Complete` condition.
async fn complete_image_jobs(client: kube::Client, host: String, manifest: Vec<u8>, blobs: Vec<String>) {
    let jobs = Api::<Job>::namespaced(client.clone(), NS);
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let http = reqwest::Client::new();
    let digest = support::image::digest_of(&manifest);
    let mut done = BTreeSet::new();
    let config = watcher::Config::default().labels("kinoite-zfs.io/step=image");
    let mut events = std::pin::pin!(watcher(jobs.clone(), config).default_backoff().applied_objects());
    while let Some(event) = events.next().await {
        let Ok(job) = event else { continue };
        let name = job.name_any();
        if !done.insert(name.clone()) {
            continue;
        }
        let env = |key: &str| {
            job.spec
                .as_ref()?
                .template
                .spec
                .as_ref()?
                .containers
                .iter()
                .find(|c| c.name == "builder")?
                .env
                .iter()
                .flatten()
                .find(|e| e.name == key)?
                .value
                .clone()
        };
        let repository = env("KZO_IMAGE_REPOSITORY").expect("the image Job names its repository");
        let repo =
            repository.strip_prefix(&format!("{host}/")).expect("the repository is on the bench registry").to_string();
        let tag = env("KZO_PUSH_REFS").and_then(|r| r.rsplit(':').next().map(str::to_string)).expect("a push ref");
        for blob in &blobs {
            let url = format!("http://{host}/v2/{repo}/blobs/uploads/?mount={blob}&from={DELTA_REPO}");
            let status = http.post(url).send().await.unwrap().status().as_u16();
            assert_eq!(status, 201, "mount {blob} into {repo}");
        }
        let put = http
            .put(format!("http://{host}/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status().as_u16(), 201, "push {repo}:{tag}");

        let template_labels =
            job.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.clone());
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-pod"), "namespace": NS, "labels": template_labels,
                "ownerReferences": [job.controller_owner_ref(&()).unwrap()]},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "builder", "image": "builder"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let result = json!({"version": 1, "step": "image", "digest": digest}).to_string();
        let terminated = json!({"status": {"phase": "Succeeded", "containerStatuses": [{"name": "builder", "image": "builder",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": result}}}]}});
        pods.patch_status(&format!("{name}-pod"), &PatchParams::default(), &Patch::Merge(terminated)).await.unwrap();
        let complete = json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
        jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(complete)).await.unwrap();
    }
}
