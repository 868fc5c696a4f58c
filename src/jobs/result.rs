//! The builder result contract. A builder container reports what it did in a small JSON document
//! written to its termination message (`/dev/termination-log`):
//!
//! ```json
//! {"version": 1, "step": "akmods", "digest": "sha256:...", "kernel_releases": ["6.18.12-200.fc43.x86_64"]}
//! {"version": 1, "step": "image", "digest": "sha256:..."}
//! ```
//!
//! The parser is strict (unknown fields, wrong types, a malformed digest, a missing or empty
//! kernel list for akmods are errors), because whatever it accepts is then trusted as the digest
//! to confirm in the registry. A result only counts when it comes from a pod owned by the Job
//! with the recorded UID ([`super::observe::result_for_job`]).

use serde::Deserialize;

use super::JobKind;

/// Result document version this operator understands.
pub const RESULT_VERSION: u64 = 1;

/// Kubernetes keeps at most 4096 bytes of a termination message; a longer document was cut.
pub const MAX_RESULT_BYTES: usize = 4096;

/// Most kernel releases an akmods result may list (Fedora keeps three installonly kernels).
const MAX_KERNELS: usize = 32;

/// Errors of result parsing; the message ends up in the failed step's condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no result: {0}")]
    Missing(String),
    #[error("result is {0} bytes, more than the {MAX_RESULT_BYTES} a termination message can hold")]
    TooLarge(usize),
    #[error("result is not the expected JSON document: {0}")]
    Malformed(String),
    #[error("result version {0} is not supported (expected {RESULT_VERSION})")]
    Version(u64),
    #[error("result is for step {found:?}, but the Job is the {expected} step")]
    WrongStep { expected: &'static str, found: String },
    #[error("result digest {0:?} is not sha256:<64 lowercase hex>")]
    Digest(String),
    #[error("akmods result lists no kernel_releases")]
    NoKernels,
    #[error("akmods result kernel release {0:?} is empty or contains whitespace or control characters")]
    Kernel(String),
    #[error("akmods result lists kernel release {0:?} twice")]
    DuplicateKernel(String),
    #[error("akmods result lists more than {MAX_KERNELS} kernel releases")]
    TooManyKernels,
    #[error("image result must not list kernel_releases")]
    UnexpectedKernels,
}

/// A validated builder result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuilderResult {
    /// The akmods Job pushed a merged cache image with this digest covering these kernels.
    Akmods { digest: String, kernel_releases: Vec<String> },
    /// The image Job built (and, unless `Validate`, pushed) an image with this digest.
    Image { digest: String },
}

