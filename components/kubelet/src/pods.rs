//! The pods bound to this node, run for real: each pass over a pod (`sync`) looks at what the runtime has and
//! makes it match the pod (sandbox, images, init containers in order, app containers with their restart policy
//! and back-off, graceful termination), then writes the pod's status as the kubelet reports it. Passes are
//! idempotent: whatever happened before (an agent restart included), the next pass continues from what exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use network::pod::{PodAddresses, PodNetwork, PodNetworkConfig};
use runtime::container::{BindMount, ContainerConfig, ContainerInfo, Resources, Runtime, State};
use runtime::pull::Puller;
use runtime::store::ContentStore;
use serde_json::{Value, json};
use tokio::sync::{Mutex, OnceCell, watch};

use crate::dns::ClusterDns;
use crate::{KubeletError, sandbox};

/// The first restart back-off; it doubles up to `MAX_BACKOFF` (kubelet's 10 s and 5 min).
const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long before it ended starts again without back-off (the kubelet resets a
/// container's back-off after 10 minutes of running without problems).
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often every pod is looked at even when nothing in the API changed (containers exit on their own).
const RESYNC: Duration = Duration::from_secs(1);
/// What is left of a grace period after a preStop hook is never less than this (`minimumGracePeriodInSeconds`).
/// How long a postStart hook may run (the kubelet gives it no limit; one stuck hook must not hold the pod's
/// passes forever).
const POST_START_TIMEOUT: Duration = Duration::from_secs(300);
const MINIMUM_GRACE: Duration = Duration::from_secs(2);

/// Exec probes through a helper process, `bonsai exec -d <data-dir> <id> -- <command>`: the runtime's exec forks,
/// which is not safe in the agent's multi-threaded process.
#[derive(Debug)]
pub struct CliExec {
    pub bonsai: PathBuf,
    pub data_dir: PathBuf,
}

impl crate::probes::ExecRunner for CliExec {
    async fn run_in_container(
        &self,
        container_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<crate::probes::ExecOutput, crate::probes::ExecError> {
        let mut child = tokio::process::Command::new(&self.bonsai);
        child
            .arg("exec")
            .arg("-d")
            .arg(&self.data_dir)
            .arg(container_id)
            .arg("--")
            .args(command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(timeout, child.output()).await {
            Err(_) => Err(crate::probes::ExecError::TimedOut),
            Ok(Err(e)) => Err(crate::probes::ExecError::Failed(format!(
                "running bonsai exec: {e}"
            ))),
            Ok(Ok(out)) => {
                let mut output = out.stdout;
                output.extend_from_slice(&out.stderr);
                match out.status.code() {
                    Some(exit_code) => Ok(crate::probes::ExecOutput { exit_code, output }),
                    None => Err(crate::probes::ExecError::Failed("bonsai exec was killed".into())),
                }
            }
        }
    }
}

/// What the node agent needs to run pods.
#[derive(Clone, Debug)]
pub struct PodsConfig {
    pub node_name: String,
    /// `<data-dir>`: pods' state goes to `<data-dir>/agent/pods`.
    pub data_dir: PathBuf,
    /// Where containers' logs go (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    pub dns: ClusterDns,
    pub host_ips: Vec<String>,
    /// The hard eviction thresholds.
    pub eviction: crate::eviction::EvictionConfig,
    /// Where the eviction manager publishes the node's pressure (its conditions).
    pub pressure: Arc<watch::Sender<crate::eviction::Pressure>>,
}

/// The node agent's pod side.
#[allow(missing_debug_implementations)] // kube::Client is not Debug
pub struct Pods {
    client: kube::Client,
    config: PodsConfig,
    runtime: Arc<Runtime>,
    store: Arc<ContentStore>,
    puller: Puller,
    network_config: watch::Receiver<Option<PodNetworkConfig>>,
    network: OnceCell<Arc<PodNetwork>>,
    /// When each pod was first seen, for `status.startTime`.
    started: Mutex<BTreeMap<String, String>>,
    /// When each pod not yet running was first seen, for `kubelet_pod_start_duration_seconds`; `None` once its
    /// start was observed.
    first_seen: std::sync::Mutex<BTreeMap<String, Option<std::time::Instant>>>,
    /// The probe workers of each (pod uid, container name) with probes.
    probers: std::sync::Mutex<BTreeMap<(String, String), crate::probes::ContainerProber>>,
    exec: Arc<CliExec>,
    volumes: crate::pod_volumes::PodVolumes,
    /// Each pod's host ports, as programmed into the node's nft chains.
    host_ports: Mutex<BTreeMap<String, Vec<network::hostports::HostPort>>>,
    /// Failed pulls by pod and image: how many in a row, and when the last one failed.
    pull_failures: std::sync::Mutex<BTreeMap<String, (u32, std::time::Instant)>>,
    /// Events about the pods (`kubectl describe pod`), from `kubelet` on this node.
    events: Arc<events::Recorder>,
    /// Since when each soft eviction threshold has been crossed.
    soft_thresholds: std::sync::Mutex<crate::eviction::SoftThresholds>,
    /// The node's memory, in bytes (for Burstable containers' OOM score adjustment).
    memory_capacity: u64,
    /// The node's allocatable resources (what a container's unset limits read as in the downward API).
    node_allocatable: BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeletError {
    let what = what.into();
    move |source| KubeletError::Kube { what, source }
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A time as the API writes one (`metav1.Time`: RFC 3339 in whole seconds). The runtime records nanoseconds; a
/// status carrying them would never equal what the API gives back, and would be written again every pass.
fn whole_seconds(rfc3339: &str) -> String {
    rfc3339
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t.as_second()).ok())
        .map_or_else(|| rfc3339.to_string(), |t| t.to_string())
}

/// Seconds from one RFC 3339 time to another.
fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let from: k8s_openapi::jiff::Timestamp = from.parse().ok()?;
    let to: k8s_openapi::jiff::Timestamp = to.parse().ok()?;
    Some((to.as_millisecond() - from.as_millisecond()) as f64 / 1000.0)
}

fn seconds_since(rfc3339: &str) -> Option<f64> {
    let then: k8s_openapi::jiff::Timestamp = rfc3339.parse().ok()?;
    let now = k8s_openapi::jiff::Timestamp::now();
    Some((now.as_millisecond() - then.as_millisecond()) as f64 / 1000.0)
}

/// A runtime container's id: `<pod uid>_<container name>_<attempt>` (names are DNS labels: no `_`).
fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    format!("{uid}_{name}_{attempt}")
}

/// The attempts of each container of a pod, oldest first.
pub(crate) fn attempts_by_name(
    uid: &str,
    all: &[ContainerInfo],
) -> BTreeMap<String, Vec<(u32, ContainerInfo)>> {
    let mut out: BTreeMap<String, Vec<(u32, ContainerInfo)>> = BTreeMap::new();
    let prefix = format!("{uid}_");
    for info in all {
        let Some(rest) = info.config.id.strip_prefix(&prefix) else {
            continue;
        };
        let Some((name, attempt)) = rest.rsplit_once('_') else {
            continue;
        };
        let Ok(attempt) = attempt.parse::<u32>() else {
            continue;
        };
        out.entry(name.to_string())
            .or_default()
            .push((attempt, info.clone()));
    }
    for attempts in out.values_mut() {
        attempts.sort_by_key(|(n, _)| *n);
    }
    out
}

/// A container's CPU and memory as the runtime takes them (kubelet's `ResourceConfigForPod` for one container):
/// shares from the cpu request (2 at least), a CFS quota from the cpu limit over a 100 ms period, the memory limit.
pub fn container_resources(container: &Container) -> Resources {
    let resources = container.resources.clone().unwrap_or_default();
    let get = |list: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
               name: &str| {
        list.as_ref()
            .and_then(|l| l.get(name))
            .and_then(|q| quantity::milli(&q.0))
    };
    let cpu_request = get(&resources.requests, "cpu").or(get(&resources.limits, "cpu"));
    let cpu_limit = get(&resources.limits, "cpu");
    let memory_limit = get(&resources.limits, "memory").map(|m| (m + 999) / 1000);
    Resources {
        memory_limit: memory_limit.and_then(|m| i64::try_from(m).ok()),
        cpu_shares: Some(cpu_request.map_or(2, |m| ((m * 1024) / 1000).max(2) as u64)),
        cpu_quota: cpu_limit.map(|m| ((m * 100_000) / 1000).max(1000) as i64),
        cpu_period: cpu_limit.map(|_| 100_000),
        pids_limit: None,
    }
}

/// Kubernetes' QoS class: Guaranteed (every container's cpu and memory limits equal their requests),
/// BestEffort (no requests or limits anywhere), else Burstable.
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = pod.spec.clone().unwrap_or_default();
    let containers: Vec<Container> = spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .chain(spec.containers)
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for container in &containers {
        let resources = container.resources.clone().unwrap_or_default();
        let requests = resources.requests.unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        for name in ["cpu", "memory"] {
            let request = requests
                .get(name)
                .and_then(|q| quantity::milli(&q.0))
                .filter(|v| *v > 0);
            let limit = limits
                .get(name)
                .and_then(|q| quantity::milli(&q.0))
                .filter(|v| *v > 0);
            any |= request.is_some() || limit.is_some();
            // A limit alone counts as the request (the API server defaults requests to limits).
            if limit.is_none() || request.is_some_and(|r| Some(r) != limit) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// How long to wait before starting again a container that has been restarted `restarts` times already: the
/// first restart at once, then 10 s doubling, at most 5 minutes (the kubelet's CrashLoopBackOff).
pub fn backoff(restarts: u32) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    let shift = (restarts - 1).min(10);
    (INITIAL_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
}

/// Whether a container that ended with `exit_code` starts again under `restart_policy`.
pub fn restarts_after(restart_policy: &str, exit_code: i32) -> bool {
    match restart_policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The Kubernetes state of one attempt.
fn state_of(info: &ContainerInfo, id: &str, container: &Container) -> Value {
    match &info.state {
        State::Created => json!({"waiting": {"reason": "ContainerCreating"}}),
        State::Running(started) => json!({"running": {"startedAt": whole_seconds(&started.started_at)}}),
        State::Exited(started, exited) => {
            let mut terminated = json!({"exitCode": exited.exit_code, "reason": exited.reason,
                "finishedAt": whole_seconds(&exited.finished_at), "containerID": format!("bonsai://{id}")});
            if let Some(started) = started {
                terminated["startedAt"] = json!(whole_seconds(&started.started_at));
            }
            // The container's own termination message first, then what the runtime says (a start error).
            let file = container
                .termination_message_path
                .as_deref()
                .and_then(|path| info.config.mounts.iter().find(|m| m.destination == path))
                .map(|m| m.source.as_path());
            let message = crate::lifecycle::termination_message(
                file,
                container.termination_message_policy.as_deref(),
                exited.exit_code,
                &info.log_path,
            );
            if let Some(message) = message {
                terminated["message"] = json!(message);
            } else if !exited.message.is_empty() {
                terminated["message"] = json!(exited.message);
            }
            json!({"terminated": terminated})
        }
    }
}

/// What one pass decided for one container.
#[derive(Debug, Default)]
struct ContainerView {
    status: Value,
    running: bool,
    /// Ended and will not start again.
    done: Option<i32>,
}

impl Pods {
    pub fn new(
        client: kube::Client,
        config: PodsConfig,
        runtime: Arc<Runtime>,
        store: Arc<ContentStore>,
        puller: Puller,
        network_config: watch::Receiver<Option<PodNetworkConfig>>,
        exec: CliExec,
    ) -> Pods {
        let mut host = crate::volumes::VolumeHost::new(config.data_dir.join("agent"));
        let facts = crate::node::HostFacts::read(&config.data_dir);
        let memory_capacity = facts.memory_bytes;
        let (_, allocatable) = crate::node::resources(&facts);
        host.node_allocatable = serde_json::from_value(allocatable).unwrap_or_default();
        let node_allocatable = host.node_allocatable.clone();
        let volumes = crate::pod_volumes::PodVolumes::new(host, client.clone());
        Pods {
            memory_capacity,
            events: Arc::new(events::Recorder::on_host(
                client.clone(),
                "kubelet",
                &config.node_name,
            )),
            pull_failures: std::sync::Mutex::new(BTreeMap::new()),
            soft_thresholds: std::sync::Mutex::default(),
            host_ports: Mutex::new(BTreeMap::new()),
            node_allocatable,
            volumes,
            client,
            config,
            runtime,
            store,
            puller,
            network_config,
            network: OnceCell::new(),
            started: Mutex::new(BTreeMap::new()),
            first_seen: std::sync::Mutex::new(BTreeMap::new()),
            probers: std::sync::Mutex::new(BTreeMap::new()),
            exec: Arc::new(exec),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime) -> Result<T, runtime::container::ContainerError> + Send + 'static,
    ) -> Result<T, KubeletError> {
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || f(&runtime))
            .await
            .map_err(|e| KubeletError::Invalid(format!("runtime task: {e}")))?
            .map_err(|e| KubeletError::Invalid(e.to_string()))
    }

    /// The pod network, once the node's network is ready.
    async fn network(&self) -> Result<Option<Arc<PodNetwork>>, KubeletError> {
        if let Some(network) = self.network.get() {
            return Ok(Some(network.clone()));
        }
        let Some(config) = self.network_config.borrow().clone() else {
            return Ok(None);
        };
        let network = PodNetwork::start(config)
            .await
            .map_err(|e| KubeletError::Invalid(format!("the pod network: {e}")))?;
        Ok(Some(
            self.network
                .get_or_init(|| async { Arc::new(network) })
                .await
                .clone(),
        ))
    }

    /// Watches the pods bound to this node and keeps each in step, one pass at a time per pod.
    pub async fn run(self: Arc<Self>) {
        crate::metrics::register();
        let api: Api<Pod> = Api::all(self.client.clone());
        let (cache, writer) = reflector::store::<Pod>();
        let selector = format!("spec.nodeName={}", self.config.node_name);
        let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(reflector::reflector(
                writer,
                watcher(api, watcher::Config::default().fields(&selector)).default_backoff()
            ));
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "watching this node's pods");
                }
                if changed_tx.send(()).is_err() {
                    return;
                }
            }
        });
        let busy: Arc<std::sync::Mutex<BTreeSet<String>>> = Arc::default();
        let mut eviction = tokio::time::interval(crate::eviction::INTERVAL);
        loop {
            tokio::select! {
                _ = changed.recv() => {}
                () = tokio::time::sleep(RESYNC) => {}
                _ = eviction.tick() => {
                    if crate::ready(&cache) {
                        self.eviction_round(&cache, &busy).await;
                    }
                    continue;
                }
            }
            if !crate::ready(&cache) {
                continue;
            }
            self.clone().sync_all(&cache, &busy).await;
        }
    }

    async fn sync_all(self: Arc<Self>, cache: &Store<Pod>, busy: &Arc<std::sync::Mutex<BTreeSet<String>>>) {
        let pods = cache.state();
        let known: BTreeSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        let start = |uid: String, job: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            let Ok(mut in_flight) = busy.lock() else { return };
            if !in_flight.insert(uid.clone()) {
                return;
            }
            let busy = busy.clone();
            tokio::spawn(async move {
                job.await;
                if let Ok(mut in_flight) = busy.lock() {
                    in_flight.remove(&uid);
                }
            });
        };
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            let this = self.clone();
            start(
                uid,
                Box::pin(async move {
                    if let Err(e) = this.sync(&pod).await {
                        tracing::warn!(pod = ?pod.metadata.name, error = %e, "syncing a pod");
                    }
                }),
            );
        }
        // Pods that are gone from the API (force-deleted, or deleted while the agent was down): their containers
        // and sandboxes go too.
        // (Only the runtime's container names are read here: their state is read by the passes.)
        let mut orphans: BTreeSet<String> = std::fs::read_dir(self.config.data_dir.join("agent/containers"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|id| id.split('_').next().map(String::from))
            .filter(|uid| !known.contains(uid))
            .collect();
        if let Ok(entries) = std::fs::read_dir(self.config.data_dir.join("agent/pods")) {
            orphans.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|uid| !known.contains(uid)),
            );
        }
        if let Ok(all) = self.blocking(|r| r.list()).await {
            crate::metrics::observe_containers(&all);
        }
        for uid in orphans {
            let this = self.clone();
            let id = uid.clone();
            start(
                uid,
                Box::pin(async move {
                    if let Err(e) = this.kill_pod(&id, None, Duration::from_secs(2)).await {
                        tracing::warn!(uid = %id, error = %e, "removing a gone pod's containers");
                    }
                }),
            );
        }
    }

    /// One round of the eviction manager: observe, publish the pressure, reclaim unused images under disk
    /// pressure, then evict one pod if a threshold is still crossed.
    async fn eviction_round(&self, cache: &Store<Pod>, busy: &Arc<std::sync::Mutex<BTreeSet<String>>>) {
        use crate::eviction::{Observed, Pressure, crossed, eviction_grace, eviction_rank};
        let config = &self.config.eviction;
        let due = |past: &[crate::eviction::Crossed]| match self.soft_thresholds.lock() {
            Ok(mut soft) => soft.due(config, past, std::time::Instant::now()),
            Err(_) => past.iter().filter(|c| c.hard).cloned().collect(),
        };
        let mut past = crossed(config, &Observed::read(&self.config.data_dir));
        // Conditions follow every crossed threshold; reclaiming and evicting only the due ones.
        self.config.pressure.send_if_modified(|pressure| {
            let now = Pressure::of(&past);
            let changed = *pressure != now;
            *pressure = now;
            changed
        });
        let mut acting = due(&past);
        if acting.iter().any(|c| c.threshold.signal.is_disk()) && self.collect_images().await {
            past = crossed(config, &Observed::read(&self.config.data_dir));
            acting = due(&past);
        }
        let Some(reason) = acting.first() else {
            return;
        };
        let mut candidates: Vec<Arc<Pod>> = cache
            .state()
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                let phase = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .unwrap_or_default();
                phase != "Succeeded" && phase != "Failed"
            })
            .collect();
        candidates.sort_by_key(|p| eviction_rank(qos_class(p)));
        for pod in candidates {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            // A pod in the middle of a pass is left for the next round.
            let claimed = busy
                .lock()
                .is_ok_and(|mut in_flight| in_flight.insert(uid.clone()));
            if !claimed {
                continue;
            }
            let pod_grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds);
            let grace = eviction_grace(config, reason, pod_grace);
            if let Err(e) = self.evict(&pod, &uid, &reason.message(), grace).await {
                tracing::warn!(pod = ?pod.metadata.name, error = %e, "evicting a pod");
            }
            if let Ok(mut in_flight) = busy.lock() {
                in_flight.remove(&uid);
            }
            // One pod per round, as the kubelet: the next round sees whether that was enough.
            return;
        }
    }

    /// Evicts a pod as the kubelet does: its containers are stopped within `grace` (none for a hard threshold)
    /// and the pod fails with reason `Evicted`; its controller makes a replacement.
    async fn evict(&self, pod: &Pod, uid: &str, message: &str, grace: Duration) -> Result<(), KubeletError> {
        tracing::warn!(pod = ?pod.metadata.name, %message, "evicting");
        self.event(
            "Warning",
            &events::Involved::of(pod),
            "Evicted",
            message.to_string(),
        );
        self.kill_pod(uid, Some(pod), grace).await?;
        let now = now_rfc3339();
        let status = json!({"phase": "Failed", "reason": "Evicted", "message": message,
        "conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                "message": message, "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "PodFailed", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "PodFailed", "lastTransitionTime": now},
        ]});
        self.write_status(pod, status).await
    }

    /// Removes the images no container of this node uses, and then the blobs and layers no image names (the
    /// kubelet's image GC, run under disk pressure). Returns whether anything was removed.
    async fn collect_images(&self) -> bool {
        let (runtime, store) = (self.runtime.clone(), self.store.clone());
        let collected = tokio::task::spawn_blocking(move || -> Result<usize, String> {
            let in_use: BTreeSet<String> = runtime
                .list()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|c| c.config.image)
                .collect();
            let mut removed = 0;
            for image in store.images().map_err(|e| e.to_string())? {
                if !in_use.contains(&image.name)
                    && store.remove_image(&image.name).map_err(|e| e.to_string())?
                {
                    tracing::info!(image = %image.name, "removed an unused image (disk pressure)");
                    removed += 1;
                }
            }
            let swept = store
                .collect_garbage(&BTreeSet::new())
                .map_err(|e| e.to_string())?;
            Ok(removed + swept.blobs + swept.layers)
        })
        .await;
        match collected {
            Ok(Ok(removed)) => removed > 0,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "image garbage collection");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "image garbage collection");
                false
            }
        }
    }

    /// Stops every container of the pod (its preStop hook, SIGTERM, then SIGKILL after `grace`), removes them, and
    /// removes the sandbox and its network. `pod` is `None` for a pod gone from the API (no hooks then).
    async fn kill_pod(&self, uid: &str, pod: Option<&Pod>, grace: Duration) -> Result<(), KubeletError> {
        let prefix = format!("{uid}_");
        let containers = self.blocking(move |r| r.list_prefixed(&prefix)).await?;
        let spec = pod.and_then(|p| p.spec.as_ref());
        let stops = containers.iter().map(|info| {
            let id = info.config.id.clone();
            // `<uid>_<name>_<attempt>`: the hook is the named container's, run only when it is running.
            let container = spec
                .and_then(|s| {
                    let name = id
                        .strip_prefix(&format!("{uid}_"))?
                        .rsplit_once('_')?
                        .0
                        .to_string();
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                        .find(|c| c.name == name)
                })
                .filter(|_| matches!(info.state, State::Running(_)));
            async move {
                if let Err(e) = self.stop_container(pod, container, &id, grace).await {
                    tracing::warn!(container = %id, error = %e, "stopping a container");
                }
            }
        });
        futures_util::future::join_all(stops).await;
        let ids: Vec<String> = containers.into_iter().map(|c| c.config.id).collect();
        for id in ids {
            self.blocking(move |r| r.remove(&id)).await?;
        }
        if let Some(network) = self.network().await? {
            network
                .teardown(uid)
                .await
                .map_err(|e| KubeletError::Invalid(format!("tearing down the pod network: {e}")))?;
        }
        self.set_host_ports(uid, Vec::new()).await?;
        // The volumes are unmounted first: removing the pod's directory stops at a mounted tmpfs.
        self.volumes
            .remove(uid)
            .await
            .map_err(|e| KubeletError::Invalid(format!("removing the pod's volumes: {e}")))?;
        sandbox::remove(&self.config.data_dir, uid)?;
        self.started.lock().await.remove(uid);
        if let Ok(mut first_seen) = self.first_seen.lock() {
            first_seen.remove(uid);
        }
        if let Ok(mut probers) = self.probers.lock() {
            probers.retain(|(pod, _), _| pod != uid);
        }
        Ok(())
    }

    /// Makes the node's host-port mappings hold `wanted` for the pod (the chains are rewritten only on a change).
    async fn set_host_ports(
        &self,
        uid: &str,
        wanted: Vec<network::hostports::HostPort>,
    ) -> Result<(), KubeletError> {
        let mut all = self.host_ports.lock().await;
        let current = all.get(uid).cloned().unwrap_or_default();
        if current == wanted {
            return Ok(());
        }
        let mut next = all.clone();
        if wanted.is_empty() {
            next.remove(uid);
        } else {
            next.insert(uid.to_string(), wanted);
        }
        let mut ports: Vec<_> = next.values().flatten().cloned().collect();
        ports.sort();
        tokio::task::spawn_blocking(move || network::hostports::apply(&ports))
            .await
            .map_err(|e| KubeletError::Invalid(format!("host ports: {e}")))?
            .map_err(|e| KubeletError::Invalid(format!("programming host ports: {e}")))?;
        // Recorded only once programmed: a failure is tried again on the next pass.
        *all = next;
        Ok(())
    }

    /// Records an event in the background: a pod's pass never waits for one.
    fn event(&self, type_: &'static str, about: &events::Involved, reason: &str, message: String) {
        let (recorder, about, reason) = (self.events.clone(), about.clone(), reason.to_string());
        tokio::spawn(async move {
            if type_ == "Warning" {
                recorder.warning(&about, &reason, message).await;
            } else {
                recorder.normal(&about, &reason, message).await;
            }
        });
    }

    /// Stops a container as the kubelet's `killContainer` does: its preStop hook first (within the grace period),
    /// then SIGTERM, and SIGKILL when what is left of the grace period (at least 2 s) has passed.
    async fn stop_container(
        &self,
        pod: Option<&Pod>,
        container: Option<&Container>,
        id: &str,
        grace: Duration,
    ) -> Result<(), KubeletError> {
        let mut grace = grace;
        if let (Some(pod), Some(container)) = (pod, container) {
            self.event(
                "Normal",
                &events::Involved::of(pod),
                "Killing",
                format!("Stopping container {}", container.name),
            );
        }
        if let (Some(pod), Some(container)) = (pod, container)
            && let Some(hook) = container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
        {
            let began = std::time::Instant::now();
            if let Err(message) =
                crate::lifecycle::run_hook(pod, container, id, hook, &*self.exec, grace).await
            {
                tracing::warn!(container = %id, %message, "FailedPreStopHook");
                self.event(
                    "Warning",
                    &events::Involved::of(pod),
                    "FailedPreStopHook",
                    message,
                );
            }
            grace = grace.saturating_sub(began.elapsed()).max(MINIMUM_GRACE);
        }
        let id = id.to_string();
        self.blocking(move |r| r.stop(&id, grace)).await
    }

    /// One pass over one pod.
    async fn sync(&self, pod: &Pod) -> Result<(), KubeletError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or(spec.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0);
            self.kill_pod(&uid, Some(pod), Duration::from_secs(grace as u64))
                .await?;
            // Everything is gone from the node: the API object may go now (the kubelet's final delete).
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            return match api.delete(&name, &params).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                Err(e) => Err(kube_error(format!("deleting pod {namespace}/{name}"))(e)),
            };
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            return Ok(());
        }
        if let Ok(mut first_seen) = self.first_seen.lock() {
            // A pod already running when the agent (re)starts has no start to time.
            let at = (phase != "Running").then(std::time::Instant::now);
            first_seen.entry(uid.clone()).or_insert(at);
        }
        let start_time = {
            let mut started = self.started.lock().await;
            let recorded = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.to_string());
            started
                .entry(uid.clone())
                .or_insert_with(|| recorded.unwrap_or_else(now_rfc3339))
                .clone()
        };
        // The sandbox: the network namespace and the pod's address, then the files every container mounts.
        let host_network = spec.host_network.unwrap_or(false);
        let pod_dir = sandbox::pod_dir(&self.config.data_dir, &uid);
        let netns = sandbox::netns_path(&self.config.data_dir, &uid);
        let mut pod_ips: Vec<String> = Vec::new();
        if host_network {
            pod_ips = self.config.host_ips.clone();
        } else {
            let Some(network) = self.network().await? else {
                return self
                    .write_status(pod, json!({"phase": "Pending", "startTime": start_time}))
                    .await;
            };
            let recorded = pod_dir.join("network.json");
            let addresses: PodAddresses = match std::fs::read(&recorded)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["ip"].as_str().map(String::from))
            {
                Some(ip) if sandbox::is_pinned(&netns) => {
                    pod_ips.push(ip);
                    PodAddresses {
                        id: uid.clone(),
                        ip: pod_ips[0]
                            .parse()
                            .map_err(|_| KubeletError::Invalid("bad recorded address".into()))?,
                        prefix_len: 0,
                        gateway: std::net::Ipv4Addr::UNSPECIFIED,
                        host_interface: String::new(),
                    }
                }
                _ => {
                    sandbox::create_netns(&netns)?;
                    let addresses = network
                        .setup(&uid, &netns)
                        .await
                        .map_err(|e| KubeletError::Invalid(format!("setting up the pod network: {e}")))?;
                    sandbox::write_file(
                        &recorded,
                        &serde_json::to_string(&addresses)
                            .map_err(|e| KubeletError::Invalid(e.to_string()))?,
                    )?;
                    pod_ips.push(addresses.ip.to_string());
                    addresses
                }
            };
            let _ = addresses;
        }
        if !host_network {
            let wanted = pod_host_ports(&spec, pod_ips.first().and_then(|ip| ip.parse().ok()));
            self.set_host_ports(&uid, wanted).await?;
        }
        let domain = self.config.dns.domain.clone();
        let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let (hostname, _) = crate::dns::pod_hostname(pod, &domain);
        sandbox::write_file(
            &pod_dir.join("etc-hosts"),
            &crate::dns::pod_hosts_file(pod, &pod_ips, &domain, &host_hosts),
        )?;
        sandbox::write_file(
            &pod_dir.join("resolv.conf"),
            &crate::dns::pod_resolv_conf(pod, &self.config.dns).render(),
        )?;
        sandbox::write_file(&pod_dir.join("hostname"), &format!("{hostname}\n"))?;
        // The volumes, before any container: a volume that cannot be made keeps them all waiting
        // (ContainerCreating), as the kubelet's WaitForAttachAndMount does.
        let volumes = match self.volumes.ensure(pod).await {
            Ok(volumes) => volumes,
            Err(e) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "FailedMount");
                self.event(
                    "Warning",
                    &events::Involved::of(pod),
                    "FailedMount",
                    e.to_string(),
                );
                let creating = |c: &Container| {
                    json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
                        "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}})
                };
                let mut status = json!({"phase": "Pending", "startTime": start_time,
                    "containerStatuses": spec.containers.iter().map(creating).collect::<Vec<_>>()});
                if let Some(init) = &spec.init_containers {
                    status["initContainerStatuses"] = json!(init.iter().map(creating).collect::<Vec<_>>());
                }
                self.write_status(pod, status).await?;
                return Err(KubeletError::Invalid(e.to_string()));
            }
        };

        let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let prefix = format!("{uid}_");
        let all = self.blocking(move |r| r.list_prefixed(&prefix)).await?;
        let attempts = attempts_by_name(&uid, &all);
        // Fetched only when a container is to start (each pass would otherwise read the API for every pod).
        let inputs = tokio::sync::OnceCell::new();
        let network_namespace = if host_network {
            PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))
        } else {
            netns.clone()
        };
        let context = StartContext {
            pod,
            uid: &uid,
            hostname: &hostname,
            network_namespace: &network_namespace,
            pod_dir: &pod_dir,
            inputs: &inputs,
            namespace: &namespace,
            pod_ips: &pod_ips,
            volumes: &volumes,
        };

        // Init containers, one after another, each to success; a restartable one (a sidecar, `restartPolicy:
        // Always`) only to started, and it keeps running beside the app containers. Once an app container has
        // been started the pod stays initialized: a sidecar's restart does not hold the app containers back.
        let app_started = spec.containers.iter().any(|c| attempts.contains_key(&c.name));
        let mut init_statuses = Vec::new();
        let mut sidecars = Vec::new();
        let mut initialized = true;
        let mut init_failed = false;
        for container in spec.init_containers.iter().flatten() {
            let sidecar = container.restart_policy.as_deref() == Some("Always");
            let kept_anyway = sidecar && app_started;
            if !(initialized || kept_anyway) {
                init_statuses.push(
                    json!({"name": container.name, "image": container.image, "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}),
                );
                continue;
            }
            if sidecar {
                let view = self
                    .keep_container(&context, container, attempts.get(&container.name), "Always")
                    .await;
                let started = view.running && view.status["started"] == true;
                if !(started || app_started) {
                    initialized = false;
                }
                init_statuses.push(view.status.clone());
                sidecars.push((container, view));
                continue;
            }
            // Init containers restart on failure unless the pod never restarts.
            let policy = if restart_policy == "Never" {
                "Never"
            } else {
                "OnFailure"
            };
            let view = self
                .keep_container(&context, container, attempts.get(&container.name), policy)
                .await;
            init_statuses.push(view.status.clone());
            match view.done {
                Some(0) => {}
                Some(_) => {
                    initialized = false;
                    init_failed = true;
                }
                None => initialized = false,
            }
        }
        // App containers, once initialized.
        let mut statuses = Vec::new();
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for container in &spec.containers {
            let view = if initialized {
                self.keep_container(
                    &context,
                    container,
                    attempts.get(&container.name),
                    &restart_policy,
                )
                .await
            } else {
                ContainerView {
                    status: json!({"name": container.name, "image": container.image, "ready": false,
                        "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}),
                    ..ContainerView::default()
                }
            };
            if view.running {
                running += 1;
            } else if let Some(code) = view.done {
                stopped += 1;
                if code == 0 {
                    succeeded += 1;
                }
            } else if view.status.pointer("/lastState/terminated").is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
            statuses.push(view.status);
        }
        // kubelet's getPhase.
        let total = spec.containers.len();
        let phase = if init_failed && restart_policy == "Never" {
            "Failed"
        } else if !initialized || waiting > 0 {
            "Pending"
        } else if running == 0 && stopped == total && restart_policy != "Always" && succeeded == total {
            "Succeeded"
        } else if running == 0 && stopped == total && restart_policy == "Never" {
            "Failed"
        } else {
            // Something runs, or everything is being restarted.
            "Running"
        };
        // Sidecars count towards readiness; once the app containers are done for good, they are stopped too.
        let all_ready = statuses.iter().all(|s| s["ready"] == true)
            && sidecars.iter().all(|(_, view)| view.status["ready"] == true)
            && !statuses.is_empty();
        if phase == "Succeeded" || phase == "Failed" {
            let grace =
                Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
            for (container, view) in sidecars.iter().filter(|(_, view)| view.running) {
                let Some(id) = view.status["containerID"]
                    .as_str()
                    .and_then(|c| c.strip_prefix("bonsai://"))
                else {
                    continue;
                };
                if let Err(e) = self.stop_container(Some(pod), Some(container), id, grace).await {
                    tracing::warn!(container = %id, error = %e, "stopping a sidecar");
                }
            }
        }
        let now = now_rfc3339();
        let condition = |kind: &str, ok: bool, reason: Option<&str>| {
            let previous = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == kind))
                .filter(|c| c.status == if ok { "True" } else { "False" })
                .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0.to_string()));
            let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" },
                "lastTransitionTime": previous.unwrap_or_else(|| now.clone()), "lastProbeTime": null});
            if let (false, Some(reason)) = (ok, reason) {
                c["reason"] = json!(reason);
            }
            c
        };
        let terminal = phase == "Succeeded" || phase == "Failed";
        let containers_ready = all_ready && !terminal;
        let status = json!({
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", !terminal, None),
                condition("Initialized", initialized, Some("ContainersNotInitialized")),
                condition("ContainersReady", containers_ready, Some(if terminal { "PodCompleted" } else { "ContainersNotReady" })),
                condition("Ready", containers_ready, Some(if terminal { "PodCompleted" } else { "ContainersNotReady" })),
            ],
            "hostIP": self.config.host_ips.first(),
            "hostIPs": self.config.host_ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "podIP": pod_ips.first(),
            "podIPs": pod_ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "startTime": start_time,
            "qosClass": qos_class(pod),
            "initContainerStatuses": init_statuses,
            "containerStatuses": statuses,
        });
        self.write_status(pod, status).await?;
        if phase == "Running"
            && let Ok(mut first_seen) = self.first_seen.lock()
            && let Some(seen) = first_seen.get_mut(&uid).and_then(Option::take)
        {
            crate::metrics::pod_started(::metrics::seconds_since(seen));
        }
        if terminal && !host_network {
            // A finished pod keeps its containers (for logs) but gives back its address, as the kubelet does.
            if let Some(network) = self.network().await? {
                let _ = network.teardown(&uid).await;
            }
            let _ = std::fs::remove_file(pod_dir.join("network.json"));
            self.set_host_ports(&uid, Vec::new()).await?;
            sandbox::remove_netns(&netns)?;
        }
        Ok(())
    }

    /// The objects the pod's environments refer to, and the Services whose variables they get.
    async fn env_inputs(
        &self,
        pod: &Pod,
        namespace: &str,
        pod_ips: &[String],
    ) -> Result<crate::env::EnvInputs, KubeletError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut inputs = crate::env::EnvInputs {
            host_ips: self.config.host_ips.clone(),
            pod_ips: pod_ips.to_vec(),
            node_allocatable: self.node_allocatable.clone(),
            ..Default::default()
        };
        let (mut config_maps, mut secrets) = (BTreeSet::new(), BTreeSet::new());
        for container in spec.init_containers.iter().flatten().chain(&spec.containers) {
            let (c, s) = crate::env::references(container);
            config_maps.extend(c);
            secrets.extend(s);
        }
        let config_map_api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        for name in config_maps {
            if let Some(found) = config_map_api
                .get_opt(&name)
                .await
                .map_err(kube_error(format!("reading configmap {namespace}/{name}")))?
            {
                inputs.config_maps.insert(name, found);
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        for name in secrets {
            if let Some(found) = secret_api
                .get_opt(&name)
                .await
                .map_err(kube_error(format!("reading secret {namespace}/{name}")))?
            {
                inputs.secrets.insert(name, found);
            }
        }
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        inputs.services = services
            .list(&Default::default())
            .await
            .map_err(kube_error(format!("listing services in {namespace}")))?
            .items;
        if namespace != "default" {
            let default: Api<Service> = Api::namespaced(self.client.clone(), "default");
            inputs.services.extend(
                default
                    .get_opt("kubernetes")
                    .await
                    .map_err(kube_error("reading service default/kubernetes"))?,
            );
        }
        Ok(inputs)
    }

    async fn write_status(&self, pod: &Pod, status: Value) -> Result<(), KubeletError> {
        let current = serde_json::to_value(&pod.status).unwrap_or_default();
        if status_unchanged(&current, &status) {
            return Ok(());
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        // A strategic merge patch keeps the conditions others own (PodScheduled) by their `type`.
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(&json!({"status": status})),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(kube_error(format!(
                "writing the status of pod {namespace}/{name}"
            ))(e)),
        }
    }

    /// Keeps one container as its restart policy says: starts it (again, after its back-off) when it is not
    /// running, and reports its status.
    async fn keep_container(
        &self,
        context: &StartContext<'_>,
        container: &Container,
        attempts: Option<&Vec<(u32, ContainerInfo)>>,
        restart_policy: &str,
    ) -> ContainerView {
        let base = |state: Value, restarts: u32, last: Option<Value>, ready: bool, started: bool| {
            let mut status = json!({"name": container.name, "image": container.image, "imageID": "",
                "ready": ready, "started": started, "restartCount": restarts, "state": state});
            if let Some(last) = last {
                status["lastState"] = last;
            }
            status
        };
        let latest = attempts.and_then(|a| a.last());
        let restarts = attempts.map_or(0, |a| a.len().saturating_sub(1) as u32);
        let last_state = attempts
            .and_then(|a| a.len().checked_sub(2).and_then(|i| a.get(i)))
            .map(|(n, info)| state_of(info, &container_id(context.uid, &container.name, *n), container));
        let next_attempt = latest.map_or(0, |(n, _)| n + 1);
        if let Some((n, info)) = latest {
            let id = container_id(context.uid, &container.name, *n);
            let mut state = state_of(info, &id, container);
            match &info.state {
                State::Running(started) => {
                    let (ready, started_probe, restart, probe_events) =
                        self.probe(context, container, &id, &started.started_at);
                    let about = events::Involved::of(context.pod);
                    for event in probe_events {
                        self.event("Warning", &about, event.reason, event.message);
                    }
                    if let Some(grace) = restart {
                        self.event(
                            "Normal",
                            &about,
                            "Killing",
                            format!(
                                "Container {} failed liveness probe, will be restarted",
                                container.name
                            ),
                        );
                        // A failed liveness (or startup) probe: kill it; the next pass restarts it as its policy
                        // says.
                        tracing::info!(container = %id, "failed its liveness probe, will be restarted");
                        let grace = Duration::from_secs(grace.max(0) as u64);
                        if let Err(e) = self
                            .stop_container(Some(context.pod), Some(container), &id, grace)
                            .await
                        {
                            tracing::warn!(container = %id, error = %e, "stopping a container");
                        }
                    }
                    let mut status = base(state, restarts, last_state, ready, started_probe);
                    status["containerID"] = json!(format!("bonsai://{id}"));
                    status["imageID"] = json!(info.config.image);
                    return ContainerView {
                        status,
                        running: true,
                        done: None,
                    };
                }
                State::Exited(started, exited) => {
                    if !restarts_after(restart_policy, exited.exit_code) {
                        let mut status = base(state, restarts, last_state, false, false);
                        status["containerID"] = json!(format!("bonsai://{id}"));
                        return ContainerView {
                            status,
                            running: false,
                            done: Some(exited.exit_code),
                        };
                    }
                    // Back off before starting it again, unless it had run long enough to reset the back-off.
                    let ran = started
                        .as_ref()
                        .and_then(|s| seconds_between(&s.started_at, &exited.finished_at));
                    let delay = if ran.is_some_and(|secs| secs >= BACKOFF_RESET.as_secs_f64()) {
                        Duration::ZERO
                    } else {
                        backoff(restarts)
                    };
                    if seconds_since(&exited.finished_at).is_some_and(|s| s < delay.as_secs_f64()) {
                        // One event per back-off (its count rises while it lasts), as the kubelet's BackOff.
                        self.event(
                            "Warning",
                            &events::Involved::of(context.pod),
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {} in pod {}",
                                container.name,
                                crate::lifecycle::format_pod(context.pod)
                            ),
                        );
                        let waiting = json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!(
                            "back-off {}s restarting failed container={} pod={}", delay.as_secs(), container.name,
                            crate::lifecycle::format_pod(context.pod))}});
                        return ContainerView {
                            status: base(waiting, restarts, Some(state), false, false),
                            running: false,
                            done: None,
                        };
                    }
                    state = state_of(info, &id, container);
                    return self
                        .start_container(context, container, next_attempt, restarts + 1, Some(state))
                        .await;
                }
                State::Created => {}
            }
        }
        self.start_container(context, container, next_attempt, restarts, last_state)
            .await
    }

    /// (ready, started, kill with this grace) for a running container: from its probe workers when it has probes
    /// (started once its startup probe passed, ready while its readiness probe passes), else running is both.
    fn probe(
        &self,
        context: &StartContext<'_>,
        container: &Container,
        id: &str,
        started_at: &str,
    ) -> (bool, bool, Option<i64>, Vec<crate::probes::ProbeEvent>) {
        let has_probes = container.liveness_probe.is_some()
            || container.readiness_probe.is_some()
            || container.startup_probe.is_some();
        if !has_probes {
            return (true, true, None, Vec::new());
        }
        let running_for = seconds_since(started_at).unwrap_or(0.0).max(0.0);
        let started = tokio::time::Instant::now()
            .checked_sub(Duration::from_secs_f64(running_for))
            .unwrap_or_else(tokio::time::Instant::now);
        let observed = crate::probes::ContainerObservation {
            pod_ip: context.pod_ips.first().cloned().unwrap_or_default(),
            container_id: Some(id.to_string()),
            state: crate::probes::ObservedState::Running { started_at: started },
            pod_finished: false,
            pod_deleting: false,
        };
        let Ok(mut probers) = self.probers.lock() else {
            return (false, false, None, Vec::new());
        };
        let key = (context.uid.to_string(), container.name.clone());
        let prober = probers.entry(key).or_insert_with(|| {
            crate::probes::ContainerProber::spawn(
                crate::probes::ContainerProbeConfig::new(context.pod, container),
                observed.clone(),
                self.exec.clone(),
            )
        });
        prober.observe(observed);
        let mut events = Vec::new();
        while let Ok(event) = prober.events().try_recv() {
            events.push(event);
        }
        let status = prober.current();
        if status.container_id.as_deref() != Some(id) {
            return (false, false, None, events);
        }
        let restart = status
            .restart
            .filter(|verdict| verdict.container_id == id)
            .map(|verdict| verdict.grace_period_seconds);
        (status.ready, status.started, restart, events)
    }

    async fn start_container(
        &self,
        context: &StartContext<'_>,
        container: &Container,
        attempt: u32,
        restarts: u32,
        last_state: Option<Value>,
    ) -> ContainerView {
        let waiting = |reason: &str, message: String| {
            let mut status = json!({"name": container.name, "image": container.image, "imageID": "",
                "ready": false, "started": false, "restartCount": restarts,
                "state": {"waiting": {"reason": reason, "message": message}}});
            if let Some(last) = &last_state {
                status["lastState"] = last.clone();
            }
            ContainerView {
                status,
                running: false,
                done: None,
            }
        };
        let image = match self.ensure_image(context.pod, container).await {
            Ok(image) => image,
            Err((reason, message)) => return waiting(reason, message),
        };
        let inputs = match context
            .inputs
            .get_or_try_init(|| self.env_inputs(context.pod, context.namespace, context.pod_ips))
            .await
        {
            Ok(inputs) => inputs,
            Err(e) => return waiting("CreateContainerConfigError", e.to_string()),
        };
        let env = match crate::env::container_environment(context.pod, container, inputs) {
            Ok(env) => env,
            Err(e) => return waiting("CreateContainerConfigError", e.to_string()),
        };
        let volume_mounts = match crate::pod_volumes::container_mounts(container, context.volumes, &env) {
            Ok(mounts) => mounts,
            Err(e) => return waiting("CreateContainerConfigError", e.to_string()),
        };
        let pod = context.pod;
        let id = container_id(context.uid, &container.name, attempt);
        let mut config = ContainerConfig::new(&id, &image);
        config.command = container.command.clone();
        config.args = container.args.clone();
        config.env = env;
        config.working_dir = container.working_dir.clone().filter(|w| !w.is_empty());
        let security = container.security_context.clone().unwrap_or_default();
        let pod_security = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let user = security.run_as_user.or(pod_security.run_as_user);
        let group = security.run_as_group.or(pod_security.run_as_group);
        config.user = user.map(|u| match group {
            Some(g) => format!("{u}:{g}"),
            None => u.to_string(),
        });
        let non_root = security.run_as_non_root.or(pod_security.run_as_non_root) == Some(true);
        if non_root && let Err(message) = self.verify_run_as_non_root(context.pod, container, &image, user) {
            return waiting("CreateContainerConfigError", message);
        }
        config.hostname = Some(context.hostname.to_string());
        config.network_namespace = Some(context.network_namespace.to_path_buf());
        config.mounts = vec![
            BindMount {
                source: context.pod_dir.join("etc-hosts"),
                destination: "/etc/hosts".into(),
                readonly: false,
            },
            BindMount {
                source: context.pod_dir.join("resolv.conf"),
                destination: "/etc/resolv.conf".into(),
                readonly: false,
            },
            BindMount {
                source: context.pod_dir.join("hostname"),
                destination: "/etc/hostname".into(),
                readonly: false,
            },
        ];
        config.mounts.extend(volume_mounts);
        // The termination message file, one per attempt, writable by any user the container runs as.
        if let Some(path) = container
            .termination_message_path
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            let file = context.pod_dir.join("termination").join(&id);
            if let Err(e) = create_world_writable(&file) {
                return waiting("CreateContainerConfigError", e.to_string());
            }
            config.mounts.push(BindMount {
                source: file,
                destination: path.to_string(),
                readonly: false,
            });
        }
        // fsGroup and supplementalGroups join the process's groups (the volumes' files are fsGroup's).
        config.additional_gids = pod_security
            .fs_group
            .into_iter()
            .chain(pod_security.supplemental_groups.iter().flatten().copied())
            .filter_map(|g| u32::try_from(g).ok())
            .collect();
        config.resources = container_resources(container);
        // The kubelet's QoS hierarchy: Guaranteed pods directly under the pods' cgroup, the others under
        // `burstable/` and `besteffort/`; and its OOM score adjustments, so that the kernel kills BestEffort first.
        let qos = qos_class(pod);
        config.cgroup_parent = match qos {
            "Guaranteed" => format!("bonsai/pods/pod{}", context.uid),
            "Burstable" => format!("bonsai/pods/burstable/pod{}", context.uid),
            _ => format!("bonsai/pods/besteffort/pod{}", context.uid),
        };
        config.oom_score_adj = Some(oom_score_adj(qos, container, self.memory_capacity));
        config.readonly_rootfs = security.read_only_root_filesystem.unwrap_or(false);
        config.privileged = security.privileged.unwrap_or(false);
        config.no_new_privileges = security.allow_privilege_escalation == Some(false);
        if let Some(capabilities) = &security.capabilities {
            config.capabilities_add = capabilities.add.clone().unwrap_or_default();
            config.capabilities_drop = capabilities.drop.clone().unwrap_or_default();
        }
        config.stdin = container.stdin.unwrap_or(false);
        config.stdin_once = container.stdin_once.unwrap_or(false);
        config.tty = container.tty.unwrap_or(false);
        let seccomp = security.seccomp_profile.or(pod_security.seccomp_profile);
        config.seccomp = match seccomp.as_ref().map(|s| s.type_.as_str()) {
            Some("RuntimeDefault") => runtime::container::seccomp::Seccomp::RuntimeDefault,
            Some("Localhost") => runtime::container::seccomp::Seccomp::Localhost(
                self.config
                    .data_dir
                    .join("agent/seccomp")
                    .join(seccomp.and_then(|s| s.localhost_profile).unwrap_or_default()),
            ),
            _ => runtime::container::seccomp::Seccomp::Unconfined,
        };
        config.log_path = Some(runtime::container::pod_log_path(
            &self.config.pod_logs_dir,
            &pod.metadata.namespace.clone().unwrap_or_default(),
            &pod.metadata.name.clone().unwrap_or_default(),
            context.uid,
            &container.name,
            restarts,
        ));
        match self.blocking(move |r| r.run(config)).await {
            Ok(info) => {
                let running = matches!(info.state, State::Running(_));
                if running {
                    let about = events::Involved::of(pod);
                    self.event(
                        "Normal",
                        &about,
                        "Created",
                        format!("Created container: {}", container.name),
                    );
                    self.event(
                        "Normal",
                        &about,
                        "Started",
                        format!("Started container {}", container.name),
                    );
                }
                // postStart runs before the container counts as started; if it fails the container is killed
                // and restarts as its policy says (kubelet's FailedPostStartHook).
                if let (true, Some(hook)) = (
                    running,
                    container.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()),
                ) && let Err(message) =
                    crate::lifecycle::run_hook(pod, container, &id, hook, &*self.exec, POST_START_TIMEOUT)
                        .await
                {
                    tracing::warn!(container = %id, %message, "FailedPostStartHook");
                    self.event(
                        "Warning",
                        &events::Involved::of(pod),
                        "FailedPostStartHook",
                        message.clone(),
                    );
                    let grace = Duration::from_secs(
                        pod.spec
                            .as_ref()
                            .and_then(|s| s.termination_grace_period_seconds)
                            .unwrap_or(30)
                            .max(0) as u64,
                    );
                    if let Err(e) = self.stop_container(None, None, &id, grace).await {
                        tracing::warn!(container = %id, error = %e, "stopping a container");
                    }
                    return waiting("PostStartHookError", message);
                }
                let state = state_of(&info, &id, container);
                let mut status = json!({"name": container.name, "image": container.image, "imageID": image,
                    "containerID": format!("bonsai://{id}"), "ready": running, "started": running,
                    "restartCount": restarts, "state": state});
                if let Some(last) = last_state {
                    status["lastState"] = last;
                }
                ContainerView {
                    status,
                    running,
                    done: None,
                }
            }
            Err(e) => waiting("RunContainerError", e.to_string()),
        }
    }

    /// The registry credentials of the pod's `imagePullSecrets` (`kubernetes.io/dockerconfigjson` and
    /// `kubernetes.io/dockercfg` Secrets), in order. A secret that is missing or unreadable is skipped with a
    /// warning event, as the kubelet does.
    async fn pull_credentials(&self, pod: &Pod) -> Vec<runtime::pull::Credential> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let mut credentials = Vec::new();
        let names = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default();
        for name in names.into_iter().map(|r| r.name) {
            match secrets.get_opt(&name).await {
                Ok(Some(secret)) => credentials.extend(docker_credentials(&secret)),
                Ok(None) => self.event(
                    "Warning",
                    &events::Involved::of(pod),
                    "FailedToRetrieveImagePullSecret",
                    format!(
                        "Unable to retrieve some image pull secrets ({name}); attempting to pull the image may not \
                         succeed."
                    ),
                ),
                Err(e) => tracing::warn!(secret = %name, error = %e, "reading an image pull secret"),
            }
        }
        credentials
    }

    /// kubelet's `verifyRunAsNonRoot`: the user the container runs as must be known not to be root, from
    /// `runAsUser` or else from the image's numeric `User` (a name cannot be verified; /etc/passwd is not read).
    fn verify_run_as_non_root(
        &self,
        pod: &Pod,
        container: &Container,
        image: &str,
        run_as_user: Option<i64>,
    ) -> Result<(), String> {
        let who = format!(
            "(pod: {:?}, container: {})",
            crate::lifecycle::format_pod(pod),
            container.name
        );
        if let Some(uid) = run_as_user {
            return if uid == 0 {
                Err(format!("container's runAsUser breaks non-root policy {who}"))
            } else {
                Ok(())
            };
        }
        let user = self
            .store
            .image(image)
            .ok()
            .flatten()
            .and_then(|record| self.store.read_blob(&record.config_digest).ok())
            .and_then(|blob| serde_json::from_slice::<Value>(&blob).ok())
            .and_then(|config| {
                config
                    .pointer("/config/User")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .unwrap_or_default();
        let name = user.split(':').next().unwrap_or_default();
        match name.parse::<u64>() {
            Ok(0) => Err(format!(
                "container has runAsNonRoot and image will run as root {who}"
            )),
            Ok(_) => Ok(()),
            Err(_) if name.is_empty() => Err(format!(
                "container has runAsNonRoot and image will run as root {who}"
            )),
            Err(_) => Err(format!(
                "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root \
                 {who}"
            )),
        }
    }

    /// The image in the store under its full name, pulled first when absent or when the policy says Always. A
    /// failed pull is not tried again before its back-off (10 s doubling to 5 min, per pod and image), as the kubelet's
    /// image puller: in between the container waits in ImagePullBackOff.
    async fn ensure_image(&self, pod: &Pod, container: &Container) -> Result<String, (&'static str, String)> {
        let about = events::Involved::of(pod);
        let reference = container.image.clone().unwrap_or_default();
        let name = runtime::image_name(&reference).map_err(|e| ("InvalidImageName", e.to_string()))?;
        let present = self
            .store
            .image(&name)
            .map_err(|e| ("ErrImagePull", e.to_string()))?
            .is_some();
        let policy = container
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| "IfNotPresent".into());
        match (policy.as_str(), present) {
            ("Never", false) => {
                let message =
                    format!("Container image \"{reference}\" is not present with pull policy of Never");
                self.event("Warning", &about, "ErrImageNeverPull", message.clone());
                Err(("ErrImageNeverPull", message))
            }
            ("Always", _) | (_, false) => {
                // Keyed by pod and image, as the kubelet's back-off (`<pod uid>_<image>`).
                let key = format!("{}_{reference}", pod.metadata.uid.as_deref().unwrap_or_default());
                let backing_off = self.pull_failures.lock().ok().and_then(|failures| {
                    failures
                        .get(&key)
                        .filter(|(count, at)| at.elapsed() < backoff(*count))
                        .map(|_| ())
                });
                if backing_off.is_some() {
                    let message = format!("Back-off pulling image \"{reference}\"");
                    self.event("Normal", &about, "BackOff", message.clone());
                    return Err(("ImagePullBackOff", message));
                }
                self.event(
                    "Normal",
                    &about,
                    "Pulling",
                    format!("Pulling image \"{reference}\""),
                );
                let began = std::time::Instant::now();
                let credentials = self.pull_credentials(pod).await;
                match self
                    .puller
                    .pull_with(&reference, &runtime::pull::Quiet, &credentials)
                    .await
                {
                    Ok(record) => {
                        if let Ok(mut failures) = self.pull_failures.lock() {
                            failures.remove(&key);
                        }
                        let took = began.elapsed().as_secs_f64();
                        crate::metrics::image_pulled(took, record.size);
                        self.event("Normal", 
                                &about,
                                "Pulled",
                                format!(
                                    "Successfully pulled image \"{reference}\" in {took:.3}s. Image size: {} bytes.",
                                    record.size
                                ),
                            );
                        Ok(record.name)
                    }
                    Err(e) => {
                        if let Ok(mut failures) = self.pull_failures.lock() {
                            let entry = failures.entry(key.clone()).or_insert((0, began));
                            *entry = (entry.0 + 1, std::time::Instant::now());
                        }
                        crate::metrics::image_pull_failed();
                        let message = format!("Failed to pull image \"{reference}\": {e}");
                        self.event("Warning", &about, "Failed", message.clone());
                        Err(("ErrImagePull", message))
                    }
                }
            }
            _ => {
                self.event(
                    "Normal",
                    &about,
                    "Pulled",
                    format!("Container image \"{reference}\" already present on machine"),
                );
                Ok(name)
            }
        }
    }
}

