//! The StatefulSet controller (kube-controller-manager's `pkg/controller/statefulset`): pods with a stable
//! identity (`<set>-<ordinal>`, `hostname` and `subdomain`, the `statefulset.kubernetes.io/pod-name` and
//! `apps.kubernetes.io/pod-index` labels), a PersistentVolumeClaim per `volumeClaimTemplates` entry and ordinal
//! (`<template>-<set>-<ordinal>`, made before the pod and kept after it unless
//! `persistentVolumeClaimRetentionPolicy` says otherwise), OrderedReady or Parallel pod management, and updates
//! through ControllerRevisions (`<set>-<hash>`; the pods' `controller-revision-hash` label is the revision's
//! name): RollingUpdate from the highest ordinal down to `partition`, one pod at a time, or OnDelete.
//!
//! The decision of a sync is `plan`, a port of `updateStatefulSet` (stateful_set_control.go) over a snapshot of
//! the pods; `Context::reconcile` carries its steps out through the API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::daemonset::REVISION_HASH;
use crate::deployment::{template_hash, without_zero_values};
use crate::events::{Involved, Recorder};
use crate::replicaset::{is_available, is_ready};
use crate::work::{self, Change, controller_of, label_selector_matches};
use crate::{ControllerError, kube_error};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

type Key = (String, String);

/// How long pods created or deleted may stay unseen by the cache before the controller stops waiting for them.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A pod name's parent and ordinal, as Kubernetes reads them (`(.*)-([0-9]+)$`).
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ordinal) = name.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse().ok().map(|o| (parent, o))
}

/// What the plan needs to know of one existing pod of the set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    pub name: String,
    pub ordinal: i32,
    /// `status.phase` ("" before the API server gave it one).
    pub phase: String,
    pub running_and_ready: bool,
    /// Running, ready and ready for `minReadySeconds`.
    pub available: bool,
    pub terminating: bool,
    /// Its `controller-revision-hash` label: the name of the revision it was made from.
    pub revision: String,
    /// Labels, volumes and claims' owner references as the set wants them.
    pub conforms: bool,
    /// Its claims' owner references as the retention policy wants them, were it scaled away.
    pub claims_conform_when_condemned: bool,
}

impl PodView {
    /// `isUnavailable`: not healthy (running, ready, not terminating) or not yet available.
    fn unavailable(&self) -> bool {
        !self.running_and_ready || self.terminating || !self.available
    }
}

/// The set's side of a plan.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub start: i32,
    pub replicas: i32,
    /// OrderedReady: one step at a time, each waiting for the pods before it.
    pub monotonic: bool,
    pub on_delete: bool,
    /// `updateStrategy.rollingUpdate.partition` (None when there is no `rollingUpdate`).
    pub partition: Option<i32>,
    pub status_current_replicas: i32,
    pub update_revision: String,
    /// Ordinals whose claims still carry a reference to an earlier pod of that name (being deleted with it).
    pub stale_claims: BTreeSet<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The pod failed or succeeded: it is made again.
    Finished,
    ScaleDown,
    Update,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the pod of this ordinal (its claims first), from the update revision or the current one.
    Create {
        ordinal: i32,
        from_update: bool,
    },
    Delete {
        name: String,
        why: Why,
    },
    /// A pending pod's claims are made if missing.
    EnsureClaims {
        name: String,
    },
    /// The pod's identity, storage or claims' owners are put right.
    Conform {
        name: String,
    },
    /// A condemned pod's claims get the owners the retention policy wants.
    ConformCondemnedClaims {
        name: String,
    },
}

/// One sync of a StatefulSet, as `updateStatefulSet` decides it: the steps to take, in order, given the pods
/// there are. In OrderedReady mode it ends at the first step that must wait for the cluster.
pub fn plan(params: &Params, pods: &[PodView]) -> Vec<Step> {
    let count = usize::try_from(params.replicas.max(0)).unwrap_or(0);
    let end = params.start + params.replicas - 1;
    let mut replicas: Vec<Option<&PodView>> = vec![None; count];
    let mut condemned: Vec<&PodView> = Vec::new();
    for pod in pods {
        if pod.ordinal >= params.start && pod.ordinal <= end {
            if let Some(slot) = usize::try_from(pod.ordinal - params.start)
                .ok()
                .and_then(|i| replicas.get_mut(i))
            {
                *slot = Some(pod);
            }
        } else if pod.ordinal >= 0 {
            condemned.push(pod);
        }
    }
    condemned.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    // The first unhealthy pod (a missing one counts) may be deleted in a scale down even though it is unhealthy.
    let first_unhealthy: Option<&str> = if replicas.iter().any(|p| p.is_none_or(PodView::unavailable)) {
        None
    } else {
        condemned
            .iter()
            .rev()
            .find(|p| p.unavailable())
            .map(|p| p.name.as_str())
    };
    let monotonic = params.monotonic;
    let mut steps = Vec::new();
    for (index, slot) in replicas.iter().enumerate() {
        let ordinal = params.start + index as i32;
        let Some(pod) = slot else {
            if params.stale_claims.contains(&ordinal) {
                if monotonic {
                    return steps;
                }
                continue;
            }
            // `newVersionedStatefulSetPod`: ordinals below the partition stay on the current revision.
            let from_current = match params.partition {
                None => !params.on_delete && ordinal < params.start + params.status_current_replicas,
                Some(partition) => ordinal < params.start + partition,
            };
            steps.push(Step::Create {
                ordinal,
                from_update: !from_current,
            });
            if monotonic {
                return steps;
            }
            continue;
        };
        if matches!(pod.phase.as_str(), "Failed" | "Succeeded") {
            if !pod.terminating {
                steps.push(Step::Delete {
                    name: pod.name.clone(),
                    why: Why::Finished,
                });
            }
            if monotonic {
                return steps;
            }
            continue;
        }
        if pod.phase == "Pending" {
            steps.push(Step::EnsureClaims {
                name: pod.name.clone(),
            });
        }
        if monotonic && (pod.terminating || !pod.running_and_ready || !pod.available) {
            return steps;
        }
        if !pod.conforms {
            steps.push(Step::Conform {
                name: pod.name.clone(),
            });
        }
    }
    for pod in &condemned {
        if !pod.claims_conform_when_condemned {
            steps.push(Step::ConformCondemnedClaims {
                name: pod.name.clone(),
            });
        }
    }
    for pod in &condemned {
        if pod.terminating {
            if monotonic {
                return steps;
            }
            continue;
        }
        if monotonic
            && (!pod.running_and_ready || !pod.available)
            && first_unhealthy != Some(pod.name.as_str())
        {
            return steps;
        }
        steps.push(Step::Delete {
            name: pod.name.clone(),
            why: Why::ScaleDown,
        });
        if monotonic {
            return steps;
        }
    }
    if params.on_delete {
        return steps;
    }
    // Rolling update: the highest ordinal not on the update revision goes, once every pod above it is available.
    let update_min = usize::try_from(params.partition.unwrap_or(0).max(0)).unwrap_or(0);
    for target in (update_min..replicas.len()).rev() {
        let Some(pod) = replicas[target] else {
            return steps;
        };
        if pod.revision != params.update_revision && !pod.terminating {
            steps.push(Step::Delete {
                name: pod.name.clone(),
                why: Why::Update,
            });
            return steps;
        }
        if pod.unavailable() {
            return steps;
        }
    }
    steps
}

