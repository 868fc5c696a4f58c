//! Replay locks (R14): the reference lock schema (seed-pipeline §2.2) read from a file
//! (`resolve --lock FILE`), from a ConfigMap key or from `spec.inputLock.inline`, all validated by
//! the same code with the reference's messages. Pure apart from [`read_file`].

use std::path::Path;

use serde_json::{Map, Value};

use crate::api::lock::{InputLock, LOCK_PLACEHOLDER};

/// Errors of lock handling. The R14 messages are the reference's, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("Replay lock file not found: {0}")]
    NotFound(String),
    #[error("cannot read replay lock file {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("replay lock {source_name} is not valid JSON: {detail}")]
    Json { source_name: String, detail: String },
    #[error("replay lock {0} must be a JSON object with the keys of the reference lock (base_image, ...)")]
    NotObject(String),
    #[error("Lock file field {field} must be a string, not {found}")]
    FieldType { field: &'static str, found: &'static str },
    #[error("Lock file missing required field: base_image")]
    MissingBaseImage,
    #[error("Lock file {0} still contains placeholder value")]
    Placeholder(&'static str),
    // The reference's remedy names its workflow input; ours names the flag and the spec field.
    #[error(
        "Replay mismatch: build container input ({input}) does not match lock file ({lock}). \
         Set the builder image (--builder-image or spec.builderImage) to {lock} when replaying this lock."
    )]
    BuilderMismatch { input: String, lock: String },
}

/// A validated replay lock. Empty optional fields are `None` (they fall back to the build's or
/// the command's values, R14.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// Where the lock came from (`lock_file_path` of the resolved inputs): a file path,
    /// `inline` or `configmap/<name>/<key>`.
    pub source: String,
    pub base_image: String,
    pub build_container: Option<String>,
    pub zfs_minor_version: Option<String>,
    pub akmods_upstream_ref: Option<String>,
}

/// The lock fields before validation (`None` = absent, null or empty, as the reference's
/// `str(lock.get(key) or "")` treats them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fields {
    base_image: Option<String>,
    build_container: Option<String>,
    zfs_minor_version: Option<String>,
    akmods_upstream_ref: Option<String>,
}

/// Reads and validates a lock file.
pub fn read_file(path: &Path) -> Result<Lock, Error> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(shown)),
        Err(e) => return Err(Error::Read { path: shown, detail: e.to_string() }),
    };
    parse(&text, &shown)
}

/// Parses and validates lock JSON; `source` names where it came from (see [`Lock::source`]).
/// `version` and `description` are not validated, as in the reference.
pub fn parse(json: &str, source: &str) -> Result<Lock, Error> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Error::Json { source_name: source.to_string(), detail: e.to_string() })?;
    let Value::Object(map) = value else { return Err(Error::NotObject(source.to_string())) };
    let fields = Fields {
        base_image: string_field(&map, "base_image")?,
        build_container: string_field(&map, "build_container")?,
        zfs_minor_version: string_field(&map, "zfs_minor_version")?,
        akmods_upstream_ref: string_field(&map, "akmods_upstream_ref")?,
    };
    validate(fields, source)
}

/// Validates an inline lock of a `ZfsImageBuild` exactly like a lock file.
pub fn from_api(lock: &InputLock, source: &str) -> Result<Lock, Error> {
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let fields = Fields {
        base_image: Some(lock.base_image.clone()).filter(|s| !s.is_empty()),
        build_container: non_empty(&lock.build_container),
        zfs_minor_version: non_empty(&lock.zfs_minor_version),
        akmods_upstream_ref: non_empty(&lock.akmods_upstream_ref),
    };
    validate(fields, source)
}

