//! The PersistentVolume binder (kube-controller-manager's `persistentvolume-binder`, `pv_controller.go`), with the
//! PVC and PV protection controllers beside it.
//!
//! A Pending claim without `spec.volumeName` is bound to the best Available volume (`findBestMatchForClaim`: among
//! the volumes offering the fewest access modes that include the requested ones, the smallest that is big enough,
//! of the claim's class and volume mode, whose labels the claim's selector matches). Volumes pre-bound by
//! `spec.claimRef` and claims pre-bound by `spec.volumeName` are honoured. Binding is written as Kubernetes writes
//! it, in its order: the PV's `claimRef` (and `bound-by-controller`), the PV's phase Bound, the claim's
//! `volumeName` with `bind-completed` (and `bound-by-controller`), the claim's phase Bound with the volume's
//! capacity and access modes. A claim of a `WaitForFirstConsumer` class waits (event `WaitForFirstConsumer` or
//! `WaitForPodScheduled`) for the scheduler: it places the claim's first pod where a volume fits and pre-binds that
//! volume (kube-scheduler's VolumeBinding plugin, `schedule_volumes` and `prebind` here, called by bonsai's
//! scheduler), or names the node in `volume.kubernetes.io/selected-node` for a provisioner, whose volume comes
//! pre-bound to the claim (such a claim binds only to a volume pre-bound to it, as in Kubernetes). Claims no volume
//! fits stay Pending with `FailedBinding`, `ProvisioningFailed` or (external provisioners, asked through
//! `volume.kubernetes.io/storage-provisioner`) `ExternalProvisioning`. A volume whose claim is gone is Released;
//! with reclaim policy Delete its PV object is deleted, unless an external provisioner made it: that provisioner
//! deletes the storage, then the PV (bonsai's local-path one is `components/storage`). Claims keep
//! `kubernetes.io/pvc-protection`
//! while a scheduled pod uses them, and volumes keep `kubernetes.io/pv-protection` while they are Bound.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use crate::events::{Involved, Recorder};
use crate::work::{self, Change};
use crate::{ControllerError, kube_error};

/// On claims: the binding went through its first setup (Kubernetes reads "bound before" from it).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On volumes and claims: the controller, not the user, made the binding.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On claims: the node the scheduler chose for the first pod using a `WaitForFirstConsumer` claim.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// On claims: the external provisioner asked to make a volume for it.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// On volumes: the provisioner that made it (and deletes it).
pub const ANN_DYNAMICALLY_PROVISIONED: &str = "pv.kubernetes.io/provisioned-by";
/// The class as an annotation, from before `storageClassName`; it wins over the field, as in Kubernetes.
const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";
const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// What is reconciled: a volume, or a claim (namespace, name). Volumes sort first, so that in one burst a new
/// volume is made Available before the claims that may want it are looked at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Volume(String),
    Claim(String, String),
}

// ---------------------------------------------------------------------------------------------------------------
// Matching: pure functions over objects, as `index.go` and component-helpers' `storage/volume` have them.

pub use quantity::nanos as quantity_nanos;

fn storage_in(resources: Option<&BTreeMap<String, Quantity>>) -> Option<i128> {
    resources
        .and_then(|r| r.get("storage"))
        .and_then(|q| quantity_nanos(&q.0))
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// The claim's class (`GetPersistentVolumeClaimClass`): the beta annotation, else `storageClassName`, else "".
pub fn claim_class(claim: &PersistentVolumeClaim) -> String {
    annotation(&claim.metadata, ANN_BETA_STORAGE_CLASS)
        .map(String::from)
        .or_else(|| claim.spec.as_ref().and_then(|s| s.storage_class_name.clone()))
        .unwrap_or_default()
}

/// True when the claim names a class at all (an explicit "" included): such claims get no default class.
fn claim_has_class(claim: &PersistentVolumeClaim) -> bool {
    annotation(&claim.metadata, ANN_BETA_STORAGE_CLASS).is_some()
        || claim
            .spec
            .as_ref()
            .is_some_and(|s| s.storage_class_name.is_some())
}

/// The volume's class (`GetPersistentVolumeClass`).
pub fn volume_class(volume: &PersistentVolume) -> String {
    annotation(&volume.metadata, ANN_BETA_STORAGE_CLASS)
        .map(String::from)
        .or_else(|| volume.spec.as_ref().and_then(|s| s.storage_class_name.clone()))
        .unwrap_or_default()
}

fn claim_ref(volume: &PersistentVolume) -> Option<&ObjectReference> {
    volume.spec.as_ref()?.claim_ref.as_ref()
}

fn volume_name_of(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

fn volume_phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// True when the volume is pre-bound or bound to this claim: same namespace and name, and the same uid if the
/// reference has one (`IsVolumeBoundToClaim`).
pub fn is_volume_bound_to_claim(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(reference) = claim_ref(volume) else {
        return false;
    };
    if reference.name != claim.metadata.name || reference.namespace != claim.metadata.namespace {
        return false;
    }
    let uid = reference.uid.as_deref().unwrap_or("");
    uid.is_empty() || Some(uid) == claim.metadata.uid.as_deref()
}

/// `CheckVolumeModeMismatches`: an unset mode is Filesystem on both sides.
fn volume_mode_mismatch(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let claim_mode = claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    let volume_mode = volume.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    claim_mode.unwrap_or("Filesystem") != volume_mode.unwrap_or("Filesystem")
}

fn claim_modes(claim: &PersistentVolumeClaim) -> BTreeSet<&str> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

fn volume_modes(volume: &PersistentVolume) -> BTreeSet<&str> {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// `CheckAccessModes`: the volume offers every mode the claim asks for.
pub fn access_modes_satisfied(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    claim_modes(claim).is_subset(&volume_modes(volume))
}

/// `CheckNodeAffinity`: the volume's required node affinity (any term; every expression and field of a term)
/// allows the node. A volume without one can be used anywhere.
pub fn node_affinity_allows(volume: &PersistentVolume, node: &Node) -> bool {
    let Some(required) = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.clone().unwrap_or_default();
    required.node_selector_terms.iter().any(|term| {
        let expressions = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        // An empty term selects no node, as in Kubernetes.
        if expressions.is_empty() && fields.is_empty() {
            return false;
        }
        let expressions_match = expressions.iter().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            let value = labels.get(&r.key);
            let number = |s: &str| s.parse::<i64>().ok();
            match r.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                "Gt" | "Lt" => match (
                    value.and_then(|v| number(v)),
                    values.first().and_then(|v| number(v)),
                ) {
                    (Some(have), Some(bound)) if r.operator == "Gt" => have > bound,
                    (Some(have), Some(bound)) => have < bound,
                    _ => false,
                },
                _ => false,
            }
        });
        let fields_match = fields.iter().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            match (r.key.as_str(), r.operator.as_str()) {
                ("metadata.name", "In") => values.contains(&name),
                ("metadata.name", "NotIn") => !values.contains(&name),
                _ => false,
            }
        });
        expressions_match && fields_match
    })
}

/// `FindMatchingVolume` over `volumes`: a volume pre-bound to the claim if one fits, else the smallest Available
/// one that fits. `node` is the scheduler's path (node affinity and access modes checked per volume);
/// `delay_binding` without a node returns only pre-bound volumes (the scheduler binds the others).
pub fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &[&'a PersistentVolume],
    node: Option<&Node>,
    delay_binding: bool,
) -> Option<&'a PersistentVolume> {
    let spec = claim.spec.clone().unwrap_or_default();
    // VolumeAttributesClass is off in Kubernetes 1.33: a claim asking for one matches nothing.
    if spec
        .volume_attributes_class_name
        .as_deref()
        .is_some_and(|c| !c.is_empty())
    {
        return None;
    }
    let requested = storage_in(spec.resources.as_ref().and_then(|r| r.requests.as_ref())).unwrap_or(0);
    let requested_class = claim_class(claim);
    let mut smallest: Option<(&'a PersistentVolume, i128)> = None;
    for &volume in volumes {
        if claim_ref(volume).is_some() && !is_volume_bound_to_claim(volume, claim) {
            continue;
        }
        let vspec = volume.spec.clone().unwrap_or_default();
        let size = storage_in(vspec.capacity.as_ref()).unwrap_or(0);
        if size < requested || volume_mode_mismatch(claim, volume) {
            continue;
        }
        if vspec
            .volume_attributes_class_name
            .as_deref()
            .is_some_and(|c| !c.is_empty())
            || volume.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let affinity_ok = node.is_none_or(|n| node_affinity_allows(volume, n));
        if is_volume_bound_to_claim(volume, claim) {
            // A pre-bound volume is the answer, or (on a node it does not allow) there is none.
            return affinity_ok.then_some(volume);
        }
        if node.is_none() && delay_binding {
            continue;
        }
        if volume_phase(volume) != "Available" {
            continue;
        }
        if let Some(selector) = &spec.selector
            && !work::label_selector_matches(selector, volume.metadata.labels.as_ref())
        {
            continue;
        }
        if volume_class(volume) != requested_class || !affinity_ok {
            continue;
        }
        if node.is_some() && !access_modes_satisfied(claim, volume) {
            continue;
        }
        if smallest.is_none_or(|(_, s)| s > size) {
            smallest = Some((volume, size));
        }
    }
    smallest.map(|(v, _)| v)
}

