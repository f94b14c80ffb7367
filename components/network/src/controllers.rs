//! The cluster-wide network controllers a server runs (clients of the API only, like every controller):
//!
//! - node IPAM (kube-controller-manager's): a Node without `spec.podCIDR` gets the first free /24 of
//!   `--cluster-cidr`;
//! - ServiceLB (k3s's): a `LoadBalancer` Service without a `loadBalancerClass` gets the nodes' addresses as its
//!   `status.loadBalancer.ingress`, and the node proxies answer its ports there. As with k3s, two such
//!   Services may not share a port: the older one keeps it, the newer stays pending.
//!
//! Each is watcher -> cache -> idempotent reconcile of the whole set, on every change.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

use crate::NetworkError;
use crate::config::ClusterNetworks;

/// True once a reflector's cache holds the whole initial list. Never waits: the cache fills only while its
/// event stream is polled, and that is the caller's job.
pub fn cache_ready<K>(cache: &reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures_util::FutureExt;
    cache.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
}

/// The pod subnets to give: (node, subnet) for each Node without one, given the ones the others hold.
pub fn pod_cidr_assignments(
    networks: &ClusterNetworks,
    nodes: &[Node],
) -> Result<Vec<(String, ipnet::Ipv4Net)>, NetworkError> {
    let mut taken: Vec<ipnet::Ipv4Net> = nodes
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok())
        .collect();
    let mut out = Vec::new();
    let mut waiting: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_none())
        .collect();
    // Oldest first, so that a node keeps getting the same subnet when several join at once.
    waiting.sort_by_key(|n| {
        (
            n.metadata.creation_timestamp.clone().map(|t| t.0),
            n.metadata.name.clone(),
        )
    });
    for node in waiting {
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        let subnet = networks.next_node_subnet(&taken)?;
        taken.push(subnet);
        out.push((name, subnet));
    }
    Ok(out)
}

/// Gives every Node without a pod subnet one, until the watch ends.
pub async fn run_node_ipam(client: kube::Client, networks: ClusterNetworks) -> Result<(), NetworkError> {
    let nodes: Api<Node> = Api::all(client);
    let (cache, writer) = reflector::store::<Node>();
    let mut events = std::pin::pin!(reflector(
        writer,
        watcher(nodes.clone(), watcher::Config::default()).default_backoff()
    ));
    let mut retry = false;
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return Ok(()),
                Some(Err(e)) => { tracing::warn!(error = %e, "watching Nodes"); continue; }
                Some(Ok(_)) => {}
            },
            () = tokio::time::sleep(Duration::from_secs(1)), if retry => {}
        }
        if !cache_ready(&cache) {
            continue;
        }
        let state: Vec<Node> = cache.state().iter().map(|n| (**n).clone()).collect();
        retry = false;
        match pod_cidr_assignments(&networks, &state) {
            Ok(assignments) => {
                for (name, subnet) in assignments {
                    let patch =
                        json!({"spec": {"podCIDR": subnet.to_string(), "podCIDRs": [subnet.to_string()]}});
                    match nodes
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => tracing::info!(node = %name, %subnet, "assigned the node's pod subnet"),
                        Err(e) => {
                            retry = true;
                            tracing::warn!(node = %name, error = %e, "cannot assign the node's pod subnet");
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "no pod subnet left for new nodes"),
        }
    }
}

/// The addresses ServiceLB gives a load balancer: each schedulable node's ExternalIP, or InternalIP without one.
pub fn node_addresses(nodes: &[Node]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for node in nodes {
        let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        let status = node.status.as_ref();
        let not_ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "False"));
        if unschedulable || not_ready {
            continue;
        }
        let addresses = status.and_then(|s| s.addresses.clone()).unwrap_or_default();
        let pick = |kind: &str| {
            addresses
                .iter()
                .find(|a| a.type_ == kind)
                .map(|a| a.address.clone())
        };
        if let Some(address) = pick("ExternalIP").or_else(|| pick("InternalIP")) {
            out.insert(address);
        }
    }
    out.into_iter().collect()
}

/// What each Service's `status.loadBalancer.ingress` should be: (namespace, name) -> IPs (empty: pending, or not
/// a ServiceLB Service). Older Services keep their ports; a newer one asking for a port taken stays pending.
pub fn load_balancer_ingress(
    services: &[Service],
    addresses: &[String],
) -> BTreeMap<(String, String), Vec<String>> {
    let mut ordered: Vec<&Service> = services.iter().collect();
    ordered.sort_by_key(|s| {
        (
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            s.metadata.namespace.clone(),
            s.metadata.name.clone(),
        )
    });
    let mut claimed: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for service in ordered {
        let (Some(namespace), Some(name)) =
            (service.metadata.namespace.clone(), service.metadata.name.clone())
        else {
            continue;
        };
        let spec = service.spec.as_ref();
        let ours = spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
            && spec.and_then(|s| s.load_balancer_class.as_ref()).is_none();
        let ports: Vec<(String, i32)> = spec
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.protocol.unwrap_or_else(|| "TCP".into()), p.port))
            .collect();
        let free = ports.iter().all(|p| !claimed.contains(p));
        let ingress = if ours && free && !addresses.is_empty() {
            claimed.extend(ports);
            addresses.to_vec()
        } else {
            if ours && !free {
                tracing::debug!(%namespace, %name, "a port of this load balancer is taken by an older one");
            }
            Vec::new()
        };
        out.insert((namespace, name), ingress);
    }
    out
}

