//! `bonsai server`: the cluster store, the API server over it, the scheduler and controllers, and (unless
//! `--disable-agent`) the server's own node agent (`node_agent.rs`, the same start-up as `bonsai agent`'s).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apiserver::authn::Authenticator;
use apiserver::authz::AllowAuthenticated;
use apiserver::pki::Pki;
use apiserver::resources::services::{IpRange, PortRange, ServiceRanges};
use apiserver::{ApiServerConfig, AppState, KubernetesVersion};
use embedded_store::{CompactionPolicy, EmbeddedStore, StoreOptions};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ServerArgs;

use crate::node_agent::{self, ClusterSettings, KUBERNETES_MINOR};

/// What every node of the cluster must agree on, from this server's flags.
fn cluster_settings(args: &ServerArgs) -> ClusterSettings {
    ClusterSettings {
        cluster_cidr: args.cluster_cidr.clone(),
        service_cidr: args.service_cidr.clone(),
        cluster_dns: args.cluster_dns,
        cluster_domain: args.cluster_domain.clone(),
        flannel_backend: args.flannel_backend.clone(),
        disable_kube_proxy: args.disable_kube_proxy,
        disabled: args.disable.clone(),
    }
}

/// Writes the packaged manifests into `<data-dir>/server/manifests/` and applies that directory, as k3s does.
async fn start_deploy_controller(args: &ServerArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.join("server/manifests");
    let template = addons::Template {
        values: [
            ("CLUSTER_DNS".to_string(), args.cluster_dns.to_string()),
            ("CLUSTER_DOMAIN".to_string(), args.cluster_domain.clone()),
        ]
        .into(),
    };
    let removed = addons::write_packaged(&dir, &args.disable, &template)?;
    let client = crate::network::kube_client(&args.write_kubeconfig, None).await?;
    tokio::spawn(addons::run(client, dir, removed));
    Ok(())
}

/// The node agent of the server's own node, in process (k3s runs its agent in the server too), as the node's
/// own identity: a `system:node:<name>` client certificate the CA signs at once (`<data-dir>/agent/
/// kubelet.kubeconfig`), where a joined agent gets its through a CSR.
async fn start_agent(
    args: &ServerArgs,
    url: &str,
    advertise: IpAddr,
    pki: &Pki,
    store: Arc<runtime::store::ContentStore>,
    eviction: kubelet::eviction::EvictionConfig,
) -> anyhow::Result<()> {
    let name = node_agent::node_name(args.node_name.as_deref())?;
    let (cert, key) = pki.node_client(&name)?;
    let kubeconfig = args.data_dir.join("agent/kubelet.kubeconfig");
    kubelet::bootstrap::write_file(
        &kubeconfig,
        apiserver::kubeconfig::render_with(url, &pki.ca_cert_pem, &cert, &key).as_bytes(),
        0o600,
    )
    .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    let client = crate::network::kube_client(&kubeconfig, None).await?;
    let address = args.node_ip.unwrap_or(advertise);
    let config = node_agent::NodeAgentConfig {
        data_dir: args.data_dir.clone(),
        name: name.clone(),
        address,
        control_plane: true,
        labels: args.node_labels.iter().cloned().collect(),
        pod_logs_dir: args.pod_logs_dir.clone(),
        resolv_conf: args.resolv_conf.clone(),
        private_registry: args.private_registry.clone(),
        eviction,
        cluster: cluster_settings(args),
        ca_cert_pem: pki.ca_cert_pem.clone(),
    };
    let started = node_agent::start(client, &config, store).await?;
    let (cert_pem, key_pem) = pki.kubelet_serving(&[name, address.to_string()])?;
    node_agent::serve_kubelet(started, &config, cert_pem, key_pem).await
}

/// This server's identity in leader elections: `<hostname>_<id>`, the id made once and kept in the data directory,
/// so that a restarted server takes its own Leases back at once (the directory is open in one process only, so no
/// two live servers share an identity).
fn election_identity(server_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = server_dir.join("identity");
    let id = match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => {
            let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
                .context("cannot make a server identity from /proc/sys/kernel/random/uuid")?
                .trim()
                .to_string();
            let temporary = server_dir.join("identity.tmp");
            std::fs::write(&temporary, &id)
                .and_then(|()| std::fs::rename(&temporary, &path))
                .with_context(|| format!("cannot write {}", path.display()))?;
            id
        }
    };
    let host = apiserver::identity::hostname().unwrap_or_else(|| "bonsai".into());
    Ok(format!("{host}_{id}"))
}