/// The credentials in a docker config Secret: `.dockerconfigjson` (`{"auths": {registry: ...}}`) or the older
/// `.dockercfg` (`{registry: ...}`), each entry with `username`/`password` or `auth` (base64 of `user:password`).
fn docker_credentials(secret: &Secret) -> Vec<runtime::pull::Credential> {
    use base64::Engine as _;
    let data = secret.data.clone().unwrap_or_default();
    let entries = if let Some(config) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<Value>(&config.0)
            .ok()
            .and_then(|v| v.get("auths").cloned())
    } else {
        data.get(".dockercfg")
            .and_then(|config| serde_json::from_slice::<Value>(&config.0).ok())
    };
    let Some(Value::Object(entries)) = entries else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|(registry, entry)| {
            let field = |name: &str| entry.get(name).and_then(Value::as_str).filter(|v| !v.is_empty());
            let (username, password) = match (field("username"), field("password"), field("auth")) {
                (Some(user), Some(password), _) => (user.to_string(), password.to_string()),
                (_, _, Some(auth)) => {
                    let decoded = base64::engine::general_purpose::STANDARD.decode(auth).ok()?;
                    let decoded = String::from_utf8(decoded).ok()?;
                    let (user, password) = decoded.split_once(':')?;
                    (user.to_string(), password.to_string())
                }
                _ => return None,
            };
            Some(runtime::pull::Credential {
                registry,
                username,
                password,
            })
        })
        .collect()
}

