//! Kubernetes' patch metadata for the built-in types: which lists merge by key, which are sets, which fields retain
//! keys. In Kubernetes these are the Go struct tags `patchStrategy`/`patchMergeKey` and the `+listType`/
//! `+listMapKey` markers; the OpenAPI documents carry them as `x-kubernetes-patch-strategy`,
//! `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type` and `x-kubernetes-list-map-keys`.
//!
//! One table serves the OpenAPI generator (which adds the extensions, so kubectl computes the same strategic merge
//! patches it does against Kubernetes), strategic merge patch and server-side apply. The test
//! `tests/openapi_documents.rs` checks the merge keys against the ones k8s-openapi's generator derived from
//! Kubernetes' own OpenAPI, for every type reachable from a served kind.

/// How a field is patched and applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchMeta {
    /// `x-kubernetes-patch-strategy`: `merge`, `retainKeys` or `merge,retainKeys`.
    pub strategy: &'static str,
    /// `x-kubernetes-patch-merge-key`, for lists of objects merged by key.
    pub merge_key: Option<&'static str>,
    /// `x-kubernetes-list-type`: `map`, `set` (or `atomic`, the default for lists, never listed here).
    pub list_type: Option<&'static str>,
    /// `x-kubernetes-list-map-keys`, for `map` lists.
    pub map_keys: &'static [&'static str],
}

