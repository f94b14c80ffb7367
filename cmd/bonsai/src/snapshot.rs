//! `bonsai secrets-encrypt status|rotate-keys`: the running server's secrets encryption, through its admin API.
//!
//! `bonsai snapshot save|restore`: the store's snapshot (`embedded_store::Snapshot`) with the cluster's CA and
//! keys beside it, fetched from the running server (`apiserver::SNAPSHOT_PATH`), and restored offline into
//! a data directory without a store.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use embedded_store::{EmbeddedStore, Snapshot, StoreOptions};

use crate::cli::{SecretsEncryptCommand, SnapshotArgs, SnapshotCommand};

/// Sends an admin request to the running server and gives back the body of a successful answer.
async fn admin_request(kubeconfig: &Path, method: http::Method, path: &str) -> anyhow::Result<Vec<u8>> {
    let client = crate::network::kube_client(kubeconfig, None).await?;
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(kube::client::Body::from(Vec::new()))
        .context("cannot build the request")?;
    let response = client
        .send(request)
        .await
        .with_context(|| format!("the server did not answer {path}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect_bytes()
        .await
        .with_context(|| format!("the answer to {path} did not arrive whole"))?
        .to_vec();
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|s| s["message"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        bail!("the server refused ({status}): {message}");
    }
    Ok(bytes)
}

/// `bonsai certificate rotate`: refuses while a server holds the data directory's store (its certificates are in
/// use), then removes the leaves.
pub fn rotate_certificates(data_dir: &Path, services: &[String]) -> anyhow::Result<()> {
    let lock = data_dir.join("server/db/LOCK");
    if let Ok(file) = std::fs::File::open(&lock)
        && nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
    {
        bail!(
            "a bonsai server is running on {}: stop it first, then rotate",
            data_dir.display()
        );
    }
    let tls = data_dir.join("server/tls");
    let removed = apiserver::pki::remove_leaves(&tls, services)
        .with_context(|| format!("cannot rotate the certificates in {}", tls.display()))?;
    if removed.is_empty() {
        bail!("no certificate matched in {}", tls.display());
    }
    for path in &removed {
        println!("removed {}", path.display());
    }
    println!("new certificates are issued at the next start of bonsai server");
    Ok(())
}

pub async fn secrets_encrypt(kubeconfig: &Path, command: SecretsEncryptCommand) -> anyhow::Result<()> {
    let path = apiserver::SECRETS_ENCRYPTION_PATH;
    let body = match command {
        SecretsEncryptCommand::Status => admin_request(kubeconfig, http::Method::GET, path).await?,
        SecretsEncryptCommand::RotateKeys => {
            admin_request(kubeconfig, http::Method::POST, &format!("{path}/rotate-keys")).await?
        }
    };
    let status: serde_json::Value =
        serde_json::from_slice(&body).context("the server's answer is not JSON")?;
    let on = status["encryption"].as_bool().unwrap_or(false);
    println!("Encryption Status: {}", if on { "Enabled" } else { "Disabled" });
    println!("Current Key: {}", status["currentKey"].as_str().unwrap_or("none"));
    let keys: Vec<&str> = status["keys"]
        .as_array()
        .map(|k| k.iter().filter_map(|k| k.as_str()).collect())
        .unwrap_or_default();
    println!(
        "Keys: {}",
        if keys.is_empty() {
            "none".into()
        } else {
            keys.join(", ")
        }
    );
    if let Some(counts) = status["secretsByKey"].as_object() {
        for (key, count) in counts {
            println!("Secrets stored with {key}: {count}");
        }
    }
    Ok(())
}

/// Files kept with the snapshot, relative to `<data-dir>/server`: what a restored cluster needs for the
/// credentials already out there (kubeconfigs, agents' certificates, service account tokens) to stay valid.
fn kept_files() -> impl Iterator<Item = &'static str> {
    apiserver::bootstrap_data::SHARED_FILES
        .iter()
        .copied()
        .chain(["token"])
}

pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    let server_dir = args.data_dir.join("server");
    match args.command {
        SnapshotCommand::Save {
            name,
            dir,
            kubeconfig,
        } => {
            let dir = dir.unwrap_or_else(|| server_dir.join("snapshots"));
            let path = save(&kubeconfig, &server_dir, &dir, &name).await?;
            println!("{}", path.display());
            Ok(())
        }
        SnapshotCommand::Restore { file } => restore(&file, &server_dir),
    }
}

async fn save(kubeconfig: &Path, server_dir: &Path, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    if name.is_empty() || name.contains('/') {
        bail!("--name {name:?} must be a file name");
    }
    let bytes = admin_request(kubeconfig, http::Method::GET, apiserver::SNAPSHOT_PATH).await?;
    let mut snapshot = Snapshot::decode(&bytes).context("the server's snapshot is not usable")?;
    // The encryption configuration, when there is one: without it the snapshot's Secrets cannot be read.
    let encryption = "cred/encryption-config.json";
    if let Ok(content) = std::fs::read(server_dir.join(encryption)) {
        snapshot.files.push((encryption.to_string(), content.into()));
    }
    for file in kept_files() {
        let path = server_dir.join(file);
        let content = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} (run this on the server, with its --data-dir)",
                path.display()
            )
        })?;
        snapshot.files.push((file.to_string(), content.into()));
    }
    let host = apiserver::identity::hostname().unwrap_or_else(|| "server".into());
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = dir.join(format!("{name}-{host}-{seconds}"));
    write_private(&path, &snapshot.encode())?;
    tracing::info!(path = %path.display(), revision = snapshot.revision, keys = snapshot.kvs.len(), "snapshot saved");
    Ok(path)
}

fn restore(file: &Path, server_dir: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let snapshot =
        Snapshot::decode(&bytes).with_context(|| format!("{} cannot be restored", file.display()))?;
    let db = server_dir.join("db");
    if db.exists() && std::fs::read_dir(&db).map_or(true, |mut d| d.next().is_some()) {
        bail!(
            "{} holds a store already: stop the server and move it aside (or use a fresh --data-dir), then restore",
            db.display()
        );
    }
    EmbeddedStore::restore(&db, StoreOptions::default(), &snapshot)
        .with_context(|| format!("cannot restore into {}", db.display()))?;
    for (name, content) in &snapshot.files {
        if name.contains("..") || name.starts_with('/') {
            bail!("the snapshot names a file outside the data directory: {name:?}");
        }
        write_private(&server_dir.join(name), content)?;
    }
    println!(
        "restored {} objects at revision {} into {}; start `bonsai server --data-dir {}`",
        snapshot.kvs.len(),
        snapshot.revision,
        db.display(),
        server_dir.parent().unwrap_or(server_dir).display()
    );
    Ok(())
}

fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    kubelet::bootstrap::write_file(path, content, 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}
