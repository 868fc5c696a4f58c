//! Registry credentials from docker `config.json` content (also the `.dockerconfigjson` key of a
//! `kubernetes.io/dockerconfigjson` Secret), parsed by our own code. Only static credentials are
//! accepted: credential helpers would mean executing programs named by a config file, and
//! identity tokens need an OAuth flow we do not implement, so both get a clear error instead of
//! silently falling back to anonymous access (which would make private images look missing).
//!
//! Secrets never leave this module in printable form: `Debug` shows host names only, and no
//! error message contains a username, password or `auth` value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde_json::{Map, Value};

/// Errors of credential loading. Messages name hosts and fields, never secret values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read registry config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registry config is not valid JSON ({0})")]
    Json(String),
    #[error("registry config must be a JSON object")]
    NotAnObject,
    #[error(
        "registry config names credsStore {0:?}: credential helpers are not supported (they would run \
         programs); put the credentials into auths.<host>.auth, e.g. with a kubernetes.io/dockerconfigjson Secret"
    )]
    CredsStore(String),
    #[error(
        "registry config names credHelpers for {0}: credential helpers are not supported (they would run \
         programs); put the credentials into auths.<host>.auth"
    )]
    CredHelpers(String),
    #[error("registry config uses the legacy .dockercfg layout (host keys at the top level); wrap them in \"auths\"")]
    Legacy,
    #[error("registry config: \"auths\" must be an object of host -> credentials")]
    AuthsNotAnObject,
    #[error("registry config: auths.{0:?} must be an object")]
    EntryNotAnObject(String),
    #[error(
        "registry config: auths.{0:?} uses identitytoken (an OAuth refresh token), which is not supported; \
         use auth or username/password"
    )]
    IdentityToken(String),
    #[error("registry config: auths.{0:?} uses registrytoken, which is not supported; use auth or username/password")]
    RegistryToken(String),
    #[error("registry config: auths.{0:?}.auth is not valid base64 of user:password")]
    AuthEncoding(String),
    #[error("registry config: auths.{0:?}.auth does not decode to user:password (no ':')")]
    AuthFormat(String),
    #[error("registry config: auths.{host:?}.{field} must be a string")]
    NotAString { host: String, field: &'static str },
    #[error("registry config: auths.{0:?} has no credentials (neither auth nor username/password)")]
    Empty(String),
    #[error("registry config: auths.{0:?} has username/password that disagree with its auth value")]
    Conflict(String),
    #[error("registry config: auths.{0:?} has an empty username")]
    EmptyUsername(String),
    #[error("registry config: hosts {0:?} and {1:?} are the same registry with different credentials")]
    Duplicate(String, String),
    #[error("registry config: auths key {0:?} is not a registry host")]
    BadHost(String),
}

/// One registry's username and password. Never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    username: String,
    password: String,
}

impl Credential {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credential {
        Credential { username: username.into(), password: password.into() }
    }

    pub(crate) fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// The key of a `kubernetes.io/dockerconfigjson` Secret that holds the docker config.
pub const DOCKER_CONFIG_SECRET_KEY: &str = ".dockerconfigjson";

/// Credentials by registry host: the content of one docker config. It is the key of the client
/// pool, so each distinct set (e.g. each build's Secret) gets its own client and token cache.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct CredentialSet {
    by_host: BTreeMap<String, Credential>,
}

impl CredentialSet {
    /// No credentials: every registry is accessed anonymously.
    pub fn anonymous() -> CredentialSet {
        CredentialSet::default()
    }

    /// Parses docker `config.json` / `.dockerconfigjson` content.
    pub fn from_docker_config(bytes: &[u8]) -> Result<CredentialSet, Error> {
        // serde_json's messages carry only line/column, never the offending content.
        let value: Value = serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
        let Value::Object(top) = value else { return Err(Error::NotAnObject) };
        reject_helpers(&top)?;
        let mut set = CredentialSet::default();
        let Some(auths) = top.get("auths") else {
            if top.iter().any(|(k, v)| looks_like_legacy_entry(k, v)) {
                return Err(Error::Legacy);
            }
            return Ok(set);
        };
        let Value::Object(auths) = auths else { return Err(Error::AuthsNotAnObject) };
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (key, entry) in auths {
            let host = canonical_host(key).ok_or_else(|| Error::BadHost(key.clone()))?;
            let credential = parse_entry(key, entry)?;
            if let Some(existing) = set.by_host.get(&host) {
                if *existing != credential {
                    return Err(Error::Duplicate(seen[&host].clone(), key.clone()));
                }
                continue;
            }
            seen.insert(host.clone(), key.clone());
            set.by_host.insert(host, credential);
        }
        Ok(set)
    }

