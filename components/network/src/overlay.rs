//! Traffic between nodes, the way flannel carries it: a VXLAN device `flannel.1` (VNI 1, UDP 8472) with, for
//! every other node, a route to its pod subnet through its VTEP (onlink), a permanent neighbour entry for the
//! VTEP's MAC and an FDB entry sending that MAC to the node's address; or, with host-gw, a plain route to each
//! node's pod subnet via the node. Nodes learn about each other from flannel's Node annotations.
//!
//! **Architecture Invariant**: `sync` takes the whole desired set of peers and makes the kernel match it
//! (adding, replacing, deleting), so it is safe to call on every change and after any restart.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{LinkVxlan, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use crate::NetworkError;
use crate::netlink::{self, Netlink};

pub const VXLAN_DEVICE: &str = "flannel.1";
pub const VXLAN_VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The routing protocol number bonsai's routes carry, so that it removes exactly its own (see
/// /etc/iproute2/rt_protos: numbers above 4 are for routing daemons; 77 is unassigned there).
pub const ROUTE_PROTOCOL: u8 = 77;

pub const ANNOTATION_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const ANNOTATION_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const ANNOTATION_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const ANNOTATION_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// `--flannel-backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Vxlan,
    HostGw,
    /// Pod networking is left to an external CNI.
    None,
}

impl std::str::FromStr for Backend {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vxlan" => Ok(Self::Vxlan),
            "host-gw" => Ok(Self::HostGw),
            "none" => Ok(Self::None),
            other => Err(NetworkError::Config(format!(
                "--flannel-backend: {other:?} is not one of vxlan, host-gw, none"
            ))),
        }
    }
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Vxlan => "vxlan",
            Self::HostGw => "host-gw",
            Self::None => "none",
        }
    }

    /// What the backend's encapsulation takes from the uplink's MTU.
    pub fn overhead(self) -> u32 {
        match self {
            Self::Vxlan => VXLAN_OVERHEAD,
            Self::HostGw | Self::None => 0,
        }
    }
}

/// The interface that carries traffic to other nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub index: u32,
    pub ip: Ipv4Addr,
    pub mtu: u32,
}

/// The node's uplink: the interface holding `node_ip` when given, else the one of the default route.
/// `addresses` are the host's, as `Netlink::ipv4_addresses` lists them.
pub async fn uplink(
    host: &Netlink,
    addresses: &[(String, Ipv4Net)],
    node_ip: Option<Ipv4Addr>,
) -> Result<Uplink, NetworkError> {
    let links = host.links().await?;
    let (name, ip) = match node_ip {
        Some(ip) => {
            let name = addresses
                .iter()
                .find(|(_, a)| a.addr() == ip)
                .map(|(name, _)| name.clone())
                .ok_or_else(|| {
                    NetworkError::Config(format!("--node-ip {ip} is not an address of this host"))
                })?;
            (name, ip)
        }
        None => {
            let default = host
                .routes()
                .await?
                .into_iter()
                .find(|r| r.header.destination_prefix_length == 0)
                .and_then(|r| {
                    r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    })
                })
                .ok_or_else(|| {
                    NetworkError::Config(
                        "no default route to find the node's interface by; give --node-ip".into(),
                    )
                })?;
            let name = links
                .iter()
                .find(|l| l.header.index == default)
                .and_then(netlink::link_name)
                .unwrap_or_default();
            let ip = addresses
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, a)| a.addr())
                .ok_or_else(|| NetworkError::Config(format!("{name} has no IPv4 address")))?;
            (name, ip)
        }
    };
    let link = links
        .iter()
        .find(|l| netlink::link_name(l).as_deref() == Some(name.as_str()))
        .ok_or_else(|| NetworkError::Missing(format!("link {name}")))?;
    Ok(Uplink {
        index: link.header.index,
        mtu: netlink::link_mtu(link).unwrap_or(1500),
        name,
        ip,
    })
}

/// Another node, as this node needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub public_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    /// The MAC of its `flannel.1` (VXLAN only).
    pub vtep_mac: Option<[u8; 6]>,
}

