//! Classification of registry answers (design §3 invariant 4, hazard H5). Pure: the HTTP layer
//! hands in the status, the error codes of the body and the `Retry-After` header.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// How a registry answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnswerClass {
    /// 2xx: the object exists / the write was accepted.
    Present,
    /// 404, or `MANIFEST_UNKNOWN` / `NAME_UNKNOWN` / `BLOB_UNKNOWN`: the only answer that means
    /// "does not exist".
    Absent,
    /// 401 / 403 / `UNAUTHORIZED` / `DENIED`.
    Unauthorized,
    /// 429 / `TOOMANYREQUESTS` (transient; `Retry-After` honoured).
    RateLimited,
    /// Connection failures, timeouts, 408, 5xx (transient).
    Unreachable,
    /// Any other client error (400, 405, 413, ...): our request was refused; retrying cannot help.
    Rejected,
}

impl AnswerClass {
    /// All classes, in a stable order (for metrics output).
    pub const ALL: [AnswerClass; 6] = [
        AnswerClass::Present,
        AnswerClass::Absent,
        AnswerClass::Unauthorized,
        AnswerClass::RateLimited,
        AnswerClass::Unreachable,
        AnswerClass::Rejected,
    ];

    /// Classifies an HTTP answer from its status and the OCI error codes of its body.
    pub fn classify(status: u16, codes: &[String]) -> AnswerClass {
        let has = |code: &str| codes.iter().any(|c| c == code);
        match status {
            200..=299 => AnswerClass::Present,
            429 => AnswerClass::RateLimited,
            _ if has("TOOMANYREQUESTS") => AnswerClass::RateLimited,
            401 | 403 => AnswerClass::Unauthorized,
            _ if has("UNAUTHORIZED") || has("DENIED") => AnswerClass::Unauthorized,
            404 => AnswerClass::Absent,
            400..=499 if has("MANIFEST_UNKNOWN") || has("NAME_UNKNOWN") || has("BLOB_UNKNOWN") => AnswerClass::Absent,
            408 | 500..=599 => AnswerClass::Unreachable,
            _ => AnswerClass::Rejected,
        }
    }

    /// Classifies a status without a body (HEAD answers have none).
    pub fn from_status(status: u16) -> AnswerClass {
        AnswerClass::classify(status, &[])
    }

    /// Transient answers are retried with backoff; no other class ever is.
    pub fn is_transient(self) -> bool {
        matches!(self, AnswerClass::RateLimited | AnswerClass::Unreachable)
    }

    /// Label value used in metrics (`registry_requests_total{result=...}`).
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerClass::Present => "present",
            AnswerClass::Absent => "absent",
            AnswerClass::Unauthorized => "unauthorized",
            AnswerClass::RateLimited => "rate_limited",
            AnswerClass::Unreachable => "unreachable",
            AnswerClass::Rejected => "rejected",
        }
    }
}

/// The OCI error envelope of a response body (`{"errors":[{"code":..,"message":..}]}`): codes and
/// a short message. Anything else yields no codes.
pub fn error_envelope(body: &[u8]) -> (Vec<String>, String) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) => {
            let codes = envelope.errors.iter().map(|e| e.code.to_ascii_uppercase()).collect();
            let message = envelope
                .errors
                .iter()
                .map(|e| if e.message.is_empty() { e.code.clone() } else { format!("{}: {}", e.code, e.message) })
                .collect::<Vec<_>>()
                .join("; ");
            (codes, shorten(&message))
        }
        Err(_) => (Vec::new(), shorten(&String::from_utf8_lossy(body))),
    }
}

/// One line, at most 200 characters (registry bodies can be whole HTML pages).
fn shorten(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 { format!("{}…", line.chars().take(200).collect::<String>()) } else { line }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (relative to `now`). A date in the past
/// means "now" (zero).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = k8s_openapi::jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value).ok()?;
    let millis = at.as_millisecond().saturating_sub(now.as_millisecond());
    Some(Duration::from_millis(u64::try_from(millis).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_not_found_answers_are_absent() {
        assert_eq!(AnswerClass::from_status(404), AnswerClass::Absent);
        for code in ["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"] {
            assert_eq!(AnswerClass::classify(404, &codes(&[code])), AnswerClass::Absent);
            assert_eq!(AnswerClass::classify(400, &codes(&[code])), AnswerClass::Absent);
        }
        for status in [400, 401, 403, 405, 408, 409, 429, 500, 502, 503, 504] {
            assert_ne!(AnswerClass::from_status(status), AnswerClass::Absent, "{status}");
        }
        // A 404 that says "denied" is an authorization problem (some registries hide private
        // repositories this way); it must never look missing.
        assert_eq!(AnswerClass::classify(404, &codes(&["DENIED"])), AnswerClass::Unauthorized);
        assert_eq!(AnswerClass::classify(404, &codes(&["TOOMANYREQUESTS"])), AnswerClass::RateLimited);
        assert_eq!(AnswerClass::classify(500, &codes(&["MANIFEST_UNKNOWN"])), AnswerClass::Unreachable);
    }

    #[test]
    fn other_classes() {
        assert_eq!(AnswerClass::from_status(200), AnswerClass::Present);
        assert_eq!(AnswerClass::from_status(201), AnswerClass::Present);
        assert_eq!(AnswerClass::from_status(401), AnswerClass::Unauthorized);
        assert_eq!(AnswerClass::from_status(403), AnswerClass::Unauthorized);
        assert_eq!(AnswerClass::classify(400, &codes(&["UNAUTHORIZED"])), AnswerClass::Unauthorized);
        assert_eq!(AnswerClass::from_status(429), AnswerClass::RateLimited);
        assert_eq!(AnswerClass::classify(403, &codes(&["TOOMANYREQUESTS"])), AnswerClass::RateLimited);
        assert_eq!(AnswerClass::from_status(503), AnswerClass::Unreachable);
        assert_eq!(AnswerClass::from_status(408), AnswerClass::Unreachable);
        assert_eq!(AnswerClass::from_status(400), AnswerClass::Rejected);
        assert_eq!(AnswerClass::from_status(302), AnswerClass::Rejected);
        let transient: Vec<_> = AnswerClass::ALL.into_iter().filter(|c| c.is_transient()).collect();
        assert_eq!(transient, [AnswerClass::RateLimited, AnswerClass::Unreachable]);
    }

    #[test]
    fn envelope_codes_and_message() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        let (c, m) = error_envelope(body);
        assert_eq!(c, ["MANIFEST_UNKNOWN"]);
        assert_eq!(m, "MANIFEST_UNKNOWN: manifest unknown");
        let (c, m) = error_envelope(b"<html>\n  <body>Bad   gateway</body>\n</html>");
        assert!(c.is_empty());
        assert_eq!(m, "<html> <body>Bad gateway</body> </html>");
        assert_eq!(error_envelope("x".repeat(500).as_bytes()).1.chars().count(), 201);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now: Timestamp = "2015-10-21T07:28:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