/// `findBestMatchForClaim` (index.go): volumes are grouped by the set of access modes they offer; the groups that
/// include every requested mode are searched fewest modes first, and the first group with a match gives it.
pub fn find_best_match_for_claim<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
    delay_binding: bool,
) -> Option<&'a PersistentVolume> {
    let requested = claim_modes(claim);
    let mut groups: BTreeMap<(usize, Vec<&str>), Vec<&'a PersistentVolume>> = BTreeMap::new();
    for volume in volumes {
        let modes = volume_modes(volume);
        if requested.is_subset(&modes) {
            groups
                .entry((modes.len(), modes.into_iter().collect()))
                .or_default()
                .push(volume);
        }
    }
    groups
        .values()
        .find_map(|group| find_matching_volume(claim, group, None, delay_binding))
}

/// `checkVolumeSatisfyClaim`: whether a volume a claim asks for by name fits it; the reason when not.
pub fn check_volume_satisfies_claim(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), String> {
    if volume.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "the volume is marked for deletion {:?}",
            volume.metadata.name.clone().unwrap_or_default()
        ));
    }
    let requested = storage_in(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
    .unwrap_or(0);
    let size = storage_in(volume.spec.as_ref().and_then(|s| s.capacity.as_ref())).unwrap_or(0);
    if size < requested {
        return Err("requested PV is too small".into());
    }
    if volume_class(volume) != claim_class(claim) {
        return Err("storageClassName does not match".into());
    }
    if volume_mode_mismatch(claim, volume) {
        return Err("incompatible volumeMode".into());
    }
    if !access_modes_satisfied(claim, volume) {
        return Err("incompatible accessMode".into());
    }
    Ok(())
}

/// The default StorageClass (`GetDefaultClass`): of those annotated default, the newest, then by name.
pub fn default_class(classes: &[Arc<StorageClass>]) -> Option<&StorageClass> {
    classes
        .iter()
        .filter(|c| {
            DEFAULT_CLASS_ANNOTATIONS
                .iter()
                .any(|a| annotation(&c.metadata, a) == Some("true"))
        })
        .map(Arc::as_ref)
        .min_by(|a, b| {
            let created = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(b)
                .cmp(&created(a))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}

/// The claims (by name, in the pod's namespace) a pod's volumes refer to: `persistentVolumeClaim` volumes and
/// generic ephemeral volumes (claim `<pod>-<volume>`).
pub fn claims_of_pod(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(source), _) => Some(source.claim_name.clone()),
            (None, Some(_)) => Some(format!("{pod_name}-{}", v.name)),
            _ => None,
        })
        .collect()
}

fn pod_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The PVC protection controller's `podUsesPVC`: a pod the scheduler placed uses the claim (the kubelet never
/// starts a pod whose claim is being deleted, so unscheduled pods do not count). An ephemeral claim is released
/// once its pod is shut down (deleted with a zero grace period).
pub fn pod_uses_claim(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
        .is_empty()
        || pod.metadata.namespace != claim.metadata.namespace
    {
        return false;
    }
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let shut_down =
        pod.metadata.deletion_timestamp.is_some() && pod.metadata.deletion_grace_period_seconds == Some(0);
    let owned_by_pod =
        work::controller_of(&claim.metadata).is_some_and(|o| Some(&o.uid) == pod.metadata.uid.as_ref());
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|s| s.claim_name == claim_name)
            || (v.ephemeral.is_some()
                && !shut_down
                && format!("{pod_name}-{}", v.name) == claim_name
                && owned_by_pod)
    })
}

// ---------------------------------------------------------------------------------------------------------------
// The scheduler's side (kube-scheduler's VolumeBinding plugin), used by bonsai's scheduler.

/// Whether an unbound claim of an Immediate class keeps its pod from being scheduled, as in kube-scheduler. Off
/// while bonsai's only provisioner (local-path) serves just `WaitForFirstConsumer` claims (see
/// `schedule_volumes`).
pub const IMMEDIATE_CLAIMS_HOLD_PODS: bool = false;

/// What binding a pod to a node needs first, for one of its unbound `WaitForFirstConsumer` claims.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimPlan {
    /// A volume the node can use: the scheduler binds it to the claim (its `claimRef`), the binder finishes.
    Bind {
        claim: Box<PersistentVolumeClaim>,
        volume: Box<PersistentVolume>,
    },
    /// No such volume but a provisioner: the claim gets `volume.kubernetes.io/selected-node`.
    Provision { claim: Box<PersistentVolumeClaim> },
}

/// kube-scheduler's VolumeBinding Filter for `pod` on `node`, with the PreBind plan when the node fits: every
/// claim exists and is not being deleted, bound claims' volumes allow the node, unbound `WaitForFirstConsumer`
/// claims have a volume the node can use (each its own) or a provisioner. The error is kube-scheduler's reason.
pub fn schedule_volumes(
    pod: &Pod,
    node: &Node,
    claims: &[Arc<PersistentVolumeClaim>],
    volumes: &[Arc<PersistentVolume>],
    classes: &[Arc<StorageClass>],
) -> Result<Vec<ClaimPlan>, String> {
    let namespace = pod.metadata.namespace.clone();
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let mut plans = Vec::new();
    for name in claims_of_pod(pod) {
        let Some(claim) = claims
            .iter()
            .find(|c| c.metadata.namespace == namespace && c.metadata.name.as_deref() == Some(name.as_str()))
        else {
            return Err(format!("persistentvolumeclaim {name:?} not found"));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim {name:?} is being deleted"));
        }
        let volume_name = volume_name_of(claim);
        if !volume_name.is_empty() {
            match volumes
                .iter()
                .find(|v| v.metadata.name.as_deref() == Some(volume_name))
            {
                None => {
                    return Err(
                        "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)".into(),
                    );
                }
                Some(v) if !node_affinity_allows(v, node) => {
                    return Err("node(s) had volume node affinity conflict".into());
                }
                Some(_) => continue,
            }
        }
        let class = classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(claim_class(claim).as_str()));
        if class.is_none_or(|c| c.volume_binding_mode.as_deref() != Some("WaitForFirstConsumer")) {
            // kube-scheduler holds such a pod back ("pod has unbound immediate PersistentVolumeClaims") until the
            // binder or a provisioner binds the claim. bonsai's only provisioner (local-path) needs a selected
            // node, so such claims may never bind: the pod is placed as if they were bound.
            if IMMEDIATE_CLAIMS_HOLD_PODS {
                return Err("pod has unbound immediate PersistentVolumeClaims".into());
            }
            continue;
        }
        let elsewhere = annotation(&claim.metadata, ANN_SELECTED_NODE).is_some_and(|n| n != node_name);
        let pool: Vec<&PersistentVolume> = volumes
            .iter()
            .map(Arc::as_ref)
            .filter(|v| !chosen.contains(v.metadata.name.as_deref().unwrap_or("")))
            .collect();
        if let Some(volume) = find_matching_volume(claim, &pool, Some(node), true).filter(|_| !elsewhere) {
            chosen.insert(volume.metadata.name.clone().unwrap_or_default());
            plans.push(ClaimPlan::Bind {
                claim: Box::new(claim.as_ref().clone()),
                volume: Box::new(volume.clone()),
            });
            continue;
        }
        let provisionable = class.is_some_and(|c| c.provisioner != "kubernetes.io/no-provisioner");
        if !provisionable || elsewhere {
            return Err("node(s) didn't find available persistent volumes to bind".into());
        }
        plans.push(ClaimPlan::Provision {
            claim: Box::new(claim.as_ref().clone()),
        });
    }
    Ok(plans)
}

