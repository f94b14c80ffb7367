//! The Node authorizer (plugin/pkg/auth/authorizer/node): a kubelet, `system:node:<name>` in `system:nodes`,
//! may read the secrets, configmaps, claims and volumes of the pods bound to its node, create tokens for their
//! service accounts, read its own Node and the pods bound to it (lists and watches only with the
//! `spec.nodeName=<node>` field selector, as `AuthorizeNodeWithSelectors` does since 1.32), use its own Lease, and
//! otherwise what `NodeRules()` grants. The graph is the pods' and claims' references, read from store-watched
//! copies of both kinds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use embedded_store::Store;
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

use super::mirror::{Mirror, Mirrored};
use super::rbac::rule_allows;
use super::{Authorizer, Decision};
use crate::authn::UserInfo;
use crate::request_info::{RequestInfo, exact_match};

pub const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";
const PODS: &str = "/registry/core/pods/";
const CLAIMS: &str = "/registry/core/persistentvolumeclaims/";

/// The node a user is (`NodeIdentifier.NodeIdentity`): `Some("")` for a member of `system:nodes` whose name does
/// not say which node.
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    Some(user.name.strip_prefix(NODE_USER_PREFIX).unwrap_or(""))
}

/// What a pod bound to a node lets that node reach.
#[derive(Debug, Default, PartialEq, Eq)]
struct PodEdges {
    node: String,
    namespace: String,
    name: String,
    service_account: String,
    secrets: HashSet<String>,
    config_maps: HashSet<String>,
    claims: HashSet<String>,
}

impl PodEdges {
    fn of(pod: &Value) -> Option<PodEdges> {
        let meta = pod.get("metadata")?;
        let spec = pod.get("spec")?;
        let text = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
        let mut edges = PodEdges {
            node: text(spec, "/nodeName").unwrap_or_default(),
            namespace: text(meta, "/namespace")?,
            name: text(meta, "/name")?,
            service_account: text(spec, "/serviceAccountName").unwrap_or_else(|| "default".into()),
            ..PodEdges::default()
        };
        for secret in spec
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            edges.secrets.extend(text(secret, "/name"));
        }
        for volume in spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            edges.secrets.extend(text(volume, "/secret/secretName"));
            edges.config_maps.extend(text(volume, "/configMap/name"));
            edges
                .claims
                .extend(text(volume, "/persistentVolumeClaim/claimName"));
            if volume.get("ephemeral").is_some()
                && let Some(volume_name) = text(volume, "/name")
            {
                edges.claims.insert(format!("{}-{volume_name}", edges.name));
            }
            for source in volume
                .pointer("/projected/sources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                edges.secrets.extend(text(source, "/secret/name"));
                edges.config_maps.extend(text(source, "/configMap/name"));
            }
            for p in [
                "/cephfs/secretRef/name",
                "/rbd/secretRef/name",
                "/csi/nodePublishSecretRef/name",
            ] {
                edges.secrets.extend(text(volume, p));
            }
        }
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for container in spec.get(list).and_then(Value::as_array).into_iter().flatten() {
                for from in container
                    .get("envFrom")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    edges.secrets.extend(text(from, "/secretRef/name"));
                    edges.config_maps.extend(text(from, "/configMapRef/name"));
                }
                for env in container
                    .get("env")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    edges.secrets.extend(text(env, "/valueFrom/secretKeyRef/name"));
                    edges
                        .config_maps
                        .extend(text(env, "/valueFrom/configMapKeyRef/name"));
                }
            }
        }
        Some(edges)
    }
}

#[derive(Debug, Default)]
struct Pods(HashMap<String, PodEdges>);

impl Mirrored for Pods {
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        let edges = value
            .and_then(|v| serde_json::from_slice::<Value>(v).ok())
            .and_then(|pod| PodEdges::of(&pod))
            // Only bound pods give a node anything.
            .filter(|e| !e.node.is_empty());
        match edges {
            Some(edges) => drop(self.0.insert(key.to_string(), edges)),
            None => drop(self.0.remove(key)),
        }
    }
}

