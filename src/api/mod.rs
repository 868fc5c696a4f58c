//! The operator's API: the `ZfsImageBuild` and `Promotion` custom resources
//! (group `kinoite-zfs.io`, version `v1alpha1`). The Rust types are the source of truth; the
//! committed `crds/` are generated from them by `kinoite-zfs-operator crd`.

pub mod build;
pub mod common;
pub mod lock;
pub mod promotion;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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
    crds.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    crds
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
