//! The ReplicaSet controller (kube-controller-manager's): keeps `spec.replicas` active pods from the template,
//! adopting orphans its selector matches and releasing pods it owns that no longer match; deletes the least
//! useful pods first (unscheduled, then pending, then not ready, then the newest); writes the replica counts to
//! its status.
//!
//! Expectations, as in Kubernetes: after creating or deleting pods, the ReplicaSet waits for its cache to see them
//! before counting again, so a lagging cache never makes it create twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use tokio::sync::mpsc;

use crate::events::{Involved, Recorder};
use crate::work::{self, Change, controller_of, label_selector_matches};
use crate::{ControllerError, kube_error};

type Key = (String, String);

/// How long pods created or deleted may stay unseen before the controller stops waiting for them.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Expectation {
    created: BTreeSet<String>,
    deleted: BTreeSet<String>,
    since: Option<Instant>,
}

pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready for at least `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    since.is_some_and(|s| now - s >= i64::from(min_ready_seconds))
}

/// The order in which pods are deleted when scaling down: the least useful first.
pub fn deletion_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<i64>>) {
    let scheduled = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    (
        u8::from(scheduled),
        phase,
        u8::from(is_ready(pod)),
        std::cmp::Reverse(pod.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second())),
    )
}

struct Context {
    client: kube::Client,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: Mutex<BTreeMap<Key, Expectation>>,
    events: Recorder,
}

impl Context {
    /// True when pods this controller created or deleted for `key` are not in the cache as such yet.
    fn waiting(&self, key: &Key, pods: &[Arc<Pod>]) -> bool {
        let Ok(mut all) = self.expectations.lock() else {
            return false;
        };
        let Some(expectation) = all.get_mut(key) else {
            return false;
        };
        let by_name: BTreeMap<&str, &Pod> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.name.as_deref()?, p.as_ref())))
            .collect();
        expectation
            .created
            .retain(|name| !by_name.contains_key(name.as_str()));
        expectation.deleted.retain(|name| {
            by_name
                .get(name.as_str())
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        });
        let expired = expectation
            .since
            .is_some_and(|since| since.elapsed() > EXPECTATION_TIMEOUT);
        if expectation.created.is_empty() && expectation.deleted.is_empty() || expired {
            all.remove(key);
            return false;
        }
        true
    }

    fn expect(&self, key: &Key, created: Vec<String>, deleted: Vec<String>) {
        if let Ok(mut all) = self.expectations.lock() {
            let e = all.entry(key.clone()).or_default();
            e.created.extend(created);
            e.deleted.extend(deleted);
            e.since = Some(Instant::now());
        }
    }

    async fn reconcile(&self, key: Key) -> Result<(), ControllerError> {
        let (namespace, name) = key.clone();
        let Some(set) = self.sets.get(&ObjectRef::new(&name).within(&namespace)) else {
            if let Ok(mut all) = self.expectations.lock() {
                all.remove(&key);
            }
            return Ok(());
        };
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let spec = set.spec.clone().unwrap_or_default();
        let in_namespace: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .collect();
        if self.waiting(&key, &in_namespace) {
            return Err(ControllerError::Waiting(format!(
                "replicaset {namespace}/{name}: pods in flight"
            )));
        }
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let deleting = set.metadata.deletion_timestamp.is_some();
        let mut owned: Vec<Arc<Pod>> = Vec::new();
        for pod in &in_namespace {
            let matches = label_selector_matches(&spec.selector, pod.metadata.labels.as_ref());
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            match controller_of(&pod.metadata) {
                Some(owner) if owner.uid == uid => {
                    if matches {
                        owned.push(pod.clone());
                    } else {
                        // No longer ours: released (its other owner references stay).
                        let keep: Vec<_> = pod
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .filter(|r| r.uid != uid)
                            .cloned()
                            .collect();
                        let patch = json!({"metadata": {"ownerReferences": keep, "uid": pod.metadata.uid}});
                        pods_api
                            .patch(&pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map_err(kube_error(format!("releasing pod {namespace}/{pod_name}")))?;
                    }
                }
                None if matches && !deleting && is_active(pod) => {
                    // An orphan the selector matches is adopted.
                    let mut refs: Vec<_> = pod.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(owner_reference(&set));
                    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
                    pods_api
                        .patch(&pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(kube_error(format!("adopting pod {namespace}/{pod_name}")))?;
                    owned.push(pod.clone());
                }
                _ => {}
            }
        }
        let mut active: Vec<Arc<Pod>> = owned.iter().filter(|p| is_active(p)).cloned().collect();
        let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
        let about = Involved::of(set.as_ref());
        if !deleting && active.len() < want {
            let template = spec.template.clone().unwrap_or_default();
            let mut created = Vec::new();
            let mut failure = None;
            for _ in active.len()..want {
                let mut pod = json!({
                    "metadata": {"generateName": format!("{name}-"), "namespace": namespace,
                        "labels": template.metadata.as_ref().and_then(|m| m.labels.clone()),
                        "annotations": template.metadata.as_ref().and_then(|m| m.annotations.clone()),
                        "ownerReferences": [owner_reference(&set)]},
                    "spec": template.spec,
                });
                if let Some(map) = pod["metadata"].as_object_mut() {
                    map.retain(|_, v| !v.is_null());
                }
                let pod: Pod = serde_json::from_value(pod).map_err(|e| {
                    ControllerError::Invalid(format!("pod template of {namespace}/{name}: {e}"))
                })?;
                match pods_api.create(&PostParams::default(), &pod).await {
                    Ok(made) => {
                        let made_name = made.metadata.name.unwrap_or_default();
                        self.events
                            .normal(&about, "SuccessfulCreate", format!("Created pod: {made_name}"))
                            .await;
                        created.push(made_name);
                    }
                    Err(e) => {
                        let message = match &e {
                            kube::Error::Api(s) => s.message.clone(),
                            other => other.to_string(),
                        };
                        self.events
                            .warning(&about, "FailedCreate", format!("Error creating: {message}"))
                            .await;
                        failure = Some(e);
                        break;
                    }
                }
            }
            self.expect(&key, created, vec![]);
            if let Some(e) = failure {
                return Err(kube_error(format!("creating pods for {namespace}/{name}"))(e));
            }
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            let doomed: Vec<String> = active
                .iter()
                .take(active.len() - want)
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            for pod_name in &doomed {
                match pods_api.delete(pod_name, &DeleteParams::default()).await {
                    Ok(_) => {
                        self.events
                            .normal(&about, "SuccessfulDelete", format!("Deleted pod: {pod_name}"))
                            .await
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(kube_error(format!("deleting pod {namespace}/{pod_name}"))(e)),
                }
            }
            self.expect(&key, vec![], doomed);
        }
        self.write_status(&set, &owned).await
    }

    async fn write_status(&self, set: &ReplicaSet, owned: &[Arc<Pod>]) -> Result<(), ControllerError> {
        let spec = set.spec.clone().unwrap_or_default();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();
        let labelled = active
            .iter()
            .filter(|p| {
                let template_labels = spec
                    .template
                    .as_ref()
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                work::selects(&template_labels, p.metadata.labels.as_ref())
            })
            .count();
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": labelled,
            "readyReplicas": active.iter().filter(|p| is_ready(p)).count(),
            "availableReplicas": active.iter().filter(|p| is_available(p, min_ready)).count(),
            "observedGeneration": set.metadata.generation,
        });
        let current = serde_json::to_value(&set.status).unwrap_or_default();
        if work::covers(&current, &status) {
            return Ok(());
        }
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        let name = set.metadata.name.clone().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &namespace);
        match work::update_status(&api, &name, &json!({"status": status})).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(kube_error(format!(
                "writing the status of replicaset {namespace}/{name}"
            ))(e)),
        }
    }
}

fn owner_reference(set: &ReplicaSet) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: set.metadata.name.clone().unwrap_or_default(),
        uid: set.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

enum Seen {
    Set(Box<Change<ReplicaSet>>),
    Pod(Box<Change<Pod>>),
}

/// Runs the controller until its watches end.
pub async fn run(client: kube::Client) {
    let (sets_tx, mut sets_rx) = mpsc::unbounded_channel();
    let (pods_tx, mut pods_rx) = mpsc::unbounded_channel();
    let sets = work::reflect(Api::<ReplicaSet>::all(client.clone()), sets_tx);
    let pods = work::reflect(Api::<Pod>::all(client.clone()), pods_tx);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = tokio::select! {
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
        events: Recorder::new(client.clone(), "replicaset-controller"),
        client,
        sets: sets.clone(),
        pods: pods.clone(),
        expectations: Mutex::new(BTreeMap::new()),
    };
    let all = {
        let sets = sets.clone();
        move || -> Vec<Key> {
            sets.state()
                .iter()
                .filter_map(|s| Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?)))
                .collect()
        }
    };
    let keys_of = {
        let all = all.clone();
        let sets = sets.clone();
        move |seen: Seen| -> Vec<Key> {
            match seen {
                Seen::Set(change) => match *change {
                    Change::Object(s) => s
                        .metadata
                        .namespace
                        .clone()
                        .zip(s.metadata.name.clone())
                        .into_iter()
                        .collect(),
                    Change::Relisted => all(),
                },
                Seen::Pod(change) => match *change {
                    Change::Object(p) => match controller_of(&p.metadata) {
                        Some(owner) if owner.kind == "ReplicaSet" => p
                            .metadata
                            .namespace
                            .clone()
                            .map(|ns| (ns, owner.name.clone()))
                            .into_iter()
                            .collect(),
                        Some(_) => vec![],
                        // An orphan: any ReplicaSet of its namespace may adopt it.
                        None => sets
                            .state()
                            .iter()
                            .filter(|s| s.metadata.namespace == p.metadata.namespace)
                            .filter_map(|s| Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?)))
                            .collect(),
                    },
                    Change::Relisted => all(),
                },
            }
        }
    };
    let ready = move || work::ready(&sets) && work::ready(&pods);
    work::run_queue("replicaset", rx, keys_of, all, ready, |key| {
        context.reconcile(key)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_least_useful_pods_go_first() {
        let unscheduled = pod(json!({"metadata": {"name": "u"}, "status": {"phase": "Pending"}}));
        let pending = pod(
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": []}, "status": {"phase": "Pending"}}),
        );
        let running = pod(
            json!({"metadata": {"name": "r"}, "spec": {"nodeName": "n", "containers": []}, "status": {"phase": "Running"}}),
        );
        let ready = pod(
            json!({"metadata": {"name": "ok"}, "spec": {"nodeName": "n", "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        let mut all = [&ready, &running, &pending, &unscheduled];
        all.sort_by_key(|p| deletion_rank(p));
        let names: Vec<&str> = all.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["u", "p", "r", "ok"]);
        assert!(is_available(&ready, 0));
        assert!(
            !is_available(&ready, 30),
            "no transition time: not yet available for 30 s"
        );
        let done = pod(json!({"metadata": {"name": "d"}, "status": {"phase": "Succeeded"}}));
        assert!(!is_active(&done));
    }
}
