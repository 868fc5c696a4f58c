//! Tests of the Kubernetes API simulator itself (tests/support/apisim), through the real client
//! stack (kube `Client` over HTTP), kube-runtime and the installed kubectl.

mod controller;
mod crud;
mod faults;
mod kubectl;
mod lifecycle;
mod patching;
mod watching;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::api::{Api, PostParams};
use kube::{CustomResource, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::apisim::ApiSim;

/// A small custom resource for the simulator's own tests (group `apisim.test`), with the schema
/// features the simulator must honour: defaults, enums, patterns, a CEL rule, a list-map.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(group = "apisim.test", version = "v1", kind = "Widget", namespaced, status = "WidgetStatus")]
pub struct WidgetSpec {
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// The Widget CRD, written by hand so it carries exactly the schema features under test.
pub fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.apisim.test"},
        "spec": {
            "group": "apisim.test",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"], "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "x-kubernetes-validations": [{"rule": "self.size <= 100 || has(self.owner)", "message": "big widgets need an owner"}],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1},
                                "color": {"type": "string", "enum": ["red", "green", "blue"], "default": "red"},
                                "owner": {"type": "string", "pattern": "^[a-z]+$"}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "observedGeneration": {"type": "integer"},
                                "phase": {"type": "string"},
                                "conditions": {
                                    "type": "array",
                                    "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": ["type"],
                                    "items": {
                                        "type": "object",
                                        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
                                        "properties": {
                                            "type": {"type": "string"},
                                            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                                            "observedGeneration": {"type": "integer"},
                                            "lastTransitionTime": {"type": "string", "format": "date-time"},
                                            "reason": {"type": "string"},
                                            "message": {"type": "string"}
                                        }
                                    }
                                }
                            }
                        }
                    }
                }}
            }]
        }
    }))
    .expect("the Widget CRD deserializes")
}

/// A simulator with the Widget CRD and a namespace `test`, plus a client.
pub async fn sim_with_widgets() -> (ApiSim, kube::Client) {
    let sim = ApiSim::start();
    sim.install_crds(&[widget_crd()]);
    sim.create_namespace("test");
    let client = sim.client().await;
    (sim, client)
}

pub fn widget(name: &str, size: i64) -> Widget {
    Widget::new(name, WidgetSpec { size, color: None, owner: None })
}

pub fn condition(type_: &str, status: &str, reason: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: format!("{type_} is {status}"),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2025-01-01T00:00:00Z".parse().expect("timestamp"),
        ),
        observed_generation: None,
    }
}

/// A Job owned by `owner` (controller reference), as a controller would create it.
pub fn owned_job<K: Resource<DynamicType = ()>>(name: &str, owner: &K) -> Job {
    let mut job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "build", "image": "registry.example/builder@sha256:0000000000000000000000000000000000000000000000000000000000000000"}]
        }}}
    }))
    .expect("job");
    let reference: OwnerReference = owner.controller_owner_ref(&()).expect("owner has name and uid");
    job.metadata.owner_references = Some(vec![reference]);
    job
}

pub async fn create_widget(client: &kube::Client, ns: &str, name: &str, size: i64) -> Widget {
    Api::<Widget>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &widget(name, size))
        .await
        .expect("create widget")
}

/// Polls `check` until it returns true (the simulator answers synchronously; this only waits for
/// controllers and watches running in the test).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn rv<K: ResourceExt>(obj: &K) -> u64 {
    obj.resource_version().expect("resourceVersion").parse().expect("numeric resourceVersion")
}
