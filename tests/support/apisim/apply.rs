//! Server-side apply and field ownership (`metadata.managedFields`, FieldsV1).
//!
//! Every write records which manager owns which fields. An apply merges the applied configuration
//! into the live object (maps by key, list-maps by their keys, sets by value, atomic lists and
//! scalars replaced), reports conflicts with other managers' fields unless forced, and removes the
//! fields this manager applied before but no longer applies and nobody else owns. That last rule
//! is what lets a controller drop a condition by leaving it out of its applied status.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::shape::{ListKind, Shape};

/// A field path, one encoded FieldsV1 element per step (`f:name`, `k:{"type":"Ready"}`, `v:"x"`).
pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write may touch (what the status subresource separates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole object.
    All,
    /// Everything but `status` (main resource of a type with a status subresource).
    NoStatus,
    /// Only `status`.
    Status,
}

impl Scope {
    fn keeps(self, path: &FieldPath) -> bool {
        let is_status = path.first().is_some_and(|p| p == "f:status");
        match self {
            Scope::All => true,
            Scope::NoStatus => !is_status,
            Scope::Status => is_status,
        }
    }

    pub fn subresource(self) -> &'static str {
        if self == Scope::Status { "status" } else { "" }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("conflicts with other field managers")]
    Conflicts(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

/// Metadata fields that are owned like data; the rest of metadata is the server's.
const OWNED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

/// The fields an object (or an applied configuration) sets.
pub fn fields_of(object: &Value, shape: &Shape) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = object.as_object() else { return out };
    for (key, value) in map {
        if key == "apiVersion" || key == "kind" {
            continue;
        }
        let mut path = vec![format!("f:{key}")];
        let mut names = vec![key.clone()];
        if key == "metadata" {
            for field in OWNED_METADATA {
                if let Some(v) = value.get(field) {
                    path.push(format!("f:{field}"));
                    names.push(field.to_string());
                    walk(v, shape, &mut names, &mut path, &mut out);
                    path.pop();
                    names.pop();
                }
            }
        } else {
            walk(value, shape, &mut names, &mut path, &mut out);
        }
    }
    out
}

fn key_element(item: &Value, keys: &[String]) -> String {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let parts: Vec<String> = sorted
        .iter()
        .map(|k| format!("{}:{}", Value::String((*k).clone()), item.get(k.as_str()).unwrap_or(&Value::Null)))
        .collect();
    format!("k:{{{}}}", parts.join(","))
}

