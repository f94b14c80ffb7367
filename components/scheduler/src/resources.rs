//! What a pod asks for, in resource quantities (parsed by the `quantity` crate).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub use quantity::milli;

/// Requested amounts by resource name, in thousandths.
pub type Amounts = BTreeMap<String, i128>;

fn add(into: &mut Amounts, from: Option<&BTreeMap<String, Quantity>>) {
    for (name, q) in from.into_iter().flatten() {
        if let Some(v) = milli(&q.0) {
            *into.entry(name.clone()).or_default() += v;
        }
    }
}

/// What a pod asks of a node (Kubernetes' rule): the sum of its app containers' and restartable init containers'
/// requests, or the largest single init container's if more, plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Amounts {
    let Some(spec) = pod.spec.as_ref() else {
        return Amounts::new();
    };
    let mut sum = Amounts::new();
    for c in &spec.containers {
        add(&mut sum, c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    }
    // Sidecars (restartable init containers) run with the app containers; a regular init container runs alone
    // with the sidecars started before it. The pod needs the larger of the two.
    let mut sidecars = Amounts::new();
    let mut init_peak = Amounts::new();
    for c in spec.init_containers.iter().flatten() {
        let mut one = Amounts::new();
        add(&mut one, c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        if c.restart_policy.as_deref() == Some("Always") {
            for (k, v) in one {
                *sidecars.entry(k).or_default() += v;
            }
            continue;
        }
        for (k, v) in one {
            let with_sidecars = v + sidecars.get(&k).copied().unwrap_or(0);
            let slot = init_peak.entry(k).or_default();
            *slot = (*slot).max(with_sidecars);
        }
    }
    for (k, v) in sidecars {
        *sum.entry(k).or_default() += v;
    }
    for (k, v) in init_peak {
        let slot = sum.entry(k).or_default();
        *slot = (*slot).max(v);
    }
    add(&mut sum, spec.overhead.as_ref());
    sum
}

/// A node's allocatable amounts (capacity when allocatable is not reported).
pub fn allocatable(node: &k8s_openapi::api::core::v1::Node) -> Amounts {
    let mut out = Amounts::new();
    let status = node.status.as_ref();
    add(
        &mut out,
        status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("512Mi"), Some(512 * 1024 * 1024 * 1000));
        assert_eq!(milli("1G"), Some(1_000_000_000_000));
        assert_eq!(milli("1e3"), Some(1_000_000));
        assert_eq!(milli("0.1m"), Some(1), "rounded up");
        assert_eq!(milli("abc"), None);
        assert_eq!(milli("1Zi"), None);
    }

    #[test]
    fn init_containers_count_as_kubernetes_counts_them() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {}, "spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                           {"name": "b", "resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "500m"}}},
                               {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}}]}}))
        .unwrap();
        let r = pod_requests(&pod);
        assert_eq!(
            r["cpu"], 500,
            "the init container's 500m outweighs the apps' 300m and the sidecar's 50m"
        );
        assert_eq!(r["memory"], 64 * 1024 * 1024 * 1000);
    }
}
