//! The two local patches of the cloned akmods Justfile (R5.2) and the `images.yaml` target
//! (R5.3). Each fails loudly when the upstream shape it expects is gone (F4): a silent no-op
//! would build with upstream's defaults.

/// R5.2 (a): the kernel-cache volume of the nested podman run.
pub const VOLUME_PATTERN: &str = "--volume {{ KCPATH }}:/tmp/kernel_cache:ro";
/// What (a) puts in front of every [`VOLUME_PATTERN`] (SELinux labels on nested podman).
pub const VOLUME_PREFIX: &str = "--security-opt label=disable ";
/// R5.2 (b): the start of the line that names the published image.
pub const NAME_PATTERN: &str = "akmods_name := 'akmods' + if akmods_target != 'common'";
/// The replacement of that line: the image name comes from `images.yaml`
/// (`.images.<version>["<flavor>"].<target>.name`), where R5.3 writes the candidate repository.
pub const NAME_LINE: &str = "akmods_name := shell('yq -r \".images[\\\"$1\\\"][\\\"$2\\\"].$3.name\" images.yaml', env('AKMODS_VERSION'), env('AKMODS_KERNEL'), akmods_target)";

/// Errors of patching (messages name what upstream changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("Failed to patch cloned akmods Justfile: no `{VOLUME_PATTERN}` (the upstream Justfile changed shape)")]
    VolumePattern,
    #[error(
        "Failed to patch cloned akmods Justfile: no line starting `{NAME_PATTERN}` (the upstream Justfile changed shape)"
    )]
    NamePattern,
    #[error("the cloned akmods tree has no images.yaml")]
    NoImagesYaml,
    #[error("cannot configure the zfs target in images.yaml: {0}")]
    ImagesYaml(String),
}

/// Applies both R5.2 patches to the Justfile text.
pub fn patch_justfile(text: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(text.len() + 128);
    let mut volumes = 0;
    let mut rest = text;
    while let Some(at) = rest.find(VOLUME_PATTERN) {
        out.push_str(&rest[..at]);
        if !out.ends_with(VOLUME_PREFIX) {
            out.push_str(VOLUME_PREFIX);
        }
        out.push_str(VOLUME_PATTERN);
        rest = &rest[at + VOLUME_PATTERN.len()..];
        volumes += 1;
    }
    out.push_str(rest);
    if volumes == 0 {
        return Err(Error::VolumePattern);
    }
    let mut named = false;
    let lines: Vec<String> = out
        .split_inclusive('\n')
        .map(|line| {
            if line.trim_start().starts_with(NAME_PATTERN) {
                named = true;
                let newline = if line.ends_with('\n') { "\n" } else { "" };
                format!("{NAME_LINE}{newline}")
            } else {
                line.to_string()
            }
        })
        .collect();
    if !named {
        return Err(Error::NamePattern);
    }
    Ok(lines.concat())
}

