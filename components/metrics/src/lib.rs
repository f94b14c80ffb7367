//! The process's metrics: one Prometheus registry per process, the families registered in it, and its
//! exposition in the Prometheus text format 0.0.4 (what every Prometheus, and `promtool check metrics`, reads).
//!
//! Components own their metric families: each defines its own (with Kubernetes' names where one exists) and
//! registers them here once ([`registry`]); the servers that expose `/metrics` (the API server and the kubelet
//! API) answer with [`Registry::encode`] and [`CONTENT_TYPE`].
//!
//! **Architecture Invariant:** only this crate knows the exposition format.

use std::sync::{Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Metric;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

/// The `Content-Type` of the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A family's label set: `N` (name, value) pairs, names fixed by the family.
pub type Labels<const N: usize> = [(&'static str, String); N];
/// Counters by label set.
pub type CounterVec<const N: usize> = Family<Labels<N>, Counter>;
/// Gauges by label set.
pub type GaugeVec<const N: usize> = Family<Labels<N>, Gauge>;
/// Histograms by label set, all with the same buckets.
pub type HistogramVec<const N: usize> = Family<Labels<N>, Histogram, Buckets>;

/// The upper bounds of a histogram's buckets (`+Inf` is implied).
#[derive(Clone, Copy, Debug)]
pub struct Buckets(pub &'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

impl Buckets {
    pub fn histogram(self) -> Histogram {
        self.new_metric()
    }
}

/// A family of histograms with `buckets`.
pub fn histogram_vec<const N: usize>(buckets: Buckets) -> HistogramVec<N> {
    Family::new_with_constructor(buckets)
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("encoding the metrics failed")]
    Encode(#[from] std::fmt::Error),
    #[error("the metrics registry is unusable: a thread panicked while registering")]
    Poisoned,
}

/// A registry of metric families. Every process has one ([`registry`]); tests may make their own.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<prometheus_client::registry::Registry>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers a family under its full name as Prometheus shows it: a counter's `_total` suffix is the
    /// encoder's to add, so it is taken off here (prometheus-client refuses names that carry it).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric + TypedMetric) {
        let name = registered_name(name, metric_type_of(&metric));
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.register(name, help, metric);
    }

    /// A gauge read from `value` at each scrape (sizes, counts something else keeps).
    pub fn register_gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        value: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        let collector = GaugeFn {
            name,
            help,
            value: Box::new(value),
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.register_collector(Box::new(collector));
    }

    /// Every family in the Prometheus text format 0.0.4 (serve it with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let inner = self.inner.lock().map_err(|_| MetricsError::Poisoned)?;
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &inner)?;
        Ok(text)
    }
}

/// Of an encoded exposition, only the families whose names start with `prefix` (for an endpoint that shows one
/// component's metrics, such as the cluster DNS's `coredns_` families on its own port).
pub fn only_families(text: &str, prefix: &str) -> String {
    text.lines()
        .filter(|line| {
            let name = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .or_else(|| line.strip_prefix("# UNIT "))
                .unwrap_or(line);
            name.starts_with(prefix)
        })
        .flat_map(|line| [line, "\n"])
        .collect()
}

/// The process's registry: components register their families in it once, the `/metrics` endpoints encode it.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::new)
}

fn metric_type_of<M: TypedMetric>(_: &M) -> MetricType {
    M::TYPE
}

fn registered_name(name: &str, kind: MetricType) -> &str {
    match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

struct GaugeFn {
    name: &'static str,
    help: &'static str,
    value: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for GaugeFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugeFn").field("name", &self.name).finish()
    }
}

impl Collector for GaugeFn {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new((self.value)());
        // The registry ends registered families' help with a full stop; so do these.
        let help = format!("{}.", self.help);
        let metric = encoder.encode_descriptor(self.name, &help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}

/// Seconds since `start`, for histograms.
pub fn seconds_since(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_components_families_are_picked_out() {
        let text =
            "# HELP a_x help\n# TYPE a_x counter\na_x_total 1\n# HELP b_y other\n# TYPE b_y gauge\nb_y 2\n";
        assert_eq!(
            only_families(text, "b_"),
            "# HELP b_y other\n# TYPE b_y gauge\nb_y 2\n"
        );
    }

    #[test]
    fn families_encode_as_prometheus_text() {
        let registry = Registry::new();
        let requests = CounterVec::<2>::default();
        registry.register(
            "test_requests_total",
            "Requests by verb and code",
            requests.clone(),
        );
        let latency = histogram_vec::<1>(Buckets(&[0.1, 1.0]));
        registry.register(
            "test_request_duration_seconds",
            "Request latency",
            latency.clone(),
        );
        let depth = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register("test_depth", "Depth", depth.clone());
        registry.register_gauge_fn("test_size_bytes", "Size", || 42);

        requests
            .get_or_create(&[("verb", "get".into()), ("code", "200".into())])
            .inc();
        requests
            .get_or_create(&[("verb", "get".into()), ("code", "200".into())])
            .inc();
        latency.get_or_create(&[("verb", "list".into())]).observe(0.5);
        depth.set(3);

        let text = registry.encode().unwrap();
        assert!(text.contains("# TYPE test_requests_total counter\n"), "{text}");
        assert!(
            text.contains("test_requests_total{verb=\"get\",code=\"200\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE test_request_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("test_request_duration_seconds_bucket{verb=\"list\",le=\"0.1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("test_request_duration_seconds_bucket{verb=\"list\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("test_request_duration_seconds_bucket{verb=\"list\",le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("test_request_duration_seconds_count{verb=\"list\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("test_depth 3\n"), "{text}");
        assert!(text.contains("test_size_bytes 42\n"), "{text}");
        // The 0.0.4 text format: no OpenMetrics `# EOF` trailer, no `_created` series.
        assert!(!text.contains("# EOF"), "{text}");
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn counter_names_lose_total_only_for_counters() {
        assert_eq!(registered_name("a_total", MetricType::Counter), "a");
        assert_eq!(registered_name("a_total", MetricType::Gauge), "a_total");
        assert_eq!(registered_name("a", MetricType::Counter), "a");
    }
}
