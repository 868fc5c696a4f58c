//! Shapes shared by both custom resources: validation patterns, conditions, references.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `sha256:` followed by 64 lowercase hex digits.
pub const DIGEST_PATTERN: &str = "^sha256:[a-f0-9]{64}$";

/// A full 40-hex git commit id (abbreviated ids are ambiguous and cannot be verified, R5.1).
pub const COMMIT_PATTERN: &str = "^[a-f0-9]{40}$";

/// An image reference `host[:port]/path[:tag][@sha256:digest]` (the docker reference grammar,
/// restricted to lowercase repository paths and sha256 digests). RE2-compatible, as the
/// apiserver evaluates patterns with Go's regexp.
pub const IMAGE_REF_PATTERN: &str = concat!(
    "^[a-z0-9]+([.-][a-z0-9]+)*(:[0-9]+)?",
    "(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)+",
    "(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?",
    "(@sha256:[a-f0-9]{64})?$"
);

/// A registry host, optionally with a port.
pub const REGISTRY_HOST_PATTERN: &str = "^[a-z0-9]+([.-][a-z0-9]+)*(:[0-9]+)?$";

/// A repository path below the registry host (one or more `/`-separated components).
pub const REPOSITORY_PATTERN: &str = "^[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$";

/// An OCI tag.
pub const TAG_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$";

/// A ZFS minor release line such as `2.4`.
pub const ZFS_MINOR_PATTERN: &str = "^[0-9]+\\.[0-9]+$";

/// A five-field cron expression (minute hour day-of-month month day-of-week) or one of the
/// `@daily`-style macros. The controller parses it fully and reports `Stalled` when the fields
/// themselves are out of range.
pub const CRON_PATTERN: &str = concat!(
    "^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|",
    "[0-9A-Za-z*,/?-]+( +[0-9A-Za-z*,/?-]+){4})$"
);

/// A Kubernetes object name (DNS-1123 subdomain).
pub const OBJECT_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the object in the same namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
}

/// Marks a `Vec<Condition>` as a list-map keyed by `type`, as Kubernetes API conventions require,
/// so server-side apply merges conditions by type.
pub fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <Vec<Condition>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

/// kstatus condition types shared by both resources.
pub mod condition_types {
    /// The object reached its desired state.
    pub const READY: &str = "Ready";
    /// The controller is working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// The controller cannot make progress until something changes (the message says what).
    pub const STALLED: &str = "Stalled";
}
