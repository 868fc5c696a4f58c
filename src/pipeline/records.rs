//! Run records: the reference's `build-inputs.json` (seed-pipeline §2.3) and
//! `build-provenance.json` (§2.4) in their exact formats, the ConfigMap `<build>-run-<n>` that
//! holds them, and the rules that bound history and prune old records.
//!
//! The reference's GitHub-specific fields carry the operator's equivalents:
//! `repository` = the source git URL, `workflow` = `ZfsImageBuild/<mode>`, `run.id` and
//! `run.number` = the run number, `run.attempt` = 1, `run.ref` = `<namespace>/<name>` of the build,
//! `run.sha` = the source revision, `run.actor` = the run trigger.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::ZfsImageBuild;
use crate::api::build::{BuildMode, ResolvedInputs, RunStatus, RunSummary, RunTrigger};
use crate::jobs::{
    self, ANNOTATION_BUILD_NAME, ANNOTATION_INPUTS_HASH, STEP_RUN_RECORD, child_labels, owner_reference,
};

/// Key of the build-inputs manifest in the run-record ConfigMap.
pub const BUILD_INPUTS_KEY: &str = "build-inputs.json";
/// Key of the provenance document in the run-record ConfigMap.
pub const PROVENANCE_KEY: &str = "build-provenance.json";

/// Who and what a record is about.
#[derive(Debug, Clone, Copy)]
pub struct RunIdentity<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub run: i64,
    pub source_url: &'a str,
    pub source_revision: &'a str,
    pub mode: BuildMode,
    pub trigger: RunTrigger,
}

#[derive(Serialize)]
struct RunFields {
    id: i64,
    attempt: i64,
    number: i64,
    #[serde(rename = "ref")]
    ref_: String,
    sha: String,
    actor: String,
}

// Field order is the reference's (§2.3); serde keeps declaration order.
#[derive(Serialize)]
struct BuildInputsFields<'a> {
    use_input_lock: bool,
    lock_file_path: &'a str,
    fedora_version: &'a str,
    kernel_release: &'a str,
    kernel_releases: &'a [String],
    base_image_ref: &'a str,
    base_image_name: &'a str,
    base_image_tag: &'a str,
    base_image_pinned: &'a str,
    base_image_digest: &'a str,
    build_container_ref: &'a str,
    build_container_pinned: &'a str,
    build_container_digest: &'a str,
    zfs_minor_version: &'a str,
    akmods_upstream_ref: &'a str,
}

#[derive(Serialize)]
struct BuildInputsDocument<'a> {
    schema_version: u32,
    generated_at: String,
    repository: &'a str,
    workflow: String,
    run: RunFields,
    inputs: BuildInputsFields<'a>,
}

// §2.4: no use_input_lock / lock_file_path / kernel_release.
#[derive(Serialize)]
struct ProvenanceInputs<'a> {
    fedora_version: &'a str,
    kernel_releases: &'a [String],
    base_image_ref: &'a str,
    base_image_name: &'a str,
    base_image_tag: &'a str,
    base_image_pinned: &'a str,
    base_image_digest: &'a str,
    build_container_ref: &'a str,
    build_container_pinned: &'a str,
    build_container_digest: &'a str,
    zfs_minor_version: &'a str,
    akmods_upstream_ref: &'a str,
}

/// The reference's RefBundle: a tag and a digest of one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefBundle {
    pub tag: String,
    pub tag_ref: String,
    pub digest: String,
    pub digest_ref: String,
}

impl RefBundle {
    /// `repository` is `host/path`; `digest` is `sha256:...`.
    pub fn new(repository: &str, tag: &str, digest: &str) -> Self {
        Self {
            tag: tag.to_string(),
            tag_ref: format!("{repository}:{tag}"),
            digest: digest.to_string(),
            digest_ref: format!("{repository}@{digest}"),
        }
    }
}

#[derive(Serialize)]
struct Candidate {
    image: RefBundle,
    akmods: RefBundle,
}

