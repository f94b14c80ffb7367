//! What a request asks to do, read from its method and URL exactly as kube-apiserver's `RequestInfoFactory`
//! (staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go) reads it: the authorizer, the metrics and
//! the audit of a request all see the same attributes.

use axum::http::Method;

/// kube-apiserver's `RequestInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// The authorization verb: get, list, watch, create, update, patch, delete, deletecollection, proxy (or the
    /// lowercase method of a non-resource request).
    pub verb: String,
    pub resource_request: bool,
    /// The URL path (what a non-resource rule matches).
    pub path: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub name: String,
    pub subresource: String,
    /// The `fieldSelector` of a list or watch (the Node authorizer reads `spec.nodeName` from it).
    pub field_selector: String,
}

/// Verbs that are path segments before the resource (`/api/v1/watch/pods`, `/api/v1/proxy/...`).
const SPECIAL_VERBS: [&str; 2] = ["proxy", "watch"];
/// Subresources of a namespace itself (`namespaces/<name>/status`), not namespaced resources.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl RequestInfo {
    pub fn of(method: &Method, path: &str, query: Option<&str>) -> RequestInfo {
        let mut info = RequestInfo {
            verb: method.as_str().to_ascii_lowercase(),
            path: path.to_string(),
            ..RequestInfo::default()
        };
        // Go's splitPath: trim the slashes, split on them (empty segments kept, as Go keeps them).
        let trimmed = path.trim_matches('/');
        let mut parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
            return info;
        }
        let prefix = parts.remove(0);
        if prefix == "apis" {
            if parts.len() < 3 {
                return info;
            }
            info.group = parts.remove(0).to_string();
        }
        info.resource_request = true;
        info.version = parts.remove(0).to_string();
        if SPECIAL_VERBS.contains(&parts[0]) {
            if parts.len() < 2 {
                // kube-apiserver answers this with an error; as a resource request of no resource it is denied.
                return info;
            }
            info.verb = parts.remove(0).to_string();
        } else {
            info.verb = match *method {
                Method::POST => "create",
                Method::GET | Method::HEAD => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "",
            }
            .to_string();
        }
        if parts[0] == "namespaces" && parts.len() > 1 {
            info.namespace = parts[1].to_string();
            if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                parts.drain(..2);
            }
        }
        if parts.len() >= 3 && info.verb != "proxy" {
            info.subresource = parts[2].to_string();
        }
        if parts.len() >= 2 {
            info.name = parts[1].to_string();
        }
        if let Some(resource) = parts.first() {
            info.resource = resource.to_string();
        }
        let query: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        if info.name.is_empty() && info.verb == "get" {
            // Go's bool query decoding: the first value, false only when "0", "false" or empty.
            let watch = query
                .iter()
                .find(|(k, _)| k == "watch")
                .is_some_and(|(_, v)| !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")));
            info.verb = if watch { "watch" } else { "list" }.to_string();
            if let Some((_, selector)) = query.iter().find(|(k, _)| k == "fieldSelector") {
                info.field_selector = selector.clone();
                if let Some(name) = exact_match(selector, "metadata.name")
                    && valid_path_segment(name)
                {
                    info.name = name.to_string();
                }
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_string();
        }
        info
    }
}

/// The value a field selector requires `field` to equal (`field=x` or `field==x`), as
/// `fields.Selector.RequiresExactMatch`.
pub fn exact_match<'a>(selector: &'a str, field: &str) -> Option<&'a str> {
    selector.split(',').find_map(|term| {
        let term = term.trim();
        if term.contains("!=") {
            return None;
        }
        let (name, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        (name.trim() == field).then_some(value.trim())
    })
}

