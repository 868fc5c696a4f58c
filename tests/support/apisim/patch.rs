//! The non-apply patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic
//! merge patch as `kubectl apply` sends it for built-in kinds (merge keys, `$patch`,
//! `$retainKeys`, `$setElementOrder/`, `$deleteFromPrimitiveList/`).

use serde_json::{Map, Value};

use super::shape::{Shape, SmpList};

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json ({0})"
    )]
    Decode(String),
    #[error("{0}")]
    Apply(String),
}

pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies a JSON patch to `target` (a copy: a failing operation leaves it half-patched).
pub fn json_patch(target: &mut Value, body: &[u8]) -> Result<(), PatchError> {
    let patch: json_patch::Patch = serde_json::from_slice(body).map_err(|e| PatchError::Decode(e.to_string()))?;
    for operation in &patch.0 {
        // The apiserver's JSON patch library treats a missing path as null in `test`, which
        // kube-runtime's finalizer helper relies on (`test /metadata/finalizers == null`).
        if let json_patch::PatchOperation::Test(test) = operation
            && test.value.is_null()
            && target.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(target, std::slice::from_ref(operation)).map_err(|e| PatchError::Apply(e.to_string()))?;
    }
    Ok(())
}

pub fn strategic_merge_patch(target: &mut Value, patch: &Value, shape: &Shape) -> Result<(), PatchError> {
    let (Value::Object(t), Value::Object(p)) = (&mut *target, patch) else {
        return Err(PatchError::Apply("a strategic merge patch must be a JSON object".into()));
    };
    smp_object(t, p, shape, &mut Vec::new());
    Ok(())
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

/// A patch value with its directives removed, for places where it is set as a whole.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .filter(|(_, v)| directive(v) != Some("delete"))
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().filter(|i| directive(i).is_none()).map(clean).collect()),
        other => other.clone(),
    }
}

fn smp_object(target: &mut Map<String, Value>, patch: &Map<String, Value>, shape: &Shape, path: &mut Vec<String>) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        if let Value::Object(cleaned) = clean(&Value::Object(patch.clone())) {
            *target = cleaned;
        }
        return;
    }
    let mut orders = Vec::new();
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), value));
        } else if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) = (target.get_mut(field), value.as_array()) {
                items.retain(|i| !remove.contains(i));
            }
        } else if key.starts_with('$') {
            continue;
        } else if value.is_null() || directive(value) == Some("delete") {
            target.remove(key);
        } else {
            path.push(key.clone());
            match (target.get_mut(key), value) {
                (Some(Value::Object(t)), Value::Object(p)) => smp_object(t, p, shape, path),
                (Some(Value::Array(t)), Value::Array(p)) => smp_list(t, p, &shape.smp_list(path), shape, path),
                _ => {
                    target.insert(key.clone(), clean(value));
                }
            }
            path.pop();
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        target.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    for (field, order) in orders {
        path.push(field.clone());
        let key = match shape.smp_list(path) {
            SmpList::MergeKey(key) => Some(key),
            _ => None,
        };
        path.pop();
        if let (Some(Value::Array(items)), Some(order)) = (target.get_mut(&field), order.as_array()) {
            reorder(items, order, key.as_deref());
        }
    }
}

fn smp_list(target: &mut Vec<Value>, patch: &[Value], strategy: &SmpList, shape: &Shape, path: &mut Vec<String>) {
    let replace = patch.iter().any(|i| directive(i) == Some("replace"));
    match strategy {
        _ if replace => *target = patch.iter().filter(|i| directive(i).is_none()).map(clean).collect(),
        SmpList::Replace => *target = patch.iter().map(clean).collect(),
        SmpList::MergePrimitives => {
            for item in patch {
                if !target.contains(item) {
                    target.push(item.clone());
                }
            }
        }
        SmpList::MergeKey(key) => {
            for item in patch {
                let Some(id) = item.get(key) else {
                    target.push(clean(item));
                    continue;
                };
                let position = target.iter().position(|t| t.get(key) == Some(id));
                match (position, directive(item)) {
                    (Some(i), Some("delete")) => {
                        target.remove(i);
                    }
                    (None, Some("delete")) => {}
                    (Some(i), _) => {
                        if let (Value::Object(t), Value::Object(p)) = (&mut target[i], item) {
                            smp_object(t, p, shape, path);
                        }
                    }
                    (None, _) => target.push(clean(item)),
                }
            }
        }
    }
}

/// `$setElementOrder`: the listed items first in the given order, the others after them.
fn reorder(items: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let id = |v: &Value| match key {
        Some(k) => v.get(k).cloned(),
        None => Some(v.clone()),
    };
    let mut rest = std::mem::take(items);
    for wanted in order {
        let wanted = id(wanted);
        if let Some(i) = rest.iter().position(|v| id(v) == wanted) {
            items.push(rest.remove(i));
        }
    }
    items.extend(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn smp_merges_containers_by_name_and_honours_directives() {
        let mut job = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}}}, "metadata": {"finalizers": ["f1"], "labels": {"keep": "1", "drop": "1"}}});
        let patch = json!({
            "metadata": {"finalizers": ["f2"], "labels": {"drop": null}, "$deleteFromPrimitiveList/finalizers": ["f1"]},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}, {"name": "c", "$patch": "delete"}]
            }}}
        });
        strategic_merge_patch(&mut job, &patch, &Shape::builtin()).unwrap();
        assert_eq!(job["metadata"], json!({"finalizers": ["f2"], "labels": {"keep": "1"}}));
        let containers = &job["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["name"], "b");
        assert_eq!(containers[1]["image"], "a:2");
        assert_eq!(containers[1]["env"], json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]));
    }
}
