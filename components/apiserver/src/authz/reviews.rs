//! authorization.k8s.io/v1 reviews (pkg/registry/authorization): SelfSubjectAccessReview ("may I?"),
//! SubjectAccessReview and LocalSubjectAccessReview ("may they?"), SelfSubjectRulesReview ("what may I do in this
//! namespace?", `kubectl auth can-i --list`). Each is answered from the same authorizer as requests are, and
//! never stored.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Authorization, Decision};
use crate::authn::UserInfo;
use crate::request_info::RequestInfo;

const GROUP_VERSION: &str = "authorization.k8s.io/v1";

/// Which review a path asks for: (kind, namespace of a LocalSubjectAccessReview).
pub fn review_target(path: &str) -> Option<(&'static str, Option<&str>)> {
    let rest = path
        .trim_end_matches('/')
        .strip_prefix("/apis/authorization.k8s.io/v1/")?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["selfsubjectaccessreviews"] => Some(("SelfSubjectAccessReview", None)),
        ["subjectaccessreviews"] => Some(("SubjectAccessReview", None)),
        ["selfsubjectrulesreviews"] => Some(("SelfSubjectRulesReview", None)),
        ["namespaces", ns, "localsubjectaccessreviews"] => Some(("LocalSubjectAccessReview", Some(*ns))),
        _ => None,
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    crate::status::failure(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn invalid(kind: &str, field: &str, value: &str, detail: &str) -> Response {
    let message =
        format!("{kind}.authorization.k8s.io \"\" is invalid: {field}: Invalid value: {value}: {detail}");
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
        "reason": "Invalid", "code": 422,
        "details": {"group": "authorization.k8s.io", "kind": kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {detail}"), "field": field}]},
    });
    crate::status::json(StatusCode::UNPROCESSABLE_ENTITY, &status)
}

/// The request a review's `spec` describes (`ResourceAttributesFrom` / `NonResourceAttributesFrom`).
fn attributes(spec: &Value) -> Option<RequestInfo> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        return Some(RequestInfo {
            verb: text(r, "verb"),
            resource_request: true,
            group: text(r, "group"),
            version: text(r, "version"),
            namespace: text(r, "namespace"),
            resource: text(r, "resource"),
            name: text(r, "name"),
            subresource: text(r, "subresource"),
            field_selector: r
                .pointer("/fieldSelector/rawSelector")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            ..RequestInfo::default()
        });
    }
    let n = spec.get("nonResourceAttributes").filter(|v| v.is_object())?;
    Some(RequestInfo {
        verb: text(n, "verb"),
        path: text(n, "path"),
        ..RequestInfo::default()
    })
}

fn review_status(decision: Decision) -> Value {
    match decision {
        Decision::Allow(reason) if reason.is_empty() => json!({"allowed": true}),
        Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        Decision::Deny(reason) => json!({"allowed": false, "denied": true, "reason": reason}),
        Decision::NoOpinion(reason) if reason.is_empty() => json!({"allowed": false}),
        Decision::NoOpinion(reason) => json!({"allowed": false, "reason": reason}),
    }
}

fn answer(kind: &str, metadata: Value, spec: Value, status: Value) -> Response {
    let review = json!({
        "kind": kind, "apiVersion": GROUP_VERSION, "metadata": metadata, "spec": spec, "status": status,
    });
    crate::status::json(StatusCode::CREATED, &review)
}

/// Answers a review POSTed as `body` by `user`.
pub fn serve(
    authorization: &Authorization,
    user: &UserInfo,
    kind: &'static str,
    namespace: Option<&str>,
    body: &[u8],
) -> Response {
    // kubectl sends reviews as protobuf; other clients as JSON.
    let review = if body.starts_with(b"k8s\0") {
        match crate::protobuf::decode(body) {
            Ok(review) => review,
            Err(e) => return bad_request(format!("the request body is not valid protobuf: {e}")),
        }
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(review) => review,
            Err(_) => return bad_request("the request body is not valid JSON"),
        }
    };
    if let Some(k) = review.get("kind").and_then(Value::as_str)
        && k != kind
    {
        return bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({kind})"
        ));
    }
    let mut metadata = review.get("metadata").cloned().unwrap_or_else(|| json!({}));
    metadata["creationTimestamp"] = Value::Null;
    let mut spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    if kind == "SelfSubjectRulesReview" {
        let namespace = spec.get("namespace").and_then(Value::as_str).unwrap_or_default();
        if namespace.is_empty() {
            return bad_request("no namespace on request");
        }
        return answer(
            kind,
            metadata,
            spec.clone(),
            rules_status(authorization, user, namespace),
        );
    }
    let has_resource = spec.get("resourceAttributes").is_some_and(Value::is_object);
    let has_non_resource = spec.get("nonResourceAttributes").is_some_and(Value::is_object);
    if has_resource == has_non_resource {
        let detail = "exactly one of nonResourceAttributes or resourceAttributes must be specified";
        return invalid(kind, "spec.resourceAttributes", "\"null\"", detail);
    }
    let Some(request) = attributes(&spec) else {
        return bad_request("the review has no attributes");
    };
    let subject = match kind {
        "SelfSubjectAccessReview" => user.clone(),
        _ => {
            let user_name = spec.get("user").and_then(Value::as_str).unwrap_or_default();
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(String::from))
                .collect();
            if user_name.is_empty() && groups.is_empty() {
                return invalid(
                    kind,
                    "spec.user",
                    "\"\"",
                    "at least one of user or group must be specified",
                );
            }
            UserInfo {
                name: user_name.to_string(),
                uid: spec
                    .get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                groups,
            }
        }
    };
    if let Some(namespace) = namespace {
        if has_non_resource {
            return invalid(
                kind,
                "spec.nonResourceAttributes",
                "\"\"",
                "disallowed on this kind of request",
            );
        }
        if request.namespace != namespace {
            return bad_request(format!(
                "spec.resourceAttributes.namespace must match namespace: {namespace}"
            ));
        }
        metadata["namespace"] = Value::String(namespace.to_string());
    }
    if kind == "SelfSubjectAccessReview" {
        // The spec echoes only the attributes (the user is the caller).
        spec = json!({
            "resourceAttributes": spec.get("resourceAttributes"),
            "nonResourceAttributes": spec.get("nonResourceAttributes"),
        });
        if let Some(map) = spec.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
    }
    answer(
        kind,
        metadata,
        spec,
        review_status(authorization.authorize(&subject, &request)),
    )
}

/// A SubjectRulesReviewStatus: the rules split into resource and non-resource ones.
fn rules_status(authorization: &Authorization, user: &UserInfo, namespace: &str) -> Value {
    let (rules, errors, incomplete) = authorization.rules_for(user, namespace);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        if let Some(urls) = rule.non_resource_urls.filter(|u| !u.is_empty()) {
            non_resource_rules.push(json!({"verbs": rule.verbs, "nonResourceURLs": urls}));
            continue;
        }
        let mut r = json!({"verbs": rule.verbs});
        if let Some(groups) = rule.api_groups {
            r["apiGroups"] = json!(groups);
        }
        if let Some(resources) = rule.resources {
            r["resources"] = json!(resources);
        }
        if let Some(names) = rule.resource_names.filter(|n| !n.is_empty()) {
            r["resourceNames"] = json!(names);
        }
        resource_rules.push(r);
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": incomplete,
    });
    if !errors.is_empty() {
        status["evaluationError"] = Value::String(match errors.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        });
    }
    status
}
