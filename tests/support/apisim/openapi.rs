//! The smallest OpenAPI v3 that makes kubectl behave as against a real server.
//!
//! kubectl (1.27+) decides per kind whether the server validates fields itself
//! (`fieldValidation=Strict`) by looking, in `/openapi/v3/<group-version>`, for a PATCH operation
//! of that kind that lists a `fieldValidation` query parameter; without it kubectl falls back to
//! client-side validation against `/openapi/v2`, which would need full schemas. So each served
//! group version gets a document with one PATCH operation per kind carrying that parameter and
//! the `x-kubernetes-group-version-kind` extension, plus the CRD schemas (for `kubectl explain`;
//! built-in kinds have none). The operations have no
//! request body, which tells `kubectl apply` that the document offers no strategic-merge schema:
//! it then uses its compiled-in types for built-in kinds (strategic merge patch) and JSON merge
//! patch for custom resources, exactly as with a real server. `/openapi/v2` answers 404.

use std::collections::BTreeMap;
use std::hash::Hasher;

use serde_json::{Value, json};

use super::resources::ResourceType;

/// `api/v1`, `apis/batch/v1`: the keys of the `/openapi/v3` index.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn group_versions<'a>(
    types: impl Iterator<Item = &'a ResourceType>,
) -> BTreeMap<String, Vec<(&'a ResourceType, String)>> {
    let mut out: BTreeMap<String, Vec<(&ResourceType, String)>> = BTreeMap::new();
    for t in types {
        for v in &t.versions {
            out.entry(gv_path(&t.group, v)).or_default().push((t, v.clone()));
        }
    }
    out
}

/// Stable within a process for the same content, different when the kinds of a group version
/// change, so kubectl's cache keyed by this hash is never stale.
fn content_hash(doc: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(doc.to_string().as_bytes());
    format!("{:016X}", hasher.finish())
}

/// `/openapi/v3`
pub fn index<'a>(types: impl Iterator<Item = &'a ResourceType> + Clone) -> Value {
    let mut paths = serde_json::Map::new();
    for (path, kinds) in group_versions(types) {
        let doc = document_for(&kinds);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", content_hash(&doc))}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api/v1 | apis/group/version>`
pub fn document<'a>(types: impl Iterator<Item = &'a ResourceType>, path: &str) -> Option<Value> {
    let groups = group_versions(types);
    groups.get(path).map(|kinds| document_for(kinds))
}

fn document_for(kinds: &[(&ResourceType, String)]) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for (t, version) in kinds {
        let prefix =
            if t.group.is_empty() { format!("/api/{version}") } else { format!("/apis/{}/{version}", t.group) };
        let item = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{prefix}/{}/{{name}}", t.plural)
        };
        paths.insert(
            item,
            json!({"patch": {
                "operationId": format!("patch{}", t.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": t.group, "version": version, "kind": t.kind},
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
                ],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
        // CRD schemas are published so `kubectl explain` works for custom resources.
        if let Some(schema) = t.schema(version) {
            let mut schema = schema.clone();
            schema["x-kubernetes-group-version-kind"] = json!([{"group": t.group, "version": version, "kind": t.kind}]);
            let reversed: Vec<&str> = t.group.split('.').rev().collect();
            schemas.insert(format!("{}.{version}.{}", reversed.join("."), t.kind), schema);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
