//! All OCI registry I/O. Every answer is classified (design §3 invariant 4): only a real
//! "absent" may ever lead to a rebuild; unauthorized, rate-limited and unreachable never do.

/// How a registry answered a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerClass {
    /// The object exists (a digest is known).
    Present,
    /// 404 / `MANIFEST_UNKNOWN` / `NAME_UNKNOWN` / `BLOB_UNKNOWN`.
    Absent,
    /// 401 / 403 / `DENIED` / `UNAUTHORIZED`.
    Unauthorized,
    /// 429 / `TOOMANYREQUESTS`.
    RateLimited,
    /// Connection failures, timeouts, 5xx.
    Unreachable,
}

impl AnswerClass {
    /// Classifies an HTTP status code of a registry response.
    pub fn from_status(status: u16) -> Self {
        match status {
            200..=399 => AnswerClass::Present,
            404 => AnswerClass::Absent,
            401 | 403 => AnswerClass::Unauthorized,
            429 => AnswerClass::RateLimited,
            _ => AnswerClass::Unreachable,
        }
    }

    /// Label value used in metrics (`registry_requests_total{result=...}`).
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerClass::Present => "present",
            AnswerClass::Absent => "absent",
            AnswerClass::Unauthorized => "unauthorized",
            AnswerClass::RateLimited => "rate_limited",
            AnswerClass::Unreachable => "unreachable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AnswerClass;

    #[test]
    fn only_404_is_absent() {
        assert_eq!(AnswerClass::from_status(404), AnswerClass::Absent);
        for status in [400, 401, 403, 429, 500, 502, 503] {
            assert_ne!(AnswerClass::from_status(status), AnswerClass::Absent, "{status}");
        }
        assert_eq!(AnswerClass::from_status(403), AnswerClass::Unauthorized);
        assert_eq!(AnswerClass::from_status(429), AnswerClass::RateLimited);
        assert_eq!(AnswerClass::from_status(503), AnswerClass::Unreachable);
    }
}
