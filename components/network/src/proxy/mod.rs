//! The service proxy (kube-proxy's job), natively in nftables: ClusterIP, NodePort, LoadBalancer and external
//! IPs, with ClientIP session affinity and the internal and external traffic policies.
//!
//! Watchers of Services and EndpointSlices -> caches (kube-runtime reflectors) -> a sync shortly after any
//! change: the whole desired state rendered (`model`, `rules`), and only its difference from the last applied
//! state written, in one `nft -f` transaction.

pub mod model;
pub mod rules;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use crate::{NetworkError, nft};
use model::ServicePort;
use rules::{Existing, Ruleset};

/// How long after a change the proxy waits for more before syncing (kube-proxy's minSyncPeriod is 1 s; a
/// shorter one keeps "within a second" true while still batching a burst of changes into one transaction).
const SYNC_DELAY: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// This node's name: endpoints on it are the local ones.
    pub node_name: String,
    pub cluster_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
}

/// What one sync did.
#[derive(Clone, Copy, Debug)]
pub struct SyncReport {
    pub service_ports: usize,
    pub script_bytes: usize,
    pub elapsed: Duration,
}

/// The proxy's rules in this network namespace, and what was last applied.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    applied: Option<Ruleset>,
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Proxy {
        Proxy {
            config,
            applied: None,
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Makes the kernel's rules match `ports`. After a failure, the next sync rewrites everything.
    pub fn sync(&mut self, ports: &[ServicePort]) -> Result<SyncReport, NetworkError> {
        let start = Instant::now();
        let next = rules::render(ports, self.config.cluster_cidr);
        let existing = match &self.applied {
            Some(_) => Existing::default(),
            None => Existing::parse(&nft::list_table()?.unwrap_or_default()),
        };
        let fixed = rules::fixed_rules(self.config.service_cidr);
        let script = rules::script(self.applied.as_ref(), &next, &fixed, &existing);
        self.applied = None;
        nft::apply(&script)?;
        self.applied = Some(next);
        Ok(SyncReport {
            service_ports: ports.len(),
            script_bytes: script.len(),
            elapsed: start.elapsed(),
        })
    }
}

/// Removes every chain, map and set the proxy made (shutdown with `--cleanup`, uninstall); the rest of bonsai's
/// table stays. Nothing to remove is fine.
pub fn remove_all() -> Result<(), NetworkError> {
    let Some(listing) = nft::list_table()? else {
        return Ok(());
    };
    nft::apply(&rules::removal_script(&Existing::parse(&listing)))
}

/// Follows Services and EndpointSlices and keeps the rules in step until the watches end (they do not, short
/// of an error the watchers cannot recover from). A failed sync is retried a second later.
pub async fn run(client: kube::Client, mut proxy: Proxy) -> Result<(), NetworkError> {
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
                None => return Ok(()),
                Some(Ok(())) => {
                    due.get_or_insert_with(|| tokio::time::Instant::now() + SYNC_DELAY);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "watching services and endpoint slices"),
            },
            () = tokio::time::sleep_until(wake), if due.is_some() => {
                if !crate::controllers::cache_ready(&services) || !crate::controllers::cache_ready(&slices) {
                    due = Some(tokio::time::Instant::now() + SYNC_DELAY);
                    continue;
                }
                let services: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
                let slices: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
                let ports = model::service_ports(&services, &slices, &proxy.config().node_name);
                match proxy.sync(&ports) {
                    Ok(report) => {
                        due = None;
                        tracing::debug!(
                            ports = report.service_ports,
                            bytes = report.script_bytes,
                            elapsed_us = report.elapsed.as_micros() as u64,
                            "service rules in step"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot program the service rules; retrying in a second");
                        due = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                }
            }
        }
    }
}
