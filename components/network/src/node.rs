//! A node's whole network, as the node agent (and `bonsai network run`) runs it: wait for the Node's pod subnet,
//! start the overlay and the pod bridge, publish flannel's annotations, follow the other nodes, and proxy
//! Services. The pod network's configuration is handed out once it is ready, for the node agent's pods.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::sync::watch;

use crate::NetworkError;
use crate::config::ClusterNetworks;
use crate::netlink::Netlink;
use crate::overlay::{Backend, Overlay, uplink};
use crate::pod::{PodNetwork, PodNetworkConfig};

/// What a node's network is made of.
#[derive(Clone, Debug)]
pub struct NodeNetworkOptions {
    pub node_name: String,
    pub networks: ClusterNetworks,
    pub backend: Backend,
    /// The address the overlay uses (default: the uplink's).
    pub node_ip: Option<Ipv4Addr>,
    /// Where the IPAM leases live (`<data-dir>/agent/network/leases`).
    pub lease_dir: PathBuf,
    /// Run the service proxy too (not with `--disable-kube-proxy`).
    pub proxy: bool,
}

impl NodeNetworkOptions {
    /// Starts the overlay for `pod_cidr` on this namespace's uplink.
    pub async fn overlay(&self, pod_cidr: ipnet::Ipv4Net) -> Result<Overlay, NetworkError> {
        let host = Netlink::current()?;
        let addresses = host.ipv4_addresses().await?;
        self.networks.check_host(&addresses)?;
        let uplink = uplink(&host, &addresses, self.node_ip).await?;
        Overlay::start(host, self.backend, pod_cidr, uplink).await
    }

    /// The pod network's configuration for `pod_cidr`.
    pub fn pod_network(&self, pod_cidr: ipnet::Ipv4Net, mtu: u32) -> PodNetworkConfig {
        PodNetworkConfig {
            cluster_cidr: self.networks.cluster_cidr,
            pod_cidr,
            mtu,
            lease_dir: self.lease_dir.clone(),
        }
    }
}

/// Runs the node's network until an error: `ready` gets the pod network's configuration once the bridge and the
/// overlay are up.
pub async fn run(
    client: kube::Client,
    options: &NodeNetworkOptions,
    ready: watch::Sender<Option<PodNetworkConfig>>,
) -> Result<(), NetworkError> {
    let name = options.node_name.as_str();
    let nodes: Api<Node> = Api::all(client.clone());
    let overlay = async {
        let pod_cidr = crate::flannel::wait_for_pod_cidr(&nodes, name).await?;
        if !options.networks.cluster_cidr.contains(&pod_cidr) {
            return Err(NetworkError::Config(format!(
                "Node {name}'s spec.podCIDR {pod_cidr} is not inside --cluster-cidr {}",
                options.networks.cluster_cidr
            )));
        }
        let overlay = options.overlay(pod_cidr).await?;
        let pods = options.pod_network(pod_cidr, overlay.pod_mtu());
        PodNetwork::start(pods.clone()).await?;
        crate::flannel::publish(&nodes, name, &overlay).await?;
        tracing::info!(node = name, %pod_cidr, backend = overlay.backend().name(), "node network ready");
        let _ = ready.send(Some(pods));
        crate::flannel::follow_nodes(nodes.clone(), &overlay).await
    };
    let services = async {
        if !options.proxy {
            return std::future::pending().await;
        }
        let proxy = crate::proxy::Proxy::new(crate::proxy::ProxyConfig {
            node_name: name.to_string(),
            cluster_cidr: options.networks.cluster_cidr,
            service_cidr: options.networks.service_cidr,
        });
        crate::proxy::run(client.clone(), proxy).await
    };
    tokio::try_join!(overlay, services).map(|_| ())
}

/// Removes everything a node's network made: proxy rules, pods' leases and links, the overlay, bonsai's table.
pub async fn remove_all(lease_dir: &std::path::Path) -> Result<(), NetworkError> {
    crate::proxy::remove_all()?;
    crate::pod::remove_all(lease_dir).await?;
    crate::overlay::remove_all(&Netlink::current()?).await?;
    crate::nft::delete_table()
}
