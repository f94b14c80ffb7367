//! The pod garbage collector (kube-controller-manager's `pod-garbage-collector`): force-deletes (grace period 0)
//! pods no kubelet will ever finish:
//!
//! - pods bound to a node that no longer exists, once the node has been missing from the cache for the
//!   quarantine (40 s) and a live GET confirms it is gone (marked Failed with a `DisruptionTarget` condition first);
//! - terminating pods that were never scheduled;
//! - terminating pods on a node that is not Ready and carries the `node.kubernetes.io/out-of-service` taint;
//! - terminated pods (Succeeded, Failed) beyond `terminated-pod-gc-threshold`, evicted ones then the oldest first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::work;
use crate::{ControllerError, kube_error};

/// kube-controller-manager's `--terminated-pod-gc-threshold` default.
pub const TERMINATED_POD_GC_THRESHOLD: i32 = 12500;
/// `gcCheckPeriod`.
const GC_PERIOD: Duration = Duration::from_secs(20);
/// `quarantineTime`: how long a node may be missing from the cache before a live read decides it is gone.
const QUARANTINE: Duration = Duration::from_secs(40);
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// `isPodTerminated`: any phase but Pending, Running and Unknown.
pub fn is_terminated(pod: &Pod) -> bool {
    !matches!(phase(pod), "Pending" | "Running" | "Unknown")
}

/// `eviction.PodIsEvicted`: Failed with reason Evicted.
fn is_evicted(pod: &Pod) -> bool {
    phase(pod) == "Failed" && pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// The terminated pods to delete when there are more than `threshold` (`gcTerminated`): evicted ones first, then
/// by creation time, then by name (`byEvictionAndCreationTimestamp`). A threshold of 0 or less disables it.
pub fn terminated_to_delete(pods: &[Arc<Pod>], threshold: i32) -> Vec<Arc<Pod>> {
    if threshold <= 0 {
        return Vec::new();
    }
    let mut terminated: Vec<Arc<Pod>> = pods.iter().filter(|p| is_terminated(p)).cloned().collect();
    let excess = terminated.len().saturating_sub(threshold.unsigned_abs() as usize);
    if excess == 0 {
        return Vec::new();
    }
    terminated.sort_by(|a, b| {
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (!is_evicted(a), created(a), &a.metadata.name).cmp(&(!is_evicted(b), created(b), &b.metadata.name))
    });
    terminated.truncate(excess);
    terminated
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

struct Collector {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    threshold: i32,
    /// Nodes pods are bound to but the cache lacks: when each may be checked with a live read.
    quarantine: BTreeMap<String, Instant>,
}

impl Collector {
    /// One collection; returns when the quarantine of a missing node ends, if one is waiting.
    async fn collect(&mut self) -> Option<Instant> {
        let pods = self.pods.state();
        let nodes = self.nodes.state();
        let known: BTreeSet<String> = nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
        for pod in terminated_to_delete(&pods, self.threshold) {
            self.force_delete(&pod, None).await;
        }
        // Terminating pods on nodes declared out of service.
        for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some()) {
            let Some(node) = nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(node_of(pod)))
            else {
                continue;
            };
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let out_of_service = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE));
            if !ready && out_of_service {
                self.force_delete(pod, None).await;
            }
        }
        // Orphans: quarantine unknown nodes, then confirm with a live read that they are gone.
        self.note_orphans();
        let now = Instant::now();
        let due: Vec<String> = self
            .quarantine
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        let api: Api<Node> = Api::all(self.client.clone());
        let mut deleted: BTreeSet<String> = BTreeSet::new();
        for node in due {
            self.quarantine.remove(&node);
            if known.contains(&node) {
                continue;
            }
            match api.get_opt(&node).await {
                Ok(None) => {
                    deleted.insert(node);
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(node = %node, error = %e, "checking whether a node exists"),
            }
        }
        let condition = json!({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
            "message": "PodGC: node no longer exists"});
        for pod in pods.iter().filter(|p| deleted.contains(node_of(p))) {
            tracing::info!(pod = ?pod.metadata.name, node = node_of(pod), "deleting a pod of a node that is gone");
            self.force_delete(pod, Some(&condition)).await;
        }
        // Unscheduled pods that are terminating.
        for pod in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() && node_of(p).is_empty())
        {
            self.force_delete(pod, None).await;
        }
        self.quarantine.values().min().copied()
    }

    /// Puts the nodes pods are bound to but the cache lacks in quarantine; returns when the first one ends.
    fn note_orphans(&mut self) -> Option<Instant> {
        let known: BTreeSet<String> = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let now = Instant::now();
        for pod in self.pods.state() {
            let node = node_of(&pod);
            if !node.is_empty() && !known.contains(node) {
                self.quarantine
                    .entry(node.to_string())
                    .or_insert(now + QUARANTINE);
            }
        }
        self.quarantine.values().min().copied()
    }

    /// `markFailedAndDeletePodWithCondition`: a pod not yet terminated is marked Failed (with `condition`), then
    /// deleted with a grace period of 0. Failures are logged; the next collection tries again.
    async fn force_delete(&self, pod: &Pod, condition: Option<&serde_json::Value>) {
        if let Err(e) = self.try_force_delete(pod, condition).await {
            tracing::warn!(error = %e, "pod garbage collection");
        }
    }

    async fn try_force_delete(
        &self,
        pod: &Pod,
        condition: Option<&serde_json::Value>,
    ) -> Result<(), ControllerError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        tracing::info!(pod = %format!("{namespace}/{name}"), "force deleting a pod");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        if !matches!(phase(pod), "Succeeded" | "Failed") {
            let mut status = json!({"phase": "Failed"});
            if let Some(condition) = condition {
                let mut condition = condition.clone();
                condition["lastTransitionTime"] = json!(crate::events::time_now());
                status["conditions"] = json!([condition]);
            }
            match api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Strategic(&json!({"status": status})),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => return Err(kube_error(format!("marking pod {namespace}/{name} Failed"))(e)),
            }
        }
        let mut params = DeleteParams::default().grace_period(0);
        if let Some(uid) = &pod.metadata.uid {
            params = params.preconditions(kube::api::Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            });
        }
        match api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(kube_error(format!("deleting pod {namespace}/{name}"))(e)),
        }
    }
}

