//! Response representations: full objects (for the requested version), `PartialObjectMetadata`
//! (kube's metadata watchers), and `meta.k8s.io/v1` Tables with CRD printer columns (kubectl get).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::resources::ResourceType;
use super::store::Stored;

/// What the client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    Full,
    Metadata,
    Table,
}

/// Picks the first supported media type of an `Accept` header (JSON only; protobuf is not
/// served, and Go clients always list JSON as a fallback).
pub fn negotiate(accept: &str) -> Option<Repr> {
    if accept.trim().is_empty() {
        return Some(Repr::Full);
    }
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let base = parts.next().unwrap_or_default();
        if !matches!(base, "application/json" | "*/*" | "application/*") {
            continue;
        }
        let as_ = parts.find_map(|p| p.strip_prefix("as=")).unwrap_or_default();
        match as_ {
            "" => return Some(Repr::Full),
            "Table" => return Some(Repr::Table),
            "PartialObjectMetadata" | "PartialObjectMetadataList" => return Some(Repr::Metadata),
            _ => continue,
        }
    }
    None
}

/// An object as JSON bytes for the requested version and representation. The stored bytes are
/// reused whenever nothing has to change.
pub fn object_bytes(stored: &Stored, t: &ResourceType, version: &str, repr: Repr) -> Bytes {
    match repr {
        Repr::Metadata => Bytes::from(serde_json::to_vec(&partial_metadata(&stored.value)).expect("JSON")),
        _ if version == t.storage_version() => stored.json.clone(),
        _ => {
            let mut value = stored.value.clone();
            value["apiVersion"] = json!(t.api_version(version));
            Bytes::from(serde_json::to_vec(&value).expect("JSON"))
        }
    }
}

pub fn object_value(value: &Value, t: &ResourceType, version: &str, repr: Repr) -> Value {
    match repr {
        Repr::Metadata => partial_metadata(value),
        _ => {
            let mut value = value.clone();
            if value.get("kind").and_then(Value::as_str) == Some(&t.kind) {
                value["apiVersion"] = json!(t.api_version(version));
            }
            value
        }
    }
}

