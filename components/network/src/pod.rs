//! A node's pod network: the `cni0` bridge holding the gateway, and for each pod sandbox a veth pair (`eth0`
//! inside the sandbox's namespace, `veth<hash>` on the bridge) with an address from the node's host-local
//! IPAM, a default route, and loopback up. Masquerade for traffic leaving the cluster network and IP
//! forwarding are set when the node network starts.
//!
//! **Architecture Invariant**: every operation is idempotent and a failed setup is undone before the error is
//! returned, so a retry (the node agent's reconcile) never meets a half-built sandbox.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use rtnetlink::{LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde::Serialize;
use sha2::Digest;

use crate::ipam::{Ipam, Lease};
use crate::netlink::Netlink;
use crate::{NetworkError, nft, sysctl};

pub const BRIDGE: &str = "cni0";
/// The interface name inside every pod.
pub const POD_INTERFACE: &str = "eth0";
const VETH_PREFIX: &str = "veth";

#[derive(Clone, Debug)]
pub struct PodNetworkConfig {
    /// The whole pod network (`--cluster-cidr`).
    pub cluster_cidr: Ipv4Net,
    /// This node's subnet of it (`spec.podCIDR`).
    pub pod_cidr: Ipv4Net,
    /// The MTU of pod interfaces: the uplink's minus the overlay's overhead.
    pub mtu: u32,
    /// Where the IPAM leases live (`<data-dir>/agent/network/leases`).
    pub lease_dir: PathBuf,
}

impl PodNetworkConfig {
    /// The bridge's address on this node, the pods' gateway (the subnet's first host, 10.42.0.1).
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        crate::config::nth_host(self.pod_cidr, 1).unwrap_or(self.pod_cidr.network())
    }
}

/// What a pod sandbox got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAddresses {
    pub id: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The host end of the pod's veth pair.
    pub host_interface: String,
}

#[derive(Debug)]
pub struct PodNetwork {
    config: PodNetworkConfig,
    ipam: Ipam,
    host: Netlink,
}

/// The host-side veth of a sandbox: derived from its id, so teardown finds it after a restart.
pub fn host_veth_name(id: &str) -> String {
    let digest = sha2::Sha256::digest(id.as_bytes());
    format!("{VETH_PREFIX}{}", &hex::encode(digest)[..8])
}

fn temporary_peer_name(id: &str) -> String {
    let digest = sha2::Sha256::digest(id.as_bytes());
    format!("bpeer{}", &hex::encode(digest)[..8])
}

/// The pod network's chains in bonsai's table, declared (created if missing, left as they are otherwise).
fn chain_declarations() -> String {
    format!(
        "table ip {t} {{
  chain pod-postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
  chain pod-forward {{ type filter hook forward priority filter; policy accept; }}
}}
",
        t = nft::TABLE
    )
}

/// The NAT and filter rules of the pod network (flannel's): pod-to-pod traffic keeps its addresses, traffic
/// from pods to anywhere else is masqueraded, and traffic from outside to pods of other nodes too, so replies
/// come back the way they went.
pub fn nat_script(cluster: Ipv4Net, pod_cidr: Ipv4Net) -> String {
    let t = nft::TABLE;
    format!(
        "{declarations}flush chain ip {t} pod-postrouting
flush chain ip {t} pod-forward
add rule ip {t} pod-postrouting ip saddr {cluster} ip daddr {cluster} return
add rule ip {t} pod-postrouting ip saddr {cluster} ip daddr != 224.0.0.0/4 masquerade fully-random
add rule ip {t} pod-postrouting ip saddr != {cluster} ip daddr {pod_cidr} return
add rule ip {t} pod-postrouting ip saddr != {cluster} ip daddr {cluster} masquerade fully-random
add rule ip {t} pod-forward ip saddr {cluster} accept
add rule ip {t} pod-forward ip daddr {cluster} accept
",
        declarations = chain_declarations()
    )
}

/// Deletes the pod network's chains (declared first, so that absent chains are not an error), leaving the rest
/// of bonsai's table to its owners.
fn remove_nat_script() -> String {
    let t = nft::TABLE;
    format!(
        "{declarations}delete chain ip {t} pod-postrouting\ndelete chain ip {t} pod-forward\n",
        declarations = chain_declarations()
    )
}

