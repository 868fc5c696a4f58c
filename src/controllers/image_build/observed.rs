//! What the planner reads besides the build itself: the build's children and the Promotions
//! that pin its runs, as plain data. The controller's observe step fills it from its caches
//! with the `observe_*` functions here and in [`crate::jobs::observe`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;

use crate::api::build::InputLockSource;
use crate::api::{Promotion, ZfsImageBuild};
use crate::jobs::observe::{ObservedJob, ObservedPod};
use crate::jobs::{LABEL_RUN, LABEL_STEP};

/// Observed cluster state of one build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedCluster {
    /// Builder Jobs owned by the build.
    pub jobs: Vec<ObservedJob>,
    /// Pods of those Jobs.
    pub pods: Vec<ObservedPod>,
    /// Run-record and recipe ConfigMaps owned by the build.
    pub config_maps: Vec<ObservedConfigMap>,
    /// Runs that a Promotion currently points at (kept past `historyLimit`).
    pub pinned_runs: BTreeSet<i64>,
    /// The replay lock of `spec.inputLock.configMapRef`; `None` when the spec has none.
    pub lock: Option<ObservedLock>,
}

/// A ConfigMap owned by the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedConfigMap {
    pub name: String,
    /// Run number from the `kinoite-zfs.io/run` label.
    pub run: i64,
    /// `kinoite-zfs.io/step` label (`run-record` or `recipe`).
    pub step: String,
    /// Keys present in `data`.
    pub keys: BTreeSet<String>,
}

/// The lock ConfigMap as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedLock {
    /// The JSON text of the key.
    Found(String),
    /// The ConfigMap does not exist.
    ConfigMapMissing,
    /// The ConfigMap exists but has no such key.
    KeyMissing,
}

/// The plain view of a ConfigMap owned by a build; `None` without a name or run label.
pub fn observe_config_map(cm: &ConfigMap) -> Option<ObservedConfigMap> {
    let labels = cm.metadata.labels.as_ref()?;
    Some(ObservedConfigMap {
        name: cm.metadata.name.clone()?,
        run: labels.get(LABEL_RUN)?.parse().ok()?,
        step: labels.get(LABEL_STEP).cloned().unwrap_or_default(),
        keys: cm.data.as_ref().map(|d| d.keys().cloned().collect()).unwrap_or_default(),
    })
}

/// The lock of `source` given the referenced ConfigMap (or its absence). `None` for an inline
/// lock or no lock.
pub fn observe_lock(source: Option<&InputLockSource>, config_map: Option<&ConfigMap>) -> Option<ObservedLock> {
    let reference = source?.config_map_ref.as_ref()?;
    Some(match config_map {
        None => ObservedLock::ConfigMapMissing,
        Some(cm) => match cm.data.as_ref().and_then(|d: &BTreeMap<String, String>| d.get(&reference.key)) {
            Some(text) => ObservedLock::Found(text.clone()),
            None => ObservedLock::KeyMissing,
        },
    })
}

/// Runs of `build` that Promotions in its namespace point at: the promoted stable run, a
/// promotion in flight, and a pinned candidate (by run, or by digest looked up in the build's
/// status).
pub fn pinned_runs(build: &ZfsImageBuild, promotions: &[Promotion]) -> BTreeSet<i64> {
    let name = build.metadata.name.as_deref().unwrap_or_default();
    let status = build.status.as_ref();
    let run_of_digest = |digest: &str| -> Option<i64> {
        let status = status?;
        status
            .last_succeeded_run
            .iter()
            .chain(status.history.iter())
            .find(|r| r.candidate_digest.as_deref() == Some(digest))
            .map(|r| r.number)
    };
    let mut runs = BTreeSet::new();
    for p in promotions.iter().filter(|p| p.spec.build_ref.name == name) {
        if let Some(status) = &p.status {
            runs.extend(status.stable.as_ref().map(|s| s.run));
            runs.extend(status.in_progress.as_ref().map(|s| s.run));
        }
        if let Some(candidate) = &p.spec.candidate {
            runs.extend(candidate.run);
            runs.extend(candidate.digest.as_deref().and_then(run_of_digest));
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_observation() {
        let source: InputLockSource =
            serde_json::from_value(serde_json::json!({"configMapRef": {"name": "lock"}})).unwrap();
        assert_eq!(observe_lock(Some(&source), None), Some(ObservedLock::ConfigMapMissing));
        let cm: ConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "lock"}, "data": {"other": "x"}})).unwrap();
        assert_eq!(observe_lock(Some(&source), Some(&cm)), Some(ObservedLock::KeyMissing));
        let cm: ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "lock"}, "data": {"inputs.lock.json": "{}"}}),
        )
        .unwrap();
        assert_eq!(observe_lock(Some(&source), Some(&cm)), Some(ObservedLock::Found("{}".into())));
        let inline: InputLockSource =
            serde_json::from_value(serde_json::json!({"inline": {"base_image": "ghcr.io/a/b@sha256:0"}})).unwrap();
        assert_eq!(observe_lock(Some(&inline), None), None);
        assert_eq!(observe_lock(None, None), None);
    }

    #[test]
    fn config_maps_need_a_run_label() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "zib-run-3", "labels": {"kinoite-zfs.io/run": "3", "kinoite-zfs.io/step": "run-record"}},
            "data": {"build-inputs.json": "{}"}
        }))
        .unwrap();
        let o = observe_config_map(&cm).unwrap();
        assert_eq!((o.run, o.step.as_str(), o.keys.len()), (3, "run-record", 1));
        let unlabelled: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert!(observe_config_map(&unlabelled).is_none());
    }

    #[test]
    fn promotions_pin_runs() {
        let mut build = crate::test_support::build("Main", "");
        let digest = crate::test_support::digest('9');
        build.status = Some(
            serde_json::from_value(serde_json::json!({
                "history": [{"number": 4, "trigger": "Schedule", "phase": "Succeeded", "mode": "Main",
                  "sourceRevision": "x", "verified": true, "startedAt": "2026-01-01T00:00:00Z", "candidateDigest": digest}]
            }))
            .unwrap(),
        );
        let promo = |spec: serde_json::Value, status: serde_json::Value| -> Promotion {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "kinoite-zfs.io/v1alpha1", "kind": "Promotion", "metadata": {"name": "p"},
                "spec": spec, "status": status
            }))
            .unwrap()
        };
        let promotions = vec![
            promo(
                serde_json::json!({"buildRef": {"name": "zib"}, "policy": "Pinned", "candidate": {"digest": digest}}),
                serde_json::json!({"stable": {"run": 2, "image": "x", "imageDigest": "d", "shortDigest": "d",
                  "auditTag": "a", "promotedAt": "2026-01-01T00:00:00Z"}}),
            ),
            promo(
                serde_json::json!({"buildRef": {"name": "zib"}, "policy": "Pinned", "candidate": {"run": 1}}),
                serde_json::json!({}),
            ),
            promo(
                serde_json::json!({"buildRef": {"name": "other"}, "policy": "Pinned", "candidate": {"run": 9}}),
                serde_json::json!({}),
            ),
        ];
        assert_eq!(pinned_runs(&build, &promotions), BTreeSet::from([1, 2, 4]));
    }
}
