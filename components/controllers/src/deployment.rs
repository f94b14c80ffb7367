//! The Deployment controller (kube-controller-manager's): a ReplicaSet per pod template (`<name>-<hash>`, the
//! hash also a `pod-template-hash` label of its pods), revisions in `deployment.kubernetes.io/revision`
//! annotations (what `kubectl rollout history|undo` read), RollingUpdate within maxSurge/maxUnavailable or
//! Recreate, `paused`, old ReplicaSets kept up to `revisionHistoryLimit`, and the status and conditions
//! (`Available`, `Progressing` with `progressDeadlineSeconds`) `kubectl rollout status` waits on.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::events::{Involved, Recorder, time_now};
use crate::replicaset::is_active;
use crate::work::{self, Change, controller_of};
use crate::{ControllerError, kube_error};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";

type Key = (String, String);

/// Kubernetes' template hash: FNV-1a (32 bits) of the template (and the collision count), its decimal digits
/// mapped onto the alphabet Kubernetes uses for generated names.
pub fn template_hash(template: &Value, collision_count: i32) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(template.to_string().as_bytes());
    if collision_count > 0 {
        feed(&collision_count.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// Drops what Go's JSON leaves out of a non-pointer field (false, 0, "", empty objects and lists, null): templates
/// that went through protobuf carry such zero values, and Kubernetes compares templates as typed Go values
/// (`Semantic.DeepEqual`), where they are the same as unset.
pub(crate) fn without_zero_values(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                without_zero_values(v);
            }
            map.retain(|_, v| {
                !matches!(v, Value::Null | Value::Bool(false))
                    && v != &json!(0)
                    && v != &json!("")
                    && !v.as_object().is_some_and(|o| o.is_empty())
                    && !v.as_array().is_some_and(|a| a.is_empty())
            });
        }
        Value::Array(items) => items.iter_mut().for_each(without_zero_values),
        _ => {}
    }
}

/// A template without its `pod-template-hash` label, as JSON (what a ReplicaSet's template is compared by).
fn bare_template(template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or_default();
    without_zero_values(&mut value);
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty()
            && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("labels");
        }
    }
    value
}

/// maxSurge or maxUnavailable for `replicas`: a number, or a percentage rounded up (surge) or down.
pub fn resolve(value: Option<&IntOrString>, default_percent: i32, replicas: i32, round_up: bool) -> i32 {
    let percent = |p: i32| {
        let exact = i64::from(p) * i64::from(replicas);
        let whole = if round_up { (exact + 99) / 100 } else { exact / 100 };
        i32::try_from(whole).unwrap_or(i32::MAX)
    };
    match value {
        None => percent(default_percent),
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => s.trim_end_matches('%').parse::<i32>().map(percent).unwrap_or(0),
    }
}

