//! Which webhooks a request goes to (apiserver's `webhook/predicates`): the rules (operations, groups, versions,
//! `resource/subresource` with `*` and `*/*`, scope), the matchPolicy (Equivalent: the same group and resource
//! in another version the rule names), the namespaceSelector (on the namespace's labels; a Namespace is matched
//! on its own) and the objectSelector (on the new or the old object's labels).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

/// What the matching reads of a request.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: &'static str,
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    /// Empty for the main resource.
    pub subresource: &'a str,
    pub namespaced: bool,
}

fn names(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// Whether `resources` (`pods`, `pods/status`, `*`, `*/status`, `pods/*`, `*/*`) names `resource`/`subresource`
/// (`Matcher.resource`: `*` alone is any resource without a subresource, `x/*` any of x's including x).
fn names_resource(resources: &[String], resource: &str, subresource: &str) -> bool {
    resources.iter().any(|entry| {
        let (r, s) = entry.split_once('/').unwrap_or((entry.as_str(), ""));
        (r == "*" || r == resource) && (s == "*" || s == subresource)
    })
}

/// `RuleWithOperations` against the request, the version taken as `version`.
fn rule_matches(rule: &Value, a: &Attributes, version: &str) -> bool {
    let list = |field: &str| -> Vec<String> {
        rule.get(field)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default()
    };
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !a.namespaced,
        "Namespaced" => a.namespaced,
        _ => true,
    };
    names(&list("operations"), a.operation)
        && names(&list("apiGroups"), a.group)
        && names(&list("apiVersions"), version)
        && names_resource(&list("resources"), a.resource, a.subresource)
        && scope_ok
}

/// The version the webhook is called in: the request's own when a rule names it, else (matchPolicy Equivalent)
/// another version of the same group and resource that a rule names and `served` says is served.
pub fn matching_version(webhook: &Value, a: &Attributes, served: &dyn Fn(&str) -> bool) -> Option<String> {
    let rules = webhook.get("rules").and_then(Value::as_array)?;
    if rules.iter().any(|r| rule_matches(r, a, a.version)) {
        return Some(a.version.to_string());
    }
    if webhook.get("matchPolicy").and_then(Value::as_str) == Some("Exact") {
        return None;
    }
    rules.iter().find_map(|rule| {
        rule.get("apiVersions")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(Value::as_str)
            .filter(|v| *v != "*" && *v != a.version && served(v))
            .find(|v| rule_matches(rule, a, v))
            .map(String::from)
    })
}

