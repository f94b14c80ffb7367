//! What the proxy serves, from Services and EndpointSlices: one `ServicePort` per port of each Service that has
//! a virtual IP, with the endpoints its EndpointSlices give that port. Pure data: no kernel, no API.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' name for it.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One endpoint of a service port, with its EndpointSlice conditions (nil `ready`/`serving` mean true,
/// nil `terminating` false, as the API documents).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// On this node (the slice's `nodeName` is this node's name).
    pub local: bool,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// One port of one Service, as the proxy programs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name` (`namespace/name` for an unnamed port), kube-proxy's ServicePortName.
    pub name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and the load balancer's ingress IPs: answered like the node port, from outside.
    pub external_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP`: how long a client sticks to its endpoint, in seconds.
    pub affinity_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// The endpoints traffic may go to, as kube-proxy picks them (`CategorizeEndpoints`): the ready ones (of
    /// this node only, with `local_only`); if there are none, the ones still serving while terminating, so
    /// that a rolling update does not drop connections when the last ready endpoint goes.
    pub fn usable(&self, local_only: bool) -> Vec<&Endpoint> {
        let candidates: Vec<&Endpoint> = self.endpoints.iter().filter(|e| e.local || !local_only).collect();
        let ready: Vec<&Endpoint> = candidates.iter().copied().filter(|e| e.ready).collect();
        if !ready.is_empty() {
            return ready;
        }
        candidates
            .into_iter()
            .filter(|e| e.serving && e.terminating)
            .collect()
    }
}

fn ipv4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// The service ports of `services`, with endpoints from `slices` (any order; slices of other Services and of
/// IPv6 are ignored). Headless and ExternalName Services have nothing to program and give nothing.
pub fn service_ports(services: &[Service], slices: &[EndpointSlice], node_name: &str) -> Vec<ServicePort> {
    // Slices by (namespace, service name).
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let labels = slice.metadata.labels.as_ref();
        let (Some(namespace), Some(service)) = (
            slice.metadata.namespace.clone(),
            labels.and_then(|l| l.get(SERVICE_NAME_LABEL)).cloned(),
        ) else {
            continue;
        };
        by_service.entry((namespace, service)).or_default().push(slice);
    }
    let mut out = Vec::new();
    for service in services {
        let (Some(namespace), Some(name), Some(spec)) = (
            service.metadata.namespace.as_deref(),
            service.metadata.name.as_deref(),
            service.spec.as_ref(),
        ) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(cluster_ip) = spec.cluster_ip.as_deref().and_then(ipv4) else {
            continue; // headless ("None"), not yet allocated, or IPv6
        };
        let external_policy_applies = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
            || spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty());
        let mut external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| ipv4(s))
            .collect();
        if spec.type_.as_deref() == Some("LoadBalancer") {
            let ingress = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            for entry in ingress.into_iter().flatten() {
                // `ipMode: Proxy` means the load balancer forwards to the nodes itself: the IP is not ours to answer.
                if entry.ip_mode.as_deref() != Some("Proxy")
                    && let Some(ip) = entry.ip.as_deref().and_then(ipv4)
                {
                    external_ips.push(ip);
                }
            }
        }
        external_ips.sort();
        external_ips.dedup();
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(10800)
        });
        let key = (namespace.to_string(), name.to_string());
        for port in spec.ports.iter().flatten() {
            let (Some(protocol), Ok(number)) = (
                Protocol::parse(port.protocol.as_deref()),
                u16::try_from(port.port),
            ) else {
                continue;
            };
            let port_name = port.name.clone().unwrap_or_default();
            let mut endpoints = Vec::new();
            for slice in by_service.get(&key).into_iter().flatten() {
                let target = slice.ports.iter().flatten().find(|p| {
                    p.name.clone().unwrap_or_default() == port_name
                        && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
                });
                let Some(target) = target.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                for endpoint in &slice.endpoints {
                    let Some(ip) = endpoint.addresses.first().and_then(|a| ipv4(a)) else {
                        continue;
                    };
                    let conditions = endpoint.conditions.as_ref();
                    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                    endpoints.push(Endpoint {
                        ip,
                        port: target,
                        local: endpoint.node_name.as_deref() == Some(node_name),
                        ready,
                        serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                        terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                    });
                }
            }
            // One endpoint may be in two slices while the controller moves it; it counts once.
            endpoints.sort();
            endpoints.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
            out.push(ServicePort {
                name: if port_name.is_empty() {
                    format!("{namespace}/{name}")
                } else {
                    format!("{namespace}/{name}:{port_name}")
                },
                protocol,
                cluster_ip,
                port: number,
                node_port: port
                    .node_port
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0),
                external_ips: external_ips.clone(),
                affinity_seconds,
                external_local: external_policy_applies
                    && spec.external_traffic_policy.as_deref() == Some("Local"),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                endpoints,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> Service {
        service(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.20", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ], "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local"},
        }))
    }

    fn web_slice(name: &str, endpoints: serde_json::Value) -> EndpointSlice {
        slice(json!({
            "metadata": {"namespace": "default", "name": name, "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
    }

    #[test]
    fn ports_take_their_endpoints_from_the_services_slices() {
        let slices = [
            web_slice(
                "web-a",
                json!([
                    {"addresses": ["10.42.0.5"], "nodeName": "n1"},
                    {"addresses": ["10.42.1.5"], "nodeName": "n2", "conditions": {"ready": false}},
                ]),
            ),
            web_slice("web-b", json!([{"addresses": ["10.42.0.5"], "nodeName": "n1"}])),
            slice(
                json!({"metadata": {"namespace": "other", "name": "x", "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 1}], "endpoints": [{"addresses": ["10.42.9.9"]}]}),
            ),
        ];
        let ports = service_ports(&[web()], &slices, "n1");
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(http.name, "default/web:http");
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.affinity_seconds, Some(10800));
        assert!(http.external_local && !http.internal_local);
        assert_eq!(
            http.endpoints.len(),
            2,
            "deduplicated across slices, other namespaces ignored"
        );
        assert_eq!(http.usable(false).len(), 1, "only the ready one");
        assert!(http.usable(false)[0].local);
        let dns = &ports[1];
        assert_eq!(dns.protocol, Protocol::Udp);
        assert!(dns.endpoints.is_empty(), "no slice port named dns");
    }

    #[test]
    fn terminating_endpoints_serve_only_when_nothing_is_ready() {
        let slices = [web_slice(
            "web-a",
            json!([
                {"addresses": ["10.42.0.5"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": false, "serving": false, "terminating": true}},
            ]),
        )];
        let ports = service_ports(&[web()], &slices, "n1");
        let usable = ports[0].usable(false);
        assert_eq!(usable.len(), 1);
        assert_eq!(usable[0].ip, Ipv4Addr::new(10, 42, 0, 5));
        assert!(ports[0].usable(true).is_empty(), "none on this node");
    }

    #[test]
    fn headless_external_name_and_load_balancer_ingress() {
        let headless = service(json!({"metadata": {"namespace": "d", "name": "h"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        let external = service(json!({"metadata": {"namespace": "d", "name": "e"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        let lb = service(json!({"metadata": {"namespace": "d", "name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.30", "ports": [{"port": 443, "nodePort": 31443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}, {"ip": "192.168.1.11", "ipMode": "Proxy"}]}}}));
        let ports = service_ports(&[headless, external, lb], &[], "n1");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name, "d/lb");
        assert_eq!(ports[0].external_ips, vec![Ipv4Addr::new(192, 168, 1, 10)]);
        assert_eq!(ports[0].affinity_seconds, None);
    }
}
