//! The cluster's address plan: the pod network (`--cluster-cidr`, one subnet per node) and the service
//! network (`--service-cidr`), checked against each other and against the host's own networks before
//! anything is programmed.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// k3s's defaults.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
/// Each node's pod subnet: a /24, as kube-controller-manager's `--node-cidr-mask-size` defaults to for IPv4.
pub const DEFAULT_NODE_MASK: u8 = 24;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{flag}: {value:?} is not an IPv4 CIDR such as 10.42.0.0/16")]
    Malformed { flag: &'static str, value: String },
    #[error("{flag}: {value} has host bits set; the network is {network}")]
    HostBits {
        flag: &'static str,
        value: String,
        network: Ipv4Net,
    },
    #[error("--cluster-cidr {cidr} is too small to hold a /{node_mask} for each node")]
    TooSmall { cidr: Ipv4Net, node_mask: u8 },
    #[error("--service-cidr {service} overlaps --cluster-cidr {cluster}")]
    ServiceOverlapsCluster { service: Ipv4Net, cluster: Ipv4Net },
    #[error("{flag} {cidr} overlaps the host's network {host} (on {interface})")]
    OverlapsHost {
        flag: &'static str,
        cidr: Ipv4Net,
        host: Ipv4Net,
        interface: String,
    },
    #[error("every /{node_mask} of --cluster-cidr {cidr} is taken by a node")]
    Exhausted { cidr: Ipv4Net, node_mask: u8 },
}

/// Parses a CIDR given by a flag; a network address is required (`10.42.0.1/16` is refused, naming the network
/// it would mean), so that what is programmed is exactly what was written.
pub fn parse_cidr(flag: &'static str, value: &str) -> Result<Ipv4Net, CidrError> {
    let net: Ipv4Net = value.trim().parse().map_err(|_| CidrError::Malformed {
        flag,
        value: value.to_string(),
    })?;
    if net.addr() != net.network() {
        return Err(CidrError::HostBits {
            flag,
            value: value.to_string(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// The address plan of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNetworks {
    pub cluster_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    pub node_mask: u8,
}

impl ClusterNetworks {
    pub fn parse(cluster_cidr: &str, service_cidr: &str) -> Result<Self, CidrError> {
        let cluster_cidr = parse_cidr("--cluster-cidr", cluster_cidr)?;
        let service_cidr = parse_cidr("--service-cidr", service_cidr)?;
        let networks = Self {
            cluster_cidr,
            service_cidr,
            node_mask: DEFAULT_NODE_MASK,
        };
        if cluster_cidr.prefix_len() > networks.node_mask {
            return Err(CidrError::TooSmall {
                cidr: cluster_cidr,
                node_mask: networks.node_mask,
            });
        }
        if overlaps(cluster_cidr, service_cidr) {
            return Err(CidrError::ServiceOverlapsCluster {
                service: service_cidr,
                cluster: cluster_cidr,
            });
        }
        Ok(networks)
    }

    /// Refuses a plan whose pod or service network overlaps a network the host is already on (a route to
    /// it would hijack the host's own traffic). `host` lists (interface, address/prefix) pairs.
    pub fn check_host(&self, host: &[(String, Ipv4Net)]) -> Result<(), CidrError> {
        for (flag, cidr) in [
            ("--cluster-cidr", self.cluster_cidr),
            ("--service-cidr", self.service_cidr),
        ] {
            // Loopback and the bridge bonsai itself made are not the host's networks.
            if let Some((interface, host)) = host.iter().find(|(name, net)| {
                !net.addr().is_loopback()
                    && name != crate::pod::BRIDGE
                    && name != crate::overlay::VXLAN_DEVICE
                    && overlaps(cidr, net.trunc())
            }) {
                return Err(CidrError::OverlapsHost {
                    flag,
                    cidr,
                    host: host.trunc(),
                    interface: interface.clone(),
                });
            }
        }
        Ok(())
    }

    /// The first node subnet not in `taken` (what kube-controller-manager's node IPAM gives a new Node as
    /// `spec.podCIDR`).
    pub fn next_node_subnet(&self, taken: &[Ipv4Net]) -> Result<Ipv4Net, CidrError> {
        let exhausted = CidrError::Exhausted {
            cidr: self.cluster_cidr,
            node_mask: self.node_mask,
        };
        let subnets = self
            .cluster_cidr
            .subnets(self.node_mask)
            .map_err(|_| exhausted.clone())?;
        subnets
            .into_iter()
            .find(|s| !taken.iter().any(|t| overlaps(*s, *t)))
            .ok_or(exhausted)
    }

    /// The service network's first address: the `kubernetes` service's ClusterIP (10.43.0.1).
    pub fn api_service_ip(&self) -> Ipv4Addr {
        nth_host(self.service_cidr, 1).unwrap_or(self.service_cidr.addr())
    }
}

pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The `n`th address of a network (0 is the network address itself), if it is inside it.
pub fn nth_host(net: Ipv4Net, n: u32) -> Option<Ipv4Addr> {
    let base = u32::from(net.network());
    let addr = Ipv4Addr::from(base.checked_add(n)?);
    net.contains(&addr).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_parse_and_give_the_api_service_ip() {
        let n = ClusterNetworks::parse(DEFAULT_CLUSTER_CIDR, DEFAULT_SERVICE_CIDR).unwrap();
        assert_eq!(n.api_service_ip(), Ipv4Addr::new(10, 43, 0, 1));
        assert_eq!(n.next_node_subnet(&[]).unwrap(), net("10.42.0.0/24"));
        assert_eq!(
            n.next_node_subnet(&[net("10.42.0.0/24"), net("10.42.2.0/24")])
                .unwrap(),
            net("10.42.1.0/24")
        );
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        assert!(matches!(
            ClusterNetworks::parse("10.42.0.0/33", DEFAULT_SERVICE_CIDR),
            Err(CidrError::Malformed { .. })
        ));
        assert!(matches!(
            ClusterNetworks::parse("banana", DEFAULT_SERVICE_CIDR),
            Err(CidrError::Malformed { .. })
        ));
        let e = ClusterNetworks::parse("10.42.0.1/16", DEFAULT_SERVICE_CIDR).unwrap_err();
        assert!(e.to_string().contains("10.42.0.0/16"), "{e}");
        assert!(matches!(
            ClusterNetworks::parse("10.42.0.0/25", DEFAULT_SERVICE_CIDR),
            Err(CidrError::TooSmall { .. })
        ));
        assert!(matches!(
            ClusterNetworks::parse("10.0.0.0/8", "10.43.0.0/16"),
            Err(CidrError::ServiceOverlapsCluster { .. })
        ));
        let n = ClusterNetworks::parse(DEFAULT_CLUSTER_CIDR, DEFAULT_SERVICE_CIDR).unwrap();
        let e = n.check_host(&[("eth0".into(), net("10.43.5.0/24"))]).unwrap_err();
        assert!(e.to_string().contains("eth0"), "{e}");
        n.check_host(&[
            ("lo".into(), net("127.0.0.0/8")),
            ("eth0".into(), net("192.168.1.0/24")),
            (crate::pod::BRIDGE.into(), net("10.42.0.0/24")),
        ])
        .unwrap();
        let small = ClusterNetworks::parse("10.42.0.0/23", DEFAULT_SERVICE_CIDR).unwrap();
        assert!(matches!(
            small.next_node_subnet(&[net("10.42.0.0/24"), net("10.42.1.0/24")]),
            Err(CidrError::Exhausted { .. })
        ));
    }
}
