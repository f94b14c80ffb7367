//! `metrics.k8s.io/v1beta1`, served by the API server itself: the job of metrics-server, so that `kubectl top
//! nodes` and `kubectl top pods` work. `nodes` (NodeMetrics) and `pods` (PodMetrics, in a namespace or in all),
//! list and get, with label and field selectors.
//!
//! Each answer reads the Nodes (and Pods) from the store, fetches the Summary API (`/stats/summary`) of each
//! kubelet concerned over HTTPS with the API server's kubelet client certificate (as `pods/log` does,
//! `node_proxy.rs`), and converts it as metrics-server does: the CPU rate (`usageNanoCores`) and the memory
//! working set, at the time of the kubelet's sample, over its sampling window. A kubelet that does not answer
//! leaves its node and pods out, as metrics-server does; a pod whose every container has no rate yet is left
//! out too. **Architecture Invariant:** the API server gets container statistics only from kubelets; it never
//! reads cgroups itself.
//!
//! k8s-openapi has no `metrics.k8s.io` types (they live in `k8s.io/metrics`, outside the OpenAPI that
//! k8s-openapi is generated from), so the few fields needed, of the kubelet's summary and of the metrics
//! objects, are defined here.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use embedded_store::{RangeRequest, Store};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::node_proxy::{self, KubeletClient};
use crate::resources::selectors::{FieldSelector, LabelSelector};
use crate::status;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// The kubelet's sampling interval (`kubelet::stats::SAMPLE_INTERVAL`): the window its rates are over.
const WINDOW: &str = "10s";

/// How long one kubelet may take to answer.
const KUBELET_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest summary read from a kubelet.
const MAX_SUMMARY: usize = 32 << 20;

// What is read of the kubelet's Summary API (k8s.io/kubelet/pkg/apis/stats/v1alpha1).

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    pub containers: Vec<ContainerStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerStats {
    pub name: String,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    pub usage_nano_cores: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    pub working_set_bytes: Option<u64>,
}

// The metrics.k8s.io/v1beta1 objects (k8s.io/metrics/pkg/apis/metrics/v1beta1).

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub creation_timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Value>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetrics {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub metadata: Metadata,
    pub timestamp: String,
    pub window: &'static str,
    pub usage: BTreeMap<&'static str, String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub metadata: Metadata,
    pub timestamp: String,
    pub window: &'static str,
    pub containers: Vec<ContainerMetrics>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ContainerMetrics {
    pub name: String,
    pub usage: BTreeMap<&'static str, String>,
}

/// CPU in billionths of a core as a canonical decimal quantity (`250m`, `1`, `1500u`, `12345n`), as
/// `resource.NewScaledQuantity(n, -9)` prints.
pub fn cpu_quantity(nano_cores: u64) -> String {
    if nano_cores == 0 {
        return "0".into();
    }
    let (mut value, mut suffix) = (nano_cores, 0);
    let suffixes = ["n", "u", "m", ""];
    while suffix < 3 && value.is_multiple_of(1000) {
        value /= 1000;
        suffix += 1;
    }
    format!("{value}{}", suffixes[suffix])
}

/// Bytes as a canonical binary-SI quantity (`4Ki`, `3Mi`, `1000`), as `resource.NewQuantity(n, BinarySI)`
/// prints.
pub fn memory_quantity(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    let (mut value, mut suffix) = (bytes, 0);
    let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    while suffix < 6 && value.is_multiple_of(1024) {
        value /= 1024;
        suffix += 1;
    }
    format!("{value}{}", suffixes[suffix])
}

fn usage(cpu: &Option<CpuStats>, memory: &Option<MemoryStats>) -> Option<BTreeMap<&'static str, String>> {
    let nano_cores = cpu.as_ref()?.usage_nano_cores?;
    let working_set = memory.as_ref()?.working_set_bytes?;
    Some(BTreeMap::from([
        ("cpu", cpu_quantity(nano_cores)),
        ("memory", memory_quantity(working_set)),
    ]))
}

fn labels(object: &Value) -> Option<Value> {
    object.pointer("/metadata/labels").cloned()
}

/// The node's metrics from its kubelet's summary, if the summary has a rate and a working set.
pub fn node_metrics(node: &Value, summary: &Summary, now: &str) -> Option<NodeMetrics> {
    let usage = usage(&summary.node.cpu, &summary.node.memory)?;
    Some(NodeMetrics {
        kind: "NodeMetrics",
        api_version: "metrics.k8s.io/v1beta1",
        metadata: Metadata {
            name: name_of(node).to_string(),
            namespace: None,
            creation_timestamp: now.to_string(),
            labels: labels(node),
        },
        timestamp: summary.node.cpu.as_ref()?.time.clone(),
        window: WINDOW,
        usage,
    })
}

