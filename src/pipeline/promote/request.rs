//! What a promotion is asked to do, validated once: the candidate by digest, the stable
//! repository and tags, the audit tag, the akmods alignment and the compare-and-swap
//! expectation. The controller rebuilds the same request from `status.inProgress`, so a
//! promotion in flight resumes with exactly the parameters it started with (never with a newer
//! run or an edited spec, H7).

use super::Error;
use crate::api::promotion::PromotionProgress;
use crate::registry::ImageRef;
use crate::signing::PrivateKey;

/// How `expectedStableDigest` and `--expect-stable-digest` spell "the tag must not exist".
pub const ABSENT: &str = "absent";

/// What the guarded stable tag (the first of `tags`) must point at before it is moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StableExpectation {
    /// First promotion: the tag must not exist.
    Absent,
    /// The tag must point at this digest.
    Digest(String),
    /// Whatever the tag points at when the promotion is planned. The swap still fails when the
    /// tag moves between planning and the write; used by the command line when no expectation
    /// is given (the controller always has one).
    Observed,
}

impl StableExpectation {
    /// Parses `absent` or `sha256:<64 hex>`.
    pub fn parse(text: &str) -> Result<StableExpectation, Error> {
        if text == ABSENT {
            return Ok(StableExpectation::Absent);
        }
        crate::registry::validate_digest(text).map(|_| StableExpectation::Digest(text.to_string())).map_err(|_| {
            Error::Request(format!("expected stable digest {text:?} is neither `absent` nor sha256:<64 hex>"))
        })
    }
}

/// Align the stable akmods tag with the candidate's akmods image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkmodsAlignment {
    /// The candidate akmods image, by digest (preferred: the digest the run built with) or by a
    /// tag that is resolved once, before anything is written.
    pub candidate: ImageRef,
    /// The stable akmods tag, `repository:tag`.
    pub stable: ImageRef,
}

/// A validated promotion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionRequest {
    /// The candidate image, `repository@digest` (an image or an index).
    pub candidate: ImageRef,
    /// The stable image repository (its tag, if any, is not used).
    pub stable: ImageRef,
    /// Stable tags to move; the first is guarded by the compare-and-swap.
    pub tags: Vec<String>,
    /// The immutable audit tag, written once and never moved.
    pub audit_tag: Option<String>,
    pub akmods: Option<AkmodsAlignment>,
    pub expect: StableExpectation,
    /// Sign the candidate digest in the stable repository before any tag moves (the key is
    /// decrypted before the request exists, so a bad key never starts a promotion).
    pub signing: Option<PrivateKey>,
}

impl PromotionRequest {
    /// Parses and validates the command line's (or a controller's) strings.
    pub fn parse(
        candidate: &str,
        to: &str,
        tags: &[String],
        audit_tag: Option<&str>,
        akmods: Option<(&str, &str)>,
        expect: Option<&str>,
    ) -> Result<PromotionRequest, Error> {
        let candidate = parse_ref("candidate", candidate)?;
        let Some(digest) = candidate.digest().map(str::to_string) else {
            return Err(Error::Request(format!(
                "candidate {candidate} has no digest: promote exactly what was verified, REPO@sha256:... (H2)"
            )));
        };
        let candidate = candidate.with_digest(&digest).map_err(|e| Error::Request(e.to_string()))?;
        let stable = parse_repository(to)?;
        let akmods = match akmods {
            None => None,
            Some((candidate_akmods, stable_akmods)) => {
                let candidate = parse_ref("candidate akmods", candidate_akmods)?;
                if !has_explicit_tag(stable_akmods) {
                    return Err(Error::Request(format!(
                        "stable akmods {stable_akmods:?} must be REPO:TAG (the tag to align), without a digest"
                    )));
                }
                let stable = parse_ref("stable akmods", stable_akmods)?;
                Some(AkmodsAlignment { candidate, stable })
            }
        };
        let request = PromotionRequest {
            candidate,
            stable,
            tags: tags.to_vec(),
            audit_tag: audit_tag.map(str::to_string),
            akmods,
            expect: expect.map(StableExpectation::parse).transpose()?.unwrap_or(StableExpectation::Observed),
            signing: None,
        };
        request.validate()?;
        Ok(request)
    }

