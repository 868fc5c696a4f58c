//! API errors, rendered as `metav1.Status` exactly where clients look for them (code, reason,
//! message, details.causes), so kube's `ErrorResponse`, kubectl and kube-runtime react to them like
//! to the real apiserver's.

use serde_json::{Value, json};

/// One field problem of an `Invalid` (422) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub field: String,
    pub message: String,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { group: String, resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { group: String, resource: String, name: String },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {reason}")]
    Conflict { group: String, resource: String, name: String, reason: String },
    #[error("Apply failed with {} conflict{}: {}", conflicts.len(), if conflicts.len() == 1 { "" } else { "s" }, conflicts.join("\n"))]
    ApplyConflict { group: String, resource: String, name: String, conflicts: Vec<String> },
    #[error("{} \"{name}\" is invalid: {}", qualify(kind, group), render_causes(causes))]
    Invalid { group: String, kind: String, name: String, causes: Vec<Cause> },
    /// A JSON patch that cannot be applied (a failed `test`, a missing path): 422 like the apiserver.
    #[error("{0}")]
    UnprocessablePatch(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Internal(String),
    /// A failure injected by a test (`ApiSim::fail_next`).
    #[error("injected failure ({code}) for {verb} {resource}")]
    Injected { code: u16, verb: String, resource: String },
}

fn qualify(kind: &str, group: &str) -> String {
    if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") }
}

fn render_causes(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    if parts.len() == 1 { parts[0].clone() } else { format!("[{}]", parts.join(", ")) }
}

impl ApiError {
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => 409,
            ApiError::Invalid { .. } | ApiError::UnprocessablePatch(_) => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Forbidden(_) => 403,
            ApiError::MethodNotAllowed => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::NotAcceptable(_) => 406,
            ApiError::Gone(_) => 410,
            ApiError::Internal(_) => 500,
            ApiError::Injected { code, .. } => *code,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } | ApiError::UnprocessablePatch(_) => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::Gone(_) => "Expired",
            ApiError::Internal(_) => "InternalError",
            ApiError::Injected { code, .. } => reason_for_code(*code),
        }
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound { group, resource, name }
            | ApiError::AlreadyExists { group, resource, name }
            | ApiError::Conflict { group, resource, name, .. } => {
                Some(json!({"name": name, "group": group, "kind": short_resource(resource)}))
            }
            ApiError::ApplyConflict { group, resource, name, conflicts } => Some(json!({
                "name": name, "group": group, "kind": short_resource(resource),
                "causes": conflicts.iter().map(|c| json!({"reason": "FieldManagerConflict", "message": c})).collect::<Vec<_>>(),
            })),
            ApiError::Invalid { group, kind, name, causes } => Some(json!({
                "name": name, "group": group, "kind": kind,
                "causes": causes.iter().map(|c| json!({"reason": "FieldValueInvalid", "message": c.message, "field": c.field})).collect::<Vec<_>>(),
            })),
            ApiError::Injected { code: 429, .. } => Some(json!({"retryAfterSeconds": 1})),
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

/// `zfsimagebuilds.kinoite-zfs.io` -> `zfsimagebuilds` (details.kind is the plural resource name).
fn short_resource(resource: &str) -> &str {
    resource.split_once('.').map_or(resource, |(plural, _)| plural)
}

/// The `reason` the apiserver uses for a status code (for injected failures).
pub fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// A `Status` object for a successful delete of an object that is not returned.
pub fn success_status(group: &str, resource: &str, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": resource, "uid": uid},
    })
}
