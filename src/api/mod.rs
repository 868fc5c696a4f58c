//! The operator's API: the `ZfsImageBuild` and `Promotion` custom resources
//! (group `kinoite-zfs.io`, version `v1alpha1`). The Rust types are the source of truth; the
//! committed `crds/` are generated from them by `kinoite-zfs-operator crd`.

pub mod build;
pub mod common;
pub mod lock;
pub mod promotion;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub use build::{ZfsImageBuild, ZfsImageBuildSpec, ZfsImageBuildStatus};
pub use lock::InputLock;
pub use promotion::{Promotion, PromotionSpec, PromotionStatus};

/// API group of both resources.
pub const GROUP: &str = "kinoite-zfs.io";

/// Errors of CRD rendering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot render CRD {name} as YAML: {source}")]
    Yaml {
        name: String,
        #[source]
        source: serde_saphyr::ser::Error,
    },
}

/// Both CRDs, ordered by name (the order of the files in `crds/`).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![ZfsImageBuild::crd(), Promotion::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
                unwrap_descriptions(schema);
            }
        }
    }
    crds.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    crds
}

/// Doc comments are wrapped at the source's line width; `kubectl explain` wraps text itself, so
/// single line breaks become spaces and only paragraph breaks stay.
fn unwrap_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(text) = schema.description.take() {
        let paragraphs: Vec<String> = text
            .split("\n\n")
            .map(|p| p.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "))
            .collect();
        schema.description = Some(paragraphs.join("\n\n"));
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        unwrap_descriptions(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        unwrap_descriptions(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(additional)) = schema.additional_properties.as_mut() {
        unwrap_descriptions(additional);
    }
}

/// File name of a CRD in `crds/`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One CRD as a YAML document (starting with `---`), exactly as committed in `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, Error> {
    let body = serde_saphyr::to_string(crd)
        .map_err(|source| Error::Yaml { name: crd.metadata.name.clone().unwrap_or_default(), source })?;
    Ok(format!("---\n{body}"))
}

/// Both CRDs as one multi-document YAML stream: the output of `kinoite-zfs-operator crd`, equal
/// to the concatenation of the files in `crds/`.
pub fn all_crds_yaml() -> Result<String, Error> {
    crds().iter().map(crd_yaml).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every integer the schema admits must be one the types can read: an object the API server
    /// accepts and the operator cannot decode would be stored and never reconciled.
    fn integer_bounds(path: &str, schema: &JSONSchemaProps, problems: &mut Vec<String>) {
        if schema.type_.as_deref() == Some("integer") {
            let (lo, hi) = match schema.format.as_deref() {
                Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX)),
                Some("uint32") => (0.0, f64::from(u32::MAX)),
                Some("int64") => (i64::MIN as f64, i64::MAX as f64),
                other => {
                    problems.push(format!("{path}: integer with format {other:?}"));
                    (0.0, 0.0)
                }
            };
            let within = |bound: Option<f64>, fallback: f64| bound.unwrap_or(fallback);
            let (min, max) = (within(schema.minimum, f64::NEG_INFINITY), within(schema.maximum, f64::INFINITY));
            if schema.format.as_deref() != Some("int64") && (min < lo || max > hi) {
                problems.push(format!("{path}: admits [{min}, {max}], the type reads [{lo}, {hi}]"));
            }
        }
        for (name, child) in schema.properties.iter().flatten() {
            integer_bounds(&format!("{path}.{name}"), child, problems);
        }
        if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items {
            integer_bounds(&format!("{path}[]"), items, problems);
        }
        if let Some(JSONSchemaPropsOrBool::Schema(additional)) = &schema.additional_properties {
            integer_bounds(&format!("{path}{{}}"), additional, problems);
        }
    }

    #[test]
    fn every_integer_the_schema_admits_fits_its_type() {
        let mut problems = Vec::new();
        for crd in crds() {
            let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).unwrap();
            integer_bounds(&crd.spec.names.kind, schema, &mut problems);
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn builder_ttl_keeps_results_for_at_least_an_hour() {
        let crd = ZfsImageBuild::crd();
        let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).unwrap();
        let ttl = &schema.properties.as_ref().unwrap()["spec"].properties.as_ref().unwrap()["builder"]
            .properties
            .as_ref()
            .unwrap()["ttlSecondsAfterFinished"];
        assert_eq!((ttl.minimum, ttl.maximum), (Some(3600.0), Some(f64::from(i32::MAX))));
    }
}
