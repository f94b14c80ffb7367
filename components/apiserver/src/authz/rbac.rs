//! The RBAC authorizer (plugin/pkg/auth/authorizer/rbac and pkg/registry/rbac/validation): the rules bound to a
//! user by ClusterRoleBindings and, in a namespace, RoleBindings (to a Role of that namespace or a ClusterRole),
//! evaluated from an in-memory copy of the four RBAC kinds that a store watch keeps current. The escalation
//! check (`confirm_no_escalation`) and the rules reviews use the same resolver.

use std::collections::HashMap;
use std::sync::Arc;

use embedded_store::Store;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};

use super::mirror::{Mirror, Mirrored};
use super::{Authorizer, Decision};
use crate::authn::UserInfo;
use crate::request_info::RequestInfo;

/// Where the RBAC kinds are stored (`/registry/<group>/<plural>/...`).
const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// The four kinds, by store key.
#[derive(Debug, Default)]
struct Policy {
    roles: HashMap<(String, String), Arc<Role>>,
    cluster_roles: HashMap<String, Arc<ClusterRole>>,
    role_bindings: HashMap<(String, String), Arc<RoleBinding>>,
    cluster_role_bindings: HashMap<String, Arc<ClusterRoleBinding>>,
}

impl Mirrored for Policy {
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            return;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        fn decode<T: serde::de::DeserializeOwned>(value: Option<&[u8]>) -> Option<Arc<T>> {
            serde_json::from_slice(value?).ok().map(Arc::new)
        }
        let pair = |ns: &str, name: &str| (ns.to_string(), name.to_string());
        match parts.as_slice() {
            ["roles", ns, name] => match decode(value) {
                Some(v) => drop(self.roles.insert(pair(ns, name), v)),
                None => drop(self.roles.remove(&pair(ns, name))),
            },
            ["rolebindings", ns, name] => match decode(value) {
                Some(v) => drop(self.role_bindings.insert(pair(ns, name), v)),
                None => drop(self.role_bindings.remove(&pair(ns, name))),
            },
            ["clusterroles", name] => match decode(value) {
                Some(v) => drop(self.cluster_roles.insert(name.to_string(), v)),
                None => drop(self.cluster_roles.remove(*name)),
            },
            ["clusterrolebindings", name] => match decode(value) {
                Some(v) => drop(self.cluster_role_bindings.insert(name.to_string(), v)),
                None => drop(self.cluster_role_bindings.remove(*name)),
            },
            _ => {}
        }
    }
}

/// Reads RBAC objects; the authorizer and everything that resolves rules share one.
#[derive(Debug)]
pub struct RuleResolver {
    policy: Arc<Mirror<Policy>>,
}

/// A role reference that resolved to nothing, worded as kube's NotFound errors.
fn not_found(kind: &str, name: &str) -> String {
    let resource = if kind == "Role" { "role" } else { "clusterrole" };
    format!("{resource}.rbac.authorization.k8s.io {name:?} not found")
}

