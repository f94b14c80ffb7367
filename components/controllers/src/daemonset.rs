//! The DaemonSet controller (kube-controller-manager's): one pod per eligible node (node selector and required
//! node affinity match, taints tolerated), pinned to its node by a `metadata.name` node affinity so that the
//! scheduler places it, with the tolerations Kubernetes adds to daemon pods. Nodes joining get a pod, nodes
//! leaving lose theirs. A template change rolls out node by node within `maxUnavailable` (RollingUpdate) or
//! waits for pods to be deleted (OnDelete); each template is a ControllerRevision (`kubectl rollout history`) and
//! its hash the pods' `controller-revision-hash` label.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::deployment::{resolve, template_hash};
use crate::events::{Involved, Recorder};
use crate::replicaset::{is_active, is_available, is_ready};
use crate::work::{self, Change, controller_of};
use crate::{ControllerError, kube_error};

pub const REVISION_HASH: &str = "controller-revision-hash";

type Key = (String, String);

/// The tolerations Kubernetes gives every daemon pod (`AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations(host_network: bool) -> Vec<Value> {
    let mut out = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}),
    ];
    if host_network {
        out.push(json!({"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}));
    }
    out
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = match t.key.as_deref().filter(|k| !k.is_empty()) {
            None => t.operator.as_deref() == Some("Exists"),
            Some(k) => k == taint.key,
        };
        let value_ok = t.operator.as_deref() == Some("Exists")
            || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
        effect_ok && key_ok && value_ok
    })
}

