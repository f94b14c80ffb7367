//! Authorization as kube-apiserver does it with `--authorization-mode=Node,RBAC`: members of `system:masters`
//! may do anything (the privileged-group authorizer in front of every mode), then the Node authorizer decides
//! for kubelets, then RBAC. The first authorizer with an opinion decides; when none allows, the request is denied
//! with the reasons collected, as kube's union authorizer does.

mod mirror;
pub mod node;
pub mod policy;
pub mod rbac;
pub mod reviews;

use crate::authn::UserInfo;
use crate::request_info::RequestInfo;

/// The superuser group: the API server's own loopback clients and the admin kubeconfig are in it.
pub const SYSTEM_MASTERS: &str = "system:masters";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with the reason a review reports (which binding allowed it; may be empty).
    Allow(String),
    /// Denied outright, with the reason shown to the client.
    Deny(String),
    /// Neither allowed nor denied; the reason (possibly empty) says why, if something went wrong.
    NoOpinion(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

pub trait Authorizer: Send + Sync + std::fmt::Debug {
    fn authorize(&self, user: &UserInfo, request: &RequestInfo) -> Decision;
}

/// Allows every authenticated request (tests of other layers, and servers started without RBAC).
#[derive(Debug, Default)]
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn authorize(&self, _user: &UserInfo, _request: &RequestInfo) -> Decision {
        Decision::Allow(String::new())
    }
}

/// kube-apiserver's authorizer chain: privileged group, then each mode in turn.
#[derive(Debug)]
pub struct Chain {
    authorizers: Vec<std::sync::Arc<dyn Authorizer>>,
}

impl Chain {
    pub fn new(authorizers: Vec<std::sync::Arc<dyn Authorizer>>) -> Chain {
        Chain { authorizers }
    }
}

impl Authorizer for Chain {
    fn authorize(&self, user: &UserInfo, request: &RequestInfo) -> Decision {
        if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            return Decision::Allow(String::new());
        }
        let mut reasons = Vec::new();
        for authorizer in &self.authorizers {
            match authorizer.authorize(user, request) {
                Decision::NoOpinion(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason);
                    }
                }
                decided => return decided,
            }
        }
        Decision::NoOpinion(reasons.join(", "))
    }
}

/// The server's authorization: the authorizer chain, and the rule resolver that escalation checks and rules
/// reviews read (absent when every authenticated user is allowed).
#[derive(Debug)]
pub struct Authorization {
    authorizer: Arc<dyn Authorizer>,
    resolver: Option<Arc<rbac::RuleResolver>>,
}

use std::sync::Arc;

impl Authorization {
    /// `--authorization-mode=Node,RBAC`: the Node authorizer and RBAC over store-watched copies (filled before
    /// this returns).
    pub async fn node_rbac(
        store: Arc<dyn embedded_store::Store>,
    ) -> Result<Authorization, embedded_store::StoreError> {
        let resolver = rbac::RuleResolver::start(store.clone()).await?;
        let node = node::NodeAuthorizer::start(store).await?;
        Ok(Authorization {
            authorizer: Arc::new(Chain::new(vec![
                Arc::new(node),
                Arc::new(rbac::Rbac::new(resolver.clone())),
            ])),
            resolver: Some(resolver),
        })
    }

    /// Every authenticated user may do everything.
    pub fn allow_all() -> Authorization {
        Authorization {
            authorizer: Arc::new(AllowAuthenticated),
            resolver: None,
        }
    }

    pub fn authorize(&self, user: &UserInfo, request: &RequestInfo) -> Decision {
        self.authorizer.authorize(user, request)
    }

    pub fn resolver(&self) -> Option<&rbac::RuleResolver> {
        self.resolver.as_deref()
    }

