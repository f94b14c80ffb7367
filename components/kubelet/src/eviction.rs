//! The kubelet's eviction manager (`pkg/kubelet/eviction`): the node's memory and storage are observed every
//! [`INTERVAL`]; a crossed threshold, hard or soft, puts the node under MemoryPressure or DiskPressure at once. A
//! hard threshold, or a soft one crossed for its whole grace period (`eviction-soft-grace-period`), makes the agent
//! reclaim what it can without touching pods (on disk pressure: images no container uses), and then evict one pod
//! per round, the least protected first (BestEffort, then Burstable, then Guaranteed), with Kubernetes' status and
//! message: at once for a hard threshold, within `eviction-max-pod-grace-period` (or the pod's own shorter
//! grace period) for a soft one.
//!
//! Memory is the host's `MemAvailable` (the kubelet reads the root cgroup's working set; both leave out
//! reclaimable page cache); storage is the data directory's file system, which holds the images too (nodefs and
//! imagefs are one file system here).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often signals are observed (the kubelet's `evictionMonitoringPeriod` is 10 s).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// What the eviction manager watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
}

impl Signal {
    fn parse(name: &str) -> Option<Signal> {
        Some(match name {
            "memory.available" => Signal::MemoryAvailable,
            "nodefs.available" => Signal::NodefsAvailable,
            "nodefs.inodesFree" => Signal::NodefsInodesFree,
            "imagefs.available" => Signal::ImagefsAvailable,
            _ => return None,
        })
    }

    /// The signal's name in flags and messages.
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
        }
    }

    /// The resource an eviction for this signal reclaims, as its message names it.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodefsAvailable | Signal::ImagefsAvailable => "ephemeral-storage",
            Signal::NodefsInodesFree => "inodes",
        }
    }

    pub fn is_disk(self) -> bool {
        self != Signal::MemoryAvailable
    }
}

/// A threshold's quantity: an amount (bytes, or inodes) or a share of the capacity.
#[derive(Clone, Debug, PartialEq)]
pub enum Quantity {
    Amount(u64),
    Percent(f64),
}

/// One hard threshold, as written (`memory.available<100Mi`).
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub quantity: Quantity,
    /// As the flag wrote it, for messages (`100Mi`, `10%`).
    pub text: String,
}

/// The thresholds (`--kubelet-arg=eviction-hard=...`, `eviction-soft=...`, `eviction-soft-grace-period=...`,
/// `eviction-max-pod-grace-period=...`).
#[derive(Clone, Debug, PartialEq)]
pub struct EvictionConfig {
    pub hard: Vec<Threshold>,
    pub soft: Vec<Threshold>,
    /// How long each soft threshold must stay crossed before pods are evicted for it.
    pub soft_grace: BTreeMap<Signal, Duration>,
    /// The longest grace period a pod evicted for a soft threshold gets (the kubelet's default: 0).
    pub max_pod_grace_seconds: i64,
}

impl Default for EvictionConfig {
    /// The kubelet's defaults on Linux: `memory.available<100Mi`, `nodefs.available<10%`,
    /// `nodefs.inodesFree<5%`, `imagefs.available<15%`.
    fn default() -> Self {
        EvictionConfig::parse(
            "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%",
        )
        .unwrap_or(EvictionConfig {
            hard: Vec::new(),
            soft: Vec::new(),
            soft_grace: BTreeMap::new(),
            max_pod_grace_seconds: 0,
        })
    }
}

impl EvictionConfig {
    /// Hard thresholds in kubelet's `--eviction-hard` syntax, with no soft ones.
    pub fn parse(spec: &str) -> Result<EvictionConfig, String> {
        Ok(EvictionConfig {
            hard: parse_thresholds(spec)?,
            soft: Vec::new(),
            soft_grace: BTreeMap::new(),
            max_pod_grace_seconds: 0,
        })
    }

    /// Checks what the kubelet checks at start (`ParseThresholdConfig`): every soft threshold has a grace period.
    pub fn validate(&self) -> Result<(), String> {
        for threshold in &self.soft {
            if !self.soft_grace.contains_key(&threshold.signal) {
                return Err(format!(
                    "grace period must be specified for the soft eviction threshold {}",
                    threshold.signal.name()
                ));
            }
        }
        if self.max_pod_grace_seconds < 0 {
            return Err("eviction-max-pod-grace-period must not be negative".into());
        }
        Ok(())
    }
}

