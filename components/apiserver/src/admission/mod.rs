//! What a write must pass beyond validation, for the user making it: the request's user and the server's
//! authorization travel with the request (a task-local, as kube-apiserver carries them in the request context),
//! so the storage code reached from any handler can check them. Writes the server makes itself (bootstrap
//! reconciliation) carry no user and are not checked.
//!
//! - RBAC escalation prevention (pkg/registry/rbac/*/policybased): a Role or ClusterRole may be written only with
//!   rules the writer holds, unless it may `escalate` it; a binding only to a role whose rules the writer holds,
//!   unless it may `bind` it; `system:masters` may do both.

pub mod webhook;
mod webhook_client;
pub mod webhook_config;
mod webhook_match;
mod webhook_service;

use std::sync::Arc;

use serde_json::Value;

use crate::authn::UserInfo;
use crate::authz::{Authorization, SYSTEM_MASTERS, forbidden_status_message, rbac};
use crate::request_info::RequestInfo;
use crate::resources::ApiError;

/// The user behind the request being served, and what decides what it may do.
#[derive(Debug)]
pub struct RequestContext {
    pub user: UserInfo,
    pub authorization: Arc<Authorization>,
}

tokio::task_local! {
    static REQUEST: Arc<RequestContext>;
}

/// Serves `f` as a request of `context`'s user.
pub async fn scope<F: std::future::Future>(context: Arc<RequestContext>, f: F) -> F::Output {
    REQUEST.scope(context, f).await
}

/// The request being served on this task, if it came from a client.
pub fn current() -> Option<Arc<RequestContext>> {
    REQUEST.try_with(Arc::clone).ok()
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Whether only what the garbage collector writes changed (`IsOnlyMutatingGCFields`).
fn only_gc_fields(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "ownerReferences",
                "finalizers",
                "resourceVersion",
                "managedFields",
                "generation",
            ] {
                meta.remove(f);
            }
        }
        v
    };
    strip(new) == strip(old)
}

fn allowed(context: &RequestContext, verb: &str, resource: &str, namespace: &str, name: &str) -> bool {
    let request = RequestInfo {
        verb: verb.into(),
        resource_request: true,
        group: RBAC_GROUP.into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..RequestInfo::default()
    };
    context.authorization.authorize(&context.user, &request).allowed()
}

fn rules_of(object: &Value) -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    serde_json::from_value(object.get("rules").cloned().unwrap_or(Value::Array(vec![]))).unwrap_or_default()
}

/// Escalation prevention for a create (`old` = None) or update of an RBAC object of `plural`.
pub fn check_rbac_write(
    plural: &str,
    namespace: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(context) = current() else {
        return Ok(());
    };
    let Some(resolver) = context.authorization.resolver() else {
        return Ok(());
    };
    if context.user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Ok(());
    }
    if let Some(old) = old
        && only_gc_fields(object, old)
    {
        return Ok(());
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let forbidden =
        |detail: String| ApiError::Forbidden(forbidden_status_message(RBAC_GROUP, plural, name, &detail));
    match plural {
        "roles" | "clusterroles" => {
            if allowed(&context, "escalate", plural, namespace, name) {
                return Ok(());
            }
            rbac::confirm_no_escalation(resolver, &context.user, namespace, &rules_of(object))
                .map_err(forbidden)?;
            let aggregation = object.get("aggregationRule").filter(|a| !a.is_null());
            let old_aggregation = old
                .and_then(|o| o.get("aggregationRule"))
                .filter(|a| !a.is_null());
            if plural == "clusterroles" && aggregation.is_some() && aggregation != old_aggregation {
                let everything = k8s_openapi::api::rbac::v1::PolicyRule {
                    verbs: vec!["*".into()],
                    api_groups: Some(vec!["*".into()]),
                    resources: Some(vec!["*".into()]),
                    ..Default::default()
                };
                rbac::confirm_no_escalation(resolver, &context.user, namespace, &[everything]).map_err(
                    |_| forbidden("must have cluster-admin privileges to use the aggregationRule".into()),
                )?;
            }
            Ok(())
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = object
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let role = object
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let role_plural = if kind == "Role" { "roles" } else { "clusterroles" };
            if allowed(&context, "bind", role_plural, namespace, role) {
                return Ok(());
            }
            let rules = resolver
                .role_reference_rules(kind, role, namespace)
                .map_err(forbidden)?;
            rbac::confirm_no_escalation(resolver, &context.user, namespace, &rules).map_err(forbidden)
        }
        _ => Ok(()),
    }
}

/// The NodeRestriction admission plugin (plugin/pkg/admission/noderestriction), for the writes a node's rules
/// allow on objects of other nodes: a node may create only mirror pods bound to itself, update only the status
/// of pods bound to itself, and create or update only its own Node. `plural`/`subresource` name the write;
/// `old` is the object before an update.
pub fn check_node_restriction(
    plural: &str,
    subresource: Option<&str>,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(context) = current() else {
        return Ok(());
    };
    let Some(node) = crate::authz::node::node_identity(&context.user) else {
        return Ok(());
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let forbidden = |detail: String| ApiError::Forbidden(forbidden_status_message("", plural, name, &detail));
    if node.is_empty() {
        return Err(forbidden(format!(
            "could not determine node from user {:?}",
            context.user.name
        )));
    }
    let node_name_of = |v: &Value| {
        v.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match (plural, subresource, old) {
        ("pods", None, None) => {
            let mirror = object
                .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                .is_some();
            if !mirror {
                return Err(forbidden(format!(
                    "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
                )));
            }
            if node_name_of(object) != node {
                return Err(forbidden(format!(
                    "node {node:?} can only create pods with spec.nodeName set to itself"
                )));
            }
            Ok(())
        }
        ("pods", Some("status"), Some(old)) => {
            if node_name_of(old) != node {
                return Err(forbidden(format!(
                    "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                )));
            }
            Ok(())
        }
        ("nodes", _, _) => {
            if name != node {
                return Err(forbidden(format!(
                    "node {node:?} is not allowed to modify node {name:?}"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
