//! The committed CRDs equal the generated ones, are structural, and document every field.

use std::path::Path;

use serde_json::Value;

use crate::support::schema;
use kinoite_zfs_operator::api;

const REGENERATE: &str = "cargo run -q -- crd --write crds";

#[test]
fn committed_crds_equal_generated() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut committed = String::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("crds/ is missing ({e}); generate it with `{REGENERATE}`"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in &files {
        committed.push_str(&std::fs::read_to_string(file).unwrap());
    }
    let generated = api::all_crds_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/ differs from the CRDs generated from the API types; regenerate with `{REGENERATE}` and commit"
    );
    let names: Vec<String> = api::crds().iter().map(api::crd_file_name).collect();
    let on_disk: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(on_disk, names, "crds/ holds other files than the generated ones; regenerate with `{REGENERATE}`");
}

#[test]
fn crd_command_prints_the_committed_yaml() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kinoite-zfs-operator"))
        .arg("crd")
        .output()
        .expect("run the binary");
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), api::all_crds_yaml().unwrap());
}

fn walk_fields(schema: &Value, path: &str, missing: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let child = format!("{path}.{name}");
            if prop.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
                missing.push(child.clone());
            }
            walk_fields(prop, &child, missing);
        }
    }
    if let Some(items) = schema.get("items") {
        walk_fields(items, &format!("{path}[]"), missing);
    }
}

#[test]
fn crds_are_structural_and_every_field_is_documented() {
    for crd in api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        assert_eq!(crd.spec.group, "kinoite-zfs.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{name}: status subresource");
        let schema = schema::version_schema(&crd, "v1alpha1").unwrap();
        let mut problems = Vec::new();
        schema::structural_problems(&schema, &name, &mut problems);
        assert!(problems.is_empty(), "{name} is not structural: {problems:#?}");
        let mut missing = Vec::new();
        walk_fields(&schema, "", &mut missing);
        // metadata is described by Kubernetes itself.
        missing.retain(|p| p != ".metadata");
        assert!(
            missing.is_empty(),
            "{name}: fields without a description (kubectl explain shows nothing): {missing:#?}"
        );
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{name}: conditions are a list-map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
        let columns: Vec<String> =
            version.additional_printer_columns.iter().flatten().map(|c| c.name.clone()).collect();
        for column in ["Ready", "Reason", "Run", "Digest", "Age"] {
            assert!(columns.iter().any(|c| c == column), "{name}: printer column {column} in {columns:?}");
        }
    }
    let short: Vec<Vec<String>> =
        api::crds().iter().map(|c| c.spec.names.short_names.clone().unwrap_or_default()).collect();
    assert_eq!(short, [vec!["promo".to_string()], vec!["zib".to_string()]]);
}
