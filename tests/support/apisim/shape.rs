//! How lists and maps of a type merge, per field path: what server-side apply (list-map keys,
//! sets, atomic lists) and strategic merge patch (patch merge keys) need to know about a type.
//! Custom resources take it from their CRD schema (`x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`); built-in kinds from a table of the
//! Kubernetes API's patch strategies for the fields the operator's kinds use.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Strategic merge patch behaviour of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmpList {
    Replace,
    MergeKey(String),
    MergePrimitives,
}

/// Merge knowledge about one resource type (a CRD version schema, or a built-in kind).
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    pub schema: Option<&'a Value>,
}

/// A built-in list field's (SMP merge key, SSA list-map keys), by field name and parent field.
fn builtin_list(name: &str, parent: Option<&str>) -> Option<(SmpList, ListKind)> {
    let map = |smp: &str, keys: &[&str]| {
        Some((SmpList::MergeKey(smp.into()), ListKind::Map(keys.iter().map(|k| k.to_string()).collect())))
    };
    match name {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => map("name", &["name"]),
        "volumeMounts" => map("mountPath", &["mountPath"]),
        "volumeDevices" => map("devicePath", &["devicePath"]),
        "hostAliases" => map("ip", &["ip"]),
        "conditions" => map("type", &["type"]),
        "ownerReferences" => map("uid", &["uid"]),
        "topologySpreadConstraints" => map("topologyKey", &["topologyKey", "whenUnsatisfiable"]),
        "ports" if matches!(parent, Some("containers" | "initContainers" | "ephemeralContainers")) => {
            map("containerPort", &["containerPort", "protocol"])
        }
        "ports" => map("port", &["port", "protocol"]),
        "finalizers" => Some((SmpList::MergePrimitives, ListKind::Set)),
        _ => None,
    }
}

impl<'a> Shape<'a> {
    pub fn builtin() -> Shape<'static> {
        Shape { schema: None }
    }

    pub fn custom(schema: &'a Value) -> Shape<'a> {
        Shape { schema: Some(schema) }
    }

    /// The schema node of a field path (array levels are stepped through).
    fn node(&self, path: &[String]) -> Option<&'a Value> {
        let mut node = self.schema?;
        for name in path {
            while node.get("type").and_then(Value::as_str) == Some("array") {
                node = node.get("items")?;
            }
            node = match node.get("properties").and_then(|p| p.get(name)) {
                Some(n) => n,
                None => node.get("additionalProperties").filter(|a| a.is_object())?,
            };
        }
        Some(node)
    }

    /// Metadata follows ObjectMeta's markers whatever the type.
    fn metadata_list(path: &[String]) -> Option<ListKind> {
        match path {
            [m, f] if m == "metadata" && f == "ownerReferences" => Some(ListKind::Map(vec!["uid".into()])),
            [m, f] if m == "metadata" && f == "finalizers" => Some(ListKind::Set),
            [m, ..] if m == "metadata" => Some(ListKind::Atomic),
            _ => None,
        }
    }

    pub fn list(&self, path: &[String]) -> ListKind {
        if let Some(kind) = Self::metadata_list(path) {
            return kind;
        }
        if self.schema.is_none() {
            let parent = path.len().checked_sub(2).map(|i| path[i].as_str());
            return path.last().and_then(|name| builtin_list(name, parent)).map_or(ListKind::Atomic, |(_, ssa)| ssa);
        }
        let Some(node) = self.node(path) else { return ListKind::Atomic };
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListKind::Set,
            Some("map") => ListKind::Map(
                node.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| keys.iter().filter_map(Value::as_str).map(String::from).collect())
                    .unwrap_or_default(),
            ),
            _ => ListKind::Atomic,
        }
    }

    /// Whether a map (object) field is replaced as a whole by apply.
    pub fn atomic_map(&self, path: &[String]) -> bool {
        self.node(path)
            .and_then(|n| n.get("x-kubernetes-map-type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "atomic")
    }

    /// Strategic merge patch strategy of a list (built-in kinds only; CRs reject SMP).
    pub fn smp_list(&self, path: &[String]) -> SmpList {
        let parent = path.len().checked_sub(2).map(|i| path[i].as_str());
        path.last().and_then(|name| builtin_list(name, parent)).map_or(SmpList::Replace, |(smp, _)| smp)
    }
}
