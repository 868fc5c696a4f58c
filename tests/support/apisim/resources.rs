//! The resource types the simulator serves: the built-in ones the operator and kubectl use, and
//! those registered by CustomResourceDefinitions. Also renders discovery documents from them.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::error::{ApiError, Cause};

/// `(group, plural)`: the identity of a resource type independent of its version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource { group: group.to_string(), resource: resource.to_string() }
    }

    /// `jobs.batch`, `pods` (the form the apiserver uses in messages).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.resource.clone() } else { format!("{}.{}", self.resource, self.group) }
    }
}

/// Built-in kinds with behaviour of their own (defaults, immutable fields, cleanup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    Namespace,
    ConfigMap,
    Secret,
    Pod,
    CoreEvent,
    Event,
    Job,
    Lease,
    CustomResourceDefinition,
}

/// A CRD printer column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// What a CRD contributes beyond names: schemas and printer columns per version.
#[derive(Debug, Clone)]
pub struct CrdInfo {
    pub crd: CustomResourceDefinition,
    pub schemas: BTreeMap<String, Value>,
    pub columns: BTreeMap<String, Vec<Column>>,
}

#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    /// Served versions; the first is the storage (and preferred) version.
    pub versions: Vec<String>,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained (spec changes bump it).
    pub generation: bool,
    pub builtin: Option<Builtin>,
    pub crd: Option<Arc<CrdInfo>>,
}

impl ResourceType {
    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.plural)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_string() } else { format!("{}/{version}", self.group) }
    }

    pub fn storage_version(&self) -> &str {
        &self.versions[0]
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// The CRD schema of a version, if this is a custom resource.
    pub fn schema(&self, version: &str) -> Option<&Value> {
        self.crd.as_ref()?.schemas.get(version)
    }

    /// `jobs.batch`-style name used in error messages.
    pub fn qualified(&self) -> String {
        self.group_resource().qualified()
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    short: &[&str],
    namespaced: bool,
    status: bool,
    generation: bool,
    which: Builtin,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        versions: vec![version.into()],
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: if matches!(which, Builtin::Pod | Builtin::Job) { vec!["all".into()] } else { vec![] },
        namespaced,
        status_subresource: status,
        generation,
        builtin: Some(which),
        crd: None,
    }
}

/// The built-in types: what the operator, kube-runtime and kubectl touch.
pub fn builtins() -> Vec<ResourceType> {
    vec![
        builtin("", "v1", "Namespace", "namespaces", &["ns"], false, true, false, Builtin::Namespace),
        builtin("", "v1", "ConfigMap", "configmaps", &["cm"], true, false, false, Builtin::ConfigMap),
        builtin("", "v1", "Secret", "secrets", &[], true, false, false, Builtin::Secret),
        builtin("", "v1", "Pod", "pods", &["po"], true, true, false, Builtin::Pod),
        builtin("", "v1", "Event", "events", &["ev"], true, false, false, Builtin::CoreEvent),
        builtin("batch", "v1", "Job", "jobs", &[], true, true, true, Builtin::Job),
        builtin("coordination.k8s.io", "v1", "Lease", "leases", &[], true, false, false, Builtin::Lease),
        builtin("events.k8s.io", "v1", "Event", "events", &["ev"], true, false, false, Builtin::Event),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            &["crd", "crds"],
            false,
            true,
            true,
            Builtin::CustomResourceDefinition,
        ),
    ]
}

fn invalid_crd(name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        group: "apiextensions.k8s.io".into(),
        kind: "CustomResourceDefinition".into(),
        name: name.into(),
        causes,
    }
}

fn cause(field: &str, message: impl Into<String>) -> Cause {
    Cause { field: field.into(), message: message.into() }
}

