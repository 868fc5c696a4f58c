//! The simple-signing payload cosign and containers/image sign, written and read exactly as
//! containers/image parses it (`signature/internal/sigstore_payload.go`): top level `critical`
//! and `optional`; `critical` exactly `type`, `image`, `identity`; `image` exactly
//! `docker-manifest-digest`; `identity` exactly `docker-reference`.

use serde::{Deserialize, Serialize};

use super::Error;

pub const PAYLOAD_TYPE: &str = "cosign container image signature";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    critical: Critical,
    optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// What a payload claims (only trustworthy once its signature verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `docker-reference`: `host/path` (cosign), or with `:tag` (containers/image).
    pub reference: String,
    pub digest: String,
}

impl Claim {
    /// Whether the claim names `repository` (`host/path`) the way a `matchRepository` policy
    /// compares: the reference's repository, with or without a tag.
    pub fn names_repository(&self, repository: &str) -> bool {
        let name = match self.reference.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => name,
            _ => self.reference.as_str(),
        };
        name == repository
    }
}

/// The payload for `repository@digest`, as cosign writes it (repository only, `optional` null).
/// Deterministic bytes: the same image always gets the same payload.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    let payload = Payload {
        critical: Critical {
            identity: Identity { docker_reference: repository.to_string() },
            image: Image { docker_manifest_digest: digest.to_string() },
            kind: PAYLOAD_TYPE.to_string(),
        },
        optional: None,
    };
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Parses a payload as strictly as containers/image does.
pub fn parse(bytes: &[u8]) -> Result<Claim, Error> {
    let payload: Payload =
        serde_json::from_slice(bytes).map_err(|e| Error::Payload(format!("not a simple-signing payload: {e}")))?;
    // `optional` must be present (null or an object); serde's Option accepts a missing field.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::Payload(e.to_string()))?;
    if value.get("optional").is_none() {
        return Err(Error::Payload("the payload has no `optional` member".into()));
    }
    if payload.critical.kind != PAYLOAD_TYPE {
        return Err(Error::Payload(format!("payload type {:?} is not {PAYLOAD_TYPE:?}", payload.critical.kind)));
    }
    Ok(Claim {
        reference: payload.critical.identity.docker_reference,
        digest: payload.critical.image.docker_manifest_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_cosigns_payload_and_reads_it_back() {
        let bytes = payload("127.0.0.1:5000/o/kinoite-zfs", "sha256:ab");
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/o/kinoite-zfs"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":null}"#
        );
        let claim = parse(&bytes).unwrap();
        assert_eq!(claim.digest, "sha256:ab");
        assert!(claim.names_repository("127.0.0.1:5000/o/kinoite-zfs"));
        assert!(!claim.names_repository("127.0.0.1:5000/o/kinoite-zfs-candidate"));
    }

    #[test]
    fn a_tagged_reference_names_its_repository() {
        let claim = Claim { reference: "127.0.0.1:5000/o/s:latest".into(), digest: String::new() };
        assert!(claim.names_repository("127.0.0.1:5000/o/s"));
        let port_only = Claim { reference: "127.0.0.1:5000/o/s".into(), digest: String::new() };
        assert!(!port_only.names_repository("127.0.0.1"));
    }

    #[test]
    fn strict_like_containers_image() {
        let ok = r#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"d"},"type":"cosign container image signature"},"optional":{"creator":"x","timestamp":1}}"#;
        assert!(parse(ok.as_bytes()).is_ok());
        for bad in [
            r#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"d"},"type":"cosign container image signature"}}"#,
            r#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"d"},"type":"other"},"optional":null}"#,
            r#"{"critical":{"identity":{"docker-reference":"r"},"image":{"Docker-manifest-digest":"d"},"type":"cosign container image signature"},"optional":null}"#,
            r#"{"critical":{"identity":{"docker-reference":"r","x":1},"image":{"docker-manifest-digest":"d"},"type":"cosign container image signature"},"optional":null}"#,
            r#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"d"},"type":"cosign container image signature","extra":1},"optional":null}"#,
            "[]",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
