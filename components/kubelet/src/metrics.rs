//! The kubelet's metric families, with the kubelet's names: pod start latency
//! (`kubelet_pod_start_duration_seconds`), running pods and containers (`kubelet_running_pods`,
//! `kubelet_running_containers{container_state}`), and image pulls (`kubelet_runtime_operations_total` and
//! `kubelet_runtime_operations_errors_total` with `operation_type="pull_image"`,
//! `kubelet_image_pull_duration_seconds`). The kubelet API serves them on `/metrics`.

use std::sync::OnceLock;

use ::metrics::{Buckets, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec};
use runtime::container::{ContainerInfo, State};

struct Families {
    pod_start: Histogram,
    running_pods: Gauge,
    containers: GaugeVec<1>,
    operations: CounterVec<1>,
    errors: CounterVec<1>,
    pulls: HistogramVec<1>,
}

/// The kubelet's buckets for pod start latency (0.5 s to an hour).
const POD_START: Buckets = Buckets(&[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0,
    480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
]);
/// The kubelet's buckets for image pulls (1 s to 6 h).
const PULL: Buckets = Buckets(&[
    1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0,
    2700.0, 3600.0, 21600.0,
]);

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let f = Families {
            pod_start: POD_START.histogram(),
            running_pods: Gauge::default(),
            containers: GaugeVec::default(),
            operations: CounterVec::default(),
            errors: CounterVec::default(),
            pulls: ::metrics::histogram_vec(PULL),
        };
        let r = ::metrics::registry();
        r.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            f.pod_start.clone(),
        );
        r.register(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            f.running_pods.clone(),
        );
        r.register(
            "kubelet_running_containers",
            "Number of containers currently running",
            f.containers.clone(),
        );
        r.register(
            "kubelet_runtime_operations_total",
            "Cumulative number of runtime operations by operation type",
            f.operations.clone(),
        );
        r.register(
            "kubelet_runtime_operations_errors_total",
            "Cumulative number of runtime operation errors by operation type",
            f.errors.clone(),
        );
        r.register(
            "kubelet_image_pull_duration_seconds",
            "Duration in seconds to pull an image",
            f.pulls.clone(),
        );
        f
    })
}

/// Registers the kubelet's families (so a scrape shows them before the first pod).
pub fn register() {
    let f = families();
    for state in ["created", "running", "exited"] {
        let _ = f
            .containers
            .get_or_create(&[("container_state", state.to_string())]);
    }
    let _ = f.operations.get_or_create(&pull_image());
    let _ = f.errors.get_or_create(&pull_image());
}

fn pull_image() -> ::metrics::Labels<1> {
    [("operation_type", "pull_image".to_string())]
}

/// A pod ran for the first time, `seconds` after the kubelet first saw it.
pub(crate) fn pod_started(seconds: f64) {
    families().pod_start.observe(seconds);
}

/// An image was pulled in `seconds`; `size` is its size in bytes.
pub(crate) fn image_pulled(seconds: f64, size: u64) {
    let f = families();
    f.operations.get_or_create(&pull_image()).inc();
    f.pulls
        .get_or_create(&[("image_size_in_bytes", size_bucket(size).to_string())])
        .observe(seconds);
}

/// A pull failed.
pub(crate) fn image_pull_failed() {
    let f = families();
    f.operations.get_or_create(&pull_image()).inc();
    f.errors.get_or_create(&pull_image()).inc();
}

/// The kubelet's image size buckets for `kubelet_image_pull_duration_seconds`.
fn size_bucket(size: u64) -> &'static str {
    const MB: u64 = 1 << 20;
    const GB: u64 = 1 << 30;
    match size {
        s if s < 10 * MB => "0-10MB",
        s if s < 100 * MB => "10MB-100MB",
        s if s < 500 * MB => "100MB-500MB",
        s if s < GB => "500MB-1GB",
        s if s < 5 * GB => "1GB-5GB",
        s if s < 10 * GB => "5GB-10GB",
        _ => "10GB+",
    }
}

/// The node's containers by state, and the pods with a running container.
pub(crate) fn observe_containers(all: &[ContainerInfo]) {
    let f = families();
    let (mut created, mut running, mut exited) = (0i64, 0i64, 0i64);
    let mut pods = std::collections::BTreeSet::new();
    for info in all {
        match info.state {
            State::Created => created += 1,
            State::Running(_) => {
                running += 1;
                if let Some(uid) = info.config.id.split('_').next() {
                    pods.insert(uid);
                }
            }
            State::Exited(..) => exited += 1,
        }
    }
    for (state, n) in [("created", created), ("running", running), ("exited", exited)] {
        f.containers
            .get_or_create(&[("container_state", state.to_string())])
            .set(n);
    }
    f.running_pods.set(i64::try_from(pods.len()).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_sizes_fall_in_the_kubelets_buckets() {
        assert_eq!(size_bucket(1 << 20), "0-10MB");
        assert_eq!(size_bucket(50 << 20), "10MB-100MB");
        assert_eq!(size_bucket(2 << 30), "1GB-5GB");
    }
}
