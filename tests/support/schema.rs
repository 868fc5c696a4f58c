//! Validation of custom resources against a CRD's `openAPIV3Schema` the way the apiserver does it:
//! null pruning and defaulting, then structural validation (types, required, enums, patterns,
//! lengths, ranges, list types, unknown fields), then the `x-kubernetes-validations` CEL rules
//! (evaluated with `kube-cel`, the engine behind kube's `cel` feature).
//!
//! Used by the schema tests and by the Kubernetes API simulator.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Map, Value};

/// Unknown-field handling: the apiserver prunes unknown fields, or rejects them with
/// `fieldValidation=Strict` (what kubectl uses by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFields {
    Prune,
    Reject,
}

/// The `openAPIV3Schema` of a CRD version.
pub fn version_schema(crd: &CustomResourceDefinition, version: &str) -> Option<Value> {
    let v = crd.spec.versions.iter().find(|v| v.name == version)?;
    let schema = v.schema.as_ref()?.open_api_v3_schema.as_ref()?;
    serde_json::to_value(schema).ok()
}

/// Defaults, prunes and validates `object` (a whole custom resource) against `schema`. Returns the
/// defaulted object, or every error found (`path: message`).
pub fn validate(schema: &Value, object: &Value, unknown: UnknownFields) -> Result<Value, Vec<String>> {
    validate_update(schema, object, None, unknown)
}

/// As [`validate`], with the previous object for CEL transition rules (`oldSelf`).
pub fn validate_update(
    schema: &Value,
    object: &Value,
    old: Option<&Value>,
    unknown: UnknownFields,
) -> Result<Value, Vec<String>> {
    let Value::Object(map) = object else {
        return Err(vec!["<root>: must be a JSON object".into()]);
    };
    // apiVersion, kind and metadata are the apiserver's own; the schema describes the rest.
    let (mut meta, mut rest) = (Map::new(), Map::new());
    for (k, v) in map {
        let target = if ["apiVersion", "kind", "metadata"].contains(&k.as_str()) { &mut meta } else { &mut rest };
        target.insert(k.clone(), v.clone());
    }
    let mut rest = Value::Object(rest);
    prune_nulls_and_default(schema, &mut rest);
    let mut errors = Vec::new();
    check(schema, &rest, "", unknown, &mut errors);
    if unknown == UnknownFields::Prune {
        prune_unknown(schema, &mut rest);
    }
    if let Value::Object(rest) = rest {
        meta.extend(rest);
    }
    let object = Value::Object(meta);
    if errors.is_empty() {
        let cel = kube_cel::Validator::new().validate(schema, &object, old).err();
        for error in cel.iter().flat_map(|e| e.as_slice()) {
            let path = if error.field_path.is_empty() { "<root>".to_string() } else { error.field_path.clone() };
            errors.push(format!("{path}: {} (rule: {})", error.message, error.rule));
        }
    }
    if errors.is_empty() { Ok(object) } else { Err(errors) }
}

/// Validates a whole object against the served (first storage) version of a CRD.
pub fn validate_against_crd(
    crd: &CustomResourceDefinition,
    object: &Value,
    unknown: UnknownFields,
) -> Result<Value, Vec<String>> {
    let version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|av| av.rsplit_once('/').map(|(_, v)| v.to_string()))
        .unwrap_or_default();
    let Some(schema) = version_schema(crd, &version) else {
        return Err(vec![format!("apiVersion: version {version:?} is not served by {}", crd.spec.group)]);
    };
    validate(&schema, object, unknown)
}

/// Paths of the fields of `object` (a whole custom resource) that `schema` does not declare, as
/// strict field validation reports them (`spec.foo`, `spec.items[0].bar`).
pub fn unknown_fields(schema: &Value, object: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if let (Some(map), Some(props)) = (object.as_object(), schema.get("properties").and_then(Value::as_object)) {
        for (key, value) in map {
            if ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
                continue;
            }
            match props.get(key) {
                Some(prop) => collect_unknown(prop, value, key, &mut found),
                None if !preserves_unknown(schema) => found.push(key.clone()),
                None => {}
            }
        }
    }
    found
}

fn collect_unknown(schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    if preserves_unknown(schema) {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, v) in map {
                match (props.and_then(|p| p.get(key)), additional) {
                    (Some(prop), _) | (None, Some(prop)) => collect_unknown(prop, v, &join(path, key), found),
                    (None, None) => found.push(join(path, key)),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    collect_unknown(item_schema, item, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool).unwrap_or(false)
}

fn is_nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool).unwrap_or(false)
}

