//! The node's registration and heartbeats, as the kubelet does them (`pkg/kubelet/kubelet_node_status.go`,
//! `nodestatus/setters.go`, `nodelease`): the Node is created with its labels, its status carries capacity and
//! allocatable from the host, addresses, nodeInfo and the four conditions; a Lease in `kube-node-lease` is renewed
//! every 10 s, and the status is written when it changes and at least once a minute.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use tokio::sync::watch;

use crate::KubeletError;
use crate::eviction::Pressure;

/// How often the Lease is renewed (kubelet's `nodeLeaseDurationSeconds` is 40 s, renewed every quarter of it).
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// The Lease's duration.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// The status is written at least this often even when nothing changed.
pub const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// The kubelet's port, published in `status.daemonEndpoints`.
pub const KUBELET_PORT: i32 = 10250;
/// kubelet's default `maxPods`.
pub const MAX_PODS: u64 = 110;
/// kubelet's default hard eviction thresholds, which allocatable leaves out: `memory.available<100Mi`,
/// `nodefs.available<10%`.
const EVICTION_MEMORY_BYTES: u64 = 100 * 1024 * 1024;
const EVICTION_NODEFS_PERCENT: u64 = 10;

/// What the node agent is told about its node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    /// The node's address (`InternalIP`).
    pub address: IpAddr,
    /// A server's node also carries the control-plane role labels, as k3s's do.
    pub control_plane: bool,
    /// The directory whose file system is the node's ephemeral storage (the data directory).
    pub root_dir: PathBuf,
    /// `bonsai://<version>`.
    pub runtime_version: String,
    /// `v1.33.0+bonsai-<version>`.
    pub kubelet_version: String,
    /// Extra labels (`--node-label`).
    pub labels: BTreeMap<String, String>,
}

/// The host's facts the Node status is made of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    /// (page size name such as `2Mi`, bytes reserved in huge pages of that size).
    pub huge_pages: Vec<(String, u64)>,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
    pub architecture: String,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Go's `GOARCH` names, which Kubernetes uses in labels and nodeInfo.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// `PRETTY_NAME` from an os-release file.
fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// `MemTotal` of a meminfo file, in bytes.
fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

impl HostFacts {
    /// Reads this machine's facts; `root_dir`'s file system is the node's storage.
    pub fn read(root_dir: &Path) -> HostFacts {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let storage_bytes = nix::sys::statvfs::statvfs(root_dir)
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or(0);
        let huge_pages = ["2048kB", "1048576kB"]
            .iter()
            .map(|size| {
                let count: u64 =
                    read_trimmed(&format!("/sys/kernel/mm/hugepages/hugepages-{size}/nr_hugepages"))
                        .parse()
                        .unwrap_or(0);
                let (name, bytes) = if *size == "2048kB" {
                    ("2Mi", 2 << 20)
                } else {
                    ("1Gi", 1 << 30)
                };
                (name.to_string(), count * bytes)
            })
            .collect();
        let kernel_version = read_trimmed("/proc/sys/kernel/osrelease");
        HostFacts {
            cpus,
            memory_bytes: mem_total(&read_trimmed("/proc/meminfo")),
            storage_bytes,
            huge_pages,
            machine_id: read_trimmed("/etc/machine-id"),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            kernel_version,
            os_image: os_image(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()),
            architecture: go_arch().into(),
        }
    }
}

/// Bytes as the kubelet writes them (cAdvisor's numbers are KiB multiples): `Ki` when whole, else plain bytes.
fn quantity_bytes(bytes: u64) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// The Node's labels: kubelet's well-known ones, k3s's roles on a server, and the user's.
pub fn labels(config: &NodeConfig) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".into(), config.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), go_arch().into());
    labels.insert("beta.kubernetes.io/os".into(), "linux".into());
    labels.insert("beta.kubernetes.io/arch".into(), go_arch().into());
    if config.control_plane {
        labels.insert("node-role.kubernetes.io/control-plane".into(), "true".into());
        labels.insert("node-role.kubernetes.io/master".into(), "true".into());
    }
    labels.extend(config.labels.clone());
    labels
}

