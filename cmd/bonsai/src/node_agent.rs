//! The node agent, one start-up for both `bonsai server` (its own node, in process) and `bonsai agent` (a joined
//! node): the node's registration and heartbeats (`kubelet::node`), the local-path provisioner for its claims
//! (`storage::run`), its cluster DNS (`dns::run`), its network (`network::node`: overlay, pod bridge, service
//! proxy), its pods (`kubelet::pods`) and the kubelet API on :10250 (`kubelet::server`). Everything reaches the
//! cluster through the one client it is given, as the node's own identity.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

/// The Kubernetes release whose API bonsai serves (k8s-openapi's `v1_33`).
pub const KUBERNETES_MINOR: &str = "33";
pub const KUBERNETES_PATCH: &str = "0";

/// The version the node reports as its kubelet's.
pub fn kubelet_version() -> String {
    format!(
        "v1.{KUBERNETES_MINOR}.{KUBERNETES_PATCH}+bonsai-{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// What every node of a cluster must agree on, decided by the server's flags (as k3s's agents get them from
/// their server): published by the server in the ConfigMap `kube-public/bonsai-config` and read from there by
/// agents.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSettings {
    pub cluster_cidr: String,
    pub service_cidr: String,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    pub flannel_backend: String,
    pub disable_kube_proxy: bool,
    /// Packaged components turned off (`--disable`): `coredns` and `local-storage` concern every node.
    pub disabled: Vec<String>,
}

pub const SETTINGS_NAMESPACE: &str = "kube-public";
pub const SETTINGS_NAME: &str = "bonsai-config";

impl ClusterSettings {
    pub fn disabled(&self, component: &str) -> bool {
        self.disabled.iter().any(|c| c == component)
    }

    /// The ConfigMap data the settings are published as.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        [
            ("cluster-cidr", self.cluster_cidr.clone()),
            ("service-cidr", self.service_cidr.clone()),
            ("cluster-dns", self.cluster_dns.to_string()),
            ("cluster-domain", self.cluster_domain.clone()),
            ("flannel-backend", self.flannel_backend.clone()),
            ("disable-kube-proxy", self.disable_kube_proxy.to_string()),
            ("disable", self.disabled.join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn from_data(data: &BTreeMap<String, String>) -> anyhow::Result<ClusterSettings> {
        let get = |key: &str| {
            data.get(key)
                .cloned()
                .with_context(|| format!("the ConfigMap {SETTINGS_NAMESPACE}/{SETTINGS_NAME} has no {key:?}"))
        };
        Ok(ClusterSettings {
            cluster_cidr: get("cluster-cidr")?,
            service_cidr: get("service-cidr")?,
            cluster_dns: get("cluster-dns")?
                .parse()
                .context("the cluster's cluster-dns is not an IP address")?,
            cluster_domain: get("cluster-domain")?,
            flannel_backend: get("flannel-backend")?,
            disable_kube_proxy: get("disable-kube-proxy")? == "true",
            disabled: get("disable")?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
        })
    }

    /// Publishes the settings (server side, with the admin's client).
    pub async fn publish(&self, client: &kube::Client) -> anyhow::Result<()> {
        use k8s_openapi::api::core::v1::ConfigMap;
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), SETTINGS_NAMESPACE);
        let config_map = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": SETTINGS_NAME, "namespace": SETTINGS_NAMESPACE},
            "data": self.to_data(),
        });
        api.patch(
            SETTINGS_NAME,
            &kube::api::PatchParams::apply("bonsai").force(),
            &kube::api::Patch::Apply(config_map),
        )
        .await
        .with_context(|| {
            format!("cannot publish the cluster settings in {SETTINGS_NAMESPACE}/{SETTINGS_NAME}")
        })?;
        Ok(())
    }

    /// Reads the settings the server published (agent side, as the node).
    pub async fn fetch(client: &kube::Client) -> anyhow::Result<ClusterSettings> {
        use k8s_openapi::api::core::v1::ConfigMap;
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), SETTINGS_NAMESPACE);
        let config_map = api.get(SETTINGS_NAME).await.with_context(|| {
            format!("cannot read the cluster settings {SETTINGS_NAMESPACE}/{SETTINGS_NAME}")
        })?;
        ClusterSettings::from_data(&config_map.data.unwrap_or_default())
    }
}