/// kubelet's `--eviction-soft-grace-period` syntax: `signal=duration` pairs (`memory.available=1m30s`).
pub fn parse_grace_periods(spec: &str) -> Result<BTreeMap<Signal, Duration>, String> {
    let mut periods = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| format!("eviction grace period {item:?}: expected signal=duration"))?;
        let signal = Signal::parse(name.trim())
            .ok_or_else(|| format!("eviction grace period {item:?}: unknown signal {name:?}"))?;
        let period = parse_go_duration(value.trim()).ok_or_else(|| {
            format!("eviction grace period {item:?}: {value:?} is not a duration such as 1m30s")
        })?;
        periods.insert(signal, period);
    }
    Ok(periods)
}

/// A Go duration as kubelet flags take them: numbers with units h, m, s, ms (`1m30s`, `90s`, `500ms`).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, after) = rest.split_at(digits);
        let number: f64 = number.parse().ok()?;
        let unit_end = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let seconds = match unit {
            "h" => number * 3600.0,
            "m" => number * 60.0,
            "s" => number,
            "ms" => number / 1000.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(seconds);
        rest = next;
    }
    Some(total)
}

/// `signal<quantity` pairs separated by commas (`--eviction-hard`, `--eviction-soft`); an empty string has no
/// thresholds.
pub fn parse_thresholds(spec: &str) -> Result<Vec<Threshold>, String> {
    {
        let mut hard = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item
                .split_once('<')
                .ok_or_else(|| format!("eviction threshold {item:?}: expected signal<quantity"))?;
            let signal = Signal::parse(name.trim()).ok_or_else(|| {
                format!(
                    "eviction threshold {item:?}: unknown signal {name:?} (memory.available, nodefs.available, \
                     nodefs.inodesFree, imagefs.available)"
                )
            })?;
            let value = value.trim();
            let quantity = match value.strip_suffix('%') {
                Some(percent) => {
                    let share: f64 = percent
                        .parse()
                        .map_err(|_| format!("eviction threshold {item:?}: {value:?} is not a percentage"))?;
                    if !(0.0..=100.0).contains(&share) {
                        return Err(format!(
                            "eviction threshold {item:?}: a percentage is between 0% and 100%"
                        ));
                    }
                    Quantity::Percent(share)
                }
                None => Quantity::Amount(
                    quantity::value(value)
                        .and_then(|v| u64::try_from(v).ok())
                        .ok_or_else(|| format!("eviction threshold {item:?}: {value:?} is not a quantity"))?,
                ),
            };
            hard.push(Threshold {
                signal,
                quantity,
                text: value.to_string(),
            });
        }
        Ok(hard)
    }
}

/// The node's resources as the signals see them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub memory_available: u64,
    pub memory_capacity: u64,
    pub fs_available: u64,
    pub fs_capacity: u64,
    pub inodes_free: u64,
    pub inodes_capacity: u64,
}

impl Observed {
    /// Reads this host: `/proc/meminfo` and the file system of `root`.
    pub fn read(root: &Path) -> Observed {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = |key: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |k| k * 1024)
        };
        let mut observed = Observed {
            memory_available: kib("MemAvailable:"),
            memory_capacity: kib("MemTotal:"),
            ..Observed::default()
        };
        if let Ok(fs) = nix::sys::statvfs::statvfs(root) {
            let block = fs.fragment_size();
            observed.fs_available = fs.blocks_available() * block;
            observed.fs_capacity = fs.blocks() * block;
            observed.inodes_free = fs.files_available();
            observed.inodes_capacity = fs.files();
        }
        observed
    }

    /// (available, capacity) for a signal.
    fn of(&self, signal: Signal) -> (u64, u64) {
        match signal {
            Signal::MemoryAvailable => (self.memory_available, self.memory_capacity),
            Signal::NodefsAvailable | Signal::ImagefsAvailable => (self.fs_available, self.fs_capacity),
            Signal::NodefsInodesFree => (self.inodes_free, self.inodes_capacity),
        }
    }
}

