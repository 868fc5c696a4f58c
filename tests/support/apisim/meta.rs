//! ObjectMeta rules shared by every kind: name, label, annotation, finalizer and owner reference
//! validation, and the few metadata helpers the verbs use.

use serde_json::{Map, Value};

use super::error::Cause;

pub fn meta(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

pub fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"].as_object_mut().expect("metadata is an object")
}

pub fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    meta(object).and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or_default()
}

pub fn finalizers(object: &Value) -> Vec<String> {
    meta(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

pub fn set_finalizers(object: &mut Value, finalizers: &[String]) {
    let meta = meta_mut(object);
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), finalizers.iter().map(|f| Value::String(f.clone())).collect());
    }
}

pub fn owner_references(object: &Value) -> Vec<Value> {
    meta(object).and_then(|m| m.get("ownerReferences")).and_then(Value::as_array).cloned().unwrap_or_default()
}

pub fn is_deleting(object: &Value) -> bool {
    meta(object).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|t| !t.is_null()))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// `[prefix/]name` as labels, annotations and finalizers use.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name(s) && !s.contains('/')
}

/// Validates the user-settable parts of metadata (`namespace_name`: DNS label rules for the
/// names of Namespaces, DNS subdomain for everything else).
pub fn validate(object: &Value, dns_label_name: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut push = |field: &str, message: String| causes.push(Cause { field: field.into(), message });
    let Some(meta) = meta(object) else {
        push("metadata", "Required value".into());
        return causes;
    };
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    let valid = if dns_label_name { is_dns_label(name) } else { is_dns_subdomain(name) };
    if !valid {
        let rule = if dns_label_name {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        push("metadata.name", format!("Invalid value: {name:?}: {rule}"));
    }
    for field in ["labels", "annotations"] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    if !is_qualified_name(k) {
                        push(
                            &format!("metadata.{field}"),
                            format!(
                                "Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                            ),
                        );
                    }
                    match v.as_str() {
                        Some(v) if field == "annotations" || is_label_value(v) => {}
                        Some(v) => push(
                            "metadata.labels",
                            format!(
                                "Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                            ),
                        ),
                        None => push(&format!("metadata.{field}.{k}"), "must be a string".into()),
                    }
                }
            }
            Some(_) => push(&format!("metadata.{field}"), "must be a map of strings".into()),
        }
    }
    for (i, finalizer) in meta.get("finalizers").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if !finalizer.as_str().is_some_and(is_qualified_name) {
            push(&format!("metadata.finalizers[{i}]"), format!("Invalid value: {finalizer}: must be a qualified name"));
        }
    }
    let refs = meta.get("ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, r) in refs.iter().enumerate() {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if r.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                push(&format!("metadata.ownerReferences[{i}].{field}"), "Required value".into());
            }
        }
    }
    if refs.iter().filter(|r| r.get("controller").and_then(Value::as_bool) == Some(true)).count() > 1 {
        push("metadata.ownerReferences", "Invalid value: only one reference can have Controller set to true".into());
    }
    causes
}

/// Random suffix for `generateName`, from the apiserver's alphabet (no vowels, no confusables).
pub fn name_suffix(seed: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seed >> 7);
    (0..5)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// RFC 3339 with second precision, as metav1.Time is written.
pub fn rfc3339(now: k8s_openapi::jiff::Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
