//! What the provisioner decides, as pure functions over objects: whether a claim is this node's to provision,
//! what it refuses (with local-path-provisioner's messages), the volume it makes, and whether a volume is this
//! node's to delete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use controllers::volumebinding::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_DYNAMICALLY_PROVISIONED, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER,
    claim_class,
};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::json;

/// The provisioner's name, as k3s's StorageClass names it.
pub const PROVISIONER: &str = "rancher.io/local-path";
/// The node label local-path-provisioner pins its volumes with.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The volume's name: `pvc-<claim uid>`, as sig-storage-lib-external-provisioner names it. It is the same on
/// every attempt, so a second attempt (after a restart, or with a stale cache) finds the first one's volume.
pub fn volume_name(claim: &PersistentVolumeClaim) -> Option<String> {
    let uid = claim.metadata.uid.as_deref().filter(|u| !u.is_empty())?;
    Some(format!("pvc-{uid}"))
}

/// The claim's directory: `<storage>/pvc-<uid>_<namespace>_<name>`, local-path-provisioner's folder name.
pub fn volume_dir(storage: &Path, claim: &PersistentVolumeClaim) -> Option<PathBuf> {
    let name = volume_name(claim)?;
    let namespace = claim.metadata.namespace.as_deref()?;
    let claim_name = claim.metadata.name.as_deref()?;
    Some(storage.join(format!("{name}_{namespace}_{claim_name}")))
}

/// sig-storage-lib-external-provisioner's `shouldProvision`, narrowed to this node: the claim is unbound and not
/// being deleted, the PV binder asked this provisioner for it (`volume.kubernetes.io/storage-provisioner`, set
/// only once no existing volume fits), its class is ours, and the scheduler put its first pod on this node. A
/// claim without a selected node is no node's to serve (local-path-provisioner refuses it: "no node was
/// specified"), so no agent picks it up.
pub fn is_ours(claim: &PersistentVolumeClaim, class: Option<&StorageClass>, node: &str) -> bool {
    let meta = &claim.metadata;
    let unbound = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
        .is_empty();
    let pending = matches!(
        claim.status.as_ref().and_then(|s| s.phase.as_deref()),
        None | Some("" | "Pending")
    );
    let asked = annotation(meta, ANN_STORAGE_PROVISIONER)
        .or_else(|| annotation(meta, ANN_BETA_STORAGE_PROVISIONER))
        == Some(PROVISIONER);
    unbound
        && pending
        && meta.deletion_timestamp.is_none()
        && asked
        && class.is_some_and(|c| c.provisioner == PROVISIONER)
        && annotation(meta, ANN_SELECTED_NODE) == Some(node)
}

/// Why a claim of ours cannot be served: the message of its `ProvisioningFailed` event, worded as
/// local-path-provisioner (through sig-storage-lib-external-provisioner) words it.
pub fn refusal(claim: &PersistentVolumeClaim) -> Option<String> {
    let spec = claim.spec.clone().unwrap_or_default();
    // The library's `canProvision`, before anything else and without its "failed to provision" prefix.
    if spec.volume_mode.as_deref() == Some("Block") {
        return Some(format!(
            "{PROVISIONER} does not support block volume provisioning"
        ));
    }
    let failed = |why: &str| {
        Some(format!(
            "failed to provision volume with StorageClass {:?}: {why}",
            claim_class(claim)
        ))
    };
    if spec.selector.is_some() {
        return failed("claim.Spec.Selector is not supported");
    }
    // A node's directory is one node's: modes that share a volume between nodes are refused.
    if spec
        .access_modes
        .iter()
        .flatten()
        .any(|m| m != "ReadWriteOnce" && m != "ReadWriteOncePod")
    {
        return failed("NodePath only supports ReadWriteOnce and ReadWriteOncePod (1.22+) access modes");
    }
    // local-path-provisioner of k3s's releases ignores data sources and hands out an empty directory; a claim
    // asking for a copy of something would silently get none, so bonsai says so instead.
    if spec.data_source.is_some() || spec.data_source_ref.is_some() {
        return failed("claim.Spec.DataSource is not supported");
    }
    if requested_storage(claim).is_none() {
        return failed("claim.Spec.Resources.Requests.storage is not set");
    }
    None
}