#[derive(Serialize)]
struct Stable {
    promotion_result: &'static str,
    promoted: bool,
}

#[derive(Serialize)]
struct ProvenanceDocument<'a> {
    schema_version: u32,
    generated_at: String,
    repository: &'a str,
    workflow: String,
    run: RunFields,
    inputs: ProvenanceInputs<'a>,
    candidate: Candidate,
    stable: Stable,
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the reference's timestamp format.
pub fn reference_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn workflow(mode: BuildMode) -> String {
    let mode = match mode {
        BuildMode::Main => "Main",
        BuildMode::Branch => "Branch",
        BuildMode::Validate => "Validate",
    };
    format!("ZfsImageBuild/{mode}")
}

fn trigger_name(trigger: RunTrigger) -> &'static str {
    match trigger {
        RunTrigger::Created => "Created",
        RunTrigger::SpecChanged => "SpecChanged",
        RunTrigger::InputsChanged => "InputsChanged",
        RunTrigger::Schedule => "Schedule",
        RunTrigger::Manual => "Manual",
    }
}

fn run_fields(id: &RunIdentity) -> RunFields {
    RunFields {
        id: id.run,
        attempt: 1,
        number: id.run,
        ref_: format!("{}/{}", id.namespace, id.name),
        sha: id.source_revision.to_string(),
        actor: trigger_name(id.trigger).to_string(),
    }
}

// The reference prints with Python's json.dumps(indent=2) plus a newline; serde_json's pretty
// printer produces the same layout for these documents (ASCII values, no empty objects).
fn pretty<T: Serialize>(doc: &T) -> String {
    let mut text = serde_json::to_string_pretty(doc).expect("records serialize to JSON");
    text.push('\n');
    text
}

impl<'a> BuildInputsFields<'a> {
    fn of(inputs: &'a ResolvedInputs) -> Self {
        BuildInputsFields {
            use_input_lock: inputs.use_input_lock,
            lock_file_path: &inputs.lock_file_path,
            fedora_version: &inputs.fedora_version,
            kernel_release: &inputs.kernel_release,
            kernel_releases: &inputs.kernel_releases,
            base_image_ref: &inputs.base_image_ref,
            base_image_name: &inputs.base_image_name,
            base_image_tag: &inputs.base_image_tag,
            base_image_pinned: &inputs.base_image_pinned,
            base_image_digest: &inputs.base_image_digest,
            build_container_ref: &inputs.build_container_ref,
            build_container_pinned: &inputs.build_container_pinned,
            build_container_digest: &inputs.build_container_digest,
            zfs_minor_version: &inputs.zfs_minor_version,
            akmods_upstream_ref: &inputs.akmods_upstream_ref,
        }
    }
}

/// `build-inputs.json` of a run, written when its inputs are resolved.
pub fn build_inputs_json(id: &RunIdentity, inputs: &ResolvedInputs, generated_at: Timestamp) -> String {
    pretty(&BuildInputsDocument {
        schema_version: 1,
        generated_at: reference_time(generated_at),
        repository: id.source_url,
        workflow: workflow(id.mode),
        run: run_fields(id),
        inputs: BuildInputsFields::of(inputs),
    })
}

/// What `kinoite-zfs-operator resolve` prints: the build-inputs manifest without the fields that
/// describe a run (`repository`, `workflow`, `run`), since resolving outside a build has none.
/// `inputs` is rendered by the same code as the run records', so it can be fed to `plan
/// --inputs` and compared with a run's `build-inputs.json` field by field.
#[derive(Serialize)]
pub struct ResolvedDocument<'a> {
    schema_version: u32,
    generated_at: String,
    inputs: BuildInputsFields<'a>,
}

impl<'a> ResolvedDocument<'a> {
    pub fn new(inputs: &'a ResolvedInputs, generated_at: Timestamp) -> Self {
        ResolvedDocument {
            schema_version: 1,
            generated_at: reference_time(generated_at),
            inputs: BuildInputsFields::of(inputs),
        }
    }
}