/// The kubelet's `GetContainerOOMScoreAdjust`: -997 for Guaranteed, 1000 for BestEffort, and for Burstable
/// `1000 - 1000 * memory request / node memory`, kept within 3..=999 so it stays between the two.
fn oom_score_adj(qos: &str, container: &Container, memory_capacity: u64) -> i32 {
    match qos {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let request = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("memory"))
                .and_then(|q| quantity::value(&q.0))
                .unwrap_or(0);
            let capacity = i128::from(memory_capacity.max(1));
            let adjust = 1000 - (1000 * request) / capacity;
            adjust.clamp(3, 999) as i32
        }
    }
}

/// The host ports a pod's containers ask for, mapped to its address (none before it has one).
fn pod_host_ports(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    pod_ip: Option<std::net::Ipv4Addr>,
) -> Vec<network::hostports::HostPort> {
    let Some(pod_ip) = pod_ip else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let mut ports: Vec<_> = spec
        .containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(network::hostports::HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                host_ip: p.host_ip.as_deref().and_then(|ip| ip.parse().ok()),
                host_port: u16::try_from(p.host_port.filter(|port| *port > 0)?).ok()?,
                pod_ip,
                container_port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect();
    ports.sort();
    ports
}

/// Makes an empty file anyone may write (the container's user may not be root); an existing one is kept.
fn create_world_writable(path: &std::path::Path) -> Result<(), KubeletError> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |source| KubeletError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(failed)
}

