//! A kube-rs client run inside a pod (tests/tests/in_cluster.rs): `Client::try_default()` finds no kubeconfig
//! and takes the in-cluster configuration (`KUBERNETES_SERVICE_HOST`/`_PORT`, the mounted token and CA). It lists
//! the pods of its namespace and tries to read a Secret, and prints what came of each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a probe: its output is the test's evidence

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), kube::Error> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_default();
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default();
    println!("api: {host}:{port}");
    let client = kube::Client::try_default().await?;
    let namespace = client.default_namespace().to_string();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match pods.list(&ListParams::default()).await {
        Ok(list) => {
            let names: Vec<String> = list.items.into_iter().filter_map(|p| p.metadata.name).collect();
            println!("pods in {namespace}: {}", names.join(","));
        }
        Err(e) => println!("pods: error {e}"),
    }
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    match secrets.get("not-for-you").await {
        Ok(_) => println!("secret: read"),
        Err(kube::Error::Api(e)) => println!("secret: {} {}", e.code, e.message),
        Err(e) => println!("secret: error {e}"),
    }
    Ok(())
}