fn walk(value: &Value, shape: &Shape, names: &mut Vec<String>, path: &mut FieldPath, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() && !shape.atomic_map(names) => {
            for (k, v) in map {
                path.push(format!("f:{k}"));
                names.push(k.clone());
                walk(v, shape, names, path, out);
                names.pop();
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match shape.list(names) {
            ListKind::Map(keys) => {
                for item in items {
                    path.push(key_element(item, &keys));
                    out.insert(path.clone());
                    if let Value::Object(fields) = item {
                        for (k, v) in fields {
                            path.push(format!("f:{k}"));
                            names.push(k.clone());
                            walk(v, shape, names, path, out);
                            names.pop();
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            ListKind::Set => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListKind::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Whether an item of a list matches an encoded `k:` or `v:` element.
fn item_matches(item: &Value, element: &str) -> bool {
    if let Some(value) = element.strip_prefix("v:") {
        return serde_json::from_str::<Value>(value).is_ok_and(|v| &v == item);
    }
    if let Some(key) = element.strip_prefix("k:") {
        return serde_json::from_str::<Map<String, Value>>(key)
            .is_ok_and(|key| key.iter().all(|(k, v)| item.get(k).unwrap_or(&Value::Null) == v));
    }
    false
}

fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = value;
    for element in path {
        node = match element.strip_prefix("f:") {
            Some(field) => node.get(field)?,
            None => node.as_array()?.iter().find(|item| item_matches(item, element))?,
        };
    }
    Some(node)
}

/// Removes the field at `path`; containers it leaves empty are removed too (below top level).
fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let Some(parent) = get_path_mut(value, parents) else { return };
    match (last.strip_prefix("f:"), parent) {
        (Some(field), Value::Object(map)) => {
            map.remove(field);
        }
        (None, Value::Array(items)) => items.retain(|item| !item_matches(item, last)),
        _ => return,
    }
    if parents.len() > 1 && get_path(value, parents).is_some_and(is_empty_container) {
        remove_path(value, parents);
    }
}

fn is_empty_container(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty()) || matches!(v, Value::Array(a) if a.is_empty())
}

fn get_path_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut node = value;
    for element in path {
        node = match element.strip_prefix("f:") {
            Some(field) => node.get_mut(field)?,
            None => node.as_array_mut()?.iter_mut().find(|item| item_matches(item, element))?,
        };
    }
    Some(node)
}

/// Merges an applied configuration into a live object.
fn merge(live: &mut Value, config: &Value, shape: &Shape, names: &mut Vec<String>) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !shape.atomic_map(names) => {
            for (k, v) in c {
                names.push(k.clone());
                match l.get_mut(k) {
                    Some(existing) => merge(existing, v, shape, names),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
                names.pop();
            }
        }
        (Value::Array(l), Value::Array(c)) => match shape.list(names) {
            ListKind::Map(keys) => {
                for item in c {
                    let element = key_element(item, &keys);
                    match l.iter_mut().find(|existing| item_matches(existing, &element)) {
                        Some(existing) => merge(existing, item, shape, names),
                        None => l.push(item.clone()),
                    }
                }
            }
            ListKind::Set => {
                for item in c {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            ListKind::Atomic => *l = c.clone(),
        },
        (live, config) => *live = config.clone(),
    }
}

fn parse_entries(object: &Value) -> Vec<Entry> {
    let Some(list) = object.pointer("/metadata/managedFields").and_then(Value::as_array) else { return vec![] };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let mut fields = FieldSet::new();
            if let Some(f) = e.get("fieldsV1") {
                decode(f, &mut Vec::new(), &mut fields);
            }
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: s("subresource"),
                fields,
            }
        })
        .collect()
}

fn decode(node: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Some(map) = node.as_object() else { return };
    for (k, child) in map {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        path.push(k.clone());
        if child.as_object().is_some_and(Map::is_empty) {
            out.insert(path.clone());
        } else {
            decode(child, path, out);
        }
        path.pop();
    }
}

/// FieldsV1: a trie of path elements; `"."` marks a node that is itself owned and has children.
pub fn encode(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for element in path {
            let child = node.entry(element.clone()).or_insert_with(|| json!({}));
            node = child.as_object_mut().expect("trie nodes are objects");
        }
    }
    // A node that is a member and has children gets "." (members without children stay `{}`).
    fn mark(node: &mut Map<String, Value>, path: &mut FieldPath, fields: &FieldSet) {
        for (k, child) in node.iter_mut() {
            path.push(k.clone());
            let child = child.as_object_mut().expect("trie nodes are objects");
            if !child.is_empty() {
                mark(child, path, fields);
                if fields.contains(path) {
                    child.insert(".".into(), json!({}));
                }
            }
            path.pop();
        }
    }
    mark(&mut root, &mut Vec::new(), fields);
    Value::Object(root)
}

fn store_entries(object: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Who is applying, and how.
pub struct Applier<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub scope: Scope,
    pub api_version: &'a str,
    pub now: &'a str,
}

/// Server-side apply of `config` onto `live` (an object carrying the current managedFields, or a
/// skeleton for a create). Returns the merged object with updated managedFields.
pub fn apply(live: &Value, config: &Value, shape: &Shape, who: &Applier) -> Result<Value, ApplyError> {
    let mut entries = parse_entries(live);
    let applied: FieldSet = fields_of(config, shape).into_iter().filter(|p| who.scope.keeps(p)).collect();
    let mine = |e: &Entry| e.is(who.manager, "Apply", who.scope.subresource());
    let mut conflicts = Vec::new();
    for entry in entries.iter_mut().filter(|e| !mine(e)) {
        let clashing: Vec<FieldPath> = entry
            .fields
            .intersection(&applied)
            .filter(|p| p.last().is_some_and(|l| l.starts_with("f:")))
            .filter(|p| get_path(live, p) != get_path(config, p))
            .cloned()
            .collect();
        for path in clashing {
            if who.force {
                entry.fields.remove(&path);
            } else {
                conflicts.push(format!("conflict with {:?}: .{}", entry.manager, render_path(&path)));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    let previous = entries.iter().find(|e| mine(e)).map(|e| e.fields.clone()).unwrap_or_default();
    let others: FieldSet = entries.iter().filter(|e| !mine(e)).flat_map(|e| e.fields.iter().cloned()).collect();
    let mut object = live.clone();
    // Parents sort before their children: a removed list item takes its fields with it (the
    // item is found by its key fields, so those must not be removed first).
    for path in previous.difference(&applied).filter(|p| !others.contains(*p)) {
        remove_path(&mut object, path);
    }
    let mut config = config.clone();
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    merge(&mut object, &config, shape, &mut Vec::new());
    match entries.iter_mut().find(|e| mine(e)) {
        Some(entry) if entry.fields == applied => {}
        Some(entry) => {
            entry.fields = applied;
            entry.time = who.now.to_string();
            entry.api_version = who.api_version.to_string();
        }
        None => entries.push(Entry {
            manager: who.manager.to_string(),
            operation: "Apply".into(),
            api_version: who.api_version.to_string(),
            time: who.now.to_string(),
            subresource: who.scope.subresource().to_string(),
            fields: applied,
        }),
    }
    store_entries(&mut object, entries);
    Ok(object)
}

/// Records a non-apply write (create, update, patch): the writer takes the fields it changed,
/// everybody loses the fields that no longer exist.
pub fn record_update(old: Option<&Value>, new: &mut Value, shape: &Shape, who: &Applier) {
    let mut entries = old.map(parse_entries).unwrap_or_default();
    let before = old.map(|o| fields_of(o, shape)).unwrap_or_default();
    let after = fields_of(new, shape);
    let changed: FieldSet = after
        .iter()
        .filter(|p| !before.contains(*p) || old.and_then(|o| get_path(o, p)) != get_path(new, p))
        .filter(|p| who.scope.keeps(p))
        .cloned()
        .collect();
    let removed: FieldSet = before.difference(&after).cloned().collect();
    for entry in entries.iter_mut() {
        entry.fields.retain(|p| !removed.contains(p));
        if !entry.is(who.manager, "Update", who.scope.subresource()) {
            entry.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.is(who.manager, "Update", who.scope.subresource())) {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = who.now.to_string();
                entry.api_version = who.api_version.to_string();
            }
            None => entries.push(Entry {
                manager: who.manager.to_string(),
                operation: "Update".into(),
                api_version: who.api_version.to_string(),
                time: who.now.to_string(),
                subresource: who.scope.subresource().to_string(),
                fields: changed,
            }),
        }
    }
    store_entries(new, entries);
}

/// `.status.conditions[type="Ready"].status`-style rendering for conflict messages.
fn render_path(path: &FieldPath) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(f) = element.strip_prefix("f:") {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(f);
        } else if let Some(k) = element.strip_prefix("k:") {
            out.push_str(&format!("[{k}]"));
        } else if let Some(v) = element.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}},
            "status": {"type": "object", "properties": {"conditions": {
                "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}
            }}}
        }})
    }

    fn who<'a>(manager: &'a str, force: bool) -> Applier<'a> {
        Applier { manager, force, scope: Scope::All, api_version: "x/v1", now: "2025-01-01T00:00:00Z" }
    }

    #[test]
    fn apply_removes_what_the_manager_stops_applying_and_keeps_others_fields() {
        let schema = schema();
        let shape = Shape::custom(&schema);
        let live = json!({"metadata": {"name": "x"}});
        let first = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Stalled", "status": "True"}]}});
        let obj = apply(&live, &first, &shape, &who("ctl", true)).unwrap();
        let mut obj2 = obj.clone();
        obj2["spec"] = json!({"b": "other"});
        record_update(Some(&obj), &mut obj2, &shape, &who("kubectl", false));
        let second = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let obj3 = apply(&obj2, &second, &shape, &who("ctl", true)).unwrap();
        assert_eq!(obj3["status"]["conditions"], json!([{"type": "Ready", "status": "False"}]));
        assert_eq!(obj3["spec"]["b"], "other");
        // Applying the same again changes nothing, not even managedFields timestamps.
        let obj4 = apply(&obj3, &second, &shape, &who("ctl", true)).unwrap();
        assert_eq!(obj3, obj4);
    }

    #[test]
    fn apply_conflicts_without_force() {
        let schema = schema();
        let shape = Shape::custom(&schema);
        let obj = apply(&json!({"metadata": {}}), &json!({"spec": {"a": "1"}}), &shape, &who("one", false)).unwrap();
        let err = apply(&obj, &json!({"spec": {"a": "2"}}), &shape, &who("two", false)).unwrap_err();
        let ApplyError::Conflicts(c) = err;
        assert_eq!(c, vec!["conflict with \"one\": .spec.a".to_string()]);
        // Same value: shared ownership, no conflict.
        apply(&obj, &json!({"spec": {"a": "1"}}), &shape, &who("two", false)).unwrap();
        let forced = apply(&obj, &json!({"spec": {"a": "2"}}), &shape, &who("two", true)).unwrap();
        assert_eq!(forced["spec"]["a"], "2");
    }

    #[test]
    fn fields_v1_round_trip() {
        let schema = schema();
        let shape = Shape::custom(&schema);
        let obj = json!({"metadata": {"labels": {"a": "b"}, "finalizers": ["x"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let fields = fields_of(&obj, &shape);
        let encoded = encode(&fields);
        assert_eq!(
            encoded,
            json!({"f:metadata": {"f:labels": {"f:a": {}}, "f:finalizers": {"v:\"x\"": {}}},
                "f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
        );
        let mut decoded = FieldSet::new();
        decode(&encoded, &mut Vec::new(), &mut decoded);
        assert_eq!(decoded, fields);
    }
}
