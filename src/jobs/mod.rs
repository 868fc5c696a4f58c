//! Builder Jobs (design §4): deterministic names, labels and owner references of everything a
//! build owns, rendering of the akmods and image Jobs ([`render`]), the result contract a builder
//! reports through its termination message ([`result`]), and the plain-data view of observed Jobs
//! and Pods the planner reads ([`observe`]).

pub mod contract;
pub mod observe;
pub mod render;
pub mod result;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::api::ZfsImageBuild;

/// Errors of Job rendering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the ZfsImageBuild has no metadata.{0}; children need it for their owner reference")]
    MissingMetadata(&'static str),
    #[error("akmods image {0:?} is not pinned by digest (NAME@sha256:...)")]
    AkmodsNotPinned(String),
    #[error("base image {0:?} is not pinned by digest (NAME@sha256:...)")]
    BaseNotPinned(String),
    #[error("builder image {0:?} is not pinned by digest (NAME@sha256:...)")]
    BuilderNotPinned(String),
}

/// Field manager for server-side apply of everything the operator writes.
pub const MANAGER: &str = "kinoite-zfs-operator";

/// Label: the owning build (its name, shortened with a hash beyond 63 characters).
pub const LABEL_BUILD: &str = "kinoite-zfs.io/build";
/// Label: the run number.
pub const LABEL_RUN: &str = "kinoite-zfs.io/run";
/// Label: what the child is (`akmods`, `image`, `run-record`, `recipe`).
pub const LABEL_STEP: &str = "kinoite-zfs.io/step";
/// Label: `app.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: `app.kubernetes.io/name`.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Annotation: the full build name (the label may be shortened).
pub const ANNOTATION_BUILD_NAME: &str = "kinoite-zfs.io/build-name";
/// Annotation: the inputs hash of the run a child belongs to.
pub const ANNOTATION_INPUTS_HASH: &str = "kinoite-zfs.io/inputs-hash";

/// Which child of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobKind {
    Akmods,
    Image,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Akmods => "akmods",
            JobKind::Image => "image",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "akmods" => Some(JobKind::Akmods),
            "image" => Some(JobKind::Image),
            _ => None,
        }
    }
}

/// Name of the container that runs the build and writes the result (its termination message).
pub const BUILDER_CONTAINER: &str = "builder";

/// `LABEL_STEP` value of the run-record ConfigMap.
pub const STEP_RUN_RECORD: &str = "run-record";
/// `LABEL_STEP` value of the BlueBuild recipe-lines ConfigMap.
pub const STEP_RECIPE: &str = "recipe";

/// Longest child name: fits the `job-name` label Kubernetes puts on a Job's pods (a label value).
const MAX_CHILD_NAME: usize = 63;

/// Deterministic child name `<build><suffix>`, so a create after a restart finds the existing
/// object instead of making a second one. Long build names are shortened and suffixed with a
/// hash of the full name so two builds never share a child name.
pub fn child_name(build: &str, suffix: &str) -> String {
    let full = format!("{build}{suffix}");
    if full.len() <= MAX_CHILD_NAME {
        return full;
    }
    let tag = format!("-{:08x}", fnv1a(build.as_bytes()) as u32);
    let keep = MAX_CHILD_NAME.saturating_sub(suffix.len() + tag.len());
    let prefix = build[..keep.min(build.len())].trim_end_matches(['-', '.']);
    format!("{prefix}{tag}{suffix}")
}

/// Job name `<build>-<run>-<kind>`.
pub fn job_name(build: &str, run: i64, kind: JobKind) -> String {
    child_name(build, &format!("-{run}-{}", kind.as_str()))
}

/// Name of the ConfigMap with the rewritten BlueBuild recipe lines: `<build>-<run>-recipe`.
pub fn recipe_config_map_name(build: &str, run: i64) -> String {
    child_name(build, &format!("-{run}-recipe"))
}

/// Name of the run-record ConfigMap: `<build>-run-<n>`.
pub fn run_record_name(build: &str, run: i64) -> String {
    child_name(build, &format!("-run-{run}"))
}

/// The build name as a label value (at most 63 characters).
pub fn build_label_value(build: &str) -> String {
    child_name(build, "")
}

/// Labels of a child of `build` for run `run`.
pub fn child_labels(build: &str, run: i64, step: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), "kinoite-zfs-builder".to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_BUILD.to_string(), build_label_value(build)),
        (LABEL_RUN.to_string(), run.to_string()),
        (LABEL_STEP.to_string(), step.to_string()),
    ])
}

/// Label selector that finds every child of `build` (for the controller's list/watch).
pub fn children_selector(build: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_BUILD}={}", build_label_value(build))
}

/// Controller owner reference to the build, so children are garbage-collected with it and the
/// controller is woken when they change.
pub fn owner_reference(build: &ZfsImageBuild) -> Result<OwnerReference, Error> {
    let meta = build.meta();
    Ok(OwnerReference {
        api_version: ZfsImageBuild::api_version(&()).into_owned(),
        kind: ZfsImageBuild::kind(&()).into_owned(),
        name: meta.name.clone().ok_or(Error::MissingMetadata("name"))?,
        uid: meta.uid.clone().ok_or(Error::MissingMetadata("uid"))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

// A small stable hash for name shortening (std's hasher is not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic() {
        assert_eq!(job_name("kinoite", 7, JobKind::Akmods), "kinoite-7-akmods");
        assert_eq!(job_name("kinoite", 7, JobKind::Image), "kinoite-7-image");
        assert_eq!(run_record_name("kinoite", 7), "kinoite-run-7");
        assert_eq!(recipe_config_map_name("kinoite", 7), "kinoite-7-recipe");
        assert_eq!(build_label_value("kinoite"), "kinoite");
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let a = "a".repeat(80);
        let b = format!("{}b", "a".repeat(79));
        let (na, nb) = (job_name(&a, 12, JobKind::Image), job_name(&b, 12, JobKind::Image));
        assert!(na.len() <= MAX_CHILD_NAME && nb.len() <= MAX_CHILD_NAME);
        assert!(na.ends_with("-12-image"));
        assert_ne!(na, nb);
        assert_eq!(na, job_name(&a, 12, JobKind::Image));
        let (la, lb) = (build_label_value(&a), build_label_value(&b));
        assert!(la.len() <= 63 && la != lb);
        assert!(run_record_name(&a, 123456).len() <= MAX_CHILD_NAME);
    }

    #[test]
    fn labels_find_children() {
        let labels = child_labels("kinoite", 3, "akmods");
        assert_eq!(labels[LABEL_RUN], "3");
        assert_eq!(labels[LABEL_BUILD], "kinoite");
        assert_eq!(
            children_selector("kinoite"),
            "app.kubernetes.io/managed-by=kinoite-zfs-operator,kinoite-zfs.io/build=kinoite"
        );
    }
}
