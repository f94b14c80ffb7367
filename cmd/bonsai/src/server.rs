//! `bonsai server`: the cluster store, the API server over it, the scheduler and controllers, and (unless
//! `--disable-agent`) the server's own node agent (`node_agent.rs`, the same start-up as `bonsai agent`'s).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apiserver::authn::Authenticator;
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
    let client = crate::network::kube_client(&args.kubeconfig(), None).await?;
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
        apiserver::kubeconfig::render_for(url, &pki.ca_cert_pem, &cert, &key).as_bytes(),
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
    kubeconfigs: &ComponentKubeconfigs,
    root_ca_pem: &str,
    tokens: Arc<apiserver::service_account_tokens::TokenIssuer>,
    signer: controllers::certificates::ClusterSigner,
) -> anyhow::Result<tokio::task::JoinSet<()>> {
    let mut tasks = tokio::task::JoinSet::new();
    if !args.disable_scheduler {
        let election = controllers::leader::Election::new("kube-system", "kube-scheduler", identity);
        // The scheduler is `system:kube-scheduler`, with the bootstrap roles bound to that user.
        let client = crate::network::kube_client(&kubeconfigs.scheduler, None).await?;
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
    let mut options = args.controller_options();
    options.root_ca_pem = root_ca_pem.to_string();
    options.legacy_token_signer = Some(Arc::new(LegacyTokens(tokens)));
    // The controller manager is `system:kube-controller-manager` (leader election, caches), each controller
    // its own ServiceAccount.
    let clients =
        crate::controller_credentials::ControllerClients::new(&kubeconfigs.controller_manager).await?;
    let election = controllers::leader::Election::new("kube-system", "kube-controller-manager", identity);
    tasks.spawn(controllers::leader::run_while_leader(
        clients.manager(),
        election,
        move || {
            let clients = clients.clone();
            let networks = networks.clone();
            let options = options.clone();
            let signer = signer.clone();
            async move { controller_manager(&clients, networks, service_lb, &options, signer) }
        },
    ));
    Ok(tasks)
}

/// The kubeconfigs of the scheduler (`system:kube-scheduler`) and the controller manager
/// (`system:kube-controller-manager`).
struct ComponentKubeconfigs {
    scheduler: std::path::PathBuf,
    controller_manager: std::path::PathBuf,
}

/// The tokens controller's signer: the API server's service account key.
#[derive(Debug)]
struct LegacyTokens(Arc<apiserver::service_account_tokens::TokenIssuer>);

impl controllers::serviceaccounttoken::LegacyTokenSigner for LegacyTokens {
    fn sign(&self, namespace: &str, account: &str, account_uid: &str, secret: &str) -> Option<String> {
        self.0.legacy_token(namespace, account, account_uid, secret)
    }
}

/// A kubeconfig of one of the server's components, with a client certificate of its own, as k3s keeps them:
/// `<data-dir>/server/cred/<name>.kubeconfig` naming `<data-dir>/server/tls/<file>.crt`'s identity.
fn component_kubeconfig(
    server_dir: &std::path::Path,
    pki: &Pki,
    url: &str,
    name: &str,
    file: &str,
    user: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let (cert, key) = pki.component_client(file, user, None)?;
    let path = server_dir.join("cred").join(format!("{name}.kubeconfig"));
    let rendered = apiserver::kubeconfig::render_for(url, &pki.ca_cert_pem, &cert, &key);
    apiserver::kubeconfig::write_rendered(&path, 0o600, &rendered)?;
    Ok(path)
}

/// kube-controller-manager's controllers, node IPAM and (unless disabled) ServiceLB.
fn controller_manager(
    clients: &crate::controller_credentials::ControllerClients,
    networks: network::config::ClusterNetworks,
    service_lb: bool,
    options: &controllers::ControllerOptions,
    signer: controllers::certificates::ClusterSigner,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    controllers::spawn_all(
        clients.manager(),
        &|name| clients.controller(name),
        options,
        &mut tasks,
    );
    // csrapproving and csrsigning: the signing key is the server's, so they run here, not in the library's set.
    tasks.spawn(controllers::certificates::run(
        clients.controller("certificate-controller"),
        signer,
    ));
    {
        // kube-controller-manager's nodeipam runs as node-controller.
        let client = clients.controller("node-controller");
        tasks.spawn(async move {
            if let Err(e) = network::controllers::run_node_ipam(client, networks).await {
                tracing::error!(error = %e, "node IPAM stopped");
            }
        });
    }
    if service_lb {
        // bonsai's own controller (k3s runs ServiceLB itself), with a role of its own.
        let client = clients.controller("servicelb");
        tasks.spawn(async move {
            if let Err(e) = network::controllers::run_service_lb(client).await {
                tracing::error!(error = %e, "servicelb stopped");
            }
        });
    }
    tasks
}

/// The cluster state: the embedded store in the data directory, or an external etcd.
enum ClusterStore {
    Embedded(Arc<EmbeddedStore>),
    Etcd(Arc<etcd_store::EtcdStore>),
}

impl ClusterStore {
    fn shared(&self) -> Arc<dyn embedded_store::Store> {
        match self {
            ClusterStore::Embedded(store) => store.clone(),
            ClusterStore::Etcd(store) => store.clone(),
        }
    }
}

async fn open_cluster_store(args: &ServerArgs, server_dir: &std::path::Path) -> anyhow::Result<ClusterStore> {
    if let Some(endpoint) = &args.datastore_endpoint {
        let config = etcd_store::EtcdConfig {
            endpoints: etcd_store::EtcdConfig::parse_endpoints(endpoint)?,
            ca_file: args.datastore_cafile.clone(),
            cert_file: args.datastore_certfile.clone(),
            key_file: args.datastore_keyfile.clone(),
        };
        let store = etcd_store::EtcdStore::connect(&config).await?;
        let revision = embedded_store::Store::current_revision(&store).await?;
        tracing::info!(endpoints = %config.endpoints.join(","), revision, "cluster store ready (etcd)");
        tokio::spawn(
            store
                .clone()
                .compact_periodically(args.store_compaction_interval, args.store_compaction_retain),
        );
        return Ok(ClusterStore::Etcd(Arc::new(store)));
    }
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
    Ok(ClusterStore::Embedded(store))
}

/// Raises this process's open-file limit to its hard limit (as k3s's unit sets `LimitNOFILE`): every client
/// connection, watch and pod stream is a descriptor, and the usual soft limit of 1,024 would let a crowd of
/// clients lock out the rest.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    // Listen for stop signals before anything else, so that a stop that comes early is a clean one.
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    raise_open_file_limit();

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
    let store = open_cluster_store(&args, &server_dir).await?;
    // The cluster's secret: `--token`'s, else the one kept from an earlier start, else a new one.
    let secret = match &args.token {
        Some(token) => apiserver::token::secret_of(token)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--token is empty or malformed (expected K10<hash>::server:<secret> or a secret)"
                )
            })?
            .to_string(),
        None => apiserver::token::stored_secret(&server_dir.join("token"))
            .unwrap_or_else(apiserver::token::new_secret),
    };
    // On an external datastore, the cluster's CA and signing keys come from the datastore when another server
    // made them first.
    let joined = match &store {
        ClusterStore::Etcd(etcd) => {
            let found = apiserver::bootstrap_data::download(etcd.as_ref(), &server_dir, &secret).await?;
            if found == apiserver::bootstrap_data::Downloaded::Joined {
                tracing::info!("joined the cluster whose bootstrap data the datastore holds");
            }
            Some(found)
        }
        ClusterStore::Embedded(_) => None,
    };

    let names = apiserver::identity::serving_names(service_ip, &args.cluster_domain, &args.tls_sans);
    let pki = Pki::load_or_create(&server_dir.join("tls"), &names)?;
    let join_token =
        apiserver::token::load_or_create_with(&server_dir.join("token"), &pki.ca_cert_pem, Some(&secret))?;
    if let Some((hash, _)) = args.token.as_deref().and_then(apiserver::token::parse)
        && hash != apiserver::token::ca_hash(&pki.ca_cert_pem)
    {
        anyhow::bail!(
            "--token names another cluster's CA (its hash is not this cluster's): give the token of the server this \
             one joins, from its <data-dir>/server/token"
        );
    }
    // The service account token key, beside the PKI as k3s keeps its (`server/tls/service.key`).
    let service_account_tokens = Arc::new(apiserver::service_account_tokens::TokenIssuer::load_or_create(
        &server_dir.join("tls/service.key"),
    )?);
    if let (ClusterStore::Etcd(etcd), Some(apiserver::bootstrap_data::Downloaded::Empty)) = (&store, joined) {
        apiserver::bootstrap_data::upload(etcd.as_ref(), &server_dir, &secret).await?;
        tracing::info!("stored the cluster's bootstrap data in the datastore, for the servers that join it");
    }
    // Secrets encryption: a configuration kept from an earlier start is always read (its Secrets must still
    // decrypt); `--secrets-encryption` makes one, or turns writes to encrypted.
    let mut secrets_encryption = apiserver::encryption::SecretsEncryption::load_or_create(
        &server_dir.join("cred/encryption-config.json"),
        args.secrets_encryption,
    )?;
    let store = secrets_encryption.wrap(store.shared());
    if secrets_encryption.enabled() {
        tracing::info!("secrets are encrypted at rest");
    }
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
    apiserver::resources::ensure_bootstrap_policy(&*store)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reconcile the bootstrap RBAC policy: {}",
                e.status()["message"]
            )
        })?;
    let authorization = apiserver::authz::Authorization::node_rbac(store.clone())
        .await
        .context("cannot load the RBAC policy")?;
    let state = AppState {
        store: store.clone(),
        authenticator,
        authorization: Arc::new(authorization),
        service_account_tokens: Some(service_account_tokens.clone()),
        secrets_encryption: Some(secrets_encryption),
        audit: match args.audit_log_path() {
            Some(path) => Some(Arc::new(apiserver::audit::AuditLog::open(&path)?)),
            None => None,
        },
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
        limits: args.request_limits(),
    })
    .await?;
    let local = SocketAddr::new(local_ip, api.local_addr.port());
    apiserver::ready::wait(local, &pki.ca_cert_pem, Duration::from_secs(30)).await?;
    let url = format!("https://{local}");
    let kubeconfig = args.kubeconfig();
    apiserver::kubeconfig::write(&kubeconfig, args.write_kubeconfig_mode, &url, &pki)?;
    tracing::info!(url = %url, kubeconfig = %kubeconfig.display(), "bonsai server ready");
    tracing::info!(
        "use the cluster: `bonsai kubectl get nodes`, or `KUBECONFIG={} kubectl get nodes`; \
         `bonsai wait-ready` returns once the node is Ready",
        kubeconfig.display()
    );
    let images = node_agent::open_images(&args.data_dir).await?;
    node_agent::import_airgap_images(&args.data_dir, images.clone());
    start_deploy_controller(&args).await?;
    if !args.disable_agent {
        start_agent(&args, &url, advertise, &pki, images, eviction).await?;
    }
    let identity = election_identity(&server_dir)?;
    let scheduler_kubeconfig = component_kubeconfig(
        &server_dir,
        &pki,
        &url,
        "scheduler",
        "client-scheduler",
        "system:kube-scheduler",
    )?;
    // k3s's `server/cred/controller.kubeconfig`: kube-controller-manager's own identity.
    let controller_kubeconfig = component_kubeconfig(
        &server_dir,
        &pki,
        &url,
        "controller",
        "client-controller",
        "system:kube-controller-manager",
    )?;
    let signer = controllers::certificates::ClusterSigner {
        ca_cert_pem: pki.ca_cert_pem.clone(),
        ca_key_pem: pki.ca_key_pem()?,
    };
    let mut controllers = start_controllers(
        &args,
        networks,
        &identity,
        &ComponentKubeconfigs {
            scheduler: scheduler_kubeconfig,
            controller_manager: controller_kubeconfig,
        },
        &pki.ca_cert_pem,
        service_account_tokens,
        signer,
    )
    .await?;
    // What agents joining this cluster read (as the nodes they become) to set themselves up alike.
    let admin = crate::network::kube_client(&args.kubeconfig(), None).await?;
    cluster_settings(&args).publish(&admin).await?;

    tokio::select! {
        _ = interrupt.recv() => tracing::info!("interrupted, shutting down"),
        _ = terminate.recv() => tracing::info!("terminated, shutting down"),
    }
    controllers.abort_all();
    api.shutdown(Duration::from_secs(5)).await;
    // Closing the store finishes queued writes and releases the data directory (the API server's state held
    // the other references, and is gone with it).
    let closing = tokio::task::spawn_blocking(move || drop(store));
    tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .context("the cluster store did not close within 30 s")?
        .context("store close task failed")?;
    tracing::info!("stopped");
    Ok(())
}
