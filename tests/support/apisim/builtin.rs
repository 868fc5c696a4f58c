//! Behaviour of the built-in kinds the simulator serves: the defaults the apiserver fills in, the
//! validation that catches mistakes an operator can make (a Job template without restartPolicy,
//! a changed Job template, bad Secret data), and the status a new object starts with.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::error::Cause;
use super::resources::Builtin;

fn cause(field: &str, message: impl Into<String>) -> Cause {
    Cause { field: field.into(), message: message.into() }
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.into(), value);
    }
}

fn object_at<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !value.get(key).is_some_and(Value::is_object) {
        value[key] = json!({});
    }
    value[key].as_object_mut().expect("just made an object")
}

/// Defaults of a pod spec (Pods and Job templates), as the apiserver fills them in.
fn default_pod_spec(spec: &mut Map<String, Value>, restart_policy: Option<&str>) {
    if let Some(restart_policy) = restart_policy {
        set_default(spec, "restartPolicy", json!(restart_policy));
    }
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    for list in ["initContainers", "containers"] {
        for container in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(c) = container.as_object_mut() else { continue };
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let latest = !image.contains('@') && (!tag.contains(':') || tag.ends_with(":latest"));
            set_default(c, "imagePullPolicy", json!(if latest { "Always" } else { "IfNotPresent" }));
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            set_default(c, "resources", json!({}));
        }
    }
}

fn validate_pod_spec(spec: Option<&Value>, path: &str, allowed_restart: &[&str], causes: &mut Vec<Cause>) {
    let Some(spec) = spec.and_then(Value::as_object) else {
        causes.push(cause(path, "Required value"));
        return;
    };
    let containers = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push(cause(&format!("{path}.containers"), "Required value"));
    }
    for (i, c) in containers.iter().enumerate() {
        for field in ["name", "image"] {
            if c.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(cause(&format!("{path}.containers[{i}].{field}"), "Required value"));
            }
        }
    }
    let restart = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or_default();
    if !allowed_restart.contains(&restart) {
        let supported: Vec<String> = allowed_restart.iter().map(|r| format!("\"{r}\"")).collect();
        let message = if restart.is_empty() {
            format!("Required value: valid values: {}", supported.join(", "))
        } else {
            format!("Unsupported value: \"{restart}\": supported values: {}", supported.join(", "))
        };
        causes.push(cause(&format!("{path}.restartPolicy"), message));
    }
}

/// Fills in defaults on create and update (idempotent: defaults only fill what is missing).
pub fn default(kind: Builtin, object: &mut Value, uid: &str, name: &str) {
    match kind {
        Builtin::Namespace => {
            let labels = object_at(object.get_mut("metadata").expect("metadata present"), "labels");
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            let spec = object_at(object, "spec");
            set_default(spec, "finalizers", json!(["kubernetes"]));
        }
        Builtin::Secret => {
            let Some(map) = object.as_object_mut() else { return };
            if map.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
                map.insert("type".into(), json!("Opaque"));
            }
            // stringData is write-only: merged into data (base64) and dropped.
            if let Some(Value::Object(string_data)) = map.remove("stringData") {
                let data = map.entry("data").or_insert_with(|| json!({}));
                if let Some(data) = data.as_object_mut() {
                    for (k, v) in string_data {
                        let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
                        data.insert(k, json!(encoded));
                    }
                }
            }
        }
        Builtin::Pod => {
            let spec = object_at(object, "spec");
            default_pod_spec(spec, Some("Always"));
            set_default(spec, "serviceAccountName", json!("default"));
            set_default(spec, "enableServiceLinks", json!(true));
            set_default(spec, "priority", json!(0));
        }
        Builtin::Job => {
            let spec = object_at(object, "spec");
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "completions", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            // The generated selector ties the Job to its pods by uid, as the apiserver does when
            // manualSelector is not set.
            if spec.get("manualSelector").and_then(Value::as_bool) != Some(true) {
                set_default(spec, "selector", json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
                let template = spec.entry("template").or_insert_with(|| json!({}));
                let labels = object_at(object_at_value(template, "metadata"), "labels");
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", uid),
                    ("batch.kubernetes.io/job-name", name),
                    ("controller-uid", uid),
                    ("job-name", name),
                ] {
                    labels.insert(k.into(), json!(v));
                }
            }
            if let Some(pod_spec) = object.pointer_mut("/spec/template/spec").and_then(Value::as_object_mut) {
                // A Job's pods have no default restartPolicy: it must be chosen (Never or OnFailure).
                default_pod_spec(pod_spec, None);
            }
        }
        _ => {}
    }
}

fn object_at_value<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    if !value.get(key).is_some_and(Value::is_object) {
        value[key] = json!({});
    }
    &mut value[key]
}

/// The status a new object starts with (status is not settable on create when the type has a
/// status subresource).
pub fn initial_status(kind: Builtin) -> Option<Value> {
    match kind {
        Builtin::Namespace => Some(json!({"phase": "Active"})),
        Builtin::Pod => Some(json!({"phase": "Pending", "qosClass": "BestEffort"})),
        Builtin::Job => Some(json!({})),
        _ => None,
    }
}

/// Kind-specific validation; `old` is set on updates (immutable fields).
pub fn validate(kind: Builtin, object: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    match kind {
        Builtin::Pod => validate_pod_spec(object.get("spec"), "spec", &["Always", "OnFailure", "Never"], &mut causes),
        Builtin::Job => {
            validate_pod_spec(
                object.pointer("/spec/template/spec"),
                "spec.template.spec",
                &["OnFailure", "Never"],
                &mut causes,
            );
            if let Some(old) = old {
                for field in ["template", "selector", "completionMode"] {
                    if old.pointer(&format!("/spec/{field}")) != object.pointer(&format!("/spec/{field}")) {
                        causes.push(cause(&format!("spec.{field}"), "Invalid value: field is immutable"));
                    }
                }
            }
        }
        Builtin::Secret => {
            for (k, v) in object.get("data").and_then(Value::as_object).into_iter().flatten() {
                let ok = v.as_str().is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
                if !ok {
                    causes.push(cause(&format!("data[{k}]"), "Invalid value: must be base64-encoded bytes"));
                }
            }
            if let Some(old) = old
                && old.get("type") != object.get("type")
            {
                causes.push(cause("type", "Invalid value: field is immutable"));
            }
        }
        _ => {}
    }
    if matches!(kind, Builtin::Secret | Builtin::ConfigMap)
        && let Some(old) = old
        && old.get("immutable").and_then(Value::as_bool) == Some(true)
    {
        for field in ["data", "binaryData", "immutable"] {
            if old.get(field) != object.get(field) {
                causes.push(cause(field, "Forbidden: field is immutable when `immutable` is set"));
            }
        }
    }
    causes
}
