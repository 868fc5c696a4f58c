//! All OCI registry I/O, behind one trait ([`RegistryClient`]). Every answer is classified
//! (design §3 invariant 4, hazard H5): only a real "absent" may ever lead to a rebuild;
//! unauthorized, rate-limited and unreachable never do, and "absent" is never inferred from any
//! other failure.
//!
//! - [`OciRegistry`] is the implementation (oci-client's reference and manifest types, HTTP via
//!   reqwest; see docs/decisions.md for why requests do not go through `oci_client::Client`);
//! - [`ClientPool`] hands out one client per credential set (per build Secret);
//! - [`resolve_image`] / [`image_config`] sit on top of the trait and work with any
//!   implementation, fakes included.

mod auth;
mod classify;
mod client;
pub mod credentials;
#[cfg(test)]
pub(crate) mod fake;
mod manifest;
mod metrics;
mod pool;
pub mod reference;
mod retry;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

pub use classify::{AnswerClass, error_envelope, parse_retry_after};
pub use client::{ClientSettings, OciRegistry};
pub use credentials::{Credential, CredentialSet, DOCKER_CONFIG_SECRET_KEY};
pub use manifest::{
    ImageConfig, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, ManifestKind, RawManifest, ResolvedImage, image_config,
    infer_media_type, media_types, resolve_fetched, resolve_image, select_linux_amd64,
};
pub use metrics::RequestCounters;
pub use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
pub use pool::ClientPool;
pub use reference::{ImageRef, validate_digest};
pub use retry::{Decision, RetryPolicy};

/// A blob's bytes as they arrive. The stream ends with an error instead of `None` when the
/// content does not match the digest it was requested by, so a consumer that reads to the end
/// has verified the blob.
pub type BlobStream = futures::stream::BoxStream<'static, Result<Bytes, Error>>;

/// How [`RegistryClient::copy_blob`] made a blob available in the target repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobTransfer {
    /// The target repository already had it.
    AlreadyPresent,
    /// Cross-repository mount on the same registry: nothing was transferred.
    Mounted,
    /// Streamed from the source to the target (other registry, or mount refused).
    Copied { bytes: u64 },
}

/// All registry I/O. Repository arguments are image references whose tag/digest is ignored.
/// Methods retry transient answers (rate limited, unreachable) per the client's [`RetryPolicy`];
/// the error of a failed call says which class the last answer had.
pub trait RegistryClient: Send + Sync {
    /// The digest `reference` points at, by `HEAD` (the index digest when it is an index).
    fn resolve_digest(&self, reference: &ImageRef) -> impl Future<Output = Result<String, Error>> + Send;

    /// The manifest or index exactly as served, with its media type and verified digest.
    fn manifest(&self, reference: &ImageRef) -> impl Future<Output = Result<RawManifest, Error>> + Send;