fn current_ingress(service: &Service) -> Vec<String> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

/// Keeps load balancer Services' ingress addresses in step with the nodes, until the watches end.
pub async fn run_service_lb(client: kube::Client) -> Result<(), NetworkError> {
    let (services, service_writer) = reflector::store::<Service>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let service_events = reflector(
        service_writer,
        watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .map(|e| e.map(|_| ()));
    let node_events = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .map(|e| e.map(|_| ()));
    let mut events = std::pin::pin!(futures_util::stream::select(service_events, node_events));
    let mut retry = false;
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return Ok(()),
                Some(Err(e)) => { tracing::warn!(error = %e, "watching Services and Nodes"); continue; }
                Some(Ok(())) => {}
            },
            () = tokio::time::sleep(Duration::from_secs(1)), if retry => {}
        }
        if !cache_ready(&services) || !cache_ready(&nodes) {
            continue;
        }
        let all_services: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let all_nodes: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        let wanted = load_balancer_ingress(&all_services, &node_addresses(&all_nodes));
        retry = false;
        for service in &all_services {
            let (Some(namespace), Some(name)) =
                (service.metadata.namespace.clone(), service.metadata.name.clone())
            else {
                continue;
            };
            let want = wanted
                .get(&(namespace.clone(), name.clone()))
                .cloned()
                .unwrap_or_default();
            if current_ingress(service) == want {
                continue;
            }
            if service
                .spec
                .as_ref()
                .and_then(|s| s.load_balancer_class.as_ref())
                .is_some()
            {
                continue; // another load balancer controller's
            }
            let ingress: Vec<_> = want.iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect();
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            let api: Api<Service> = Api::namespaced(client.clone(), &namespace);
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(%namespace, %name, ingress = ?want, "load balancer addresses"),
                Err(e) => {
                    retry = true;
                    tracing::warn!(%namespace, %name, error = %e, "cannot set the load balancer's addresses");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn new_nodes_get_free_subnets_oldest_first() {
        let networks = ClusterNetworks::parse("10.42.0.0/16", "10.43.0.0/16").unwrap();
        let nodes = [
            node(json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.42.0.0/24"}})),
            node(json!({"metadata": {"name": "c", "creationTimestamp": "2026-01-02T00:00:00Z"}})),
            node(json!({"metadata": {"name": "b", "creationTimestamp": "2026-01-01T00:00:00Z"}})),
        ];
        let got = pod_cidr_assignments(&networks, &nodes).unwrap();
        assert_eq!(
            got,
            vec![
                ("b".to_string(), "10.42.1.0/24".parse().unwrap()),
                ("c".to_string(), "10.42.2.0/24".parse().unwrap())
            ]
        );
        let tiny = ClusterNetworks::parse("10.42.0.0/24", "10.43.0.0/16").unwrap();
        assert!(pod_cidr_assignments(&tiny, &nodes).is_err(), "exhausted");
    }

    #[test]
    fn load_balancers_get_node_addresses_and_older_ones_keep_their_ports() {
        let nodes = [
            node(
                json!({"metadata": {"name": "a"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}),
            ),
            node(json!({"metadata": {"name": "b"}, "status": {"addresses": [
                {"type": "InternalIP", "address": "10.0.0.3"}, {"type": "ExternalIP", "address": "203.0.113.3"}]}})),
            node(json!({"metadata": {"name": "c"}, "spec": {"unschedulable": true},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.4"}]}})),
        ];
        let addresses = node_addresses(&nodes);
        assert_eq!(addresses, ["10.0.0.2", "203.0.113.3"]);
        let services = [
            service(
                json!({"metadata": {"namespace": "d", "name": "new", "creationTimestamp": "2026-01-02T00:00:00Z"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
            ),
            service(
                json!({"metadata": {"namespace": "d", "name": "old", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}}),
            ),
            service(
                json!({"metadata": {"namespace": "d", "name": "other", "creationTimestamp": "2026-01-03T00:00:00Z"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "UDP"}]}}),
            ),
            service(json!({"metadata": {"namespace": "d", "name": "classy"},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": "x/y", "ports": [{"port": 81}]}})),
            service(
                json!({"metadata": {"namespace": "d", "name": "plain"}, "spec": {"ports": [{"port": 82}]}}),
            ),
        ];
        let got = load_balancer_ingress(&services, &addresses);
        let of = |n: &str| got[&("d".to_string(), n.to_string())].clone();
        assert_eq!(of("old"), addresses);
        assert!(of("new").is_empty(), "port 80/TCP is the older one's");
        assert_eq!(of("other"), addresses, "80/UDP is free");
        assert!(of("classy").is_empty());
        assert!(of("plain").is_empty());
    }
}