/// A threshold the node is past, with what was observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Crossed {
    pub threshold: Threshold,
    pub available: u64,
    /// A hard threshold (evicts at once, with no grace) or a soft one.
    pub hard: bool,
}

impl Crossed {
    /// The evicted pod's status message (`nodeLowMessageFmt` and `thresholdMetMessageFmt`).
    pub fn message(&self) -> String {
        let available = if self.threshold.signal == Signal::NodefsInodesFree {
            self.available.to_string()
        } else {
            format_bytes(self.available)
        };
        format!(
            "The node was low on resource: {}. Threshold quantity: {}, available: {available}. ",
            self.threshold.signal.resource(),
            self.threshold.text
        )
    }
}

/// The thresholds `observed` is past, hard ones first (a resource with no capacity observed is not judged).
pub fn crossed(config: &EvictionConfig, observed: &Observed) -> Vec<Crossed> {
    let hard = config.hard.iter().map(|t| (t, true));
    let soft = config.soft.iter().map(|t| (t, false));
    hard.chain(soft)
        .filter_map(|(threshold, hard)| {
            let (available, capacity) = observed.of(threshold.signal);
            if capacity == 0 {
                return None;
            }
            let limit = match threshold.quantity {
                Quantity::Amount(amount) => amount as f64,
                Quantity::Percent(share) => capacity as f64 * share / 100.0,
            };
            ((available as f64) < limit).then(|| Crossed {
                threshold: threshold.clone(),
                available,
                hard,
            })
        })
        .collect()
}

/// When each soft threshold was first seen crossed (`thresholdsFirstObservedAt`), so that it evicts only once
/// crossed for its whole grace period.
#[derive(Clone, Debug, Default)]
pub struct SoftThresholds {
    first_seen: BTreeMap<Signal, Instant>,
}

impl SoftThresholds {
    /// Of `crossed`, the thresholds to act on now: every hard one, and each soft one crossed since at least its
    /// grace period ago. Soft thresholds no longer crossed are forgotten.
    pub fn due(&mut self, config: &EvictionConfig, crossed: &[Crossed], now: Instant) -> Vec<Crossed> {
        self.first_seen
            .retain(|signal, _| crossed.iter().any(|c| !c.hard && c.threshold.signal == *signal));
        crossed
            .iter()
            .filter(|c| {
                if c.hard {
                    return true;
                }
                let since = *self.first_seen.entry(c.threshold.signal).or_insert(now);
                let grace = config
                    .soft_grace
                    .get(&c.threshold.signal)
                    .copied()
                    .unwrap_or_default();
                now.saturating_duration_since(since) >= grace
            })
            .cloned()
            .collect()
    }
}

/// The grace period of a pod evicted for `reason`: none for a hard threshold; for a soft one the pod's own
/// (`terminationGracePeriodSeconds`, 30 s when unset), at most `eviction-max-pod-grace-period`.
pub fn eviction_grace(config: &EvictionConfig, reason: &Crossed, pod_grace_seconds: Option<i64>) -> Duration {
    if reason.hard {
        return Duration::ZERO;
    }
    let seconds = pod_grace_seconds
        .unwrap_or(30)
        .min(config.max_pod_grace_seconds)
        .max(0);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The node conditions' inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
}

impl Pressure {
    pub fn of(crossed: &[Crossed]) -> Pressure {
        Pressure {
            memory: crossed.iter().any(|c| !c.threshold.signal.is_disk()),
            disk: crossed.iter().any(|c| c.threshold.signal.is_disk()),
        }
    }
}

/// The order pods are evicted in: by QoS class, the least protected first (`rankMemoryPressure` and
/// `rankDiskPressure` put pods over their requests first, which BestEffort pods always are).
pub fn eviction_rank(qos_class: &str) -> u8 {
    match qos_class {
        "BestEffort" => 0,
        "Burstable" => 1,
        _ => 2,
    }
}