fn string_field(map: &Map<String, Value>, field: &'static str) -> Result<Option<String>, Error> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::FieldType { field, found: json_type(other) }),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// R14.2 in the reference's order; the placeholder is refused in every field (the reference checks
// base_image and build_container; the CRD already refuses it everywhere, and a file must not be
// laxer than the CRD).
fn validate(fields: Fields, source: &str) -> Result<Lock, Error> {
    let base_image = fields.base_image.ok_or(Error::MissingBaseImage)?;
    let checks = [
        ("base_image", Some(&base_image)),
        ("build_container", fields.build_container.as_ref()),
        ("zfs_minor_version", fields.zfs_minor_version.as_ref()),
        ("akmods_upstream_ref", fields.akmods_upstream_ref.as_ref()),
    ];
    for (field, value) in checks {
        if value.is_some_and(|v| v.contains(LOCK_PLACEHOLDER)) {
            return Err(Error::Placeholder(field));
        }
    }
    Ok(Lock {
        source: source.to_string(),
        base_image,
        build_container: fields.build_container,
        zfs_minor_version: fields.zfs_minor_version,
        akmods_upstream_ref: fields.akmods_upstream_ref,
    })
}

impl Lock {
    /// R14.3: a lock that names its builder must be replayed with exactly that builder.
    pub fn check_builder(&self, builder_input: &str) -> Result<(), Error> {
        match &self.build_container {
            Some(lock) if lock != builder_input => {
                Err(Error::BuilderMismatch { input: builder_input.to_string(), lock: lock.clone() })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "ghcr.io/ublue-os/kinoite-main@sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const BUILDER: &str =
        "ghcr.io/ublue-os/devcontainer@sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn lock_json(extra: &str) -> String {
        format!(r#"{{"version": 1, "description": "known good", "base_image": "{BASE}"{extra}}}"#)
    }

    #[test]
    fn reference_lock_parses() {
        let json = lock_json(&format!(
            r#", "build_container": "{BUILDER}", "zfs_minor_version": "2.4", "akmods_upstream_ref": "906e565f0000000000000000000000000000000a""#
        ));
        let lock = parse(&json, "ci/inputs.lock.json").unwrap();
        assert_eq!(lock.source, "ci/inputs.lock.json");
        assert_eq!(lock.base_image, BASE);
        assert_eq!(lock.build_container.as_deref(), Some(BUILDER));
        assert_eq!(lock.zfs_minor_version.as_deref(), Some("2.4"));
        assert!(lock.check_builder(BUILDER).is_ok());
    }

    #[test]
    fn empty_and_null_fields_are_absent() {
        let lock = parse(&lock_json(r#", "build_container": "", "zfs_minor_version": null"#), "f").unwrap();
        assert_eq!((lock.build_container, lock.zfs_minor_version, lock.akmods_upstream_ref), (None, None, None));
        // version and description are free-form, as in the reference.
        assert!(parse(&format!(r#"{{"version": "x", "description": 3, "base_image": "{BASE}"}}"#), "f").is_ok());
    }

    #[test]
    fn reference_messages() {
        let msg = |json: &str| parse(json, "f").unwrap_err().to_string();
        assert_eq!(msg(r#"{"version": 1}"#), "Lock file missing required field: base_image");
        assert_eq!(msg(r#"{"base_image": ""}"#), "Lock file missing required field: base_image");
        assert_eq!(msg(r#"{"base_image": null}"#), "Lock file missing required field: base_image");
        assert_eq!(
            msg(r#"{"base_image": "ghcr.io/ublue-os/kinoite-main@sha256:REPLACE_ME"}"#),
            "Lock file base_image still contains placeholder value"
        );
        assert_eq!(
            msg(&lock_json(r#", "build_container": "REPLACE_ME""#)),
            "Lock file build_container still contains placeholder value"
        );
        assert_eq!(
            msg(&lock_json(r#", "akmods_upstream_ref": "REPLACE_ME""#)),
            "Lock file akmods_upstream_ref still contains placeholder value"
        );
        let lock = parse(&lock_json(&format!(r#", "build_container": "{BUILDER}""#)), "f").unwrap();
        assert_eq!(
            lock.check_builder("ghcr.io/ublue-os/devcontainer:latest").unwrap_err().to_string(),
            format!(
                "Replay mismatch: build container input (ghcr.io/ublue-os/devcontainer:latest) does not match lock file ({BUILDER}). \
                 Set the builder image (--builder-image or spec.builderImage) to {BUILDER} when replaying this lock."
            )
        );
    }

    #[test]
    fn malformed_locks_say_what_is_wrong() {
        assert!(matches!(parse("{", "f"), Err(Error::Json { .. })));
        assert_eq!(parse("[]", "f"), Err(Error::NotObject("f".into())));
        assert_eq!(
            parse(r#"{"base_image": 5}"#, "f").unwrap_err().to_string(),
            "Lock file field base_image must be a string, not a number"
        );
    }

    #[test]
    fn missing_file_uses_the_reference_message() {
        let err = read_file(Path::new("/nonexistent/ci/inputs.lock.json")).unwrap_err();
        assert_eq!(err.to_string(), "Replay lock file not found: /nonexistent/ci/inputs.lock.json");
    }

    #[test]
    fn inline_locks_use_the_same_checks() {
        let inline = InputLock { base_image: BASE.into(), build_container: Some(BUILDER.into()), ..Default::default() };
        let lock = from_api(&inline, "inline").unwrap();
        assert_eq!(lock.source, "inline");
        assert!(matches!(lock.check_builder("other"), Err(Error::BuilderMismatch { .. })));
        let empty = InputLock::default();
        assert_eq!(from_api(&empty, "inline"), Err(Error::MissingBaseImage));
        let placeholder = InputLock { base_image: "REPLACE_ME".into(), ..Default::default() };
        assert_eq!(from_api(&placeholder, "inline"), Err(Error::Placeholder("base_image")));
    }
}
