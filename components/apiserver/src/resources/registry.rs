//! The built-in resource types: everything discovery lists and the generic handlers serve, one
//! entry per kind. Names, short names, categories, scopes and subresources are Kubernetes' own.

use k8s_openapi::api;
use serde::de::DeserializeOwned;

/// How a kind's object names are validated (Kubernetes' `ValidateNameFunc`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: most kinds.
    Subdomain,
    /// DNS-1123 label: namespaces, services.
    Label,
    /// Anything usable as a path segment: RBAC kinds.
    PathSegment,
}

#[derive(Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served (or, for the node agent's ones, routed): `status`, `scale`, ...
    pub subresources: &'static [&'static str],
    pub names: NameRule,
    /// Checks that an object has the kind's structure (field types), via its k8s-openapi type.
    pub check: fn(&serde_json::Value) -> Result<(), String>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }

    /// Kinds whose spec and status are written separately also count generations.
    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }

    /// The kind's name in messages: `configmaps "x" not found`, with the group when there is one.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn check<T: DeserializeOwned>(value: &serde_json::Value) -> Result<(), String> {
    T::deserialize(value).map(|_| ()).map_err(|e| e.to_string())
}

const VERBS_ALL: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The verbs every served resource supports.
pub fn verbs() -> &'static [&'static str] {
    VERBS_ALL
}

macro_rules! resource {
    ($group:expr, $version:expr, $kind:literal, $plural:literal, $singular:literal, $namespaced:expr,
     $short:expr, $cats:expr, $subs:expr, $names:expr, $ty:ty) => {
        ResourceType {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: $short,
            categories: $cats,
            subresources: $subs,
            names: $names,
            check: check::<$ty>,
        }
    };
}

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const SCALABLE: &[&str] = &["scale", "status"];
const POD_SUBS: &[&str] = &[
    "attach",
    "binding",
    "eviction",
    "exec",
    "log",
    "portforward",
    "status",
];

use NameRule::{Label, PathSegment, Subdomain};