fn revision_of(set: &ReplicaSet) -> i64 {
    set.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas_of(set: &ReplicaSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(
    set: &ReplicaSet,
    pick: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>,
) -> i32 {
    set.status.as_ref().and_then(pick).unwrap_or(0)
}

/// The rolling update's next step: (new ReplicaSet's replicas, [(old ReplicaSet index, its replicas)]).
/// `sets` are the old ReplicaSets, oldest first, as (spec replicas, available replicas).
pub fn rolling_step(
    replicas: i32,
    surge: i32,
    unavailable: i32,
    new: (i32, i32),
    old: &[(i32, i32)],
) -> (Option<i32>, Vec<(usize, i32)>) {
    let (new_replicas, new_available) = new;
    let total: i32 = new_replicas + old.iter().map(|o| o.0).sum::<i32>();
    // Scale the new ReplicaSet up as far as maxSurge allows (or down, if it has more than wanted).
    if new_replicas > replicas {
        return (Some(replicas), vec![]);
    }
    if new_replicas < replicas {
        let room = replicas + surge - total;
        if room > 0 {
            return (Some(new_replicas + room.min(replicas - new_replicas)), vec![]);
        }
    }
    // Scale old ones down as far as maxUnavailable allows: unhealthy replicas first, then available ones.
    let min_available = replicas - unavailable;
    let new_unavailable = new_replicas - new_available;
    let mut budget = total - min_available - new_unavailable;
    if budget <= 0 {
        return (None, vec![]);
    }
    let mut targets: Vec<i32> = old.iter().map(|o| o.0).collect();
    for (i, (spec, available)) in old.iter().enumerate() {
        let unhealthy = (spec - available).max(0).min(budget);
        targets[i] -= unhealthy;
        budget -= unhealthy;
    }
    let available_total: i32 = new_available + old.iter().map(|o| o.1).sum::<i32>();
    let mut more = (available_total - min_available).min(budget).max(0);
    for (i, target) in targets.iter_mut().enumerate() {
        let take = (*target).min(more).min(old[i].1);
        *target -= take;
        more -= take;
    }
    let changes: Vec<(usize, i32)> = targets
        .iter()
        .enumerate()
        .filter(|(i, t)| **t != old[*i].0)
        .map(|(i, t)| (i, *t))
        .collect();
    (None, changes)
}

struct Context {
    client: kube::Client,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    events: Recorder,
}

impl Context {
    async fn scale(&self, deployment: &Deployment, set: &ReplicaSet, to: i32) -> Result<(), ControllerError> {
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        let name = set.metadata.name.clone().unwrap_or_default();
        let from = replicas_of(set);
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &namespace);
        let patch = json!({"spec": {"replicas": to}, "metadata": {"annotations": {
            "deployment.kubernetes.io/desired-replicas": deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).to_string()}}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_error(format!("scaling replicaset {namespace}/{name}")))?;
        let direction = if to > from { "up" } else { "down" };
        self.events
            .normal(
                &Involved::of(deployment),
                "ScalingReplicaSet",
                format!("Scaled {direction} replica set {name} to {to} from {from}"),
            )
            .await;
        Ok(())
    }

    async fn reconcile(&self, (namespace, name): Key) -> Result<(), ControllerError> {
        let Some(deployment) = self.deployments.get(&ObjectRef::new(&name).within(&namespace)) else {
            return Ok(());
        };
        if deployment.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let uid = deployment.metadata.uid.clone().unwrap_or_default();
        let spec = deployment.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1);
        let mut sets: Vec<Arc<ReplicaSet>> = self
            .sets
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .filter(|s| controller_of(&s.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        sets.sort_by_key(|s| (revision_of(s), s.metadata.creation_timestamp.clone().map(|t| t.0)));
        let template = bare_template(Some(&spec.template));
        let new_index = sets
            .iter()
            .position(|s| bare_template(s.spec.as_ref().and_then(|s| s.template.as_ref())) == template);
        let max_revision = sets.iter().map(|s| revision_of(s)).max().unwrap_or(0);
        let paused = spec.paused.unwrap_or(false);
        let about = Involved::of(deployment.as_ref());
        let sets_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &namespace);

        let Some(new_index) = new_index else {
            if paused {
                return self.write_status(&deployment, &sets, None, false).await;
            }
            // A new template: its ReplicaSet, at the next revision, starting empty (the rollout scales it).
            let collisions = deployment
                .status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0);
            let hash = template_hash(&template, collisions);
            let set_name = format!("{name}-{hash}");
            let mut labels = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.clone());
            let mut selector = serde_json::to_value(&spec.selector).unwrap_or_default();
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let mut set_template = serde_json::to_value(&spec.template).unwrap_or_default();
            set_template["metadata"]["labels"] = json!(labels);
            let mut annotations: BTreeMap<String, String> = deployment
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k != "kubectl.kubernetes.io/last-applied-configuration" && k != REVISION)
                .collect();
            annotations.insert(REVISION.into(), (max_revision + 1).to_string());
            annotations.insert(
                "deployment.kubernetes.io/desired-replicas".into(),
                replicas.to_string(),
            );
            let set = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": set_name, "namespace": namespace, "labels": labels, "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                        "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"replicas": 0, "minReadySeconds": spec.min_ready_seconds.unwrap_or(0), "selector": selector, "template": set_template},
            });
            let set: ReplicaSet = serde_json::from_value(set)
                .map_err(|e| ControllerError::Invalid(format!("replicaset for {namespace}/{name}: {e}")))?;
            return match sets_api.create(&PostParams::default(), &set).await {
                Ok(_) => {
                    self.events
                        .normal(
                            &about,
                            "ScalingReplicaSet",
                            format!("Created new replica set \"{set_name}\""),
                        )
                        .await;
                    Ok(())
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // The name is taken by a ReplicaSet with another template: count a collision, hash again.
                    let api: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
                    let patch = json!({"status": {"collisionCount": collisions + 1}});
                    work::update_status(&api, &name, &patch)
                        .await
                        .map_err(kube_error(format!(
                            "counting a hash collision of {namespace}/{name}"
                        )))?;
                    Ok(())
                }
                Err(e) => Err(kube_error(format!(
                    "creating a replicaset for {namespace}/{name}"
                ))(e)),
            };
        };
        let new_set = sets.remove(new_index);
        let old = sets;
        // Back to an older template (`rollout undo`): its ReplicaSet becomes the newest revision.
        if revision_of(&new_set) < max_revision {
            let set_name = new_set.metadata.name.clone().unwrap_or_default();
            let patch = json!({"metadata": {"annotations": {REVISION: (max_revision + 1).to_string()}}});
            sets_api
                .patch(&set_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_error(format!(
                    "updating the revision of {namespace}/{set_name}"
                )))?;
            self.events
                .normal(
                    &about,
                    "DeploymentRollback",
                    format!(
                        "Rolled back deployment \"{name}\" to revision {}",
                        revision_of(&new_set)
                    ),
                )
                .await;
            return Ok(());
        }
        // The Deployment carries its current revision too (`kubectl rollout undo` replaces its annotations).
        let revision = revision_of(&new_set).to_string();
        if deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            != Some(&revision)
        {
            let api: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
            let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
            work::update(&api, &name, &patch)
                .await
                .map_err(kube_error(format!(
                    "annotating deployment {namespace}/{name} with its revision"
                )))?;
        }
        // The change cause recorded on the Deployment goes with the revision it describes (`rollout history`).
        const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
        let cause = deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CHANGE_CAUSE));
        if cause.is_some()
            && new_set
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CHANGE_CAUSE))
                != cause
        {
            let set_name = new_set.metadata.name.clone().unwrap_or_default();
            let patch = json!({"metadata": {"annotations": {CHANGE_CAUSE: cause}}});
            sets_api
                .patch(&set_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_error(format!(
                    "annotating replicaset {namespace}/{set_name}"
                )))?;
        }
        let active_old: Vec<&Arc<ReplicaSet>> = old.iter().filter(|s| replicas_of(s) > 0).collect();
        if paused {
            // Paused: no rollout, but a scale of a settled deployment still applies.
            if active_old.is_empty() && replicas_of(&new_set) != replicas {
                self.scale(&deployment, &new_set, replicas).await?;
            }
            return self.write_status(&deployment, &old, Some(&new_set), false).await;
        }
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        if recreate {
            for set in &active_old {
                self.scale(&deployment, set, 0).await?;
            }
            let old_uids: Vec<String> = old.iter().filter_map(|s| s.metadata.uid.clone()).collect();
            let old_pods_left = self
                .pods
                .state()
                .iter()
                .filter(|p| is_active(p))
                .any(|p| controller_of(&p.metadata).is_some_and(|o| old_uids.contains(&o.uid)));
            if active_old.is_empty() && !old_pods_left && replicas_of(&new_set) != replicas {
                self.scale(&deployment, &new_set, replicas).await?;
            }
        } else {
            let rolling = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
            let surge = resolve(rolling.and_then(|r| r.max_surge.as_ref()), 25, replicas, true);
            let mut unavailable = resolve(
                rolling.and_then(|r| r.max_unavailable.as_ref()),
                25,
                replicas,
                false,
            );
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            let old_counts: Vec<(i32, i32)> = old
                .iter()
                .map(|s| (replicas_of(s), status_of(s, |st| st.available_replicas)))
                .collect();
            let new_counts = (
                replicas_of(&new_set),
                status_of(&new_set, |st| st.available_replicas),
            );
            let (scale_new, scale_old) = rolling_step(
                replicas,
                surge,
                unavailable.min(replicas),
                new_counts,
                &old_counts,
            );
            if let Some(to) = scale_new {
                self.scale(&deployment, &new_set, to).await?;
            }
            for (i, to) in scale_old {
                self.scale(&deployment, &old[i], to).await?;
            }
        }
        self.clean_up_history(&spec, &old, &sets_api).await?;
        self.write_status(&deployment, &old, Some(&new_set), true).await
    }

    /// Deletes the oldest empty old ReplicaSets beyond `revisionHistoryLimit` (default 10).
    async fn clean_up_history(
        &self,
        spec: &k8s_openapi::api::apps::v1::DeploymentSpec,
        old: &[Arc<ReplicaSet>],
        api: &Api<ReplicaSet>,
    ) -> Result<(), ControllerError> {
        let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
        let empty: Vec<&Arc<ReplicaSet>> = old
            .iter()
            .filter(|s| {
                replicas_of(s) == 0
                    && status_of(s, |st| Some(st.replicas)) == 0
                    && s.metadata.deletion_timestamp.is_none()
            })
            .collect();
        for set in empty.iter().take(empty.len().saturating_sub(limit)) {
            let set_name = set.metadata.name.clone().unwrap_or_default();
            match api.delete(&set_name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(kube_error(format!("deleting old replicaset {set_name}"))(e)),
            }
        }
        Ok(())
    }

    async fn write_status(
        &self,
        deployment: &Deployment,
        old: &[Arc<ReplicaSet>],
        new: Option<&Arc<ReplicaSet>>,
        progressing: bool,
    ) -> Result<(), ControllerError> {
        let spec = deployment.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1);
        let all: Vec<&Arc<ReplicaSet>> = old.iter().chain(new).collect();
        let sum = |pick: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>| -> i32 {
            all.iter().map(|s| status_of(s, pick)).sum()
        };
        let total = sum(|s| Some(s.replicas));
        let available = sum(|s| s.available_replicas);
        let ready = sum(|s| s.ready_replicas);
        let updated = new.map_or(0, |s| status_of(s, |st| Some(st.replicas)));
        let rolling = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
        let max_unavailable = if spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate") {
            0
        } else {
            resolve(
                rolling.and_then(|r| r.max_unavailable.as_ref()),
                25,
                replicas,
                false,
            )
        };
        let current = deployment.status.clone().unwrap_or_default();
        let previous: BTreeMap<String, k8s_openapi::api::apps::v1::DeploymentCondition> = current
            .conditions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.type_.clone(), c))
            .collect();
        let now = time_now();
        let condition = |type_: &str, status: &str, reason: &str, message: String, moved: bool| {
            let before = previous.get(type_);
            let same = before.is_some_and(|b| b.status == status && b.reason.as_deref() == Some(reason));
            let transition = match before {
                Some(b) if b.status == status => b
                    .last_transition_time
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| now.clone()),
                _ => now.clone(),
            };
            let update = match before {
                Some(b) if same && !moved => b
                    .last_update_time
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| now.clone()),
                _ => now.clone(),
            };
            json!({"type": type_, "status": status, "reason": reason, "message": message,
                "lastUpdateTime": update, "lastTransitionTime": transition})
        };
        let available_condition = if available >= replicas - max_unavailable {
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                false,
            )
        } else {
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                false,
            )
        };
        let new_name = new.and_then(|s| s.metadata.name.clone()).unwrap_or_default();
        let complete = new.is_some() && updated == replicas && available >= replicas && total == updated;
        let moved = current.updated_replicas.unwrap_or(0) != updated
            || current.available_replicas.unwrap_or(0) != available
            || current.replicas.unwrap_or(0) != total
            || current.observed_generation != deployment.metadata.generation;
        let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
        let stalled_since = previous
            .get("Progressing")
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| t.0.as_second());
        let now_seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let progressing_condition = if spec.paused.unwrap_or(false) {
            condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                false,
            )
        } else if complete {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                false,
            )
        } else if !moved && progressing && stalled_since.is_some_and(|s| now_seconds - s > deadline) {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                false,
            )
        } else {
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                moved,
            )
        };
        let status = json!({
            "observedGeneration": deployment.metadata.generation,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": (total - available).max(replicas - available).max(0),
            "conditions": [available_condition, progressing_condition],
        });
        let mut comparable = status.clone();
        let current_json = serde_json::to_value(&current).unwrap_or_default();
        // Times alone do not make a new status.
        for (i, c) in current_json
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if let Some(slot) = comparable.pointer_mut(&format!("/conditions/{i}")) {
                for t in ["lastUpdateTime", "lastTransitionTime"] {
                    if let Some(v) = c.get(t) {
                        slot[t] = v.clone();
                    }
                }
            }
        }
        if work::covers(&current_json, &comparable) {
            return Ok(());
        }
        let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
        match work::update_status(&api, &name, &json!({"status": status})).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(kube_error(format!(
                "writing the status of deployment {namespace}/{name}"
            ))(e)),
        }
    }
}