impl RuleResolver {
    /// Loads the current RBAC objects and keeps them current from a store watch, in the background.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<RuleResolver>, embedded_store::StoreError> {
        let policy = Mirror::start(store, PREFIX).await?;
        Ok(Arc::new(RuleResolver { policy }))
    }

    /// A resolver over fixed objects (tests).
    pub fn from_objects(objects: &[(&str, serde_json::Value)]) -> RuleResolver {
        let mut policy = Policy::default();
        for (key, value) in objects {
            policy.apply(&format!("{PREFIX}{key}"), Some(value.to_string().as_bytes()));
        }
        RuleResolver {
            policy: Arc::new(Mirror::of(policy)),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Policy> {
        self.policy.read()
    }

    /// Calls `visit` with each rule that applies to `user` in `namespace` (cluster-wide ones first) and where it
    /// comes from, as `VisitRulesFor`; `visit` returns false to stop. Role references that resolve to nothing are
    /// passed as errors.
    pub fn visit_rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
        visit: &mut dyn FnMut(Visited<'_>) -> bool,
    ) {
        let policy = self.read();
        for binding in policy.cluster_role_bindings.values() {
            let Some(subject) = applies_to(binding.subjects.as_deref(), user, "") else {
                continue;
            };
            let source = RuleSource {
                binding: &binding.metadata,
                role_ref: &binding.role_ref,
                subject,
            };
            match policy.cluster_roles.get(&binding.role_ref.name) {
                Some(role) => {
                    for rule in role.rules.iter().flatten() {
                        if !visit(Ok((&source, rule))) {
                            return;
                        }
                    }
                }
                None => {
                    if !visit(Err(not_found("ClusterRole", &binding.role_ref.name))) {
                        return;
                    }
                }
            }
        }
        if namespace.is_empty() {
            return;
        }
        for ((ns, _), binding) in &policy.role_bindings {
            if ns != namespace {
                continue;
            }
            let Some(subject) = applies_to(binding.subjects.as_deref(), user, namespace) else {
                continue;
            };
            let source = RuleSource {
                binding: &binding.metadata,
                role_ref: &binding.role_ref,
                subject,
            };
            let rules: Option<&[PolicyRule]> = match binding.role_ref.kind.as_str() {
                "Role" => policy
                    .roles
                    .get(&(namespace.to_string(), binding.role_ref.name.clone()))
                    .map(|r| r.rules.as_deref().unwrap_or_default()),
                "ClusterRole" => policy
                    .cluster_roles
                    .get(&binding.role_ref.name)
                    .map(|r| r.rules.as_deref().unwrap_or_default()),
                _ => None,
            };
            match rules {
                Some(rules) => {
                    for rule in rules {
                        if !visit(Ok((&source, rule))) {
                            return;
                        }
                    }
                }
                None => {
                    if !visit(Err(not_found(&binding.role_ref.kind, &binding.role_ref.name))) {
                        return;
                    }
                }
            }
        }
    }

    /// Every rule that applies to `user` in `namespace`, and the resolution errors met (`RulesFor`).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let (mut rules, mut errors) = (Vec::new(), Vec::new());
        self.visit_rules_for(user, namespace, &mut |rule| {
            match rule {
                Ok((_, rule)) => rules.push(rule.clone()),
                Err(e) => errors.push(e),
            }
            true
        });
        (rules, errors)
    }

    /// The rules of what a binding refers to (`GetRoleReferenceRules`).
    pub fn role_reference_rules(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
    ) -> Result<Vec<PolicyRule>, String> {
        let policy = self.read();
        let rules = match kind {
            "Role" => policy
                .roles
                .get(&(namespace.to_string(), name.to_string()))
                .map(|r| r.rules.clone()),
            "ClusterRole" => policy.cluster_roles.get(name).map(|r| r.rules.clone()),
            other => return Err(format!("unsupported role reference kind: {other:?}")),
        };
        rules
            .map(Option::unwrap_or_default)
            .ok_or_else(|| not_found(kind, name))
    }

    /// The ClusterRoles (name, labels, rules, aggregation selectors) for the aggregation check of tests.
    pub fn cluster_role(&self, name: &str) -> Option<Arc<ClusterRole>> {
        self.read().cluster_roles.get(name).cloned()
    }
}

/// What `visit_rules_for` is called with: a rule and where it comes from, or a resolution error.
pub type Visited<'a> = Result<(&'a RuleSource<'a>, &'a PolicyRule), String>;

/// Where a rule comes from: a binding, its role and the subject that matched (kube's binding describers).
#[derive(Debug)]
pub struct RuleSource<'a> {
    binding: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    role_ref: &'a k8s_openapi::api::rbac::v1::RoleRef,
    subject: &'a Subject,
}

impl std::fmt::Display for RuleSource<'_> {
    /// `ClusterRoleBinding "cluster-admin" of ClusterRole "cluster-admin" to Group "system:masters"`, or
    /// `RoleBinding "<name>/<namespace>" of Role "<role>" to User "jane"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.binding.name.as_deref().unwrap_or_default();
        let namespace = self.binding.namespace.as_deref().unwrap_or_default();
        let binding = if namespace.is_empty() {
            format!("ClusterRoleBinding {name:?}")
        } else {
            format!("RoleBinding {:?}", format!("{name}/{namespace}"))
        };
        let s = self.subject;
        let subject = if s.kind == "ServiceAccount" {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            format!("{} {:?}", s.kind, format!("{}/{ns}", s.name))
        } else {
            format!("{} {:?}", s.kind, s.name)
        };
        write!(
            f,
            "{binding} of {} {:?} to {subject}",
            self.role_ref.kind, self.role_ref.name
        )
    }
}