/// Runs the collector until stopped; `threshold` is `--terminated-pod-gc-threshold`.
pub async fn run(client: kube::Client, threshold: i32) {
    let (pods_tx, mut pods_rx) = mpsc::unbounded_channel();
    let (nodes_tx, mut nodes_rx) = mpsc::unbounded_channel();
    let pods = work::reflect(Api::<Pod>::all(client.clone()), pods_tx);
    let nodes = work::reflect(Api::<Node>::all(client.clone()), nodes_tx);
    let mut collector = Collector {
        client,
        pods,
        nodes,
        threshold,
        quarantine: BTreeMap::new(),
    };
    let mut next = Instant::now() + Duration::from_secs(1);
    loop {
        let changed = tokio::select! {
            Some(_) = pods_rx.recv() => true,
            Some(_) = nodes_rx.recv() => true,
            () = tokio::time::sleep_until(next) => false,
            else => return,
        };
        if !(work::ready(&collector.pods) && work::ready(&collector.nodes)) {
            next = next.min(Instant::now() + Duration::from_millis(200));
            continue;
        }
        if changed {
            // A node's quarantine starts when its disappearance is seen, not at the next collection.
            if let Some(at) = collector.note_orphans() {
                next = next.min(at);
            }
            continue;
        }
        let period = Instant::now() + GC_PERIOD;
        // A quarantine ending before the next period is checked when it ends.
        next = collector.collect().await.map_or(period, |q| q.min(period));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, created: &str, reason: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created},
                "status": {"phase": phase, "reason": reason}}))
            .unwrap(),
        )
    }

    #[test]
    fn terminated_pods_beyond_the_threshold_go_evicted_then_oldest_first() {
        let pods = vec![
            pod("running", "Running", "2025-01-01T00:00:00Z", None),
            pod("new", "Succeeded", "2025-01-03T00:00:00Z", None),
            pod("old", "Failed", "2025-01-01T00:00:00Z", None),
            pod("evicted", "Failed", "2025-01-04T00:00:00Z", Some("Evicted")),
            pod("b-same-age", "Succeeded", "2025-01-02T00:00:00Z", None),
            pod("a-same-age", "Succeeded", "2025-01-02T00:00:00Z", None),
        ];
        let names = |threshold| -> Vec<String> {
            terminated_to_delete(&pods, threshold)
                .iter()
                .map(|p| p.metadata.name.clone().unwrap())
                .collect()
        };
        assert_eq!(names(2), ["evicted", "old", "a-same-age"]);
        assert_eq!(names(5), Vec::<String>::new());
        assert_eq!(names(0), Vec::<String>::new(), "0 disables it");
        assert_eq!(names(4), ["evicted"]);
        assert!(!is_terminated(&pod("p", "Pending", "2025-01-01T00:00:00Z", None)));
    }
}