/// The claim's reference as the binder and the scheduler write it on a volume.
fn reference_to(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// kube-scheduler's PreBind (`BindPodVolumes`) for a pod going to `node`: volumes chosen for claims get the claim's
/// reference and `bound-by-controller` (the binder then completes the binding); claims to provision get
/// `volume.kubernetes.io/selected-node`.
pub async fn prebind(client: &kube::Client, plans: &[ClaimPlan], node: &str) -> Result<(), ControllerError> {
    for plan in plans {
        match plan {
            ClaimPlan::Bind { claim, volume } => {
                if is_volume_bound_to_claim(volume, claim)
                    && claim_ref(volume).is_some_and(|r| r.uid.is_some())
                {
                    continue;
                }
                let name = volume.metadata.name.clone().unwrap_or_default();
                let mut clone = volume.as_ref().clone();
                clone.spec.get_or_insert_with(Default::default).claim_ref = Some(reference_to(claim));
                clone
                    .metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
                let api: Api<PersistentVolume> = Api::all(client.clone());
                api.replace(&name, &PostParams::default(), &clone)
                    .await
                    .map_err(write_error(format!("binding volume {name}")))?;
            }
            ClaimPlan::Provision { claim } => {
                if annotation(&claim.metadata, ANN_SELECTED_NODE) == Some(node) {
                    continue;
                }
                let namespace = claim.metadata.namespace.clone().unwrap_or_default();
                let name = claim.metadata.name.clone().unwrap_or_default();
                let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
                let patch = serde_json::json!({"metadata": {"annotations": {(ANN_SELECTED_NODE): node}}});
                api.patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .map_err(write_error(format!(
                    "selecting node {node} for claim {namespace}/{name}"
                )))?;
            }
        }
    }
    Ok(())
}

/// A resourceVersion as a number (bonsai's are store revisions), to tell which of two copies is newer.
fn revision(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

// ---------------------------------------------------------------------------------------------------------------
// The controller.

struct Context {
    client: kube::Client,
    volumes: Store<PersistentVolume>,
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
    pods: Store<Pod>,
    events: Recorder,
    /// Objects this controller wrote, newer than the caches until their watch events arrive (Kubernetes' PV
    /// controller keeps the same cache, so a burst of reconciles never acts on its own stale writes).
    written_volumes: Mutex<BTreeMap<String, PersistentVolume>>,
    written_claims: Mutex<BTreeMap<(String, String), PersistentVolumeClaim>>,
}

/// Errors of writes: a conflict or a vanished object means the cache is behind; look again soon.
fn write_error(what: String) -> impl FnOnce(kube::Error) -> ControllerError {
    move |e| match e {
        kube::Error::Api(s) if s.code == 409 || s.code == 404 => {
            ControllerError::Waiting(format!("{what}: {}", s.message))
        }
        e => kube_error(what)(e),
    }
}

fn newest<K: kube::Resource + Clone>(cached: Option<Arc<K>>, written: Option<&K>) -> Option<K> {
    let cached = cached?;
    match written {
        Some(w) if revision(w.meta()) > revision(cached.meta()) => Some(w.clone()),
        _ => Some(cached.as_ref().clone()),
    }
}

impl Context {
    fn volume(&self, name: &str) -> Option<PersistentVolume> {
        let cached = self.volumes.get(&ObjectRef::new(name));
        let written = self
            .written_volumes
            .lock()
            .ok()
            .and_then(|w| w.get(name).cloned());
        newest(cached, written.as_ref())
    }

    fn all_volumes(&self) -> Vec<PersistentVolume> {
        let written = self.written_volumes.lock().map(|w| w.clone()).unwrap_or_default();
        let cached = self.volumes.state();
        let mut all: Vec<PersistentVolume> = cached
            .into_iter()
            .filter_map(|v| {
                let name = v.metadata.name.clone().unwrap_or_default();
                newest(Some(v), written.get(&name))
            })
            .collect();
        all.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        all
    }

    fn claim(&self, namespace: &str, name: &str) -> Option<PersistentVolumeClaim> {
        let cached = self.claims.get(&ObjectRef::new(name).within(namespace));
        let key = (namespace.to_string(), name.to_string());
        let written = self.written_claims.lock().ok().and_then(|w| w.get(&key).cloned());
        newest(cached, written.as_ref())
    }

    /// Forgets written copies the caches have caught up with (or whose objects are gone).
    fn prune_written(&self) {
        if let Ok(mut written) = self.written_volumes.lock() {
            written.retain(|name, w| {
                self.volumes
                    .get(&ObjectRef::new(name))
                    .is_some_and(|c| revision(&w.metadata) > revision(&c.metadata))
            });
        }
        if let Ok(mut written) = self.written_claims.lock() {
            written.retain(|(ns, name), w| {
                self.claims
                    .get(&ObjectRef::new(name).within(ns))
                    .is_some_and(|c| revision(&w.metadata) > revision(&c.metadata))
            });
        }
    }

    async fn update_volume(
        &self,
        volume: &PersistentVolume,
        status: bool,
    ) -> Result<PersistentVolume, ControllerError> {
        let name = volume.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let written = if status {
            api.replace_status(&name, &PostParams::default(), volume)
                .await
                .map_err(write_error(format!("writing the status of volume {name}")))?
        } else {
            api.replace(&name, &PostParams::default(), volume)
                .await
                .map_err(write_error(format!("updating volume {name}")))?
        };
        if let Ok(mut all) = self.written_volumes.lock() {
            all.insert(name, written.clone());
        }
        Ok(written)
    }

    async fn update_claim(
        &self,
        claim: &PersistentVolumeClaim,
        status: bool,
    ) -> Result<PersistentVolumeClaim, ControllerError> {
        let namespace = claim.metadata.namespace.clone().unwrap_or_default();
        let name = claim.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        let written = if status {
            api.replace_status(&name, &PostParams::default(), claim)
                .await
                .map_err(write_error(format!(
                    "writing the status of claim {namespace}/{name}"
                )))?
        } else {
            api.replace(&name, &PostParams::default(), claim)
                .await
                .map_err(write_error(format!("updating claim {namespace}/{name}")))?
        };
        if let Ok(mut all) = self.written_claims.lock() {
            all.insert((namespace, name), written.clone());
        }
        Ok(written)
    }

    async fn reconcile(&self, key: Key) -> Result<(), ControllerError> {
        self.prune_written();
        match key {
            Key::Volume(name) => match self.volume(&name) {
                Some(volume) => self.sync_volume(volume).await,
                None => Ok(()),
            },
            Key::Claim(namespace, name) => match self.claim(&namespace, &name) {
                Some(claim) => self.sync_claim(claim).await,
                None => Ok(()),
            },
        }
    }

    // --- claims ---------------------------------------------------------------------------------------------

    async fn sync_claim(&self, claim: PersistentVolumeClaim) -> Result<(), ControllerError> {
        // The PVC protection controller's part.
        let mut claim = claim;
        if claim.metadata.deletion_timestamp.is_some() {
            if has_finalizer(&claim.metadata, PVC_PROTECTION_FINALIZER) && !self.claim_in_use(&claim).await? {
                let mut clone = claim.clone();
                if let Some(f) = clone.metadata.finalizers.as_mut() {
                    f.retain(|f| f != PVC_PROTECTION_FINALIZER);
                }
                self.update_claim(&clone, false).await?;
                return Ok(());
            }
        } else if !has_finalizer(&claim.metadata, PVC_PROTECTION_FINALIZER) {
            // Admission adds it at creation; this covers claims created before that.
            let mut clone = claim.clone();
            clone
                .metadata
                .finalizers
                .get_or_insert_with(Vec::new)
                .push(PVC_PROTECTION_FINALIZER.into());
            claim = self.update_claim(&clone, false).await?;
        }
        if annotation(&claim.metadata, ANN_BIND_COMPLETED).is_none() {
            self.sync_unbound_claim(claim).await
        } else {
            self.sync_bound_claim(claim).await
        }
    }

    /// Whether a scheduled pod uses the claim: the cache first, then (to be sure before letting it go) a live list.
    async fn claim_in_use(&self, claim: &PersistentVolumeClaim) -> Result<bool, ControllerError> {
        if self.pods.state().iter().any(|p| pod_uses_claim(p, claim)) {
            return Ok(true);
        }
        let namespace = claim.metadata.namespace.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let live = pods
            .list(&ListParams::default())
            .await
            .map_err(kube_error(format!("listing the pods of namespace {namespace}")))?;
        Ok(live.items.iter().any(|p| pod_uses_claim(p, claim)))
    }

    fn delay_binding(&self, claim: &PersistentVolumeClaim) -> bool {
        let class = claim_class(claim);
        !class.is_empty()
            && self
                .classes
                .get(&ObjectRef::new(&class))
                .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
    }

    async fn sync_unbound_claim(&self, claim: PersistentVolumeClaim) -> Result<(), ControllerError> {
        let about = Involved::of(&claim);
        let volume_name = volume_name_of(&claim).to_string();
        if volume_name.is_empty() {
            let delay = self.delay_binding(&claim);
            let selected_node = annotation(&claim.metadata, ANN_SELECTED_NODE).map(String::from);
            let volumes = self.all_volumes();
            // `findBestMatchForClaim(claim, delayBinding)`: a WaitForFirstConsumer claim binds here only to a
            // volume pre-bound to it, whether or not the scheduler has chosen a node. The scheduler pre-binds
            // the volume it picked (`prebind`); a selected node without one means "provision", and binding
            // another Available volume then would race the provisioner (Kubernetes 1.14's bug, fixed since).
            let found = find_best_match_for_claim(&claim, &volumes, delay).cloned();
            if let Some(volume) = found {
                return self.bind(volume, claim).await;
            }
            if self.assign_default_class(&claim).await? {
                return Ok(());
            }
            if delay && selected_node.is_none() {
                self.wait_for_first_consumer(&claim, &about).await;
            } else if !claim_class(&claim).is_empty() {
                return self.provision(claim, &about).await;
            } else {
                self.events
                    .normal(
                        &about,
                        "FailedBinding",
                        "no persistent volumes available for this claim and no storage class is set".into(),
                    )
                    .await;
            }
            self.update_claim_status(claim, "Pending", None).await?;
            return Ok(());
        }
        // The user asked for a specific volume.
        let Some(volume) = self.volume(&volume_name) else {
            self.update_claim_status(claim, "Pending", None).await?;
            return Ok(());
        };
        if claim_ref(&volume).is_none() {
            if let Err(why) = check_volume_satisfies_claim(&volume, &claim) {
                self.events
                    .warning(
                        &about,
                        "VolumeMismatch",
                        format!("Cannot bind to requested volume {volume_name:?}: {why}"),
                    )
                    .await;
                self.update_claim_status(claim, "Pending", None).await?;
                return Ok(());
            }
            return self.bind(volume, claim).await;
        }
        if is_volume_bound_to_claim(&volume, &claim) {
            return self.bind(volume, claim).await;
        }
        self.events
            .warning(
                &about,
                "FailedBinding",
                format!("volume {volume_name:?} already bound to a different claim."),
            )
            .await;
        if annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER).is_some() {
            return Err(ControllerError::Invalid(format!(
                "invalid binding of claim {}/{} to volume {volume_name:?}: volume already claimed by another claim",
                about.namespace, about.name
            )));
        }
        self.update_claim_status(claim, "Pending", None).await?;
        Ok(())
    }

    /// The event of a claim waiting for its first pod: `WaitForPodScheduled` naming unscheduled pods that use
    /// it, else `WaitForFirstConsumer`.
    async fn wait_for_first_consumer(&self, claim: &PersistentVolumeClaim, about: &Involved) {
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        let mut waiting: Vec<String> = self
            .pods
            .state()
            .iter()
            .filter(|p| p.metadata.namespace == claim.metadata.namespace && !pod_terminated(p))
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .unwrap_or("")
                    .is_empty()
            })
            .filter(|p| claims_of_pod(p).contains(&claim_name))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        waiting.sort();
        let (reason, message) = match waiting.as_slice() {
            [] => (
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding".to_string(),
            ),
            [one] => (
                "WaitForPodScheduled",
                format!("waiting for pod {one} to be scheduled"),
            ),
            many => (
                "WaitForPodScheduled",
                format!("waiting for pods {} to be scheduled", many.join(",")),
            ),
        };
        self.events.normal(about, reason, message).await;
    }

    /// Retroactive default class (`assignDefaultStorageClass`): a claim without a class, for which no volume was
    /// found, gets the default class once there is one.
    async fn assign_default_class(&self, claim: &PersistentVolumeClaim) -> Result<bool, ControllerError> {
        if claim_has_class(claim) {
            return Ok(false);
        }
        let classes = self.classes.state();
        let Some(class) = default_class(&classes) else {
            return Ok(false);
        };
        let mut clone = claim.clone();
        clone.spec.get_or_insert_with(Default::default).storage_class_name = class.metadata.name.clone();
        self.update_claim(&clone, false).await?;
        Ok(true)
    }

    /// `provisionClaim` without in-tree plugins: an unknown class or an in-tree provisioner (`kubernetes.io/...`,
    /// bonsai has none) is `ProvisioningFailed`; an external provisioner is asked through the claim's
    /// `storage-provisioner` annotations, with Kubernetes' `ExternalProvisioning` event.
    async fn provision(&self, claim: PersistentVolumeClaim, about: &Involved) -> Result<(), ControllerError> {
        let class_name = claim_class(&claim);
        let Some(class) = self.classes.get(&ObjectRef::new(&class_name)) else {
            self.events
                .warning(
                    about,
                    "ProvisioningFailed",
                    format!("storageclass.storage.k8s.io {class_name:?} not found"),
                )
                .await;
            return Ok(());
        };
        let provisioner = class.provisioner.clone();
        if provisioner.starts_with("kubernetes.io/") {
            self.events
                .warning(
                    about,
                    "ProvisioningFailed",
                    format!("no volume plugin matched name: {provisioner}"),
                )
                .await;
            return Ok(());
        }
        if annotation(&claim.metadata, ANN_STORAGE_PROVISIONER) != Some(provisioner.as_str()) {
            let mut clone = claim.clone();
            let annotations = clone.metadata.annotations.get_or_insert_with(BTreeMap::new);
            annotations.insert(ANN_BETA_STORAGE_PROVISIONER.into(), provisioner.clone());
            annotations.insert(ANN_STORAGE_PROVISIONER.into(), provisioner.clone());
            self.update_claim(&clone, false).await?;
        }
        self.events
            .normal(
                about,
                "ExternalProvisioning",
                format!(
                    "Waiting for a volume to be created either by the external provisioner '{provisioner}' or \
                     manually by the system administrator. If volume creation is delayed, please verify that the \
                     provisioner is running and correctly registered."
                ),
            )
            .await;
        Ok(())
    }

    async fn sync_bound_claim(&self, claim: PersistentVolumeClaim) -> Result<(), ControllerError> {
        let volume_name = volume_name_of(&claim).to_string();
        if volume_name.is_empty() {
            return self
                .claim_lost(
                    claim,
                    "ClaimLost",
                    "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
                )
                .await;
        }
        let Some(volume) = self.volume(&volume_name) else {
            return self
                .claim_lost(
                    claim,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                )
                .await;
        };
        match claim_ref(&volume) {
            // Unbound volume (or one whose binding the cache has not shown yet): bind it again.
            None => self.bind(volume, claim).await,
            Some(r) if r.uid == claim.metadata.uid => self.bind(volume, claim).await,
            Some(_) => {
                self.claim_lost(
                    claim,
                    "ClaimMisbound",
                    "Two claims are bound to the same volume, this one is bound incorrectly",
                )
                .await
            }
        }
    }

    async fn claim_lost(
        &self,
        claim: PersistentVolumeClaim,
        reason: &str,
        message: &str,
    ) -> Result<(), ControllerError> {
        if claim_phase(&claim) == "Lost" {
            return Ok(());
        }
        let about = Involved::of(&claim);
        self.update_claim_status(claim, "Lost", None).await?;
        self.events.warning(&about, reason, message.into()).await;
        Ok(())
    }

    /// `updateClaimStatus`: the phase, and the volume's access modes and (when the claim becomes bound) capacity.
    async fn update_claim_status(
        &self,
        claim: PersistentVolumeClaim,
        phase: &str,
        volume: Option<&PersistentVolume>,
    ) -> Result<PersistentVolumeClaim, ControllerError> {
        let mut clone = claim.clone();
        let status = clone.status.get_or_insert_with(Default::default);
        let phase_changes = claim_phase(&claim) != phase;
        status.phase = Some(phase.into());
        match volume {
            None => {
                status.access_modes = None;
                status.capacity = None;
            }
            Some(volume) => {
                status.access_modes = volume.spec.as_ref().and_then(|s| s.access_modes.clone());
                if phase_changes {
                    let capacity = volume.spec.as_ref().and_then(|s| s.capacity.clone());
                    if storage_in(capacity.as_ref()).is_none() {
                        return Err(ControllerError::Invalid(format!(
                            "PersistentVolume {:?} is without a storage capacity",
                            volume.metadata.name.clone().unwrap_or_default()
                        )));
                    }
                    status.capacity = capacity;
                }
            }
        }
        if clone.status == claim.status {
            return Ok(claim);
        }
        self.update_claim(&clone, true).await
    }

    /// `bind`: volume first (claimRef, then phase), then the claim (volumeName and annotations, then status).
    async fn bind(
        &self,
        volume: PersistentVolume,
        claim: PersistentVolumeClaim,
    ) -> Result<(), ControllerError> {
        let volume = self.bind_volume_to_claim(volume, &claim).await?;
        let volume = self.update_volume_phase(volume, "Bound").await?;
        let claim = self.bind_claim_to_volume(claim, &volume).await?;
        self.update_claim_status(claim, "Bound", Some(&volume)).await?;
        Ok(())
    }

    /// `GetBindVolumeToClaim`: the claim's reference (with its uid and resourceVersion) on the volume, and
    /// `bound-by-controller` unless the user pre-bound it.
    async fn bind_volume_to_claim(
        &self,
        volume: PersistentVolume,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolume, ControllerError> {
        let set_bound_by_controller = !is_volume_bound_to_claim(&volume, claim);
        let mut clone = volume.clone();
        let mut dirty = false;
        let current = claim_ref(&volume);
        if current.is_none_or(|r| {
            r.name != claim.metadata.name
                || r.namespace != claim.metadata.namespace
                || r.uid != claim.metadata.uid
        }) {
            clone.spec.get_or_insert_with(Default::default).claim_ref = Some(reference_to(claim));
            dirty = true;
        }
        if set_bound_by_controller && annotation(&clone.metadata, ANN_BOUND_BY_CONTROLLER).is_none() {
            clone
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
            dirty = true;
        }
        if !dirty {
            return Ok(volume);
        }
        self.update_volume(&clone, false).await
    }

    /// `bindClaimToVolume`: `volumeName` (and `bound-by-controller` when the controller chose it) and
    /// `bind-completed`.
    async fn bind_claim_to_volume(
        &self,
        claim: PersistentVolumeClaim,
        volume: &PersistentVolume,
    ) -> Result<PersistentVolumeClaim, ControllerError> {
        let volume_name = volume.metadata.name.clone().unwrap_or_default();
        let mut clone = claim.clone();
        let mut dirty = false;
        if volume_name_of(&claim) != volume_name {
            clone.spec.get_or_insert_with(Default::default).volume_name = Some(volume_name);
            let annotations = clone.metadata.annotations.get_or_insert_with(BTreeMap::new);
            annotations
                .entry(ANN_BOUND_BY_CONTROLLER.into())
                .or_insert_with(|| "yes".into());
            dirty = true;
        }
        if annotation(&clone.metadata, ANN_BIND_COMPLETED).is_none() {
            clone
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(ANN_BIND_COMPLETED.into(), "yes".into());
            dirty = true;
        }
        if !dirty {
            return Ok(claim);
        }
        self.update_claim(&clone, false).await
    }

    // --- volumes --------------------------------------------------------------------------------------------

    /// `updateVolumePhase`, with the `lastPhaseTransitionTime` kube-apiserver stamps on a phase change.
    async fn update_volume_phase(
        &self,
        volume: PersistentVolume,
        phase: &str,
    ) -> Result<PersistentVolume, ControllerError> {
        self.set_volume_phase(volume, phase, None).await
    }

    async fn set_volume_phase(
        &self,
        volume: PersistentVolume,
        phase: &str,
        message: Option<&str>,
    ) -> Result<PersistentVolume, ControllerError> {
        if volume_phase(&volume) == phase {
            return Ok(volume);
        }
        let mut clone = volume;
        let status = clone.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.into());
        status.message = message.map(String::from);
        status.last_phase_transition_time = Some(now());
        self.update_volume(&clone, true).await
    }

    /// `updateVolumePhaseWithEvent`: the event only when the phase changes.
    async fn update_volume_phase_with_event(
        &self,
        volume: PersistentVolume,
        phase: &str,
        reason: &str,
        message: &str,
    ) -> Result<PersistentVolume, ControllerError> {
        if volume_phase(&volume) == phase {
            return Ok(volume);
        }
        let written = self.set_volume_phase(volume, phase, Some(message)).await?;
        self.events
            .warning(&Involved::of(&written), reason, message.into())
            .await;
        Ok(written)
    }

    async fn sync_volume(&self, volume: PersistentVolume) -> Result<(), ControllerError> {
        // The PV protection controller's part: a volume is in use while it is Bound.
        let mut volume = volume;
        if volume.metadata.deletion_timestamp.is_some() {
            if has_finalizer(&volume.metadata, PV_PROTECTION_FINALIZER) && volume_phase(&volume) != "Bound" {
                let mut clone = volume.clone();
                if let Some(f) = clone.metadata.finalizers.as_mut() {
                    f.retain(|f| f != PV_PROTECTION_FINALIZER);
                }
                self.update_volume(&clone, false).await?;
                return Ok(());
            }
        } else if !has_finalizer(&volume.metadata, PV_PROTECTION_FINALIZER) {
            let mut clone = volume.clone();
            clone
                .metadata
                .finalizers
                .get_or_insert_with(Vec::new)
                .push(PV_PROTECTION_FINALIZER.into());
            volume = self.update_volume(&clone, false).await?;
        }
        let Some(reference) = claim_ref(&volume).cloned() else {
            self.update_volume_phase(volume, "Available").await?;
            return Ok(());
        };
        if reference.uid.as_deref().unwrap_or("").is_empty() {
            // Pre-bound by the user to a claim not bound yet: the claim's sync binds it.
            self.update_volume_phase(volume, "Available").await?;
            return Ok(());
        }
        let namespace = reference.namespace.clone().unwrap_or_default();
        let claim_name = reference.name.clone().unwrap_or_default();
        let mut claim = self.claim(&namespace, &claim_name);
        let phase = volume_phase(&volume).to_string();
        if claim.is_none() && phase != "Released" && phase != "Failed" {
            // Not in the cache yet, perhaps: ask the API before releasing anything.
            claim = self.live_claim(&namespace, &claim_name).await?;
        }
        if claim.as_ref().is_some_and(|c| c.metadata.uid != reference.uid) {
            // Maybe the cache is behind a claim recreated under the same name: ask the API.
            claim = self
                .live_claim(&namespace, &claim_name)
                .await?
                .filter(|c| c.metadata.uid == reference.uid);
        }
        let Some(claim) = claim else {
            // The claim is gone: released, then reclaimed.
            if phase != "Released" && phase != "Failed" {
                volume = self.update_volume_phase(volume, "Released").await?;
            }
            return self.reclaim(volume).await;
        };
        let claims_volume = volume_name_of(&claim).to_string();
        let volume_name = volume.metadata.name.clone().unwrap_or_default();
        if claims_volume.is_empty() {
            if volume_mode_mismatch(&claim, &volume) {
                self.events
                    .warning(
                        &Involved::of(&volume),
                        "VolumeMismatch",
                        format!(
                            "Cannot bind PersistentVolume to requested PersistentVolumeClaim {claim_name:?} due to \
                             incompatible volumeMode."
                        ),
                    )
                    .await;
                self.events
                    .warning(
                        &Involved::of(&claim),
                        "VolumeMismatch",
                        format!(
                            "Cannot bind PersistentVolume {volume_name:?} to requested PersistentVolumeClaim due to \
                             incompatible volumeMode."
                        ),
                    )
                    .await;
            }
            // Otherwise the claim's own sync (queued by this volume's change) finishes the binding.
            return Ok(());
        }
        if claims_volume == volume_name {
            self.update_volume_phase(volume, "Bound").await?;
            return Ok(());
        }
        // The claim is bound to another volume.
        let provisioned = annotation(&volume.metadata, ANN_DYNAMICALLY_PROVISIONED).is_some();
        if provisioned && reclaim_policy(&volume) == "Delete" {
            if phase != "Released" && phase != "Failed" {
                volume = self.update_volume_phase(volume, "Released").await?;
            }
            return self.reclaim(volume).await;
        }
        self.unbind_volume(volume).await
    }

    async fn live_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, ControllerError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map_err(kube_error(format!("reading claim {namespace}/{name}")))
    }

    /// `unbindVolume`: a binding the controller made is removed; a user's pre-binding keeps its name, loses its uid.
    async fn unbind_volume(&self, volume: PersistentVolume) -> Result<(), ControllerError> {
        let mut clone = volume.clone();
        if annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER).is_some() {
            if let Some(spec) = clone.spec.as_mut() {
                spec.claim_ref = None;
            }
            if let Some(annotations) = clone.metadata.annotations.as_mut() {
                annotations.remove(ANN_BOUND_BY_CONTROLLER);
                if annotations.is_empty() {
                    clone.metadata.annotations = None;
                }
            }
        } else if let Some(reference) = clone.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
            reference.uid = None;
        }
        let written = self.update_volume(&clone, false).await?;
        self.update_volume_phase(written, "Available").await?;
        Ok(())
    }

    /// `reclaimVolume`. Retain keeps the volume Released. Delete deletes the PV object: Kubernetes deletes the
    /// storage through the volume's plugin first, and a statically made hostPath or local volume has nothing
    /// bonsai should remove; a volume an external provisioner made (or a CSI one) is left to that provisioner.
    /// Recycle needs a recycler plugin bonsai does not have.
    async fn reclaim(&self, volume: PersistentVolume) -> Result<(), ControllerError> {
        let name = volume.metadata.name.clone().unwrap_or_default();
        match reclaim_policy(&volume).as_str() {
            "Retain" => Ok(()),
            "Delete" => {
                let external = annotation(&volume.metadata, ANN_DYNAMICALLY_PROVISIONED)
                    .is_some_and(|p| !p.starts_with("kubernetes.io/"))
                    || volume.spec.as_ref().is_some_and(|s| s.csi.is_some());
                if external || volume.metadata.deletion_timestamp.is_some() {
                    return Ok(());
                }
                let api: Api<PersistentVolume> = Api::all(self.client.clone());
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(kube_error(format!("deleting released volume {name}"))(e)),
                }
            }
            "Recycle" => {
                self.update_volume_phase_with_event(
                    volume,
                    "Failed",
                    "VolumeFailedRecycle",
                    "No recycler plugin found for the volume!",
                )
                .await?;
                Ok(())
            }
            _ => {
                self.update_volume_phase_with_event(
                    volume,
                    "Failed",
                    "VolumeUnknownReclaimPolicy",
                    "Volume has unrecognized PersistentVolumeReclaimPolicy",
                )
                .await?;
                Ok(())
            }
        }
    }
}