/// True when the daemon set's pods belong on `node`.
pub fn eligible(set: &DaemonSet, node: &Node) -> bool {
    let spec = set
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let labels = node.metadata.labels.as_ref();
    if let Some(selector) = &spec.node_selector
        && !work::selects(selector, labels)
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    if let Some(required) = required {
        let any = required.node_selector_terms.iter().any(|term| {
            term.match_expressions.iter().flatten().all(|r| {
                let value = labels.and_then(|l| l.get(&r.key));
                let values = r.values.as_deref().unwrap_or_default();
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
        });
        if !any {
            return false;
        }
    }
    let mut tolerations: Vec<Toleration> = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(
        daemon_tolerations(spec.host_network.unwrap_or(false))
            .into_iter()
            .filter_map(|t| serde_json::from_value(t).ok()),
    );
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerated(&tolerations, t))
}

struct Context {
    client: kube::Client,
    sets: Store<DaemonSet>,
    nodes: Store<Node>,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    events: Recorder,
    created: std::sync::Mutex<BTreeMap<Key, std::time::Instant>>,
}

impl Context {
    async fn reconcile(&self, key: Key) -> Result<(), ControllerError> {
        let (namespace, name) = key.clone();
        let Some(set) = self.sets.get(&ObjectRef::new(&name).within(&namespace)) else {
            return Ok(());
        };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        // Pods just created are given a moment to reach the cache, so that none is made twice.
        if let Ok(mut created) = self.created.lock()
            && let Some(at) = created.get(&key)
        {
            if at.elapsed() < std::time::Duration::from_millis(500) {
                return Err(ControllerError::Waiting(format!(
                    "daemonset {namespace}/{name}: pods in flight"
                )));
            }
            created.remove(&key);
        }
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let spec = set.spec.clone().unwrap_or_default();
        let template = serde_json::to_value(&spec.template).unwrap_or_default();
        let hash = template_hash(&template, 0);
        self.ensure_revision(&set, &hash, &template).await?;
        let pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .filter(|p| controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
            .filter(|p| is_active(p))
            .collect();
        let nodes: Vec<Arc<Node>> = self.nodes.state();
        let target_of = |p: &Pod| -> Option<String> {
            p.spec.as_ref().and_then(|s| s.node_name.clone()).or_else(|| {
                let terms = p
                    .spec
                    .as_ref()?
                    .affinity
                    .as_ref()?
                    .node_affinity
                    .as_ref()?
                    .required_during_scheduling_ignored_during_execution
                    .as_ref()?
                    .node_selector_terms
                    .clone();
                terms
                    .iter()
                    .flat_map(|t| t.match_fields.iter().flatten())
                    .find(|f| f.key == "metadata.name")?
                    .values
                    .clone()?
                    .first()
                    .cloned()
            })
        };
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in &pods {
            by_node
                .entry(target_of(pod).unwrap_or_default())
                .or_default()
                .push(pod.clone());
        }
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let about = Involved::of(set.as_ref());
        let eligible_nodes: Vec<String> = nodes
            .iter()
            .filter(|n| eligible(&set, n))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let mut to_delete: Vec<String> = Vec::new();
        let mut to_create: Vec<String> = Vec::new();
        for (node, node_pods) in &by_node {
            if !eligible_nodes.contains(node) {
                to_delete.extend(node_pods.iter().filter_map(|p| p.metadata.name.clone()));
            } else if node_pods.len() > 1 {
                // More than one on a node: the newest go.
                let mut sorted = node_pods.clone();
                sorted.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
                to_delete.extend(sorted.iter().skip(1).filter_map(|p| p.metadata.name.clone()));
            }
        }
        for node in &eligible_nodes {
            if !by_node.contains_key(node) {
                to_create.push(node.clone());
            }
        }
        // Rolling update: old-template pods go, at most maxUnavailable nodes at a time without an available pod.
        let rolling = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()) != Some("OnDelete");
        if rolling {
            let desired = eligible_nodes.len() as i32;
            // maxUnavailable defaults to 1 (percentages round up); at least one node moves at a time.
            let configured = spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_unavailable.as_ref());
            let max_unavailable = match configured {
                None => 1,
                Some(value) => resolve(Some(value), 0, desired, true).max(1),
            };
            let min_ready = spec.min_ready_seconds.unwrap_or(0);
            let unavailable = eligible_nodes
                .iter()
                .filter(|n| {
                    !by_node
                        .get(*n)
                        .is_some_and(|ps| ps.iter().any(|p| is_available(p, min_ready)))
                })
                .count() as i32;
            let mut budget = max_unavailable - unavailable;
            for node in &eligible_nodes {
                let Some(node_pods) = by_node.get(node) else {
                    continue;
                };
                let old: Vec<&Arc<Pod>> = node_pods
                    .iter()
                    .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH)) != Some(&hash))
                    .collect();
                for pod in old {
                    // Unavailable old pods go at once; available ones within the budget.
                    let available = is_available(pod, min_ready);
                    if !available || budget > 0 {
                        if available {
                            budget -= 1;
                        }
                        if let Some(n) = &pod.metadata.name
                            && !to_delete.contains(n)
                        {
                            to_delete.push(n.clone());
                        }
                    }
                }
            }
        }
        for pod_name in &to_delete {
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
        for node in &to_create {
            let pod = pod_for(&set, node, &hash)?;
            match pods_api.create(&PostParams::default(), &pod).await {
                Ok(made) => {
                    self.events
                        .normal(
                            &about,
                            "SuccessfulCreate",
                            format!("Created pod: {}", made.metadata.name.unwrap_or_default()),
                        )
                        .await
                }
                Err(e) => return Err(kube_error(format!("creating a daemon pod for node {node}"))(e)),
            }
        }
        if !to_create.is_empty()
            && let Ok(mut created) = self.created.lock()
        {
            created.insert(key.clone(), std::time::Instant::now());
        }
        // Status.
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let on_eligible: Vec<&Arc<Pod>> = eligible_nodes
            .iter()
            .filter_map(|n| by_node.get(n))
            .flatten()
            .collect();
        let scheduled = eligible_nodes.iter().filter(|n| by_node.contains_key(*n)).count();
        let available = eligible_nodes
            .iter()
            .filter(|n| {
                by_node
                    .get(*n)
                    .is_some_and(|ps| ps.iter().any(|p| is_available(p, min_ready)))
            })
            .count();
        let status = json!({
            "desiredNumberScheduled": eligible_nodes.len(),
            "currentNumberScheduled": scheduled,
            "numberMisscheduled": by_node.keys().filter(|n| !eligible_nodes.contains(n)).count(),
            "numberReady": on_eligible.iter().filter(|p| is_ready(p)).count(),
            "numberAvailable": available,
            "numberUnavailable": eligible_nodes.len() - available,
            "updatedNumberScheduled": on_eligible.iter().filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH)) == Some(&hash)).count(),
            "observedGeneration": set.metadata.generation,
        });
        let current = serde_json::to_value(&set.status).unwrap_or_default();
        if !work::covers(&current, &status) {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &namespace);
            match work::update_status(&api, &name, &json!({"status": status})).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    return Err(kube_error(format!(
                        "writing the status of daemonset {namespace}/{name}"
                    ))(e));
                }
            }
        }
        Ok(())
    }

    /// The ControllerRevision of the current template (`<name>-<hash>`), at the next revision number.
    async fn ensure_revision(
        &self,
        set: &DaemonSet,
        hash: &str,
        template: &Value,
    ) -> Result<(), ControllerError> {
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        let name = set.metadata.name.clone().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let revision_name = format!("{name}-{hash}");
        let owned: Vec<Arc<ControllerRevision>> = self
            .revisions
            .state()
            .into_iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .filter(|r| controller_of(&r.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let newest = owned.iter().map(|r| r.revision).max().unwrap_or(0);
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &namespace);
        if let Some(existing) = owned
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(revision_name.as_str()))
        {
            // A template used before (`kubectl rollout undo`) becomes the newest revision again, as in Kubernetes.
            if existing.revision < newest {
                let patch = json!({"revision": newest + 1});
                match api
                    .patch(&revision_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        return Err(kube_error(format!(
                            "renumbering revision {namespace}/{revision_name}"
                        ))(e));
                    }
                }
            }
            return Ok(());
        }
        let next = newest + 1;
        // Labelled like the pods (kubectl finds a daemon set's history by its selector).
        let mut labels = set
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(REVISION_HASH.into(), hash.into());
        let revision = json!({
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": revision_name, "namespace": namespace,
                "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": name, "uid": uid,
                    "controller": true, "blockOwnerDeletion": true}]},
            "data": {"spec": {"template": template, "$patch": "replace"}},
            "revision": next,
        });
        let revision: ControllerRevision =
            serde_json::from_value(revision).map_err(|e| ControllerError::Invalid(e.to_string()))?;
        match api.create(&PostParams::default(), &revision).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(kube_error(format!(
                "recording a revision of daemonset {namespace}/{name}"
            ))(e)),
        }
    }
}