/// [`ResolvedDocument`] as JSON in the records' layout (2-space indent, trailing newline).
pub fn resolved_inputs_json(inputs: &ResolvedInputs, generated_at: Timestamp) -> String {
    pretty(&ResolvedDocument::new(inputs, generated_at))
}

/// `build-provenance.json` of a run that pushed and verified its candidate. Digests are the
/// ones recorded when each step completed, never re-read from tags (fixes H10). Builds never
/// promote, so `stable` always says `skipped`: the Promotion's audit tag and history record
/// promotions.
pub fn provenance_json(
    id: &RunIdentity,
    inputs: &ResolvedInputs,
    image: RefBundle,
    akmods: RefBundle,
    generated_at: Timestamp,
) -> String {
    pretty(&ProvenanceDocument {
        schema_version: 1,
        generated_at: reference_time(generated_at),
        repository: id.source_url,
        workflow: workflow(id.mode),
        run: run_fields(id),
        inputs: ProvenanceInputs {
            fedora_version: &inputs.fedora_version,
            kernel_releases: &inputs.kernel_releases,
            base_image_ref: &inputs.base_image_ref,
            base_image_name: &inputs.base_image_name,
            base_image_tag: &inputs.base_image_tag,
            base_image_pinned: &inputs.base_image_pinned,
            base_image_digest: &inputs.base_image_digest,
            build_container_ref: &inputs.build_container_ref,
            build_container_pinned: &inputs.build_container_pinned,
            build_container_digest: &inputs.build_container_digest,
            zfs_minor_version: &inputs.zfs_minor_version,
            akmods_upstream_ref: &inputs.akmods_upstream_ref,
        },
        candidate: Candidate { image, akmods },
        stable: Stable { promotion_result: "skipped", promoted: false },
    })
}

/// Errors of reading a run record back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{PROVENANCE_KEY} is not a provenance document: {0}")]
    Provenance(#[from] serde_json::Error),
    #[error("{PROVENANCE_KEY} names workflow {0:?}, not ZfsImageBuild/<mode>")]
    Workflow(String),
}

/// What a promotion needs from a run's `build-provenance.json`. The document is written only
/// when a Main or Branch run pushed and verified its candidate, so a record is the proof of
/// verification for a run that fell out of the build's bounded `status.history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRun {
    pub number: i64,
    pub mode: BuildMode,
    pub source_revision: String,
    pub fedora_version: String,
    /// The candidate `name@sha256:...`.
    pub candidate_image: String,
    pub candidate_digest: String,
    /// The akmods image the run built with, `name@sha256:...`.
    pub akmods_image: String,
    /// The kernel releases the run verified ZFS for (what a re-verification expects).
    pub kernel_releases: Vec<String>,
    /// The base the candidate was built on, `name@sha256:...` (empty when not recorded).
    pub base_image: String,
}

#[derive(Deserialize)]
struct ReadProvenance {
    workflow: String,
    run: ReadRun,
    inputs: ReadInputs,
    candidate: ReadCandidate,
}

#[derive(Deserialize)]
struct ReadRun {
    number: i64,
    sha: String,
}

#[derive(Deserialize)]
struct ReadInputs {
    fedora_version: String,
    #[serde(default)]
    kernel_releases: Vec<String>,
    #[serde(default)]
    base_image_pinned: String,
}

#[derive(Deserialize)]
struct ReadCandidate {
    image: ReadBundle,
    akmods: ReadBundle,
}

#[derive(Deserialize)]
struct ReadBundle {
    digest: String,
    digest_ref: String,
}

/// Reads back what [`provenance_json`] wrote (unknown fields are ignored, so later document
/// additions do not break older readers).
pub fn parse_provenance(text: &str) -> Result<RecordedRun, Error> {
    let doc: ReadProvenance = serde_json::from_str(text)?;
    let mode = match doc.workflow.strip_prefix("ZfsImageBuild/") {
        Some("Main") => BuildMode::Main,
        Some("Branch") => BuildMode::Branch,
        Some("Validate") => BuildMode::Validate,
        _ => return Err(Error::Workflow(doc.workflow)),
    };
    Ok(RecordedRun {
        number: doc.run.number,
        mode,
        source_revision: doc.run.sha,
        fedora_version: doc.inputs.fedora_version,
        candidate_image: doc.candidate.image.digest_ref,
        candidate_digest: doc.candidate.image.digest,
        akmods_image: doc.candidate.akmods.digest_ref,
        kernel_releases: doc.inputs.kernel_releases,
        base_image: doc.inputs.base_image_pinned,
    })
}