impl PodNetwork {
    /// Prepares the node (bridge with the gateway address, forwarding, masquerade) and opens the leases.
    pub async fn start(config: PodNetworkConfig) -> Result<Self, NetworkError> {
        if !config.cluster_cidr.contains(&config.pod_cidr) {
            return Err(NetworkError::Config(format!(
                "the node's pod CIDR {} is not inside the cluster CIDR {}",
                config.pod_cidr, config.cluster_cidr
            )));
        }
        let ipam = Ipam::open(&config.lease_dir, config.pod_cidr)?;
        let host = Netlink::current()?;
        let network = Self { config, ipam, host };
        network.ensure_bridge().await?;
        sysctl::set("net.ipv4.ip_forward", "1", false)?;
        // Replies of service traffic between two pods on one bridge must pass conntrack to be un-NATed.
        sysctl::set("net.bridge.bridge-nf-call-iptables", "1", true)?;
        nft::apply(&nat_script(network.config.cluster_cidr, network.config.pod_cidr))?;
        Ok(network)
    }

    pub fn config(&self) -> &PodNetworkConfig {
        &self.config
    }

    async fn ensure_bridge(&self) -> Result<u32, NetworkError> {
        if self.host.index(BRIDGE).await?.is_none() {
            self.host
                .add_link(LinkBridge::new(BRIDGE).mtu(self.config.mtu).build(), BRIDGE)
                .await?;
        }
        let index = self.host.require_index(BRIDGE).await?;
        self.host
            .add_address(
                index,
                self.ipam.gateway(),
                self.config.pod_cidr.prefix_len(),
                BRIDGE,
            )
            .await?;
        self.host.up(index, BRIDGE).await?;
        Ok(index)
    }

    /// Gives the sandbox whose network namespace is `netns` its interface and address. Calling it again for
    /// the same sandbox rebuilds the same result.
    pub async fn setup(&self, id: &str, netns: &Path) -> Result<PodAddresses, NetworkError> {
        let ip = self.ipam.allocate(id)?;
        match self.build(id, netns, ip).await {
            Ok(addresses) => Ok(addresses),
            Err(e) => {
                // Leave nothing behind: the error is the only trace of a failed setup.
                if let Err(undo) = self.teardown(id).await {
                    tracing::warn!(sandbox = id, error = %undo, "cannot undo a failed pod network setup");
                }
                Err(e)
            }
        }
    }

    async fn build(&self, id: &str, netns: &Path, ip: Ipv4Addr) -> Result<PodAddresses, NetworkError> {
        let bridge = self.ensure_bridge().await?;
        let host_name = host_veth_name(id);
        let peer_name = temporary_peer_name(id);
        // A veth from an earlier, interrupted attempt is replaced, not reused half-configured.
        self.host.delete_link(&host_name).await?;
        self.host.delete_link(&peer_name).await?;
        self.host
            .add_link(
                LinkVeth::new(&host_name, &peer_name).mtu(self.config.mtu).build(),
                "veth pair",
            )
            .await?;
        let host_index = self.host.require_index(&host_name).await?;
        let peer_index = self.host.require_index(&peer_name).await?;

        let namespace = std::fs::File::open(netns).map_err(|source| NetworkError::Io {
            what: format!("opening network namespace {}", netns.display()),
            source,
        })?;
        self.host
            .set_link(
                LinkUnspec::new_with_index(peer_index)
                    .setns_by_fd(namespace.as_raw_fd())
                    .build(),
                "the pod end of the veth pair into the sandbox",
            )
            .await?;
        self.host
            .set_link(
                LinkUnspec::new_with_index(host_index)
                    .controller(bridge)
                    .up()
                    .build(),
                &host_name,
            )
            .await?;
        // Hairpin: a pod reaching itself through a service gets its own traffic back through the bridge.
        self.host
            .handle
            .link()
            .set_port(LinkBridgePort::new(host_index).hairpin(true).build())
            .execute()
            .await
            .map_err(|source| NetworkError::Netlink {
                what: format!("hairpin on {host_name}"),
                source,
            })?;

        let pod = Netlink::in_namespace(netns)?;
        let inside = pod.require_index(&peer_name).await?;
        pod.set_link(
            LinkUnspec::new_with_index(inside)
                .name(POD_INTERFACE.to_string())
                .mtu(self.config.mtu)
                .build(),
            "the pod interface's name",
        )
        .await?;
        pod.up(inside, POD_INTERFACE).await?;
        let prefix_len = self.config.pod_cidr.prefix_len();
        pod.add_address(inside, ip, prefix_len, POD_INTERFACE).await?;
        if let Some(lo) = pod.index("lo").await? {
            pod.up(lo, "lo").await?;
        }
        let gateway = self.ipam.gateway();
        pod.replace_route(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(inside),
            &format!("default via {gateway}"),
        )
        .await?;
        Ok(PodAddresses {
            id: id.to_string(),
            ip,
            prefix_len,
            gateway,
            host_interface: host_name,
        })
    }