fn requested_storage(
    claim: &PersistentVolumeClaim,
) -> Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .cloned()
}

/// The volume local-path-provisioner makes for a claim it accepts (see `refusal`): a `hostPath` directory pinned
/// to the node (`kubernetes.io/hostname In [hostname]`), the claim's request, access modes and class, the class's
/// reclaim policy (Delete when unset, as the API server defaults it), and the claim's reference, so that the
/// binder binds exactly this claim to it.
pub fn desired_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    hostname: &str,
    dir: &Path,
) -> Option<PersistentVolume> {
    let name = volume_name(claim)?;
    let spec = claim.spec.clone().unwrap_or_default();
    let reclaim = class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into());
    let annotations: BTreeMap<&str, &str> = [(ANN_DYNAMICALLY_PROVISIONED, PROVISIONER)].into();
    let volume = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "capacity": {"storage": requested_storage(claim)?},
            "accessModes": spec.access_modes.unwrap_or_default(),
            "volumeMode": spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": claim_class(claim),
            "hostPath": {"path": dir.to_str()?, "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [hostname]}]}]}},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": claim.metadata.uid,
                "resourceVersion": claim.metadata.resource_version,
            },
        },
    });
    serde_json::from_value(volume).ok()
}

/// local-path-provisioner's `getPathAndNodeForPV`: the volume's path and the node its affinity pins it to (the
/// single value of a `kubernetes.io/hostname In` expression, else of a `metadata.name In` field).
pub fn path_and_node(volume: &PersistentVolume) -> Option<(PathBuf, String)> {
    let spec = volume.spec.as_ref()?;
    let path = match (&spec.host_path, &spec.local) {
        (Some(h), None) => h.path.clone(),
        (None, Some(l)) => l.path.clone(),
        _ => return None,
    };
    let terms = &spec
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let node = terms.iter().find_map(|term| {
        let single =
            |key: &str, requirements: Option<&Vec<k8s_openapi::api::core::v1::NodeSelectorRequirement>>| {
                requirements
                    .into_iter()
                    .flatten()
                    .find(|r| r.key == key && r.operator == "In")
                    .and_then(|r| match r.values.as_deref() {
                        Some([one]) => Some(one.clone()),
                        _ => None,
                    })
            };
        single(HOSTNAME_LABEL, term.match_expressions.as_ref())
            .or_else(|| single("metadata.name", term.match_fields.as_ref()))
    })?;
    Some((PathBuf::from(path), node))
}

/// What becomes of a volume this provisioner made, once its claim is gone.
#[derive(Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// Not ours to touch: another provisioner's, another node's, still in use, or being deleted already.
    Nothing,
    /// Released with reclaim policy Delete: the directory goes, then the PersistentVolume.
    Delete { path: PathBuf },
}