/// Capacity and allocatable (capacity less kubelet's default hard eviction thresholds).
pub fn resources(facts: &HostFacts) -> (Value, Value) {
    let mut capacity = json!({
        "cpu": facts.cpus.to_string(),
        "memory": quantity_bytes(facts.memory_bytes),
        "ephemeral-storage": quantity_bytes(facts.storage_bytes),
        "pods": MAX_PODS.to_string(),
    });
    let mut allocatable = json!({
        "cpu": facts.cpus.to_string(),
        "memory": quantity_bytes(facts.memory_bytes.saturating_sub(EVICTION_MEMORY_BYTES)),
        // Kubernetes writes the storage's allocatable in plain bytes (a 10% cut is no longer a KiB multiple).
        "ephemeral-storage": (facts.storage_bytes - facts.storage_bytes * EVICTION_NODEFS_PERCENT / 100).to_string(),
        "pods": MAX_PODS.to_string(),
    });
    let huge_total: u64 = facts.huge_pages.iter().map(|(_, b)| *b).sum();
    for (size, bytes) in &facts.huge_pages {
        capacity[format!("hugepages-{size}")] = json!(bytes.to_string());
        allocatable[format!("hugepages-{size}")] = json!(bytes.to_string());
    }
    // Memory held in huge pages is not allocatable as ordinary memory.
    if huge_total > 0 {
        allocatable["memory"] = json!(quantity_bytes(
            facts
                .memory_bytes
                .saturating_sub(EVICTION_MEMORY_BYTES + huge_total)
        ));
    }
    (capacity, allocatable)
}

/// The node's conditions, in kubelet's order and words, under `pressure` (the eviction manager's).
fn node_conditions(pressure: Pressure) -> [(&'static str, &'static str, &'static str, &'static str); 4] {
    [
        if pressure.memory {
            (
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        if pressure.disk {
            (
                "DiskPressure",
                "True",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        },
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
}

/// The conditions with this heartbeat's time; a condition keeps its transition time while its status holds.
pub fn conditions(previous: &[Value], now: &str, pressure: Pressure) -> Vec<Value> {
    node_conditions(pressure)
        .iter()
        .map(|(kind, status, reason, message)| {
            let transition = previous
                .iter()
                .find(|c| c["type"] == *kind && c["status"] == *status)
                .and_then(|c| c["lastTransitionTime"].as_str())
                .unwrap_or(now)
                .to_string();
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": transition})
        })
        .collect()
}

/// The status the node agent reports, without the conditions' times (what "changed" is judged on).
pub fn status_body(config: &NodeConfig, facts: &HostFacts) -> Value {
    let (capacity, allocatable) = resources(facts);
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "addresses": [
            {"type": "InternalIP", "address": config.address.to_string()},
            {"type": "Hostname", "address": config.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {
            "machineID": facts.machine_id, "systemUUID": facts.system_uuid, "bootID": facts.boot_id,
            "kernelVersion": facts.kernel_version, "osImage": facts.os_image,
            "containerRuntimeVersion": config.runtime_version, "kubeletVersion": config.kubelet_version,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": facts.architecture,
        },
    })
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeletError {
    let what = what.into();
    move |source| KubeletError::Kube { what, source }
}

/// Registers the Node (or, when it exists, brings its labels up to date) and returns its uid.
pub async fn register(client: &kube::Client, config: &NodeConfig) -> Result<String, KubeletError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = labels(config);
    let existing = nodes
        .get_opt(&config.name)
        .await
        .map_err(kube_error(format!("reading node {}", config.name)))?;
    let node = match existing {
        Some(_) => nodes
            .patch(
                &config.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"labels": labels}})),
            )
            .await
            .map_err(kube_error(format!("updating node {}", config.name)))?,
        None => {
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": config.name, "labels": labels},
                "spec": {},
            }))
            .map_err(|e| KubeletError::Invalid(e.to_string()))?;
            match nodes.create(&PostParams::default(), &node).await {
                Ok(node) => {
                    tracing::info!(node = %config.name, "registered the node");
                    node
                }
                // Created meanwhile (a restart racing itself): take it.
                Err(kube::Error::Api(e)) if e.code == 409 => nodes
                    .get(&config.name)
                    .await
                    .map_err(kube_error(format!("reading node {}", config.name)))?,
                Err(e) => return Err(kube_error(format!("registering node {}", config.name))(e)),
            }
        }
    };
    Ok(node.metadata.uid.unwrap_or_default())
}