impl Peer {
    /// Its VTEP address: the pod subnet's network address, which flannel puts on `flannel.1` as a /32.
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.pod_cidr.network()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct VxlanBackendData {
    #[serde(rename = "VNI")]
    vni: u32,
    #[serde(rename = "VtepMAC")]
    vtep_mac: String,
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

/// The annotations a node publishes on its Node object for the others.
pub fn node_annotations(
    backend: Backend,
    public_ip: Ipv4Addr,
    vtep_mac: Option<[u8; 6]>,
) -> BTreeMap<String, String> {
    let data = match (backend, vtep_mac) {
        (Backend::Vxlan, Some(mac)) => serde_json::json!({"VNI": VXLAN_VNI, "VtepMAC": format_mac(mac)}),
        _ => serde_json::Value::Null,
    };
    BTreeMap::from([
        (ANNOTATION_BACKEND_DATA.to_string(), data.to_string()),
        (ANNOTATION_BACKEND_TYPE.to_string(), backend.name().to_string()),
        (ANNOTATION_PUBLIC_IP.to_string(), public_ip.to_string()),
        (ANNOTATION_SUBNET_MANAGER.to_string(), "true".to_string()),
    ])
}

/// The peer a Node describes, if it has published enough for `backend` (a pod CIDR, its public IP, and for
/// VXLAN its VTEP MAC) and uses the same backend.
pub fn peer_from_node(node: &Node, backend: Backend) -> Option<Peer> {
    let name = node.metadata.name.clone()?;
    let annotations = node.metadata.annotations.as_ref()?;
    if annotations.get(ANNOTATION_BACKEND_TYPE)? != backend.name() {
        return None;
    }
    let public_ip = annotations.get(ANNOTATION_PUBLIC_IP)?.parse().ok()?;
    let pod_cidr: Ipv4Net = node.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()?;
    let vtep_mac = match backend {
        Backend::Vxlan => {
            let data: VxlanBackendData =
                serde_json::from_str(annotations.get(ANNOTATION_BACKEND_DATA)?).ok()?;
            Some(parse_mac(&data.vtep_mac)?)
        }
        Backend::HostGw | Backend::None => None,
    };
    Some(Peer {
        name,
        public_ip,
        pod_cidr: pod_cidr.trunc(),
        vtep_mac,
    })
}

/// The node's end of the overlay.
#[derive(Debug)]
pub struct Overlay {
    backend: Backend,
    pod_cidr: Ipv4Net,
    uplink: Uplink,
    host: Netlink,
    vxlan: Option<(u32, [u8; 6])>,
}

impl Overlay {
    /// Creates (or finds) the VXLAN device for this node's pod subnet.
    /// `host` is a netlink connection in the node's namespace.
    pub async fn start(
        host: Netlink,
        backend: Backend,
        pod_cidr: Ipv4Net,
        uplink: Uplink,
    ) -> Result<Self, NetworkError> {
        let mut overlay = Self {
            backend,
            pod_cidr,
            uplink,
            host,
            vxlan: None,
        };
        if backend == Backend::Vxlan {
            overlay.vxlan = Some(overlay.ensure_vxlan().await?);
        }
        Ok(overlay)
    }

    async fn ensure_vxlan(&self) -> Result<(u32, [u8; 6]), NetworkError> {
        let mtu = self.uplink.mtu.saturating_sub(VXLAN_OVERHEAD);
        if let Some(existing) = self.host.link(VXLAN_DEVICE).await? {
            // A device from another uplink or address (the node's IP changed) is rebuilt.
            let local_ok = existing.attributes.iter().any(|a| {
                matches!(a, netlink_packet_route::link::LinkAttribute::LinkInfo(infos)
                    if infos.iter().any(|i| matches!(i,
                        netlink_packet_route::link::LinkInfo::Data(netlink_packet_route::link::InfoData::Vxlan(v))
                        if v.iter().any(|x| matches!(x, netlink_packet_route::link::InfoVxlan::Local(ip) if *ip == self.uplink.ip)))))
            });
            if !local_ok {
                self.host.delete_link(VXLAN_DEVICE).await?;
            }
        }
        if self.host.index(VXLAN_DEVICE).await?.is_none() {
            self.host
                .add_link(
                    LinkVxlan::new(VXLAN_DEVICE, VXLAN_VNI)
                        .port(VXLAN_PORT)
                        .local(self.uplink.ip)
                        .dev(self.uplink.index)
                        .learning(false)
                        .mtu(mtu)
                        .build(),
                    VXLAN_DEVICE,
                )
                .await?;
        }
        let link = self
            .host
            .link(VXLAN_DEVICE)
            .await?
            .ok_or_else(|| NetworkError::Missing(format!("link {VXLAN_DEVICE}")))?;
        let index = link.header.index;
        let mac = netlink::link_mac(&link)
            .ok_or_else(|| NetworkError::Missing(format!("the MAC of {VXLAN_DEVICE}")))?;
        self.host
            .add_address(index, self.pod_cidr.network(), 32, VXLAN_DEVICE)
            .await?;
        self.host.up(index, VXLAN_DEVICE).await?;
        Ok((index, mac))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    /// The MTU pods get on this node.
    pub fn pod_mtu(&self) -> u32 {
        self.uplink.mtu.saturating_sub(self.backend.overhead())
    }

    pub fn vtep_mac(&self) -> Option<[u8; 6]> {
        self.vxlan.map(|(_, mac)| mac)
    }

    /// This node's annotations for its Node object.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        node_annotations(self.backend, self.uplink.ip, self.vtep_mac())
    }

    /// Makes routes, neighbours and FDB entries match `peers` (this node itself, if present, is skipped).
    pub async fn sync(&self, peers: &[Peer]) -> Result<(), NetworkError> {
        let peers: Vec<&Peer> = peers
            .iter()
            .filter(|p| p.pod_cidr != self.pod_cidr && p.public_ip != self.uplink.ip)
            .collect();
        match (self.backend, self.vxlan) {
            (Backend::Vxlan, Some((index, _))) => self.sync_vxlan(index, &peers).await,
            (Backend::HostGw, _) => self.sync_host_gw(&peers).await,
            _ => Ok(()),
        }
    }

    async fn sync_vxlan(&self, index: u32, peers: &[&Peer]) -> Result<(), NetworkError> {
        let wanted: Vec<(&Peer, [u8; 6])> = peers
            .iter()
            .filter_map(|p| p.vtep_mac.map(|mac| (*p, mac)))
            .collect();
        for (peer, mac) in &wanted {
            let vtep = peer.vtep_ip();
            // Neighbour and FDB first, so the route never points at an unresolved VTEP.
            self.host
                .handle
                .neighbours()
                .add(index, IpAddr::V4(vtep))
                .link_layer_address(mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|source| NetworkError::Netlink {
                    what: format!("neighbour {vtep} for node {}", peer.name),
                    source,
                })?;
            self.host
                .handle
                .neighbours()
                .add_bridge(index, mac)
                .destination(IpAddr::V4(peer.public_ip))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|source| NetworkError::Netlink {
                    what: format!("FDB entry to {} for node {}", peer.public_ip, peer.name),
                    source,
                })?;
            self.host
                .replace_route(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(peer.pod_cidr.network(), peer.pod_cidr.prefix_len())
                        .gateway(vtep)
                        .output_interface(index)
                        .onlink()
                        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL)),
                    &format!("{} via {vtep} dev {VXLAN_DEVICE}", peer.pod_cidr),
                )
                .await?;
        }
        let keep_routes: HashSet<Ipv4Net> = wanted.iter().map(|(p, _)| p.pod_cidr).collect();
        self.delete_stale_routes(&keep_routes).await?;
        let keep_neighbours: HashSet<Ipv4Addr> = wanted.iter().map(|(p, _)| p.vtep_ip()).collect();
        let keep_fdb: HashSet<[u8; 6]> = wanted.iter().map(|(_, mac)| *mac).collect();
        for message in self.neighbours(index, AddressFamily::Inet).await? {
            let stale = neighbour_ip(&message).is_some_and(|ip| !keep_neighbours.contains(&ip));
            if stale {
                self.delete_neighbour(message).await?;
            }
        }
        for message in self.neighbours(index, AddressFamily::Bridge).await? {
            let stale = neighbour_mac(&message).is_some_and(|mac| {
                // The device's own and the all-zero default entries are the kernel's.
                mac != [0; 6] && !keep_fdb.contains(&mac) && Some(mac) != self.vtep_mac()
            });
            if stale {
                self.delete_neighbour(message).await?;
            }
        }
        Ok(())
    }

    async fn sync_host_gw(&self, peers: &[&Peer]) -> Result<(), NetworkError> {
        for peer in peers {
            self.host
                .replace_route(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(peer.pod_cidr.network(), peer.pod_cidr.prefix_len())
                        .gateway(peer.public_ip)
                        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL)),
                    &format!("{} via {}", peer.pod_cidr, peer.public_ip),
                )
                .await?;
        }
        let keep: HashSet<Ipv4Net> = peers.iter().map(|p| p.pod_cidr).collect();
        self.delete_stale_routes(&keep).await
    }

    /// Deletes bonsai's routes (by protocol number) to subnets not in `keep`.
    async fn delete_stale_routes(&self, keep: &HashSet<Ipv4Net>) -> Result<(), NetworkError> {
        for route in self.own_routes().await? {
            let stale = route_destination(&route).is_none_or(|dst| !keep.contains(&dst));
            if stale {
                self.host.delete_route(route).await?;
            }
        }
        Ok(())
    }

    async fn own_routes(&self) -> Result<Vec<RouteMessage>, NetworkError> {
        Ok(self
            .host
            .routes()
            .await?
            .into_iter()
            .filter(|r| r.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL))
            .collect())
    }

    async fn neighbours(
        &self,
        index: u32,
        family: AddressFamily,
    ) -> Result<Vec<NeighbourMessage>, NetworkError> {
        let request = self.host.handle.neighbours().get();
        let request = request.set_address_family(family);
        let all: Vec<NeighbourMessage> =
            request
                .execute()
                .try_collect()
                .await
                .map_err(|source| NetworkError::Netlink {
                    what: "listing neighbours".into(),
                    source,
                })?;
        Ok(all
            .into_iter()
            .filter(|n| n.header.ifindex == index && n.header.family == family)
            .collect())
    }

    async fn delete_neighbour(&self, message: NeighbourMessage) -> Result<(), NetworkError> {
        match self.host.handle.neighbours().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink::is_gone(&e) => Ok(()),
            Err(source) => Err(NetworkError::Netlink {
                what: "deleting a neighbour".into(),
                source,
            }),
        }
    }

    /// Removes everything the overlay made: the VXLAN device (its routes, neighbours and FDB entries go with
    /// it) and bonsai's host-gw routes.
    pub async fn remove(self) -> Result<(), NetworkError> {
        remove_all(&self.host).await
    }
}

