//! Immutable base tag selection (R2.8): which date-stamped tag of the base repository the build
//! pins (BlueBuild's `image-version:`), proven equal to the base digest by the caller. Pure: the
//! registry lookups happen in [`super::resolve`]; this module says which tags to try, in which
//! order, and words the failures exactly as the reference does.

/// Errors of tag selection (the reference's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("Failed to derive immutable base tag from org.opencontainers.image.version={0}")]
    VersionLabel(String),
    #[error("Failed to map digest {digest} to an immutable tag. Tried candidate tags: {}", tried.join(" "))]
    NoMatch { digest: String, tried: Vec<String> },
    #[error("Resolved tag {name}:{tag} does not match digest {digest}")]
    Recheck { name: String, tag: String, digest: String },
}

/// What to look up in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagPlan {
    /// The source tag is already date-stamped: use it as it is (still re-checked by digest).
    Fixed(String),
    /// Try these tags in order; the first whose digest equals the base digest wins.
    Candidates(Vec<String>),
}

impl TagPlan {
    /// The tags that will be looked up, in order (for logs and the failure message).
    pub fn tags(&self) -> &[String] {
        match self {
            TagPlan::Fixed(tag) => std::slice::from_ref(tag),
            TagPlan::Candidates(tags) => tags,
        }
    }
}

/// The tag of a raw reference of the form `name:tag` without `@` (the reference's
/// `^[^@]+:([^/@]+)$`); `None` for digest references and references without a tag. The tag is
/// taken from the text as given, so `host:5000/repo` has none (the port is not a tag).
pub fn source_tag(raw_reference: &str) -> Option<&str> {
    if raw_reference.contains('@') {
        return None;
    }
    let (name, tag) = raw_reference.rsplit_once(':')?;
    (!name.is_empty() && !tag.is_empty() && !tag.contains('/')).then_some(tag)
}

/// `-YYYYMMDD` or `-YYYYMMDD.N` at the end (`-[0-9]{8}(\.[0-9]+)?$`).
pub fn is_date_stamped(tag: &str) -> bool {
    let head = match tag.rsplit_once('.') {
        Some((head, serial)) if all_digits(serial) => head,
        _ => tag,
    };
    // Bytes, not string slices: a tag is user input and may hold multi-byte characters.
    let bytes = head.as_bytes();
    bytes.len() >= 9 && bytes[bytes.len() - 9] == b'-' && bytes[bytes.len() - 8..].iter().all(u8::is_ascii_digit)
}