/// R5.3: sets `.images["<fedora>"].main.zfs` in the `images.yaml` text to the candidate akmods
/// repository, keeping every other entry.
pub fn configure_images_yaml(text: &str, fedora: &str, org: &str, repo: &str) -> Result<String, Error> {
    let mut doc: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| Error::ImagesYaml(format!("not YAML: {e}")))?;
    let images = doc
        .as_object_mut()
        .and_then(|root| root.get_mut("images"))
        .and_then(|images| images.as_object_mut())
        .ok_or_else(|| Error::ImagesYaml("no top-level `images` mapping (the upstream file changed shape)".into()))?;
    let version = images.entry(fedora.to_string()).or_insert_with(|| serde_json::json!({}));
    let main = version
        .as_object_mut()
        .ok_or_else(|| Error::ImagesYaml(format!("images.\"{fedora}\" is not a mapping")))?
        .entry("main".to_string())
        .or_insert_with(|| serde_json::json!({}));
    let main =
        main.as_object_mut().ok_or_else(|| Error::ImagesYaml(format!("images.\"{fedora}\".main is not a mapping")))?;
    main.insert(
        "zfs".into(),
        serde_json::json!({
            "org": org,
            "registry": "ghcr.io",
            "repo": "akmods",
            "transport": "docker://",
            "name": repo,
            "description": "Shared caching layer for pre-built zfs akmod RPMs",
            "architecture": ["x86_64"],
        }),
    );
    serde_saphyr::to_string(&doc).map_err(|e| Error::ImagesYaml(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UPSTREAM: &str = "set unstable := true\nakmods_target := env('AKMODS_TARGET', 'common')\nakmods_name := 'akmods' + if akmods_target != 'common' { '-' + akmods_target } else { '' }\n\nbuild:\n    podman run --rm --volume {{ KCPATH }}:/tmp/kernel_cache:ro image\n    podman run --volume {{ KCPATH }}:/tmp/kernel_cache:ro other\n";

    #[test]
    fn both_patches_apply_and_are_idempotent() {
        let patched = patch_justfile(UPSTREAM).unwrap();
        assert_eq!(patched.matches(&format!("{VOLUME_PREFIX}{VOLUME_PATTERN}")).count(), 2);
        assert!(patched.contains(NAME_LINE) && !patched.contains(NAME_PATTERN));
        assert!(patched.contains("build:\n"));
        // Already patched volumes are not prefixed twice (the name line is gone, so (b) fails).
        assert_eq!(patch_justfile(&patched), Err(Error::NamePattern));
    }

    #[test]
    fn a_missing_pattern_is_an_error() {
        assert_eq!(patch_justfile(&UPSTREAM.replace("--volume", "-v")), Err(Error::VolumePattern));
        assert_eq!(patch_justfile(&UPSTREAM.replace("akmods_name :=", "name :=")), Err(Error::NamePattern));
    }

    #[test]
    fn images_yaml_gets_the_zfs_target() {
        let text = "images:\n  \"43\":\n    main:\n      common:\n        name: akmods\n  \"42\":\n    main: {}\n";
        let out = configure_images_yaml(text, "43", "danathar", "kinoite-zfs-bluebuild-akmods-candidate").unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(doc["images"]["43"]["main"]["zfs"]["name"], "kinoite-zfs-bluebuild-akmods-candidate");
        assert_eq!(doc["images"]["43"]["main"]["common"]["name"], "akmods");
        assert!(doc["images"]["42"]["main"].is_object());
        assert!(matches!(configure_images_yaml("other: 1\n", "43", "o", "r"), Err(Error::ImagesYaml(_))));
        assert!(matches!(configure_images_yaml("images: [1]\n", "43", "o", "r"), Err(Error::ImagesYaml(_))));
    }

    proptest! {
        /// Whatever surrounds the two patterns, the patch prefixes every volume exactly once,
        /// replaces the name line, and leaves every other byte as it was.
        #[test]
        fn patching_changes_only_the_patterns(
            before in "[a-z :={}'\\n]{0,40}",
            between in "[a-z :={}'\\n-]{0,40}",
            after in "[a-z :={}'\\n]{0,40}",
        ) {
            let text = format!("{before}\n{NAME_PATTERN} {{ x }}\n{between} {VOLUME_PATTERN} {after}");
            let patched = patch_justfile(&text).unwrap();
            prop_assert_eq!(patched.matches(VOLUME_PATTERN).count(), text.matches(VOLUME_PATTERN).count());
            prop_assert_eq!(patched.matches(&format!("{VOLUME_PREFIX}{VOLUME_PATTERN}")).count(), text.matches(VOLUME_PATTERN).count());
            let restored = patched.replace(VOLUME_PREFIX, "").replace(NAME_LINE, &format!("{NAME_PATTERN} {{ x }}"));
            prop_assert_eq!(restored, text);
        }

        /// Text without the volume pattern is always refused, never returned unchanged.
        #[test]
        fn text_without_the_volume_is_refused(text in "[ -~\\n]{0,200}") {
            prop_assume!(!text.contains(VOLUME_PATTERN));
            prop_assert_eq!(patch_justfile(&text), Err(Error::VolumePattern));
        }
    }
}