/// Validates a CRD object and derives the resource type it registers.
pub fn from_crd(object: &Value) -> Result<ResourceType, ApiError> {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let crd: CustomResourceDefinition =
        serde_json::from_value(object.clone()).map_err(|e| invalid_crd(&name, vec![cause("<root>", e.to_string())]))?;
    let spec = &crd.spec;
    let names = &spec.names;
    let mut causes = Vec::new();
    if !spec.group.contains('.') {
        causes.push(cause("spec.group", "should be a domain with at least one dot"));
    }
    if name != format!("{}.{}", names.plural, spec.group) {
        causes.push(cause("metadata.name", "must be spec.names.plural+\".\"+spec.group"));
    }
    if names.plural.is_empty() || names.plural != names.plural.to_lowercase() {
        causes.push(cause("spec.names.plural", "must be a lowercase non-empty name"));
    }
    if names.kind.is_empty() {
        causes.push(cause("spec.names.kind", "Required value"));
    }
    if !["Namespaced", "Cluster"].contains(&spec.scope.as_str()) {
        causes.push(cause("spec.scope", format!("Unsupported value: {:?}", spec.scope)));
    }
    let storage: Vec<_> = spec.versions.iter().filter(|v| v.storage).collect();
    if storage.len() != 1 {
        causes.push(cause("spec.versions", "must have exactly one version marked as storage version"));
    }
    let mut schemas = BTreeMap::new();
    let mut columns = BTreeMap::new();
    for (i, version) in spec.versions.iter().enumerate() {
        let schema = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
        let Some(schema) = schema else {
            causes.push(cause(&format!("spec.versions[{i}].schema.openAPIV3Schema"), "Required value"));
            continue;
        };
        let schema = serde_json::to_value(schema).unwrap_or(Value::Null);
        let mut problems = Vec::new();
        super::schema::structural_problems(
            &schema,
            &format!("spec.versions[{i}].schema.openAPIV3Schema"),
            &mut problems,
        );
        for problem in problems {
            let (field, message) = problem.split_once(": ").unwrap_or((&problem, "invalid"));
            causes.push(cause(field, format!("must be structural: {message}")));
        }
        schemas.insert(version.name.clone(), schema);
        let cols = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| Column {
                name: c.name.clone(),
                type_: c.type_.clone(),
                format: c.format.clone().unwrap_or_default(),
                description: c.description.clone().unwrap_or_default(),
                priority: i64::from(c.priority.unwrap_or(0)),
                json_path: c.json_path.clone(),
            })
            .collect();
        columns.insert(version.name.clone(), cols);
    }
    if !causes.is_empty() {
        return Err(invalid_crd(&name, causes));
    }
    let storage = storage[0];
    let mut versions = vec![storage.name.clone()];
    versions.extend(spec.versions.iter().filter(|v| v.served && !v.storage).map(|v| v.name.clone()));
    let status_subresource = storage.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some();
    Ok(ResourceType {
        group: spec.group.clone(),
        versions,
        kind: names.kind.clone(),
        list_kind: names.list_kind.clone().unwrap_or_else(|| format!("{}List", names.kind)),
        plural: names.plural.clone(),
        singular: names.singular.clone().unwrap_or_else(|| names.kind.to_lowercase()),
        short_names: names.short_names.clone().unwrap_or_default(),
        categories: names.categories.clone().unwrap_or_default(),
        namespaced: spec.scope == "Namespaced",
        status_subresource,
        generation: true,
        builtin: None,
        crd: Some(Arc::new(CrdInfo { crd, schemas, columns })),
    })
}

/// `/api`
pub fn core_versions(address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    })
}

/// The group versions served, grouped: `group -> [versions]` (preferred first).
fn groups<'a>(types: impl Iterator<Item = &'a ResourceType>) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in types.filter(|t| !t.group.is_empty()) {
        let versions = groups.entry(t.group.clone()).or_default();
        for v in &t.versions {
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
    }
    groups
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let list: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect();
    json!({"name": name, "versions": list, "preferredVersion": list[0]})
}

/// `/apis`
pub fn group_list<'a>(types: impl Iterator<Item = &'a ResourceType>) -> Value {
    let groups: Vec<Value> = groups(types).iter().map(|(name, versions)| group_json(name, versions)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`
pub fn group<'a>(types: impl Iterator<Item = &'a ResourceType>, name: &str) -> Option<Value> {
    let groups = groups(types);
    let versions = groups.get(name)?;
    let mut group = group_json(name, versions);
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    Some(group)
}

/// `/api/v1`, `/apis/<group>/<version>`
pub fn resource_list<'a>(types: impl Iterator<Item = &'a ResourceType>, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in types.filter(|t| t.group == group && t.serves(version)) {
        resources.push(json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": t.short_names,
            "categories": t.categories,
        }));
        if t.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}
