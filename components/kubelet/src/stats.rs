//! The kubelet's resource statistics and its Summary API (`GET /stats/summary`, kubelet's
//! `pkg/kubelet/server/stats`, with the types of `k8s.io/kubelet/pkg/apis/stats/v1alpha1`): what metrics-server
//! (here, the API server's `metrics.k8s.io`) reads to answer `kubectl top`.
//!
//! A sampler reads, every [`SAMPLE_INTERVAL`], each running container's cgroup and its pod's (CPU time and the
//! memory working set as cAdvisor computes them: `runtime::container::cgroups`, v1 and v2) and the node's
//! (`/proc/stat` and `/proc/meminfo`), and keeps the last sample of each with its CPU rate over the interval
//! (`usageNanoCores`: the CPU time used between two samples over the time between them). Pods are named from
//! the API server's view of the node's pods when the summary is asked for; the runtime knows only their uids.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use runtime::container::cgroups::Cgroups;
use runtime::container::{ContainerInfo, Runtime, State};
use serde::Serialize;

/// How often the statistics are sampled (cAdvisor's housekeeping interval is 10 s too); the API server reports
/// it as the metrics' window.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// Nanoseconds per USER_HZ tick of `/proc/stat` (USER_HZ is 100 on every Linux architecture bonsai builds for).
const NANOS_PER_TICK: u64 = 10_000_000;

// The Summary API's JSON (k8s.io/kubelet/pkg/apis/stats/v1alpha1): only what bonsai measures; the rest of the
// kubelet's fields (network, fs, volumes, rlimits...) are optional there and left out.

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    pub start_time: String,
    pub containers: Vec<ContainerStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(rename = "process_stats", skip_serializing_if = "Option::is_none")]
    pub process_stats: Option<ProcessStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    /// Absent until two samples give a rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessStats {
    #[serde(rename = "process_count")]
    pub process_count: u64,
}

/// RFC 3339 to the second, as `metav1.Time` is written.
fn time(at: Timestamp) -> String {
    Timestamp::from_second(at.as_second()).unwrap_or(at).to_string()
}

/// The CPU rate between two readings of cumulative CPU time: nanoseconds of CPU per second, i.e. billionths of
/// a core. `None` when there is no earlier reading, no time passed, or the counter went back (a new cgroup).
pub fn nano_cores(earlier: Option<(Timestamp, u64)>, now: (Timestamp, u64)) -> Option<u64> {
    let (then, used_then) = earlier?;
    let elapsed = now.0.as_nanosecond() - then.as_nanosecond();
    let used = now.1.checked_sub(used_then)?;
    if elapsed <= 0 {
        return None;
    }
    u64::try_from(u128::from(used) * 1_000_000_000 / elapsed.unsigned_abs()).ok()
}

/// The node's CPU time from `/proc/stat`'s `cpu` line: every state but idle and iowait (guest time is already
/// in user), in nanoseconds.
pub fn proc_stat_cpu_nanoseconds(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| *v)
        .sum();
    Some(busy.saturating_mul(NANOS_PER_TICK))
}

/// The node's memory from `/proc/meminfo`, as the kubelet reports the root cgroup's: usage (total less free),
/// the working set (usage less inactive file cache) and available (capacity less the working set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeMemory {
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    pub available_bytes: u64,
}

pub fn meminfo(text: &str) -> Option<NodeMemory> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    let total = field("MemTotal")?;
    let usage = total.saturating_sub(field("MemFree")?);
    let working_set = usage.saturating_sub(field("Inactive(file)").unwrap_or(0));
    Some(NodeMemory {
        usage_bytes: usage,
        working_set_bytes: working_set,
        available_bytes: total.saturating_sub(working_set),
    })
}

/// One reading of a cgroup (or of the node), with its CPU rate since the reading before.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reading {
    at: Timestamp,
    cpu_nanoseconds: u64,
    nano_cores: Option<u64>,
    memory_usage_bytes: u64,
    working_set_bytes: u64,
    available_bytes: Option<u64>,
    processes: u64,
}

