//! `bonsai agent`: join this machine to a cluster as a node, as k3s's agent does.
//!
//! The join (`kubelet::bootstrap`): the CA bundle from the server's `/cacerts`, checked against the token's hash
//! before the token's secret is sent; then, as the bootstrap user the token's credential authenticates, a CSR
//! for the node's client certificate (`system:node:<name>`), which the server's controllers approve and sign.
//! The credentials are kept in `<data-dir>/agent/` (`server-ca.crt`, `client-kubelet.crt`/`.key`,
//! `kubelet.kubeconfig`, `serving-kubelet.crt`/`.key`) and reused while valid, so a restart sends nothing secret
//! and makes no new CSR. Then the node agent runs as on a server (`node_agent.rs`), with the cluster's settings
//! read from `kube-public/bonsai-config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use kubelet::bootstrap;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::AgentArgs;
use crate::node_agent::{self, ClusterSettings};

/// How long a CSR may wait for the server's controllers.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(120);
/// A kept certificate is requested again when less than this is left of it.
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);
const NODES_GROUP: &str = "system:nodes";

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(join(args))
}

/// The token's CA hash and credential.
fn join_token(token: &str) -> anyhow::Result<(&str, &str)> {
    if token.trim().is_empty() {
        bail!("--token is empty");
    }
    apiserver::token::split(token).ok_or_else(|| {
        anyhow::anyhow!(
            "--token is not a join token: expected K10<sha256 of the server's CA>::server:<secret> (the server's \
             <data-dir>/server/token) or K10<sha256>::<id>.<secret> (`bonsai token create`)"
        )
    })
}

fn check_server(server: &str) -> anyhow::Result<()> {
    let Some(rest) = server.strip_prefix("https://") else {
        bail!("--server must be an https:// URL, such as https://10.0.0.1:6443 (got {server:?})");
    };
    if rest.is_empty() || rest.starts_with('/') {
        bail!("--server {server:?} names no host");
    }
    Ok(())
}