/// The pod's metrics from its node's summary (matched by uid), if every container in it has a rate.
pub fn pod_metrics(pod: &Value, summary: &Summary, now: &str) -> Option<PodMetrics> {
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str)?;
    let stats = summary.pods.iter().find(|p| p.pod_ref.uid == uid)?;
    if stats.containers.is_empty() {
        return None;
    }
    let containers = stats
        .containers
        .iter()
        .map(|c| {
            Some(ContainerMetrics {
                name: c.name.clone(),
                usage: usage(&c.cpu, &c.memory)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let timestamp = stats
        .containers
        .iter()
        .filter_map(|c| c.cpu.as_ref().map(|cpu| cpu.time.clone()))
        .max()?;
    Some(PodMetrics {
        kind: "PodMetrics",
        api_version: "metrics.k8s.io/v1beta1",
        metadata: Metadata {
            name: name_of(pod).to_string(),
            namespace: pod
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string),
            creation_timestamp: now.to_string(),
            labels: labels(pod),
        },
        timestamp,
        window: WINDOW,
        containers,
    })
}

fn owned_name(object: &Value) -> String {
    name_of(object).to_string()
}

/// The node a pod is bound to.
fn node_of(pod: &Value) -> Option<String> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// What a request under `/apis/metrics.k8s.io/v1beta1/` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Nodes(Option<String>),
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
}

/// Recognises the metrics resources' paths (discovery of the group itself is `discovery.rs`'s).
pub fn target(path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/apis/metrics.k8s.io/v1beta1/")?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let owned = |s: &str| Some(s.to_string());
    Some(match parts.as_slice() {
        ["nodes"] => Target::Nodes(None),
        ["nodes", name] => Target::Nodes(owned(name)),
        ["pods"] => Target::Pods {
            namespace: None,
            name: None,
        },
        ["namespaces", namespace, "pods"] => Target::Pods {
            namespace: owned(namespace),
            name: None,
        },
        ["namespaces", namespace, "pods", name] => Target::Pods {
            namespace: owned(namespace),
            name: owned(name),
        },
        _ => return None,
    })
}

fn internal(message: impl std::fmt::Display) -> Response {
    status::failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("Internal error occurred: {message}"),
    )
}

