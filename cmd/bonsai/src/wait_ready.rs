//! `bonsai wait-ready`: returns once the API server answers `/readyz` and every node (at least one) is Ready.

use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::core::v1::Node;

/// What is not ready yet, or `None` when everything is.
async fn not_ready(client: &kube::Client) -> Option<String> {
    let request = match http::Request::get("/readyz").body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return Some(format!("cannot build the /readyz request: {e}")),
    };
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => {}
        Ok(body) => return Some(format!("/readyz says {:?}", body.trim())),
        Err(e) => return Some(format!("the API server is not ready: {e}")),
    }
    let nodes = match kube::Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
    {
        Ok(nodes) => nodes.items,
        Err(e) => return Some(format!("cannot list nodes: {e}")),
    };
    if nodes.is_empty() {
        return Some("no node has registered yet".into());
    }
    let waiting: Vec<String> = nodes
        .iter()
        .filter(|n| {
            !n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|n| n.metadata.name.clone().unwrap_or_default())
        .collect();
    (!waiting.is_empty()).then(|| format!("nodes not Ready: {}", waiting.join(", ")))
}

pub async fn run(kubeconfig: Option<std::path::PathBuf>, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        // The kubeconfig itself appears only once the server is up (a service manager returns before that):
        // look for it and read it again each time round.
        let kubeconfig = kubeconfig.clone().unwrap_or_else(crate::kubectl::kubeconfig);
        match crate::network::kube_client(&kubeconfig, None).await {
            Ok(client) => match not_ready(&client).await {
                None => {
                    println!("ready");
                    return Ok(());
                }
                Some(why) => last = why,
            },
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("not ready within {timeout:?}: {last}")
}