/// One node's agent.
#[derive(Debug)]
pub struct NodeAgentConfig {
    pub data_dir: PathBuf,
    pub name: String,
    pub address: IpAddr,
    pub control_plane: bool,
    pub labels: BTreeMap<String, String>,
    pub pod_logs_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    pub private_registry: PathBuf,
    pub eviction: kubelet::eviction::EvictionConfig,
    pub cluster: ClusterSettings,
    /// The cluster CA: the kubelet API serves only clients it issued (the API server's).
    pub ca_cert_pem: String,
}

/// The node's name: `--node-name`, else the host's, lower-cased as the kubelet does.
pub fn node_name(flag: Option<&str>) -> anyhow::Result<String> {
    let name = match flag {
        Some(name) => name.to_string(),
        None => apiserver::identity::hostname()
            .ok_or_else(|| anyhow::anyhow!("this host has no name: give the node one with --node-name"))?,
    };
    Ok(name.to_lowercase())
}

/// Parts of a started agent the kubelet API needs, once its serving certificate is there.
pub struct StartedAgent {
    client: kube::Client,
    containers: Arc<runtime::container::Runtime>,
    shim: PathBuf,
}

/// Starts the node agent's loops on `client` (the node's identity). The kubelet API is started after, by
/// `serve_kubelet`, once the caller has the serving certificate (signed at once on a server, requested through
/// a CSR on an agent, which needs the Node registered first).
pub async fn start(
    client: kube::Client,
    config: &NodeAgentConfig,
    store: Arc<runtime::store::ContentStore>,
) -> anyhow::Result<StartedAgent> {
    let name = config.name.clone();
    let node = kubelet::node::NodeConfig {
        name: name.clone(),
        address: config.address,
        control_plane: config.control_plane,
        root_dir: config.data_dir.clone(),
        runtime_version: format!("bonsai://{}", env!("CARGO_PKG_VERSION")),
        kubelet_version: kubelet_version(),
        labels: config.labels.clone(),
    };
    // The eviction manager (in the pods' loop) tells the node's heartbeat about memory and disk pressure.
    let (pressure, pressure_seen) = tokio::sync::watch::channel(kubelet::eviction::Pressure::default());
    tokio::spawn(kubelet::node::run(client.clone(), node, pressure_seen));
    // The local-path provisioner for this node's claims (k3s's local-storage, off with `--disable local-storage`).
    if !config.cluster.disabled("local-storage") {
        tokio::spawn(storage::run(
            client.clone(),
            storage::ProvisionerConfig {
                node_name: name.clone(),
                data_dir: config.data_dir.clone(),
            },
        ));
    }

    // The node's network (overlay, pod bridge, service proxy), and its pods once that is ready.
    let node_ip = match config.address {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    };
    let options = network::node::NodeNetworkOptions {
        node_name: name.clone(),
        networks: network::config::ClusterNetworks::parse(
            &config.cluster.cluster_cidr,
            &config.cluster.service_cidr,
        )?,
        backend: config.cluster.flannel_backend.parse()?,
        node_ip,
        lease_dir: config.data_dir.join("agent/network/leases"),
        proxy: !config.cluster.disable_kube_proxy,
    };
    let (ready, network_config) = tokio::sync::watch::channel(None);
    {
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = network::node::run(client, &options, ready).await {
                tracing::error!(error = %e, "the node's network stopped");
            }
        });
    }
    let shim = std::env::current_exe().context("cannot find the bonsai binary to run shims")?;
    let containers = Arc::new(runtime::container::Runtime::new(
        config.data_dir.join("agent/containers"),
        store.clone(),
        shim.clone(),
    )?);
    runtime::install_crypto_provider();
    let registries = runtime::registries::RegistriesConfig::load(&config.private_registry)?;
    let (resolv_path, host_resolv) = dns::upstream::host_resolv_conf(config.resolv_conf.as_deref());
    if !config.cluster.disabled("coredns") {
        start_dns(
            &config.cluster,
            &client,
            &name,
            network_config.clone(),
            &host_resolv,
        );
    }
    tracing::debug!(resolv_conf = %resolv_path.display(), "the node's resolver configuration");
    let pods = kubelet::pods::Pods::new(
        client.clone(),
        kubelet::pods::PodsConfig {
            node_name: name,
            data_dir: config.data_dir.clone(),
            pod_logs_dir: config.pod_logs_dir.clone(),
            dns: kubelet::dns::ClusterDns {
                nameservers: vec![config.cluster.cluster_dns.to_string()],
                domain: config.cluster.cluster_domain.clone(),
                host: kubelet::dns::ResolvConf::parse(&host_resolv),
            },
            host_ips: vec![config.address.to_string()],
            eviction: config.eviction.clone(),
            pressure: Arc::new(pressure),
        },
        containers.clone(),
        store.clone(),
        runtime::pull::Puller::new(store, registries),
        network_config,
        kubelet::pods::CliExec {
            bonsai: shim.clone(),
            data_dir: config.data_dir.clone(),
        },
    );
    tokio::spawn(Arc::new(pods).run());
    Ok(StartedAgent {
        client,
        containers,
        shim,
    })
}