    /// Reads and parses a docker `config.json` file.
    pub fn from_file(path: &Path) -> Result<CredentialSet, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read { path: path.display().to_string(), source })?;
        CredentialSet::from_docker_config(&bytes)
    }

    /// Adds or replaces the credential of a host (`ghcr.io`, `127.0.0.1:5000`, Docker Hub aliases).
    pub fn insert(&mut self, host: &str, credential: Credential) {
        let host = canonical_host(host).unwrap_or_else(|| host.to_ascii_lowercase());
        self.by_host.insert(host, credential);
    }

    /// The credential for a registry host, if any (Docker Hub aliases are one host).
    pub fn get(&self, host: &str) -> Option<&Credential> {
        canonical_host(host).and_then(|h| self.by_host.get(&h))
    }

    /// Hosts that have credentials (canonical names; Docker Hub is `docker.io`).
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.by_host.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

impl fmt::Debug for CredentialSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialSet").field("hosts", &self.by_host.keys().collect::<Vec<_>>()).finish()
    }
}

fn reject_helpers(top: &Map<String, Value>) -> Result<(), Error> {
    // An empty credsStore / credHelpers names no helper; docker itself treats them as unset.
    match top.get("credsStore") {
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::Null) | None => {}
        Some(Value::String(s)) => return Err(Error::CredsStore(s.clone())),
        Some(_) => return Err(Error::CredsStore("<non-string>".into())),
    }
    match top.get("credHelpers") {
        Some(Value::Object(m)) if m.is_empty() => {}
        Some(Value::Null) | None => {}
        Some(Value::Object(m)) => {
            return Err(Error::CredHelpers(m.keys().cloned().collect::<Vec<_>>().join(", ")));
        }
        Some(_) => return Err(Error::CredHelpers("<non-object>".into())),
    }
    Ok(())
}

fn looks_like_legacy_entry(key: &str, value: &Value) -> bool {
    (key.contains('.') || key.contains(':')) && value.get("auth").is_some()
}

fn parse_entry(key: &str, entry: &Value) -> Result<Credential, Error> {
    let Value::Object(entry) = entry else { return Err(Error::EntryNotAnObject(key.to_string())) };
    let text = |field: &'static str| -> Result<Option<&str>, Error> {
        match entry.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(Error::NotAString { host: key.to_string(), field }),
        }
    };
    if text("identitytoken")?.is_some() {
        return Err(Error::IdentityToken(key.to_string()));
    }
    if text("registrytoken")?.is_some() {
        return Err(Error::RegistryToken(key.to_string()));
    }
    let from_auth = match text("auth")? {
        Some(auth) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Error::AuthEncoding(key.to_string()))?;
            let (user, password) = decoded.split_once(':').ok_or_else(|| Error::AuthFormat(key.to_string()))?;
            Some(Credential::new(user, password))
        }
        None => None,
    };
    let (username, password) = (text("username")?, text("password")?);
    let from_fields = match (username, password) {
        (None, None) => None,
        (user, password) => Some(Credential::new(user.unwrap_or_default(), password.unwrap_or_default())),
    };
    let credential = match (from_auth, from_fields) {
        (Some(a), Some(b)) if a != b => return Err(Error::Conflict(key.to_string())),
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => return Err(Error::Empty(key.to_string())),
    };
    if credential.username.is_empty() {
        return Err(Error::EmptyUsername(key.to_string()));
    }
    Ok(credential)
}

