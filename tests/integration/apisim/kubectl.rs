//! The installed kubectl drives the simulator: CRDs, the example build, typed validation, tables,
//! status patches, server-side apply, waits and deletes.

use std::path::Path;

use kube::ResourceExt;
use kube::api::Api;
use serde_json::Value;

use crate::support::apisim::{ApiSim, Verb};
use kinoite_zfs_operator::api::ZfsImageBuild;

const NAMESPACE_YAML: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kinoite-builds\n";

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path).display().to_string()
}

#[tokio::test]
async fn kubectl_applies_crds_and_the_example_then_patches_status_and_deletes() {
    let sim = ApiSim::start();
    let out = sim.kubectl(&["apply", "-f", &repo("crds")]).await.ok();
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/zfsimagebuilds.kinoite-zfs.io created"),
        "{out}"
    );
    assert!(out.contains("promotions.kinoite-zfs.io created"), "{out}");
    sim.kubectl(&["wait", "--for=condition=Established", "crd/zfsimagebuilds.kinoite-zfs.io", "--timeout=10s"])
        .await
        .ok();

    // The example lives in a namespace that must exist first, as on a real cluster.
    let missing = sim.kubectl(&["apply", "-f", &repo("docs/examples/main-build.yaml")]).await;
    assert!(!missing.success && missing.stderr.contains("namespaces \"kinoite-builds\" not found"), "{missing:?}");
    sim.kubectl_with_stdin(&["apply", "-f", "-"], NAMESPACE_YAML).await.ok();
    let out = sim.kubectl(&["apply", "-f", &repo("docs/examples/main-build.yaml")]).await.ok();
    assert_eq!(out.trim(), "zfsimagebuild.kinoite-zfs.io/kinoite-zfs created");
    // kubectl validated server-side (fieldValidation=Strict), not against a downloaded schema.
    let unchanged = sim.kubectl(&["apply", "-f", &repo("docs/examples/main-build.yaml")]).await.ok();
    assert_eq!(unchanged.trim(), "zfsimagebuild.kinoite-zfs.io/kinoite-zfs unchanged");

    let json = sim.kubectl(&["get", "zib", "kinoite-zfs", "-n", "kinoite-builds", "-o", "json"]).await.ok();
    let object: Value = serde_json::from_str(&json).expect("kubectl printed JSON");
    assert_eq!(object["spec"]["mode"], "Main");
    assert_eq!(object["spec"]["historyLimit"], 10);
    assert_eq!(object["metadata"]["generation"], 1);
    // What kubectl stored is what the operator's client reads, typed.
    let client = sim.client().await;
    let build = Api::<ZfsImageBuild>::namespaced(client.clone(), "kinoite-builds").get("kinoite-zfs").await.unwrap();
    assert_eq!(build.uid(), object["metadata"]["uid"].as_str().map(String::from));

    let status = r#"{"status":{"observedGeneration":1,"conditions":[{"type":"Ready","status":"True","reason":"Verified","message":"candidate verified","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}"#;
    let out = sim
        .kubectl(&[
            "patch",
            "zib",
            "kinoite-zfs",
            "-n",
            "kinoite-builds",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ])
        .await
        .ok();
    assert!(out.contains("patched"), "{out}");
    assert_eq!(sim.stats().requests(Verb::Patch, "zfsimagebuilds/status"), 1);

    // The table uses the CRD's printer columns.
    let table = sim.kubectl(&["get", "zib", "-n", "kinoite-builds"]).await.ok();
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "REASON", "MODE", "KERNEL", "RUN", "PHASE", "DIGEST", "AGE"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..4], ["kinoite-zfs", "True", "Verified", "Main"], "{table}");

    // A status patch that breaks the schema is refused with the field named.
    let bad = r#"{"status":{"conditions":[{"type":"Ready"}]}}"#;
    let refused = sim
        .kubectl(&[
            "patch",
            "zib",
            "kinoite-zfs",
            "-n",
            "kinoite-builds",
            "--subresource=status",
            "--type=merge",
            "-p",
            bad,
        ])
        .await;
    assert!(!refused.success && refused.stderr.contains("status.conditions[0].reason: Required value"), "{refused:?}");

    let out = sim.kubectl(&["delete", "-f", &repo("docs/examples/main-build.yaml")]).await.ok();
    // (kubectl 1.37 adds "from kinoite-builds namespace".)
    assert!(out.starts_with("zfsimagebuild.kinoite-zfs.io \"kinoite-zfs\" deleted"), "{out}");
    let none = sim.kubectl(&["get", "zib", "-A"]).await;
    assert!(none.success && none.stderr.contains("No resources found"), "{none:?}");
    assert!(sim.object("zfsimagebuilds", "kinoite-builds", "kinoite-zfs").is_none());
}