/// The kubelet API on :10250 (logs, exec, attach, port-forward, stats), serving with `cert_pem`/`key_pem` (the
/// node's name and address, from the cluster CA) and serving only clients the CA issued.
pub async fn serve_kubelet(
    started: StartedAgent,
    config: &NodeAgentConfig,
    cert_pem: String,
    key_pem: String,
) -> anyhow::Result<()> {
    kubelet::server::start(
        started.client,
        started.containers,
        kubelet::server::KubeletServerConfig {
            address: SocketAddr::new(config.address, kubelet::node::KUBELET_PORT as u16),
            client_ca_pem: config.ca_cert_pem.clone(),
            cert_pem,
            key_pem,
            bonsai: started.shim,
            data_dir: config.data_dir.clone(),
            node_name: config.name.clone(),
        },
    )
    .await?;
    Ok(())
}

/// The node's cluster DNS server, on the pod bridge's gateway once the pod network is up.
fn start_dns(
    cluster: &ClusterSettings,
    client: &kube::Client,
    node_name: &str,
    mut network: tokio::sync::watch::Receiver<Option<network::pod::PodNetworkConfig>>,
    host_resolv: &str,
) {
    let mut config = dns::DnsConfig {
        domain: cluster.cluster_domain.clone(),
        cluster_dns: cluster.cluster_dns,
        node_name: node_name.to_string(),
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53),
        metrics: None,
        upstreams: dns::upstream::nameservers(host_resolv),
    };
    let client = client.clone();
    tokio::spawn(async move {
        let gateway = loop {
            if let Some(pods) = network.borrow_and_update().as_ref() {
                break pods.gateway();
            }
            if network.changed().await.is_err() {
                return;
            }
        };
        config.listen = SocketAddr::new(IpAddr::V4(gateway), 53);
        config.metrics = Some(SocketAddr::new(IpAddr::V4(gateway), 9153));
        if let Err(e) = dns::run(client, config).await {
            tracing::error!(error = %e, "the cluster DNS stopped");
        }
    });
}

/// Imports every image tarball in `<data-dir>/agent/images/` into the image store, in the background, as k3s
/// does at start for air-gapped installs. The store is the node agent's own (one open store per process: opening
/// one discards unfinished downloads, which would be another opener's).
pub fn import_airgap_images(data_dir: &std::path::Path, store: Arc<runtime::store::ContentStore>) {
    let images = data_dir.join("agent/images");
    if !images.is_dir() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        for (file, result) in runtime::import::import_directory(&store, &images) {
            match result {
                Ok(count) => tracing::info!(file = %file.display(), images = count, "imported images"),
                Err(e) => tracing::warn!(file = %file.display(), error = %e, "cannot import images"),
            }
        }
    });
}

/// The node's image store (`<data-dir>/agent/content`), opened once per process.
pub async fn open_images(data_dir: &std::path::Path) -> anyhow::Result<Arc<runtime::store::ContentStore>> {
    let root = crate::images::store_dir(data_dir);
    let opening = tokio::task::spawn_blocking(move || runtime::store::ContentStore::open(&root));
    Ok(Arc::new(
        opening
            .await
            .context("image store open task failed")?
            .context("cannot open the image store")?,
    ))
}
