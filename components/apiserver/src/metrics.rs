//! The API server's metric families, with kube-apiserver's names: requests by verb, resource and code
//! (`apiserver_request_total`), their latency (`apiserver_request_duration_seconds`), long-running requests in
//! flight (watches and connections: `apiserver_longrunning_requests`), store operations' latency
//! (`etcd_request_duration_seconds`) and the store's size on disk (`apiserver_storage_size_bytes`), and the
//! middleware that records requests. `/metrics` (a non-resource URL, authenticated like the rest) serves the
//! process registry.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ::metrics::{Buckets, CounterVec, GaugeVec, HistogramVec};
use async_trait::async_trait;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use embedded_store::{
    GetResponse, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnOp, TxnResponse,
    WatchRequest, WatchStream,
};
use http_body_util::BodyExt;

/// kube-apiserver's buckets for request and storage latency.
const LATENCY: Buckets = Buckets(&[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0,
    20.0, 30.0, 45.0, 60.0,
]);

struct Families {
    requests: CounterVec<8>,
    durations: HistogramVec<7>,
    longrunning: GaugeVec<7>,
    storage: HistogramVec<2>,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let f = Families {
            requests: CounterVec::default(),
            durations: ::metrics::histogram_vec(LATENCY),
            longrunning: GaugeVec::default(),
            storage: ::metrics::histogram_vec(LATENCY),
        };
        let r = ::metrics::registry();
        r.register(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code",
            f.requests.clone(),
        );
        r.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component",
            f.durations.clone(),
        );
        r.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component",
            f.longrunning.clone(),
        );
        r.register(
            "etcd_request_duration_seconds",
            "Store request latency in seconds for each operation and object type",
            f.storage.clone(),
        );
        f
    })
}

/// Registers the API server's families (so a scrape shows them before the first request).
pub fn register() {
    families();
}

/// The store's size on disk, read at each scrape (`apiserver_storage_size_bytes`).
pub fn register_storage_size(size: impl Fn() -> u64 + Send + Sync + 'static) {
    ::metrics::registry().register_gauge_fn(
        "apiserver_storage_size_bytes",
        "Size of the storage database file physically allocated in bytes",
        move || i64::try_from(size()).unwrap_or(i64::MAX),
    );
}

pub use crate::request_info::RequestInfo;

impl RequestInfo {
    /// The verb as kube-apiserver's metrics report it (`CleanVerb`): the route's verb in capitals (GET, LIST,
    /// WATCH, POST, PUT, PATCH, APPLY for server-side apply, DELETE, DELETECOLLECTION, CONNECT for exec, attach,
    /// port-forward and proxy).
    pub fn metric_verb(&self, apply: bool) -> String {
        if !self.resource_request {
            return self.verb.to_ascii_uppercase();
        }
        let connect = matches!(
            self.subresource.as_str(),
            "exec" | "attach" | "portforward" | "proxy"
        );
        match self.verb.as_str() {
            _ if connect => "CONNECT",
            "get" => "GET",
            "list" => "LIST",
            "watch" => "WATCH",
            "create" => "POST",
            "update" => "PUT",
            "patch" if apply => "APPLY",
            "patch" => "PATCH",
            "delete" => "DELETE",
            "deletecollection" => "DELETECOLLECTION",
            other => return other.to_ascii_uppercase(),
        }
        .to_string()
    }

    /// `resource` (a named object), `namespace` or `cluster`; empty for non-resource requests.
    pub fn scope(&self) -> &'static str {
        match (
            self.resource_request,
            self.name.is_empty(),
            self.namespace.is_empty(),
        ) {
            (false, _, _) => "",
            (true, false, _) => "resource",
            (true, true, false) => "namespace",
            (true, true, true) => "cluster",
        }
    }
}

