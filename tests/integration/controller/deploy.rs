//! The example deployment (docs/deploy/operator.yaml) loads strictly into the Kubernetes types,
//! its ClusterRole grants every API call the controller makes (and no write beyond them), and
//! the container's arguments and probes match what `kinoite-zfs-operator run` accepts and serves.

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use serde::de::DeserializeOwned;

use kinoite_zfs_operator::cli::Cli;

/// The operator's API calls: (API group, resource, verb). Build controller: reads and watches
/// of the caches (controller.rs), the fresh build read, status write, children apply/delete,
/// live pod list, lock ConfigMap and Secret reads (reconcile.rs). Promotion controller: its
/// watches, the fresh Promotion read, a build read when the cache misses it, its status write,
/// the run-record list, Secret reads (promotion/reconcile.rs). Events (kube's Recorder).
const CALLS: &[(&str, &str, &str)] = &[
    ("kinoite-zfs.io", "zfsimagebuilds", "get"),
    ("kinoite-zfs.io", "zfsimagebuilds", "list"),
    ("kinoite-zfs.io", "zfsimagebuilds", "watch"),
    ("kinoite-zfs.io", "zfsimagebuilds/status", "patch"),
    ("kinoite-zfs.io", "promotions", "get"),
    ("kinoite-zfs.io", "promotions", "list"),
    ("kinoite-zfs.io", "promotions", "watch"),
    ("kinoite-zfs.io", "promotions/status", "patch"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "watch"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "patch"),
    ("batch", "jobs", "delete"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "configmaps", "get"),
    ("", "configmaps", "list"),
    ("", "configmaps", "watch"),
    ("", "configmaps", "create"),
    ("", "configmaps", "patch"),
    ("", "configmaps", "delete"),
    ("", "secrets", "get"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

fn documents() -> Vec<serde_json::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy/operator.yaml");
    serde_saphyr::from_multiple(&std::fs::read_to_string(&path).unwrap()).expect("valid YAML documents")
}

fn strict<T: DeserializeOwned>(value: &serde_json::Value) -> T {
    let mut ignored = Vec::new();
    let parsed = serde_ignored::deserialize(value.clone(), |p| ignored.push(p.to_string())).unwrap();
    assert!(ignored.is_empty(), "unknown fields {ignored:?} in {value}");
    parsed
}

fn of_kind(kind: &str) -> serde_json::Value {
    documents().into_iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in the deployment"))
}

#[test]
fn the_cluster_role_grants_exactly_what_the_operator_does() {
    let role: ClusterRole = strict(&of_kind("ClusterRole"));
    let rules = role.rules.unwrap_or_default();
    let granted = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for (group, resource, verb) in CALLS {
        assert!(granted(group, resource, verb), "the ClusterRole does not grant {verb} on {group}/{resource}");
    }
    // No write the operator does not make (least privilege): every granted write is a call.
    for rule in &rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in rule.verbs.iter().filter(|v| !matches!(v.as_str(), "get" | "list" | "watch")) {
                    let used = CALLS.iter().any(|(g, r, v)| g == group && r == resource && v == verb);
                    assert!(used, "the ClusterRole grants {verb} on {group}/{resource}, which the operator never does");
                }
            }
        }
    }
    assert!(!granted("", "secrets", "list"), "Secrets are read one by one, never listed");
}

#[test]
fn the_deployment_runs_the_operator_with_valid_arguments_and_probes() {
    for kind in ["Namespace", "ServiceAccount", "ClusterRoleBinding"] {
        of_kind(kind);
    }
    let deployment: Deployment = strict(&of_kind("Deployment"));
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(1), "one replica: no leader election");
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let pod = spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let mut argv = vec!["kinoite-zfs-operator".to_string()];
    argv.extend(container.args.clone().unwrap());
    Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("`run` rejects the Deployment's arguments: {e}"));
    let probe_path =
        |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
    assert_eq!(probe_path(&container.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&container.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8080);
    let env = container.env.as_ref().unwrap();
    let tools = env.iter().find(|e| e.name == "KZO_TOOLS_IMAGE").and_then(|e| e.value.clone()).unwrap();
    assert_eq!(
        Some(tools.as_str()),
        container.image.as_deref(),
        "the builder entrypoint comes from the operator image"
    );
    assert!(tools.contains("@sha256:"), "pinned by digest");
    assert_eq!(pod.service_account_name.as_deref(), Some("kinoite-zfs-operator"));
}