/// The replica counts of a set's status (`computeReplicaStatus`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
    pub current: i32,
    pub updated: i32,
}

pub fn counts(pods: &[PodView], current_revision: &str, update_revision: &str) -> Counts {
    let mut out = Counts::default();
    for pod in pods.iter().filter(|p| !p.phase.is_empty()) {
        out.replicas += 1;
        if pod.running_and_ready {
            out.ready += 1;
            if pod.available {
                out.available += 1;
            }
        }
        if !pod.terminating {
            out.current += i32::from(pod.revision == current_revision);
            out.updated += i32::from(pod.revision == update_revision);
        }
    }
    out
}

/// Which owners a claim should have under the retention policy: (the set, the pod). The pod owns it only once it
/// is condemned by a scale down (`updateClaimOwnerRefForSetAndPod`).
pub fn wanted_claim_owners(when_deleted: &str, when_scaled: &str, condemned: bool) -> (bool, bool) {
    match (when_scaled == "Delete", when_deleted == "Delete") {
        (false, false) => (false, false),
        (false, true) => (true, false),
        (true, false) => (false, condemned),
        (true, true) => (!condemned, condemned),
    }
}

/// An owner's identity, as a claim's references name it.
#[derive(Clone, Debug)]
pub struct Owner {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub name: String,
    pub uid: String,
}

impl Owner {
    fn matches(&self, r: &OwnerReference) -> bool {
        r.api_version == self.api_version && r.kind == self.kind && r.name == self.name
    }

