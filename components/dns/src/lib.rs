//! Cluster DNS (the job k3s gives CoreDNS), built on hickory: the cluster zone answered from Services and
//! EndpointSlices (`records`), everything else forwarded to the host's upstream resolvers through a caching
//! resolver (`handler`, `upstream`).
//!
//! Each node agent runs one, listening on its pod bridge's gateway address, and publishes that address as an
//! endpoint of the `kube-system/kube-dns` Service (whose cluster IP, `--cluster-dns`, pods' resolv.conf names),
//! so the service proxy carries pods' queries to it. Watchers of Services and EndpointSlices -> a cache ->
//! the index rebuilt whole, shortly after any change, and swapped in.

pub mod handler;
pub mod metrics;
pub mod metrics_port;
pub mod records;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hickory_server::Server;
use hickory_server::resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_server::resolver::{Resolver, TokioResolver};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};

use handler::{ClusterDnsHandler, SharedRecords};
use records::ClusterRecords;

/// The Service pods reach the cluster DNS through (k3s's name, which tools look for).
pub const SERVICE_NAMESPACE: &str = "kube-system";
pub const SERVICE_NAME: &str = "kube-dns";
/// The `managed-by` of the EndpointSlices the DNS servers publish (the EndpointSlice controller leaves others'
/// slices alone).
pub const MANAGED_BY: &str = "bonsai-dns";
/// How long after a change the index is rebuilt: a burst of changes is one rebuild, well inside a second.
const REBUILD_DELAY: Duration = Duration::from_millis(50);
/// How often this server's endpoint is written again (after the Service is made again, or a slice deleted).
const PUBLISH_EVERY: Duration = Duration::from_secs(30);
/// Upstream answers are cached no longer than this (k3s's Corefile: `cache 30`).
const CACHE_MAX_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the cluster domain: {0}")]
    Domain(String),
    #[error("the upstream resolver: {0}")]
    Upstream(String),
    #[error("the DNS server stopped: {0}")]
    Server(String),
}

#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// `--cluster-domain` (`cluster.local`).
    pub domain: String,
    /// `--cluster-dns`: the kube-dns Service's cluster IP, the zone's name server.
    pub cluster_dns: IpAddr,
    /// The node this server runs on (its endpoint's `nodeName`, its slice's name).
    pub node_name: String,
    /// Where to listen (the pod bridge's gateway), and on which port (53).
    pub listen: SocketAddr,
    /// Where the DNS metrics are served (the gateway, port 9153 as CoreDNS's), or nowhere.
    pub metrics: Option<SocketAddr>,
    /// Where names outside the cluster go.
    pub upstreams: Vec<IpAddr>,
}

/// The caching resolver for names outside the cluster, or `None` without upstreams.
pub fn upstream_resolver(upstreams: &[IpAddr]) -> Result<Option<TokioResolver>, DnsError> {
    if upstreams.is_empty() {
        return Ok(None);
    }
    let servers = upstreams
        .iter()
        .map(|ip| NameServerConfig::udp_and_tcp(*ip))
        .collect();
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_parts(None, Vec::new(), servers),
        hickory_server::net::runtime::TokioRuntimeProvider::default(),
    );
    let options = builder.options_mut();
    // A forwarder passes CNAME chains on (RFC 1034 4.3.2), reads no hosts file, and asks for recursion.
    options.preserve_intermediates = true;
    options.use_hosts_file = ResolveHosts::Never;
    options.cache_size = 10_000;
    options.positive_max_ttl = Some(CACHE_MAX_TTL);
    options.negative_max_ttl = Some(CACHE_MAX_TTL);
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    options.ndots = 0;
    let resolver = builder.build().map_err(|e| DnsError::Upstream(e.to_string()))?;
    Ok(Some(resolver))
}

fn serial() -> u32 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(seconds % u64::from(u32::MAX)).unwrap_or(1)
}

/// Serves DNS until the server fails: binds `config.listen` (UDP and TCP), follows the cluster, and keeps this
/// server's endpoint published.
pub async fn run(client: kube::Client, config: DnsConfig) -> Result<(), DnsError> {
    let empty = ClusterRecords::build(&config.domain, config.cluster_dns, serial(), &[], &[])
        .map_err(DnsError::Domain)?;
    let records: SharedRecords = Arc::new(RwLock::new(Arc::new(empty)));
    let handler = ClusterDnsHandler {
        records: records.clone(),
        upstream: upstream_resolver(&config.upstreams)?,
        counts: Arc::new(metrics::QueryCounts::registered()),
    };
    if config.upstreams.is_empty() {
        tracing::warn!("no upstream resolver in resolv.conf: names outside the cluster will fail (SERVFAIL)");
    }
    let listen_error = |source| DnsError::Listen {
        address: config.listen,
        source,
    };
    let udp = tokio::net::UdpSocket::bind(config.listen)
        .await
        .map_err(listen_error)?;
    let tcp = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(listen_error)?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    // A TCP client that sends nothing for 5 s is dropped, so idle connections cannot pile up.
    server.register_listener(tcp, Duration::from_secs(5), 32);
    tracing::info!(address = %config.listen, domain = %config.domain, upstreams = ?config.upstreams, "cluster DNS serving");

    let metrics_listener = match config.metrics {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| DnsError::Listen { address, source })?,
        ),
        None => None,
    };
    let metrics = metrics_listener.map(|listener| tokio::spawn(metrics_port::serve(listener)));
    let follow = tokio::spawn(follow_cluster(client.clone(), config.clone(), records));
    let publish = tokio::spawn(publish_endpoint(client, config));
    let result = server
        .block_until_done()
        .await
        .map_err(|e| DnsError::Server(e.to_string()));
    follow.abort();
    publish.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    result
}

