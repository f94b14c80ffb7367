//! The node lifecycle controller (kube-controller-manager's `node-lifecycle-controller`) and its NoExecute taint
//! eviction (`taint-eviction-controller`).
//!
//! Health: a node is alive while its kubelet renews its Lease in `kube-node-lease` or posts status (the Ready
//! condition's `lastHeartbeatTime`). As Kubernetes does, the controller judges by when *it* saw either change,
//! never by the timestamps' values (clocks may be skewed). After `node-monitor-grace-period` without a change
//! (`node-startup-grace-period` for a node that never posted a Ready condition) Ready, MemoryPressure,
//! DiskPressure and PIDPressure become `Unknown` (`NodeStatusUnknown`, "Kubelet stopped posting node status.") and
//! the node's pods are marked not Ready.
//!
//! Taints: the NoSchedule taints of TaintNodesByCondition (not-ready, unreachable, memory/disk/pid pressure,
//! network-unavailable, and unschedulable while cordoned) follow the node's conditions; `not-ready:NoExecute` or
//! `unreachable:NoExecute` follow the Ready condition, and go when the node is Ready again. When every node is
//! not Ready the controller presumes the fault is its own ("master disruption mode") and takes the NoExecute
//! taints off instead, as Kubernetes does.
//!
//! Eviction: a pod on a node with a NoExecute taint it does not tolerate is deleted at once; one that tolerates
//! every such taint is deleted once the least `tolerationSeconds` of the tolerations used has passed since the
//! controller first saw it so tainted; one that tolerates them without a limit stays.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use tokio::sync::mpsc;

use crate::events::{Involved, Recorder};
use crate::work;
use crate::{ControllerError, kube_error};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// kube-controller-manager 1.33's `--node-monitor-grace-period` (40 s until 1.32 raised it, kubernetes#126287).
pub const NODE_MONITOR_GRACE_PERIOD: Duration = Duration::from_secs(50);
/// `--node-startup-grace-period`: for a node whose kubelet never posted a Ready condition.
pub const NODE_STARTUP_GRACE_PERIOD: Duration = Duration::from_secs(60);
/// `--node-monitor-period`: health is looked at least this often (and also at every change and grace expiry).
const NODE_MONITOR_PERIOD: Duration = Duration::from_secs(5);
/// How long the controller waits after a change for more before a pass.
const BATCH_DELAY: Duration = Duration::from_millis(50);
/// Nodes with this label count for nothing in the disruption check.
const EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";

/// The taint a node condition in a given status calls for (`nodeConditionToTaintKeyStatusMap`).
pub fn condition_taint(type_: &str, status: &str) -> Option<&'static str> {
    match (type_, status) {
        ("Ready", "False") => Some(NOT_READY),
        ("Ready", "Unknown") => Some(UNREACHABLE),
        ("MemoryPressure", "True") => Some(MEMORY_PRESSURE),
        ("DiskPressure", "True") => Some(DISK_PRESSURE),
        ("NetworkUnavailable", "True") => Some(NETWORK_UNAVAILABLE),
        ("PIDPressure", "True") => Some(PID_PRESSURE),
        _ => None,
    }
}

/// True for the NoSchedule taints this controller owns (`taintKeyToNodeConditionMap` and unschedulable).
fn owned_no_schedule(taint: &Taint) -> bool {
    taint.effect == "NoSchedule"
        && [
            NOT_READY,
            UNREACHABLE,
            MEMORY_PRESSURE,
            DISK_PRESSURE,
            NETWORK_UNAVAILABLE,
            PID_PRESSURE,
            UNSCHEDULABLE,
        ]
        .contains(&taint.key.as_str())
}

/// The NoSchedule taint keys a node's conditions and cordon call for (`doNoScheduleTaintingPass`).
pub fn no_schedule_taints(node: &Node) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = conditions(node)
        .iter()
        .filter_map(|c| condition_taint(&c.type_, &c.status))
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        keys.push(UNSCHEDULABLE);
    }
    keys.dedup();
    keys
}

/// The NoExecute taint a Ready condition's status calls for: not-ready for False, unreachable for Unknown.
pub fn no_execute_taint(ready: &str) -> Option<&'static str> {
    match ready {
        "False" => Some(NOT_READY),
        "Unknown" => Some(UNREACHABLE),
        _ => None,
    }
}