enum Seen {
    Deployment(Box<Change<Deployment>>),
    Set(Box<Change<ReplicaSet>>),
    Pod(Box<Change<Pod>>),
}

/// Runs the controller until its watches end.
pub async fn run(client: kube::Client) {
    let (deployments_tx, mut deployments_rx) = mpsc::unbounded_channel();
    let (sets_tx, mut sets_rx) = mpsc::unbounded_channel();
    let (pods_tx, mut pods_rx) = mpsc::unbounded_channel();
    let deployments = work::reflect(Api::<Deployment>::all(client.clone()), deployments_tx);
    let sets = work::reflect(Api::<ReplicaSet>::all(client.clone()), sets_tx);
    let pods = work::reflect(Api::<Pod>::all(client.clone()), pods_tx);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = tokio::select! {
                Some(c) = deployments_rx.recv() => Seen::Deployment(Box::new(c)),
                Some(c) = sets_rx.recv() => Seen::Set(Box::new(c)),
                Some(c) = pods_rx.recv() => Seen::Pod(Box::new(c)),
                else => return,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    let context = Context {
        events: Recorder::new(client.clone(), "deployment-controller"),
        client,
        deployments: deployments.clone(),
        sets: sets.clone(),
        pods: pods.clone(),
    };
    let all = {
        let deployments = deployments.clone();
        move || -> Vec<Key> {
            deployments
                .state()
                .iter()
                .filter_map(|d| Some((d.metadata.namespace.clone()?, d.metadata.name.clone()?)))
                .collect()
        }
    };
    let keys_of = {
        let all = all.clone();
        let sets = sets.clone();
        move |seen: Seen| -> Vec<Key> {
            let owner_deployment =
                |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| -> Vec<Key> {
                    match (controller_of(meta), meta.namespace.clone()) {
                        (Some(o), Some(ns)) if o.kind == "Deployment" => vec![(ns, o.name.clone())],
                        _ => vec![],
                    }
                };
            match seen {
                Seen::Deployment(c) => match *c {
                    Change::Object(d) => d
                        .metadata
                        .namespace
                        .clone()
                        .zip(d.metadata.name.clone())
                        .into_iter()
                        .collect(),
                    Change::Relisted => all(),
                },
                Seen::Set(c) => match *c {
                    Change::Object(s) => owner_deployment(&s.metadata),
                    Change::Relisted => all(),
                },
                // Pods matter to a Recreate rollout (old pods must be gone): through their ReplicaSet.
                Seen::Pod(c) => match *c {
                    Change::Object(p) => {
                        match (controller_of(&p.metadata), p.metadata.namespace.as_deref()) {
                            (Some(o), Some(ns)) if o.kind == "ReplicaSet" => sets
                                .get(&ObjectRef::new(&o.name).within(ns))
                                .map(|s| owner_deployment(&s.metadata))
                                .unwrap_or_default(),
                            _ => vec![],
                        }
                    }
                    Change::Relisted => all(),
                },
            }
        }
    };
    let ready = move || work::ready(&deployments) && work::ready(&sets) && work::ready(&pods);
    work::run_queue("deployment", rx, keys_of, all, ready, |key| {
        context.reconcile(key)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailable_round_as_kubernetes_does() {
        assert_eq!(resolve(None, 25, 10, true), 3);
        assert_eq!(resolve(None, 25, 10, false), 2);
        assert_eq!(resolve(Some(&IntOrString::String("50%".into())), 25, 3, true), 2);
        assert_eq!(resolve(Some(&IntOrString::Int(0)), 25, 3, true), 0);
        assert_eq!(
            template_hash(&json!({"a": 1}), 0),
            template_hash(&json!({"a": 1}), 0)
        );
        assert_ne!(
            template_hash(&json!({"a": 1}), 0),
            template_hash(&json!({"a": 1}), 1)
        );
        assert!(
            template_hash(&json!({}), 0)
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }

    #[test]
    fn a_rolling_update_stays_within_surge_and_unavailable() {
        // 4 replicas, maxSurge 1, maxUnavailable 1: simulate the rollout step by step, pods becoming available
        // at once, and check the bounds at every step.
        let (replicas, surge, unavailable) = (4, 1, 1);
        let mut new = 0;
        let mut old = 4;
        for _ in 0..20 {
            let (scale_new, scale_old) =
                rolling_step(replicas, surge, unavailable, (new, new), &[(old, old)]);
            if let Some(n) = scale_new {
                new = n;
            }
            for (_, o) in scale_old {
                old = o;
            }
            assert!(new + old <= replicas + surge, "surge exceeded: {new}+{old}");
            assert!(new + old >= replicas - unavailable, "too few: {new}+{old}");
            if new == replicas && old == 0 {
                return;
            }
        }
        panic!("the rollout did not finish: new {new}, old {old}");
    }

    #[test]
    fn unavailable_new_pods_hold_the_old_ones() {
        // New pods never become available: old ones are kept at replicas - maxUnavailable.
        let (scale_new, scale_old) = rolling_step(4, 1, 1, (1, 0), &[(4, 4)]);
        assert_eq!(scale_new, None);
        assert_eq!(scale_old, vec![(0, 3)]);
        let (scale_new, scale_old) = rolling_step(4, 1, 1, (2, 0), &[(3, 3)]);
        assert_eq!(
            (scale_new, scale_old),
            (None, vec![]),
            "3 available = the minimum: nothing more goes"
        );
    }
}
