//! Registry authentication: `WWW-Authenticate` challenges (Basic, or Bearer with a token
//! service, the docker token protocol) and the scopes a request needs. Pure parsing; the client
//! does the requests.

/// What a registry asked for in its `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value (`Basic realm="x"` or
    /// `Bearer realm="https://auth/token",service="registry",scope="repository:a:pull"`).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let get = |key: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone());
        let realm = get("realm").filter(|r| !r.is_empty())?;
        Some(Challenge::Bearer { realm, service: get("service").filter(|s| !s.is_empty()) })
    }
}

/// `key=value` / `key="quoted, value"` pairs separated by commas (RFC 9110 auth-params).
fn parse_params(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.trim().is_empty() {
            return out;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string();
        }
        out.push((key.trim().to_string(), value));
    }
}

/// Access a request needs on one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Pull,
    Push,
}

/// Token scopes of a request: `repository:<name>:pull` or `...:pull,push`. Several for a
/// cross-repository mount (push on the target, pull on the source).
pub fn scopes(repos: &[(&str, Access)]) -> Vec<String> {
    repos
        .iter()
        .map(|(repo, access)| match access {
            Access::Pull => format!("repository:{repo}:pull"),
            Access::Push => format!("repository:{repo}:pull,push"),
        })
        .collect()
}

/// The token of a token-service answer (`token`, or OAuth2's `access_token`) and its lifetime.
#[derive(serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn token(&self) -> Option<&str> {
        [&self.token, &self.access_token].into_iter().find(|t| !t.is_empty()).map(String::as_str)
    }
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenResponse(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(Challenge::parse(r#"Basic realm="kzo-test""#), Some(Challenge::Basic));
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer { realm: "https://ghcr.io/token".into(), service: Some("ghcr.io".into()) })
        );
        assert_eq!(
            Challenge::parse(r#"bearer  service=reg, realm="https://auth.example/t\"x""#),
            Some(Challenge::Bearer { realm: "https://auth.example/t\"x".into(), service: Some("reg".into()) })
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None, "a bearer challenge needs a realm");
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse(""), None);
    }

    #[test]
    fn scopes_per_access() {
        assert_eq!(
            scopes(&[("a/b", Access::Push), ("c", Access::Pull)]),
            ["repository:a/b:pull,push", "repository:c:pull"]
        );
    }

    #[test]
    fn token_field_variants() {
        let t: TokenResponse = serde_json::from_str(r#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((t.token(), t.expires_in), (Some("abc"), Some(300)));
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.token(), Some("xyz"));
        let t: TokenResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(t.token(), None);
        assert!(!format!("{t:?}").contains("xyz"));
    }
}
