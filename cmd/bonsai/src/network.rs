//! `bonsai network`: the node's pod network by hand, for people debugging a node and for the tests (the node
//! agent calls the same library for its pods).

use anyhow::{Context, bail};
use network::config::{ClusterNetworks, parse_cidr};
use network::overlay::{Backend, Overlay, Peer, parse_mac};
use network::pod::PodNetwork;

use crate::cli::{NetworkArgs, NetworkCommand};

struct Node {
    options: network::node::NodeNetworkOptions,
}

impl Node {
    fn pod_cidr(&self, args: &NetworkArgs) -> anyhow::Result<ipnet::Ipv4Net> {
        let Some(text) = &args.pod_cidr else {
            bail!("--pod-cidr is required (this node's spec.podCIDR, e.g. 10.42.0.0/24)")
        };
        let pod_cidr = parse_cidr("--pod-cidr", text)?;
        if !self.options.networks.cluster_cidr.contains(&pod_cidr) {
            bail!(
                "--pod-cidr {pod_cidr} is not inside --cluster-cidr {}",
                self.options.networks.cluster_cidr
            );
        }
        Ok(pod_cidr)
    }

    async fn overlay(&self, pod_cidr: ipnet::Ipv4Net) -> anyhow::Result<Overlay> {
        Ok(self.options.overlay(pod_cidr).await?)
    }

    async fn pods(&self, pod_cidr: ipnet::Ipv4Net, mtu: u32) -> anyhow::Result<PodNetwork> {
        Ok(PodNetwork::start(self.options.pod_network(pod_cidr, mtu)).await?)
    }
}

fn parse_peer(text: &str) -> anyhow::Result<Peer> {
    let parts: Vec<&str> = text.split(',').collect();
    let (name, cidr, ip, mac) = match parts.as_slice() {
        [name, cidr, ip] => (name, cidr, ip, None),
        [name, cidr, ip, mac] => (name, cidr, ip, Some(mac)),
        _ => bail!("--peer {text:?}: expected NAME,POD_CIDR,NODE_IP[,VTEP_MAC]"),
    };
    Ok(Peer {
        name: name.to_string(),
        pod_cidr: parse_cidr("--peer", cidr)?,
        public_ip: ip
            .parse()
            .with_context(|| format!("--peer {text:?}: {ip:?} is not an IPv4 address"))?,
        vtep_mac: match mac {
            Some(mac) => Some(
                parse_mac(mac).with_context(|| format!("--peer {text:?}: {mac:?} is not a MAC address"))?,
            ),
            None => None,
        },
    })
}

pub async fn run(args: NetworkArgs) -> anyhow::Result<()> {
    let node = Node {
        options: network::node::NodeNetworkOptions {
            node_name: match &args.command {
                NetworkCommand::Run { node_name, .. } => node_name.clone(),
                _ => String::new(),
            },
            networks: ClusterNetworks::parse(&args.cluster_cidr, &args.service_cidr)?,
            backend: args.flannel_backend.parse()?,
            node_ip: args.node_ip,
            lease_dir: args.data_dir.join("agent/network/leases"),
            proxy: !matches!(
                &args.command,
                NetworkCommand::Run {
                    disable_kube_proxy: true,
                    ..
                }
            ),
        },
    };
    match &args.command {
        NetworkCommand::Add { id, netns } => {
            let pod_cidr = node.pod_cidr(&args)?;
            let overlay = node.overlay(pod_cidr).await?;
            let pods = node.pods(pod_cidr, overlay.pod_mtu()).await?;
            let addresses = pods.setup(id, netns).await?;
            println!("{}", serde_json::to_string(&addresses)?);
        }
        NetworkCommand::Del { id } => {
            let pod_cidr = node.pod_cidr(&args)?;
            let pods = node.pods(pod_cidr, 1500).await?;
            pods.teardown(id).await?;
        }
        NetworkCommand::Ls => {
            let pod_cidr = node.pod_cidr(&args)?;
            let leases = network::ipam::Ipam::open(&node.options.lease_dir, pod_cidr)?.leases()?;
            println!("{:<40} IP", "SANDBOX");
            for lease in leases {
                println!("{:<40} {}", lease.id, lease.ip);
            }
        }
        NetworkCommand::Peers { peers } => {
            let pod_cidr = node.pod_cidr(&args)?;
            let peers = peers
                .iter()
                .map(|p| parse_peer(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for peer in &peers {
                if !node.options.networks.cluster_cidr.contains(&peer.pod_cidr) {
                    bail!(
                        "--peer {}: {} is not inside --cluster-cidr",
                        peer.name,
                        peer.pod_cidr
                    );
                }
                if node.options.backend == Backend::Vxlan && peer.vtep_mac.is_none() {
                    bail!(
                        "--peer {}: the vxlan backend needs the peer's VTEP MAC",
                        peer.name
                    );
                }
            }
            let overlay = node.overlay(pod_cidr).await?;
            overlay.sync(&peers).await?;
            println!("{}", serde_json::to_string(&overlay.annotations())?);
        }
        NetworkCommand::Run {
            kubeconfig,
            server,
            cleanup,
            ..
        } => {
            let client = kube_client(kubeconfig, server.as_deref()).await?;
            run_node(&node, client, *cleanup).await?
        }
        NetworkCommand::Cleanup => network::node::remove_all(&node.options.lease_dir).await?,
    }
    Ok(())
}

pub async fn kube_client(kubeconfig: &std::path::Path, server: Option<&str>) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read the kubeconfig {}", kubeconfig.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("the kubeconfig {} is not usable", kubeconfig.display()))?;
    if let Some(server) = server {
        config.cluster_url = server
            .parse()
            .with_context(|| format!("--server {server:?} is not a URL"))?;
    }
    Ok(kube::Client::try_from(config)?)
}

async fn run_node(node: &Node, client: kube::Client, cleanup: bool) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (ready, _) = tokio::sync::watch::channel(None);
    tokio::select! {
        result = network::node::run(client, &node.options, ready) => result?,
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    if cleanup {
        network::node::remove_all(&node.options.lease_dir).await?;
        tracing::info!("node network removed");
    }
    Ok(())
}