/// Bytes as a Kubernetes quantity (`Ki`, `Mi`, `Gi` when exact enough), for messages.
fn format_bytes(bytes: u64) -> String {
    for (suffix, unit) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= unit {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_as_the_kubelets_flag() {
        let config = EvictionConfig::parse("memory.available<100Mi, nodefs.available<10%").unwrap();
        assert_eq!(config.hard.len(), 2);
        assert_eq!(config.hard[0].quantity, Quantity::Amount(100 << 20));
        assert_eq!(config.hard[1].quantity, Quantity::Percent(10.0));
        assert_eq!(EvictionConfig::default().hard.len(), 4);
        assert_eq!(EvictionConfig::parse("").unwrap().hard, Vec::new());
        for bad in [
            "memory.available>1Gi",
            "cpu.available<1",
            "nodefs.available<110%",
            "memory.available<lots",
        ] {
            assert!(EvictionConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn crossed_thresholds_make_pressure_and_messages() {
        let observed = Observed {
            memory_available: 50 << 20,
            memory_capacity: 4 << 30,
            fs_available: 20 << 30,
            fs_capacity: 100 << 30,
            inodes_free: 1000,
            inodes_capacity: 1_000_000,
        };
        let crossed = crossed(&EvictionConfig::default(), &observed);
        let signals: Vec<Signal> = crossed.iter().map(|c| c.threshold.signal).collect();
        assert_eq!(signals, [Signal::MemoryAvailable, Signal::NodefsInodesFree]);
        assert_eq!(
            Pressure::of(&crossed),
            Pressure {
                memory: true,
                disk: true
            }
        );
        assert_eq!(
            crossed[0].message(),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "
        );
        assert_eq!(
            crossed[1].message(),
            "The node was low on resource: inodes. Threshold quantity: 5%, available: 1000. "
        );
        let healthy = Observed {
            memory_available: 2 << 30,
            inodes_free: 900_000,
            ..observed
        };
        assert!(super::crossed(&EvictionConfig::default(), &healthy).is_empty());
    }

    #[test]
    fn soft_thresholds_wait_for_their_grace_period_and_evict_within_the_maximum() {
        let mut config = EvictionConfig::parse("memory.available<1Mi").unwrap();
        config.soft = parse_thresholds("nodefs.available<100%").unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("grace period must be specified")
        );
        config.soft_grace = parse_grace_periods("nodefs.available=1m30s").unwrap();
        config.max_pod_grace_seconds = 5;
        config.validate().unwrap();
        assert_eq!(
            config.soft_grace[&Signal::NodefsAvailable],
            Duration::from_secs(90)
        );
        assert!(parse_grace_periods("nodefs.available=soon").is_err());
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));

        let observed = Observed {
            memory_available: 100 << 20,
            memory_capacity: 1 << 30,
            fs_available: 10,
            fs_capacity: 100,
            ..Observed::default()
        };
        let crossed = crossed(&config, &observed);
        assert_eq!(crossed.len(), 1);
        assert!(!crossed[0].hard);
        // Pressure at once, eviction only once the grace period has passed while crossed.
        assert!(Pressure::of(&crossed).disk);
        let mut soft = SoftThresholds::default();
        let start = Instant::now();
        assert!(soft.due(&config, &crossed, start).is_empty());
        assert!(
            soft.due(&config, &crossed, start + Duration::from_secs(60))
                .is_empty()
        );
        assert_eq!(
            soft.due(&config, &crossed, start + Duration::from_secs(90)).len(),
            1
        );
        // Cleared, then crossed again: the wait starts over.
        assert!(soft.due(&config, &[], start + Duration::from_secs(91)).is_empty());
        assert!(
            soft.due(&config, &crossed, start + Duration::from_secs(92))
                .is_empty()
        );
        // The pod's own grace, at most the maximum; none for a hard threshold.
        assert_eq!(
            eviction_grace(&config, &crossed[0], Some(2)),
            Duration::from_secs(2)
        );
        assert_eq!(eviction_grace(&config, &crossed[0], None), Duration::from_secs(5));
        let hard = Crossed {
            hard: true,
            ..crossed[0].clone()
        };
        assert_eq!(eviction_grace(&config, &hard, Some(30)), Duration::ZERO);
    }

    #[test]
    fn best_effort_pods_go_first() {
        assert!(eviction_rank("BestEffort") < eviction_rank("Burstable"));
        assert!(eviction_rank("Burstable") < eviction_rank("Guaranteed"));
    }
}