    fn controller_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.into(),
            kind: self.kind.into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// The owner references a claim must be given for the retention policy, or None when it is as it should be or
/// must not be touched (`isClaimOwnerUpToDate` and `updateClaimOwnerRefForSetAndPod`): a reference to an earlier
/// set or pod of the same name leaves the claim alone; another controller's claim only loses our references.
pub fn claim_owner_update(
    refs: &[OwnerReference],
    set: &Owner,
    pod: &Owner,
    policy: (&str, &str),
    condemned: bool,
) -> Option<Vec<OwnerReference>> {
    let stale = |owner: &Owner| refs.iter().any(|r| owner.matches(r) && r.uid != owner.uid);
    if stale(set) || stale(pod) {
        return None;
    }
    let ours = |r: &OwnerReference| set.matches(r) || pod.matches(r);
    let has = |owner: &Owner| refs.iter().any(|r| r.uid == owner.uid);
    let retain_all = policy.0 != "Delete" && policy.1 != "Delete";
    let other_controller = !retain_all && refs.iter().any(|r| !ours(r) && r.controller == Some(true));
    let scrubbed: Vec<OwnerReference> = refs.iter().filter(|r| !ours(r)).cloned().collect();
    if other_controller {
        return (has(set) || has(pod)).then_some(scrubbed);
    }
    let non_controller = refs
        .iter()
        .any(|r| (r.uid == set.uid || r.uid == pod.uid) && r.controller != Some(true));
    let (want_set, want_pod) = wanted_claim_owners(policy.0, policy.1, condemned);
    if !non_controller && has(set) == want_set && has(pod) == want_pod {
        return None;
    }
    let mut out = scrubbed;
    if want_set {
        out.push(set.controller_reference());
    }
    if want_pod {
        out.push(pod.controller_reference());
    }
    Some(out)
}

/// The revision a template is rolled out as, given the set's revisions (oldest first) and which of them hold the
/// same template (`getStatefulSetRevisions`).
#[derive(Debug, PartialEq, Eq)]
pub enum RevisionChoice {
    /// The newest revision is the template: nothing changed.
    Newest,
    /// An older revision is the template (a rollback): it becomes the newest, with the next revision number.
    Reuse(usize),
    Create,
}

pub fn choose_revision(equal: &[bool]) -> RevisionChoice {
    match equal.iter().rposition(|e| *e) {
        None => RevisionChoice::Create,
        Some(i) if i + 1 == equal.len() => RevisionChoice::Newest,
        Some(i) => RevisionChoice::Reuse(i),
    }
}

/// A template as it is compared and hashed: typed, then without Go's zero values.
fn canonical_template(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or_default();
    without_zero_values(&mut value);
    value
}

/// The template a revision restores (its `data` is the strategic merge patch `{"spec": {"template": ...}}`).
fn revision_template(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(t) = template.as_object_mut() {
        t.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// A revision's `data` for a template, as Kubernetes' `getPatch` writes it.
fn revision_data(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> &'a str {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map_or("", String::as_str)
}

/// A set's settings as the controller reads them, with Kubernetes' defaults for what is unset.
struct Settings {
    namespace: String,
    name: String,
    uid: String,
    start: i32,
    replicas: i32,
    min_ready: i32,
    monotonic: bool,
    on_delete: bool,
    partition: Option<i32>,
    history_limit: i32,
    when_deleted: String,
    when_scaled: String,
    service_name: String,
    claim_templates: Vec<PersistentVolumeClaim>,
}

impl Settings {
    fn of(set: &StatefulSet) -> Settings {
        let spec = set.spec.clone().unwrap_or_default();
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let on_delete = strategy.type_.as_deref() == Some("OnDelete");
        let policy = spec
            .persistent_volume_claim_retention_policy
            .clone()
            .unwrap_or_default();
        Settings {
            namespace: set.metadata.namespace.clone().unwrap_or_default(),
            name: set.metadata.name.clone().unwrap_or_default(),
            uid: set.metadata.uid.clone().unwrap_or_default(),
            start: spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0),
            replicas: spec.replicas.unwrap_or(1),
            min_ready: spec.min_ready_seconds.unwrap_or(0),
            monotonic: spec.pod_management_policy.as_deref() != Some("Parallel"),
            on_delete,
            partition: match (&strategy.type_, &strategy.rolling_update) {
                (_, Some(rolling)) if !on_delete => Some(rolling.partition.unwrap_or(0)),
                // A defaulted strategy always has `rollingUpdate`; an unset one behaves as defaulted.
                (None, None) => Some(0),
                _ => None,
            },
            history_limit: spec.revision_history_limit.unwrap_or(10),
            when_deleted: policy.when_deleted.unwrap_or_else(|| "Retain".into()),
            when_scaled: policy.when_scaled.unwrap_or_else(|| "Retain".into()),
            service_name: spec.service_name.unwrap_or_default(),
            claim_templates: spec.volume_claim_templates.unwrap_or_default(),
        }
    }

    fn in_range(&self, ordinal: i32) -> bool {
        ordinal >= self.start && ordinal < self.start + self.replicas
    }

    fn pod_name(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.name)
    }

    /// `(template name, claim name)` of every claim of the pod with `ordinal`.
    fn claim_names(&self, ordinal: i32) -> Vec<(String, String)> {
        self.claim_templates
            .iter()
            .filter_map(|t| t.metadata.name.clone())
            .map(|t| {
                let claim = format!("{t}-{}-{ordinal}", self.name);
                (t, claim)
            })
            .collect()
    }

    fn owner(&self) -> Owner {
        Owner {
            api_version: "apps/v1",
            kind: "StatefulSet",
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    fn policy(&self) -> (&str, &str) {
        (&self.when_deleted, &self.when_scaled)
    }
}

fn pod_owner(pod: &Pod) -> Owner {
    Owner {
        api_version: "v1",
        kind: "Pod",
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// The pod of `ordinal` from `template` (`newStatefulSetPod`): the template's metadata, the stable identity, the
/// revision label, the claims' volumes before the template's others, and the set as its controller.
fn new_pod(
    settings: &Settings,
    template: &PodTemplateSpec,
    ordinal: i32,
    revision: &str,
) -> Result<Pod, ControllerError> {
    let name = settings.pod_name(ordinal);
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_HASH.into(), revision.into());
    let mut spec = serde_json::to_value(&template.spec).unwrap_or(json!({}));
    if !spec.is_object() {
        spec = json!({});
    }
    spec["hostname"] = json!(name);
    match spec.as_object_mut() {
        Some(s) if settings.service_name.is_empty() => {
            s.remove("subdomain");
        }
        _ => spec["subdomain"] = json!(settings.service_name),
    }
    let claims = settings.claim_names(ordinal);
    let mut volumes: Vec<Value> = claims
        .iter()
        .map(|(t, claim)| json!({"name": t, "persistentVolumeClaim": {"claimName": claim}}))
        .collect();
    volumes.extend(
        spec.get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| !claims.iter().any(|(t, _)| v.get("name") == Some(&json!(t))))
            .cloned(),
    );
    if !volumes.is_empty() {
        spec["volumes"] = json!(volumes);
    }
    let mut metadata = json!({"name": name, "namespace": settings.namespace, "labels": labels,
        "ownerReferences": [settings.owner().controller_reference()]});
    if let Some(annotations) = meta.annotations {
        metadata["annotations"] = json!(annotations);
    }
    if let Some(finalizers) = meta.finalizers {
        metadata["finalizers"] = json!(finalizers);
    }
    serde_json::from_value(json!({"metadata": metadata, "spec": spec})).map_err(|e| {
        ControllerError::Invalid(format!(
            "pod template of statefulset {}/{}: {e}",
            settings.namespace, settings.name
        ))
    })
}

/// The claim of `template` for the pod of `ordinal` (`getPersistentVolumeClaims`): the template, labelled with
/// the set's selector, owned as the retention policy says for a pod in range.
fn new_claim(
    settings: &Settings,
    template: &PersistentVolumeClaim,
    selector: &BTreeMap<String, String>,
    claim_name: &str,
) -> PersistentVolumeClaim {
    let mut claim = template.clone();
    claim.status = None;
    claim.metadata.name = Some(claim_name.into());
    claim.metadata.namespace = Some(settings.namespace.clone());
    claim.metadata.resource_version = None;
    claim.metadata.uid = None;
    let labels = claim.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(selector.iter().map(|(k, v)| (k.clone(), v.clone())));
    let (want_set, _) = wanted_claim_owners(&settings.when_deleted, &settings.when_scaled, false);
    claim.metadata.owner_references = want_set.then(|| vec![settings.owner().controller_reference()]);
    claim
}

/// Pods created and deleted per set, not yet seen so by the cache.
#[derive(Default)]
struct Expectation {
    created: BTreeSet<String>,
    deleted_uids: BTreeSet<String>,
    since: Option<Instant>,
}

struct Context {
    client: kube::Client,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    revisions: Store<ControllerRevision>,
    events: Recorder,
    expectations: Mutex<BTreeMap<Key, Expectation>>,
}

/// What one sync did that the status it writes must reflect.
#[derive(Default)]
struct Done {
    deleted_for_update: bool,
    /// Set when a step is under way and the set should be looked at again soon.
    waiting: Option<String>,
}

impl Context {
    /// True while pods this controller created or deleted are not yet seen so (a lagging cache must not make
    /// it create or delete twice).
    fn in_flight(&self, key: &Key, pods: &[Arc<Pod>]) -> bool {
        let Ok(mut all) = self.expectations.lock() else {
            return false;
        };
        let Some(expected) = all.get_mut(key) else {
            return false;
        };
        expected.created.retain(|n| {
            !pods
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(n.as_str()))
        });
        expected.deleted_uids.retain(|uid| {
            pods.iter().any(|p| {
                p.metadata.uid.as_deref() == Some(uid.as_str()) && p.metadata.deletion_timestamp.is_none()
            })
        });
        let timed_out = expected.since.is_some_and(|s| s.elapsed() > EXPECTATION_TIMEOUT);
        if (expected.created.is_empty() && expected.deleted_uids.is_empty()) || timed_out {
            all.remove(key);
            return false;
        }
        true
    }

    fn expect(&self, key: &Key, created: Option<String>, deleted_uid: Option<String>) {
        if let Ok(mut all) = self.expectations.lock() {
            let expected = all.entry(key.clone()).or_default();
            expected.created.extend(created);
            expected.deleted_uids.extend(deleted_uid);
            expected.since = Some(Instant::now());
        }
    }

    async fn reconcile(&self, key: Key) -> Result<(), ControllerError> {
        let (namespace, name) = key.clone();
        let Some(set) = self.sets.get(&ObjectRef::new(&name).within(&namespace)) else {
            return Ok(());
        };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let settings = Settings::of(&set);
        let pods = self.claim_pods(&set, &settings).await?;
        if self.in_flight(&key, &pods) {
            return Err(ControllerError::Waiting(format!(
                "statefulset {namespace}/{name}: pods in flight"
            )));
        }
        let revisions = self.claim_revisions(&set, &settings).await?;
        let mut collision_count = set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let template = set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let (update_name, update_template) = self
            .update_revision(&set, &settings, &revisions, &template, &mut collision_count)
            .await?;
        let status_current = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let (current_name, current_template) = revisions
            .iter()
            .find(|r| r.metadata.name.is_some() && r.metadata.name == status_current)
            .and_then(|r| Some((r.metadata.name.clone()?, revision_template(r)?)))
            .unwrap_or_else(|| (update_name.clone(), update_template.clone()));

        let views: Vec<PodView> = pods.iter().filter_map(|p| self.view(&settings, p)).collect();
        let params = Params {
            start: settings.start,
            replicas: settings.replicas,
            monotonic: settings.monotonic,
            on_delete: settings.on_delete,
            partition: settings.partition,
            status_current_replicas: set.status.as_ref().and_then(|s| s.current_replicas).unwrap_or(0),
            update_revision: update_name.clone(),
            stale_claims: (settings.start..settings.start + settings.replicas)
                .filter(|o| self.claims_stale(&settings, *o))
                .collect(),
        };
        let steps = plan(&params, &views);
        let mut done = Done::default();
        for step in &steps {
            self.carry_out(
                &key,
                &set,
                &settings,
                &pods,
                step,
                &mut done,
                (&current_name, &current_template),
                (&update_name, &update_template),
            )
            .await?;
        }

        let mut counted = counts(&views, &current_name, &update_name);
        if done.deleted_for_update {
            counted.current -= 1;
        }
        let mut current_revision = current_name.clone();
        // `completeRollingUpdate`: once every pod is updated and ready, the update revision is the current one.
        if !settings.on_delete
            && counted.updated == settings.replicas
            && counted.ready == settings.replicas
            && counted.replicas == settings.replicas
        {
            counted.current = counted.updated;
            current_revision = update_name.clone();
        }
        let status = json!({
            "observedGeneration": set.metadata.generation,
            "replicas": counted.replicas,
            "readyReplicas": counted.ready,
            "currentReplicas": counted.current,
            "updatedReplicas": counted.updated,
            "availableReplicas": counted.available,
            "currentRevision": current_revision,
            "updateRevision": update_name,
            "collisionCount": collision_count,
        });
        let written = serde_json::to_value(&set.status).unwrap_or_default();
        if !work::covers(&written, &status) {
            let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &namespace);
            match work::update_status(&api, &name, &json!({"status": status})).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => {
                    return Err(kube_error(format!(
                        "writing the status of statefulset {namespace}/{name}"
                    ))(e));
                }
            }
        }
        self.truncate_history(&settings, &revisions, &pods, &[&current_revision, &update_name])
            .await?;
        if let Some(why) = done.waiting {
            return Err(ControllerError::Waiting(why));
        }
        // minReadySeconds: a ready pod becomes available later, with no change to watch for.
        if views.iter().any(|v| v.running_and_ready && !v.available) {
            return Err(ControllerError::Waiting(format!(
                "statefulset {namespace}/{name}: pods becoming available"
            )));
        }
        Ok(())
    }