/// The pod's status already says everything this pass would write: conditions are compared by their `type`
/// (others own some of them, such as PodScheduled, and the strategic merge keeps those), the rest member by
/// member. Writing only on a change keeps a node of 100 idle pods from rewriting 100 statuses a second.
fn status_unchanged(current: &Value, desired: &Value) -> bool {
    let Some(fields) = desired.as_object() else {
        return controllers_free_covers(current, desired);
    };
    fields.iter().all(|(key, value)| {
        if key == "conditions" {
            let have = current
                .get("conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            value.as_array().into_iter().flatten().all(|want| {
                have.iter()
                    .find(|c| c["type"] == want["type"])
                    .is_some_and(|c| controllers_free_covers(c, want))
            })
        } else {
            value.is_null()
                || current
                    .get(key)
                    .is_some_and(|c| controllers_free_covers(c, value))
        }
    })
}

/// `current` already says everything `desired` does.
fn controllers_free_covers(current: &Value, desired: &Value) -> bool {
    match (current, desired) {
        (Value::Object(c), Value::Object(d)) => d
            .iter()
            .all(|(k, v)| v.is_null() || c.get(k).is_some_and(|cv| controllers_free_covers(cv, v))),
        (Value::Array(c), Value::Array(d)) => {
            c.len() == d.len() && c.iter().zip(d).all(|(c, d)| controllers_free_covers(c, d))
        }
        (c, d) => c == d,
    }
}