impl Reading {
    fn cpu(&self) -> CpuStats {
        CpuStats {
            time: time(self.at),
            usage_nano_cores: self.nano_cores,
            usage_core_nano_seconds: self.cpu_nanoseconds,
        }
    }

    fn memory(&self) -> MemoryStats {
        MemoryStats {
            time: time(self.at),
            available_bytes: self.available_bytes,
            usage_bytes: self.memory_usage_bytes,
            working_set_bytes: self.working_set_bytes,
        }
    }
}

/// A running container as the sampler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningContainer {
    pub pod_uid: String,
    pub name: String,
    /// The container's cgroup and its pod's (its parent), relative to the cgroup root.
    pub cgroup: String,
    pub pod_cgroup: String,
    pub started_at: String,
}

/// A runtime container that is a pod's (`<pod uid>_<container>_<attempt>`) and running.
pub fn running_container(info: &ContainerInfo) -> Option<RunningContainer> {
    let State::Running(started) = &info.state else {
        return None;
    };
    let (rest, attempt) = info.config.id.rsplit_once('_')?;
    attempt.parse::<u32>().ok()?;
    let (uid, name) = rest.split_once('_')?;
    Some(RunningContainer {
        pod_uid: uid.to_string(),
        name: name.to_string(),
        cgroup: info.config.cgroups_path(),
        pod_cgroup: format!("/{}", info.config.cgroup_parent.trim_matches('/')),
        started_at: started.started_at.clone(),
    })
}

#[derive(Clone, Debug)]
struct PodSample {
    start_time: String,
    reading: Reading,
    /// By container name.
    containers: BTreeMap<String, (String, Reading)>,
}

#[derive(Debug, Default)]
struct Samples {
    node: Option<Reading>,
    pods: HashMap<String, PodSample>,
}

/// Where the sampler reads: the cgroup root and `/proc` (a fake tree in tests).
#[derive(Clone, Debug)]
pub struct Sources {
    pub cgroups: Cgroups,
    pub proc: PathBuf,
}