/// `current` taints with the controller's NoSchedule ones made to match `no_schedule` and, unless `no_execute` is
/// `None` (leave them), its NoExecute ones (not-ready, unreachable) made to match `no_execute`. Added taints carry
/// `time_added`; every other taint is kept as it is.
pub fn desired_taints(
    current: &[Taint],
    no_schedule: &[&str],
    no_execute: Option<Option<&str>>,
    time_added: &Time,
) -> Vec<Taint> {
    let owned_no_execute =
        |t: &Taint| t.effect == "NoExecute" && (t.key == NOT_READY || t.key == UNREACHABLE);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !owned_no_schedule(t) || no_schedule.contains(&t.key.as_str()))
        .filter(|t| match no_execute {
            Some(want) => !owned_no_execute(t) || want == Some(t.key.as_str()),
            None => true,
        })
        .cloned()
        .collect();
    let taint = |key: &str, effect: &str| Taint {
        key: key.to_string(),
        effect: effect.to_string(),
        time_added: Some(time_added.clone()),
        value: None,
    };
    for key in no_schedule {
        if !out.iter().any(|t| t.key == *key && t.effect == "NoSchedule") {
            out.push(taint(key, "NoSchedule"));
        }
    }
    if let Some(Some(key)) = no_execute
        && !out.iter().any(|t| t.key == key && t.effect == "NoExecute")
    {
        out.push(taint(key, "NoExecute"));
    }
    out
}

/// Kubernetes' `Toleration.ToleratesTaint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// What the NoExecute taints of a pod's node mean for the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// A taint is not tolerated (or tolerated for 0 s or less): delete the pod now.
    Now,
    /// Every taint is tolerated, the least `tolerationSeconds` of the tolerations used being this.
    After(Duration),
    /// No taint, or every one tolerated without a limit.
    Never,
}

/// `GetMatchingTolerations` (the first toleration matching each taint) then `getMinTolerationTime`.
pub fn eviction(no_execute_taints: &[Taint], tolerations: &[Toleration]) -> Eviction {
    if no_execute_taints.is_empty() {
        return Eviction::Never;
    }
    let mut least: Option<i64> = None;
    for taint in no_execute_taints {
        let Some(used) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        if let Some(seconds) = used.toleration_seconds {
            if seconds <= 0 {
                return Eviction::Now;
            }
            least = Some(least.map_or(seconds, |l| l.min(seconds)));
        }
    }
    match least {
        Some(seconds) => Eviction::After(Duration::from_secs(seconds.unsigned_abs())),
        None => Eviction::Never,
    }
}

fn conditions(node: &Node) -> &[NodeCondition] {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    conditions(node).iter().find(|c| c.type_ == "Ready")
}

/// The node's conditions once its kubelet is presumed gone (`tryUpdateNodeHealth` past the grace period): Ready,
/// MemoryPressure, DiskPressure and PIDPressure Unknown, those never posted added with `NodeStatusNeverUpdated`;
/// NetworkUnavailable is left alone (the network, not the kubelet, owns it).
pub fn unknown_conditions(node: &Node, now: &Time) -> Vec<NodeCondition> {
    let mut out: Vec<NodeCondition> = conditions(node).to_vec();
    for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        match out.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
            }
            Some(_) => {}
            None => out.push(NodeCondition {
                type_: type_.into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(now.clone()),
            }),
        }
    }
    out
}

/// True when every node that counts (not labelled `node.kubernetes.io/exclude-disruption`) is not Ready, and
/// there is one: every zone is then fully disrupted and Kubernetes stops evicting (`handleDisruption`).
pub fn fully_disrupted<'a>(nodes: impl IntoIterator<Item = (&'a Node, &'a str)>) -> bool {
    let mut counted = 0;
    for (node, ready) in nodes {
        let excluded = node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(EXCLUDE_DISRUPTION));
        if excluded {
            continue;
        }
        if ready == "True" {
            return false;
        }
        counted += 1;
    }
    counted > 0
}

