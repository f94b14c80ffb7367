//! Discovery. No resources are served yet. client-go rejects a group version that lists no
//! resources ("received empty response for: v1"), and kubectl 1.29 crashes when `/api` is missing,
//! so `/api` offers no versions and `/apis` no groups. Resources, aggregated discovery and OpenAPI
//! arrive with the resource layer.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIVersions};

use crate::server::AppState;
use crate::status;

fn with_kind(value: impl serde::Serialize, kind: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.insert("kind".into(), kind.into());
        map.insert("apiVersion".into(), "v1".into());
    }
    v
}

async fn api() -> Response {
    let versions = APIVersions {
        versions: vec![],
        server_address_by_client_cidrs: vec![],
    };
    status::json(StatusCode::OK, &with_kind(versions, "APIVersions"))
}

async fn apis() -> Response {
    status::json(
        StatusCode::OK,
        &with_kind(APIGroupList { groups: vec![] }, "APIGroupList"),
    )
}

pub fn routes(router: axum::Router<Arc<AppState>>) -> axum::Router<Arc<AppState>> {
    router.route("/api", get(api)).route("/apis", get(apis))
}