/// The host a docker config key means: scheme and path dropped, lowercased, Docker Hub aliases
/// folded into `docker.io` (docker's own `ConvertToHostname` plus its Hub special case).
pub fn canonical_host(key: &str) -> Option<String> {
    let key = key.trim();
    let without_scheme = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or_default().to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        return None;
    }
    Some(match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        _ => host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn parse(json: &str) -> Result<CredentialSet, Error> {
        CredentialSet::from_docker_config(json.as_bytes())
    }

    #[test]
    fn auth_field_is_base64_user_colon_password() {
        let set = parse(&format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#, b64("bot:pa:ss"))).unwrap();
        let c = set.get("ghcr.io").unwrap();
        assert_eq!((c.username(), c.password()), ("bot", "pa:ss"), "only the first ':' separates");
        assert!(set.get("quay.io").is_none());
    }

    #[test]
    fn username_and_password_fields() {
        let set = parse(r#"{"auths":{"https://quay.io":{"username":"u","password":"p","email":"x@y"}}}"#).unwrap();
        let c = set.get("quay.io").unwrap();
        assert_eq!((c.username(), c.password()), ("u", "p"));
        assert_eq!(set.hosts().collect::<Vec<_>>(), ["quay.io"]);
    }

    #[test]
    fn consistent_auth_and_fields_as_kubectl_writes_them() {
        let json =
            format!(r#"{{"auths":{{"127.0.0.1:5000":{{"username":"u","password":"p","auth":"{}"}}}}}}"#, b64("u:p"));
        assert_eq!(parse(&json).unwrap().get("127.0.0.1:5000").unwrap().password(), "p");
        let conflict = format!(r#"{{"auths":{{"h.io":{{"username":"u","password":"q","auth":"{}"}}}}}}"#, b64("u:p"));
        assert!(matches!(parse(&conflict), Err(Error::Conflict(h)) if h == "h.io"));
    }

    #[test]
    fn docker_hub_aliases_are_one_host() {
        for key in ["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"] {
            let set = parse(&format!(r#"{{"auths":{{"{key}":{{"auth":"{}"}}}}}}"#, b64("hub:pw"))).unwrap();
            for alias in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
                assert_eq!(set.get(alias).map(Credential::username), Some("hub"), "{key} -> {alias}");
            }
        }
        let same = format!(
            r#"{{"auths":{{"docker.io":{{"auth":"{0}"}},"https://index.docker.io/v1/":{{"auth":"{0}"}}}}}}"#,
            b64("a:b")
        );
        assert_eq!(parse(&same).unwrap().hosts().count(), 1);
        let different = format!(
            r#"{{"auths":{{"docker.io":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            b64("a:b"),
            b64("a:c")
        );
        assert!(matches!(parse(&different), Err(Error::Duplicate(..))));
    }

    #[test]
    fn keys_with_scheme_and_path_are_hosts() {
        let set = parse(&format!(r#"{{"auths":{{"https://GHCR.io/v2/":{{"auth":"{}"}}}}}}"#, b64("a:b"))).unwrap();
        assert!(set.get("ghcr.io").is_some());
    }

    #[test]
    fn empty_and_unrelated_configs_are_anonymous() {
        for json in [r#"{}"#, r#"{"auths":{}}"#, r#"{"credsStore":"","credHelpers":{},"psFormat":"x"}"#] {
            assert!(parse(json).unwrap().is_empty(), "{json}");
        }
    }

    #[test]
    fn helpers_and_tokens_are_rejected() {
        assert!(matches!(parse(r#"{"credsStore":"desktop"}"#), Err(Error::CredsStore(s)) if s == "desktop"));
        assert!(matches!(parse(r#"{"credHelpers":{"gcr.io":"gcloud"}}"#), Err(Error::CredHelpers(h)) if h == "gcr.io"));
        assert!(matches!(parse(r#"{"auths":{"h.io":{"identitytoken":"t"}}}"#), Err(Error::IdentityToken(_))));
        assert!(matches!(parse(r#"{"auths":{"h.io":{"registrytoken":"t"}}}"#), Err(Error::RegistryToken(_))));
        let msg = parse(r#"{"credsStore":"desktop"}"#).unwrap_err().to_string();
        assert!(msg.contains("not supported"), "{msg}");
    }

    #[test]
    fn malformed_entries_are_rejected() {
        assert!(matches!(parse("not json"), Err(Error::Json(_))));
        assert!(matches!(parse("[]"), Err(Error::NotAnObject)));
        assert!(matches!(parse(r#"{"auths":[]}"#), Err(Error::AuthsNotAnObject)));
        assert!(matches!(parse(r#"{"auths":{"h.io":"x"}}"#), Err(Error::EntryNotAnObject(_))));
        assert!(matches!(parse(r#"{"auths":{"h.io":{"auth":"%%%"}}}"#), Err(Error::AuthEncoding(_))));
        let no_colon = format!(r#"{{"auths":{{"h.io":{{"auth":"{}"}}}}}}"#, b64("nocolon"));
        assert!(matches!(parse(&no_colon), Err(Error::AuthFormat(_))));
        assert!(matches!(parse(r#"{"auths":{"h.io":{}}}"#), Err(Error::Empty(_))));
        assert!(matches!(parse(r#"{"auths":{"h.io":{"auth":1}}}"#), Err(Error::NotAString { field: "auth", .. })));
        assert!(matches!(parse(r#"{"auths":{"h.io":{"password":"p"}}}"#), Err(Error::EmptyUsername(_))));
        assert!(matches!(parse(r#"{"auths":{"bad host!":{"username":"u","password":"p"}}}"#), Err(Error::BadHost(_))));
        let legacy = format!(r#"{{"ghcr.io":{{"auth":"{}"}}}}"#, b64("a:b"));
        assert!(matches!(parse(&legacy), Err(Error::Legacy)));
    }

    #[test]
    fn secrets_never_appear_in_debug_or_errors() {
        let secret = "pa55-VERY-secret";
        let auth = b64(&format!("someone:{secret}"));
        let set = parse(&format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{auth}"}}}}}}"#)).unwrap();
        let shown = format!("{set:?} {:?}", set.get("ghcr.io").unwrap());
        for leak in [secret, "someone", auth.as_str()] {
            assert!(!shown.contains(leak), "{shown}");
        }
        let bad = [
            format!(r#"{{"auths":{{"h.io":{{"auth":"{auth}","username":"x","password":"{secret}"}}}}}}"#),
            format!(r#"{{"auths":{{"h.io":{{"identitytoken":"{secret}"}}}}}}"#),
            format!(r#"{{"auths":{{"h.io":{{"auth":"{secret}"}}}}}}"#),
            format!(r#"{{"auths":{{"h.io":{{"auth":"{}"}}}}}}"#, b64(secret)),
            format!(r#"{{"auths":{{"h.io":{{"auth":"{auth}"}}}}, {secret}}}"#),
        ];
        for json in bad {
            let err = parse(&json).unwrap_err();
            let text = format!("{err} {err:?}");
            for leak in [secret, "someone", auth.as_str()] {
                assert!(!text.contains(leak), "{text}");
            }
        }
    }
}
