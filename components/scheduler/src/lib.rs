//! bonsai's scheduler (kube-scheduler's job), a client of the API only: pending pods, highest priority first,
//! are filtered against every node (cordon, taints, node selector and affinity, resources, host ports, pod
//! affinity and anti-affinity), the feasible nodes scored (`plugins`), and the pod bound to the best one through
//! `pods/binding`. A pod no node can take gets `PodScheduled=False` with kube-scheduler's message and a
//! `FailedScheduling` event, and is tried again whenever nodes or pods change.
//!
//! **Architecture Invariant:** the scheduler reads and writes cluster state only through the Kubernetes API.

pub mod plugins;
pub mod resources;

use std::collections::BTreeMap;
use std::time::Duration;

use controllers::volumebinding;
use controllers::work::{self, Change};
use events::{Involved, Recorder};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use tokio::sync::mpsc;

use plugins::{NodeInfo, filter, score, unschedulable_message};

/// The scheduler name pods ask for by default.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

fn pending(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().is_none_or(str::is_empty))
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == DEFAULT_SCHEDULER)
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Where each pod stands after a pass: bound to a node, or not schedulable (with the reasons).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Bind(String),
    Unschedulable(String),
}

/// One scheduling pass over a snapshot: decisions for the pending pods, in queue order (priority, then age),
/// each bound pod counted on its node before the next is placed.
pub fn schedule(nodes: &[Node], pods: &[Pod]) -> Vec<(usize, Decision)> {
    schedule_with(nodes, pods, &|_, _| Ok(()))
}

/// `schedule` with one more filter, `volumes` (the VolumeBinding plugin: a reason when the node cannot take the
/// pod's claims).
pub fn schedule_with(
    nodes: &[Node],
    pods: &[Pod],
    volumes: &dyn Fn(&Pod, &Node) -> Result<(), String>,
) -> Vec<(usize, Decision)> {
    let mut placed: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| !pending(p)) {
        let active = !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if let (true, Some(node)) = (active, pod.spec.as_ref().and_then(|s| s.node_name.clone())) {
            placed.entry(node).or_default().push(pod);
        }
    }
    let mut queue: Vec<usize> = (0..pods.len()).filter(|i| pending(&pods[*i])).collect();
    queue.sort_by_key(|i| {
        let p = &pods[*i];
        (
            std::cmp::Reverse(p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)),
            p.metadata.creation_timestamp.clone().map(|t| t.0),
            p.metadata.name.clone(),
        )
    });
    let mut decisions = Vec::new();
    for i in queue {
        let pod = &pods[i];
        let infos: Vec<NodeInfo> = nodes
            .iter()
            .map(|n| {
                NodeInfo::new(
                    n,
                    placed
                        .get(n.metadata.name.as_deref().unwrap_or(""))
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(i64, &str)> = None;
        for (info, node) in infos.iter().zip(nodes) {
            let mut why = filter(pod, info, &infos);
            if let Err(reason) = volumes(pod, node) {
                why.push(reason);
            }
            if why.is_empty() {
                let s = score(pod, info, &infos);
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, info.name()));
                }
            } else {
                for reason in why {
                    *reasons.entry(reason).or_default() += 1;
                }
            }
        }
        match best {
            Some((_, node)) => {
                let node = node.to_string();
                placed.entry(node.clone()).or_default().push(pod);
                decisions.push((i, Decision::Bind(node)));
            }
            None => decisions.push((
                i,
                Decision::Unschedulable(unschedulable_message(nodes.len(), &reasons)),
            )),
        }
    }
    decisions
}

/// kube-scheduler's attempt metrics: `scheduler_schedule_attempts_total` and
/// `scheduler_scheduling_attempt_duration_seconds`, by result (scheduled, unschedulable, error) and profile.
struct Metrics {
    attempts: metrics::CounterVec<2>,
    durations: metrics::HistogramVec<2>,
}