/// The node's identity: its client certificate, from `agent/` when still good, else through a CSR.
async fn client_credentials(
    args: &AgentArgs,
    agent_dir: &Path,
    user: &str,
) -> anyhow::Result<(String, String, String)> {
    let ca_path = agent_dir.join("server-ca.crt");
    if let (Ok(ca), Some((cert, key))) = (
        std::fs::read_to_string(&ca_path),
        bootstrap::read_pair(agent_dir, "client-kubelet"),
    ) && bootstrap::still_valid(&cert, &ca, user, &[], RENEW_BEFORE)
    {
        tracing::info!("reusing the node's client certificate");
        return Ok((ca, cert, key));
    }
    let (hash, credential) = join_token(&args.token)?;
    let ca = bootstrap::fetch_ca_bundle(&args.server).await?;
    let served = apiserver::token::ca_hash(&ca);
    if !served.eq_ignore_ascii_case(hash) {
        bail!(
            "the server's CA bundle does not match the token: its sha256 is {served}, the token expects {hash}; \
             the token is for another cluster, or something between this node and {} is not that server. \
             Nothing secret was sent.",
            args.server
        );
    }
    tracing::info!(ca_hash = %served, "the server's CA matches the token");
    let bootstrap_config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bootstrap\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: bootstrap\n  user:\n    token: {credential}\n\
         contexts:\n- name: bootstrap\n  context:\n    cluster: bootstrap\n    user: bootstrap\n\
         current-context: bootstrap\n",
        server = args.server,
        ca = base64_encode(&ca),
    );
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&bootstrap_config).context("the bootstrap kubeconfig")?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .context("the bootstrap kubeconfig")?;
    let client = kube::Client::try_from(config)?;
    let (key, request) = bootstrap::new_request(user, NODES_GROUP, &[])?;
    let cert = bootstrap::request_certificate(
        &client,
        &request,
        bootstrap::CLIENT_SIGNER,
        &["digital signature", "client auth"],
        ISSUE_TIMEOUT,
    )
    .await?;
    bootstrap::write_file(&ca_path, ca.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", ca_path.display()))?;
    bootstrap::write_pair(agent_dir, "client-kubelet", &cert, &key)
        .with_context(|| format!("cannot write the node's certificate in {}", agent_dir.display()))?;
    tracing::info!("the node's client certificate was issued");
    Ok((ca, cert, key))
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The cluster's settings: the server's, kept in `agent/cluster-settings.json` for a restart while the server is
/// away.
async fn cluster_settings(client: &kube::Client, agent_dir: &Path) -> anyhow::Result<ClusterSettings> {
    let kept = agent_dir.join("cluster-settings.json");
    // A server that has just started publishes them a moment after it answers: wait a little for them when
    // there is no copy to fall back on.
    let mut fetched = ClusterSettings::fetch(client).await;
    for _ in 0..40 {
        if fetched.is_ok() || kept.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        fetched = ClusterSettings::fetch(client).await;
    }
    match fetched {
        Ok(settings) => {
            let data = serde_json::to_vec(&settings.to_data())?;
            bootstrap::write_file(&kept, &data, 0o644)
                .with_context(|| format!("cannot write {}", kept.display()))?;
            Ok(settings)
        }
        Err(e) => {
            let Ok(data) = std::fs::read(&kept) else {
                return Err(e);
            };
            tracing::warn!(error = %format!("{e:#}"), "the server is not reachable: using the settings kept from before");
            ClusterSettings::from_data(&serde_json::from_slice(&data)?)
        }
    }
}

/// The kubelet's serving certificate: kept when still good for the node's names, else requested (once the Node
/// is registered, whose addresses the approver checks the names against).
async fn serving_certificate(
    client: &kube::Client,
    agent_dir: &Path,
    user: &str,
    names: &[String],
    node: &str,
) -> anyhow::Result<(String, String)> {
    let ca = std::fs::read_to_string(agent_dir.join("server-ca.crt")).unwrap_or_default();
    if let Some((cert, key)) = bootstrap::read_pair(agent_dir, "serving-kubelet")
        && bootstrap::still_valid(&cert, &ca, user, names, RENEW_BEFORE)
    {
        return Ok((cert, key));
    }
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    loop {
        match nodes.get_opt(node).await {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "waiting for the node's registration"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (key, request) = bootstrap::new_request(user, NODES_GROUP, names)?;
    let cert = bootstrap::request_certificate(
        client,
        &request,
        bootstrap::SERVING_SIGNER,
        &["digital signature", "server auth"],
        ISSUE_TIMEOUT,
    )
    .await?;
    bootstrap::write_pair(agent_dir, "serving-kubelet", &cert, &key)
        .with_context(|| format!("cannot write the serving certificate in {}", agent_dir.display()))?;
    Ok((cert, key))
}

async fn join(args: AgentArgs) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    check_server(&args.server)?;
    join_token(&args.token)?;
    let eviction = crate::cli::eviction(&args.kubelet_args).map_err(|e| anyhow::anyhow!(e))?;
    let name = node_agent::node_name(args.node_name.as_deref())?;
    let user = format!("system:node:{name}");
    let address = match args.node_ip {
        Some(ip) => ip,
        None => apiserver::identity::node_addresses()
            .into_iter()
            .next()
            .context("this host has no address to advertise: give the node one with --node-ip")?,
    };
    let agent_dir: PathBuf = args.data_dir.join("agent");
    std::fs::create_dir_all(&agent_dir).with_context(|| format!("cannot create {}", agent_dir.display()))?;

    let (ca, cert, key) = client_credentials(&args, &agent_dir, &user).await?;
    let kubeconfig = agent_dir.join("kubelet.kubeconfig");
    bootstrap::write_file(
        &kubeconfig,
        apiserver::kubeconfig::render_for(&args.server, &ca, &cert, &key).as_bytes(),
        0o600,
    )
    .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    let client = crate::network::kube_client(&kubeconfig, None).await?;
    let cluster = cluster_settings(&client, &agent_dir).await?;

    let config = node_agent::NodeAgentConfig {
        data_dir: args.data_dir.clone(),
        name: name.clone(),
        address,
        control_plane: false,
        labels: args.node_labels.iter().cloned().collect(),
        pod_logs_dir: args.pod_logs_dir.clone(),
        resolv_conf: args.resolv_conf.clone(),
        private_registry: args.private_registry.clone(),
        eviction,
        cluster,
        ca_cert_pem: ca,
    };
    let images = node_agent::open_images(&args.data_dir).await?;
    node_agent::import_airgap_images(&args.data_dir, images.clone());
    let started = node_agent::start(client.clone(), &config, images).await?;
    let names = vec![name.clone(), address.to_string()];
    let serving = tokio::select! {
        serving = serving_certificate(&client, &agent_dir, &user, &names, &name) => serving?,
        _ = interrupt.recv() => return Ok(()),
        _ = terminate.recv() => return Ok(()),
    };
    node_agent::serve_kubelet(started, &config, serving.0, serving.1).await?;
    tracing::info!(node = %name, server = %args.server, "bonsai agent ready");

    tokio::select! {
        _ = interrupt.recv() => tracing::info!("interrupted, shutting down"),
        _ = terminate.recv() => tracing::info!("terminated, shutting down"),
    }
    // The node's containers keep running (each has its shim), to be adopted by the next start.
    tracing::info!("stopped");
    Ok(())
}