/// A daemon pod for `node`: the template, its revision hash, the daemon tolerations, and an affinity to the node.
fn pod_for(set: &DaemonSet, node: &str, hash: &str) -> Result<Pod, ControllerError> {
    let name = set.metadata.name.clone().unwrap_or_default();
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let template = set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_HASH.into(), hash.into());
    let mut spec = serde_json::to_value(&template.spec).unwrap_or(json!({}));
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    let mut tolerations: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for t in daemon_tolerations(host_network) {
        if !tolerations
            .iter()
            .any(|have| have["key"] == t["key"] && have["effect"] == t["effect"])
        {
            tolerations.push(t);
        }
    }
    spec["tolerations"] = json!(tolerations);
    // Kubernetes' way of pinning a daemon pod: the scheduler places it, on this node only.
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    let pod = json!({
        "metadata": {"generateName": format!("{name}-"), "namespace": namespace, "labels": labels,
            "annotations": template.metadata.as_ref().and_then(|m| m.annotations.clone()),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": name, "uid": set.metadata.uid,
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": spec,
    });
    let mut pod = pod;
    if let Some(meta) = pod["metadata"].as_object_mut() {
        meta.retain(|_, v| !v.is_null());
    }
    serde_json::from_value(pod)
        .map_err(|e| ControllerError::Invalid(format!("pod template of daemonset {namespace}/{name}: {e}")))
}