/// The run-record ConfigMap `<build>-run-<n>`, owned by the build.
pub fn run_record_config_map(
    build: &ZfsImageBuild,
    run: i64,
    inputs_hash: &str,
    data: BTreeMap<String, String>,
) -> Result<ConfigMap, jobs::Error> {
    let name = build.metadata.name.clone().ok_or(jobs::Error::MissingMetadata("name"))?;
    let namespace = build.metadata.namespace.clone().ok_or(jobs::Error::MissingMetadata("namespace"))?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(jobs::run_record_name(&name, run)),
            namespace: Some(namespace),
            labels: Some(child_labels(&name, run, STEP_RUN_RECORD)),
            annotations: Some(BTreeMap::from([
                (ANNOTATION_BUILD_NAME.to_string(), name.clone()),
                (ANNOTATION_INPUTS_HASH.to_string(), inputs_hash.to_string()),
            ])),
            owner_references: Some(vec![owner_reference(build)?]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    })
}

/// The history entry of a finished run.
pub fn summary_of(run: &RunStatus) -> RunSummary {
    let inputs = run.inputs.as_ref();
    let candidate = run.candidate.as_ref();
    let verified = run.verification.as_ref().is_some_and(|v| v.verified);
    RunSummary {
        number: run.number,
        trigger: run.trigger,
        phase: run.phase,
        mode: run.mode,
        source_revision: run.source_revision.clone(),
        inputs_hash: run.inputs_hash.clone(),
        fedora_version: inputs.map(|i| i.fedora_version.clone()),
        kernel_releases: inputs.map(|i| i.kernel_releases.clone()).unwrap_or_default(),
        base_image_digest: inputs.map(|i| i.base_image_digest.clone()),
        candidate_image: candidate.map(|c| c.image.clone()),
        candidate_digest: candidate.map(|c| c.digest.clone()),
        short_digest: candidate.map(|c| short_digest(&c.digest)),
        akmods_image: run.akmods.as_ref().and_then(|a| a.image.clone()),
        verified,
        started_at: run.started_at.clone(),
        finished_at: run.finished_at.clone(),
        reason: run.reason.clone(),
        message: run.message.clone(),
    }
}