/// The cluster's controllers and scheduler, in process, as clients of the API (over loopback, as k3s runs its
/// own). Each runs only while this server holds its Lease in `kube-system` (`kube-scheduler`,
/// `kube-controller-manager`), so that servers sharing a datastore run them once.
async fn start_controllers(
    args: &ServerArgs,
    networks: network::config::ClusterNetworks,
    identity: &str,
    signer: controllers::certificates::ClusterSigner,
) -> anyhow::Result<tokio::task::JoinSet<()>> {
    let client = crate::network::kube_client(&args.write_kubeconfig, None).await?;
    let mut tasks = tokio::task::JoinSet::new();
    if !args.disable_scheduler {
        let election = controllers::leader::Election::new("kube-system", "kube-scheduler", identity);
        let client = client.clone();
        tasks.spawn(controllers::leader::run_while_leader(
            client.clone(),
            election,
            move || {
                let client = client.clone();
                async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    tasks.spawn(scheduler::run(client));
                    tasks
                }
            },
        ));
    }
    if args.disable_controller_manager {
        return Ok(tasks);
    }
    let service_lb = !args.disabled("servicelb");
    let options = args.controller_options();
    let election = controllers::leader::Election::new("kube-system", "kube-controller-manager", identity);
    tasks.spawn(controllers::leader::run_while_leader(
        client.clone(),
        election,
        move || {
            let client = client.clone();
            let networks = networks.clone();
            let options = options.clone();
            let signer = signer.clone();
            async move { controller_manager(client, networks, service_lb, &options, signer) }
        },
    ));
    Ok(tasks)
}