pub fn partial_metadata(value: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": value.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// A list response, written by concatenating stored object bytes.
pub fn list_bytes(
    t: &ResourceType,
    version: &str,
    repr: Repr,
    items: &[Arc<Stored>],
    rv: u64,
    continue_token: Option<&str>,
    remaining: Option<usize>,
) -> Bytes {
    let (kind, api_version) = match repr {
        Repr::Metadata => ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1".to_string()),
        _ => (t.list_kind.clone(), t.api_version(version)),
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    let head = json!({"kind": kind, "apiVersion": api_version, "metadata": metadata});
    let head = serde_json::to_vec(&head).expect("JSON");
    let mut out = Vec::with_capacity(head.len() + items.iter().map(|s| s.json.len() + 1).sum::<usize>() + 16);
    out.extend_from_slice(&head[..head.len() - 1]);
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&object_bytes(item, t, version, repr));
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// A `meta.k8s.io/v1` Table: Name, the CRD's printer columns (or Age), one row per object.
pub fn table(
    t: &ResourceType,
    version: &str,
    items: &[Arc<Stored>],
    rv: u64,
    continue_token: Option<&str>,
    now: k8s_openapi::jiff::Timestamp,
) -> Value {
    let crd_columns = t.crd.as_ref().and_then(|c| c.columns.get(version)).filter(|c| !c.is_empty());
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    let age_path = ".metadata.creationTimestamp";
    let columns: Vec<(String, String)> = match crd_columns {
        Some(columns) => columns
            .iter()
            .map(|c| {
                definitions.push(json!({
                    "name": c.name, "type": c.type_, "format": c.format,
                    "description": c.description, "priority": c.priority,
                }));
                (c.json_path.clone(), c.type_.clone())
            })
            .collect(),
        None => {
            definitions.push(json!({
                "name": "Age", "type": "date", "format": "", "priority": 0,
                "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
            }));
            vec![(age_path.to_string(), "date".to_string())]
        }
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|stored| {
            let mut cells = vec![json!(stored.meta_str("name"))];
            for (path, type_) in &columns {
                let found = json_path(&stored.value, path);
                let cell = match found.as_slice() {
                    [] => Value::Null,
                    [one] if type_ == "date" => json!(age(one.as_str().unwrap_or_default(), now)),
                    [one] => (*one).clone(),
                    many => json!(many.iter().map(|v| plain(v)).collect::<Vec<_>>().join(",")),
                };
                cells.push(cell);
            }
            json!({"cells": cells, "object": partial_metadata(&stored.value)})
        })
        .collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Kubernetes' human duration ("45s", "3m20s", "5h", "12d").
fn age(timestamp: &str, now: k8s_openapi::jiff::Timestamp) -> String {
    let Ok(then) = timestamp.parse::<k8s_openapi::jiff::Timestamp>() else { return "<invalid>".into() };
    let seconds = now.as_second().saturating_sub(then.as_second()).max(0);
    let (m, h, d) = (seconds / 60, seconds / 3600, seconds / 86400);
    match () {
        _ if seconds < 120 => format!("{seconds}s"),
        _ if m < 10 && seconds % 60 != 0 => format!("{m}m{}s", seconds % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 != 0 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 && h % 24 != 0 => format!("{d}d{}h", h % 24),
        _ if d < 365 * 2 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter(Vec<String>, bool, String),
}

fn parse_path(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse() {
                steps.push(Step::Index(i));
            } else if let Some(expr) = inner.strip_prefix("?(@.").and_then(|e| e.strip_suffix(')')) {
                let (field, equal, value) = match expr.split_once("!=") {
                    Some((f, v)) => (f, false, v),
                    None => match expr.split_once("==") {
                        Some((f, v)) => (f, true, v),
                        None => (expr, true, ""),
                    },
                };
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
                steps.push(Step::Filter(field.trim().split('.').map(String::from).collect(), equal, value));
            }
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Field(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    steps
}

/// The subset of kubectl JSONPath CRD printer columns use: fields, `[n]`, `[*]`, `[?(@.a=="x")]`.
pub fn json_path<'v>(value: &'v Value, path: &str) -> Vec<&'v Value> {
    let mut current = vec![value];
    for step in parse_path(path) {
        let mut next = Vec::new();
        for v in current {
            match &step {
                Step::Field(f) => next.extend(v.get(f)),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => next.extend(v.as_array().into_iter().flatten()),
                Step::Filter(field, equal, expected) => {
                    for item in v.as_array().into_iter().flatten() {
                        let mut found = Some(item);
                        for f in field {
                            found = found.and_then(|x| x.get(f));
                        }
                        if found.is_some_and(|x| (plain(x) == *expected) == *equal) {
                            next.push(item);
                        }
                    }
                }
            }
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths() {
        let obj = json!({"status": {"conditions": [
            {"type": "Stalled", "status": "False"}, {"type": "Ready", "status": "True", "reason": "Done"}
        ]}, "spec": {"items": [1, 2]}});
        assert_eq!(json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"), vec![&json!("True")]);
        assert_eq!(json_path(&obj, ".spec.items[1]"), vec![&json!(2)]);
        assert_eq!(json_path(&obj, ".spec.items[*]").len(), 2);
        assert!(json_path(&obj, ".status.missing").is_empty());
    }

    #[test]
    fn accept_negotiation() {
        let kubectl_get = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(kubectl_get), Some(Repr::Table));
        assert_eq!(negotiate("application/json"), Some(Repr::Full));
        assert_eq!(negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"), Some(Repr::Metadata));
        assert_eq!(negotiate("application/vnd.kubernetes.protobuf"), None);
    }
}
