//! The replay lock (reference lock schema, seed-pipeline §2.2) as it appears inline in a
//! `ZfsImageBuild`. Field names stay snake_case so a lock file can be pasted unchanged.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::IMAGE_REF_PATTERN;

/// The placeholder the reference ships in template lock files; a lock still holding it was never
/// filled in and must not be replayed (R14.2).
pub const LOCK_PLACEHOLDER: &str = "REPLACE_ME";

// The placeholder rules sit on each field (`self` is the string) rather than on the struct:
// the snake_case names would otherwise have to be referenced from CEL by name.

/// Pinned run inputs in the reference lock format. With a lock, a run uses exactly these inputs
/// instead of resolving floating references (replay mode).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InputLock {
    /// Lock format version (informational; the reference does not validate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Free text describing why these inputs were pinned (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Base image to replay, normally digest-pinned (`NAME@sha256:...`). Required.
    #[schemars(length(min = 1), regex(pattern = IMAGE_REF_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self.contains('REPLACE_ME')",
        "message": "inputLock.base_image still contains the REPLACE_ME placeholder: fill in the value recorded by the run to replay"
    }]))]
    pub base_image: String,
    /// Builder image the original run used. When set, it must equal the build's `builderImage`
    /// (R14.3), so a replay cannot silently run with another toolchain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IMAGE_REF_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self.contains('REPLACE_ME')",
        "message": "inputLock.build_container still contains the REPLACE_ME placeholder: fill in the value recorded by the run to replay"
    }]))]
    pub build_container: Option<String>,
    /// ZFS minor line; empty or absent falls back to `spec.zfs.minorVersion` (R14.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^([0-9]+\\.[0-9]+)?$"))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self.contains('REPLACE_ME')",
        "message": "inputLock.zfs_minor_version still contains the REPLACE_ME placeholder: fill in the value recorded by the run to replay"
    }]))]
    pub zfs_minor_version: Option<String>,
    /// akmods source commit (full 40-hex); empty or absent falls back to `spec.akmods.revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^([a-f0-9]{40})?$"))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self.contains('REPLACE_ME')",
        "message": "inputLock.akmods_upstream_ref still contains the REPLACE_ME placeholder: fill in the value recorded by the run to replay"
    }]))]
    pub akmods_upstream_ref: Option<String>,
}