enum Seen {
    Set(Box<Change<DaemonSet>>),
    Node,
    Pod(Box<Change<Pod>>),
    Revision,
}

/// Runs the controller until its watches end.
pub async fn run(client: kube::Client) {
    let (sets_tx, mut sets_rx) = mpsc::unbounded_channel();
    let (nodes_tx, mut nodes_rx) = mpsc::unbounded_channel::<Change<Node>>();
    let (pods_tx, mut pods_rx) = mpsc::unbounded_channel();
    let (revisions_tx, mut revisions_rx) = mpsc::unbounded_channel::<Change<ControllerRevision>>();
    let sets = work::reflect(Api::<DaemonSet>::all(client.clone()), sets_tx);
    let nodes = work::reflect(Api::<Node>::all(client.clone()), nodes_tx);
    let pods = work::reflect(Api::<Pod>::all(client.clone()), pods_tx);
    let revisions = work::reflect(Api::<ControllerRevision>::all(client.clone()), revisions_tx);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = tokio::select! {
                Some(c) = sets_rx.recv() => Seen::Set(Box::new(c)),
                Some(_) = nodes_rx.recv() => Seen::Node,
                Some(c) = pods_rx.recv() => Seen::Pod(Box::new(c)),
                Some(_) = revisions_rx.recv() => Seen::Revision,
                else => return,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    let context = Context {
        events: Recorder::new(client.clone(), "daemonset-controller"),
        client,
        sets: sets.clone(),
        nodes: nodes.clone(),
        pods: pods.clone(),
        revisions: revisions.clone(),
        created: std::sync::Mutex::new(BTreeMap::new()),
    };
    let all = {
        let sets = sets.clone();
        move || -> Vec<Key> { work::all_keys(&sets) }
    };
    let keys_of = {
        let all = all.clone();
        move |seen: Seen| -> Vec<Key> {
            match seen {
                Seen::Set(c) => match *c {
                    Change::Object(s) => work::key_of(&s.metadata),
                    Change::Relisted => all(),
                },
                // A node joining, changing or leaving concerns every daemon set.
                Seen::Node => all(),
                Seen::Pod(c) => match *c {
                    Change::Object(p) => match (controller_of(&p.metadata), p.metadata.namespace.clone()) {
                        (Some(o), Some(ns)) if o.kind == "DaemonSet" => vec![(ns, o.name.clone())],
                        _ => vec![],
                    },
                    Change::Relisted => all(),
                },
                Seen::Revision => vec![],
            }
        }
    };
    let ready =
        move || work::ready(&sets) && work::ready(&nodes) && work::ready(&pods) && work::ready(&revisions);
    work::run_queue("daemonset", rx, keys_of, all, ready, |key| context.reconcile(key)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility_follows_selectors_and_taints() {
        let set: DaemonSet = serde_json::from_value(json!({"metadata": {"name": "agent"}, "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"nodeSelector": {"role": "edge"}, "containers": []}}}}))
        .unwrap();
        let node = |labels: Value, taints: Value| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": "n", "labels": labels}, "spec": {"taints": taints}}),
            )
            .unwrap()
        };
        assert!(eligible(&set, &node(json!({"role": "edge"}), json!([]))));
        assert!(!eligible(&set, &node(json!({"role": "core"}), json!([]))));
        assert!(
            eligible(
                &set,
                &node(
                    json!({"role": "edge"}),
                    json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}])
                )
            ),
            "daemon pods tolerate cordons"
        );
        assert!(!eligible(
            &set,
            &node(
                json!({"role": "edge"}),
                json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
            )
        ));
    }
}