fn reclaim_policy(volume: &PersistentVolume) -> String {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.clone())
        .unwrap_or_else(|| "Retain".into())
}

enum Seen {
    Volume(Box<Change<PersistentVolume>>),
    Claim(Box<Change<PersistentVolumeClaim>>),
    Class(Box<Change<StorageClass>>),
    Pod(Box<Change<Pod>>),
}

impl Seen {
    fn relisted(&self) -> bool {
        match self {
            Seen::Volume(c) => matches!(**c, Change::Relisted),
            Seen::Claim(c) => matches!(**c, Change::Relisted),
            Seen::Class(c) => matches!(**c, Change::Relisted),
            Seen::Pod(c) => matches!(**c, Change::Relisted),
        }
    }
}

fn claim_key(claim: &PersistentVolumeClaim) -> Option<Key> {
    Some(Key::Claim(
        claim.metadata.namespace.clone()?,
        claim.metadata.name.clone()?,
    ))
}

/// Runs the controller until its watches end.
pub async fn run(client: kube::Client) {
    let (tx, rx) = mpsc::unbounded_channel();
    let volumes = work::reflect_into(Api::<PersistentVolume>::all(client.clone()), tx.clone(), |c| {
        Seen::Volume(Box::new(c))
    });
    let claims = work::reflect_into(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        tx.clone(),
        |c| Seen::Claim(Box::new(c)),
    );
    let classes = work::reflect_into(Api::<StorageClass>::all(client.clone()), tx.clone(), |c| {
        Seen::Class(Box::new(c))
    });
    let pods = work::reflect_into(Api::<Pod>::all(client.clone()), tx, |c| Seen::Pod(Box::new(c)));
    let context = Context {
        events: Recorder::new(client.clone(), "persistentvolume-controller"),
        client,
        volumes: volumes.clone(),
        claims: claims.clone(),
        classes: classes.clone(),
        pods: pods.clone(),
        written_volumes: Mutex::new(BTreeMap::new()),
        written_claims: Mutex::new(BTreeMap::new()),
    };
    let all = {
        let (volumes, claims) = (volumes.clone(), claims.clone());
        move || -> Vec<Key> {
            let volume_keys = volumes
                .state()
                .iter()
                .filter_map(|v| v.metadata.name.clone().map(Key::Volume))
                .collect::<Vec<_>>();
            volume_keys
                .into_iter()
                .chain(claims.state().iter().filter_map(|c| claim_key(c)))
                .collect()
        }
    };
    let keys_of = {
        let all = all.clone();
        let (volumes, claims) = (volumes.clone(), claims.clone());
        move |seen: Seen| -> Vec<Key> {
            // Claims still looking for a volume: any volume, class or node change may be what they wait for.
            let unbound_claims = || -> Vec<Key> {
                claims
                    .state()
                    .iter()
                    .filter(|c| annotation(&c.metadata, ANN_BIND_COMPLETED).is_none())
                    .filter_map(|c| claim_key(c))
                    .collect()
            };
            if seen.relisted() {
                return all();
            }
            match seen {
                Seen::Volume(c) => {
                    let Change::Object(v) = *c else { return Vec::new() };
                    let mut keys: Vec<Key> = v.metadata.name.clone().map(Key::Volume).into_iter().collect();
                    if let Some(r) = claim_ref(&v)
                        && let (Some(ns), Some(name)) = (r.namespace.clone(), r.name.clone())
                    {
                        keys.push(Key::Claim(ns, name));
                    }
                    keys.extend(unbound_claims());
                    keys
                }
                Seen::Claim(c) => {
                    let Change::Object(c) = *c else { return Vec::new() };
                    let mut keys: Vec<Key> = claim_key(&c).into_iter().collect();
                    let volume_name = volume_name_of(&c);
                    if !volume_name.is_empty() {
                        keys.push(Key::Volume(volume_name.to_string()));
                    }
                    // Volumes pointing at the claim (pre-bound, bound, or to be released).
                    keys.extend(
                        volumes
                            .state()
                            .iter()
                            .filter(|v| {
                                claim_ref(v).is_some_and(|r| {
                                    r.namespace == c.metadata.namespace && r.name == c.metadata.name
                                })
                            })
                            .filter_map(|v| v.metadata.name.clone().map(Key::Volume)),
                    );
                    keys
                }
                Seen::Class(_) => unbound_claims(),
                Seen::Pod(c) => {
                    let Change::Object(p) = *c else { return Vec::new() };
                    let namespace = p.metadata.namespace.clone().unwrap_or_default();
                    claims_of_pod(&p)
                        .into_iter()
                        .map(|name| Key::Claim(namespace.clone(), name))
                        .collect()
                }
            }
        }
    };
    let ready =
        move || work::ready(&volumes) && work::ready(&claims) && work::ready(&classes) && work::ready(&pods);
    work::run_queue("volumebinding", rx, keys_of, all, ready, |key| {
        context.reconcile(key)
    })
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn pv(name: &str, size: &str, class: &str, modes: &[&str], extra: serde_json::Value) -> PersistentVolume {
        let mut object = json!({"metadata": {"name": name, "labels": {}},
            "spec": {"capacity": {"storage": size}, "accessModes": modes, "storageClassName": class,
                "hostPath": {"path": format!("/tmp/{name}")}},
            "status": {"phase": "Available"}});
        merge(&mut object, extra);
        serde_json::from_value(object).unwrap()
    }

    fn pvc(
        name: &str,
        size: &str,
        class: Option<&str>,
        modes: &[&str],
        extra: serde_json::Value,
    ) -> PersistentVolumeClaim {
        let mut object = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}}});
        if let Some(class) = class {
            object["spec"]["storageClassName"] = json!(class);
        }
        merge(&mut object, extra);
        serde_json::from_value(object).unwrap()
    }

    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn node(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn best<'a>(claim: &PersistentVolumeClaim, volumes: &'a [PersistentVolume]) -> Option<&'a str> {
        find_best_match_for_claim(claim, volumes, false).and_then(|v| v.metadata.name.as_deref())
    }

    #[test]
    fn quantities_compare_exactly_across_suffixes() {
        assert_eq!(quantity_nanos("1Gi"), Some(1_073_741_824 * 1_000_000_000));
        assert_eq!(quantity_nanos("1G"), Some(1_000_000_000 * 1_000_000_000));
        assert_eq!(quantity_nanos("1.5Gi"), quantity_nanos("1536Mi"));
        assert_eq!(quantity_nanos("500m"), Some(500_000_000));
        assert_eq!(quantity_nanos("1e3"), quantity_nanos("1k"));
        assert_eq!(
            quantity_nanos("2E"),
            Some(2_000_000_000_000_000_000 * 1_000_000_000)
        );
        assert!(quantity_nanos("1Gi") > quantity_nanos("1G"));
        assert_eq!(quantity_nanos("abc"), None);
        assert_eq!(quantity_nanos("1Xi"), None);
    }

    #[test]
    fn the_smallest_fitting_volume_of_the_claims_class_wins() {
        let volumes = vec![
            pv("big", "10Gi", "fast", &["ReadWriteOnce"], json!({})),
            pv("small", "1Gi", "fast", &["ReadWriteOnce"], json!({})),
            pv("tiny", "500Mi", "fast", &["ReadWriteOnce"], json!({})),
            pv("other-class", "1Gi", "slow", &["ReadWriteOnce"], json!({})),
            pv("no-class", "1Gi", "", &["ReadWriteOnce"], json!({})),
        ];
        assert_eq!(
            best(
                &pvc("c", "800Mi", Some("fast"), &["ReadWriteOnce"], json!({})),
                &volumes
            ),
            Some("small")
        );
        assert_eq!(
            best(
                &pvc("c", "2Gi", Some("fast"), &["ReadWriteOnce"], json!({})),
                &volumes
            ),
            Some("big")
        );
        assert_eq!(
            best(
                &pvc("c", "20Gi", Some("fast"), &["ReadWriteOnce"], json!({})),
                &volumes
            ),
            None
        );
        // Empty matches empty only.
        assert_eq!(
            best(
                &pvc("c", "1Gi", Some(""), &["ReadWriteOnce"], json!({})),
                &volumes
            ),
            Some("no-class")
        );
        assert_eq!(
            best(&pvc("c", "1Gi", None, &["ReadWriteOnce"], json!({})), &volumes),
            Some("no-class")
        );
        assert_eq!(
            best(
                &pvc("c", "1Gi", Some("slow"), &["ReadWriteOnce"], json!({})),
                &volumes
            ),
            Some("other-class")
        );
        assert_eq!(
            best(
                &pvc("c", "1Gi", Some("none"), &["ReadWriteOnce"], json!({})),
                &volumes
            ),
            None
        );
    }

    #[test]
    fn unavailable_claimed_or_deleting_volumes_are_skipped() {
        let volumes = vec![
            pv(
                "pending",
                "1Gi",
                "",
                &["ReadWriteOnce"],
                json!({"status": {"phase": "Pending"}}),
            ),
            pv(
                "released",
                "1Gi",
                "",
                &["ReadWriteOnce"],
                json!({"status": {"phase": "Released"}}),
            ),
            pv(
                "claimed",
                "1Gi",
                "",
                &["ReadWriteOnce"],
                json!({"spec": {"claimRef": {"namespace": "default", "name": "someone"}}}),
            ),
            pv(
                "deleting",
                "1Gi",
                "",
                &["ReadWriteOnce"],
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
        ];
        assert_eq!(
            best(
                &pvc("c", "1Gi", Some(""), &["ReadWriteOnce"], json!({})),
                &volumes
            ),
            None
        );
    }

    #[test]
    fn access_modes_pick_the_fewest_modes_first_and_volume_modes_must_agree() {
        let volumes = vec![
            pv(
                "rwo-rox-small",
                "1Gi",
                "",
                &["ReadWriteOnce", "ReadOnlyMany"],
                json!({}),
            ),
            pv("rwo-big", "5Gi", "", &["ReadWriteOnce"], json!({})),
            pv("rwx", "1Gi", "", &["ReadWriteMany"], json!({})),
            pv(
                "block",
                "1Gi",
                "",
                &["ReadWriteOnce"],
                json!({"spec": {"volumeMode": "Block"}}),
            ),
        ];
        // The group offering only RWO is searched before the RWO+ROX one, even with a bigger volume.
        assert_eq!(
            best(
                &pvc("c", "1Gi", Some(""), &["ReadWriteOnce"], json!({})),
                &volumes
            ),
            Some("rwo-big")
        );
        assert_eq!(
            best(
                &pvc(
                    "c",
                    "1Gi",
                    Some(""),
                    &["ReadWriteOnce", "ReadOnlyMany"],
                    json!({})
                ),
                &volumes
            ),
            Some("rwo-rox-small")
        );
        assert_eq!(
            best(
                &pvc(
                    "c",
                    "1Gi",
                    Some(""),
                    &["ReadOnlyMany", "ReadWriteMany"],
                    json!({})
                ),
                &volumes
            ),
            None
        );
        assert_eq!(
            best(
                &pvc(
                    "c",
                    "1Gi",
                    Some(""),
                    &["ReadWriteOnce"],
                    json!({"spec": {"volumeMode": "Block"}})
                ),
                &volumes
            ),
            Some("block")
        );
    }

    #[test]
    fn selectors_choose_among_labelled_volumes() {
        let volumes = vec![
            pv(
                "a",
                "1Gi",
                "",
                &["ReadWriteOnce"],
                json!({"metadata": {"labels": {"tier": "gold"}}}),
            ),
            pv(
                "b",
                "1Gi",
                "",
                &["ReadWriteOnce"],
                json!({"metadata": {"labels": {"tier": "silver"}}}),
            ),
        ];
        let gold = pvc(
            "c",
            "1Gi",
            Some(""),
            &["ReadWriteOnce"],
            json!({"spec": {"selector": {"matchLabels": {"tier": "gold"}}}}),
        );
        assert_eq!(best(&gold, &volumes), Some("a"));
        let not_gold = pvc(
            "c",
            "1Gi",
            Some(""),
            &["ReadWriteOnce"],
            json!({"spec": {"selector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}}}),
        );
        assert_eq!(best(&not_gold, &volumes), Some("b"));
        let bronze = pvc(
            "c",
            "1Gi",
            Some(""),
            &["ReadWriteOnce"],
            json!({"spec": {"selector": {"matchLabels": {"tier": "bronze"}}}}),
        );
        assert_eq!(best(&bronze, &volumes), None);
    }

    #[test]
    fn pre_bound_volumes_are_returned_whatever_their_class_and_phase() {
        let volumes = vec![
            pv("smaller", "1Gi", "", &["ReadWriteOnce"], json!({})),
            pv(
                "reserved",
                "5Gi",
                "other",
                &["ReadWriteOnce"],
                json!({"spec": {"claimRef": {"namespace": "default", "name": "c"}}, "status": {"phase": "Pending"}}),
            ),
        ];
        let claim = pvc("c", "1Gi", Some(""), &["ReadWriteOnce"], json!({}));
        assert_eq!(best(&claim, &volumes), Some("reserved"));
        // Reserved for a claim of that name but another uid: not this claim's.
        let volumes = vec![pv(
            "reserved",
            "5Gi",
            "",
            &["ReadWriteOnce"],
            json!({"spec": {"claimRef": {"namespace": "default", "name": "c", "uid": "old"}}}),
        )];
        assert_eq!(best(&claim, &volumes), None);
        // Delayed binding leaves unbound volumes to the scheduler, but still takes pre-bound ones.
        let volumes = vec![pv("free", "1Gi", "", &["ReadWriteOnce"], json!({}))];
        assert!(find_best_match_for_claim(&claim, &volumes, true).is_none());
        // A provisioner's volume comes pre-bound to the claim's uid: with a node selected, that one is the
        // claim's, never a free one (which would race the provisioner).
        let provisioned = pv(
            "pvc-uid-c",
            "1Gi",
            "",
            &["ReadWriteOnce"],
            json!({"spec": {"claimRef": {"namespace": "default", "name": "c", "uid": "uid-c"}}, "status": {}}),
        );
        let volumes = vec![pv("free", "1Gi", "", &["ReadWriteOnce"], json!({})), provisioned];
        assert_eq!(
            find_best_match_for_claim(&claim, &volumes, true).and_then(|v| v.metadata.name.as_deref()),
            Some("pvc-uid-c")
        );
    }

    #[test]
    fn node_affinity_decides_on_the_selected_node() {
        let pinned = |name: &str, host: &str| {
            pv(
                name,
                "1Gi",
                "local",
                &["ReadWriteOnce"],
                json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}}}),
            )
        };
        let volumes = [pinned("on-a", "a"), pinned("on-b", "b")];
        let refs: Vec<&PersistentVolume> = volumes.iter().collect();
        let claim = pvc("c", "1Gi", Some("local"), &["ReadWriteOnce"], json!({}));
        let a = node("a", json!({"kubernetes.io/hostname": "a"}));
        let c = node("c", json!({"kubernetes.io/hostname": "c"}));
        let on = |n: &Node| {
            find_matching_volume(&claim, &refs, Some(n), true).and_then(|v| v.metadata.name.clone())
        };
        assert_eq!(on(&a).as_deref(), Some("on-a"));
        assert_eq!(on(&c), None);
        // The scheduler path checks access modes per volume.
        let rwx = pvc("c", "1Gi", Some("local"), &["ReadWriteMany"], json!({}));
        assert!(find_matching_volume(&rwx, &refs, Some(&a), true).is_none());
        // Other operators, fields, and empty terms.
        let by_field = pv(
            "f",
            "1Gi",
            "",
            &[],
            json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]}}}}),
        );
        assert!(node_affinity_allows(&by_field, &a));
        assert!(!node_affinity_allows(&by_field, &c));
        let gt = pv(
            "g",
            "1Gi",
            "",
            &[],
            json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disks", "operator": "Gt", "values": ["2"]}]}]}}}}),
        );
        assert!(node_affinity_allows(&gt, &node("n", json!({"disks": "3"}))));
        assert!(!node_affinity_allows(&gt, &node("n", json!({"disks": "2"}))));
        let empty = pv(
            "e",
            "1Gi",
            "",
            &[],
            json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{}]}}}}),
        );
        assert!(!node_affinity_allows(&empty, &a));
        assert!(node_affinity_allows(&pv("free", "1Gi", "", &[], json!({})), &a));
    }

    #[test]
    fn requested_volumes_are_checked_with_kubernetes_reasons() {
        let claim = pvc("c", "2Gi", Some("fast"), &["ReadWriteOnce"], json!({}));
        let check = |v: &PersistentVolume| check_volume_satisfies_claim(v, &claim);
        assert_eq!(
            check(&pv("v", "1Gi", "fast", &["ReadWriteOnce"], json!({}))),
            Err("requested PV is too small".into())
        );
        assert_eq!(
            check(&pv("v", "2Gi", "slow", &["ReadWriteOnce"], json!({}))),
            Err("storageClassName does not match".into())
        );
        assert_eq!(
            check(&pv(
                "v",
                "2Gi",
                "fast",
                &["ReadWriteOnce"],
                json!({"spec": {"volumeMode": "Block"}})
            )),
            Err("incompatible volumeMode".into())
        );
        assert_eq!(
            check(&pv("v", "2Gi", "fast", &["ReadOnlyMany"], json!({}))),
            Err("incompatible accessMode".into())
        );
        assert_eq!(
            check(&pv("v", "2Gi", "fast", &["ReadWriteOnce"], json!({}))),
            Ok(())
        );
    }

    #[test]
    fn the_newest_default_class_is_the_default() {
        let class = |name: &str, created: &str, default: bool| -> Arc<StorageClass> {
            let annotations = if default {
                json!({"storageclass.kubernetes.io/is-default-class": "true"})
            } else {
                json!({})
            };
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created,
                    "annotations": annotations}, "provisioner": "x"}))
                .unwrap(),
            )
        };
        let classes = vec![
            class("old", "2026-01-01T00:00:00Z", true),
            class("new", "2026-02-01T00:00:00Z", true),
            class("newest-not-default", "2026-03-01T00:00:00Z", false),
            class("also-new", "2026-02-01T00:00:00Z", true),
        ];
        assert_eq!(
            default_class(&classes).and_then(|c| c.metadata.name.as_deref()),
            Some("also-new")
        );
        assert!(default_class(&classes[2..3]).is_none());
    }

    #[test]
    fn the_scheduler_places_pods_where_their_claims_can_be() {
        let class = |name: &str, mode: &str, provisioner: &str| -> Arc<StorageClass> {
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": name}, "provisioner": provisioner,
                    "volumeBindingMode": mode}))
                .unwrap(),
            )
        };
        let classes = vec![
            class("local", "WaitForFirstConsumer", "kubernetes.io/no-provisioner"),
            class("dynamic", "WaitForFirstConsumer", "rancher.io/local-path"),
            class("now", "Immediate", "rancher.io/local-path"),
        ];
        let pinned = |name: &str, host: &str, extra: serde_json::Value| {
            let mut v = pv(
                name,
                "1Gi",
                "local",
                &["ReadWriteOnce"],
                json!({"spec": {"nodeAffinity": {"required": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}}}),
            );
            let mut value = serde_json::to_value(&v).unwrap();
            merge(&mut value, extra);
            v = serde_json::from_value(value).unwrap();
            Arc::new(v)
        };
        let volumes = vec![
            pinned("on-a", "a", json!({})),
            pinned("bound-on-b", "b", json!({"status": {"phase": "Bound"}})),
        ];
        let pod = |claims: &[&str]| -> Pod {
            let volumes: Vec<serde_json::Value> = claims
                .iter()
                .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
                .collect();
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"},
                "spec": {"containers": [], "volumes": volumes}}))
            .unwrap()
        };
        let claims = vec![
            Arc::new(pvc("waits", "1Gi", Some("local"), &["ReadWriteOnce"], json!({}))),
            Arc::new(pvc(
                "waits-too",
                "1Gi",
                Some("local"),
                &["ReadWriteOnce"],
                json!({}),
            )),
            Arc::new(pvc(
                "grows",
                "1Gi",
                Some("dynamic"),
                &["ReadWriteOnce"],
                json!({}),
            )),
            Arc::new(pvc(
                "immediate",
                "1Gi",
                Some("now"),
                &["ReadWriteOnce"],
                json!({}),
            )),
            Arc::new(pvc(
                "bound",
                "1Gi",
                Some("local"),
                &["ReadWriteOnce"],
                json!({"spec": {"volumeName": "bound-on-b"}}),
            )),
        ];
        let a = node("a", json!({"kubernetes.io/hostname": "a"}));
        let b = node("b", json!({"kubernetes.io/hostname": "b"}));
        let on = |claim_names: &[&str], n: &Node| {
            schedule_volumes(&pod(claim_names), n, &claims, &volumes, &classes)
        };

        let plans = on(&["waits"], &a).unwrap();
        assert!(
            matches!(&plans[..], [ClaimPlan::Bind { volume, .. }] if volume.metadata.name.as_deref() == Some("on-a"))
        );
        assert_eq!(
            on(&["waits"], &b),
            Err("node(s) didn't find available persistent volumes to bind".into())
        );
        // One volume serves one claim.
        assert_eq!(
            on(&["waits", "waits-too"], &a),
            Err("node(s) didn't find available persistent volumes to bind".into())
        );
        assert!(matches!(
            &on(&["grows"], &b).unwrap()[..],
            [ClaimPlan::Provision { .. }]
        ));
        assert_eq!(
            on(&["bound"], &a),
            Err("node(s) had volume node affinity conflict".into())
        );
        assert_eq!(on(&["bound"], &b), Ok(vec![]));
        let immediate = on(&["immediate"], &a);
        if IMMEDIATE_CLAIMS_HOLD_PODS {
            assert_eq!(
                immediate,
                Err("pod has unbound immediate PersistentVolumeClaims".into())
            );
        } else {
            assert_eq!(immediate, Ok(vec![]));
        }
        assert_eq!(
            on(&["missing"], &a),
            Err("persistentvolumeclaim \"missing\" not found".into())
        );
    }

    #[test]
    fn only_scheduled_pods_keep_a_claim_in_use() {
        let claim = pvc("data", "1Gi", None, &[], json!({}));
        let pod = |node: Option<&str>, claim_name: &str| -> Pod {
            let mut spec = json!({"containers": [], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim_name}}]});
            if let Some(n) = node {
                spec["nodeName"] = json!(n);
            }
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec}))
                .unwrap()
        };
        assert!(pod_uses_claim(&pod(Some("n"), "data"), &claim));
        assert!(!pod_uses_claim(&pod(None, "data"), &claim));
        assert!(!pod_uses_claim(&pod(Some("n"), "other"), &claim));
        assert_eq!(claims_of_pod(&pod(None, "data")), vec!["data".to_string()]);
    }
}
