//! Checks of a build spec that the CRD schema cannot express (or that an object created without
//! the schema would skip), and the spec hash that decides whether a spec change means a new run.

use serde_json::Value;

use crate::api::build::{BuildMode, ZfsImageBuildSpec};
use crate::pipeline::hashing::sha256_of;
use crate::pipeline::schedule::Schedule;

/// Spec fields that shape what a run builds. A change of any other field (`suspend`,
/// `schedule`, `rebuildAkmodsOnSchedule`, `historyLimit`, `builder`) does not start a run. The
/// list is explicit so adding a spec field never changes existing hashes by itself.
const RUN_SHAPING_FIELDS: [&str; 10] =
    ["mode", "branch", "baseImage", "builderImage", "zfs", "akmods", "source", "kernels", "registry", "inputLock"];

/// Hash of the run-shaping part of the spec.
pub fn spec_hash(spec: &ZfsImageBuildSpec) -> String {
    let value = serde_json::to_value(spec).unwrap_or(Value::Null);
    let mut shaped = serde_json::Map::new();
    for field in RUN_SHAPING_FIELDS {
        if let Some(v) = value.get(field) {
            shaped.insert(field.to_string(), v.clone());
        }
    }
    sha256_of(&Value::Object(shaped))
}

/// Every problem of the spec, each naming the field and what to change.
pub fn problems(spec: &ZfsImageBuildSpec) -> Vec<String> {
    let mut out = Vec::new();
    let branch = spec.branch.as_deref().filter(|b| !b.trim().is_empty());
    match (spec.mode, branch) {
        (BuildMode::Branch, None) => out.push("spec.branch is required when spec.mode is Branch".to_string()),
        (BuildMode::Main | BuildMode::Validate, Some(_)) => {
            out.push(format!("spec.branch must not be set when spec.mode is {:?}", spec.mode))
        }
        _ => {}
    }
    if let Some(lock) = &spec.input_lock {
        if spec.mode != BuildMode::Main {
            out.push("spec.inputLock (replay) is only allowed in Main mode".to_string());
        }
        if lock.inline.is_some() == lock.config_map_ref.is_some() {
            out.push("set exactly one of spec.inputLock.inline and spec.inputLock.configMapRef".to_string());
        }
    }
    let registry = &spec.registry;
    if registry.candidate_image == registry.image {
        out.push("spec.registry.candidateImage must differ from spec.registry.image".to_string());
    }
    if registry.candidate_akmods == registry.akmods {
        out.push("spec.registry.candidateAkmods must differ from spec.registry.akmods".to_string());
    }
    if let Some(schedule) = &spec.schedule
        && let Err(e) = Schedule::parse(schedule)
    {
        out.push(e.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::build;

    #[test]
    fn operational_fields_do_not_change_the_spec_hash() {
        let base = build("Main", "").spec;
        let mut operational = base.clone();
        operational.suspend = true;
        operational.schedule = Some("0 6 * * *".into());
        operational.history_limit = 3;
        operational.rebuild_akmods_on_schedule = true;
        operational.builder.backoff_limit = Some(4);
        assert_eq!(spec_hash(&operational), spec_hash(&base));
        let mut shaping = base.clone();
        shaping.registry.candidate_image = "other".into();
        assert_ne!(spec_hash(&shaping), spec_hash(&base));
        let mut shaping = base.clone();
        shaping.source.git.url = "https://example.com/fork.git".into();
        assert_ne!(spec_hash(&shaping), spec_hash(&base));
    }

    #[test]
    fn problems_name_the_field() {
        assert!(problems(&build("Main", "").spec).is_empty());
        let p = problems(&build("Branch", "").spec);
        assert_eq!(p, ["spec.branch is required when spec.mode is Branch"]);
        let p = problems(&build("Validate", "  branch: x\n  schedule: '99 * * * *'\n").spec);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[1].starts_with("spec.schedule"), "{p:?}");
        let mut spec = build("Branch", "  branch: x\n").spec;
        spec.input_lock = Some(serde_json::from_value(serde_json::json!({})).unwrap());
        spec.registry.candidate_akmods = spec.registry.akmods.clone();
        let p = problems(&spec);
        assert_eq!(p.len(), 3, "{p:?}");
    }
}