impl BuilderResult {
    pub fn digest(&self) -> &str {
        match self {
            BuilderResult::Akmods { digest, .. } | BuilderResult::Image { digest } => digest,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u64,
    step: String,
    digest: String,
    #[serde(default)]
    kernel_releases: Option<Vec<String>>,
}

/// Parses and validates the termination message of the builder container of a `kind` Job.
pub fn parse(kind: JobKind, message: &str) -> Result<BuilderResult, Error> {
    if message.len() > MAX_RESULT_BYTES {
        return Err(Error::TooLarge(message.len()));
    }
    let text = message.trim();
    if text.is_empty() {
        return Err(Error::Missing("the builder container's termination message is empty".into()));
    }
    let doc: Document = serde_json::from_str(text).map_err(|e| Error::Malformed(e.to_string()))?;
    if doc.version != RESULT_VERSION {
        return Err(Error::Version(doc.version));
    }
    if doc.step != kind.as_str() {
        return Err(Error::WrongStep { expected: kind.as_str(), found: doc.step });
    }
    if !is_digest(&doc.digest) {
        return Err(Error::Digest(doc.digest));
    }
    match kind {
        JobKind::Image => match doc.kernel_releases {
            Some(_) => Err(Error::UnexpectedKernels),
            None => Ok(BuilderResult::Image { digest: doc.digest }),
        },
        JobKind::Akmods => {
            let kernels = doc.kernel_releases.unwrap_or_default();
            if kernels.is_empty() {
                return Err(Error::NoKernels);
            }
            if kernels.len() > MAX_KERNELS {
                return Err(Error::TooManyKernels);
            }
            for (i, k) in kernels.iter().enumerate() {
                if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(Error::Kernel(k.clone()));
                }
                if kernels[..i].contains(k) {
                    return Err(Error::DuplicateKernel(k.clone()));
                }
            }
            Ok(BuilderResult::Akmods { digest: doc.digest, kernel_releases: kernels })
        }
    }
}

/// Renders a result document, as a builder writes it (used by tests and the documentation).
pub fn render(result: &BuilderResult) -> String {
    match result {
        BuilderResult::Akmods { digest, kernel_releases } => serde_json::json!({
            "version": RESULT_VERSION, "step": "akmods", "digest": digest, "kernel_releases": kernel_releases
        }),
        BuilderResult::Image { digest } => {
            serde_json::json!({"version": RESULT_VERSION, "step": "image", "digest": digest})
        }
    }
    .to_string()
}

/// `sha256:` followed by exactly 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn valid_documents_round_trip() {
        let akmods = BuilderResult::Akmods {
            digest: digest('a'),
            kernel_releases: vec!["6.18.9-200.fc43.x86_64".into(), "6.18.12-200.fc43.x86_64".into()],
        };
        assert_eq!(parse(JobKind::Akmods, &render(&akmods)), Ok(akmods.clone()));
        let image = BuilderResult::Image { digest: digest('b') };
        assert_eq!(parse(JobKind::Image, &format!("{}\n", render(&image))), Ok(image));
        assert!(render(&akmods).len() < 400);
    }

    #[test]
    fn malformed_documents_are_rejected_with_a_reason() {
        let d = digest('a');
        let cases: Vec<(JobKind, String, &str)> = vec![
            (JobKind::Image, String::new(), "empty"),
            (JobKind::Image, "   \n".into(), "empty"),
            (JobKind::Image, "pushed sha256:abc".into(), "not the expected JSON"),
            (JobKind::Image, "[1,2]".into(), "not the expected JSON"),
            (JobKind::Image, r#"{"version":1,"step":"image"}"#.into(), "missing field `digest`"),
            (JobKind::Image, format!(r#"{{"version":2,"step":"image","digest":"{d}"}}"#), "version 2"),
            (JobKind::Image, format!(r#"{{"version":1,"step":"akmods","digest":"{d}"}}"#), "step \"akmods\""),
            (JobKind::Image, r#"{"version":1,"step":"image","digest":"sha256:ABC"}"#.into(), "not sha256"),
            (JobKind::Image, format!(r#"{{"version":1,"step":"image","digest":"{}"}}"#, digest('A')), "not sha256"),
            (JobKind::Image, format!(r#"{{"version":1,"step":"image","digest":"{d}","extra":1}}"#), "unknown field"),
            (
                JobKind::Image,
                format!(r#"{{"version":1,"step":"image","digest":"{d}","kernel_releases":[]}}"#),
                "must not list",
            ),
            (JobKind::Image, format!(r#"{{"version":"1","step":"image","digest":"{d}"}}"#), "invalid type"),
            (JobKind::Akmods, format!(r#"{{"version":1,"step":"akmods","digest":"{d}"}}"#), "no kernel_releases"),
            (
                JobKind::Akmods,
                format!(r#"{{"version":1,"step":"akmods","digest":"{d}","kernel_releases":[]}}"#),
                "no kernel_releases",
            ),
            (
                JobKind::Akmods,
                format!(r#"{{"version":1,"step":"akmods","digest":"{d}","kernel_releases":["a b"]}}"#),
                "whitespace",
            ),
            (
                JobKind::Akmods,
                format!(r#"{{"version":1,"step":"akmods","digest":"{d}","kernel_releases":["k","k"]}}"#),
                "twice",
            ),
        ];
        for (kind, message, expected) in cases {
            let err = parse(kind, &message).unwrap_err().to_string();
            assert!(err.contains(expected), "{message:?}: {err}");
        }
        let long = format!(r#"{{"version":1,"step":"image","digest":"{d}","x":"{}"}}"#, "y".repeat(5000));
        assert!(matches!(parse(JobKind::Image, &long), Err(Error::TooLarge(_))));
        let many: Vec<String> = (0..40).map(|i| format!("6.{i}.0-1.fc43.x86_64")).collect();
        let doc = serde_json::json!({"version": 1, "step": "akmods", "digest": d, "kernel_releases": many}).to_string();
        assert_eq!(parse(JobKind::Akmods, &doc), Err(Error::TooManyKernels));
    }
}