/// First 12 hex digits of a digest, for display.
pub fn short_digest(digest: &str) -> String {
    digest.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Adds a finished run to the history: newest first, one entry per run, at most `limit`.
pub fn push_history(history: &mut Vec<RunSummary>, summary: RunSummary, limit: i32) {
    history.retain(|h| h.number != summary.number);
    history.insert(0, summary);
    history.sort_by_key(|h| std::cmp::Reverse(h.number));
    history.truncate(usize::try_from(limit.max(1)).unwrap_or(1));
}

/// Runs whose records (and other per-run ConfigMaps) are kept: the newest `limit` runs among
/// the existing records and the current run, plus the current run, the last succeeded run and
/// every run a Promotion currently points at. Everything else is pruned.
pub fn runs_to_keep(
    record_runs: impl IntoIterator<Item = i64>,
    current: Option<i64>,
    last_succeeded: Option<i64>,
    pinned: &BTreeSet<i64>,
    limit: i32,
) -> BTreeSet<i64> {
    let mut runs: BTreeSet<i64> = record_runs.into_iter().collect();
    runs.extend(current);
    let limit = usize::try_from(limit.max(1)).unwrap_or(1);
    let mut keep: BTreeSet<i64> = runs.iter().rev().take(limit).copied().collect();
    keep.extend(current);
    keep.extend(last_succeeded);
    keep.extend(pinned.iter().copied());
    keep
}

/// `Time` for a timestamp (k8s-openapi's wrapper).
pub fn time(ts: Timestamp) -> Time {
    Time(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::build::RunPhase;
    use crate::test_support::{build, digest, resolved_inputs};

    fn identity() -> RunIdentity<'static> {
        RunIdentity {
            namespace: "builds",
            name: "zib",
            run: 7,
            source_url: "https://github.com/danathar/kinoite-zfs.git",
            source_revision: "02701fe0000000000000000000000000000000ab",
            mode: BuildMode::Main,
            trigger: RunTrigger::Schedule,
        }
    }

    fn at() -> Timestamp {
        "2026-04-20T06:00:07.123Z".parse().unwrap()
    }

    #[test]
    fn build_inputs_has_the_reference_layout() {
        let text = build_inputs_json(&identity(), &resolved_inputs(), at());
        let expected = format!(
            r#"{{
  "schema_version": 1,
  "generated_at": "2026-04-20T06:00:07Z",
  "repository": "https://github.com/danathar/kinoite-zfs.git",
  "workflow": "ZfsImageBuild/Main",
  "run": {{
    "id": 7,
    "attempt": 1,
    "number": 7,
    "ref": "builds/zib",
    "sha": "02701fe0000000000000000000000000000000ab",
    "actor": "Schedule"
  }},
  "inputs": {{
    "use_input_lock": false,
    "lock_file_path": "",
    "fedora_version": "43",
    "kernel_release": "6.18.12-200.fc43.x86_64",
    "kernel_releases": [
      "6.18.9-200.fc43.x86_64",
      "6.18.12-200.fc43.x86_64"
    ],
    "base_image_ref": "ghcr.io/ublue-os/kinoite-main:latest",
    "base_image_name": "ghcr.io/ublue-os/kinoite-main",
    "base_image_tag": "latest-20260420",
    "base_image_pinned": "ghcr.io/ublue-os/kinoite-main@{a}",
    "base_image_digest": "{a}",
    "build_container_ref": "ghcr.io/ublue-os/devcontainer:latest",
    "build_container_pinned": "ghcr.io/ublue-os/devcontainer@{b}",
    "build_container_digest": "{b}",
    "zfs_minor_version": "2.4",
    "akmods_upstream_ref": "9d13b6950811cdaae2e8ab748c85c5da35810ae3"
  }}
}}
"#,
            a = digest('a'),
            b = digest('b')
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn resolve_output_shares_the_inputs_rendering() {
        let text = resolved_inputs_json(&resolved_inputs(), at());
        assert!(text.starts_with(
            "{\n  \"schema_version\": 1,\n  \"generated_at\": \"2026-04-20T06:00:07Z\",\n  \"inputs\": {\n"
        ));
        assert!(text.ends_with("}\n"));
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let record: serde_json::Value =
            serde_json::from_str(&build_inputs_json(&identity(), &resolved_inputs(), at())).unwrap();
        assert_eq!(doc["inputs"], record["inputs"]);
        assert_eq!(doc.as_object().unwrap().len(), 3);
    }

    #[test]
    fn provenance_has_the_reference_fields() {
        let image = RefBundle::new("ghcr.io/danathar/kinoite-zfs-candidate", "7-43", &digest('c'));
        let akmods = RefBundle::new("ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate", "7-43", &digest('d'));
        let text = provenance_json(&identity(), &resolved_inputs(), image, akmods, at());
        assert!(text.ends_with("}\n"));
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["candidate", "generated_at", "inputs", "repository", "run", "schema_version", "stable", "workflow"]
        );
        let inputs = doc["inputs"].as_object().unwrap();
        assert_eq!(inputs.len(), 12);
        for absent in ["use_input_lock", "lock_file_path", "kernel_release"] {
            assert!(!inputs.contains_key(absent), "{absent}");
        }
        assert_eq!(doc["candidate"]["image"]["tag_ref"], "ghcr.io/danathar/kinoite-zfs-candidate:7-43");
        assert_eq!(
            doc["candidate"]["image"]["digest_ref"],
            format!("ghcr.io/danathar/kinoite-zfs-candidate@{}", digest('c'))
        );
        assert_eq!(doc["candidate"]["akmods"]["digest"], digest('d'));
        assert_eq!(doc["stable"], serde_json::json!({"promotion_result": "skipped", "promoted": false}));
        // Declaration order is the reference's order.
        let order: Vec<&str> = text.lines().filter(|l| l.starts_with("  \"")).map(|l| l.trim()).collect();
        assert!(order[0].starts_with("\"schema_version\"") && order[7].starts_with("\"stable\""), "{order:?}");
    }

    #[test]
    fn provenance_reads_back_what_was_written() {
        let image = RefBundle::new("ghcr.io/danathar/kinoite-zfs-candidate", "7-43", &digest('c'));
        let akmods = RefBundle::new("ghcr.io/danathar/akmods-candidate", "7-43", &digest('d'));
        let text = provenance_json(&identity(), &resolved_inputs(), image, akmods, at());
        let run = parse_provenance(&text).unwrap();
        assert_eq!(
            run,
            RecordedRun {
                number: 7,
                mode: BuildMode::Main,
                source_revision: "02701fe0000000000000000000000000000000ab".into(),
                fedora_version: "43".into(),
                candidate_image: format!("ghcr.io/danathar/kinoite-zfs-candidate@{}", digest('c')),
                candidate_digest: digest('c'),
                akmods_image: format!("ghcr.io/danathar/akmods-candidate@{}", digest('d')),
                kernel_releases: resolved_inputs().kernel_releases,
                base_image: resolved_inputs().base_image_pinned,
            }
        );
        assert!(matches!(parse_provenance("{}"), Err(Error::Provenance(_))));
        let other = text.replace("ZfsImageBuild/Main", "GitHub/build");
        assert!(matches!(parse_provenance(&other), Err(Error::Workflow(w)) if w == "GitHub/build"));
    }

    #[test]
    fn record_config_map_is_owned_and_labelled() {
        let b = build("Main", "");
        let data = BTreeMap::from([(BUILD_INPUTS_KEY.to_string(), "{}\n".to_string())]);
        let cm = run_record_config_map(&b, 7, "sha256:h", data).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("zib-run-7"));
        assert_eq!(cm.metadata.labels.as_ref().unwrap()["kinoite-zfs.io/step"], "run-record");
        assert_eq!(cm.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
    }

    fn summary(n: i64) -> RunSummary {
        RunSummary {
            number: n,
            trigger: RunTrigger::Schedule,
            phase: RunPhase::Succeeded,
            mode: BuildMode::Main,
            source_revision: String::new(),
            inputs_hash: None,
            fedora_version: None,
            kernel_releases: vec![],
            base_image_digest: None,
            candidate_image: None,
            candidate_digest: None,
            short_digest: None,
            akmods_image: None,
            verified: true,
            started_at: time(at()),
            finished_at: None,
            reason: None,
            message: None,
        }
    }

    #[test]
    fn history_is_newest_first_and_bounded() {
        let mut h = Vec::new();
        for n in 1..=5 {
            push_history(&mut h, summary(n), 3);
        }
        assert_eq!(h.iter().map(|s| s.number).collect::<Vec<_>>(), [5, 4, 3]);
        push_history(&mut h, summary(5), 3);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn pruning_keeps_newest_current_succeeded_and_pinned() {
        let pinned = BTreeSet::from([2]);
        let keep = runs_to_keep(1..=9, Some(10), Some(3), &pinned, 3);
        assert_eq!(keep, BTreeSet::from([2, 3, 8, 9, 10]));
        let keep = runs_to_keep([1, 2], None, None, &BTreeSet::new(), 10);
        assert_eq!(keep, BTreeSet::from([1, 2]));
    }

    #[test]
    fn short_digests() {
        assert_eq!(short_digest(&digest('e')), "eeeeeeeeeeee");
    }
}
