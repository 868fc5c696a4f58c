//! Stable hashes of run inputs: canonical JSON (sorted keys, no whitespace) + sha256. std's
//! `Hash` is not stable across Rust releases, and these values are persisted in status, so a
//! hash must never change for the same inputs.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::kernels;
use crate::api::build::{BuildMode, ResolvedInputs};

/// Version of the inputs hash document; bump it (and document why) if its fields ever change.
pub const INPUTS_HASH_VERSION: u64 = 1;

/// Compact JSON with object keys sorted at every level; array order is kept.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `sha256:<hex>` of the canonical JSON of `value`.
pub fn sha256_of(value: &Value) -> String {
    let digest = Sha256::digest(canonical_json(value).as_bytes());
    format!("sha256:{}", hex::encode(digest))
}

/// The inputs hash of a run: base digest, builder digest, ZFS line, akmods revision, kernel set,
/// source revision and mode. A change of any of them means a different build, so a new run.
pub fn inputs_hash(inputs: &ResolvedInputs, source_revision: &str, mode: BuildMode) -> String {
    let mode = match mode {
        BuildMode::Main => "Main",
        BuildMode::Branch => "Branch",
        BuildMode::Validate => "Validate",
    };
    sha256_of(&serde_json::json!({
        "version": INPUTS_HASH_VERSION,
        "base_image_digest": inputs.base_image_digest,
        "build_container_digest": inputs.build_container_digest,
        "zfs_minor_version": inputs.zfs_minor_version,
        "akmods_upstream_ref": inputs.akmods_upstream_ref,
        // A set: order and duplicates of the resolver's list must not change the hash.
        "kernel_releases": kernels::sort_releases(inputs.kernel_releases.iter().cloned()),
        "source_revision": source_revision,
        "mode": mode,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> ResolvedInputs {
        ResolvedInputs {
            base_image_digest: format!("sha256:{}", "a".repeat(64)),
            build_container_digest: format!("sha256:{}", "b".repeat(64)),
            zfs_minor_version: "2.4".into(),
            akmods_upstream_ref: "9d13b6950811cdaae2e8ab748c85c5da35810ae3".into(),
            kernel_releases: vec!["6.18.9-200.fc43.x86_64".into(), "6.18.12-200.fc43.x86_64".into()],
            kernel_release: "6.18.12-200.fc43.x86_64".into(),
            fedora_version: "43".into(),
            ..Default::default()
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": 1, "a": {"d": [3, {"z": 1, "y": "x"}], "c": null}});
        assert_eq!(canonical_json(&value), r#"{"a":{"c":null,"d":[3,{"y":"x","z":1}]},"b":1}"#);
    }

    // The expected value was computed independently with Python:
    // hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    // A change here means every stored hash changes and every build starts a new run.
    #[test]
    fn inputs_hash_is_stable() {
        let hash = inputs_hash(&inputs(), "02701fe0000000000000000000000000000000ab", BuildMode::Main);
        assert_eq!(hash, "sha256:e1ec5571b5e792fc754691fa536754c2626d36912014afa26642d90a93934495");
    }

    #[test]
    fn every_input_changes_the_hash_but_not_kernel_order() {
        let rev = "02701fe0000000000000000000000000000000ab";
        let base = inputs_hash(&inputs(), rev, BuildMode::Main);
        let mut reordered = inputs();
        reordered.kernel_releases.reverse();
        reordered.kernel_releases.push("6.18.9-200.fc43.x86_64".into());
        assert_eq!(inputs_hash(&reordered, rev, BuildMode::Main), base);

        let changes: [fn(&mut ResolvedInputs); 5] = [
            |i| i.base_image_digest = format!("sha256:{}", "c".repeat(64)),
            |i| i.build_container_digest = format!("sha256:{}", "d".repeat(64)),
            |i| i.zfs_minor_version = "2.3".into(),
            |i| i.akmods_upstream_ref = "0".repeat(40),
            |i| i.kernel_releases.push("6.19.1-200.fc43.x86_64".into()),
        ];
        for change in changes {
            let mut changed = inputs();
            change(&mut changed);
            assert_ne!(inputs_hash(&changed, rev, BuildMode::Main), base);
        }
        assert_ne!(inputs_hash(&inputs(), &"1".repeat(40), BuildMode::Main), base);
        assert_ne!(inputs_hash(&inputs(), rev, BuildMode::Branch), base);
        // Fields outside the hash (e.g. the human-readable tag) do not start a new run.
        let mut cosmetic = inputs();
        cosmetic.base_image_tag = "latest-20260420".into();
        assert_eq!(inputs_hash(&cosmetic, rev, BuildMode::Main), base);
    }
}