fn scheduler_metrics() -> &'static Metrics {
    static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        // kube-scheduler's buckets: 1 ms doubling, 15 of them.
        const ATTEMPT: metrics::Buckets = metrics::Buckets(&[
            0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384,
        ]);
        let m = Metrics {
            attempts: Default::default(),
            durations: metrics::histogram_vec(ATTEMPT),
        };
        let r = metrics::registry();
        r.register(
            "scheduler_schedule_attempts_total",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem",
            m.attempts.clone(),
        );
        r.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            m.durations.clone(),
        );
        m
    })
}

/// Counts one attempt with its result and how long it took.
fn attempted(result: &'static str, seconds: f64) {
    let m = scheduler_metrics();
    let labels: metrics::Labels<2> = [
        ("result", result.to_string()),
        ("profile", DEFAULT_SCHEDULER.to_string()),
    ];
    m.attempts.get_or_create(&labels).inc();
    m.durations.get_or_create(&labels).observe(seconds);
}

struct Scheduler {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    events: Recorder,
    /// Pods bound but not yet seen bound in the cache (kube-scheduler's "assumed" pods): uid -> node, since.
    assumed: std::sync::Mutex<BTreeMap<String, (String, std::time::Instant)>>,
}

/// How long a binding may take to show in the cache before the scheduler stops assuming it.
const ASSUME_FOR: Duration = Duration::from_secs(30);

impl Scheduler {
    /// One pass; returns whether some pod is still waiting (tried again later even without a change).
    async fn pass(&self) -> bool {
        let mut pods: Vec<Pod> = self.pods.state().iter().map(|p| (**p).clone()).collect();
        let nodes: Vec<Node> = self.nodes.state().iter().map(|n| (**n).clone()).collect();
        if let Ok(mut assumed) = self.assumed.lock() {
            let seen: BTreeMap<String, bool> = pods
                .iter()
                .filter_map(|p| {
                    Some((
                        p.metadata.uid.clone()?,
                        p.spec.as_ref().is_some_and(|s| s.node_name.is_some()),
                    ))
                })
                .collect();
            assumed.retain(|uid, (_, since)| seen.get(uid) == Some(&false) && since.elapsed() < ASSUME_FOR);
            for pod in &mut pods {
                let node = pod
                    .metadata
                    .uid
                    .as_ref()
                    .and_then(|uid| assumed.get(uid))
                    .map(|(n, _)| n.clone());
                if let (Some(node), Some(spec)) = (node, pod.spec.as_mut()) {
                    spec.node_name = Some(node);
                }
            }
        }
        let (claims, volumes, classes) = (self.claims.state(), self.volumes.state(), self.classes.state());
        let volume_plans =
            |pod: &Pod, node: &Node| volumebinding::schedule_volumes(pod, node, &claims, &volumes, &classes);
        let volume_filter = |pod: &Pod, node: &Node| volume_plans(pod, node).map(|_| ());
        let mut waiting = false;
        let algorithm = std::time::Instant::now();
        let decisions = schedule_with(&nodes, &pods, &volume_filter);
        // The filtering and scoring of one pass, shared among the pods it placed.
        let share = metrics::seconds_since(algorithm) / decisions.len().max(1) as f64;
        for (i, decision) in decisions {
            let began = std::time::Instant::now();
            let pod = &pods[i];
            let (Some(namespace), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone())
            else {
                continue;
            };
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            let about = Involved::of(pod);
            match decision {
                Decision::Bind(node) => {
                    // PreBind: the pod's unbound WaitForFirstConsumer claims get their volumes (or the node to
                    // provision on) before the pod is bound.
                    let plans = nodes
                        .iter()
                        .find(|n| n.metadata.name.as_deref() == Some(node.as_str()))
                        .and_then(|n| volume_plans(pod, n).ok())
                        .unwrap_or_default();
                    if let Err(e) = volumebinding::prebind(&self.client, &plans, &node).await {
                        tracing::debug!(pod = %name, error = %e, "binding volumes");
                        attempted("error", share + metrics::seconds_since(began));
                        waiting = true;
                        continue;
                    }
                    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                    match api
                        .create_subresource::<serde_json::Value, serde_json::Value>(
                            "binding",
                            &name,
                            &PostParams::default(),
                            &binding,
                        )
                        .await
                    {
                        Ok(_) => {
                            attempted("scheduled", share + metrics::seconds_since(began));
                            if let (Ok(mut assumed), Some(uid)) =
                                (self.assumed.lock(), pod.metadata.uid.clone())
                            {
                                assumed.insert(uid, (node.clone(), std::time::Instant::now()));
                            }
                            self.events
                                .normal(
                                    &about,
                                    "Scheduled",
                                    format!("Successfully assigned {namespace}/{name} to {node}"),
                                )
                                .await;
                        }
                        Err(e) => {
                            // Already bound, or gone: the caches catch up and the next pass sees it.
                            tracing::debug!(pod = %name, error = %e, "binding");
                            attempted("error", share + metrics::seconds_since(began));
                            waiting = true;
                        }
                    }
                }
                Decision::Unschedulable(message) => {
                    attempted("unschedulable", share + metrics::seconds_since(began));
                    waiting = true;
                    let current = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
                        .and_then(|c| c.message.clone());
                    if current.as_deref() == Some(message.as_str()) {
                        continue;
                    }
                    // A strategic merge patch keyed by condition type: only PodScheduled changes, whatever the
                    // kubelet wrote meanwhile (a merge patch would replace the whole list).
                    let condition = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": message, "lastTransitionTime": controllers::events::time_now()});
                    let patch = json!({"status": {"conditions": [condition]}});
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                        .await
                    {
                        tracing::debug!(pod = %name, error = %e, "marking unschedulable");
                    }
                    self.events.warning(&about, "FailedScheduling", message).await;
                }
            }
        }
        waiting
    }
}