/// Removes the VXLAN device and every route carrying bonsai's protocol number, whatever made them.
pub async fn remove_all(host: &Netlink) -> Result<(), NetworkError> {
    for route in host.routes().await? {
        if route.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL) {
            host.delete_route(route).await?;
        }
    }
    host.delete_link(VXLAN_DEVICE).await?;
    Ok(())
}

fn route_destination(route: &RouteMessage) -> Option<Ipv4Net> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
            Ipv4Net::new(*ip, route.header.destination_prefix_length).ok()
        }
        _ => None,
    })
}

fn neighbour_ip(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn neighbour_mac(message: &NeighbourMessage) -> Option<[u8; 6]> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn annotations_round_trip_into_a_peer() {
        let mac = [0x2a, 0x01, 0x02, 0x03, 0x04, 0x05];
        let annotations = node_annotations(Backend::Vxlan, Ipv4Addr::new(192, 168, 77, 2), Some(mac));
        assert_eq!(
            annotations[ANNOTATION_BACKEND_DATA],
            r#"{"VNI":1,"VtepMAC":"2a:01:02:03:04:05"}"#
        );
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n2".into()),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some("10.42.1.0/24".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let peer = peer_from_node(&node, Backend::Vxlan).unwrap();
        assert_eq!(peer.vtep_mac, Some(mac));
        assert_eq!(peer.vtep_ip(), Ipv4Addr::new(10, 42, 1, 0));
        assert_eq!(peer.public_ip, Ipv4Addr::new(192, 168, 77, 2));
        // Another backend, or no pod CIDR yet: not a peer.
        assert!(peer_from_node(&node, Backend::HostGw).is_none());
        let mut bare = node.clone();
        bare.spec = None;
        assert!(peer_from_node(&bare, Backend::Vxlan).is_none());
    }

    #[test]
    fn backends_parse_and_macs_format() {
        assert_eq!("host-gw".parse::<Backend>().unwrap(), Backend::HostGw);
        assert!("ipsec".parse::<Backend>().is_err());
        assert_eq!(parse_mac("0a:0b:0c:0d:0e:0f"), Some([10, 11, 12, 13, 14, 15]));
        assert_eq!(parse_mac("0a:0b"), None);
        assert_eq!(Backend::Vxlan.overhead(), 50);
    }
}