/// Claims and the volumes bound to them: (namespace, claim) → volume.
#[derive(Debug, Default)]
struct Claims(HashMap<(String, String), String>);

impl Mirrored for Claims {
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        let Some((namespace, name)) = key.strip_prefix(CLAIMS).and_then(|k| k.split_once('/')) else {
            return;
        };
        let id = (namespace.to_string(), name.to_string());
        let volume = value
            .and_then(|v| serde_json::from_slice::<Value>(v).ok())
            .and_then(|c| {
                c.pointer("/spec/volumeName")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .filter(|v| !v.is_empty());
        match volume {
            Some(volume) => drop(self.0.insert(id, volume)),
            None => drop(self.0.remove(&id)),
        }
    }
}

#[derive(Debug)]
pub struct NodeAuthorizer {
    pods: Arc<Mirror<Pods>>,
    claims: Arc<Mirror<Claims>>,
    rules: Vec<PolicyRule>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Vertex {
    Secret,
    ConfigMap,
    Claim,
    Volume,
    ServiceAccount,
    Pod,
}

fn no_opinion(reason: impl Into<String>) -> Decision {
    Decision::NoOpinion(reason.into())
}

impl NodeAuthorizer {
    pub async fn start(store: Arc<dyn Store>) -> Result<NodeAuthorizer, embedded_store::StoreError> {
        Ok(NodeAuthorizer {
            pods: Mirror::start(store.clone(), PODS).await?,
            claims: Mirror::start(store, CLAIMS).await?,
            rules: node_rules(),
        })
    }

    /// Whether an object is reachable from a pod bound to `node` (`hasPathFrom`).
    fn has_path(&self, node: &str, vertex: Vertex, namespace: &str, name: &str) -> bool {
        let pods = self.pods.read();
        let mut on_node = pods.0.values().filter(|p| p.node == node);
        match vertex {
            Vertex::Secret => on_node.any(|p| p.namespace == namespace && p.secrets.contains(name)),
            Vertex::ConfigMap => on_node.any(|p| p.namespace == namespace && p.config_maps.contains(name)),
            Vertex::Claim => on_node.any(|p| p.namespace == namespace && p.claims.contains(name)),
            Vertex::ServiceAccount => on_node.any(|p| p.namespace == namespace && p.service_account == name),
            Vertex::Pod => on_node.any(|p| p.namespace == namespace && p.name == name),
            Vertex::Volume => {
                let claims = self.claims.read();
                on_node.any(|p| {
                    p.claims.iter().any(|c| {
                        claims
                            .0
                            .get(&(p.namespace.clone(), c.clone()))
                            .is_some_and(|v| v == name)
                    })
                })
            }
        }
    }