/// Runs the scheduler until its watches end.
pub async fn run(client: kube::Client) {
    scheduler_metrics();
    let (pods_tx, mut pods_rx) = mpsc::unbounded_channel::<Change<Pod>>();
    let (nodes_tx, mut nodes_rx) = mpsc::unbounded_channel::<Change<Node>>();
    let (claims_tx, mut claims_rx) = mpsc::unbounded_channel::<Change<PersistentVolumeClaim>>();
    let (volumes_tx, mut volumes_rx) = mpsc::unbounded_channel::<Change<PersistentVolume>>();
    let (classes_tx, mut classes_rx) = mpsc::unbounded_channel::<Change<StorageClass>>();
    let pods = work::reflect(Api::<Pod>::all(client.clone()), pods_tx);
    let nodes = work::reflect(Api::<Node>::all(client.clone()), nodes_tx);
    let claims = work::reflect(Api::<PersistentVolumeClaim>::all(client.clone()), claims_tx);
    let volumes = work::reflect(Api::<PersistentVolume>::all(client.clone()), volumes_tx);
    let classes = work::reflect(Api::<StorageClass>::all(client.clone()), classes_tx);
    let scheduler = Scheduler {
        events: Recorder::new(client.clone(), DEFAULT_SCHEDULER),
        client,
        pods,
        nodes,
        claims,
        volumes,
        classes,
        assumed: std::sync::Mutex::new(BTreeMap::new()),
    };
    let mut waiting = false;
    loop {
        let retry = if waiting {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            change = pods_rx.recv() => if change.is_none() { return },
            change = nodes_rx.recv() => if change.is_none() { return },
            change = claims_rx.recv() => if change.is_none() { return },
            change = volumes_rx.recv() => if change.is_none() { return },
            change = classes_rx.recv() => if change.is_none() { return },
            () = tokio::time::sleep(retry) => {}
        }
        // A burst of changes (a scale to 100) is one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while pods_rx.try_recv().is_ok()
            || nodes_rx.try_recv().is_ok()
            || claims_rx.try_recv().is_ok()
            || volumes_rx.try_recv().is_ok()
            || classes_rx.try_recv().is_ok()
        {}
        if !work::ready(&scheduler.pods)
            || !work::ready(&scheduler.nodes)
            || !work::ready(&scheduler.claims)
            || !work::ready(&scheduler.volumes)
            || !work::ready(&scheduler.classes)
        {
            waiting = true;
            continue;
        }
        waiting = scheduler.pass().await;
    }
}
