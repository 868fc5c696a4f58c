//! Image references. Parsing uses oci-client's `Reference` (the docker reference grammar); on top
//! of it we require fully qualified references, so a short name is never silently resolved
//! against Docker Hub (an image machines boot must not depend on a client default).

use std::fmt;

use oci_client::Reference;

/// Errors of image reference parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid { reference: String, reason: String },
    #[error(
        "image reference {0:?} is not fully qualified: it must start with a registry host, \
         e.g. ghcr.io/ublue-os/kinoite-main:latest (short names are never resolved against Docker Hub)"
    )]
    NotQualified(String),
    #[error("image reference {0:?} uses an unsupported digest algorithm: only sha256 digests are supported")]
    DigestAlgorithm(String),
    #[error("invalid digest {0:?}: expected sha256: followed by 64 lowercase hex digits")]
    Digest(String),
}

/// A fully qualified image reference: `host[:port]/repository[:tag][@sha256:digest]`.
/// Without tag and digest the tag is `latest`, as with every docker-compatible client.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef(Reference);

impl ImageRef {
    /// Parses a fully qualified reference.
    pub fn parse(input: &str) -> Result<ImageRef, Error> {
        // Docker's rule: the first component is a registry host only if it contains `.` or `:`
        // or is `localhost`; otherwise the docker grammar would prepend `docker.io/`.
        let first = input.split('/').next().unwrap_or_default();
        let has_path = input.contains('/');
        if !has_path || !(first.contains('.') || first.contains(':') || first == "localhost") {
            return Err(Error::NotQualified(input.to_string()));
        }
        let reference = Reference::try_from(input)
            .map_err(|e| Error::Invalid { reference: input.to_string(), reason: e.to_string() })?;
        if let Some(digest) = reference.digest() {
            if !digest.starts_with("sha256:") {
                return Err(Error::DigestAlgorithm(input.to_string()));
            }
            validate_digest(digest)?;
        }
        Ok(ImageRef(reference))
    }

    /// The registry host as written (`ghcr.io`, `127.0.0.1:5000`, `docker.io`).
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The host the registry API is served from (Docker Hub serves `docker.io` from
    /// `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        match self.registry() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            host => host,
        }
    }

    /// The repository path below the host (`ublue-os/kinoite-main`).
    pub fn repository(&self) -> &str {
        self.0.repository()
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }

    /// The digest, if the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// `host/repository`, the `Name` of a `Name@Digest` pin.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// What the registry API addresses: the digest when there is one (it is immutable), else the tag.
    pub fn reference(&self) -> &str {
        self.digest().or(self.tag()).unwrap_or("latest")
    }

    /// `host/repository@digest` (the tag is dropped: a pin names exactly one object).
    pub fn with_digest(&self, digest: &str) -> Result<ImageRef, Error> {
        validate_digest(digest)?;
        Ok(ImageRef(Reference::with_digest(
            self.registry().to_string(),
            self.repository().to_string(),
            digest.to_string(),
        )))
    }

    /// `host/repository:tag`.
    pub fn with_tag(&self, tag: &str) -> Result<ImageRef, Error> {
        ImageRef::parse(&format!("{}:{tag}", self.name()))
    }

    /// The same registry with another repository, no tag or digest (`latest` implied).
    pub fn with_repository(&self, repository: &str) -> Result<ImageRef, Error> {
        ImageRef::parse(&format!("{}/{repository}", self.registry()))
    }

    /// The oci-client reference underneath.
    pub fn as_oci(&self) -> &Reference {
        &self.0
    }
}

/// Checks `sha256:<64 lowercase hex>`.
pub fn validate_digest(digest: &str) -> Result<(), Error> {
    let ok = digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    if ok { Ok(()) } else { Err(Error::Digest(digest.to_string())) }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = self.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = self.digest() {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

impl std::str::FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_qualified_references() {
        let r = ImageRef::parse("ghcr.io/ublue-os/kinoite-main:latest").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.digest()),
            ("ghcr.io", "ublue-os/kinoite-main", Some("latest"), None)
        );
        assert_eq!(r.name(), "ghcr.io/ublue-os/kinoite-main");
        assert_eq!(r.reference(), "latest");

        let r = ImageRef::parse(&format!("127.0.0.1:5000/a/b@{D}")).unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag(), r.digest()), ("127.0.0.1:5000", "a/b", None, Some(D)));
        assert_eq!(r.reference(), D);
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/a/b@{D}"));

        let r = ImageRef::parse(&format!("localhost/x:v1@{D}")).unwrap();
        assert_eq!(r.reference(), D, "the digest wins over the tag");
        assert_eq!(ImageRef::parse("ghcr.io/a/b").unwrap().tag(), Some("latest"));
    }

    #[test]
    fn docker_hub_is_served_from_registry_1() {
        let r = ImageRef::parse("docker.io/library/alpine:3").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(ImageRef::parse("docker.io/alpine").unwrap().repository(), "library/alpine");
    }

    #[test]
    fn rejects_short_and_malformed_references() {
        for short in ["alpine", "alpine:3", "ublue-os/kinoite-main:latest", "library/alpine"] {
            assert_eq!(ImageRef::parse(short), Err(Error::NotQualified(short.into())), "{short}");
        }
        assert!(matches!(ImageRef::parse("ghcr.io/UPPER/x"), Err(Error::Invalid { .. })));
        assert!(matches!(ImageRef::parse("ghcr.io/a/b@sha256:abc"), Err(Error::Invalid { .. })));
        let sha512 = format!("ghcr.io/a/b@sha512:{}", "a".repeat(128));
        assert_eq!(ImageRef::parse(&sha512), Err(Error::DigestAlgorithm(sha512.clone())));
        assert!(ImageRef::parse("").is_err());
    }

    #[test]
    fn derived_references() {
        let r = ImageRef::parse("ghcr.io/a/b:v1").unwrap();
        assert_eq!(r.with_digest(D).unwrap().to_string(), format!("ghcr.io/a/b@{D}"));
        assert_eq!(r.with_tag("v2").unwrap().to_string(), "ghcr.io/a/b:v2");
        assert_eq!(r.with_repository("c/d").unwrap().to_string(), "ghcr.io/c/d:latest");
        assert!(r.with_digest("sha256:XYZ").is_err());
        assert!(r.with_tag("bad tag").is_err());
    }
}