#[tokio::test]
async fn kubectl_rejects_every_invalid_fixture_with_its_expected_error() {
    let sim = ApiSim::start();
    sim.kubectl(&["apply", "-f", &repo("crds")]).await.ok();
    sim.kubectl_with_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t\n").await.ok();
    let dir = repo("tests/fixtures/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("fixture expectation line");
        // Namespaced fixtures go to namespace t.
        let out = sim.kubectl(&["apply", "-n", "t", "-f", &file.display().to_string()]).await;
        assert!(!out.success, "{} was accepted", file.display());
        // The apiserver names unknown fields by their full path (`spec.zfs.minorVersoin"`).
        let stderr = out.stderr.to_lowercase();
        let found = match expect.strip_prefix("unknown field \"") {
            Some(field) => {
                stderr.contains("strict decoding error: unknown field \"")
                    && stderr.contains(&format!(".{}", field.to_lowercase()))
            }
            None => stderr.contains(&expect.to_lowercase()),
        };
        assert!(found, "{}: expected {expect:?} in {}", file.display(), out.stderr);
    }
    assert_eq!(sim.stats().writes_to("zfsimagebuilds") + sim.stats().writes_to("promotions"), 0);
}

#[tokio::test]
async fn kubectl_server_side_apply_and_builtin_strategic_merge() {
    let sim = ApiSim::start();
    sim.kubectl(&["apply", "-f", &repo("crds")]).await.ok();
    sim.kubectl_with_stdin(&["apply", "-f", "-"], NAMESPACE_YAML).await.ok();
    let out = sim.kubectl(&["apply", "--server-side", "-f", &repo("docs/examples/branch-build.yaml")]).await.ok();
    assert!(out.contains("serverside-applied"), "{out}");
    let again = sim.kubectl(&["apply", "--server-side", "-f", &repo("docs/examples/branch-build.yaml")]).await.ok();
    assert!(again.contains("serverside-applied"), "{again}");
    let json = sim.kubectl(&["get", "zib", "-n", "kinoite-builds", "-o", "json", "--show-managed-fields"]).await.ok();
    let list: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["items"][0]["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(list["items"][0]["metadata"]["managedFields"][0]["operation"], "Apply");

    // Client-side apply of a built-in kind twice: the second is a strategic merge patch.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: kinoite-builds\n  labels:\n    a: one\ndata:\n  x: \"1\"\n  y: \"2\"\n";
    sim.kubectl_with_stdin(&["apply", "-f", "-"], cm).await.ok();
    let changed = cm.replace("a: one", "b: two").replace("  y: \"2\"\n", "");
    let out = sim.kubectl_with_stdin(&["apply", "-f", "-"], &changed).await.ok();
    assert!(out.contains("configured"), "{out}");
    let stored = sim.object("configmaps", "kinoite-builds", "settings").unwrap();
    assert_eq!(stored["data"], serde_json::json!({"x": "1"}), "removed key deleted by the three-way patch");
    assert_eq!(stored["metadata"]["labels"], serde_json::json!({"b": "two"}));
    assert_eq!(sim.stats().requests(Verb::Patch, "configmaps"), 1);
}

#[tokio::test]
async fn kubectl_generators_explain_and_describe() {
    let sim = ApiSim::start();
    sim.kubectl(&["apply", "-f", &repo("crds")]).await.ok();
    // Generators send protobuf bodies; the simulator decodes the kinds they create.
    assert_eq!(
        sim.kubectl(&["create", "namespace", "kinoite-builds"]).await.ok().trim(),
        "namespace/kinoite-builds created"
    );
    sim.kubectl(&["create", "configmap", "settings", "-n", "kinoite-builds", "--from-literal=a=b"]).await.ok();
    sim.kubectl(&["create", "secret", "generic", "ghcr-push", "-n", "kinoite-builds", "--from-literal=token=t0k"])
        .await
        .ok();
    let secret = sim.object("secrets", "kinoite-builds", "ghcr-push").unwrap();
    assert_eq!((secret["type"].as_str(), secret["data"]["token"].as_str()), (Some("Opaque"), Some("dDBr")));
    assert_eq!(sim.object("configmaps", "kinoite-builds", "settings").unwrap()["data"]["a"], "b");

    // (kubectl refreshes its discovery cache when apply meets the new kind; explain would not.)
    sim.kubectl(&["apply", "-f", &repo("docs/examples/main-build.yaml")]).await.ok();
    // The CRD schemas are published in OpenAPI v3, so explain shows the field documentation.
    let explained = sim.kubectl(&["explain", "zib.spec.mode"]).await.ok();
    assert!(explained.contains("FIELD: mode <string>") && explained.contains("Validate"), "{explained}");
    let described = sim.kubectl(&["describe", "zib", "kinoite-zfs", "-n", "kinoite-builds"]).await.ok();
    assert!(described.contains("Kind:         ZfsImageBuild"), "{described}");
    sim.kubectl(&["label", "zib", "kinoite-zfs", "-n", "kinoite-builds", "channel=stable"]).await.ok();
    let labels = sim.kubectl(&["get", "zib", "-n", "kinoite-builds", "-l", "channel=stable", "-o", "name"]).await.ok();
    assert_eq!(labels.trim(), "zfsimagebuild.kinoite-zfs.io/kinoite-zfs");

    // Deleting the namespace takes its content with it.
    sim.kubectl(&["delete", "namespace", "kinoite-builds"]).await.ok();
    assert!(sim.object("zfsimagebuilds", "kinoite-builds", "kinoite-zfs").is_none());
    assert!(sim.object("namespaces", "", "kinoite-builds").is_none());
}