/// `appliesTo`: the first subject that names the user, one of its groups, or (as
/// `system:serviceaccount:<ns>:<n>`) its service account; a ServiceAccount subject without a namespace means the
/// binding's.
fn applies_to<'a>(subjects: Option<&'a [Subject]>, user: &UserInfo, namespace: &str) -> Option<&'a Subject> {
    subjects.into_iter().flatten().find(|s| match s.kind.as_str() {
        "User" => user.name == s.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    })
}

/// `RuleAllows`.
pub fn rule_allows(request: &RequestInfo, rule: &PolicyRule) -> bool {
    if !verb_matches(rule, &request.verb) {
        return false;
    }
    if !request.resource_request {
        return non_resource_url_matches(rule, &request.path);
    }
    let combined = if request.subresource.is_empty() {
        request.resource.clone()
    } else {
        format!("{}/{}", request.resource, request.subresource)
    };
    group_matches(rule, &request.group)
        && resource_matches(rule, &combined, &request.subresource)
        && resource_name_matches(rule, &request.name)
}

fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

fn group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.api_groups.iter().flatten().any(|g| g == "*" || g == group)
}

fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().flatten().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => names.iter().any(|n| n == name),
    }
}

fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls
        .iter()
        .flatten()
        .any(|u| u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*'))))
}

/// The RBAC authorizer.
#[derive(Debug)]
pub struct Rbac {
    resolver: Arc<RuleResolver>,
}

impl Rbac {
    pub fn new(resolver: Arc<RuleResolver>) -> Rbac {
        Rbac { resolver }
    }
}

impl Authorizer for Rbac {
    fn authorize(&self, user: &UserInfo, request: &RequestInfo) -> Decision {
        let mut allowed = None;
        let mut errors = Vec::new();
        self.resolver
            .visit_rules_for(user, &request.namespace, &mut |rule| match rule {
                Ok((source, rule)) if rule_allows(request, rule) => {
                    allowed = Some(format!("RBAC: allowed by {source}"));
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    errors.push(e);
                    true
                }
            });
        if let Some(reason) = allowed {
            return Decision::Allow(reason);
        }
        if errors.is_empty() {
            Decision::NoOpinion(String::new())
        } else {
            Decision::NoOpinion(format!("RBAC: {}", aggregate(&errors)))
        }
    }
}

/// `utilerrors.NewAggregate(errs).Error()`.
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// `validation.ConfirmNoEscalation`: whether `user`'s rules in `namespace` cover every one of `rules`; the
/// error lists the rules not held, in kube's words.
pub fn confirm_no_escalation(
    resolver: &RuleResolver,
    user: &UserInfo,
    namespace: &str,
    rules: &[PolicyRule],
) -> Result<(), String> {
    let (owner, errors) = resolver.rules_for(user, namespace);
    let missing = uncovered(&owner, rules);
    if missing.is_empty() {
        return Ok(());
    }
    let mut descriptions: Vec<String> = compact(missing).iter().map(compact_string).collect();
    descriptions.sort();
    descriptions.dedup();
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let mut message = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        descriptions.join("\n")
    );
    if !errors.is_empty() {
        message.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(message)
}

/// `validation.Covers`: the requested rules broken down to one verb, group, resource and name each, less those
/// some owner rule covers.
fn uncovered(owner: &[PolicyRule], requested: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing = Vec::new();
    for rule in requested {
        for simple in breakdown(rule) {
            if !owner.iter().any(|o| covers(o, &simple)) {
                missing.push(simple);
            }
        }
    }
    missing
}

/// Whether `owner` covers all of `rule`.
pub fn covered(owner: &[PolicyRule], rule: &PolicyRule) -> bool {
    uncovered(owner, std::slice::from_ref(rule)).is_empty()
}