const fn merge_by(key: &'static str, map_keys: &'static [&'static str]) -> PatchMeta {
    PatchMeta {
        strategy: "merge",
        merge_key: Some(key),
        list_type: Some("map"),
        map_keys,
    }
}

const fn merge_retain_by(key: &'static str, map_keys: &'static [&'static str]) -> PatchMeta {
    PatchMeta {
        strategy: "merge,retainKeys",
        merge_key: Some(key),
        list_type: Some("map"),
        map_keys,
    }
}

/// A list of scalars merged as a set (`patchStrategy:"merge"` without a key, `+listType=set`).
const MERGED_SET: PatchMeta = PatchMeta {
    strategy: "merge",
    merge_key: None,
    list_type: Some("set"),
    map_keys: &[],
};
/// A `+listType=set` list that strategic merge patch still replaces.
const SET: PatchMeta = PatchMeta {
    strategy: "",
    merge_key: None,
    list_type: Some("set"),
    map_keys: &[],
};
const RETAIN_KEYS: PatchMeta = PatchMeta {
    strategy: "retainKeys",
    merge_key: None,
    list_type: None,
    map_keys: &[],
};

const CONDITIONS: PatchMeta = merge_by("type", &["type"]);
const BY_NAME: PatchMeta = merge_by("name", &["name"]);

const CORE: &str = "io.k8s.api.core.v1.";
const APPS: &str = "io.k8s.api.apps.v1.";
const BATCH: &str = "io.k8s.api.batch.v1.";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";
const ADMISSION: &str = "io.k8s.api.admissionregistration.v1.";

/// (definition name without its package, package, field, metadata).
static TABLE: &[(&str, &str, &str, PatchMeta)] = &[
    // meta/v1
    (META, "ObjectMeta", "finalizers", MERGED_SET),
    (META, "ObjectMeta", "ownerReferences", merge_by("uid", &["uid"])),
    // admissionregistration/v1
    (ADMISSION, "MutatingWebhookConfiguration", "webhooks", BY_NAME),
    (ADMISSION, "ValidatingWebhookConfiguration", "webhooks", BY_NAME),
    (ADMISSION, "MutatingWebhook", "matchConditions", BY_NAME),
    (ADMISSION, "ValidatingWebhook", "matchConditions", BY_NAME),
    // core/v1: pods and containers
    (CORE, "PodSpec", "containers", BY_NAME),
    (CORE, "PodSpec", "initContainers", BY_NAME),
    (CORE, "PodSpec", "ephemeralContainers", BY_NAME),
    (CORE, "PodSpec", "imagePullSecrets", BY_NAME),
    (CORE, "PodSpec", "schedulingGates", BY_NAME),
    (CORE, "PodSpec", "volumes", merge_retain_by("name", &["name"])),
    (
        CORE,
        "PodSpec",
        "resourceClaims",
        merge_retain_by("name", &["name"]),
    ),
    (CORE, "PodSpec", "hostAliases", merge_by("ip", &["ip"])),
    (
        CORE,
        "PodSpec",
        "topologySpreadConstraints",
        merge_by("topologyKey", &["topologyKey", "whenUnsatisfiable"]),
    ),
    (CORE, "Container", "env", BY_NAME),
    (
        CORE,
        "Container",
        "ports",
        merge_by("containerPort", &["containerPort", "protocol"]),
    ),
    (
        CORE,
        "Container",
        "volumeMounts",
        merge_by("mountPath", &["mountPath"]),
    ),
    (
        CORE,
        "Container",
        "volumeDevices",
        merge_by("devicePath", &["devicePath"]),
    ),
    (CORE, "EphemeralContainer", "env", BY_NAME),
    (
        CORE,
        "EphemeralContainer",
        "ports",
        merge_by("containerPort", &["containerPort", "protocol"]),
    ),
    (
        CORE,
        "EphemeralContainer",
        "volumeMounts",
        merge_by("mountPath", &["mountPath"]),
    ),
    (
        CORE,
        "EphemeralContainer",
        "volumeDevices",
        merge_by("devicePath", &["devicePath"]),
    ),
    (CORE, "ResourceRequirements", "claims", BY_NAME),
    (CORE, "PodStatus", "conditions", CONDITIONS),
    (CORE, "PodStatus", "podIPs", merge_by("ip", &["ip"])),
    (CORE, "PodStatus", "hostIPs", merge_by("ip", &["ip"])),
    (
        CORE,
        "PodStatus",
        "resourceClaimStatuses",
        merge_retain_by("name", &["name"]),
    ),
    (
        CORE,
        "ContainerStatus",
        "volumeMounts",
        merge_by("mountPath", &["mountPath"]),
    ),
    (CORE, "ContainerStatus", "allocatedResourcesStatus", BY_NAME),
    (
        CORE,
        "ResourceStatus",
        "resources",
        merge_by("resourceID", &["resourceID"]),
    ),
    // core/v1: everything else
    (
        CORE,
        "ServiceSpec",
        "ports",
        merge_by("port", &["port", "protocol"]),
    ),
    (CORE, "ServiceStatus", "conditions", CONDITIONS),
    (CORE, "ServiceAccount", "secrets", BY_NAME),
    (CORE, "NodeSpec", "podCIDRs", MERGED_SET),
    (CORE, "NodeStatus", "conditions", CONDITIONS),
    (CORE, "NodeStatus", "addresses", merge_by("type", &["type"])),
    (CORE, "NamespaceStatus", "conditions", CONDITIONS),
    (CORE, "PersistentVolumeClaimStatus", "conditions", CONDITIONS),
    (CORE, "ReplicationControllerStatus", "conditions", CONDITIONS),
    (CORE, "ComponentStatus", "conditions", CONDITIONS),
    // apps/v1
    (APPS, "DeploymentSpec", "strategy", RETAIN_KEYS),
    (APPS, "DeploymentStatus", "conditions", CONDITIONS),
    (APPS, "ReplicaSetStatus", "conditions", CONDITIONS),
    (APPS, "StatefulSetStatus", "conditions", CONDITIONS),
    (APPS, "DaemonSetStatus", "conditions", CONDITIONS),
    // batch/v1
    (BATCH, "JobStatus", "conditions", CONDITIONS),
    (BATCH, "UncountedTerminatedPods", "failed", SET),
    (BATCH, "UncountedTerminatedPods", "succeeded", SET),
    (BATCH, "PodFailurePolicyOnExitCodesRequirement", "values", SET),
    // discovery.k8s.io/v1
    ("io.k8s.api.discovery.v1.", "Endpoint", "addresses", SET),
    // certificates.k8s.io/v1: `+listType=map +listMapKey=type` with no patch strategy (replaced by strategic
    // merge patch, merged by type by server-side apply).
    (
        "io.k8s.api.certificates.v1.",
        "CertificateSigningRequestStatus",
        "conditions",
        PatchMeta {
            strategy: "",
            merge_key: Some("type"),
            list_type: Some("map"),
            map_keys: &["type"],
        },
    ),
];

/// The patch metadata of field `field` of the type named `definition` (an OpenAPI definition name such as
/// `io.k8s.api.core.v1.PodSpec`), if it has any; every other list is atomic and every other object is merged.
pub fn patch_meta(definition: &str, field: &str) -> Option<PatchMeta> {
    TABLE
        .iter()
        .find(|(package, name, f, _)| {
            *f == field && definition.strip_prefix(package).is_some_and(|rest| rest == *name)
        })
        .map(|(_, _, _, meta)| *meta)
}

/// Every entry, as (definition name, field, metadata): for the OpenAPI generator and its checks.
pub fn all() -> impl Iterator<Item = (String, &'static str, PatchMeta)> {
    TABLE
        .iter()
        .map(|(package, name, field, meta)| (format!("{package}{name}"), *field, *meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let containers = patch_meta("io.k8s.api.core.v1.PodSpec", "containers").unwrap();
        assert_eq!(containers.merge_key, Some("name"));
        assert_eq!(
            patch_meta("io.k8s.api.core.v1.PodSpec", "volumes")
                .unwrap()
                .strategy,
            "merge,retainKeys"
        );
        assert_eq!(
            patch_meta("io.k8s.api.core.v1.PodSpec", "tolerations"),
            None,
            "atomic"
        );
        assert_eq!(patch_meta("io.k8s.api.core.v1.PodSpecX", "containers"), None);
        let finalizers = patch_meta("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers").unwrap();
        assert_eq!((finalizers.strategy, finalizers.merge_key), ("merge", None));
        assert_eq!(all().count(), TABLE.len());
    }
}
