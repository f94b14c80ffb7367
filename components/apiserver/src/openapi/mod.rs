//! `/openapi/v3`: the index and one document per served group/version, generated ahead of time (see
//! `tests/openapi_documents.rs`) and kept gzipped in the binary. A client that accepts gzip (every Go client)
//! gets the stored bytes as they are.

mod documents;
mod v2;

use std::io::Read;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use documents::DOCUMENTS;

/// `GET /openapi/v3`: where each group/version's document is, with its hash (clients cache by it).
pub fn index() -> Response {
    let custom = crate::resources::custom::openapi_index_entries();
    let paths: Map<String, Value> = DOCUMENTS
        .iter()
        .map(|(path, hash, _)| (path.to_string(), hash.to_string()))
        .chain(custom)
        .map(|(path, hash)| {
            let url = json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")});
            (path, url)
        })
        .collect();
    let mut response = crate::status::json(StatusCode::OK, &json!({"paths": paths}));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    response
}

/// `GET /openapi/v3/<group/version path>`.
pub fn document(path: &str, headers: &HeaderMap) -> Response {
    let Some((_, hash, gzipped)) = DOCUMENTS.iter().find(|(p, _, _)| *p == path) else {
        // Custom resources' documents are built from their CRDs when asked for; they change with the CRDs.
        return match crate::resources::custom::openapi_document(path) {
            Some(document) => {
                let mut response = crate::status::json(StatusCode::OK, &document);
                response.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache, private"),
                );
                response
            }
            None => crate::status::not_found(),
        };
    };
    let gzip_ok = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            e.split(';')
                .next()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case("gzip"))
        });
    let mut response = if gzip_ok {
        let mut r = gzipped.into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        let mut json = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(*gzipped).read_to_end(&mut json) {
            // The bytes are compiled in and checked by a test; this cannot happen short of a broken build.
            tracing::error!(error = %e, path, "a built-in OpenAPI document does not decompress");
            return crate::status::failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string());
        }
        json.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
        headers.insert(header::ETAG, etag);
    }
    // The URL carries the document's hash, so what was fetched under it never changes.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, immutable"),
    );
    response
}

/// `GET /openapi/v2`: Swagger 2.0 as gnostic protobuf, the only form kubectl asks it in.
pub fn v2_document() -> Response {
    let mut response = v2::document().as_ref().clone().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
    );
    response
}

/// Every document, decompressed and parsed: for building indexes once at first use.
pub fn documents_json() -> impl Iterator<Item = Value> {
    DOCUMENTS.iter().filter_map(|(path, _, gzipped)| {
        let mut json = Vec::new();
        let parsed = flate2::read::GzDecoder::new(*gzipped)
            .read_to_end(&mut json)
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_slice(&json).map_err(|e| e.to_string()));
        match parsed {
            Ok(document) => Some(document),
            Err(e) => {
                tracing::error!(error = %e, path, "a built-in OpenAPI document does not load");
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_group_version_has_a_document_that_decompresses() {
        for r in crate::resources::registry::RESOURCES {
            let path = if r.group.is_empty() {
                "api/v1".to_string()
            } else {
                format!("apis/{}/{}", r.group, r.version)
            };
            let (_, _, gz) = DOCUMENTS.iter().find(|(p, _, _)| *p == path).unwrap();
            let mut json = Vec::new();
            flate2::read::GzDecoder::new(*gz).read_to_end(&mut json).unwrap();
            let doc: Value = serde_json::from_slice(&json).unwrap();
            assert!(
                doc["paths"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|p| p.ends_with(&format!("/{}", r.plural)))
            );
        }
    }
}
