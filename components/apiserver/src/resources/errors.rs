//! Every failure of a resource request, rendered as the `Status` Kubernetes returns for it.

use axum::http::StatusCode;
use axum::response::Response;
use embedded_store::StoreError;
use serde_json::json;

use super::registry::ResourceType;

/// One invalid field, as a `StatusCause`.
#[derive(Clone, Debug)]
pub struct FieldError {
    pub field: String,
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug)]
pub enum ApiError {
    NotFound {
        resource: &'static ResourceType,
        name: String,
    },
    NamespaceNotFound(String),
    AlreadyExists {
        resource: &'static ResourceType,
        name: String,
    },
    Conflict {
        resource: &'static ResourceType,
        name: String,
        message: String,
    },
    Invalid {
        resource: &'static ResourceType,
        name: String,
        causes: Vec<FieldError>,
    },
    /// Server-side apply conflicts: (manager, its apiVersion, field path) each.
    ApplyConflict(Vec<(String, String, String)>),
    BadRequest(String),
    Forbidden(String),
    MethodNotAllowed(String),
    UnsupportedMediaType(String),
    TooLarge,
    /// The resourceVersion asked for is older than the retained history.
    Gone(String),
    ServiceUnavailable(String),
    Internal(String),
    /// A whole `Status` given by someone else (an admission webhook's denial), served as it is.
    Status(serde_json::Value),
}

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NamespaceNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } | ApiError::ApplyConflict(_) => {
                StatusCode::CONFLICT
            }
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Status(status) => status
                .get("code")
                .and_then(serde_json::Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> serde_json::Value {
        if let ApiError::Status(status) = self {
            return status.clone();
        }
        let (reason, message, details) = match self {
            ApiError::NotFound { resource, name } => (
                "NotFound",
                format!("{} \"{name}\" not found", resource.qualified_plural()),
                Some(json!({"name": name, "group": resource.group, "kind": resource.plural})),
            ),
            ApiError::NamespaceNotFound(ns) => (
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
                Some(json!({"name": ns, "kind": "namespaces"})),
            ),
            ApiError::AlreadyExists { resource, name } => (
                "AlreadyExists",
                format!("{} \"{name}\" already exists", resource.qualified_plural()),
                Some(json!({"name": name, "group": resource.group, "kind": resource.plural})),
            ),
            ApiError::Conflict {
                resource,
                name,
                message,
            } => (
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {message}",
                    resource.qualified_plural()
                ),
                Some(json!({"name": name, "group": resource.group, "kind": resource.plural})),
            ),
            ApiError::Invalid {
                resource,
                name,
                causes,
            } => {
                let summary: Vec<String> = causes
                    .iter()
                    .map(|c| format!("{}: {}", c.field, c.message))
                    .collect();
                let causes: Vec<_> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                let shown = if summary.len() == 1 {
                    summary.join("")
                } else {
                    format!("[{}]", summary.join(", "))
                };
                (
                    "Invalid",
                    format!("{} \"{name}\" is invalid: {shown}", resource.kind),
                    Some(
                        json!({"name": name, "group": resource.group, "kind": resource.kind, "causes": causes}),
                    ),
                )
            }
            ApiError::ApplyConflict(conflicts) => {
                let causes: Vec<_> = conflicts
                    .iter()
                    .map(|(m, v, f)| {
                        json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {v}"), "field": f})
                    })
                    .collect();
                let message = match conflicts.as_slice() {
                    [(m, v, f)] => {
                        format!("Apply failed with 1 conflict: conflict with \"{m}\" using {v}: {f}")
                    }
                    many => {
                        let lines: Vec<String> = many
                            .iter()
                            .map(|(m, v, f)| format!("conflict with \"{m}\" using {v}: {f}"))
                            .collect();
                        format!("Apply failed with {} conflicts: {}", many.len(), lines.join("\n"))
                    }
                };
                ("Conflict", message, Some(json!({"causes": causes})))
            }
            ApiError::BadRequest(m) => ("BadRequest", m.clone(), None),
            ApiError::Forbidden(m) => ("Forbidden", m.clone(), None),
            ApiError::MethodNotAllowed(m) => ("MethodNotAllowed", m.clone(), None),
            ApiError::UnsupportedMediaType(m) => ("UnsupportedMediaType", m.clone(), None),
            ApiError::TooLarge => (
                "RequestEntityTooLarge",
                "the request body is over 3 MiB".to_string(),
                None,
            ),
            ApiError::Gone(m) => ("Expired", m.clone(), None),
            ApiError::ServiceUnavailable(m) => ("ServiceUnavailable", m.clone(), None),
            ApiError::Internal(m) => ("InternalError", m.clone(), None),
            ApiError::Status(_) => ("", String::new(), None),
        };
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": self.code().as_u16(),
        });
        if let (Some(details), Some(map)) = (details, status.as_object_mut()) {
            map.insert("details".into(), details);
        }
        status
    }

    pub fn response(&self) -> Response {
        crate::status::json(self.code(), &self.status())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted {
                requested,
                compact_revision,
            } => ApiError::Gone(format!(
                "too old resource version: {requested} ({compact_revision})"
            )),
            StoreError::FutureRevision { requested, current } => ApiError::ServiceUnavailable(format!(
                "Too large resource version: {requested}, current: {current}"
            )),
            StoreError::ValueTooLarge { .. } => ApiError::TooLarge,
            StoreError::Unavailable(detail) => ApiError::ServiceUnavailable(detail),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
