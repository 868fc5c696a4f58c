//! Just enough Kubernetes protobuf to accept the bodies kubectl's generators send
//! (`kubectl create namespace|configmap|secret`): the `k8s\0` envelope, `runtime.Unknown`, and
//! Namespace, ConfigMap and Secret with the ObjectMeta fields a client sets. Responses are always
//! JSON, which every Go client accepts.

use base64::Engine;
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("not a Kubernetes protobuf message (missing the k8s\\0 prefix)")]
    Prefix,
    #[error("truncated or malformed protobuf")]
    Malformed,
    #[error("protobuf bodies are accepted for Namespace, ConfigMap and Secret only, not {0}; send JSON")]
    Unsupported(String),
}

#[derive(Debug)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// A message as (field number, value) pairs in wire order.
fn fields(mut data: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtoError> {
    fn varint(data: &mut &[u8]) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = data.split_first().ok_or(ProtoError::Malformed)?;
            *data = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::Malformed)
    }
    let mut out = Vec::new();
    while !data.is_empty() {
        let key = varint(&mut data)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut data)?),
            2 => {
                let len = usize::try_from(varint(&mut data)?).map_err(|_| ProtoError::Malformed)?;
                if len > data.len() {
                    return Err(ProtoError::Malformed);
                }
                let (bytes, rest) = data.split_at(len);
                data = rest;
                Field::Bytes(bytes)
            }
            1 => {
                data = data.get(8..).ok_or(ProtoError::Malformed)?;
                continue;
            }
            5 => {
                data = data.get(4..).ok_or(ProtoError::Malformed)?;
                continue;
            }
            _ => return Err(ProtoError::Malformed),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn string(field: &Field) -> String {
    match field {
        Field::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Field::Varint(_) => String::new(),
    }
}

fn bytes<'a>(field: &Field<'a>) -> &'a [u8] {
    match field {
        Field::Bytes(b) => b,
        Field::Varint(_) => &[],
    }
}

/// `map<string, string|bytes>` entries (key = 1, value = 2); byte values become base64.
fn map_entry(field: &Field, base64_values: bool) -> Result<(String, Value), ProtoError> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (n, f) in fields(bytes(field))? {
        match n {
            1 => key = string(&f),
            2 if base64_values => value = json!(base64::engine::general_purpose::STANDARD.encode(bytes(&f))),
            2 => value = json!(string(&f)),
            _ => {}
        }
    }
    Ok((key, value))
}

fn object_meta(data: &[u8]) -> Result<Value, ProtoError> {
    let mut meta = Map::new();
    for (n, f) in fields(data)? {
        match n {
            // Go writes unset strings as empty ones; the JSON form leaves them out.
            1..=3 if string(&f).is_empty() => {}
            1 => {
                meta.insert("name".into(), json!(string(&f)));
            }
            2 => {
                meta.insert("generateName".into(), json!(string(&f)));
            }
            3 => {
                meta.insert("namespace".into(), json!(string(&f)));
            }
            11 | 12 => {
                let (k, v) = map_entry(&f, false)?;
                let field = if n == 11 { "labels" } else { "annotations" };
                meta.entry(field).or_insert_with(|| json!({}))[k] = v;
            }
            14 => meta
                .entry("finalizers")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("array")
                .push(json!(string(&f))),
            _ => {}
        }
    }
    Ok(Value::Object(meta))
}

/// Decodes a `k8s\0`-prefixed body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let message = body.strip_prefix(b"k8s\0").ok_or(ProtoError::Prefix)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(message)? {
        match n {
            1 => {
                for (m, g) in fields(bytes(&f))? {
                    match m {
                        1 => api_version = string(&g),
                        2 => kind = string(&g),
                        _ => {}
                    }
                }
            }
            2 => raw = bytes(&f),
            _ => {}
        }
    }
    let mut object = json!({"apiVersion": api_version, "kind": kind});
    let body = fields(raw)?;
    for (n, f) in &body {
        match (kind.as_str(), *n) {
            (_, 1) => object["metadata"] = object_meta(bytes(f))?,
            ("Namespace", 2) => {
                let finalizers: Vec<Value> =
                    fields(bytes(f))?.iter().filter(|(m, _)| *m == 1).map(|(_, g)| json!(string(g))).collect();
                object["spec"] = json!({"finalizers": finalizers});
            }
            ("ConfigMap", 2) | ("Secret", 4) => {
                let field = if kind == "ConfigMap" { "data" } else { "stringData" };
                let (k, v) = map_entry(f, false)?;
                object.as_object_mut().expect("object").entry(field).or_insert_with(|| json!({}))[k] = v;
            }
            ("ConfigMap", 3) | ("Secret", 2) => {
                let field = if kind == "ConfigMap" { "binaryData" } else { "data" };
                let (k, v) = map_entry(f, true)?;
                object.as_object_mut().expect("object").entry(field).or_insert_with(|| json!({}))[k] = v;
            }
            ("Secret", 3) if !string(f).is_empty() => object["type"] = json!(string(f)),
            ("ConfigMap", 4) | ("Secret", 5) => {
                object["immutable"] = json!(matches!(f, Field::Varint(v) if *v != 0));
            }
            ("Namespace" | "ConfigMap" | "Secret", _) => {}
            _ => return Err(ProtoError::Unsupported(kind.clone())),
        }
    }
    if !["Namespace", "ConfigMap", "Secret"].contains(&kind.as_str()) {
        return Err(ProtoError::Unsupported(kind));
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let meta =
            [len_field(1, b"settings"), len_field(11, &[len_field(1, b"app"), len_field(2, b"x")].concat())].concat();
        let raw =
            [len_field(1, &meta), len_field(2, &[len_field(1, b"k"), len_field(2, b"v")].concat()), vec![4 << 3, 1]]
                .concat();
        let type_meta = [len_field(1, b"v1"), len_field(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), len_field(1, &type_meta), len_field(2, &raw)].concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "labels": {"app": "x"}},
                "data": {"k": "v"}, "immutable": true})
        );
        assert!(matches!(decode(b"{}"), Err(ProtoError::Prefix)));
    }
}