fn bad_request(message: String) -> Response {
    status::failure(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn not_found(message: String) -> Response {
    status::failure(StatusCode::NOT_FOUND, "NotFound", message)
}

async fn list(store: &dyn Store, prefix: String) -> Result<Vec<Value>, Response> {
    let response = store
        .range(RangeRequest {
            prefix: Bytes::from(prefix),
            start: None,
            limit: 0,
            revision: 0,
        })
        .await
        .map_err(internal)?;
    Ok(response
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

async fn get(store: &dyn Store, key: String) -> Result<Option<Value>, Response> {
    let response = store.get(Bytes::from(key), 0).await.map_err(internal)?;
    Ok(response.kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// The selectors of a list request.
struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    /// The request's `labelSelector` and `fieldSelector`; an unparsable one is the error's message.
    fn parse(query: Option<&str>) -> Result<Selectors, String> {
        let mut labels = String::new();
        let mut fields = String::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "labelSelector" => labels = value.into_owned(),
                "fieldSelector" => fields = value.into_owned(),
                _ => {}
            }
        }
        Ok(Selectors {
            labels: LabelSelector::parse(&labels)?,
            fields: FieldSelector::parse(&fields)?,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

/// The summary of one node's kubelet.
async fn fetch_summary(kubelet: &KubeletClient, node: &Value) -> Result<Summary, String> {
    let (ip, port) = node_proxy::kubelet_address(node).ok_or("the node has no address for its kubelet")?;
    let tcp = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| format!("dialing the kubelet at {ip}:{port}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(kubelet.tls.clone())
        .connect(ServerName::IpAddress(ip.into()), tcp)
        .await
        .map_err(|e| format!("TLS to the kubelet at {ip}:{port}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection to a kubelet");
        }
    });
    let request = hyper::Request::get("/stats/summary")
        .header(header::HOST, format!("{ip}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let answer = sender.send_request(request).await.map_err(|e| e.to_string())?;
    if !answer.status().is_success() {
        return Err(format!("the kubelet at {ip}:{port} answered {}", answer.status()));
    }
    let body =
        http_body_util::BodyExt::collect(http_body_util::Limited::new(answer.into_body(), MAX_SUMMARY))
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("the kubelet's summary: {e}"))
}

/// The summaries of the nodes named (those that answer in time), by node name.
async fn summaries(
    store: &dyn Store,
    kubelet: &KubeletClient,
    nodes: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, Summary>, Response> {
    let mut fetches = Vec::new();
    for name in nodes {
        let Some(node) = get(store, format!("/registry/core/nodes/{name}")).await? else {
            continue;
        };
        fetches.push(async move {
            let result = tokio::time::timeout(KUBELET_TIMEOUT, fetch_summary(kubelet, &node)).await;
            (name, result)
        });
    }
    let mut out = BTreeMap::new();
    for (name, result) in futures_util::future::join_all(fetches).await {
        match result {
            Ok(Ok(summary)) => {
                out.insert(name, summary);
            }
            Ok(Err(e)) => tracing::debug!(node = %name, error = %e, "no summary from the kubelet"),
            Err(_) => tracing::debug!(node = %name, "the kubelet's summary timed out"),
        }
    }
    Ok(out)
}

fn ok(body: &impl Serialize) -> Response {
    status::json(StatusCode::OK, &serde_json::to_value(body).unwrap_or_default())
}

fn list_of(kind: &str, items: Vec<Value>) -> Response {
    status::json(
        StatusCode::OK,
        &serde_json::json!({"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
    )
}

/// Serves one request for the metrics resources.
pub async fn serve(
    store: &dyn Store,
    kubelet: &KubeletClient,
    target: Target,
    method: &Method,
    query: Option<&str>,
) -> Response {
    if method != Method::GET {
        return status::failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
    }
    let result = match target {
        Target::Nodes(name) => nodes(store, kubelet, name, query).await,
        Target::Pods { namespace, name } => pods(store, kubelet, namespace, name, query).await,
    };
    result.unwrap_or_else(|response| response)
}

async fn nodes(
    store: &dyn Store,
    kubelet: &KubeletClient,
    name: Option<String>,
    query: Option<&str>,
) -> Result<Response, Response> {
    let now = crate::resources::now_rfc3339();
    if let Some(name) = name {
        let missing = || not_found(format!("nodemetrics.metrics.k8s.io \"{name}\" not found"));
        let node = get(store, format!("/registry/core/nodes/{name}"))
            .await?
            .ok_or_else(missing)?;
        let summaries = summaries(store, kubelet, [name.clone()]).await?;
        let metrics = summaries
            .get(&name)
            .and_then(|s| node_metrics(&node, s, &now))
            .ok_or_else(missing)?;
        return Ok(ok(&metrics));
    }
    let selectors = Selectors::parse(query).map_err(bad_request)?;
    let nodes: Vec<Value> = list(store, "/registry/core/nodes/".into())
        .await?
        .into_iter()
        .filter(|n| selectors.matches(n))
        .collect();
    let names: Vec<String> = nodes.iter().map(owned_name).collect();
    let summaries = summaries(store, kubelet, names).await?;
    let items = nodes
        .iter()
        .filter_map(|node| node_metrics(node, summaries.get(name_of(node))?, &now))
        .filter_map(|m| serde_json::to_value(m).ok())
        .collect();
    Ok(list_of("NodeMetricsList", items))
}

async fn pods(
    store: &dyn Store,
    kubelet: &KubeletClient,
    namespace: Option<String>,
    name: Option<String>,
    query: Option<&str>,
) -> Result<Response, Response> {
    let now = crate::resources::now_rfc3339();
    if let (Some(namespace), Some(name)) = (&namespace, &name) {
        let missing = || {
            not_found(format!(
                "podmetrics.metrics.k8s.io \"{namespace}/{name}\" not found"
            ))
        };
        let pod = get(store, format!("/registry/core/pods/{namespace}/{name}"))
            .await?
            .ok_or_else(missing)?;
        let node = node_of(&pod).ok_or_else(missing)?;
        let summaries = summaries(store, kubelet, [node.clone()]).await?;
        let metrics = summaries
            .get(&node)
            .and_then(|s| pod_metrics(&pod, s, &now))
            .ok_or_else(missing)?;
        return Ok(ok(&metrics));
    }
    let selectors = Selectors::parse(query).map_err(bad_request)?;
    let prefix = match &namespace {
        Some(ns) => format!("/registry/core/pods/{ns}/"),
        None => "/registry/core/pods/".into(),
    };
    let pods: Vec<Value> = list(store, prefix)
        .await?
        .into_iter()
        .filter(|p| selectors.matches(p))
        .collect();
    let nodes: std::collections::BTreeSet<String> = pods.iter().filter_map(node_of).collect();
    let summaries = summaries(store, kubelet, nodes).await?;
    let items = pods
        .iter()
        .filter_map(|pod| pod_metrics(pod, summaries.get(&node_of(pod)?)?, &now))
        .filter_map(|m| serde_json::to_value(m).ok())
        .collect();
    Ok(list_of("PodMetricsList", items))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(12_345), "12345n");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(memory_quantity(4096), "4Ki");
        assert_eq!(memory_quantity(3 << 20), "3Mi");
        assert_eq!(memory_quantity(1536 * 1024), "1536Ki");
        assert_eq!(memory_quantity(1000), "1000");
    }

    #[test]
    fn metrics_paths_are_recognised() {
        assert_eq!(
            target("/apis/metrics.k8s.io/v1beta1/nodes"),
            Some(Target::Nodes(None))
        );
        assert_eq!(
            target("/apis/metrics.k8s.io/v1beta1/nodes/n1"),
            Some(Target::Nodes(Some("n1".into())))
        );
        assert_eq!(
            target("/apis/metrics.k8s.io/v1beta1/pods"),
            Some(Target::Pods {
                namespace: None,
                name: None
            })
        );
        assert_eq!(
            target("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web"),
            Some(Target::Pods {
                namespace: Some("default".into()),
                name: Some("web".into())
            })
        );
        assert_eq!(
            target("/apis/metrics.k8s.io/v1beta1"),
            None,
            "discovery is not ours"
        );
        assert_eq!(target("/apis/metrics.k8s.io/v1beta1/namespaces/default"), None);
    }

    fn summary() -> Summary {
        serde_json::from_value(json!({
            "node": {"nodeName": "n1", "startTime": "2026-01-01T00:00:00Z",
                "cpu": {"time": "2026-01-01T00:10:00Z", "usageNanoCores": 1_250_000_000u64, "usageCoreNanoSeconds": 5},
                "memory": {"time": "2026-01-01T00:10:00Z", "workingSetBytes": 2u64 << 30, "usageBytes": 3u64 << 30}},
            "pods": [
                {"podRef": {"name": "busy", "namespace": "default", "uid": "u1"}, "startTime": "x",
                 "containers": [
                    {"name": "burn", "cpu": {"time": "2026-01-01T00:10:00Z", "usageNanoCores": 998_000_000u64},
                     "memory": {"time": "2026-01-01T00:10:00Z", "workingSetBytes": 1_052_672u64}}]},
                {"podRef": {"name": "new", "namespace": "default", "uid": "u2"},
                 "containers": [{"name": "c", "cpu": {"time": "2026-01-01T00:10:00Z"},
                     "memory": {"time": "2026-01-01T00:10:00Z", "workingSetBytes": 1}}]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn a_summary_becomes_node_metrics() {
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let metrics = serde_json::to_value(node_metrics(&node, &summary(), "now").unwrap()).unwrap();
        assert_eq!(
            metrics,
            json!({"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": "n1", "creationTimestamp": "now", "labels": {"a": "b"}},
                "timestamp": "2026-01-01T00:10:00Z", "window": "10s",
                "usage": {"cpu": "1250m", "memory": "2Gi"}})
        );
        assert!(
            node_metrics(&node, &Summary::default(), "now").is_none(),
            "no sample: no metrics"
        );
    }

    #[test]
    fn a_summary_becomes_pod_metrics_matched_by_uid() {
        let pod = json!({"metadata": {"name": "busy", "namespace": "default", "uid": "u1"}});
        let metrics = serde_json::to_value(pod_metrics(&pod, &summary(), "now").unwrap()).unwrap();
        assert_eq!(
            metrics,
            json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": "busy", "namespace": "default", "creationTimestamp": "now"},
                "timestamp": "2026-01-01T00:10:00Z", "window": "10s",
                "containers": [{"name": "burn", "usage": {"cpu": "998m", "memory": "1028Ki"}}]})
        );
        let recreated = json!({"metadata": {"name": "busy", "namespace": "default", "uid": "other"}});
        assert!(
            pod_metrics(&recreated, &summary(), "now").is_none(),
            "another pod of that name"
        );
        let without_rate = json!({"metadata": {"name": "new", "namespace": "default", "uid": "u2"}});
        assert!(
            pod_metrics(&without_rate, &summary(), "now").is_none(),
            "a container without a rate"
        );
    }
}