/// What starting a container of a pod needs from the pass over the pod.
struct StartContext<'a> {
    pod: &'a Pod,
    uid: &'a str,
    hostname: &'a str,
    network_namespace: &'a std::path::Path,
    pod_dir: &'a std::path::Path,
    /// The environment's inputs, fetched on the first start of the pass.
    inputs: &'a tokio::sync::OnceCell<crate::env::EnvInputs>,
    namespace: &'a str,
    pod_ips: &'a [String],
    /// The pod's volumes, made for this pass.
    volumes: &'a BTreeMap<String, crate::volumes::PreparedVolume>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(resources: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "c", "image": "busybox", "resources": resources})).unwrap()
    }

    fn pod_with(resources: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "resources": resources}]}}))
        .unwrap()
    }

    #[test]
    fn cgroup_values_follow_the_kubelet() {
        let r = container_resources(&container(
            json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}),
        ));
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.memory_limit, Some(64 << 20));
        let best_effort = container_resources(&container(json!({})));
        assert_eq!(best_effort.cpu_shares, Some(2), "the minimum shares");
        assert_eq!(best_effort.cpu_quota, None);
    }

    #[test]
    fn qos_classes() {
        assert_eq!(qos_class(&pod_with(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod_with(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod_with(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod_with(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
    }

    #[test]
    fn back_off_and_restart_policy() {
        assert_eq!(backoff(0), Duration::ZERO, "the first restart is at once");
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert!(restarts_after("Always", 0));
        assert!(restarts_after("OnFailure", 1));
        assert!(!restarts_after("OnFailure", 0));
        assert!(!restarts_after("Never", 1));
    }

    #[test]
    fn a_status_is_unchanged_whatever_conditions_others_own() {
        let current = json!({"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "t1", "lastProbeTime": null}],
            "containerStatuses": [{"name": "c", "ready": true}]});
        let same = json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "t1", "lastProbeTime": null}],
            "containerStatuses": [{"name": "c", "ready": true}], "podIP": null});
        assert!(status_unchanged(&current, &same));
        let changed = json!({"conditions": [{"type": "Ready", "status": "False"}]});
        assert!(!status_unchanged(&current, &changed));
        assert!(!status_unchanged(&current, &json!({"phase": "Failed"})));
    }

    #[test]
    fn times_are_written_in_whole_seconds_as_the_api_gives_them_back() {
        assert_eq!(
            whole_seconds("2026-12-01T23:37:53.208996035Z"),
            "2026-12-01T23:37:53Z"
        );
        assert_eq!(whole_seconds("2026-12-01T23:37:53Z"), "2026-12-01T23:37:53Z");
        // What the API returns for the status this pass writes must compare equal, or every pass writes again.
        let written = json!({"state": {"running": {"startedAt": whole_seconds("2026-12-01T23:37:53.9Z")}}});
        let status: k8s_openapi::api::core::v1::ContainerStatus =
            serde_json::from_value(json!({"name": "c", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "state": written["state"]}))
            .unwrap();
        let back = serde_json::to_value(&status).unwrap();
        assert!(controllers_free_covers(&back, &written), "{back} vs {written}");
    }

    #[test]
    fn docker_config_secrets_give_their_credentials() {
        let secret = |key: &str, config: serde_json::Value| -> Secret {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(config.to_string());
            serde_json::from_value(json!({"data": {key: encoded}})).unwrap()
        };
        let json_config = secret(
            ".dockerconfigjson",
            json!({"auths": {"127.0.0.1:5000": {"username": "u", "password": "p"},
                "registry.example": {"auth": "dTI6cDI="}, "empty.example": {}}}),
        );
        let found = docker_credentials(&json_config);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].username.as_str(), found[0].password.as_str()),
            ("u", "p")
        );
        assert_eq!(
            (found[1].username.as_str(), found[1].password.as_str()),
            ("u2", "p2")
        );
        let old = secret(
            ".dockercfg",
            json!({"https://index.docker.io/v1/": {"auth": "dTI6cDI="}}),
        );
        assert_eq!(
            docker_credentials(&old)[0].registry,
            "https://index.docker.io/v1/"
        );
    }

    #[test]
    fn oom_score_adjustments_follow_the_qos_class() {
        let burstable = container(json!({"requests": {"memory": "1Gi"}}));
        assert_eq!(oom_score_adj("Guaranteed", &burstable, 4 << 30), -997);
        assert_eq!(oom_score_adj("BestEffort", &burstable, 4 << 30), 1000);
        assert_eq!(oom_score_adj("Burstable", &burstable, 4 << 30), 750);
        let huge = container(json!({"requests": {"memory": "8Gi"}}));
        assert_eq!(oom_score_adj("Burstable", &huge, 4 << 30), 3);
        let tiny = container(json!({"requests": {"cpu": "1"}}));
        assert_eq!(oom_score_adj("Burstable", &tiny, 4 << 30), 999);
    }

    #[test]
    fn run_lengths_come_from_start_and_finish() {
        assert_eq!(
            seconds_between("2026-12-01T10:00:00Z", "2026-12-01T10:10:30.5Z"),
            Some(630.5)
        );
        assert!(630.5 >= BACKOFF_RESET.as_secs_f64());
    }

    #[test]
    fn container_ids_carry_the_pod_and_the_attempt() {
        let id = container_id("0b8e-11", "web-app", 3);
        assert_eq!(id, "0b8e-11_web-app_3");
        let info = |id: &str| ContainerInfo {
            config: ContainerConfig::new(id, "busybox"),
            state: State::Created,
            log_path: PathBuf::new(),
        };
        let all = vec![
            info("u_web-app_1"),
            info("u_web-app_0"),
            info("u_side_0"),
            info("other_web_0"),
        ];
        let attempts = attempts_by_name("u", &all);
        assert_eq!(
            attempts["web-app"].iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(attempts.len(), 2);
    }
}