fn labels(object: Option<&Value>) -> serde_json::Map<String, Value> {
    object
        .and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// A metav1 LabelSelector against labels: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist);
/// the empty selector matches everything. An unreadable selector matches nothing.
pub fn selector_matches(selector: Option<&Value>, labels: &serde_json::Map<String, Value>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return true;
    };
    let Ok(selector) = serde_json::from_value::<LabelSelector>(selector.clone()) else {
        return false;
    };
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let labels_ok = selector
        .match_labels
        .unwrap_or_default()
        .iter()
        .all(|(k, v)| label(k) == Some(v.as_str()));
    let expressions_ok = selector.match_expressions.unwrap_or_default().iter().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => label(&e.key).is_some_and(|v| values.iter().any(|x| x == v)),
            "NotIn" => label(&e.key).is_none_or(|v| !values.iter().any(|x| x == v)),
            "Exists" => label(&e.key).is_some(),
            "DoesNotExist" => label(&e.key).is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// The objectSelector: either the new or the old object's labels match (`MatchObjectSelector`).
pub fn object_selector_matches(webhook: &Value, object: Option<&Value>, old: Option<&Value>) -> bool {
    let selector = webhook.get("objectSelector");
    [object, old]
        .into_iter()
        .flatten()
        .any(|o| selector_matches(selector, &labels(Some(o))))
}

/// Whether the namespaceSelector needs the request's namespace's labels: cluster-scoped objects other than
/// Namespaces always match it (`MatchNamespaceSelector`).
pub fn namespace_selector_applies(a: &Attributes, namespace: &str) -> bool {
    let is_namespace = a.group.is_empty() && a.resource == "namespaces";
    is_namespace || (a.namespaced && !namespace.is_empty())
}

/// The namespaceSelector against `namespace_object`'s labels (for a Namespace, the object itself).
pub fn namespace_selector_matches(webhook: &Value, namespace_object: Option<&Value>) -> bool {
    selector_matches(webhook.get("namespaceSelector"), &labels(namespace_object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configmaps(operation: &'static str) -> Attributes<'static> {
        Attributes {
            operation,
            group: "",
            version: "v1",
            resource: "configmaps",
            subresource: "",
            namespaced: true,
        }
    }

    fn hook(rule: Value) -> Value {
        json!({"rules": [rule], "matchPolicy": "Equivalent"})
    }

    #[test]
    fn rules_match_operations_groups_versions_and_resources() {
        let never = |_: &str| false;
        let rule = json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]});
        assert_eq!(
            matching_version(&hook(rule.clone()), &configmaps("CREATE"), &never).as_deref(),
            Some("v1")
        );
        assert_eq!(
            matching_version(&hook(rule.clone()), &configmaps("UPDATE"), &never),
            None
        );
        let mut secrets = configmaps("CREATE");
        secrets.resource = "secrets";
        assert_eq!(matching_version(&hook(rule), &secrets, &never), None);
        let any = json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]});
        assert!(matching_version(&hook(any.clone()), &configmaps("DELETE"), &never).is_some());
        let mut status = configmaps("UPDATE");
        status.resource = "pods";
        status.subresource = "status";
        assert_eq!(
            matching_version(&hook(any), &status, &never),
            None,
            "`*` is no subresource"
        );
        for resources in [
            json!(["pods/status"]),
            json!(["*/*"]),
            json!(["pods/*"]),
            json!(["*/status"]),
        ] {
            let rule = json!({"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": resources});
            assert!(
                matching_version(&hook(rule), &status, &never).is_some(),
                "{resources}"
            );
        }
        let rule = json!({"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]});
        assert_eq!(matching_version(&hook(rule), &status, &never), None);
    }

    #[test]
    fn scope_and_match_policy() {
        let rule = json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "scope": "Cluster"});
        assert_eq!(
            matching_version(&hook(rule), &configmaps("CREATE"), &|_| false),
            None
        );
        let mut widgets = configmaps("CREATE");
        widgets.group = "example.com";
        widgets.resource = "widgets";
        let rule = json!({"operations": ["CREATE"], "apiGroups": ["example.com"], "apiVersions": ["v2"], "resources": ["widgets"]});
        assert_eq!(
            matching_version(&hook(rule.clone()), &widgets, &|v| v == "v2").as_deref(),
            Some("v2")
        );
        assert_eq!(matching_version(&hook(rule.clone()), &widgets, &|_| false), None);
        let exact = json!({"rules": [rule], "matchPolicy": "Exact"});
        assert_eq!(matching_version(&exact, &widgets, &|_| true), None);
    }

    #[test]
    fn selectors() {
        let hook = json!({"objectSelector": {"matchLabels": {"a": "1"}},
            "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}});
        let with = json!({"metadata": {"labels": {"a": "1"}}});
        let without = json!({"metadata": {}});
        assert!(object_selector_matches(&hook, Some(&with), None));
        assert!(object_selector_matches(&hook, Some(&without), Some(&with)));
        assert!(!object_selector_matches(&hook, Some(&without), None));
        let prod = json!({"metadata": {"labels": {"env": "prod"}}});
        assert!(!namespace_selector_matches(&hook, Some(&prod)));
        assert!(namespace_selector_matches(&hook, Some(&without)));
        assert!(object_selector_matches(
            &json!({"objectSelector": {}}),
            Some(&without),
            None
        ));
        let mut namespace = configmaps("CREATE");
        namespace.resource = "namespaces";
        namespace.namespaced = false;
        assert!(namespace_selector_applies(&namespace, ""));
        let mut nodes = namespace.clone();
        nodes.resource = "nodes";
        assert!(!namespace_selector_applies(&nodes, ""));
    }
}