/// Writes the Node's status: `body` plus conditions stamped `now`.
async fn report_status(
    client: &kube::Client,
    config: &NodeConfig,
    body: &Value,
    pressure: Pressure,
) -> Result<(), KubeletError> {
    let nodes: Api<Node> = Api::all(client.clone());
    // The Node itself, not `nodes/status`: a node may read its Node and patch its status (Kubernetes' NodeRules),
    // not get the status subresource.
    let current = nodes
        .get(&config.name)
        .await
        .map_err(kube_error(format!("reading node {}", config.name)))?;
    let previous: Vec<Value> = current
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let mut status = body.clone();
    status["conditions"] = json!(conditions(&previous, &now_rfc3339(), pressure));
    nodes
        .patch_status(
            &config.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .map_err(kube_error(format!("writing the status of node {}", config.name)))?;
    Ok(())
}

/// Renews (or creates) the node's Lease in `kube-node-lease`, owned by the Node so that it goes with it.
async fn renew_lease(client: &kube::Client, config: &NodeConfig, node_uid: &str) -> Result<(), KubeletError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"spec": {"holderIdentity": config.name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
        "renewTime": now}});
    match leases
        .patch(&config.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": config.name, "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": config.name, "uid": node_uid}]},
                "spec": patch["spec"],
            }))
            .map_err(|e| KubeletError::Invalid(e.to_string()))?;
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(kube_error(format!("creating the lease of node {}", config.name))(
                    e,
                )),
            }
        }
        Err(e) => Err(kube_error(format!("renewing the lease of node {}", config.name))(
            e,
        )),
    }
}

