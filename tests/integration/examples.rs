//! Every example in docs/examples loads into the Rust types with unknown fields denied and passes
//! the generated CRD schema (structure and CEL rules); every negative fixture is rejected by the
//! schema with the expected message.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::support::schema::{self, UnknownFields};
use kinoite_zfs_operator::api::{self, Promotion, ZfsImageBuild};

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()))
}

/// Deserializes into `T` and fails on any field the type does not know.
fn load_strict<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    let mut ignored = Vec::new();
    let parsed: T =
        serde_ignored::deserialize(value.clone(), |path| ignored.push(path.to_string())).map_err(|e| e.to_string())?;
    // apiVersion and kind are checked by kube's own type metadata, not by the spec types.
    ignored.retain(|p| p != "apiVersion" && p != "kind");
    if ignored.is_empty() { Ok(parsed) } else { Err(format!("unknown fields: {ignored:?}")) }
}

fn crd_for(kind: &str) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    api::crds().into_iter().find(|c| c.spec.names.kind == kind).unwrap_or_else(|| panic!("no CRD for kind {kind}"))
}

fn kind_of(value: &Value) -> &str {
    value["kind"].as_str().expect("kind")
}

fn load_typed(value: &Value) -> Result<(), String> {
    match kind_of(value) {
        "ZfsImageBuild" => load_strict::<ZfsImageBuild>(value).map(|_| ()),
        "Promotion" => load_strict::<Promotion>(value).map(|_| ()),
        other => Err(format!("unexpected kind {other}")),
    }
}

#[test]
fn examples_load_strictly_and_pass_the_crd_schema() {
    let files = yaml_files("docs/examples");
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in [
        "main-build.yaml",
        "branch-build.yaml",
        "validate-build.yaml",
        "replay-build.yaml",
        "auto-promotion.yaml",
        "pinned-promotion.yaml",
    ] {
        assert!(names.iter().any(|n| n == expected), "docs/examples/{expected} is missing");
    }
    for file in &files {
        let value = load_yaml(file);
        load_typed(&value).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let crd = crd_for(kind_of(&value));
        let defaulted = schema::validate_against_crd(&crd, &value, UnknownFields::Reject)
            .unwrap_or_else(|errors| panic!("{} is rejected by the CRD schema: {errors:#?}", file.display()));
        // The defaulted object is what the controller reads back; it must load too.
        load_typed(&defaulted).unwrap_or_else(|e| panic!("{} after defaulting: {e}", file.display()));
    }
}

#[test]
fn schema_defaults_match_the_rust_defaults() {
    let value = load_yaml(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/validate-build.yaml"));
    let defaulted = schema::validate_against_crd(&crd_for("ZfsImageBuild"), &value, UnknownFields::Reject).unwrap();
    let from_schema: ZfsImageBuild = serde_json::from_value(defaulted).unwrap();
    let from_serde: ZfsImageBuild = serde_json::from_value(value).unwrap();
    assert_eq!(from_schema.spec, from_serde.spec, "apiserver defaulting and serde defaults disagree");
    assert_eq!(from_schema.spec.base_image, api::build::DEFAULT_BASE_IMAGE);
    assert_eq!(from_schema.spec.history_limit, 10);
    assert_eq!(from_schema.spec.registry.candidate_image, "kinoite-zfs-candidate");
}

#[test]
fn invalid_fixtures_are_rejected_with_a_clear_message() {
    let files = yaml_files("tests/fixtures/invalid");
    assert!(files.len() >= 4);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: <message>`", file.display()))
            .to_string();
        let value = load_yaml(file);
        let crd = crd_for(kind_of(&value));
        match schema::validate_against_crd(&crd, &value, UnknownFields::Reject) {
            Ok(_) => {
                panic!("{} was accepted by the CRD schema; expected an error containing {expect:?}", file.display())
            }
            Err(errors) => assert!(
                errors.iter().any(|e| e.contains(&expect)),
                "{}: no error contains {expect:?}: {errors:#?}",
                file.display()
            ),
        }
    }
}

#[test]
fn unknown_fields_are_also_rejected_by_the_typed_load() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/build-unknown-field.yaml");
    let err = load_typed(&load_yaml(&file)).unwrap_err();
    assert!(err.contains("minorVersoin"), "{err}");
}

#[test]
fn pruning_mode_drops_unknown_fields_instead() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/build-unknown-field.yaml");
    let pruned =
        schema::validate_against_crd(&crd_for("ZfsImageBuild"), &load_yaml(&file), UnknownFields::Prune).unwrap();
    assert_eq!(pruned["spec"]["zfs"], serde_json::json!({"minorVersion": "2.4"}));
}
