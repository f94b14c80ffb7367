//! Kubernetes' defaults and validation of MutatingWebhookConfiguration and ValidatingWebhookConfiguration
//! (`pkg/apis/admissionregistration/v1/defaults.go` and `pkg/apis/admissionregistration/validation`), with
//! their messages.

use serde_json::{Value, json};

use crate::resources::errors::FieldError;
use crate::resources::validation::is_dns1123_subdomain;

pub const GROUP: &str = "admissionregistration.k8s.io";
pub const MUTATING: &str = "MutatingWebhookConfiguration";
pub const VALIDATING: &str = "ValidatingWebhookConfiguration";

/// True for the two kinds whose objects configure webhooks (never sent to webhooks themselves).
pub fn is_webhook_configuration(group: &str, kind: &str) -> bool {
    group == GROUP && (kind == MUTATING || kind == VALIDATING)
}

fn default_field(object: &mut serde_json::Map<String, Value>, field: &str, value: Value) {
    if object.get(field).is_none_or(Value::is_null) {
        object.insert(field.to_string(), value);
    }
}

/// `SetDefaults_ValidatingWebhook`, `SetDefaults_MutatingWebhook`, `SetDefaults_Rule` (scope `*`) and
/// `SetDefaults_ServiceReference` (port 443).
pub fn apply_defaults(kind: &str, object: &mut Value) {
    let Some(Value::Array(webhooks)) = object.get_mut("webhooks") else {
        return;
    };
    for webhook in webhooks.iter_mut().filter_map(Value::as_object_mut) {
        default_field(webhook, "failurePolicy", json!("Fail"));
        default_field(webhook, "matchPolicy", json!("Equivalent"));
        default_field(webhook, "namespaceSelector", json!({}));
        default_field(webhook, "objectSelector", json!({}));
        default_field(webhook, "timeoutSeconds", json!(10));
        if kind == MUTATING {
            default_field(webhook, "reinvocationPolicy", json!("Never"));
        }
        if let Some(Value::Array(rules)) = webhook.get_mut("rules") {
            for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
                default_field(rule, "scope", json!("*"));
            }
        }
        if let Some(Value::Object(service)) =
            webhook.get_mut("clientConfig").and_then(|c| c.get_mut("service"))
        {
            default_field(service, "port", json!(443));
        }
    }
}

fn required(field: String, detail: &str) -> FieldError {
    FieldError {
        field,
        reason: "FieldValueRequired",
        message: if detail.is_empty() {
            "Required value".into()
        } else {
            format!("Required value: {detail}")
        },
    }
}

fn invalid(field: String, value: &Value, detail: &str) -> FieldError {
    FieldError {
        field,
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {}: {detail}", go_value(value)),
    }
}

fn not_supported(field: String, value: &Value, supported: &[&str]) -> FieldError {
    let list = supported
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    FieldError {
        field,
        reason: "FieldValueNotSupported",
        message: format!("Unsupported value: {}: supported values: {list}", go_value(value)),
    }
}

/// A value as field.Error prints it: strings quoted, lists as `[]string{"a", "b"}`, numbers plain.
fn go_value(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[]string{{{}}}",
            items.iter().map(go_value).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

const OPERATIONS: &[&str] = &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
const SCOPES: &[&str] = &["*", "Cluster", "Namespaced"];
const FAILURE_POLICIES: &[&str] = &["Fail", "Ignore"];
const MATCH_POLICIES: &[&str] = &["Equivalent", "Exact"];
const SIDE_EFFECTS: &[&str] = &["None", "NoneOnDryRun"];
const REINVOCATION_POLICIES: &[&str] = &["IfNeeded", "Never"];
const REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// `ValidateValidatingWebhookConfiguration` / `ValidateMutatingWebhookConfiguration` for a create (`old` =
/// None) or an update; an update may keep sideEffects values v1 no longer accepts when the old object had them.
pub fn validate(kind: &str, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let webhooks = object
        .get("webhooks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let old_had_invalid_side_effects = old
        .and_then(|o| o.get("webhooks"))
        .and_then(Value::as_array)
        .is_some_and(|hooks| {
            hooks.iter().any(|h| {
                h.get("sideEffects")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !SIDE_EFFECTS.contains(&s))
            })
        });
    let mut names = std::collections::BTreeSet::new();
    for (i, webhook) in webhooks.iter().enumerate() {
        let path = format!("webhooks[{i}]");
        errors.extend(validate_webhook(
            kind,
            webhook,
            &path,
            old_had_invalid_side_effects,
        ));
        errors.extend(validate_review_versions(
            webhook.get("admissionReviewVersions"),
            &format!("{path}.admissionReviewVersions"),
        ));
        if let Some(name) = webhook.get("name").and_then(Value::as_str)
            && !name.is_empty()
            && !names.insert(name.to_string())
        {
            errors.push(FieldError {
                field: format!("{path}.name"),
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: \"{name}\""),
            });
        }
    }
    errors
}