    fn authorize_path(&self, node: &str, vertex: Vertex, request: &RequestInfo) -> Decision {
        if request.name.is_empty() {
            return no_opinion("No Object name found");
        }
        if self.has_path(node, vertex, &request.namespace, &request.name) {
            Decision::Allow(String::new())
        } else {
            no_opinion(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }

    fn read_namespaced(&self, node: &str, vertex: Vertex, request: &RequestInfo) -> Decision {
        if !matches!(request.verb.as_str(), "get" | "list" | "watch") {
            return no_opinion("can only read resources of this type");
        }
        if !request.subresource.is_empty() {
            return no_opinion("cannot read subresource");
        }
        if request.namespace.is_empty() {
            return no_opinion("can only read namespaced object of this type");
        }
        self.authorize_path(node, vertex, request)
    }

    fn get(&self, node: &str, vertex: Vertex, request: &RequestInfo) -> Decision {
        if request.verb != "get" {
            return no_opinion("can only get individual resources of this type");
        }
        if !request.subresource.is_empty() {
            return no_opinion("cannot get subresource");
        }
        self.authorize_path(node, vertex, request)
    }

    fn claim_status(&self, node: &str, request: &RequestInfo) -> Decision {
        if !matches!(request.verb.as_str(), "update" | "patch") {
            return no_opinion("can only get/update/patch this type");
        }
        self.authorize_path(node, Vertex::Claim, request)
    }

    fn create_token(&self, node: &str, request: &RequestInfo) -> Decision {
        if request.verb != "create" || request.name.is_empty() {
            return no_opinion("can only create tokens for individual service accounts");
        }
        if request.subresource != "token" {
            return no_opinion("can only create token subresource of serviceaccount");
        }
        self.authorize_path(node, Vertex::ServiceAccount, request)
    }

    fn lease(&self, node: &str, request: &RequestInfo) -> Decision {
        if !matches!(
            request.verb.as_str(),
            "get" | "create" | "update" | "patch" | "delete"
        ) {
            return no_opinion("can only get, create, update, patch, or delete a node lease");
        }
        if request.namespace != "kube-node-lease" {
            return no_opinion("can only access leases in the \"kube-node-lease\" system namespace");
        }
        if request.verb != "create" && request.name != node {
            return no_opinion("can only access node lease with the same name as the requesting node");
        }
        Decision::Allow(String::new())
    }

    fn static_rules(&self, request: &RequestInfo) -> Decision {
        if self.rules.iter().any(|r| rule_allows(request, r)) {
            Decision::Allow(String::new())
        } else {
            no_opinion("")
        }
    }

    fn node(&self, node: &str, request: &RequestInfo) -> Decision {
        match request.verb.as_str() {
            "get" | "list" | "watch" if request.name != node => no_opinion(format!(
                "node '{node}' cannot read '{}', only its own Node object",
                request.name
            )),
            _ => self.static_rules(request),
        }
    }

    fn pod(&self, node: &str, request: &RequestInfo) -> Decision {
        match request.verb.as_str() {
            "get" if request.subresource.is_empty() => self.authorize_path(node, Vertex::Pod, request),
            "list" | "watch" if request.name.is_empty() => {
                if exact_match(&request.field_selector, "spec.nodeName") == Some(node) {
                    self.static_rules(request)
                } else {
                    no_opinion("can only list/watch pods with spec.nodeName field selector")
                }
            }
            "list" | "watch" => self.authorize_path(node, Vertex::Pod, request),
            _ => self.static_rules(request),
        }
    }
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, user: &UserInfo, request: &RequestInfo) -> Decision {
        let Some(node) = node_identity(user) else {
            return no_opinion("");
        };
        if node.is_empty() {
            return no_opinion(format!("unknown node for user {:?}", user.name));
        }
        if request.resource_request {
            match (request.group.as_str(), request.resource.as_str()) {
                ("", "secrets") => return self.read_namespaced(node, Vertex::Secret, request),
                ("", "configmaps") => return self.read_namespaced(node, Vertex::ConfigMap, request),
                ("", "persistentvolumeclaims") if request.subresource == "status" => {
                    return self.claim_status(node, request);
                }
                ("", "persistentvolumeclaims") => return self.get(node, Vertex::Claim, request),
                ("", "persistentvolumes") => return self.get(node, Vertex::Volume, request),
                ("", "serviceaccounts") => return self.create_token(node, request),
                ("coordination.k8s.io", "leases") => return self.lease(node, request),
                ("", "nodes") => return self.node(node, request),
                ("", "pods") => return self.pod(node, request),
                _ => {}
            }
        }
        self.static_rules(request)
    }
}

fn node_rules() -> Vec<PolicyRule> {
    super::policy::node_rules()
        .into_iter()
        .filter_map(|r| serde_json::from_value(r).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;
    use serde_json::json;

    fn authorizer() -> NodeAuthorizer {
        let mut pods = Pods::default();
        let pod = json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"nodeName": "n1", "serviceAccountName": "shopper",
                     "volumes": [{"name": "v", "secret": {"secretName": "tls"}},
                                 {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                                 {"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}],
                     "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}]}]},
        });
        pods.apply("/registry/core/pods/shop/web", Some(pod.to_string().as_bytes()));
        let mut claims = Claims::default();
        claims.apply(
            "/registry/core/persistentvolumeclaims/shop/data",
            Some(json!({"spec": {"volumeName": "pv-1"}}).to_string().as_bytes()),
        );
        NodeAuthorizer {
            pods: Arc::new(Mirror::of(pods)),
            claims: Arc::new(Mirror::of(claims)),
            rules: node_rules(),
        }
    }

    fn node(name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{name}"),
            uid: String::new(),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    #[test]
    fn nodes_reach_only_what_their_pods_use() {
        let a = authorizer();
        let can = |user: &UserInfo, method: Method, path: &str, query: Option<&str>| {
            a.authorize(user, &RequestInfo::of(&method, path, query))
                .allowed()
        };
        let (n1, n2) = (node("n1"), node("n2"));
        assert!(can(&n1, Method::GET, "/api/v1/namespaces/shop/secrets/tls", None));
        assert!(can(
            &n1,
            Method::GET,
            "/api/v1/namespaces/shop/secrets/env-secret",
            None
        ));
        assert!(can(
            &n1,
            Method::GET,
            "/api/v1/namespaces/shop/secrets",
            Some("watch=1&fieldSelector=metadata.name%3Dtls")
        ));
        assert!(!can(&n1, Method::GET, "/api/v1/namespaces/shop/secrets", None));
        assert!(!can(
            &n1,
            Method::GET,
            "/api/v1/namespaces/shop/secrets/other",
            None
        ));
        assert!(!can(
            &n2,
            Method::GET,
            "/api/v1/namespaces/shop/secrets/tls",
            None
        ));
        assert!(!can(
            &n1,
            Method::PUT,
            "/api/v1/namespaces/shop/secrets/tls",
            None
        ));
        assert!(can(
            &n1,
            Method::GET,
            "/api/v1/namespaces/shop/configmaps/kube-root-ca.crt",
            None
        ));
        assert!(can(
            &n1,
            Method::GET,
            "/api/v1/namespaces/shop/persistentvolumeclaims/data",
            None
        ));
        assert!(can(&n1, Method::GET, "/api/v1/persistentvolumes/pv-1", None));
        assert!(!can(&n2, Method::GET, "/api/v1/persistentvolumes/pv-1", None));
        assert!(can(
            &n1,
            Method::POST,
            "/api/v1/namespaces/shop/serviceaccounts/shopper/token",
            None
        ));
        assert!(!can(
            &n1,
            Method::POST,
            "/api/v1/namespaces/shop/serviceaccounts/default/token",
            None
        ));
        assert!(can(&n1, Method::GET, "/api/v1/nodes/n1", None));
        assert!(!can(&n1, Method::GET, "/api/v1/nodes/n2", None));
        assert!(can(&n1, Method::PATCH, "/api/v1/nodes/n1/status", None));
        assert!(can(
            &n1,
            Method::GET,
            "/api/v1/pods",
            Some("fieldSelector=spec.nodeName%3Dn1&watch=true")
        ));
        assert!(!can(&n1, Method::GET, "/api/v1/pods", None));
        assert!(can(&n1, Method::GET, "/api/v1/namespaces/shop/pods/web", None));
        assert!(!can(&n2, Method::GET, "/api/v1/namespaces/shop/pods/web", None));
        assert!(can(
            &n1,
            Method::PATCH,
            "/api/v1/namespaces/shop/pods/web/status",
            None
        ));
        assert!(can(
            &n1,
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
            None
        ));
        assert!(!can(
            &n1,
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2",
            None
        ));
        assert!(can(&n1, Method::POST, "/api/v1/namespaces/shop/events", None));
        assert!(!can(&n1, Method::GET, "/apis/apps/v1/deployments", None));
        assert_eq!(
            a.authorize(
                &n2,
                &RequestInfo::of(&Method::GET, "/api/v1/namespaces/shop/secrets/tls", None)
            ),
            Decision::NoOpinion("no relationship found between node 'n2' and this object".into())
        );
        let jane = UserInfo {
            name: "jane".into(),
            uid: String::new(),
            groups: vec![],
        };
        assert_eq!(
            a.authorize(&jane, &RequestInfo::of(&Method::GET, "/api/v1/nodes/n1", None)),
            no_opinion("")
        );
    }
}