    /// What `user` may do in `namespace` (the union rule resolver behind SelfSubjectRulesReview): the RBAC rules,
    /// the resolution errors met, and whether the list is incomplete (a node's permissions are not enumerable, as
    /// kube's Node authorizer says).
    pub fn rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> (Vec<k8s_openapi::api::rbac::v1::PolicyRule>, Vec<String>, bool) {
        let Some(resolver) = &self.resolver else {
            return (superuser_rules(), Vec::new(), false);
        };
        let mut errors = Vec::new();
        let incomplete = node::node_identity(user).is_some();
        if incomplete {
            errors.push("node authorizer does not support user rule resolution".to_string());
        }
        let (rules, more) = resolver.rules_for(user, namespace);
        errors.extend(more);
        (rules, errors, incomplete)
    }
}

fn superuser_rules() -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    use k8s_openapi::api::rbac::v1::PolicyRule;
    let all = || vec!["*".to_string()];
    vec![
        PolicyRule {
            verbs: all(),
            api_groups: Some(all()),
            resources: Some(all()),
            ..PolicyRule::default()
        },
        PolicyRule {
            verbs: all(),
            non_resource_urls: Some(all()),
            ..PolicyRule::default()
        },
    ]
}

/// The message of a 403, as kube's `responsewriters.Forbidden` and `apierrors.NewForbidden` word it:
/// `pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default"`.
pub fn forbidden_message(user: &str, request: &RequestInfo, reason: &str) -> String {
    let what = if !request.resource_request {
        format!("User {user:?} cannot {} path {:?}", request.verb, request.path)
    } else {
        let mut resource = request.resource.clone();
        if !request.subresource.is_empty() {
            resource = format!("{resource}/{}", request.subresource);
        }
        if request.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                request.verb, request.group
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
                request.verb, request.group, request.namespace
            )
        }
    };
    let detail = if reason.is_empty() {
        what
    } else {
        format!("{what}: {reason}")
    };
    forbidden_status_message(&request.group, &request.resource, &request.name, &detail)
}

/// `apierrors.NewForbidden(groupResource, name, err).Error()`.
pub fn forbidden_status_message(group: &str, resource: &str, name: &str, detail: &str) -> String {
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    if qualified.is_empty() {
        format!("forbidden: {detail}")
    } else if name.is_empty() {
        format!("{qualified} is forbidden: {detail}")
    } else {
        format!("{qualified} {name:?} is forbidden: {detail}")
    }
}

/// A 403 `Status` with `details` naming the group, resource and object, as kube-apiserver sends it.
pub fn forbidden_response(
    group: &str,
    resource: &str,
    name: &str,
    message: String,
) -> axum::response::Response {
    let mut details = serde_json::Map::new();
    if !name.is_empty() {
        details.insert("name".into(), name.into());
    }
    if !group.is_empty() {
        details.insert("group".into(), group.into());
    }
    if !resource.is_empty() {
        details.insert("kind".into(), resource.into());
    }
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Forbidden", "details": details, "code": 403,
    });
    crate::status::json(axum::http::StatusCode::FORBIDDEN, &status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn forbidden_messages_are_kubernetes_words() {
        let list = RequestInfo::of(&Method::GET, "/api/v1/namespaces/default/pods", None);
        assert_eq!(
            forbidden_message("jane", &list, ""),
            r#"pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        let node = RequestInfo::of(&Method::GET, "/api/v1/nodes/n1", None);
        assert_eq!(
            forbidden_message("jane", &node, ""),
            r#"nodes "n1" is forbidden: User "jane" cannot get resource "nodes" in API group "" at the cluster scope"#
        );
        let scale = RequestInfo::of(
            &Method::PUT,
            "/apis/apps/v1/namespaces/a/deployments/web/scale",
            None,
        );
        assert_eq!(
            forbidden_message("jane", &scale, ""),
            r#"deployments.apps "web" is forbidden: User "jane" cannot update resource "deployments/scale" in API group "apps" in the namespace "a""#
        );
        let metrics = RequestInfo::of(&Method::GET, "/metrics", None);
        assert_eq!(
            forbidden_message("jane", &metrics, ""),
            r#"forbidden: User "jane" cannot get path "/metrics""#
        );
    }
}