    /// The request of a promotion in flight, exactly as it was planned when it started.
    pub fn from_progress(progress: &PromotionProgress) -> Result<PromotionRequest, Error> {
        if ImageRef::parse(&progress.candidate_image).ok().and_then(|r| r.digest().map(str::to_string)).as_deref()
            != Some(progress.candidate_digest.as_str())
        {
            return Err(Error::Request(format!(
                "inProgress.candidateImage {:?} does not carry inProgress.candidateDigest {}",
                progress.candidate_image, progress.candidate_digest
            )));
        }
        let akmods = match (&progress.candidate_akmods, &progress.stable_akmods) {
            (Some(candidate), Some(stable)) => Some((candidate.as_str(), stable.as_str())),
            (None, None) => None,
            _ => {
                return Err(Error::Request(
                    "inProgress has only one of candidateAkmods and stableAkmods; both or neither".into(),
                ));
            }
        };
        if progress.expected_stable_digest.is_empty() {
            return Err(Error::Request("inProgress.expectedStableDigest is empty".into()));
        }
        PromotionRequest::parse(
            &progress.candidate_image,
            &progress.stable_repository,
            &progress.tags,
            Some(&progress.audit_tag),
            akmods,
            Some(&progress.expected_stable_digest),
        )
    }

    /// The same request, signed with `key`.
    pub fn with_signing(mut self, key: Option<PrivateKey>) -> PromotionRequest {
        self.signing = key;
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if self.tags.is_empty() {
            return Err(Error::Request("give at least one stable tag".into()));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            check_tag("stable tag", tag)?;
            if self.tags[..i].contains(tag) {
                return Err(Error::Request(format!("stable tag {tag:?} is given twice")));
            }
        }
        if let Some(audit) = &self.audit_tag {
            check_tag("audit tag", audit)?;
            if self.tags.contains(audit) {
                return Err(Error::Request(format!(
                    "audit tag {audit:?} is also a stable tag: the audit tag is immutable, stable tags move"
                )));
            }
        }
        if let Some(akmods) = &self.akmods {
            let stable_tag = akmods.stable.tag().unwrap_or_default();
            if akmods.stable.name() == akmods.candidate.name()
                && akmods.candidate.digest().is_none()
                && akmods.candidate.tag() == Some(stable_tag)
            {
                return Err(Error::Request(format!(
                    "candidate akmods and stable akmods are the same tag {}",
                    akmods.stable
                )));
            }
            if akmods.stable.name() == self.stable.name()
                && (self.tags.iter().any(|t| t == stable_tag) || self.audit_tag.as_deref() == Some(stable_tag))
            {
                return Err(Error::Request(format!(
                    "stable akmods tag {} is also an image tag of the same repository",
                    akmods.stable
                )));
            }
        }
        Ok(())
    }
}

fn parse_ref(what: &str, text: &str) -> Result<ImageRef, Error> {
    ImageRef::parse(text).map_err(|e| Error::Request(format!("{what}: {e}")))
}

/// `--to` names a repository; tags are given with `--tag`, so a tag or digest here is a mistake.
fn parse_repository(text: &str) -> Result<ImageRef, Error> {
    let last = text.rsplit('/').next().unwrap_or_default();
    if text.contains('@') || (text.contains('/') && last.contains(':')) {
        return Err(Error::Request(format!(
            "stable repository {text:?} must be a repository without tag or digest (give tags with --tag)"
        )));
    }
    parse_ref("stable repository", text)
}

/// Whether the last path component carries a `:tag` (the host may carry a `:port`), and no digest.
fn has_explicit_tag(text: &str) -> bool {
    !text.contains('@') && text.contains('/') && text.rsplit('/').next().is_some_and(|last| last.contains(':'))
}