    /// A small blob (e.g. an image config) read whole, verified, at most `max_bytes` long.
    fn read_blob(
        &self,
        repository: &ImageRef,
        digest: &str,
        max_bytes: u64,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send;

    /// A blob (e.g. a layer) as a stream, verified against `digest` at its end. Memory stays
    /// bounded: chunks are passed on as they arrive.
    fn blob_stream(
        &self,
        repository: &ImageRef,
        digest: &str,
    ) -> impl Future<Output = Result<BlobStream, Error>> + Send;

    /// Whether the repository has the blob (`Ok(false)` only for a real "absent").
    fn blob_exists(&self, repository: &ImageRef, digest: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Makes the blob available in `to`: nothing if present, a cross-repository mount on the same
    /// registry, else a streamed copy (bounded memory). "Absent" here means the source lacks it.
    fn copy_blob(
        &self,
        from: &ImageRef,
        to: &ImageRef,
        digest: &str,
    ) -> impl Future<Output = Result<BlobTransfer, Error>> + Send;

    /// Pushes manifest bytes unchanged under `target`'s tag, or its digest when it has one (which
    /// must then match the bytes). Returns the manifest digest.
    fn put_manifest(
        &self,
        target: &ImageRef,
        media_type: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<String, Error>> + Send;

    /// Uploads `bytes` as a blob into `repository` in one request (nothing when it is already
    /// there). Small blobs only: signature payloads, configs, provenance documents. Returns the
    /// digest.
    fn push_blob(&self, repository: &ImageRef, bytes: Bytes) -> impl Future<Output = Result<String, Error>> + Send;

    /// The OCI 1.1 referrers of `digest` in `repository` as the registry's image index bytes;
    /// `Ok(None)` when the registry has no referrers API (404), so the caller uses the tag schema
    /// fallback (`sha256-<hex>`).
    fn referrers(
        &self,
        repository: &ImageRef,
        digest: &str,
    ) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send;
}

/// A shared client (as [`ClientPool`] hands them out) is a client.
impl<T: RegistryClient + ?Sized> RegistryClient for std::sync::Arc<T> {
    fn resolve_digest(&self, reference: &ImageRef) -> impl Future<Output = Result<String, Error>> + Send {
        (**self).resolve_digest(reference)
    }
    fn manifest(&self, reference: &ImageRef) -> impl Future<Output = Result<RawManifest, Error>> + Send {
        (**self).manifest(reference)
    }
    fn read_blob(
        &self,
        repository: &ImageRef,
        digest: &str,
        max_bytes: u64,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send {
        (**self).read_blob(repository, digest, max_bytes)
    }
    fn blob_stream(
        &self,
        repository: &ImageRef,
        digest: &str,
    ) -> impl Future<Output = Result<BlobStream, Error>> + Send {
        (**self).blob_stream(repository, digest)
    }
    fn blob_exists(&self, repository: &ImageRef, digest: &str) -> impl Future<Output = Result<bool, Error>> + Send {
        (**self).blob_exists(repository, digest)
    }
    fn copy_blob(
        &self,
        from: &ImageRef,
        to: &ImageRef,
        digest: &str,
    ) -> impl Future<Output = Result<BlobTransfer, Error>> + Send {
        (**self).copy_blob(from, to, digest)
    }
    fn put_manifest(
        &self,
        target: &ImageRef,
        media_type: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<String, Error>> + Send {
        (**self).put_manifest(target, media_type, bytes)
    }
    fn push_blob(&self, repository: &ImageRef, bytes: Bytes) -> impl Future<Output = Result<String, Error>> + Send {
        (**self).push_blob(repository, bytes)
    }
    fn referrers(
        &self,
        repository: &ImageRef,
        digest: &str,
    ) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send {
        (**self).referrers(repository, digest)
    }
}

/// Errors of the registry layer. Messages name the operation, the registry and the answer;
/// never credentials or tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry answered (or failed to answer) with a non-success class.
    #[error("{}", answer_message(self))]
    Answer {
        class: AnswerClass,
        /// The operation, e.g. `resolve ghcr.io/ublue-os/kinoite-main:latest`.
        what: String,
        /// The registry host asked.
        host: String,
        /// HTTP status, when there was an answer.
        status: Option<u16>,
        /// The registry's error codes and message, or the transport error.
        detail: String,
        /// `Retry-After` of the last answer.
        retry_after: Option<Duration>,
        /// Attempts made (retries included).
        attempts: u32,
    },
    /// The registry answered, but the content is unusable (digest mismatch, malformed or
    /// oversized manifest, unsupported media type, missing platform).
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error(transparent)]
    Reference(#[from] reference::Error),
    #[error(transparent)]
    Credentials(#[from] credentials::Error),
    #[error("invalid --insecure-registry {0:?}: expected HOST or HOST:PORT (no scheme, no path)")]
    InsecureRegistry(String),
    #[error("cannot build the registry HTTP client: {0}")]
    Client(String),
}

fn answer_message(error: &Error) -> String {
    let Error::Answer { class, what, host, status, detail, retry_after, attempts } = error else {
        return String::new();
    };
    let status = status.map(|s| format!("HTTP {s}")).unwrap_or_else(|| "no answer".into());
    let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
    let tries = if *attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() };
    match class {
        AnswerClass::Absent => format!("{what}: not found on {host} ({status}{detail})"),
        AnswerClass::Unauthorized => format!(
            "{what}: unauthorized by {host} ({status}{detail}); check the credentials for {host} \
             (--registry-config or the build's credentials Secret)"
        ),
        AnswerClass::RateLimited => {
            let after = retry_after.map(|d| format!(", Retry-After {}s", d.as_secs())).unwrap_or_default();
            format!("{what}: rate limited by {host} ({status}{after}{detail}){tries}")
        }
        AnswerClass::Unreachable => format!("{what}: registry {host} unreachable ({status}{detail}){tries}"),
        AnswerClass::Rejected => format!("{what}: {host} rejected the request ({status}{detail})"),
        AnswerClass::Present => format!("{what}: unexpected answer from {host} ({status}{detail})"),
    }
}

impl Error {
    /// The class of the registry's answer, for errors that are answers.
    pub fn class(&self) -> Option<AnswerClass> {
        match self {
            Error::Answer { class, .. } => Some(*class),
            _ => None,
        }
    }

    /// A real "absent" (404 / `*_UNKNOWN`): the only error that may mean "does not exist".
    pub fn is_absent(&self) -> bool {
        self.class() == Some(AnswerClass::Absent)
    }

    /// Rate limited or unreachable: worth trying again later (requeue with backoff).
    pub fn is_transient(&self) -> bool {
        self.class().is_some_and(AnswerClass::is_transient)
    }

    /// The registry's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Answer { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn with_attempts(mut self, n: u32) -> Error {
        if let Error::Answer { attempts, .. } = &mut self {
            *attempts = n;
        }
        self
    }
}

/// Shown for an `OciRegistry` and friends instead of their fields (which hold credentials).
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(class: AnswerClass) -> Error {
        Error::Answer {
            class,
            what: "resolve ghcr.io/a/b:latest".into(),
            host: "ghcr.io".into(),
            status: Some(429),
            detail: "TOOMANYREQUESTS: slow down".into(),
            retry_after: Some(Duration::from_secs(30)),
            attempts: 1,
        }
    }

    #[test]
    fn error_queries() {
        assert!(answer(AnswerClass::Absent).is_absent());
        assert!(!answer(AnswerClass::Unauthorized).is_absent());
        assert!(answer(AnswerClass::RateLimited).is_transient());
        assert!(!answer(AnswerClass::Rejected).is_transient());
        assert_eq!(answer(AnswerClass::RateLimited).retry_after(), Some(Duration::from_secs(30)));
        let invalid = Error::Invalid { what: "x".into(), detail: "y".into() };
        assert_eq!((invalid.class(), invalid.is_absent(), invalid.is_transient()), (None, false, false));
    }

    #[test]
    fn messages_say_what_happened() {
        let msg = answer(AnswerClass::RateLimited).with_attempts(4).to_string();
        assert_eq!(
            msg,
            "resolve ghcr.io/a/b:latest: rate limited by ghcr.io (HTTP 429, Retry-After 30s: TOOMANYREQUESTS: slow down) (after 4 attempts)"
        );
        assert!(answer(AnswerClass::Unauthorized).to_string().contains("unauthorized by ghcr.io"));
        assert!(answer(AnswerClass::Unreachable).to_string().contains("unreachable"));
        assert!(answer(AnswerClass::Absent).to_string().contains("not found"));
    }
}