/// Services and EndpointSlices -> caches -> the index rebuilt `REBUILD_DELAY` after the last change.
async fn follow_cluster(client: kube::Client, config: DnsConfig, records: SharedRecords) {
    let (services, service_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let service_events = reflector(
        service_writer,
        watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .map(|e| e.map(|_| ()));
    let slice_events = reflector(
        slice_writer,
        watcher(Api::<EndpointSlice>::all(client), watcher::Config::default()).default_backoff(),
    )
    .map(|e| e.map(|_| ()));
    let mut events = std::pin::pin!(futures_util::stream::select(service_events, slice_events));
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let wake = due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Ok(())) => {
                    due.get_or_insert_with(|| tokio::time::Instant::now() + REBUILD_DELAY);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "DNS: watching services and endpoint slices"),
            },
            () = tokio::time::sleep_until(wake), if due.is_some() => {
                due = None;
                let services: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
                let slices: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
                match ClusterRecords::build(&config.domain, config.cluster_dns, serial(), &services, &slices) {
                    Ok(index) => {
                        if let Ok(mut current) = records.write() {
                            *current = Arc::new(index);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "DNS: cannot index the cluster"),
                }
            }
        }
    }
}

/// The EndpointSlice naming this server as an endpoint of kube-dns, as a server-side apply.
pub fn endpoint_slice(config: &DnsConfig) -> serde_json::Value {
    let address_type = if config.listen.is_ipv4() { "IPv4" } else { "IPv6" };
    let port = config.listen.port();
    let mut ports = vec![
        serde_json::json!({"name": "dns", "port": port, "protocol": "UDP"}),
        serde_json::json!({"name": "dns-tcp", "port": port, "protocol": "TCP"}),
    ];
    if let Some(metrics) = config.metrics {
        ports.push(serde_json::json!({"name": "metrics", "port": metrics.port(), "protocol": "TCP"}));
    }
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(&config.node_name),
            "namespace": SERVICE_NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": SERVICE_NAME,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": address_type,
        "endpoints": [{
            "addresses": [config.listen.ip().to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": config.node_name,
        }],
        "ports": ports,
    })
}

/// `kube-dns-<node>`, cut to a valid object name.
fn slice_name(node: &str) -> String {
    let mut name = format!("{SERVICE_NAME}-{node}");
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

async fn publish_endpoint(client: kube::Client, config: DnsConfig) {
    let api: Api<EndpointSlice> = Api::namespaced(client, SERVICE_NAMESPACE);
    let name = slice_name(&config.node_name);
    let params = PatchParams::apply("bonsai-dns").force();
    let mut published = false;
    let mut failures = 0u32;
    loop {
        match api
            .patch(&name, &params, &Patch::Apply(endpoint_slice(&config)))
            .await
        {
            Ok(_) => {
                if !published {
                    tracing::info!(slice = %name, "cluster DNS endpoint published");
                }
                published = true;
                failures = 0;
            }
            Err(e) => {
                // Said once, then every minute of retries, so a server that is slow to start does not flood the log.
                if failures.is_multiple_of(60) {
                    tracing::warn!(slice = %name, error = %e, "cannot publish the cluster DNS endpoint");
                }
                failures += 1;
                published = false;
            }
        }
        tokio::time::sleep(if published {
            PUBLISH_EVERY
        } else {
            Duration::from_secs(1)
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_slice_names_this_node_and_the_dns_ports() {
        let config = DnsConfig {
            domain: "cluster.local".into(),
            cluster_dns: "10.43.0.10".parse().expect("ip"),
            node_name: "edge-1".into(),
            listen: "10.42.0.1:53".parse().expect("address"),
            metrics: Some("10.42.0.1:9153".parse().expect("address")),
            upstreams: Vec::new(),
        };
        let slice: EndpointSlice = serde_json::from_value(endpoint_slice(&config)).expect("a slice");
        assert_eq!(slice.metadata.name.as_deref(), Some("kube-dns-edge-1"));
        assert_eq!(slice.endpoints[0].addresses, vec!["10.42.0.1".to_string()]);
        assert_eq!(slice.ports.as_ref().map(Vec::len), Some(3));
        assert_eq!(slice_name(&"x".repeat(300)).len(), 253);
    }
}
