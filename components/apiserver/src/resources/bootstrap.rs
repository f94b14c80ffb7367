//! What every cluster has from its first start, reconciled at every start: the four system
//! namespaces, and the `default/kubernetes` Service with its Endpoints and EndpointSlice pointing
//! at this API server (kube-apiserver's "master endpoint reconciler").

use std::net::IpAddr;

use embedded_store::Store;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::handlers::{Target, create_object, get, replace};
use super::{registry, services};

fn target(
    group: &str,
    plural: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<Target, ApiError> {
    let resource = registry::find(group, "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("{plural} is not registered")))?;
    Ok(Target {
        resource,
        namespace: namespace.map(String::from),
        name: name.map(String::from),
        subresource: None,
    })
}

/// Creates `object` unless it exists; if it exists but any of `fields` drifted, writes those
/// fields of `object` over it.
async fn ensure(
    store: &dyn Store,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
    object: Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let collection = target(group, plural, namespace, None)?;
    match create_object(store, &collection, object.clone(), false, None).await {
        Ok(_) => return Ok(()),
        Err(ApiError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    let one = target(group, plural, namespace, Some(&name))?;
    let (current, rev) = get(store, &one).await?;
    if fields.iter().all(|f| current.get(*f) == object.get(*f)) {
        return Ok(());
    }
    let mut updated = current.clone();
    for f in fields {
        if let Some(v) = object.get(*f) {
            updated[*f] = v.clone();
        }
    }
    replace(store, &one, current, rev, updated, false, None)
        .await
        .map(|_| ())
}

/// The namespaces every cluster starts with.
pub async fn ensure_default_namespaces(store: &dyn Store) -> Result<(), ApiError> {
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            store,
            "",
            "namespaces",
            None,
            json!({"metadata": {"name": name}}),
            &[],
        )
        .await?;
    }
    Ok(())
}

/// Records the service IP and node port ranges in the cluster state and makes the reservations match the
/// stored Services (before any Service is written).
pub async fn ensure_service_ranges(
    store: &dyn Store,
    ranges: services::ServiceRanges,
) -> Result<(), ApiError> {
    services::store_ranges(store, ranges).await?;
    services::repair_reservations(store).await
}

/// `default/kubernetes`: the Service at the first service IP, and its endpoints at `address`.
pub async fn ensure_kubernetes_service(
    store: &dyn Store,
    service_ip: IpAddr,
    address: IpAddr,
    port: u16,
) -> Result<(), ApiError> {
    let family = if service_ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let service = json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP", "clusterIP": service_ip.to_string(), "clusterIPs": [service_ip.to_string()],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            "sessionAffinity": "None", "ipFamilies": [family], "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        },
    });
    ensure(store, "", "services", Some("default"), service, &["spec"]).await?;
    let endpoints = json!({
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    ensure(store, "", "endpoints", Some("default"), endpoints, &["subsets"]).await?;
    let slice = json!({
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    ensure(
        store,
        "discovery.k8s.io",
        "endpointslices",
        Some("default"),
        slice,
        &["endpoints", "ports"],
    )
    .await
}

/// The bootstrap policy (`authz::policy`), reconciled as kube-apiserver's `rbac/bootstrap-roles` post-start hook
/// does: missing ClusterRoles and ClusterRoleBindings are created; existing ones not annotated
/// `rbac.authorization.kubernetes.io/autoupdate: "false"` get the rules, subjects, labels, annotations and
/// aggregation selectors they lack (a binding whose roleRef changed is deleted and created again).
pub async fn ensure_bootstrap_policy(store: &dyn Store) -> Result<(), ApiError> {
    use crate::authz::policy;
    const GROUP: &str = "rbac.authorization.k8s.io";
    for (plural, objects) in [
        ("clusterroles", policy::cluster_roles()),
        ("clusterrolebindings", policy::cluster_role_bindings()),
    ] {
        for expected in objects {
            let name = expected["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let collection = target(GROUP, plural, None, None)?;
            match create_object(store, &collection, expected.clone(), false, None).await {
                Ok(_) => {
                    tracing::info!(kind = plural, name = %name, "created bootstrap RBAC object");
                    continue;
                }
                Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            let one = target(GROUP, plural, None, Some(&name))?;
            let (current, rev) = get(store, &one).await?;
            let reconciled = if plural == "clusterroles" {
                policy::reconcile_cluster_role(&current, &expected)
            } else {
                match policy::reconcile_binding(&current, &expected) {
                    policy::BindingReconciliation::Unchanged => None,
                    policy::BindingReconciliation::Update(updated) => Some(updated),
                    policy::BindingReconciliation::Recreate => {
                        // roleRef is immutable: the binding is made again.
                        let key = super::objects::key(one.resource, None, &name);
                        store.delete(bytes::Bytes::from(key), Some(rev)).await?;
                        create_object(store, &collection, expected.clone(), false, None).await?;
                        continue;
                    }
                }
            };
            if let Some(updated) = reconciled {
                replace(store, &one, current, rev, updated, false, None).await?;
                tracing::info!(kind = plural, name = %name, "reconciled bootstrap RBAC object");
            }
        }
    }
    Ok(())
}
