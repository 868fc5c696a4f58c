//! Fixtures shared by the unit tests of the pure modules (compiled only for tests).

use crate::api::ZfsImageBuild;
use crate::api::build::ResolvedInputs;

/// A digest made of one repeated hex character.
pub fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// A build named `zib` in namespace `builds` (uid `uid-1`, generation 1) in `mode`, with push
/// credentials; `extra` is YAML appended to the spec (indented by two spaces).
pub fn build(mode: &str, extra: &str) -> ZfsImageBuild {
    let yaml = format!(
        "apiVersion: kinoite-zfs.io/v1alpha1
kind: ZfsImageBuild
metadata: {{name: zib, namespace: builds, uid: uid-1, generation: 1}}
spec:
  mode: {mode}
  source: {{git: {{url: 'https://github.com/danathar/kinoite-zfs.git', revision: '{rev}'}}}}
  registry: {{host: ghcr.io, namespace: danathar, credentialsSecretRef: {{name: ghcr-push}}}}
{extra}",
        rev = "02701fe0000000000000000000000000000000ab"
    );
    serde_saphyr::from_str(&yaml).expect("test build YAML")
}

/// Resolved inputs of a base with two kernels.
pub fn resolved_inputs() -> ResolvedInputs {
    ResolvedInputs {
        use_input_lock: false,
        lock_file_path: String::new(),
        fedora_version: "43".into(),
        kernel_release: "6.18.12-200.fc43.x86_64".into(),
        kernel_releases: vec!["6.18.9-200.fc43.x86_64".into(), "6.18.12-200.fc43.x86_64".into()],
        base_image_ref: "ghcr.io/ublue-os/kinoite-main:latest".into(),
        base_image_name: "ghcr.io/ublue-os/kinoite-main".into(),
        base_image_tag: "latest-20260420".into(),
        base_image_pinned: format!("ghcr.io/ublue-os/kinoite-main@{}", digest('a')),
        base_image_digest: digest('a'),
        build_container_ref: "ghcr.io/ublue-os/devcontainer:latest".into(),
        build_container_pinned: format!("ghcr.io/ublue-os/devcontainer@{}", digest('b')),
        build_container_digest: digest('b'),
        zfs_minor_version: "2.4".into(),
        akmods_upstream_ref: "9d13b6950811cdaae2e8ab748c85c5da35810ae3".into(),
    }
}