fn validate_review_versions(versions: Option<&Value>, path: &str) -> Vec<FieldError> {
    let versions = strings(versions);
    if versions.is_empty() {
        return vec![required(
            path.to_string(),
            &format!("must specify one of {}", REVIEW_VERSIONS.join(", ")),
        )];
    }
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, v) in versions.iter().enumerate() {
        if !seen.insert(v.as_str()) {
            errors.push(invalid(format!("{path}[{i}]"), &json!(v), "duplicate version"));
        }
    }
    if !versions.iter().any(|v| REVIEW_VERSIONS.contains(&v.as_str())) {
        errors.push(invalid(
            path.to_string(),
            &json!(versions),
            &format!("must include at least one of {}", REVIEW_VERSIONS.join(", ")),
        ));
    }
    errors
}

fn validate_webhook(
    kind: &str,
    webhook: &Value,
    path: &str,
    allow_invalid_side_effects: bool,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = webhook.get("name").and_then(Value::as_str).unwrap_or_default();
    let name_path = format!("{path}.name");
    if name.is_empty() {
        errors.push(required(name_path, ""));
    } else if !is_dns1123_subdomain(name) {
        errors.push(invalid(
            name_path,
            &json!(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    } else if name.split('.').count() < 3 {
        errors.push(invalid(
            name_path,
            &json!(name),
            "should be a domain with at least three segments separated by dots",
        ));
    }
    for (i, rule) in webhook
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        errors.extend(validate_rule(rule, &format!("{path}.rules[{i}]")));
    }
    let mut one_of = |field: &str, supported: &[&str]| {
        if let Some(value) = webhook.get(field).filter(|v| !v.is_null())
            && !value.as_str().is_some_and(|v| supported.contains(&v))
        {
            errors.push(not_supported(format!("{path}.{field}"), value, supported));
        }
    };
    one_of("failurePolicy", FAILURE_POLICIES);
    one_of("matchPolicy", MATCH_POLICIES);
    if kind == MUTATING {
        one_of("reinvocationPolicy", REINVOCATION_POLICIES);
    }
    match webhook.get("sideEffects").filter(|v| !v.is_null()) {
        None => errors.push(required(
            format!("{path}.sideEffects"),
            "must specify one of None, NoneOnDryRun, Some, Unknown",
        )),
        Some(value) => {
            let ok = value.as_str().is_some_and(|v| {
                SIDE_EFFECTS.contains(&v) || (allow_invalid_side_effects && matches!(v, "Some" | "Unknown"))
            });
            if !ok {
                errors.push(not_supported(format!("{path}.sideEffects"), value, SIDE_EFFECTS));
            }
        }
    }
    if let Some(timeout) = webhook.get("timeoutSeconds").filter(|v| !v.is_null())
        && !timeout.as_i64().is_some_and(|t| (1..=30).contains(&t))
    {
        errors.push(invalid(
            format!("{path}.timeoutSeconds"),
            timeout,
            "the timeout value must be between 1 and 30 seconds",
        ));
    }
    let client = webhook.get("clientConfig").cloned().unwrap_or(Value::Null);
    let client_path = format!("{path}.clientConfig");
    match (
        client.get("url").filter(|v| !v.is_null()),
        client.get("service").filter(|v| !v.is_null()),
    ) {
        (Some(url), None) => errors.extend(validate_url(
            &format!("{client_path}.url"),
            url.as_str().unwrap_or_default(),
        )),
        (None, Some(service)) => errors.extend(validate_service(&format!("{client_path}.service"), service)),
        _ => errors.push(required(client_path, "exactly one of url or service is required")),
    }
    errors
}

fn validate_rule(rule: &Value, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let operations = strings(rule.get("operations"));
    if operations.is_empty() {
        errors.push(required(format!("{path}.operations"), ""));
    }
    if operations.len() > 1 && operations.iter().any(|o| o == "*") {
        errors.push(invalid(
            format!("{path}.operations"),
            &json!(operations),
            "if '*' is present, must not specify other operations",
        ));
    }
    for (i, operation) in operations.iter().enumerate() {
        if !OPERATIONS.contains(&operation.as_str()) {
            errors.push(not_supported(
                format!("{path}.operations[{i}]"),
                &json!(operation),
                OPERATIONS,
            ));
        }
    }
    let groups = strings(rule.get("apiGroups"));
    if groups.is_empty() {
        errors.push(required(format!("{path}.apiGroups"), ""));
    }
    if groups.len() > 1 && groups.iter().any(|g| g == "*") {
        errors.push(invalid(
            format!("{path}.apiGroups"),
            &json!(groups),
            "if '*' is present, must not specify other API groups",
        ));
    }
    let versions = strings(rule.get("apiVersions"));
    if versions.is_empty() {
        errors.push(required(format!("{path}.apiVersions"), ""));
    }
    if versions.len() > 1 && versions.iter().any(|v| v == "*") {
        errors.push(invalid(
            format!("{path}.apiVersions"),
            &json!(versions),
            "if '*' is present, must not specify other API versions",
        ));
    }
    for (i, version) in versions.iter().enumerate() {
        if version.is_empty() {
            errors.push(required(format!("{path}.apiVersions[{i}]"), ""));
        }
    }
    errors.extend(validate_resources(
        &strings(rule.get("resources")),
        &format!("{path}.resources"),
    ));
    if let Some(scope) = rule.get("scope").filter(|v| !v.is_null())
        && !scope.as_str().is_some_and(|s| SCOPES.contains(&s))
    {
        errors.push(not_supported(format!("{path}.scope"), scope, SCOPES));
    }
    errors
}

fn validate_resources(resources: &[String], path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if resources.is_empty() {
        errors.push(required(path.to_string(), ""));
    }
    let mut wildcard_subresources = std::collections::BTreeSet::new();
    let mut wildcard_resources = std::collections::BTreeSet::new();
    let mut double_wildcard = false;
    let mut single_wildcard = false;
    let mut without_subresource = false;
    for (i, entry) in resources.iter().enumerate() {
        if entry.is_empty() {
            errors.push(required(format!("{path}[{i}]"), ""));
            continue;
        }
        double_wildcard |= entry == "*/*";
        single_wildcard |= entry == "*";
        let Some((resource, sub)) = entry.split_once('/') else {
            without_subresource = entry != "*";
            continue;
        };
        if wildcard_subresources.contains(resource) {
            errors.push(invalid(
                format!("{path}[{i}]"),
                &json!(entry),
                &format!("if '{resource}/*' is present, must not specify {entry}"),
            ));
        }
        if wildcard_resources.contains(sub) {
            errors.push(invalid(
                format!("{path}[{i}]"),
                &json!(entry),
                &format!("if '*/{sub}' is present, must not specify {entry}"),
            ));
        }
        if sub == "*" {
            wildcard_subresources.insert(resource);
        }
        if resource == "*" {
            wildcard_resources.insert(sub);
        }
    }
    if resources.len() > 1 && double_wildcard {
        errors.push(invalid(
            path.to_string(),
            &json!(resources),
            "if '*/*' is present, must not specify other resources",
        ));
    }
    if single_wildcard && without_subresource {
        errors.push(invalid(
            path.to_string(),
            &json!(resources),
            "if '*' is present, must not specify other resources without subresources",
        ));
    }
    errors
}

/// `webhook.ValidateWebhookURL` with https forced.
fn validate_url(path: &str, raw: &str) -> Vec<FieldError> {
    const FORM: &str = "; desired format: https://host[/path]";
    let url = match url::Url::parse(raw) {
        Ok(url) => url,
        Err(e) => {
            return vec![required(
                path.to_string(),
                &format!("url must be a valid URL: {e}{FORM}"),
            )];
        }
    };
    let mut errors = Vec::new();
    if url.scheme() != "https" {
        errors.push(invalid(
            path.to_string(),
            &json!(url.scheme()),
            &format!("'https' is the only allowed URL scheme{FORM}"),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        errors.push(invalid(
            path.to_string(),
            &json!(""),
            &format!("host must be specified{FORM}"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        let user = match url.password() {
            Some(p) => format!("{}:{p}", url.username()),
            None => url.username().to_string(),
        };
        errors.push(invalid(
            path.to_string(),
            &json!(user),
            "user information is not permitted in the URL",
        ));
    }
    if let Some(fragment) = url.fragment().filter(|f| !f.is_empty()) {
        errors.push(invalid(
            path.to_string(),
            &json!(fragment),
            "fragments are not permitted in the URL",
        ));
    }
    if let Some(query) = url.query().filter(|q| !q.is_empty()) {
        errors.push(invalid(
            path.to_string(),
            &json!(query),
            "query parameters are not permitted in the URL",
        ));
    }
    errors
}

/// `webhook.ValidateWebhookService`.
fn validate_service(path: &str, service: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let text = |field: &str| service.get(field).and_then(Value::as_str).unwrap_or_default();
    if text("name").is_empty() {
        errors.push(required(format!("{path}.name"), "service name is required"));
    }
    if text("namespace").is_empty() {
        errors.push(required(
            format!("{path}.namespace"),
            "service namespace is required",
        ));
    }
    if let Some(port) = service.get("port").filter(|p| !p.is_null())
        && !port.as_i64().is_some_and(|p| (1..=65535).contains(&p))
    {
        errors.push(invalid(
            format!("{path}.port"),
            port,
            "port is not valid: must be between 1 and 65535, inclusive",
        ));
    }
    let url_path = text("path");
    if url_path.is_empty() || url_path == "/" {
        return errors;
    }
    if url_path == "//" {
        errors.push(invalid(
            format!("{path}.path"),
            &json!(url_path),
            "segment[0] may not be empty",
        ));
        return errors;
    }
    if !url_path.starts_with('/') {
        errors.push(invalid(
            format!("{path}.path"),
            &json!(url_path),
            "must start with a '/'",
        ));
    }
    let trimmed = url_path.trim_start_matches('/');
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    for (i, segment) in trimmed.split('/').enumerate() {
        if segment.is_empty() {
            errors.push(invalid(
                format!("{path}.path"),
                &json!(url_path),
                &format!("segment[{i}] may not be empty"),
            ));
        } else if !is_dns1123_subdomain(segment) {
            errors.push(invalid(
                format!("{path}.path"),
                &json!(url_path),
                &format!("segment[{i}]: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(webhook: Value) -> Value {
        let mut object = json!({"metadata": {"name": "c"}, "webhooks": [webhook]});
        apply_defaults(MUTATING, &mut object);
        object
    }

    fn good() -> Value {
        json!({
            "name": "deny.example.com",
            "clientConfig": {"url": "https://127.0.0.1:8443/validate"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        })
    }

    fn messages(webhook: Value) -> Vec<String> {
        validate(MUTATING, &config(webhook), None)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn defaults_are_kubernetes_ones() {
        let mut hook = good();
        hook["clientConfig"] = json!({"service": {"namespace": "n", "name": "s"}});
        let object = config(hook);
        let hook = &object["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["matchPolicy"], "Equivalent");
        assert_eq!(hook["namespaceSelector"], json!({}));
        assert_eq!(hook["objectSelector"], json!({}));
        assert_eq!(hook["timeoutSeconds"], 10);
        assert_eq!(hook["reinvocationPolicy"], "Never");
        assert_eq!(hook["rules"][0]["scope"], "*");
        assert_eq!(hook["clientConfig"]["service"]["port"], 443);
        assert!(messages(good()).is_empty());
    }

    #[test]
    fn names_need_three_segments_and_are_unique() {
        let mut hook = good();
        hook["name"] = json!("deny.example");
        assert_eq!(
            messages(hook),
            [
                "webhooks[0].name: Invalid value: \"deny.example\": should be a domain with at least three segments separated by dots"
            ]
        );
        let mut object = json!({"webhooks": [good(), good()]});
        apply_defaults(VALIDATING, &mut object);
        let errors = validate(VALIDATING, &object, None);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "webhooks[1].name");
        assert_eq!(errors[0].message, "Duplicate value: \"deny.example.com\"");
    }

    #[test]
    fn client_config_is_one_https_url_or_a_service() {
        let mut hook = good();
        hook["clientConfig"] = json!({});
        assert_eq!(
            messages(hook),
            ["webhooks[0].clientConfig: Required value: exactly one of url or service is required"]
        );
        let mut hook = good();
        hook["clientConfig"] = json!({"url": "http://u:p@host/x?a=b#f"});
        assert_eq!(
            messages(hook),
            [
                "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]",
                "webhooks[0].clientConfig.url: Invalid value: \"u:p\": user information is not permitted in the URL",
                "webhooks[0].clientConfig.url: Invalid value: \"f\": fragments are not permitted in the URL",
                "webhooks[0].clientConfig.url: Invalid value: \"a=b\": query parameters are not permitted in the URL",
            ]
        );
    }

    #[test]
    fn policies_timeouts_and_versions_are_checked() {
        let mut hook = good();
        hook["sideEffects"] = json!("Some");
        hook["timeoutSeconds"] = json!(31);
        hook["failurePolicy"] = json!("Maybe");
        hook["admissionReviewVersions"] = json!(["v2"]);
        assert_eq!(
            messages(hook),
            [
                "webhooks[0].failurePolicy: Unsupported value: \"Maybe\": supported values: \"Fail\", \"Ignore\"",
                "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
                "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
                "webhooks[0].admissionReviewVersions: Invalid value: []string{\"v2\"}: must include at least one of v1, v1beta1",
            ]
        );
        let mut some = good();
        some["sideEffects"] = json!("Some");
        let old = config(some.clone());
        assert!(
            validate(MUTATING, &config(some), Some(&old)).is_empty(),
            "kept on update"
        );
        let mut hook = good();
        hook.as_object_mut().map(|h| h.remove("sideEffects"));
        assert_eq!(
            messages(hook),
            [
                "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun, Some, Unknown"
            ]
        );
    }

    #[test]
    fn rules_are_checked() {
        let mut hook = good();
        hook["rules"] = json!([{"operations": ["*", "CREATE"], "apiGroups": [], "apiVersions": ["v1"],
            "resources": ["*/*", "pods"], "scope": "Everywhere"}]);
        assert_eq!(
            messages(hook),
            [
                "webhooks[0].rules[0].operations: Invalid value: []string{\"*\", \"CREATE\"}: if '*' is present, must not specify other operations",
                "webhooks[0].rules[0].apiGroups: Required value",
                "webhooks[0].rules[0].resources: Invalid value: []string{\"*/*\", \"pods\"}: if '*/*' is present, must not specify other resources",
                "webhooks[0].rules[0].scope: Unsupported value: \"Everywhere\": supported values: \"*\", \"Cluster\", \"Namespaced\"",
            ]
        );
    }
}