/// What the controller saw of a node's heartbeats, and when.
#[derive(Debug)]
struct Health {
    /// When the controller last saw a heartbeat change (Kubernetes' `probeTimestamp`).
    probe: Instant,
    /// Whether the node had a Ready condition then, and its `lastHeartbeatTime`.
    ready_seen: bool,
    heartbeat: Option<Time>,
    /// The node's Lease's `renewTime` last seen.
    renewed: Option<MicroTime>,
}

/// A pod's pending eviction (Kubernetes' timed worker): waiting since the controller first saw it tainted, or
/// done (deleted; kept so that the pod is not deleted again while it terminates).
#[derive(Debug)]
enum Scheduled {
    Waiting { since: Instant },
    Done,
}

/// The instant a wall-clock time was, on this process's monotonic clock (for creation timestamps).
fn instant_of(time: &Time) -> Instant {
    let ago = k8s_openapi::jiff::Timestamp::now().duration_since(time.0);
    let ago = Duration::try_from(ago).unwrap_or(Duration::ZERO);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

fn time_now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    // Kubernetes writes these times in seconds.
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn name_of(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

fn ready_not_false(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status != "False"))
}

struct Controller {
    client: kube::Client,
    nodes: Store<Node>,
    pods: Store<Pod>,
    leases: Store<Lease>,
    grace: Duration,
    health: BTreeMap<String, Health>,
    /// By pod uid: (namespace, name, eviction).
    evictions: BTreeMap<String, (String, String, Scheduled)>,
    was_fully_disrupted: bool,
    node_events: Recorder,
    taint_events: Recorder,
}

impl Controller {
    /// One pass over every node and pod, from the caches; returns when the next one is due at the latest.
    async fn pass(&mut self) -> Instant {
        let now = Instant::now();
        let mut next = now + NODE_MONITOR_PERIOD;
        let nodes = self.nodes.state();
        let names: BTreeSet<String> = nodes.iter().map(|n| name_of(n)).collect();
        self.health.retain(|name, _| names.contains(name));
        let renewals: BTreeMap<String, Option<MicroTime>> = self
            .leases
            .state()
            .iter()
            .filter_map(|l| Some((l.metadata.name.clone()?, l.spec.as_ref()?.renew_time.clone())))
            .collect();
        // Observe heartbeats and mark nodes whose grace ran out as Unknown.
        // Each node's Ready status after this pass's writes (None: it never posted one).
        let mut current_ready: BTreeMap<String, Option<String>> = BTreeMap::new();
        // Nodes written this pass: their cached resourceVersion is stale, so their taints wait for the next one.
        let mut written: BTreeSet<String> = BTreeSet::new();
        for node in &nodes {
            let name = name_of(node);
            let ready = ready_condition(node);
            let probe = self
                .observe(node, renewals.get(&name).cloned().flatten(), now)
                .probe;
            let grace = if ready.is_some() {
                self.grace
            } else {
                NODE_STARTUP_GRACE_PERIOD
            };
            let mut status = ready.map(|r| r.status.clone());
            let expires = probe + grace;
            if now > expires {
                let conditions = unknown_conditions(node, &time_now());
                let new_ready = conditions.iter().find(|c| c.type_ == "Ready").cloned();
                if new_ready.as_ref() != ready {
                    match self.write_conditions(node, &conditions).await {
                        Ok(()) => {
                            tracing::info!(node = %name, "node stopped posting status: marked Unknown");
                            if let Some(h) = self.health.get_mut(&name) {
                                h.ready_seen = true;
                                h.heartbeat = new_ready.and_then(|r| r.last_heartbeat_time);
                            }
                            status = Some("Unknown".into());
                            written.insert(name.clone());
                        }
                        Err(e) => tracing::debug!(node = %name, error = %e, "marking the node Unknown"),
                    }
                }
            } else {
                next = next.min(expires + Duration::from_millis(10));
            }
            current_ready.insert(name, status);
        }
        let disrupted = fully_disrupted(nodes.iter().map(|n| {
            let ready = current_ready.get(&name_of(n)).and_then(Option::as_deref);
            (n.as_ref(), ready.unwrap_or("Unknown"))
        }));
        if self.was_fully_disrupted && !disrupted {
            // Leaving disruption mode: every node gets its whole grace period again.
            for health in self.health.values_mut() {
                health.probe = now;
            }
        }
        if disrupted && !self.was_fully_disrupted {
            tracing::warn!(
                "every node is not Ready: presuming a fault of the control plane, evicting nothing"
            );
        }
        self.was_fully_disrupted = disrupted;
        // Taints, and pods of nodes that are not Ready.
        let pods = self.pods.state();
        for node in &nodes {
            let name = name_of(node);
            if !written.contains(&name)
                && let Err(e) = self.taint(node, disrupted).await
            {
                tracing::debug!(node = %name, error = %e, "updating the node's taints");
            }
            if current_ready
                .get(&name)
                .and_then(Option::as_deref)
                .is_some_and(|s| s != "True")
            {
                self.mark_pods_not_ready(&name, &pods).await;
            }
        }
        // Taint eviction.
        if let Some(at) = self.evict(&nodes, &pods).await {
            next = next.min(at);
        }
        next
    }