    /// Removes the sandbox's veth pair (its namespace may already be gone) and frees its address.
    pub async fn teardown(&self, id: &str) -> Result<(), NetworkError> {
        self.host.delete_link(&host_veth_name(id)).await?;
        self.host.delete_link(&temporary_peer_name(id)).await?;
        self.ipam.release(id)?;
        Ok(())
    }

    /// The sandboxes holding an address (what exists after a restart).
    pub fn sandboxes(&self) -> Result<Vec<Lease>, NetworkError> {
        Ok(self.ipam.leases()?)
    }

    /// Tears down every sandbox for which `live` is false (after a crash, the node agent passes the sandboxes
    /// it still has); returns what was freed.
    pub async fn reclaim(&self, live: &dyn Fn(&str) -> bool) -> Result<Vec<Lease>, NetworkError> {
        let mut freed = Vec::new();
        for lease in self.sandboxes()? {
            if !live(&lease.id) {
                self.teardown(&lease.id).await?;
                freed.push(lease);
            }
        }
        Ok(freed)
    }

    /// Removes the node's pod network: every sandbox's veth and lease, the bridge, and the NAT rules.
    pub async fn remove(self) -> Result<(), NetworkError> {
        for lease in self.sandboxes()? {
            self.teardown(&lease.id).await?;
        }
        self.host.delete_link(BRIDGE).await?;
        nft::apply(&remove_nat_script())?;
        Ok(())
    }
}

/// Removes every pod network bonsai made on this node, whatever subnet it was for: each leased sandbox's veth,
/// the lease folders, the bridge, and the pod network's nft chains. What is already gone is skipped.
pub async fn remove_all(lease_root: &Path) -> Result<(), NetworkError> {
    let host = Netlink::current()?;
    for ipam in Ipam::open_all(lease_root)? {
        for lease in ipam.leases()? {
            host.delete_link(&host_veth_name(&lease.id)).await?;
            host.delete_link(&temporary_peer_name(&lease.id)).await?;
        }
        ipam.destroy()?;
    }
    host.delete_link(BRIDGE).await?;
    nft::apply(&remove_nat_script())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit_and_are_stable() {
        let name = host_veth_name("a-very-long-sandbox-id-0123456789abcdef");
        assert!(name.len() <= 15, "{name}");
        assert_eq!(name, host_veth_name("a-very-long-sandbox-id-0123456789abcdef"));
        assert_ne!(name, host_veth_name("another"));
        assert!(temporary_peer_name("x").len() <= 15);
    }

    #[test]
    fn nat_keeps_pod_to_pod_and_masquerades_the_rest() {
        let script = nat_script("10.42.0.0/16".parse().unwrap(), "10.42.1.0/24".parse().unwrap());
        assert!(script.contains("ip saddr 10.42.0.0/16 ip daddr 10.42.0.0/16 return"));
        assert!(script.contains("ip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade"));
        assert!(script.contains("flush chain ip bonsai pod-postrouting"));
        assert!(!script.contains("flush table"), "only its own chains");
    }
}
