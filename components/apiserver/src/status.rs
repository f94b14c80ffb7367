//! Errors as Kubernetes reports them: a `Status` object with code, reason and message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status};

pub fn failure(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let status = Status {
        code: Some(i32::from(code.as_u16())),
        message: Some(message.into()),
        metadata: ListMeta::default(),
        reason: Some(reason.to_string()),
        status: Some("Failure".to_string()),
        details: None,
    };
    json(code, &status_value(&status))
}

fn status_value(status: &Status) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("kind".into(), "Status".into());
        map.insert("apiVersion".into(), "v1".into());
        map.entry("metadata").or_insert_with(|| serde_json::json!({}));
    }
    value
}

pub fn json(code: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (code, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A response whose body is JSON already serialised.
pub fn json_bytes(code: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (code, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn unauthorized() -> Response {
    failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
}

pub fn not_found() -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}