    /// Notes a heartbeat of `node` (a new Ready `lastHeartbeatTime` or Lease `renewTime`) at `now`.
    fn observe(&mut self, node: &Node, renewed: Option<MicroTime>, now: Instant) -> &Health {
        let name = name_of(node);
        let ready = ready_condition(node);
        let heartbeat = ready.and_then(|r| r.last_heartbeat_time.clone());
        let health = self.health.entry(name).or_insert_with(|| Health {
            // A node that never posted a Ready condition is timed from its creation (with the startup grace).
            probe: match (ready, &node.metadata.creation_timestamp) {
                (None, Some(created)) => instant_of(created),
                _ => now,
            },
            ready_seen: ready.is_some(),
            heartbeat: heartbeat.clone(),
            renewed: None,
        });
        if ready.is_some() != health.ready_seen || heartbeat != health.heartbeat {
            health.probe = now;
            health.ready_seen = ready.is_some();
            health.heartbeat = heartbeat;
        }
        if let Some(renewed) = renewed
            && health.renewed.as_ref().is_none_or(|seen| seen.0 < renewed.0)
        {
            health.renewed = Some(renewed);
            health.probe = now;
        }
        health
    }

    async fn write_conditions(
        &self,
        node: &Node,
        conditions: &[NodeCondition],
    ) -> Result<(), ControllerError> {
        let name = name_of(node);
        let api: Api<Node> = Api::all(self.client.clone());
        // Pinned to the version read, so a kubelet's concurrent post is never overwritten.
        let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
            "status": {"conditions": conditions}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_error(format!("writing the conditions of node {name}")))?;
        Ok(())
    }

    /// Makes the node's controller-owned taints match its conditions and cordon.
    async fn taint(&self, node: &Node, disrupted: bool) -> Result<(), ControllerError> {
        let name = name_of(node);
        let current: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        // NoExecute follows the Ready condition as the cache shows it; a node that never posted one is left alone.
        let no_execute = ready_condition(node).map(|r| {
            if disrupted {
                None
            } else {
                no_execute_taint(&r.status)
            }
        });
        let desired = desired_taints(&current, &no_schedule_taints(node), no_execute, &time_now());
        if desired == current {
            return Ok(());
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let taints = if desired.is_empty() {
            serde_json::Value::Null
        } else {
            json!(desired)
        };
        let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": taints}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_error(format!("writing the taints of node {name}")))?;
        tracing::info!(node = %name, taints = ?desired.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "node taints");
        Ok(())
    }

    /// `MarkPodsNotReady`: the Ready condition of the node's pods goes False.
    async fn mark_pods_not_ready(&self, node: &str, pods: &[Arc<Pod>]) {
        let now = time_now();
        for pod in pods {
            let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
            if !on_node || !ready_not_false(pod) {
                continue;
            }
            let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
                continue;
            };
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let patch = json!({"metadata": {"resourceVersion": pod.metadata.resource_version},
                "status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}]}});
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    self.node_events
                        .warning(
                            &Involved::of(pod.as_ref()),
                            "NodeNotReady",
                            "Node is not ready".into(),
                        )
                        .await;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => tracing::debug!(pod = %name, error = %e, "marking the pod not Ready"),
            }
        }
    }

    /// The taint eviction pass; returns when a waiting eviction falls due, if any does.
    async fn evict(&mut self, nodes: &[Arc<Node>], pods: &[Arc<Pod>]) -> Option<Instant> {
        let now = Instant::now();
        let taints: BTreeMap<String, Vec<Taint>> = nodes
            .iter()
            .map(|n| {
                let no_execute: Vec<Taint> = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| t.effect == "NoExecute")
                    .collect();
                (name_of(n), no_execute)
            })
            .collect();
        let live: BTreeSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        let gone: Vec<String> = self
            .evictions
            .keys()
            .filter(|uid| !live.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.cancel(&uid).await;
        }
        let mut next: Option<Instant> = None;
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            if node.is_empty() || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            let decision = eviction(
                taints.get(&node).map(Vec::as_slice).unwrap_or_default(),
                &tolerations,
            );
            let scheduled = self.evictions.get(&uid).map(|(_, _, s)| s);
            let due = match (decision, scheduled) {
                (Eviction::Never, _) => {
                    self.cancel(&uid).await;
                    false
                }
                (_, Some(Scheduled::Done)) => false,
                (Eviction::Now, _) => true,
                (Eviction::After(wait), scheduled) => {
                    let since = match scheduled {
                        Some(Scheduled::Waiting { since }) => *since,
                        _ => now,
                    };
                    let at = since + wait;
                    if now < at {
                        next = Some(next.map_or(at, |n| n.min(at)));
                        let (namespace, name) = (
                            pod.metadata.namespace.clone().unwrap_or_default(),
                            pod.metadata.name.clone().unwrap_or_default(),
                        );
                        self.evictions
                            .insert(uid.clone(), (namespace, name, Scheduled::Waiting { since }));
                    }
                    now >= at
                }
            };
            if due {
                match self.delete(pod).await {
                    Ok(()) => {
                        let (namespace, name) = (
                            pod.metadata.namespace.clone().unwrap_or_default(),
                            pod.metadata.name.clone().unwrap_or_default(),
                        );
                        self.evictions.insert(uid, (namespace, name, Scheduled::Done));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "taint eviction");
                        next = Some(now + Duration::from_secs(1));
                    }
                }
            }
        }
        next
    }

    /// Forgets a pod's eviction; a waiting one is cancelled with Kubernetes' event.
    async fn cancel(&mut self, uid: &str) {
        if let Some((namespace, name, Scheduled::Waiting { .. })) = self.evictions.remove(uid) {
            let about = Involved {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: namespace.clone(),
                name: name.clone(),
                uid: uid.to_string(),
            };
            self.taint_events
                .normal(
                    &about,
                    "TaintManagerEviction",
                    format!("Cancelling deletion of Pod {namespace}/{name}"),
                )
                .await;
        }
    }

    /// Kubernetes' `deletePodHandler`: the event, the DisruptionTarget condition, then a (graceful) delete.
    async fn delete(&self, pod: &Pod) -> Result<(), ControllerError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.taint_events
            .normal(
                &Involved::of(pod),
                "TaintManagerEviction",
                format!("Marking for deletion Pod {namespace}/{name}"),
            )
            .await;
        tracing::info!(pod = %format!("{namespace}/{name}"), "deleting a pod for a NoExecute taint");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let live = match api.get(&name).await {
            Ok(live) if live.metadata.uid == pod.metadata.uid => live,
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(kube_error(format!("reading pod {namespace}/{name}"))(e)),
        };
        let has_target = live
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
            });
        if !has_target {
            let patch = json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
                "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint",
                "lastTransitionTime": time_now()}]}});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => {
                    return Err(kube_error(format!(
                        "marking pod {namespace}/{name} a disruption target"
                    ))(e));
                }
            }
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(kube_error(format!("deleting pod {namespace}/{name}"))(e)),
        }
    }
}