    /// The set's pods (`getPodsForStatefulSet`): those it controls, after adopting orphans its selector and name
    /// match and releasing those that no longer match.
    async fn claim_pods(
        &self,
        set: &StatefulSet,
        settings: &Settings,
    ) -> Result<Vec<Arc<Pod>>, ControllerError> {
        let selector = set.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &settings.namespace);
        let mut out = Vec::new();
        for pod in self.pods.state() {
            if pod.metadata.namespace.as_deref() != Some(settings.namespace.as_str()) {
                continue;
            }
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let member = parent_and_ordinal(&pod_name).is_some_and(|(parent, _)| parent == settings.name);
            let matches = member && label_selector_matches(&selector, pod.metadata.labels.as_ref());
            let refs = pod.metadata.owner_references.clone().unwrap_or_default();
            match controller_of(&pod.metadata) {
                Some(owner) if owner.uid == settings.uid => {
                    if matches {
                        out.push(pod);
                    } else {
                        let kept: Vec<OwnerReference> =
                            refs.into_iter().filter(|r| r.uid != settings.uid).collect();
                        set_owner_references(&api, &pod_name, &pod.metadata, kept).await?;
                    }
                }
                None if matches && pod.metadata.deletion_timestamp.is_none() => {
                    let mut adopted = refs;
                    adopted.push(settings.owner().controller_reference());
                    set_owner_references(&api, &pod_name, &pod.metadata, adopted).await?;
                    out.push(pod);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The set's revisions, oldest first (`ListRevisions` and `AdoptOrphanRevisions`).
    async fn claim_revisions(
        &self,
        set: &StatefulSet,
        settings: &Settings,
    ) -> Result<Vec<Arc<ControllerRevision>>, ControllerError> {
        let selector = set.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &settings.namespace);
        let mut out = Vec::new();
        for revision in self.revisions.state() {
            if revision.metadata.namespace.as_deref() != Some(settings.namespace.as_str())
                || !label_selector_matches(&selector, revision.metadata.labels.as_ref())
            {
                continue;
            }
            match controller_of(&revision.metadata) {
                Some(owner) if owner.uid == settings.uid => out.push(revision),
                None => {
                    let name = revision.metadata.name.clone().unwrap_or_default();
                    let mut adopted = revision.metadata.owner_references.clone().unwrap_or_default();
                    adopted.push(settings.owner().controller_reference());
                    set_owner_references(&api, &name, &revision.metadata, adopted).await?;
                    out.push(revision);
                }
                _ => {}
            }
        }
        out.sort_by(|a, b| {
            (a.revision, &a.metadata.creation_timestamp, &a.metadata.name).cmp(&(
                b.revision,
                &b.metadata.creation_timestamp,
                &b.metadata.name,
            ))
        });
        Ok(out)
    }

    /// The update revision's name and template: the newest revision if it holds the template, an older one
    /// renumbered as the newest (a rollback), or a new one (`<set>-<hash>`, with the collision count bumped
    /// while the name is taken by another template).
    async fn update_revision(
        &self,
        set: &StatefulSet,
        settings: &Settings,
        revisions: &[Arc<ControllerRevision>],
        template: &PodTemplateSpec,
        collision_count: &mut i32,
    ) -> Result<(String, PodTemplateSpec), ControllerError> {
        let canonical = canonical_template(template);
        let equal: Vec<bool> = revisions
            .iter()
            .map(|r| revision_template(r).is_some_and(|t| canonical_template(&t) == canonical))
            .collect();
        let next = revisions.last().map_or(1, |r| r.revision + 1);
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &settings.namespace);
        match choose_revision(&equal) {
            RevisionChoice::Newest => {
                let name = revisions
                    .last()
                    .and_then(|r| r.metadata.name.clone())
                    .unwrap_or_default();
                return Ok((name, template.clone()));
            }
            RevisionChoice::Reuse(i) => {
                let name = revisions[i].metadata.name.clone().unwrap_or_default();
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"revision": next})),
                )
                .await
                .map_err(kube_error(format!(
                    "renumbering revision {}/{name}",
                    settings.namespace
                )))?;
                return Ok((name, template.clone()));
            }
            RevisionChoice::Create => {}
        }
        let data = revision_data(&canonical);
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        for _ in 0..10 {
            let hash = template_hash(&data, *collision_count);
            let name = format!("{}-{hash}", settings.name);
            labels.insert(REVISION_HASH.into(), hash);
            let revision = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    labels: Some(labels.clone()),
                    annotations: set.metadata.annotations.clone(),
                    owner_references: Some(vec![settings.owner().controller_reference()]),
                    ..Default::default()
                },
                data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
                    data.clone(),
                )),
                revision: next,
            };
            match api.create(&PostParams::default(), &revision).await {
                Ok(_) => return Ok((name, template.clone())),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let existing = api.get(&name).await.map_err(kube_error(format!(
                        "reading revision {}/{name}",
                        settings.namespace
                    )))?;
                    if revision_template(&existing).is_some_and(|t| canonical_template(&t) == canonical) {
                        return Ok((name, template.clone()));
                    }
                    *collision_count += 1;
                }
                Err(e) => {
                    return Err(kube_error(format!(
                        "recording a revision of statefulset {}/{}",
                        settings.namespace, settings.name
                    ))(e));
                }
            }
        }
        Err(ControllerError::Invalid(format!(
            "statefulset {}/{}: no free revision name",
            settings.namespace, settings.name
        )))
    }

    /// `truncateHistory`: revisions no pod uses, other than the current and update ones, beyond
    /// `revisionHistoryLimit`, oldest first.
    async fn truncate_history(
        &self,
        settings: &Settings,
        revisions: &[Arc<ControllerRevision>],
        pods: &[Arc<Pod>],
        live: &[&String],
    ) -> Result<(), ControllerError> {
        let in_use: BTreeSet<&str> = pods
            .iter()
            .map(|p| label(&p.metadata, REVISION_HASH))
            .chain(live.iter().map(|s| s.as_str()))
            .collect();
        let history: Vec<&Arc<ControllerRevision>> = revisions
            .iter()
            .filter(|r| !in_use.contains(r.metadata.name.as_deref().unwrap_or("")))
            .collect();
        let limit = usize::try_from(settings.history_limit).unwrap_or(usize::MAX);
        if history.len() <= limit {
            return Ok(());
        }
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &settings.namespace);
        for revision in &history[..history.len() - limit] {
            let name = revision.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    return Err(kube_error(format!(
                        "pruning revision {}/{name}",
                        settings.namespace
                    ))(e));
                }
            }
        }
        Ok(())
    }

    /// The claims of `ordinal` as `PodClaimIsStale` sees them: with WhenScaled=Delete, a claim still owned by an
    /// earlier pod of that name goes with it, and no new pod is made until it is gone.
    fn claims_stale(&self, settings: &Settings, ordinal: i32) -> bool {
        if settings.when_scaled != "Delete" {
            return false;
        }
        let pod_name = settings.pod_name(ordinal);
        let live_uid = self
            .pods
            .get(&ObjectRef::new(&pod_name).within(&settings.namespace))
            .and_then(|p| p.metadata.uid.clone())
            .unwrap_or_default();
        settings.claim_names(ordinal).iter().any(|(_, claim)| {
            self.claim(settings, claim).is_some_and(|c| {
                c.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.kind == "Pod" && r.name == pod_name && r.uid != live_uid)
            })
        })
    }

    fn claim(&self, settings: &Settings, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.get(&ObjectRef::new(name).within(&settings.namespace))
    }

    /// True when the pod's claims carry the owners the retention policy wants (`ClaimsMatchRetentionPolicy`).
    fn claims_conform(&self, settings: &Settings, pod: &Pod, ordinal: i32, condemned: bool) -> bool {
        settings.claim_names(ordinal).iter().all(|(_, claim)| {
            self.claim(settings, claim).is_none_or(|c| {
                let refs = c.metadata.owner_references.clone().unwrap_or_default();
                claim_owner_update(
                    &refs,
                    &settings.owner(),
                    &pod_owner(pod),
                    settings.policy(),
                    condemned,
                )
                .is_none()
            })
        })
    }

    fn view(&self, settings: &Settings, pod: &Pod) -> Option<PodView> {
        let name = pod.metadata.name.clone()?;
        let (_, ordinal) = parent_and_ordinal(&name)?;
        let phase = phase(pod).to_string();
        let running_and_ready = phase == "Running" && is_ready(pod);
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        // `identityMatches` and `storageMatches`.
        let identity = label(&pod.metadata, POD_NAME_LABEL) == name;
        let storage = settings.claim_names(ordinal).iter().all(|(t, claim)| {
            volumes.iter().any(|v| {
                &v.name == t
                    && v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| &c.claim_name == claim)
            })
        });
        let in_range = settings.in_range(ordinal);
        Some(PodView {
            ordinal,
            running_and_ready,
            available: running_and_ready && is_available(pod, settings.min_ready),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            revision: label(&pod.metadata, REVISION_HASH).to_string(),
            conforms: identity && storage && self.claims_conform(settings, pod, ordinal, !in_range),
            claims_conform_when_condemned: self.claims_conform(settings, pod, ordinal, true),
            phase,
            name,
        })
    }

    #[allow(clippy::too_many_arguments)] // a step, and the set's state it is taken in
    async fn carry_out(
        &self,
        key: &Key,
        set: &StatefulSet,
        settings: &Settings,
        pods: &[Arc<Pod>],
        step: &Step,
        done: &mut Done,
        current: (&String, &PodTemplateSpec),
        update: (&String, &PodTemplateSpec),
    ) -> Result<(), ControllerError> {
        let about = Involved::of(set);
        let set_name = &settings.name;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &settings.namespace);
        let pod_named = |name: &str| pods.iter().find(|p| p.metadata.name.as_deref() == Some(name));
        match step {
            Step::Create { ordinal, from_update } => {
                let (revision, template) = if *from_update { update } else { current };
                let pod = new_pod(settings, template, *ordinal, revision)?;
                let pod_name = settings.pod_name(*ordinal);
                if let Err(e) = self.create_claims(set, settings, *ordinal).await {
                    self.events
                        .warning(
                            &about,
                            "FailedCreate",
                            format!("create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                        )
                        .await;
                    return Err(e);
                }
                match api.create(&PostParams::default(), &pod).await {
                    Ok(_) => {
                        self.expect(key, Some(pod_name.clone()), None);
                        self.events
                            .normal(
                                &about,
                                "SuccessfulCreate",
                                format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                            )
                            .await;
                    }
                    // The cache has not seen it yet.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        done.waiting = Some(format!("pod {pod_name} exists, not yet seen"));
                    }
                    Err(e) => {
                        self.events
                            .warning(
                                &about,
                                "FailedCreate",
                                format!("create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                            )
                            .await;
                        return Err(kube_error(format!(
                            "creating pod {}/{pod_name}",
                            settings.namespace
                        ))(e));
                    }
                }
            }
            Step::Delete { name, why } => {
                let uid = pod_named(name).and_then(|p| p.metadata.uid.clone());
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {
                        self.expect(key, None, uid);
                        self.events
                            .normal(
                                &about,
                                "SuccessfulDelete",
                                format!("delete Pod {name} in StatefulSet {set_name} successful"),
                            )
                            .await;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        self.events
                            .warning(
                                &about,
                                "FailedDelete",
                                format!("delete Pod {name} in StatefulSet {set_name} failed error: {e}"),
                            )
                            .await;
                        return Err(kube_error(format!("deleting pod {}/{name}", settings.namespace))(
                            e,
                        ));
                    }
                }
                if *why == Why::Update {
                    done.deleted_for_update = true;
                }
            }
            Step::EnsureClaims { name } => {
                if let Some((_, ordinal)) = parent_and_ordinal(name) {
                    self.create_claims(set, settings, ordinal).await?;
                }
            }
            Step::Conform { name } | Step::ConformCondemnedClaims { name } => {
                let (Some(pod), Some((_, ordinal))) = (pod_named(name), parent_and_ordinal(name)) else {
                    return Ok(());
                };
                let condemned = !settings.in_range(ordinal);
                if matches!(step, Step::Conform { .. }) {
                    self.conform_pod(set, settings, pod, ordinal).await?;
                }
                self.conform_claims(settings, pod, ordinal, condemned).await?;
            }
        }
        Ok(())
    }

    /// `UpdateStatefulPod`: the identity labels put back, missing claims made. (Volumes of a pod cannot change
    /// once it exists, so a pod made without its claims' volumes keeps running without them, as in Kubernetes
    /// where that update is refused.)
    async fn conform_pod(
        &self,
        set: &StatefulSet,
        settings: &Settings,
        pod: &Pod,
        ordinal: i32,
    ) -> Result<(), ControllerError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.create_claims(set, settings, ordinal).await?;
        if label(&pod.metadata, POD_NAME_LABEL) == name
            && label(&pod.metadata, POD_INDEX_LABEL) == ordinal.to_string()
        {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &settings.namespace);
        let patch =
            json!({"metadata": {"labels": {POD_NAME_LABEL: name, POD_INDEX_LABEL: ordinal.to_string()}}});
        let about = Involved::of(set);
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.events
                    .normal(
                        &about,
                        "SuccessfulUpdate",
                        format!("update Pod {name} in StatefulSet {} successful", settings.name),
                    )
                    .await;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => {
                self.events
                    .warning(
                        &about,
                        "FailedUpdate",
                        format!(
                            "update Pod {name} in StatefulSet {} failed error: {e}",
                            settings.name
                        ),
                    )
                    .await;
                Err(kube_error(format!("updating pod {}/{name}", settings.namespace))(
                    e,
                ))
            }
        }
    }

    /// `UpdatePodClaimForRetentionPolicy`: each existing claim of the pod gets the owners the policy wants.
    async fn conform_claims(
        &self,
        settings: &Settings,
        pod: &Pod,
        ordinal: i32,
        condemned: bool,
    ) -> Result<(), ControllerError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &settings.namespace);
        for (_, claim_name) in settings.claim_names(ordinal) {
            let Some(claim) = self.claim(settings, &claim_name) else {
                continue;
            };
            let refs = claim.metadata.owner_references.clone().unwrap_or_default();
            if let Some(wanted) = claim_owner_update(
                &refs,
                &settings.owner(),
                &pod_owner(pod),
                settings.policy(),
                condemned,
            ) {
                set_owner_references(&api, &claim_name, &claim.metadata, wanted).await?;
            }
        }
        Ok(())
    }

    /// `createPersistentVolumeClaims`: every claim of the pod of `ordinal` that does not exist is made; one being
    /// deleted holds the pod back.
    async fn create_claims(
        &self,
        set: &StatefulSet,
        settings: &Settings,
        ordinal: i32,
    ) -> Result<(), ControllerError> {
        let selector = set
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &settings.namespace);
        let about = Involved::of(set);
        let pod_name = settings.pod_name(ordinal);
        for template in &settings.claim_templates {
            let Some(template_name) = template.metadata.name.as_deref() else {
                continue;
            };
            let claim_name = format!("{template_name}-{}-{ordinal}", settings.name);
            if let Some(existing) = self.claim(settings, &claim_name) {
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(ControllerError::Waiting(format!(
                        "pvc {claim_name} is being deleted"
                    )));
                }
                continue;
            }
            let claim = new_claim(settings, template, &selector, &claim_name);
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    self.events
                        .normal(
                            &about,
                            "SuccessfulCreate",
                            format!(
                                "create Claim {claim_name} Pod {pod_name} in StatefulSet {} success",
                                settings.name
                            ),
                        )
                        .await;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    self.events
                        .warning(
                            &about,
                            "FailedCreate",
                            format!(
                                "create Claim {claim_name} for Pod {pod_name} in StatefulSet {} failed error: {e}",
                                settings.name
                            ),
                        )
                        .await;
                    return Err(kube_error(format!(
                        "creating claim {}/{claim_name}",
                        settings.namespace
                    ))(e));
                }
            }
        }
        Ok(())
    }
}