/// `path.IsValidPathSegmentName`: not `.` or `..`, and no `/` or `%`.
fn valid_path_segment(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, path: &str, query: Option<&str>) -> RequestInfo {
        RequestInfo::of(&method, path, query)
    }

    /// The cases of requestinfo_test.go's TestGetAPIRequestInfo.
    #[test]
    fn kube_apiserver_request_info_cases() {
        let cases: &[(Method, &str, Option<&str>, [&str; 7])] = &[
            // method, url, query -> verb, group, version, namespace, resource, name, subresource
            (
                Method::GET,
                "/api/v1/namespaces",
                None,
                ["list", "", "v1", "", "namespaces", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/other",
                None,
                ["get", "", "v1", "other", "namespaces", "other", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/other/pods",
                None,
                ["list", "", "v1", "other", "pods", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/other/pods/foo",
                None,
                ["get", "", "v1", "other", "pods", "foo", ""],
            ),
            (
                Method::HEAD,
                "/api/v1/namespaces/other/pods/foo",
                None,
                ["get", "", "v1", "other", "pods", "foo", ""],
            ),
            (
                Method::GET,
                "/api/v1/pods",
                None,
                ["list", "", "v1", "", "pods", "", ""],
            ),
            (
                Method::HEAD,
                "/api/v1/pods",
                None,
                ["list", "", "v1", "", "pods", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/other/pods/foo",
                None,
                ["get", "", "v1", "other", "pods", "foo", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/other/pods",
                None,
                ["list", "", "v1", "other", "pods", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/proxy/namespaces/other/pods/foo",
                None,
                ["proxy", "", "v1", "other", "pods", "foo", ""],
            ),
            (
                Method::GET,
                "/api/v1/watch/pods",
                None,
                ["watch", "", "v1", "", "pods", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/pods",
                Some("watch=true"),
                ["watch", "", "v1", "", "pods", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/pods",
                Some("watch=false"),
                ["list", "", "v1", "", "pods", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/other/pods",
                None,
                ["watch", "", "v1", "other", "pods", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/other/pods",
                Some("fieldSelector=metadata.name%3Dfoo"),
                ["list", "", "v1", "other", "pods", "foo", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/other/pods",
                Some("watch=1&fieldSelector=metadata.name%3D%3Dfoo"),
                ["watch", "", "v1", "other", "pods", "foo", ""],
            ),
            (
                Method::GET,
                "/apis/extensions/v1beta1/namespaces/other/extensions",
                None,
                ["list", "extensions", "v1beta1", "other", "extensions", "", ""],
            ),
            (
                Method::GET,
                "/apis/extensions/v1beta1/extensions",
                None,
                ["list", "extensions", "v1beta1", "", "extensions", "", ""],
            ),
            (
                Method::POST,
                "/api/v1/namespaces/other/pods",
                None,
                ["create", "", "v1", "other", "pods", "", ""],
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/other/pods/foo",
                None,
                ["update", "", "v1", "other", "pods", "foo", ""],
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/other/pods/foo",
                None,
                ["patch", "", "v1", "other", "pods", "foo", ""],
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/other/pods/foo",
                None,
                ["delete", "", "v1", "other", "pods", "foo", ""],
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/other/pods",
                None,
                ["deletecollection", "", "v1", "other", "pods", "", ""],
            ),
            (
                Method::POST,
                "/api/v1/namespaces/other/pods/foo/exec",
                None,
                ["create", "", "v1", "other", "pods", "foo", "exec"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/other/pods/foo/log",
                None,
                ["get", "", "v1", "other", "pods", "foo", "log"],
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/other/finalize",
                None,
                ["update", "", "v1", "other", "namespaces", "other", "finalize"],
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/other/status",
                None,
                ["update", "", "v1", "other", "namespaces", "other", "status"],
            ),
            (
                Method::PUT,
                "/api/v1/nodes/n1/status",
                None,
                ["update", "", "v1", "", "nodes", "n1", "status"],
            ),
            (
                Method::POST,
                "/api/v1/namespaces/ns/serviceaccounts/sa/token",
                None,
                ["create", "", "v1", "ns", "serviceaccounts", "sa", "token"],
            ),
        ];
        for (method, path, query, want) in cases {
            let i = of(method.clone(), path, *query);
            assert!(i.resource_request, "{path}");
            let got = [
                i.verb.as_str(),
                &i.group,
                &i.version,
                &i.namespace,
                &i.resource,
                &i.name,
                &i.subresource,
            ];
            assert_eq!(&got, want, "{method} {path} {query:?}");
        }
    }

    #[test]
    fn non_resource_requests() {
        for (method, path, verb) in [
            (Method::GET, "/healthz", "get"),
            (Method::GET, "/api", "get"),
            (Method::GET, "/api/v1", "get"),
            (Method::GET, "/apis/apps/v1", "get"),
            (Method::POST, "/openapi/v3", "post"),
            (Method::GET, "/", "get"),
        ] {
            let i = of(method, path, None);
            assert!(!i.resource_request, "{path}");
            assert_eq!((i.verb.as_str(), i.path.as_str()), (verb, path));
        }
    }
}