/// `CompactRules`: simple rules of one group and one resource (no names) merged, their verbs appended.
fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut simple: HashMap<(String, String), usize> = HashMap::new();
    for rule in rules {
        let key = match (
            rule.api_groups.as_deref(),
            rule.resources.as_deref(),
            rule.resource_names.as_deref(),
        ) {
            (Some([group]), Some([resource]), None) if rule.non_resource_urls.is_none() => {
                Some((group.clone(), resource.clone()))
            }
            _ => None,
        };
        match key.as_ref().and_then(|k| simple.get(k)) {
            Some(&i) => {
                for verb in rule.verbs {
                    if !out[i].verbs.contains(&verb) {
                        out[i].verbs.push(verb);
                    }
                }
            }
            None => {
                if let Some(key) = key {
                    simple.insert(key, out.len());
                }
                out.push(rule);
            }
        }
    }
    out
}

/// `BreakdownRule`.
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let groups = rule.api_groups.clone().unwrap_or_default();
    let resources = rule.resources.clone().unwrap_or_default();
    let names = rule.resource_names.clone().unwrap_or_default();
    for group in &groups {
        for resource in &resources {
            for verb in &rule.verbs {
                if names.is_empty() {
                    out.push(PolicyRule {
                        api_groups: Some(vec![group.clone()]),
                        resources: Some(vec![resource.clone()]),
                        verbs: vec![verb.clone()],
                        ..PolicyRule::default()
                    });
                }
                for name in &names {
                    out.push(PolicyRule {
                        api_groups: Some(vec![group.clone()]),
                        resources: Some(vec![resource.clone()]),
                        resource_names: Some(vec![name.clone()]),
                        verbs: vec![verb.clone()],
                        ..PolicyRule::default()
                    });
                }
            }
        }
    }
    for url in rule.non_resource_urls.iter().flatten() {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                non_resource_urls: Some(vec![url.clone()]),
                verbs: vec![verb.clone()],
                ..PolicyRule::default()
            });
        }
    }
    out
}

fn has_all(owner: &[String], wanted: &[String]) -> bool {
    owner.iter().any(|o| o == "*") || wanted.iter().all(|w| owner.contains(w))
}

/// `ruleCovers`: whether `owner` grants everything `requested` (a broken-down rule) asks for.
fn covers(owner: &PolicyRule, requested: &PolicyRule) -> bool {
    let empty = Vec::new();
    let verbs = has_all(&owner.verbs, &requested.verbs);
    let groups = has_all(
        owner.api_groups.as_ref().unwrap_or(&empty),
        requested.api_groups.as_ref().unwrap_or(&empty),
    );
    let owner_resources = owner.resources.as_ref().unwrap_or(&empty);
    let resources = requested.resources.as_ref().unwrap_or(&empty).iter().all(|r| {
        owner_resources.iter().any(|o| {
            o == "*"
                || o == r
                // `*/status` covers every resource's status; `pods/*` is not a wildcard in RBAC.
                || (o.starts_with("*/") && r.split_once('/').is_some_and(|(_, sub)| o[2..] == *sub))
        })
    });
    let owner_urls = owner.non_resource_urls.as_ref().unwrap_or(&empty);
    let urls = requested
        .non_resource_urls
        .as_ref()
        .unwrap_or(&empty)
        .iter()
        .all(|u| {
            owner_urls
                .iter()
                .any(|o| o == u || o == "*" || (o.ends_with('*') && u.starts_with(o.trim_end_matches('*'))))
        });
    let owner_names = owner.resource_names.as_deref().unwrap_or_default();
    let names = owner_names.is_empty()
        || has_all(
            owner_names,
            requested.resource_names.as_deref().unwrap_or_default(),
        );
    verbs && groups && resources && urls && names
}