/// Decrements a long-running gauge when the response body (a watch's stream, an upgraded connection's answer)
/// is dropped.
struct InFlight(::metrics::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The middleware: every request that passed authentication is counted and timed (to its response head; a
/// watch's or a connection's lifetime is what `apiserver_longrunning_requests` shows).
pub async fn instrument(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let info = RequestInfo::of(request.method(), request.uri().path(), request.uri().query());
    let apply = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/apply-patch"));
    let verb = info.metric_verb(apply);
    let labels: ::metrics::Labels<7> = [
        ("verb", verb.clone()),
        ("group", info.group.clone()),
        ("version", info.version.clone()),
        ("resource", info.resource.clone()),
        ("subresource", info.subresource.clone()),
        ("scope", info.scope().to_string()),
        ("component", "apiserver".to_string()),
    ];
    let f = families();
    let long_running = verb == "WATCH" || verb == "CONNECT" || info.subresource == "log";
    let in_flight = long_running.then(|| {
        let gauge = f.longrunning.get_or_create(&labels).clone();
        gauge.inc();
        InFlight(gauge)
    });
    let response = next.run(request).await;
    let code = response.status().as_u16().to_string();
    let [verb, group, version, resource, subresource, scope, component] = labels.clone();
    f.requests
        .get_or_create(&[
            verb,
            group,
            version,
            resource,
            subresource,
            scope,
            component,
            ("code", code),
        ])
        .inc();
    f.durations
        .get_or_create(&labels)
        .observe(::metrics::seconds_since(started));
    match in_flight {
        None => response,
        Some(guard) => {
            let (parts, body) = response.into_parts();
            let body = body.map_frame(move |frame| {
                let _ = &guard;
                frame
            });
            Response::from_parts(parts, axum::body::Body::new(body))
        }
    }
}

/// `GET /metrics`.
pub async fn serve() -> Response {
    match ::metrics::registry().encode() {
        Ok(text) => ([(header::CONTENT_TYPE, ::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => crate::status::failure(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        ),
    }
}

/// The store, timed per operation and object type (`etcd_request_duration_seconds`, as kube-apiserver's etcd3
/// storage records it).
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
}

impl InstrumentedStore {
    pub fn new(inner: Arc<dyn Store>) -> InstrumentedStore {
        families();
        InstrumentedStore { inner }
    }

    fn observe(&self, operation: &'static str, key: &[u8], started: Instant) {
        families()
            .storage
            .get_or_create(&[("operation", operation.to_string()), ("type", object_type(key))])
            .observe(::metrics::seconds_since(started));
    }
}

/// The object type a key belongs to: `pods` for `/registry/core/pods/...`, `deployments.apps` for
/// `/registry/apps/deployments/...`.
pub fn object_type(key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    let mut parts = key.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("registry"), Some("core"), Some(resource)) if !resource.is_empty() => resource.to_string(),
        (Some("registry"), Some(group), Some(resource)) if !resource.is_empty() => {
            format!("{resource}.{group}")
        }
        _ => "other".to_string(),
    }
}

fn first_key(txn: &Txn) -> &[u8] {
    txn.success
        .iter()
        .chain(&txn.failure)
        .map(|op| match op {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key.as_ref(),
        })
        .next()
        .or_else(|| txn.compares.first().map(|c| c.key.as_ref()))
        .unwrap_or_default()
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }

    async fn compact_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compact_revision().await
    }

    async fn get(&self, key: Bytes, revision: Revision) -> Result<GetResponse, StoreError> {
        let started = Instant::now();
        let result = self.inner.get(key.clone(), revision).await;
        self.observe("get", &key, started);
        result
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        let started = Instant::now();
        let prefix = request.prefix.clone();
        let result = self.inner.range(request).await;
        self.observe("list", &prefix, started);
        result
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let started = Instant::now();
        let key = Bytes::copy_from_slice(first_key(&txn));
        let result = self.inner.txn(txn).await;
        self.observe("txn", &key, started);
        result
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream, StoreError> {
        let started = Instant::now();
        let prefix = request.prefix.clone();
        let result = self.inner.watch(request).await;
        self.observe("watch", &prefix, started);
        result
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.compact(revision).await;
        self.observe("compact", b"", started);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn info(method: Method, path: &str, query: Option<&str>) -> RequestInfo {
        RequestInfo::of(&method, path, query)
    }

    #[test]
    fn verbs_are_kubernetes_request_info_verbs() {
        let cases = [
            (Method::GET, "/api/v1/namespaces/default/pods", None, "list"),
            (Method::GET, "/api/v1/namespaces/default/pods/web", None, "get"),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods",
                Some("watch=true&resourceVersion=5"),
                "watch",
            ),
            (Method::GET, "/api/v1/pods", Some("watch=1"), "watch"),
            (
                Method::GET,
                "/api/v1/watch/namespaces/default/pods",
                None,
                "watch",
            ),
            (
                Method::POST,
                "/apis/apps/v1/namespaces/default/deployments",
                None,
                "create",
            ),
            (
                Method::PUT,
                "/apis/apps/v1/namespaces/default/deployments/web",
                None,
                "update",
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/default/deployments/web",
                None,
                "patch",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/default/pods/web",
                None,
                "delete",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/default/pods",
                None,
                "deletecollection",
            ),
            (Method::GET, "/healthz", None, "get"),
        ];
        for (method, path, query, verb) in cases {
            assert_eq!(info(method, path, query).verb, verb, "{path} {query:?}");
        }
    }

    #[test]
    fn urls_give_group_resource_subresource_and_scope() {
        let i = info(
            Method::PUT,
            "/apis/apps/v1/namespaces/ns/deployments/web/scale",
            None,
        );
        assert_eq!(
            (
                i.group.as_str(),
                i.version.as_str(),
                i.namespace.as_str(),
                i.resource.as_str()
            ),
            ("apps", "v1", "ns", "deployments")
        );
        assert_eq!(
            (i.name.as_str(), i.subresource.as_str(), i.scope()),
            ("web", "scale", "resource")
        );
        assert_eq!(info(Method::GET, "/api/v1/nodes", None).scope(), "cluster");
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/ns/pods", None).scope(),
            "namespace"
        );
        let ns = info(Method::GET, "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (ns.resource.as_str(), ns.name.as_str(), ns.verb.as_str()),
            ("namespaces", "kube-system", "get")
        );
        let finalize = info(Method::PUT, "/api/v1/namespaces/gone/finalize", None);
        assert_eq!(
            (
                finalize.resource.as_str(),
                finalize.name.as_str(),
                finalize.subresource.as_str()
            ),
            ("namespaces", "gone", "finalize")
        );
        let metrics = info(Method::GET, "/metrics", None);
        assert!(!metrics.resource_request);
        assert_eq!(
            (metrics.scope(), metrics.metric_verb(false).as_str()),
            ("", "GET")
        );
    }

    #[test]
    fn metric_verbs_are_kube_apiserver_route_verbs() {
        let verb = |method, path, query, apply| info(method, path, query).metric_verb(apply);
        assert_eq!(verb(Method::GET, "/api/v1/pods", None, false), "LIST");
        assert_eq!(
            verb(Method::GET, "/api/v1/pods", Some("watch=true"), false),
            "WATCH"
        );
        assert_eq!(
            verb(Method::POST, "/api/v1/namespaces/a/pods", None, false),
            "POST"
        );
        assert_eq!(
            verb(Method::PUT, "/api/v1/namespaces/a/pods/p", None, false),
            "PUT"
        );
        assert_eq!(
            verb(Method::PATCH, "/api/v1/namespaces/a/pods/p", None, true),
            "APPLY"
        );
        assert_eq!(
            verb(Method::PATCH, "/api/v1/namespaces/a/pods/p", None, false),
            "PATCH"
        );
        assert_eq!(
            verb(Method::POST, "/api/v1/namespaces/a/pods/p/exec", None, false),
            "CONNECT"
        );
        assert_eq!(
            verb(Method::DELETE, "/api/v1/namespaces/a/pods", None, false),
            "DELETECOLLECTION"
        );
    }

    #[test]
    fn keys_name_their_object_type() {
        assert_eq!(object_type(b"/registry/core/pods/default/web"), "pods");
        assert_eq!(object_type(b"/registry/apps/deployments/"), "deployments.apps");
        assert_eq!(object_type(b""), "other");
    }
}