/// Runs the controller until its watches end; `grace` is `--node-monitor-grace-period`.
pub async fn run(client: kube::Client, grace: Duration) {
    let (nodes_tx, mut nodes_rx) = mpsc::unbounded_channel();
    let (pods_tx, mut pods_rx) = mpsc::unbounded_channel();
    let (leases_tx, mut leases_rx) = mpsc::unbounded_channel();
    let nodes = work::reflect(Api::<Node>::all(client.clone()), nodes_tx);
    let pods = work::reflect(Api::<Pod>::all(client.clone()), pods_tx);
    let leases = work::reflect(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        leases_tx,
    );
    let mut controller = Controller {
        node_events: Recorder::new(client.clone(), "node-controller"),
        taint_events: Recorder::new(client.clone(), "taint-eviction-controller"),
        client,
        nodes,
        pods,
        leases,
        grace,
        health: BTreeMap::new(),
        evictions: BTreeMap::new(),
        was_fully_disrupted: false,
    };
    let mut due: Option<Instant> = None;
    let mut next = Instant::now() + NODE_MONITOR_PERIOD;
    loop {
        let wake = due.map_or(next, |d| d.min(next));
        let mut changed = false;
        tokio::select! {
            Some(_) = nodes_rx.recv() => changed = true,
            Some(_) = pods_rx.recv() => changed = true,
            Some(_) = leases_rx.recv() => changed = true,
            () = tokio::time::sleep_until(wake.into()) => {
                let ready = work::ready(&controller.nodes) && work::ready(&controller.pods)
                    && work::ready(&controller.leases);
                if !ready {
                    next = Instant::now() + BATCH_DELAY;
                    continue;
                }
                due = None;
                next = controller.pass().await;
            }
            else => return,
        }
        if changed {
            due.get_or_insert_with(|| Instant::now() + BATCH_DELAY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Taint::default()
        }
    }

    fn toleration(value: serde_json::Value) -> Toleration {
        serde_json::from_value(value).unwrap()
    }

    fn node(conditions: serde_json::Value, spec: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": spec,
            "status": {"conditions": conditions}}))
        .unwrap()
    }

    #[test]
    fn conditions_and_cordon_become_no_schedule_taints() {
        let n = node(
            json!([{"type": "Ready", "status": "Unknown"}, {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"}, {"type": "PIDPressure", "status": "True"},
                {"type": "NetworkUnavailable", "status": "True"}]),
            json!({"unschedulable": true}),
        );
        assert_eq!(
            no_schedule_taints(&n),
            [
                UNREACHABLE,
                MEMORY_PRESSURE,
                PID_PRESSURE,
                NETWORK_UNAVAILABLE,
                UNSCHEDULABLE
            ]
        );
        let ready = node(json!([{"type": "Ready", "status": "True"}]), json!({}));
        assert!(no_schedule_taints(&ready).is_empty());
        let not_ready = node(json!([{"type": "Ready", "status": "False"}]), json!({}));
        assert_eq!(no_schedule_taints(&not_ready), [NOT_READY]);
        assert_eq!(no_execute_taint("False"), Some(NOT_READY));
        assert_eq!(no_execute_taint("Unknown"), Some(UNREACHABLE));
        assert_eq!(no_execute_taint("True"), None);
    }

    #[test]
    fn desired_taints_touch_only_the_controllers_own() {
        let at = time_now();
        let current = vec![
            taint("dedicated", "NoSchedule"),
            taint(NOT_READY, "NoSchedule"),
            taint(NOT_READY, "NoExecute"),
            taint("user", "NoExecute"),
        ];
        // Unreachable now: the not-ready pair swaps for the unreachable pair, the others stay.
        let out = desired_taints(&current, &[UNREACHABLE], Some(Some(UNREACHABLE)), &at);
        let keys: Vec<(String, String)> = out.iter().map(|t| (t.key.clone(), t.effect.clone())).collect();
        assert_eq!(
            keys,
            [
                ("dedicated".to_string(), "NoSchedule".to_string()),
                ("user".into(), "NoExecute".into()),
                (UNREACHABLE.into(), "NoSchedule".into()),
                (UNREACHABLE.into(), "NoExecute".into()),
            ]
        );
        assert!(out[2].time_added.is_some() && out[3].time_added.is_some());
        // Ready again: only the user's taints are left; with NoExecute left alone, it is kept.
        let ready = desired_taints(&out, &[], Some(None), &at);
        assert_eq!(ready.len(), 2);
        let untouched = desired_taints(&out, &[], None, &at);
        assert_eq!(untouched.len(), 3);
        assert_eq!(untouched[2].key, UNREACHABLE);
        // Nothing to do is the same list.
        assert_eq!(
            desired_taints(&out, &[UNREACHABLE], Some(Some(UNREACHABLE)), &at),
            out
        );
    }

    #[test]
    fn tolerations_match_as_kubernetes_matches_them() {
        let unreachable = taint(UNREACHABLE, "NoExecute");
        assert!(tolerates(
            &toleration(json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"})),
            &unreachable
        ));
        assert!(tolerates(
            &toleration(json!({"operator": "Exists"})),
            &unreachable
        ));
        assert!(!tolerates(
            &toleration(json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"})),
            &unreachable
        ));
        assert!(!tolerates(
            &toleration(json!({"key": UNREACHABLE, "value": "x", "effect": "NoExecute"})),
            &unreachable
        ));
        assert!(tolerates(&toleration(json!({"key": UNREACHABLE})), &unreachable));
    }

    #[test]
    fn time_to_evict_is_the_least_toleration_of_those_used() {
        let taints = [taint(UNREACHABLE, "NoExecute"), taint("dedicated", "NoExecute")];
        let forever = toleration(json!({"operator": "Exists"}));
        let unreachable_for = |s: i64| {
            toleration(
                json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": s}),
            )
        };
        let dedicated_for =
            |s: i64| toleration(json!({"key": "dedicated", "operator": "Exists", "tolerationSeconds": s}));
        assert_eq!(eviction(&[], &[]), Eviction::Never);
        assert_eq!(eviction(&taints, &[]), Eviction::Now);
        assert_eq!(
            eviction(&taints, &[unreachable_for(5)]),
            Eviction::Now,
            "dedicated is not tolerated"
        );
        assert_eq!(eviction(&taints, std::slice::from_ref(&forever)), Eviction::Never);
        assert_eq!(
            eviction(&taints, &[unreachable_for(5), dedicated_for(60)]),
            Eviction::After(Duration::from_secs(5))
        );
        assert_eq!(
            eviction(&taints, &[unreachable_for(300), dedicated_for(60)]),
            Eviction::After(Duration::from_secs(60))
        );
        // Only the first toleration matching each taint counts.
        assert_eq!(
            eviction(&taints, &[forever.clone(), unreachable_for(5)]),
            Eviction::Never
        );
        assert_eq!(eviction(&taints, &[unreachable_for(0), forever]), Eviction::Now);
    }

    #[test]
    fn a_silent_node_turns_unknown_as_kubernetes_writes_it() {
        let n = node(
            json!([{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2025-01-01T00:00:00Z"},
                {"type": "NetworkUnavailable", "status": "False"}]),
            json!({}),
        );
        let now = time_now();
        let out = unknown_conditions(&n, &now);
        let ready = out.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_transition_time.as_ref(), Some(&now));
        assert!(ready.last_heartbeat_time.is_some(), "the heartbeat is kept");
        let memory = out.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(memory.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(
            memory.message.as_deref(),
            Some("Kubelet never posted node status.")
        );
        assert_eq!(
            out.iter()
                .find(|c| c.type_ == "NetworkUnavailable")
                .unwrap()
                .status,
            "False"
        );
        assert_eq!(out.len(), 5);
        // Unknown already: nothing changes.
        let again = node(serde_json::to_value(&out).unwrap(), json!({}));
        assert_eq!(unknown_conditions(&again, &time_now()), out);
    }

    #[test]
    fn all_nodes_down_is_a_disruption_of_the_control_plane() {
        let plain = node(json!([]), json!({}));
        let excluded: Node =
            serde_json::from_value(json!({"metadata": {"name": "x", "labels": {EXCLUDE_DISRUPTION: ""}}}))
                .unwrap();
        assert!(fully_disrupted([(&plain, "Unknown"), (&plain, "False")]));
        assert!(!fully_disrupted([(&plain, "Unknown"), (&plain, "True")]));
        assert!(fully_disrupted([(&plain, "Unknown"), (&excluded, "True")]));
        assert!(!fully_disrupted([(&excluded, "Unknown")]));
        assert!(!fully_disrupted(std::iter::empty()));
    }
}