/// `rbacv1helpers.CompactString`: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
pub fn compact_string(rule: &PolicyRule) -> String {
    let quoted = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", items.join(" "))
    };
    let mut parts = Vec::new();
    for (label, values) in [
        ("APIGroups", rule.api_groups.as_deref()),
        ("Resources", rule.resources.as_deref()),
        ("NonResourceURLs", rule.non_resource_urls.as_deref()),
        ("ResourceNames", rule.resource_names.as_deref()),
        ("Verbs", Some(&rule.verbs[..])),
    ] {
        if let Some(values) = values.filter(|v| !v.is_empty()) {
            parts.push(format!("{label}:{}", quoted(values)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn request(method: Method, path: &str) -> RequestInfo {
        RequestInfo::of(&method, path, None)
    }

    fn resolver() -> RuleResolver {
        RuleResolver::from_objects(&[
            (
                "roles/dev/pod-reader",
                json!({"metadata": {"name": "pod-reader", "namespace": "dev"},
                       "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
                                 {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"], "verbs": ["get", "update"]},
                                 {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["get"]}]}),
            ),
            (
                "rolebindings/dev/jane",
                json!({"metadata": {"name": "jane", "namespace": "dev"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                       "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "robot"}]}),
            ),
            (
                "rolebindings/dev/dangling",
                json!({"metadata": {"name": "dangling", "namespace": "dev"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
                       "subjects": [{"kind": "Group", "name": "ops"}]}),
            ),
            (
                "clusterroles/metrics",
                json!({"metadata": {"name": "metrics"},
                       "rules": [{"nonResourceURLs": ["/metrics", "/logs/*"], "verbs": ["get"]}]}),
            ),
            (
                "clusterrolebindings/ops-metrics",
                json!({"metadata": {"name": "ops-metrics"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "metrics"},
                       "subjects": [{"kind": "Group", "name": "ops"}]}),
            ),
        ])
    }

    #[test]
    fn rules_match_as_kubernetes_matches_them() {
        let rbac = Rbac::new(Arc::new(resolver()));
        let jane = user("jane", &["system:authenticated"]);
        let allowed = |u: &UserInfo, m: Method, p: &str| rbac.authorize(u, &request(m, p)).allowed();
        assert!(allowed(&jane, Method::GET, "/api/v1/namespaces/dev/pods"));
        assert!(allowed(&jane, Method::GET, "/api/v1/namespaces/dev/pods/p/log"));
        assert!(!allowed(&jane, Method::GET, "/api/v1/namespaces/dev/pods/p/exec"));
        assert!(!allowed(&jane, Method::DELETE, "/api/v1/namespaces/dev/pods/p"));
        assert!(!allowed(&jane, Method::GET, "/api/v1/namespaces/prod/pods"));
        assert!(!allowed(&jane, Method::GET, "/api/v1/pods"));
        assert!(allowed(
            &jane,
            Method::PUT,
            "/apis/apps/v1/namespaces/dev/deployments/web"
        ));
        assert!(!allowed(
            &jane,
            Method::PUT,
            "/apis/apps/v1/namespaces/dev/deployments/api"
        ));
        assert!(!allowed(
            &jane,
            Method::GET,
            "/apis/apps/v1/namespaces/dev/deployments"
        ));
        assert!(allowed(
            &jane,
            Method::GET,
            "/apis/apps/v1/namespaces/dev/deployments/api/scale"
        ));
        let robot = user("system:serviceaccount:dev:robot", &[]);
        assert!(allowed(&robot, Method::GET, "/api/v1/namespaces/dev/pods"));
        let other_robot = user("system:serviceaccount:prod:robot", &[]);
        assert!(!allowed(&other_robot, Method::GET, "/api/v1/namespaces/dev/pods"));
        let ops = user("sam", &["ops"]);
        assert!(allowed(&ops, Method::GET, "/metrics"));
        assert!(allowed(&ops, Method::GET, "/logs/kubelet.log"));
        assert!(!allowed(&ops, Method::GET, "/metricsx"));
        assert!(!allowed(&ops, Method::POST, "/metrics"));
        assert_eq!(
            rbac.authorize(&ops, &request(Method::GET, "/api/v1/namespaces/dev/pods")),
            Decision::NoOpinion(r#"RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#.into())
        );
    }

    #[test]
    fn escalation_is_refused_with_the_rules_not_held() {
        let resolver = resolver();
        let jane = user("jane", &["system:authenticated"]);
        let held = [PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }];
        assert_eq!(confirm_no_escalation(&resolver, &jane, "dev", &held), Ok(()));
        assert!(confirm_no_escalation(&resolver, &jane, "prod", &held).is_err());
        let more = [PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["pods".into(), "secrets".into()]),
            verbs: vec!["get".into(), "delete".into()],
            ..PolicyRule::default()
        }];
        let err = confirm_no_escalation(&resolver, &jane, "dev", &more).unwrap_err();
        assert_eq!(
            err,
            "user \"jane\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
             {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}\n\
             {APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"delete\"]}"
        );
    }
}