/// The part of a version label after its first dot, when the label has the Kinoite shape
/// `^[0-9]+\.[0-9]{8}(\.[0-9]+)?$` (`43.20260227.1` -> `20260227.1`).
pub fn version_suffix(label: &str) -> Option<&str> {
    let (major, suffix) = label.split_once('.')?;
    let (date, serial) = match suffix.split_once('.') {
        Some((date, serial)) => (date, Some(serial)),
        None => (suffix, None),
    };
    let ok = all_digits(major) && date.len() == 8 && all_digits(date) && serial.is_none_or(all_digits);
    ok.then_some(suffix)
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The tags to try (R2.8): a date-stamped source tag as it is; otherwise
/// `<source_tag>-<suffix>` (with a source tag), `latest-<suffix>`, `<fedora>-<suffix>`,
/// de-duplicated, where the suffix comes from the `org.opencontainers.image.version` label.
pub fn plan(source_tag: Option<&str>, version_label: &str, fedora_version: &str) -> Result<TagPlan, Error> {
    if let Some(tag) = source_tag.filter(|t| is_date_stamped(t)) {
        return Ok(TagPlan::Fixed(tag.to_string()));
    }
    let suffix = version_suffix(version_label).ok_or_else(|| Error::VersionLabel(version_label.to_string()))?;
    let mut tags: Vec<String> = Vec::new();
    let proposals = source_tag
        .map(|t| format!("{t}-{suffix}"))
        .into_iter()
        .chain([format!("latest-{suffix}"), format!("{fedora_version}-{suffix}")]);
    for tag in proposals {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(TagPlan::Candidates(tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_tag_only_for_name_colon_tag() {
        assert_eq!(source_tag("ghcr.io/ublue-os/kinoite-main:latest"), Some("latest"));
        assert_eq!(source_tag("127.0.0.1:5000/bench/kinoite-main:43"), Some("43"));
        assert_eq!(source_tag("127.0.0.1:5000/bench/kinoite-main"), None, "a port is not a tag");
        assert_eq!(source_tag("ghcr.io/ublue-os/kinoite-main"), None);
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(source_tag(&format!("ghcr.io/a/b@{digest}")), None);
        assert_eq!(source_tag(&format!("ghcr.io/a/b:latest@{digest}")), None, "digest refs give no source tag");
        assert_eq!(source_tag("ghcr.io/a/b:"), None);
    }

    #[test]
    fn date_stamped_tags() {
        for tag in ["latest-20260227", "latest-20260227.1", "43-20260227.12", "x-00000000"] {
            assert!(is_date_stamped(tag), "{tag}");
        }
        for tag in ["latest", "43", "20260227", "latest-2026022", "latest-202602271", "latest-20260227.", "a.20260227"]
        {
            assert!(!is_date_stamped(tag), "{tag}");
        }
        // The regex is anchored only at the end: `-` + 8 digits + optional `.N` ends the tag.
        assert!(is_date_stamped("stable-43-20260227"));
        assert!(!is_date_stamped("latest-20260227.1.2"));
        assert!(!is_date_stamped("ätest-2026ö"), "multi-byte characters never panic");
    }

    #[test]
    fn version_label_shape() {
        assert_eq!(version_suffix("43.20260227.1"), Some("20260227.1"));
        assert_eq!(version_suffix("43.20260227"), Some("20260227"));
        for bad in
            ["", "43", "43.2026022", "43.20260227.", "43.20260227.1.2", "v43.20260227", "43.20260227.x", "latest"]
        {
            assert_eq!(version_suffix(bad), None, "{bad}");
        }
    }

    #[test]
    fn candidates_in_reference_order() {
        assert_eq!(
            plan(Some("latest"), "43.20260227.1", "43").unwrap(),
            TagPlan::Candidates(vec!["latest-20260227.1".into(), "43-20260227.1".into()]),
            "latest-<suffix> is not tried twice"
        );
        assert_eq!(
            plan(Some("stable"), "43.20260227.1", "43").unwrap().tags(),
            ["stable-20260227.1", "latest-20260227.1", "43-20260227.1"]
        );
        assert_eq!(plan(None, "43.20260227", "43").unwrap().tags(), ["latest-20260227", "43-20260227"]);
        assert_eq!(plan(Some("latest-20260227.1"), "", "43").unwrap(), TagPlan::Fixed("latest-20260227.1".into()));
    }

    #[test]
    fn reference_messages() {
        assert_eq!(
            plan(Some("latest"), "43", "43").unwrap_err().to_string(),
            "Failed to derive immutable base tag from org.opencontainers.image.version=43"
        );
        assert_eq!(
            plan(None, "", "43").unwrap_err().to_string(),
            "Failed to derive immutable base tag from org.opencontainers.image.version="
        );
        let e = Error::NoMatch { digest: "sha256:ab".into(), tried: vec!["latest-1".into(), "43-1".into()] };
        assert_eq!(
            e.to_string(),
            "Failed to map digest sha256:ab to an immutable tag. Tried candidate tags: latest-1 43-1"
        );
        let e = Error::Recheck { name: "ghcr.io/a/b".into(), tag: "latest-1".into(), digest: "sha256:ab".into() };
        assert_eq!(e.to_string(), "Resolved tag ghcr.io/a/b:latest-1 does not match digest sha256:ab");
    }
}