pub static RESOURCES: &[ResourceType] = &[
    // core/v1
    resource!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &["ns"],
        NONE,
        &["finalize", "status"],
        Label,
        api::core::v1::Namespace
    ),
    resource!(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        true,
        &["po"],
        ALL,
        POD_SUBS,
        Subdomain,
        api::core::v1::Pod
    ),
    resource!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        &["svc"],
        ALL,
        &["proxy", "status"],
        Label,
        api::core::v1::Service
    ),
    resource!(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        &["ep"],
        NONE,
        NONE,
        Subdomain,
        api::core::v1::Endpoints
    ),
    resource!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        &["cm"],
        NONE,
        NONE,
        Subdomain,
        api::core::v1::ConfigMap
    ),
    resource!(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        true,
        NONE,
        NONE,
        NONE,
        Subdomain,
        api::core::v1::Secret
    ),
    resource!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
        NONE,
        &["token"],
        Subdomain,
        api::core::v1::ServiceAccount
    ),
    resource!(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        false,
        &["no"],
        NONE,
        &["proxy", "status"],
        Subdomain,
        api::core::v1::Node
    ),
    resource!(
        "",
        "v1",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        NONE,
        NONE,
        Subdomain,
        api::core::v1::Event
    ),
    resource!(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        false,
        &["pv"],
        NONE,
        STATUS,
        Subdomain,
        api::core::v1::PersistentVolume
    ),
    resource!(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        &["pvc"],
        NONE,
        STATUS,
        Subdomain,
        api::core::v1::PersistentVolumeClaim
    ),
    resource!(
        "",
        "v1",
        "LimitRange",
        "limitranges",
        "limitrange",
        true,
        &["limits"],
        NONE,
        NONE,
        Subdomain,
        api::core::v1::LimitRange
    ),
    resource!(
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        true,
        &["quota"],
        NONE,
        STATUS,
        Subdomain,
        api::core::v1::ResourceQuota
    ),
    // apps/v1
    resource!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        true,
        &["deploy"],
        ALL,
        SCALABLE,
        Subdomain,
        api::apps::v1::Deployment
    ),
    resource!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        &["rs"],
        ALL,
        SCALABLE,
        Subdomain,
        api::apps::v1::ReplicaSet
    ),
    resource!(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        &["sts"],
        ALL,
        SCALABLE,
        Subdomain,
        api::apps::v1::StatefulSet
    ),
    resource!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        &["ds"],
        ALL,
        STATUS,
        Subdomain,
        api::apps::v1::DaemonSet
    ),
    resource!(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
        NONE,
        NONE,
        NONE,
        Subdomain,
        api::apps::v1::ControllerRevision
    ),
    // batch/v1
    resource!(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        true,
        NONE,
        ALL,
        STATUS,
        Subdomain,
        api::batch::v1::Job
    ),
    resource!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        true,
        &["cj"],
        ALL,
        STATUS,
        Subdomain,
        api::batch::v1::CronJob
    ),
    // discovery.k8s.io/v1
    resource!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        NONE,
        NONE,
        NONE,
        Subdomain,
        api::discovery::v1::EndpointSlice
    ),
    // networking.k8s.io/v1
    resource!(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        &["ing"],
        NONE,
        STATUS,
        Subdomain,
        api::networking::v1::Ingress
    ),
    resource!(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        false,
        NONE,
        NONE,
        NONE,
        Subdomain,
        api::networking::v1::IngressClass
    ),
    resource!(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        true,
        &["netpol"],
        NONE,
        NONE,
        Subdomain,
        api::networking::v1::NetworkPolicy
    ),
    // coordination.k8s.io/v1
    resource!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
        NONE,
        NONE,
        NONE,
        Subdomain,
        api::coordination::v1::Lease
    ),
    // rbac.authorization.k8s.io/v1
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        true,
        NONE,
        NONE,
        NONE,
        PathSegment,
        api::rbac::v1::Role
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
        NONE,
        NONE,
        NONE,
        PathSegment,
        api::rbac::v1::ClusterRole
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        NONE,
        NONE,
        NONE,
        PathSegment,
        api::rbac::v1::RoleBinding
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        NONE,
        NONE,
        NONE,
        PathSegment,
        api::rbac::v1::ClusterRoleBinding
    ),
    // admissionregistration.k8s.io/v1
    resource!(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        false,
        NONE,
        &["api-extensions"],
        NONE,
        Subdomain,
        api::admissionregistration::v1::MutatingWebhookConfiguration
    ),
    resource!(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        false,
        NONE,
        &["api-extensions"],
        NONE,
        Subdomain,
        api::admissionregistration::v1::ValidatingWebhookConfiguration
    ),
    // storage.k8s.io/v1
    resource!(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        "storageclass",
        false,
        &["sc"],
        NONE,
        NONE,
        Subdomain,
        api::storage::v1::StorageClass
    ),
    // events.k8s.io/v1
    resource!(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        NONE,
        NONE,
        Subdomain,
        api::events::v1::Event
    ),
    // apiextensions.k8s.io/v1: the kinds it defines are served by `custom`.
    resource!(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        false,
        &["crd", "crds"],
        &["api-extensions"],
        STATUS,
        Subdomain,
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition
    ),
    // certificates.k8s.io/v1: the kubelets' client and serving certificates (TLS bootstrap), approved on
    // `/approval` and issued on `/status` by the certificate controllers.
    resource!(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        "certificatesigningrequest",
        false,
        &["csr"],
        NONE,
        &["approval", "status"],
        Subdomain,
        api::certificates::v1::CertificateSigningRequest
    ),
    // scheduling.k8s.io/v1
    resource!(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        "priorityclass",
        false,
        &["pc"],
        NONE,
        NONE,
        Subdomain,
        api::scheduling::v1::PriorityClass
    ),
];

/// The resource `plural` of `group`/`version`: a built-in one, else one a CustomResourceDefinition defines.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .or_else(|| super::custom::find(group, version, plural))
}

/// The groups served, in discovery order (core excluded), each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_and_checkable() {
        let mut seen = std::collections::HashSet::new();
        for r in RESOURCES {
            assert!(seen.insert((r.group, r.version, r.plural)), "{} twice", r.plural);
            let minimal =
                serde_json::json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": "x"}});
            // Kinds with required fields refuse the minimal object; none may panic.
            let _ = (r.check)(&minimal);
        }
        assert_eq!(find("apps", "v1", "deployments").unwrap().kind, "Deployment");
        assert!(find("", "v1", "deployments").is_none());
        assert!(groups().contains(&("batch", "v1")));
    }

    #[test]
    fn typed_checks_catch_wrong_field_types() {
        let cm = find("", "v1", "configmaps").unwrap();
        assert!((cm.check)(&serde_json::json!({"metadata": {"name": "x"}, "data": {"k": "v"}})).is_ok());
        let err = (cm.check)(&serde_json::json!({"metadata": {"name": "x"}, "data": {"k": 5}})).unwrap_err();
        assert!(err.contains("string"), "{err}");
    }
}