/// Registers the node, then heartbeats forever: the Lease every 10 s, the status when it changes and at least
/// every minute. Failures are logged and retried at the next beat (the API server may be restarting).
pub async fn run(client: kube::Client, config: NodeConfig, mut pressure: watch::Receiver<Pressure>) {
    let mut node_uid: Option<String> = None;
    let mut reported: Option<(Value, Pressure, tokio::time::Instant)> = None;
    loop {
        if node_uid.is_none() {
            match register(&client, &config).await {
                Ok(uid) => node_uid = Some(uid),
                Err(e) => tracing::warn!(node = %config.name, error = %e, "cannot register the node"),
            }
        }
        if let Some(uid) = node_uid.clone() {
            let body = status_body(&config, &HostFacts::read(&config.root_dir));
            let under = *pressure.borrow_and_update();
            let due = reported.as_ref().is_none_or(|(last, last_pressure, at)| {
                *last != body || *last_pressure != under || at.elapsed() >= STATUS_REPORT_INTERVAL
            });
            if due {
                match report_status(&client, &config, &body, under).await {
                    Ok(()) => reported = Some((body, under, tokio::time::Instant::now())),
                    // As the kubelet, a Node deleted by hand is not registered again until the agent restarts.
                    Err(e) => {
                        tracing::warn!(node = %config.name, error = %e, "cannot report the node's status")
                    }
                }
            }
            if let Err(e) = renew_lease(&client, &config, &uid).await {
                tracing::warn!(node = %config.name, error = %e, "cannot renew the node's lease");
            }
        }
        // A change of pressure is reported at once, not at the next beat.
        tokio::select! {
            () = tokio::time::sleep(LEASE_RENEW_INTERVAL) => {}
            changed = pressure.changed() => {
                if changed.is_err() {
                    // The eviction manager is gone: keep beating on the last pressure seen.
                    tokio::time::sleep(LEASE_RENEW_INTERVAL).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            cpus: 2,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            storage_bytes: 100 * 1024 * 1024 * 1024,
            huge_pages: vec![("2Mi".into(), 0), ("1Gi".into(), 0)],
            architecture: "amd64".into(),
            ..HostFacts::default()
        }
    }

    #[test]
    fn allocatable_leaves_out_the_hard_eviction_thresholds() {
        let (capacity, allocatable) = resources(&facts());
        assert_eq!(capacity["memory"], "4194304Ki");
        assert_eq!(allocatable["memory"], "4091904Ki", "100 Mi less");
        assert_eq!(capacity["ephemeral-storage"], "104857600Ki");
        assert_eq!(
            allocatable["ephemeral-storage"], "96636764160",
            "10% less, in bytes"
        );
        assert_eq!(capacity["pods"], "110");
        assert_eq!(capacity["hugepages-2Mi"], "0");
        let mut huge = facts();
        huge.huge_pages = vec![("2Mi".into(), 512 * 1024 * 1024)];
        let (_, allocatable) = resources(&huge);
        assert_eq!(
            allocatable["memory"], "3567616Ki",
            "huge pages are not ordinary memory"
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_they_hold() {
        let first = conditions(&[], "2026-12-01T10:00:00Z", Pressure::default());
        assert_eq!(first.len(), 4);
        assert_eq!(first[3]["type"], "Ready");
        assert_eq!(first[3]["reason"], "KubeletReady");
        let later = conditions(&first, "2026-12-01T10:01:00Z", Pressure::default());
        assert_eq!(later[3]["lastHeartbeatTime"], "2026-12-01T10:01:00Z");
        assert_eq!(later[3]["lastTransitionTime"], "2026-12-01T10:00:00Z");
        // After the node lifecycle controller set Unknown, Ready again is a transition.
        let mut unknown = later.clone();
        unknown[3]["status"] = json!("Unknown");
        let back = conditions(&unknown, "2026-12-01T10:05:00Z", Pressure::default());
        assert_eq!(back[3]["lastTransitionTime"], "2026-12-01T10:05:00Z");
    }

    #[test]
    fn host_files_are_read_as_the_kubelet_reads_them() {
        assert_eq!(
            mem_total("MemTotal:       24565224 kB\nMemFree: 1 kB\n"),
            24565224 * 1024
        );
        assert_eq!(
            os_image("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        let config = NodeConfig {
            name: "edge-1".into(),
            address: "10.0.0.5".parse().unwrap(),
            control_plane: true,
            root_dir: "/".into(),
            runtime_version: "bonsai://0.1.0".into(),
            kubelet_version: "v1.33.0+bonsai-0.1.0".into(),
            labels: [("tier".to_string(), "edge".to_string())].into(),
        };
        let labels = labels(&config);
        assert_eq!(labels["kubernetes.io/hostname"], "edge-1");
        assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
        assert_eq!(labels["tier"], "edge");
        let body = status_body(&config, &facts());
        assert_eq!(body["nodeInfo"]["containerRuntimeVersion"], "bonsai://0.1.0");
        assert_eq!(
            body["addresses"][0],
            json!({"type": "InternalIP", "address": "10.0.0.5"})
        );
        assert_eq!(body["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    }

    #[test]
    fn pressure_turns_its_condition_true_with_the_kubelets_reason() {
        let under = conditions(
            &[],
            "2026-12-01T10:00:00Z",
            Pressure {
                memory: false,
                disk: true,
            },
        );
        assert_eq!(under[0]["status"], "False");
        assert_eq!(under[1]["type"], "DiskPressure");
        assert_eq!(under[1]["status"], "True");
        assert_eq!(under[1]["reason"], "KubeletHasDiskPressure");
        assert_eq!(under[3]["status"], "True", "a node under pressure is still Ready");
    }
}
