//! flannel's kube subnet manager, natively: the node publishes its overlay annotations on its Node object and
//! watches every Node, making its routes match the set of nodes that have published theirs. A node joining,
//! changing its address or leaving reaches the others as one watch event, applied at once.
//!
//! Watcher -> current set of Nodes -> idempotent `Overlay::sync` (the whole desired set each time).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;

use crate::NetworkError;
use crate::overlay::{Overlay, peer_from_node};

fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Kube { what, source }
}

/// Waits for this node's Node object to have a pod subnet (`spec.podCIDR`) and returns it.
pub async fn wait_for_pod_cidr(nodes: &Api<Node>, name: &str) -> Result<ipnet::Ipv4Net, NetworkError> {
    let mut logged = false;
    loop {
        if let Some(node) = nodes
            .get_opt(name)
            .await
            .map_err(kube_error(format!("reading Node {name}")))?
            && let Some(cidr) = node.spec.and_then(|s| s.pod_cidr)
        {
            return cidr.parse().map_err(|_| {
                NetworkError::Config(format!("Node {name} has a malformed spec.podCIDR {cidr:?}"))
            });
        }
        if !logged {
            tracing::info!(node = name, "waiting for the Node to exist and have spec.podCIDR");
            logged = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Puts the overlay's annotations on this node's Node object (a merge patch: other annotations stay).
pub async fn publish(nodes: &Api<Node>, name: &str, overlay: &Overlay) -> Result<(), NetworkError> {
    let patch = serde_json::json!({ "metadata": { "annotations": overlay.annotations() } });
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_error(format!("annotating Node {name}")))?;
    Ok(())
}

/// Keeps the overlay in step with the cluster's Nodes until the watch ends (it does not, short of an error
/// the watcher cannot recover from). Each change is applied as it arrives.
pub async fn follow_nodes(nodes: Api<Node>, overlay: &Overlay) -> Result<(), NetworkError> {
    let mut known: BTreeMap<String, Node> = BTreeMap::new();
    let mut initial: Option<BTreeMap<String, Node>> = None;
    let mut events = std::pin::pin!(watcher(nodes, watcher::Config::default()));
    // Set when the kernel does not yet match `known` (a change not applied, or an apply that failed).
    let mut pending = false;
    loop {
        let retry = tokio::time::sleep(std::time::Duration::from_secs(1));
        let event = tokio::select! {
            event = events.next() => match event {
                Some(event) => Some(event),
                None => break,
            },
            () = retry, if pending => None,
        };
        match event {
            None => {}
            Some(Err(e)) => {
                // The watcher re-lists by itself on the next poll; say why it had to.
                tracing::warn!(error = %e, "watching Nodes");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Some(Ok(watcher::Event::Init)) => initial = Some(BTreeMap::new()),
            Some(Ok(watcher::Event::InitApply(node))) => {
                if let (Some(initial), Some(name)) = (initial.as_mut(), node.metadata.name.clone()) {
                    initial.insert(name, node);
                }
            }
            Some(Ok(watcher::Event::InitDone)) => {
                known = initial.take().unwrap_or_default();
                pending = true;
            }
            Some(Ok(watcher::Event::Apply(node))) => {
                if let Some(name) = node.metadata.name.clone() {
                    known.insert(name, node);
                    pending = true;
                }
            }
            Some(Ok(watcher::Event::Delete(node))) => {
                if let Some(name) = &node.metadata.name {
                    pending |= known.remove(name).is_some();
                }
            }
        }
        if pending && initial.is_none() {
            let peers: Vec<_> = known
                .values()
                .filter_map(|node| peer_from_node(node, overlay.backend()))
                .collect();
            match overlay.sync(&peers).await {
                Ok(()) => {
                    pending = false;
                    tracing::info!(
                        peers = ?peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
                        "overlay in step with the cluster's nodes"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot program the overlay; retrying in a second"),
            }
        }
    }
    Ok(())
}