/// Replaces an object's owner references, if it is still the object that was read (uid and resourceVersion).
async fn set_owner_references<K>(
    api: &Api<K>,
    name: &str,
    meta: &ObjectMeta,
    refs: Vec<OwnerReference>,
) -> Result<(), ControllerError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    // An update, as kube-controller-manager's (its role grants claims `update`, not `patch`); the uid and
    // resourceVersion read make it fail if the object changed since.
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": meta.uid,
        "resourceVersion": meta.resource_version}});
    match work::update(api, name, &patch).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(ControllerError::Waiting(format!(
            "{name} changed while its owners were set"
        ))),
        Err(e) => Err(kube_error(format!("setting the owners of {name}"))(e)),
    }
}

enum Seen {
    Set(Box<Change<StatefulSet>>),
    Pod(Box<Change<Pod>>),
    Claim(Box<Change<PersistentVolumeClaim>>),
    Revision(Box<Change<ControllerRevision>>),
}

fn key_of(meta: &ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// The set a StatefulSet-controlled object belongs to.
fn owning_set(meta: &ObjectMeta) -> Option<Key> {
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.kind == "StatefulSet" && r.controller == Some(true))?;
    Some((meta.namespace.clone()?, owner.name.clone()))
}

/// Runs the controller until its watches end.
pub async fn run(client: kube::Client) {
    let (sets_tx, mut sets_rx) = mpsc::unbounded_channel();
    let (pods_tx, mut pods_rx) = mpsc::unbounded_channel();
    let (claims_tx, mut claims_rx) = mpsc::unbounded_channel();
    let (revisions_tx, mut revisions_rx) = mpsc::unbounded_channel();
    let sets = work::reflect(Api::<StatefulSet>::all(client.clone()), sets_tx);
    let pods = work::reflect(Api::<Pod>::all(client.clone()), pods_tx);
    let claims = work::reflect(Api::<PersistentVolumeClaim>::all(client.clone()), claims_tx);
    let revisions = work::reflect(Api::<ControllerRevision>::all(client.clone()), revisions_tx);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = tokio::select! {
                Some(c) = sets_rx.recv() => Seen::Set(Box::new(c)),
                Some(c) = pods_rx.recv() => Seen::Pod(Box::new(c)),
                Some(c) = claims_rx.recv() => Seen::Claim(Box::new(c)),
                Some(c) = revisions_rx.recv() => Seen::Revision(Box::new(c)),
                else => return,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    let context = Context {
        events: Recorder::new(client.clone(), "statefulset-controller"),
        client,
        sets: sets.clone(),
        pods: pods.clone(),
        claims: claims.clone(),
        revisions: revisions.clone(),
        expectations: Mutex::new(BTreeMap::new()),
    };
    let all = {
        let sets = sets.clone();
        move || -> Vec<Key> { sets.state().iter().filter_map(|s| key_of(&s.metadata)).collect() }
    };
    let keys_of = {
        let all = all.clone();
        let sets = sets.clone();
        move |seen: Seen| -> Vec<Key> {
            match seen {
                Seen::Set(c) => match *c {
                    Change::Object(s) => key_of(&s.metadata).into_iter().collect(),
                    Change::Relisted => all(),
                },
                Seen::Pod(c) => match *c {
                    Change::Object(p) if controller_of(&p.metadata).is_some() => {
                        owning_set(&p.metadata).into_iter().collect()
                    }
                    // An orphan: the sets that might adopt it.
                    Change::Object(p) => {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let Some((parent, _)) = parent_and_ordinal(&name) else {
                            return vec![];
                        };
                        let namespace = p.metadata.namespace.clone().unwrap_or_default();
                        sets.get(&ObjectRef::new(parent).within(&namespace))
                            .filter(|s| {
                                s.spec.as_ref().is_some_and(|spec| {
                                    label_selector_matches(&spec.selector, p.metadata.labels.as_ref())
                                })
                            })
                            .map(|_| (namespace, parent.to_string()))
                            .into_iter()
                            .collect()
                    }
                    Change::Relisted => all(),
                },
                Seen::Claim(c) => match *c {
                    Change::Object(claim) => owning_set(&claim.metadata).into_iter().collect(),
                    Change::Relisted => all(),
                },
                Seen::Revision(c) => match *c {
                    Change::Object(r) => owning_set(&r.metadata).into_iter().collect(),
                    Change::Relisted => all(),
                },
            }
        }
    };
    let ready =
        move || work::ready(&sets) && work::ready(&pods) && work::ready(&claims) && work::ready(&revisions);
    work::run_queue("statefulset", rx, keys_of, all, ready, |key| {
        context.reconcile(key)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ordinal: i32, revision: &str, ready: bool) -> PodView {
        PodView {
            name: format!("web-{ordinal}"),
            ordinal,
            phase: "Running".into(),
            running_and_ready: ready,
            available: ready,
            terminating: false,
            revision: revision.into(),
            conforms: true,
            claims_conform_when_condemned: true,
        }
    }

    fn params(replicas: i32) -> Params {
        Params {
            start: 0,
            replicas,
            monotonic: true,
            on_delete: false,
            partition: Some(0),
            status_current_replicas: 0,
            update_revision: "r1".into(),
            stale_claims: BTreeSet::new(),
        }
    }

    fn create(ordinal: i32) -> Step {
        Step::Create {
            ordinal,
            from_update: true,
        }
    }

    fn delete(ordinal: i32, why: Why) -> Step {
        Step::Delete {
            name: format!("web-{ordinal}"),
            why,
        }
    }

    #[test]
    fn names_give_parent_and_ordinal() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-db-12"), Some(("my-db", 12)));
        assert_eq!(parent_and_ordinal("web-x"), None);
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
    }

    #[test]
    fn ordered_ready_creates_one_pod_after_the_ones_before_it_are_ready() {
        let p = params(3);
        assert_eq!(plan(&p, &[]), vec![create(0)]);
        assert_eq!(
            plan(&p, &[pod(0, "r1", false)]),
            vec![],
            "web-0 not ready: nothing"
        );
        assert_eq!(plan(&p, &[pod(0, "r1", true)]), vec![create(1)]);
        let mut pending = pod(1, "r1", false);
        pending.phase = "Pending".into();
        assert_eq!(
            plan(&p, &[pod(0, "r1", true), pending]),
            vec![Step::EnsureClaims { name: "web-1".into() }]
        );
        // Parallel: every missing pod at once.
        let parallel = Params {
            monotonic: false,
            ..params(3)
        };
        assert_eq!(
            plan(&parallel, &[pod(0, "r1", false)]),
            vec![create(1), create(2)]
        );
        // Ordinals from spec.ordinals.start.
        let started = Params {
            start: 5,
            ..params(1)
        };
        assert_eq!(plan(&started, &[]), vec![create(5)]);
    }

    #[test]
    fn a_finished_pod_is_deleted_to_be_made_again() {
        let mut failed = pod(0, "r1", false);
        failed.phase = "Failed".into();
        assert_eq!(
            plan(&params(2), &[failed.clone()]),
            vec![delete(0, Why::Finished)]
        );
        failed.terminating = true;
        assert_eq!(plan(&params(2), &[failed]), vec![], "waits for it to go");
    }

    #[test]
    fn scale_down_takes_the_highest_ordinal_first_when_the_rest_are_ready() {
        let p = params(1);
        let all_ready = [pod(0, "r1", true), pod(1, "r1", true), pod(2, "r1", true)];
        assert_eq!(plan(&p, &all_ready), vec![delete(2, Why::ScaleDown)]);
        let mut going = all_ready.clone();
        going[2].terminating = true;
        assert_eq!(plan(&p, &going), vec![], "one at a time");
        let not_ready = [pod(0, "r1", false), pod(1, "r1", true)];
        assert_eq!(plan(&p, &not_ready), vec![], "a replica is not ready");
        // The first unhealthy pod may go while unhealthy.
        let unhealthy = [pod(0, "r1", true), pod(1, "r1", false)];
        assert_eq!(plan(&p, &unhealthy), vec![delete(1, Why::ScaleDown)]);
        // A condemned pod whose claims lack their owners is put right first.
        let mut owed = all_ready.clone();
        owed[1].claims_conform_when_condemned = false;
        assert_eq!(
            plan(&p, &owed),
            vec![
                Step::ConformCondemnedClaims { name: "web-1".into() },
                delete(2, Why::ScaleDown)
            ]
        );
    }

    #[test]
    fn rolling_update_goes_from_the_highest_ordinal_down_to_the_partition() {
        let p = Params {
            partition: Some(1),
            update_revision: "r2".into(),
            ..params(3)
        };
        let old = [pod(0, "r1", true), pod(1, "r1", true), pod(2, "r1", true)];
        assert_eq!(plan(&p, &old), vec![delete(2, Why::Update)]);
        // web-2 came back on r2 but is not ready: wait.
        let recreated = [pod(0, "r1", true), pod(1, "r1", true), pod(2, "r2", false)];
        assert_eq!(plan(&p, &recreated), vec![]);
        let ready = [pod(0, "r1", true), pod(1, "r1", true), pod(2, "r2", true)];
        assert_eq!(plan(&p, &ready), vec![delete(1, Why::Update)]);
        // Below the partition nothing is replaced, and a missing pod there is made from the current revision.
        let done = [pod(0, "r1", true), pod(1, "r2", true), pod(2, "r2", true)];
        assert_eq!(plan(&p, &done), vec![]);
        assert_eq!(
            plan(&p, &done[1..]),
            vec![Step::Create {
                ordinal: 0,
                from_update: false
            }]
        );
        // OnDelete replaces nothing.
        let on_delete = Params {
            on_delete: true,
            partition: None,
            update_revision: "r2".into(),
            ..params(3)
        };
        assert_eq!(plan(&on_delete, &old), vec![]);
    }

    #[test]
    fn stale_claims_hold_a_pod_back() {
        let p = Params {
            stale_claims: [1].into(),
            ..params(2)
        };
        assert_eq!(plan(&p, &[pod(0, "r1", true)]), vec![]);
    }

    #[test]
    fn status_counts_follow_kubernetes() {
        let mut terminating = pod(2, "r2", true);
        terminating.terminating = true;
        let mut unborn = pod(3, "r2", false);
        unborn.phase = String::new();
        let pods = [pod(0, "r1", true), pod(1, "r2", false), terminating, unborn];
        assert_eq!(
            counts(&pods, "r1", "r2"),
            Counts {
                replicas: 3,
                ready: 2,
                available: 2,
                current: 1,
                updated: 1
            }
        );
    }

    fn owner(kind: &'static str, name: &str, uid: &str) -> Owner {
        Owner {
            api_version: if kind == "Pod" { "v1" } else { "apps/v1" },
            kind,
            name: name.into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn claims_get_the_owners_the_retention_policy_wants() {
        let set = owner("StatefulSet", "web", "s1");
        let pod = owner("Pod", "web-2", "p1");
        let uids = |refs: Option<Vec<OwnerReference>>| -> Option<Vec<String>> {
            refs.map(|r| r.into_iter().map(|r| r.uid).collect())
        };
        assert_eq!(
            claim_owner_update(&[], &set, &pod, ("Retain", "Retain"), true),
            None
        );
        assert_eq!(
            uids(claim_owner_update(&[], &set, &pod, ("Delete", "Retain"), false)),
            Some(vec!["s1".into()])
        );
        assert_eq!(
            claim_owner_update(&[], &set, &pod, ("Retain", "Delete"), false),
            None
        );
        assert_eq!(
            uids(claim_owner_update(&[], &set, &pod, ("Retain", "Delete"), true)),
            Some(vec!["p1".into()])
        );
        // Delete/Delete: the set owns it while in range, the pod once condemned.
        let owned_by_set = vec![set.controller_reference()];
        assert_eq!(
            claim_owner_update(&owned_by_set, &set, &pod, ("Delete", "Delete"), false),
            None
        );
        assert_eq!(
            uids(claim_owner_update(
                &owned_by_set,
                &set,
                &pod,
                ("Delete", "Delete"),
                true
            )),
            Some(vec!["p1".into()])
        );
        // A reference to an earlier pod of the same name: left alone.
        let stale = vec![owner("Pod", "web-2", "old").controller_reference()];
        assert_eq!(
            claim_owner_update(&stale, &set, &pod, ("Retain", "Delete"), true),
            None
        );
        // Another controller's claim only loses our references.
        let mut foreign = owner("StatefulSet", "other", "o1").controller_reference();
        foreign.kind = "Other".into();
        let shared = vec![foreign.clone(), set.controller_reference()];
        assert_eq!(
            uids(claim_owner_update(
                &shared,
                &set,
                &pod,
                ("Delete", "Retain"),
                false
            )),
            Some(vec!["o1".into()])
        );
        assert_eq!(
            claim_owner_update(&[foreign], &set, &pod, ("Delete", "Retain"), false),
            None
        );
        // Retain/Retain removes references left from an earlier policy.
        assert_eq!(
            uids(claim_owner_update(
                &owned_by_set,
                &set,
                &pod,
                ("Retain", "Retain"),
                false
            )),
            Some(vec![])
        );
    }

    #[test]
    fn revisions_are_reused_on_rollback() {
        assert_eq!(choose_revision(&[]), RevisionChoice::Create);
        assert_eq!(choose_revision(&[false, false]), RevisionChoice::Create);
        assert_eq!(choose_revision(&[false, true]), RevisionChoice::Newest);
        assert_eq!(choose_revision(&[true, false]), RevisionChoice::Reuse(0));
    }

    #[test]
    fn pods_get_identity_storage_and_revision() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}],
                    "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "db"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}))
        .unwrap();
        let settings = Settings::of(&set);
        let template = set.spec.as_ref().unwrap().template.clone();
        let made = new_pod(&settings, &template, 2, "web-abc").unwrap();
        let made = serde_json::to_value(&made).unwrap();
        assert_eq!(made["metadata"]["name"], "web-2");
        assert_eq!(made["metadata"]["labels"][POD_NAME_LABEL], "web-2");
        assert_eq!(made["metadata"]["labels"][POD_INDEX_LABEL], "2");
        assert_eq!(made["metadata"]["labels"][REVISION_HASH], "web-abc");
        assert_eq!(made["metadata"]["ownerReferences"][0]["blockOwnerDeletion"], true);
        assert_eq!(made["spec"]["hostname"], "web-2");
        assert_eq!(made["spec"]["subdomain"], "web");
        assert_eq!(
            made["spec"]["volumes"],
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-2"}},
                {"name": "cache", "emptyDir": {}}])
        );
        let templates = settings.claim_templates.clone();
        let selector = set.spec.as_ref().unwrap().selector.match_labels.clone().unwrap();
        let claim = new_claim(&settings, &templates[0], &selector, "data-web-2");
        assert_eq!(claim.metadata.name.as_deref(), Some("data-web-2"));
        assert_eq!(
            claim.metadata.labels.unwrap(),
            [
                ("app".to_string(), "web".to_string()),
                ("tier".into(), "db".into())
            ]
            .into()
        );
        assert_eq!(claim.metadata.owner_references, None, "Retain: no owner");
    }

    #[test]
    fn revision_data_round_trips_the_template() {
        let template: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}))
            .unwrap();
        let data = revision_data(&canonical_template(&template));
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let revision = ControllerRevision {
            data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(data)),
            ..Default::default()
        };
        assert_eq!(
            revision_template(&revision).map(|t| canonical_template(&t)),
            Some(canonical_template(&template))
        );
    }
}