/// The OCI tag grammar `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn check_tag(what: &str, tag: &str) -> Result<(), Error> {
    let mut chars = tag.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && tag.len() <= 128;
    if ok { Ok(()) } else { Err(Error::Request(format!("{what} {tag:?} is not a valid OCI tag"))) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::digest;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn candidate() -> String {
        format!("ghcr.io/o/kinoite-zfs-candidate@{}", digest('c'))
    }

    #[test]
    fn parses_a_full_request() {
        let r = PromotionRequest::parse(
            &candidate(),
            "ghcr.io/o/kinoite-zfs",
            &tags(&["latest", "43"]),
            Some("stable-7-02701fe"),
            Some(("ghcr.io/o/akmods-candidate:main-43", "ghcr.io/o/akmods:main-43")),
            Some("absent"),
        )
        .unwrap();
        assert_eq!(r.candidate.digest(), Some(digest('c').as_str()));
        assert_eq!(r.stable.name(), "ghcr.io/o/kinoite-zfs");
        assert_eq!(r.expect, StableExpectation::Absent);
        assert_eq!(r.akmods.unwrap().stable.tag(), Some("main-43"));
        let host_port =
            PromotionRequest::parse(&candidate(), "127.0.0.1:5000/o/x", &tags(&["latest"]), None, None, None).unwrap();
        assert_eq!(host_port.expect, StableExpectation::Observed);
        assert_eq!(host_port.stable.name(), "127.0.0.1:5000/o/x");
    }

    #[test]
    fn rejects_bad_requests_with_the_reason() {
        let cases: Vec<(Result<PromotionRequest, Error>, &str)> = vec![
            (
                PromotionRequest::parse("ghcr.io/o/c:1-43", "ghcr.io/o/s", &tags(&["latest"]), None, None, None),
                "has no digest",
            ),
            (
                PromotionRequest::parse(&candidate(), "ghcr.io/o/s:latest", &tags(&["latest"]), None, None, None),
                "without tag or digest",
            ),
            (PromotionRequest::parse(&candidate(), "ghcr.io/o/s", &[], None, None, None), "at least one"),
            (
                PromotionRequest::parse(&candidate(), "ghcr.io/o/s", &tags(&["latest", "latest"]), None, None, None),
                "given twice",
            ),
            (
                PromotionRequest::parse(&candidate(), "ghcr.io/o/s", &tags(&["bad tag"]), None, None, None),
                "not a valid OCI tag",
            ),
            (
                PromotionRequest::parse(&candidate(), "ghcr.io/o/s", &tags(&["latest"]), Some("latest"), None, None),
                "is also a stable tag",
            ),
            (
                PromotionRequest::parse(&candidate(), "ghcr.io/o/s", &tags(&["latest"]), None, None, Some("sha256:12")),
                "neither `absent`",
            ),
            (
                PromotionRequest::parse(
                    &candidate(),
                    "ghcr.io/o/s",
                    &tags(&["latest"]),
                    None,
                    Some(("ghcr.io/o/ak:main-43", "ghcr.io/o/ak-stable")),
                    None,
                ),
                "must be REPO:TAG",
            ),
            (
                PromotionRequest::parse(
                    &candidate(),
                    "ghcr.io/o/s",
                    &tags(&["latest"]),
                    None,
                    Some(("ghcr.io/o/ak:main-43", "ghcr.io/o/ak:main-43")),
                    None,
                ),
                "are the same tag",
            ),
            (
                PromotionRequest::parse(
                    &candidate(),
                    "ghcr.io/o/s",
                    &tags(&["latest"]),
                    None,
                    Some(("ghcr.io/o/ak:main-43", "ghcr.io/o/s:latest")),
                    None,
                ),
                "also an image tag",
            ),
            (
                PromotionRequest::parse("alpine@sha256:1", "ghcr.io/o/s", &tags(&["latest"]), None, None, None),
                "candidate",
            ),
        ];
        for (result, expected) in cases {
            let err = result.expect_err(expected).to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
            assert!(err.starts_with("invalid promotion request"), "{err}");
        }
    }
}