/// sig-storage-lib-external-provisioner's `shouldDelete` for this node: provisioned by us, Released, reclaim
/// policy Delete, not being deleted, and pinned to this node (`names` holds the node's name and its hostname
/// label). Retain (and anything else) leaves the volume as it is.
pub fn reclaim(volume: &PersistentVolume, names: &[&str]) -> Reclaim {
    let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let delete = volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete");
    if annotation(&volume.metadata, ANN_DYNAMICALLY_PROVISIONED) != Some(PROVISIONER)
        || !released
        || !delete
        || volume.metadata.deletion_timestamp.is_some()
    {
        return Reclaim::Nothing;
    }
    match path_and_node(volume) {
        Some((path, node)) if names.contains(&node.as_str()) => Reclaim::Delete { path },
        _ => Reclaim::Nothing,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn claim(extra: serde_json::Value) -> PersistentVolumeClaim {
        let mut object = json!({
            "metadata": {"name": "data", "namespace": "apps", "uid": "1234-abcd", "resourceVersion": "17",
                "annotations": {(ANN_STORAGE_PROVISIONER): PROVISIONER, (ANN_SELECTED_NODE): "n1"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                "resources": {"requests": {"storage": "2Gi"}}},
            "status": {"phase": "Pending"}});
        merge(&mut object, extra);
        serde_json::from_value(object).unwrap()
    }

    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    // null removes the member, as in a merge patch.
                    if v.is_null() {
                        a.remove(&k);
                    } else {
                        merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn class(reclaim: Option<&str>) -> StorageClass {
        serde_json::from_value(
            json!({"metadata": {"name": "local-path"}, "provisioner": PROVISIONER,
            "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": reclaim}),
        )
        .unwrap()
    }

    #[test]
    fn the_volume_is_a_pinned_host_path_named_after_the_claim() {
        let claim = claim(json!({}));
        let dir = volume_dir(Path::new("/var/lib/bonsai/storage"), &claim).unwrap();
        assert_eq!(dir, Path::new("/var/lib/bonsai/storage/pvc-1234-abcd_apps_data"));
        let volume = desired_volume(&claim, &class(None), "host-1", &dir).unwrap();
        let v = serde_json::to_value(&volume).unwrap();
        assert_eq!(v["metadata"]["name"], "pvc-1234-abcd");
        assert_eq!(
            v["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
            "rancher.io/local-path"
        );
        assert_eq!(
            v["spec"]["hostPath"],
            json!({"path": "/var/lib/bonsai/storage/pvc-1234-abcd_apps_data", "type": "DirectoryOrCreate"})
        );
        assert_eq!(
            v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"],
            json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["host-1"]}]}])
        );
        assert_eq!(v["spec"]["capacity"], json!({"storage": "2Gi"}));
        assert_eq!(v["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        assert_eq!(v["spec"]["volumeMode"], "Filesystem");
        assert_eq!(v["spec"]["storageClassName"], "local-path");
        // No policy on the class is the API server's default, Delete.
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(
            v["spec"]["claimRef"],
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "apps", "name": "data",
                "uid": "1234-abcd", "resourceVersion": "17"})
        );
        let kept = desired_volume(&claim, &class(Some("Retain")), "host-1", &dir).unwrap();
        assert_eq!(
            kept.spec.unwrap().persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        // The volume is found again from what it says.
        assert_eq!(path_and_node(&volume), Some((dir, "host-1".to_string())));
    }

    #[test]
    fn only_pending_claims_asked_of_us_for_this_node_are_ours() {
        let class = class(None);
        assert!(is_ours(&claim(json!({})), Some(&class), "n1"));
        assert!(!is_ours(&claim(json!({})), Some(&class), "n2"), "another node's");
        assert!(!is_ours(&claim(json!({})), None, "n1"), "no class");
        let other: StorageClass =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "provisioner": "example.com/nfs"}))
                .unwrap();
        assert!(
            !is_ours(&claim(json!({})), Some(&other), "n1"),
            "another provisioner's class"
        );
        let not_asked = claim(json!({"metadata": {"annotations": {(ANN_STORAGE_PROVISIONER): null}}}));
        assert!(
            !is_ours(&not_asked, Some(&class), "n1"),
            "the binder has not asked"
        );
        let beta = claim(
            json!({"metadata": {"annotations": {(ANN_STORAGE_PROVISIONER): null,
            (ANN_BETA_STORAGE_PROVISIONER): PROVISIONER}}}),
        );
        assert!(
            is_ours(&beta, Some(&class), "n1"),
            "the beta annotation counts too"
        );
        let unscheduled = claim(json!({"metadata": {"annotations": {(ANN_SELECTED_NODE): null}}}));
        assert!(!is_ours(&unscheduled, Some(&class), "n1"));
        let bound = claim(json!({"spec": {"volumeName": "pv-1"}}));
        assert!(!is_ours(&bound, Some(&class), "n1"));
        let lost = claim(json!({"status": {"phase": "Lost"}}));
        assert!(!is_ours(&lost, Some(&class), "n1"));
        let deleting = claim(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}));
        assert!(!is_ours(&deleting, Some(&class), "n1"));
        let new = claim(json!({"status": null}));
        assert!(is_ours(&new, Some(&class), "n1"), "no status yet");
    }

    #[test]
    fn what_local_path_cannot_serve_is_refused_with_its_words() {
        assert_eq!(refusal(&claim(json!({}))), None);
        assert_eq!(
            refusal(&claim(json!({"spec": {"accessModes": ["ReadWriteOncePod"]}}))),
            None
        );
        assert_eq!(
            refusal(&claim(json!({"spec": {"accessModes": ["ReadWriteMany"]}}))).unwrap(),
            "failed to provision volume with StorageClass \"local-path\": NodePath only supports ReadWriteOnce \
             and ReadWriteOncePod (1.22+) access modes"
        );
        assert!(
            refusal(&claim(
                json!({"spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}})
            ))
            .unwrap()
            .contains("NodePath only supports")
        );
        assert_eq!(
            refusal(&claim(json!({"spec": {"selector": {"matchLabels": {"a": "b"}}}}))).unwrap(),
            "failed to provision volume with StorageClass \"local-path\": claim.Spec.Selector is not supported"
        );
        assert_eq!(
            refusal(&claim(json!({"spec": {"volumeMode": "Block"}}))).unwrap(),
            "rancher.io/local-path does not support block volume provisioning"
        );
        let cloned = claim(json!({"spec": {"dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}}}));
        assert!(
            refusal(&cloned)
                .unwrap()
                .ends_with("claim.Spec.DataSource is not supported")
        );
        let populated =
            claim(json!({"spec": {"dataSourceRef": {"kind": "Thing", "apiGroup": "x.io", "name": "a"}}}));
        assert!(
            refusal(&populated)
                .unwrap()
                .ends_with("claim.Spec.DataSource is not supported")
        );
        let sizeless = claim(json!({"spec": {"resources": {"requests": null}}}));
        assert!(refusal(&sizeless).unwrap().contains("storage is not set"));
    }

    fn provisioned(phase: &str, policy: &str, extra: serde_json::Value) -> PersistentVolume {
        let claim = claim(json!({}));
        let dir = volume_dir(Path::new("/d/storage"), &claim).unwrap();
        let mut v =
            serde_json::to_value(desired_volume(&claim, &class(Some(policy)), "n1", &dir).unwrap()).unwrap();
        v["status"] = json!({"phase": phase});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn released_delete_volumes_of_this_node_are_reclaimed_and_nothing_else() {
        let path = PathBuf::from("/d/storage/pvc-1234-abcd_apps_data");
        assert_eq!(
            reclaim(&provisioned("Released", "Delete", json!({})), &["n1"]),
            Reclaim::Delete { path }
        );
        assert_eq!(
            reclaim(&provisioned("Released", "Retain", json!({})), &["n1"]),
            Reclaim::Nothing
        );
        assert_eq!(
            reclaim(&provisioned("Bound", "Delete", json!({})), &["n1"]),
            Reclaim::Nothing
        );
        assert_eq!(
            reclaim(&provisioned("Released", "Delete", json!({})), &["n2"]),
            Reclaim::Nothing
        );
        let deleting = provisioned(
            "Released",
            "Delete",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        assert_eq!(reclaim(&deleting, &["n1"]), Reclaim::Nothing);
        let someone_elses = provisioned(
            "Released",
            "Delete",
            json!({"metadata": {"annotations": {(ANN_DYNAMICALLY_PROVISIONED): "example.com/nfs"}}}),
        );
        assert_eq!(reclaim(&someone_elses, &["n1"]), Reclaim::Nothing);
        // Two nodes in the affinity: not a volume local-path made (it refuses to guess, and so does bonsai).
        let ambiguous = provisioned(
            "Released",
            "Delete",
            json!({"spec": {"nodeAffinity": {"required": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In",
                "values": ["n1", "n2"]}]}]}}}}),
        );
        assert_eq!(reclaim(&ambiguous, &["n1"]), Reclaim::Nothing);
    }
}