/// Null values of non-nullable fields are dropped, then missing fields get their defaults
/// (recursively, including inside defaulted values), as structural defaulting does.
fn prune_nulls_and_default(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                map.retain(|k, v| !(v.is_null() && props.get(k).is_some_and(|s| !is_nullable(s))));
                for (key, prop) in props {
                    if !map.contains_key(key)
                        && let Some(default) = prop.get("default")
                    {
                        map.insert(key.clone(), default.clone());
                    }
                }
                for (key, v) in map.iter_mut() {
                    if let Some(prop) = props.get(key) {
                        prune_nulls_and_default(prop, v);
                    }
                }
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for v in map.values_mut() {
                    prune_nulls_and_default(additional, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune_nulls_and_default(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

fn prune_unknown(schema: &Value, value: &mut Value) {
    if preserves_unknown(schema) {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                map.retain(|k, _| props.contains_key(k));
                for (k, v) in map.iter_mut() {
                    prune_unknown(&props[k], v);
                }
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for v in map.values_mut() {
                    prune_unknown(additional, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune_unknown(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(schema: &Value, value: &Value, path: &str, unknown: UnknownFields, errors: &mut Vec<String>) {
    let shown = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if !is_nullable(schema) {
            errors.push(format!("{shown}: must not be null"));
        }
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool).unwrap_or(false);
    if int_or_string {
        if !matches!(type_name(value), "integer" | "string") {
            errors.push(format!("{shown}: must be an integer or a string, got {}", type_name(value)));
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == expected || (expected == "number" && actual == "integer");
        if !ok {
            errors.push(format!("{shown}: must be of type {expected}, got {actual}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        errors.push(format!("{shown}: unsupported value {value}; supported values: {}", list.join(", ")));
    }
    match value {
        Value::String(s) => check_string(schema, s, shown, errors),
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or_default(), shown, errors),
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                errors.push(format!("{shown}: must have at least {min} items"));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                errors.push(format!("{shown}: must have at most {max} items"));
            }
            check_list_type(schema, items, shown, errors);
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), unknown, errors);
                }
            }
        }
        Value::Object(map) => check_object(schema, map, path, unknown, errors),
        _ => {}
    }
}

fn check_string(schema: &Value, s: &str, shown: &str, errors: &mut Vec<String>) {
    let chars = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        errors.push(format!("{shown}: must be at least {min} characters long"));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        errors.push(format!("{shown}: may not be longer than {max} characters"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match compiled(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => errors.push(format!("{shown}: {s:?} does not match pattern {pattern:?}")),
            Err(e) => errors.push(format!("{shown}: schema pattern {pattern:?} does not compile: {e}")),
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time")
        && s.parse::<k8s_openapi::jiff::Timestamp>().is_err()
    {
        errors.push(format!("{shown}: {s:?} is not an RFC 3339 date-time"));
    }
}

/// Schema patterns compiled once per process: compiling dominates validation otherwise, and the
/// API simulator validates on every write. Shared through `Arc`, as a cloned `Regex` would start
/// with a cold matching cache every time.
fn compiled(pattern: &str) -> Result<std::sync::Arc<regex::Regex>, String> {
    type Cache = std::collections::HashMap<String, Result<std::sync::Arc<regex::Regex>, String>>;
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Cache>> = std::sync::OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).map(std::sync::Arc::new).map_err(|e| e.to_string()))
        .clone()
}

fn check_number(schema: &Value, n: f64, shown: &str, errors: &mut Vec<String>) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        errors.push(format!("{shown}: must be greater than or equal to {min}"));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        errors.push(format!("{shown}: must be less than or equal to {max}"));
    }
}

fn check_list_type(schema: &Value, items: &[Value], shown: &str, errors: &mut Vec<String>) {
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errors.push(format!("{shown}[{i}]: duplicate value {item}"));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |item: &Value| -> Vec<Value> {
                keys.iter().map(|k| item.get(*k).cloned().unwrap_or(Value::Null)).collect()
            };
            for (i, item) in items.iter().enumerate() {
                let key = key_of(item);
                if items[..i].iter().any(|earlier| key_of(earlier) == key) {
                    errors.push(format!("{shown}[{i}]: duplicate entry for key {key:?}"));
                }
            }
        }
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    unknown: UnknownFields,
    errors: &mut Vec<String>,
) {
    let shown = if path.is_empty() { "<root>" } else { path };
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                errors.push(format!("{}: Required value", join(path, key)));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, v) in map {
        let child = join(path, key);
        match (props.and_then(|p| p.get(key)), additional) {
            (Some(prop), _) => check(prop, v, &child, unknown, errors),
            (None, Some(additional)) => check(additional, v, &child, unknown, errors),
            (None, None) => {
                if !preserves_unknown(schema) && unknown == UnknownFields::Reject {
                    errors.push(format!("{shown}: unknown field \"{key}\""));
                }
            }
        }
    }
}

/// Structural-schema problems of a CRD version schema (every node typed, no unresolved refs).
pub fn structural_problems(schema: &Value, path: &str, problems: &mut Vec<String>) {
    let typed =
        schema.get("type").is_some() || schema.get("x-kubernetes-int-or-string").is_some() || preserves_unknown(schema);
    if !typed {
        problems.push(format!("{path}: no type"));
    }
    for forbidden in ["$ref", "anyOf", "oneOf", "allOf", "const"] {
        if schema.get(forbidden).is_some() {
            problems.push(format!("{path}: uses {forbidden}"));
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural_problems(v, &join(path, k), problems);
        }
    }
    if let Some(items) = schema.get("items") {
        structural_problems(items, &format!("{path}[]"), problems);
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        structural_problems(additional, &format!("{path}{{}}"), problems);
    }
}