impl Sources {
    pub fn host() -> Sources {
        Sources {
            cgroups: Cgroups::host(),
            proc: PathBuf::from("/proc"),
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The node's and its pods' last samples.
#[derive(Debug)]
pub struct Stats {
    sources: Sources,
    start_time: String,
    samples: Mutex<Samples>,
}

impl Stats {
    pub fn new(sources: Sources) -> Stats {
        // The node's start: boot time from /proc/stat's btime.
        let start_time = read(&sources.proc.join("stat"))
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok())
            .and_then(|s| Timestamp::from_second(s).ok())
            .map_or_else(|| time(Timestamp::now()), time);
        Stats {
            sources,
            start_time,
            samples: Mutex::new(Samples::default()),
        }
    }

    /// Reads everything once, at `at`, for the running containers given.
    pub fn sample(&self, at: Timestamp, running: &[RunningContainer]) {
        let proc_stat = read(&self.sources.proc.join("stat"));
        let memory = meminfo(&read(&self.sources.proc.join("meminfo")));
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        let previous = std::mem::take(&mut *samples);
        samples.node = proc_stat_cpu_nanoseconds(&proc_stat).map(|cpu| Reading {
            at,
            cpu_nanoseconds: cpu,
            nano_cores: nano_cores(
                previous.node.as_ref().map(|r| (r.at, r.cpu_nanoseconds)),
                (at, cpu),
            ),
            memory_usage_bytes: memory.map_or(0, |m| m.usage_bytes),
            working_set_bytes: memory.map_or(0, |m| m.working_set_bytes),
            available_bytes: memory.map(|m| m.available_bytes),
            processes: 0,
        });
        let cgroups = &self.sources.cgroups;
        let reading = |cgroup: &str, before: Option<&Reading>| {
            let usage = cgroups.usage(cgroup);
            Reading {
                at,
                cpu_nanoseconds: usage.cpu_usage_nanoseconds,
                nano_cores: nano_cores(
                    before.map(|r| (r.at, r.cpu_nanoseconds)),
                    (at, usage.cpu_usage_nanoseconds),
                ),
                memory_usage_bytes: usage.memory_usage_bytes,
                working_set_bytes: usage.memory_working_set_bytes,
                available_bytes: None,
                processes: usage.processes,
            }
        };
        for container in running {
            let before = previous.pods.get(&container.pod_uid);
            let pod = samples
                .pods
                .entry(container.pod_uid.clone())
                .or_insert_with(|| PodSample {
                    start_time: before.map_or_else(|| time(at), |p| p.start_time.clone()),
                    reading: reading(&container.pod_cgroup, before.map(|p| &p.reading)),
                    containers: BTreeMap::new(),
                });
            let container_before = before
                .and_then(|p| p.containers.get(&container.name))
                .filter(|(started, _)| *started == container.started_at)
                .map(|(_, r)| r);
            pod.containers.insert(
                container.name.clone(),
                (
                    container.started_at.clone(),
                    reading(&container.cgroup, container_before),
                ),
            );
        }
    }

    /// The Summary API's answer for the node's pods the API server knows (`(uid, namespace, name)`).
    pub fn summary(&self, node_name: &str, pods: &[(String, String, String)]) -> Summary {
        let Ok(samples) = self.samples.lock() else {
            return Summary::default();
        };
        let node = NodeStats {
            node_name: node_name.to_string(),
            start_time: self.start_time.clone(),
            cpu: samples.node.as_ref().map(Reading::cpu),
            memory: samples.node.as_ref().map(Reading::memory),
        };
        let mut out = Vec::new();
        for (uid, namespace, name) in pods {
            let Some(sample) = samples.pods.get(uid) else {
                continue;
            };
            out.push(PodStats {
                pod_ref: PodReference {
                    name: name.clone(),
                    namespace: namespace.clone(),
                    uid: uid.clone(),
                },
                start_time: sample.start_time.clone(),
                containers: sample
                    .containers
                    .iter()
                    .map(|(name, (started, reading))| ContainerStats {
                        name: name.clone(),
                        start_time: whole_seconds(started),
                        cpu: Some(reading.cpu()),
                        memory: Some(reading.memory()),
                    })
                    .collect(),
                cpu: Some(sample.reading.cpu()),
                memory: Some(sample.reading.memory()),
                process_stats: Some(ProcessStats {
                    process_count: sample.reading.processes,
                }),
            });
        }
        Summary { node, pods: out }
    }
}

fn whole_seconds(rfc3339: &str) -> String {
    rfc3339
        .parse::<Timestamp>()
        .map_or_else(|_| rfc3339.to_string(), time)
}

/// Samples the node's running containers every [`SAMPLE_INTERVAL`], in the background.
pub fn start(runtime: Arc<Runtime>) -> Arc<Stats> {
    let stats = Arc::new(Stats::new(Sources::host()));
    let sampler = stats.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (runtime, sampler) = (runtime.clone(), sampler.clone());
            let done = tokio::task::spawn_blocking(move || {
                let running: Vec<RunningContainer> = match runtime.list() {
                    Ok(all) => all.iter().filter_map(running_container).collect(),
                    Err(e) => {
                        tracing::debug!(error = %e, "listing containers for statistics");
                        Vec::new()
                    }
                };
                sampler.sample(Timestamp::now(), &running);
            })
            .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "sampling statistics");
            }
        }
    });
    stats
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn write(path: PathBuf, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn the_rate_is_cpu_time_over_elapsed_time() {
        // 5 s of CPU in 10 s: half a core.
        assert_eq!(
            nano_cores(Some((at(100), 1_000_000_000)), (at(110), 6_000_000_000)),
            Some(500_000_000)
        );
        assert_eq!(nano_cores(None, (at(110), 6)), None, "one reading gives no rate");
        assert_eq!(
            nano_cores(Some((at(110), 9)), (at(110), 10)),
            None,
            "no time passed"
        );
        assert_eq!(
            nano_cores(Some((at(100), 9)), (at(110), 1)),
            None,
            "a counter that went back"
        );
    }

    #[test]
    fn the_node_is_read_from_proc() {
        let stat = "cpu  100 20 30 5000 40 5 6 7 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nbtime 1700000000\n";
        // user+nice+system+irq+softirq+steal = 168 ticks of 10 ms.
        assert_eq!(proc_stat_cpu_nanoseconds(stat), Some(1_680_000_000));
        let info = "MemTotal:       8000 kB\nMemFree:        2000 kB\nMemAvailable:   5000 kB\n\
                    Inactive(file):  1000 kB\n";
        assert_eq!(
            meminfo(info),
            Some(NodeMemory {
                usage_bytes: 6000 * 1024,
                working_set_bytes: 5000 * 1024,
                available_bytes: 3000 * 1024,
            })
        );
        assert_eq!(meminfo("nothing"), None);
    }

    fn fake_host(root: &Path, node_ticks: u64, v2: bool, pod_cpu: u64, container_cpu: u64) {
        write(
            root.join("proc/stat"),
            &format!("cpu  {node_ticks} 0 0 100 0 0 0 0 0 0\nbtime 1700000000\n"),
        );
        write(
            root.join("proc/meminfo"),
            "MemTotal: 4096 kB\nMemFree: 1024 kB\nInactive(file): 1024 kB\n",
        );
        let pod = "bonsai/pods/besteffort/podu1";
        if v2 {
            let cg = root.join("cgroup");
            write(cg.join("cgroup.controllers"), "cpu memory\n");
            write(
                cg.join(pod).join("cpu.stat"),
                &format!("usage_usec {}\n", pod_cpu / 1000),
            );
            write(cg.join(pod).join("memory.current"), "8192\n");
            write(cg.join(pod).join("memory.stat"), "inactive_file 4096\n");
            let c = cg.join(pod).join("u1_busy_0");
            write(
                c.join("cpu.stat"),
                &format!("usage_usec {}\n", container_cpu / 1000),
            );
            write(c.join("memory.current"), "4096\n");
            write(c.join("memory.stat"), "inactive_file 0\n");
        } else {
            let cg = root.join("cgroup");
            write(
                cg.join("cpuacct").join(pod).join("cpuacct.usage"),
                &format!("{pod_cpu}\n"),
            );
            write(
                cg.join("memory").join(pod).join("memory.usage_in_bytes"),
                "8192\n",
            );
            write(
                cg.join("memory").join(pod).join("memory.stat"),
                "total_inactive_file 4096\n",
            );
            let c = format!("{pod}/u1_busy_0");
            write(
                cg.join("cpuacct").join(&c).join("cpuacct.usage"),
                &format!("{container_cpu}\n"),
            );
            write(cg.join("memory").join(&c).join("memory.usage_in_bytes"), "4096\n");
            write(
                cg.join("memory").join(&c).join("memory.stat"),
                "total_inactive_file 0\n",
            );
        }
    }

    fn summary_after_two_samples(v2: bool) -> Summary {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let stats_at = |r: &Path| {
            Stats::new(Sources {
                cgroups: Cgroups::at(r.join("cgroup")),
                proc: r.join("proc"),
            })
        };
        let running = [RunningContainer {
            pod_uid: "u1".into(),
            name: "busy".into(),
            cgroup: "/bonsai/pods/besteffort/podu1/u1_busy_0".into(),
            pod_cgroup: "/bonsai/pods/besteffort/podu1".into(),
            started_at: "2026-01-01T00:00:00.123Z".into(),
        }];
        fake_host(r, 1000, v2, 1_000_000_000, 900_000_000);
        let stats = stats_at(r);
        stats.sample(at(1_800_000_000), &running);
        let first = stats.summary("n1", &[("u1".into(), "default".into(), "busy".into())]);
        assert_eq!(
            first.pods[0].containers[0].cpu.as_ref().unwrap().usage_nano_cores,
            None
        );
        // 10 s later: the pod used 10 s of CPU (one core), the container 9 s, the node 2000 ticks (20 s).
        fake_host(r, 3000, v2, 11_000_000_000, 9_900_000_000);
        stats.sample(at(1_800_000_010), &running);
        stats.summary(
            "n1",
            &[
                ("u1".into(), "default".into(), "busy".into()),
                ("u2".into(), "default".into(), "not-sampled".into()),
            ],
        )
    }

    #[test]
    fn the_summary_carries_rates_on_cgroup_v1_and_v2() {
        for v2 in [false, true] {
            let summary = summary_after_two_samples(v2);
            let json = serde_json::to_value(&summary).unwrap();
            assert_eq!(json["node"]["nodeName"], "n1");
            assert_eq!(json["node"]["startTime"], "2023-11-14T22:13:20Z");
            assert_eq!(json["node"]["cpu"]["usageNanoCores"], 2_000_000_000u64);
            assert_eq!(json["node"]["cpu"]["time"], "2027-01-15T08:00:10Z");
            assert_eq!(json["node"]["memory"]["workingSetBytes"], 2048 * 1024);
            assert_eq!(json["node"]["memory"]["availableBytes"], 2048 * 1024);
            let pods = json["pods"].as_array().unwrap();
            assert_eq!(pods.len(), 1, "only sampled pods: {json}");
            let pod = &pods[0];
            assert_eq!(
                pod["podRef"],
                serde_json::json!({"name": "busy", "namespace": "default", "uid": "u1"})
            );
            assert_eq!(pod["cpu"]["usageNanoCores"], 1_000_000_000u64, "v2: {v2}");
            assert_eq!(pod["cpu"]["usageCoreNanoSeconds"], 11_000_000_000u64);
            assert_eq!(pod["memory"]["workingSetBytes"], 4096);
            assert_eq!(pod["memory"]["usageBytes"], 8192);
            let container = &pod["containers"][0];
            assert_eq!(container["name"], "busy");
            assert_eq!(container["startTime"], "2026-01-01T00:00:00Z");
            assert_eq!(container["cpu"]["usageNanoCores"], 900_000_000u64);
            assert_eq!(container["memory"]["workingSetBytes"], 4096);
        }
    }

    #[test]
    fn a_restarted_container_starts_its_rate_again() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fake_host(r, 1000, false, 1_000_000_000, 900_000_000);
        let stats = Stats::new(Sources {
            cgroups: Cgroups::at(r.join("cgroup")),
            proc: r.join("proc"),
        });
        let mut running = RunningContainer {
            pod_uid: "u1".into(),
            name: "busy".into(),
            cgroup: "/bonsai/pods/besteffort/podu1/u1_busy_0".into(),
            pod_cgroup: "/bonsai/pods/besteffort/podu1".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
        };
        stats.sample(at(1_800_000_000), std::slice::from_ref(&running));
        running.started_at = "2026-01-01T00:00:05Z".into();
        stats.sample(at(1_800_000_010), std::slice::from_ref(&running));
        let summary = stats.summary("n1", &[("u1".into(), "default".into(), "busy".into())]);
        assert_eq!(
            summary.pods[0].containers[0]
                .cpu
                .as_ref()
                .unwrap()
                .usage_nano_cores,
            None
        );
        assert!(
            summary.pods[0].cpu.as_ref().unwrap().usage_nano_cores.is_some(),
            "the pod's cgroup stays"
        );
    }
}