/// kube-controller-manager's controllers, node IPAM and (unless disabled) ServiceLB.
fn controller_manager(
    client: kube::Client,
    networks: network::config::ClusterNetworks,
    service_lb: bool,
    options: &controllers::ControllerOptions,
    signer: controllers::certificates::ClusterSigner,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    controllers::spawn_all(client.clone(), options, &mut tasks);
    // csrapproving and csrsigning: the signing key is the server's, so they run here, not in the library's set.
    tasks.spawn(controllers::certificates::run(client.clone(), signer));
    {
        let client = client.clone();
        tasks.spawn(async move {
            if let Err(e) = network::controllers::run_node_ipam(client, networks).await {
                tracing::error!(error = %e, "node IPAM stopped");
            }
        });
    }
    if service_lb {
        tasks.spawn(async move {
            if let Err(e) = network::controllers::run_service_lb(client).await {
                tracing::error!(error = %e, "servicelb stopped");
            }
        });
    }
    tasks
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    // Listen for stop signals before anything else, so that a stop that comes early is a clean one.
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;

    // Flags whose mistakes only the node agent would meet are checked before anything starts.
    let eviction = args.eviction().map_err(|e| anyhow::anyhow!(e))?;
    let service_ranges = ServiceRanges {
        cluster_ips: IpRange::parse(&args.service_cidr)
            .map_err(|e| anyhow::anyhow!("--service-cidr: {e}"))?,
        node_ports: PortRange::parse(&args.service_node_port_range)
            .map_err(|e| anyhow::anyhow!("--service-node-port-range: {e}"))?,
    };
    let service_ip = service_ranges.cluster_ips.first();
    let networks = network::config::ClusterNetworks::parse(&args.cluster_cidr, &args.service_cidr)?;

    let server_dir = args.data_dir.join("server");
    let db_dir = server_dir.join("db");
    let options = StoreOptions {
        engine: args.store_engine,
        cache_bytes: args.store_cache_mb as usize * 1024 * 1024,
        compaction: CompactionPolicy {
            interval: args.store_compaction_interval,
            retain_revisions: args.store_compaction_retain,
        },
    };
    let opening = {
        let db_dir = db_dir.clone();
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&db_dir, options))
    };
    let store = opening
        .await
        .context("store open task failed")?
        .with_context(|| format!("cannot open the cluster store in {}", db_dir.display()))?;
    tracing::info!(
        path = %db_dir.display(),
        engine = %store.engine_kind(),
        revision = store.revision(),
        "cluster store ready"
    );
    let store = Arc::new(store);
    // The store's size on disk at each scrape of `/metrics`; held weakly, so that closing the store at the end
    // still drops its last reference.
    let sized = Arc::downgrade(&store);
    apiserver::metrics::register_storage_size(move || sized.upgrade().map_or(0, |s| s.disk_bytes()));

    let names = apiserver::identity::serving_names(service_ip, &args.cluster_domain, &args.tls_sans);
    let pki = Pki::load_or_create(&server_dir.join("tls"), &names)?;
    let join_token = apiserver::token::load_or_create(&server_dir.join("token"), &pki.ca_cert_pem)?;
    // The service account token key, beside the PKI as k3s keeps its (`server/tls/service.key`).
    let service_account_tokens = Arc::new(apiserver::service_account_tokens::TokenIssuer::load_or_create(
        &server_dir.join("tls/service.key"),
    )?);
    let authenticator = match &args.token_auth_file {
        Some(path) => Authenticator::new().with_token_file(path)?,
        None => Authenticator::new(),
    }
    .with_service_account_tokens(service_account_tokens.clone())
    .with_join_token(&join_token);

    // Clients on this machine reach the server over loopback unless it listens on one address only.
    let local_ip = match args.bind_address {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let advertise = apiserver::identity::node_addresses()
        .into_iter()
        .next()
        .unwrap_or(local_ip);
    apiserver::resources::ensure_default_namespaces(&*store)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the default namespaces: {}", e.status()["message"]))?;
    apiserver::resources::ensure_service_ranges(&*store, service_ranges)
        .await
        .map_err(|e| anyhow::anyhow!("cannot record the service ranges: {}", e.status()["message"]))?;
    apiserver::resources::ensure_kubernetes_service(&*store, service_ip, advertise, args.https_listen_port)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the kubernetes service: {}", e.status()["message"]))?;
    let state = AppState {
        store: store.clone(),
        authenticator,
        authorizer: Arc::new(AllowAuthenticated),
        service_account_tokens: Some(service_account_tokens),
        version: KubernetesVersion {
            major: "1".into(),
            minor: KUBERNETES_MINOR.into(),
            git_version: node_agent::kubelet_version(),
            git_commit: env!("BONSAI_GIT_COMMIT").into(),
        },
    };
    let api = apiserver::start(ApiServerConfig {
        bind_address: args.bind_address,
        port: args.https_listen_port,
        pki: pki.clone(),
        state,
    })
    .await?;
    let local = SocketAddr::new(local_ip, api.local_addr.port());
    apiserver::ready::wait(local, &pki.ca_cert_pem, Duration::from_secs(30)).await?;
    let url = format!("https://{local}");
    apiserver::kubeconfig::write(&args.write_kubeconfig, args.write_kubeconfig_mode, &url, &pki)?;
    tracing::info!(url = %url, kubeconfig = %args.write_kubeconfig.display(), "bonsai server ready");
    let images = node_agent::open_images(&args.data_dir).await?;
    node_agent::import_airgap_images(&args.data_dir, images.clone());
    start_deploy_controller(&args).await?;
    if !args.disable_agent {
        start_agent(&args, &url, advertise, &pki, images, eviction).await?;
    }
    let identity = election_identity(&server_dir)?;
    let signer = controllers::certificates::ClusterSigner {
        ca_cert_pem: pki.ca_cert_pem.clone(),
        ca_key_pem: pki.ca_key_pem()?,
    };
    let mut controllers = start_controllers(&args, networks, &identity, signer).await?;
    // What agents joining this cluster read (as the nodes they become) to set themselves up alike.
    let admin = crate::network::kube_client(&args.write_kubeconfig, None).await?;
    cluster_settings(&args).publish(&admin).await?;

    tokio::select! {
        _ = interrupt.recv() => tracing::info!("interrupted, shutting down"),
        _ = terminate.recv() => tracing::info!("terminated, shutting down"),
    }
    controllers.abort_all();
    api.shutdown(Duration::from_secs(5)).await;
    // Closing the store finishes queued writes and releases the data directory.
    let closing = tokio::task::spawn_blocking(move || drop(store));
    tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .context("the cluster store did not close within 30 s")?
        .context("store close task failed")?;
    tracing::info!("stopped");
    Ok(())
}
