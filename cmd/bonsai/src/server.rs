//! `bonsai server`. For now: the cluster store, opened and kept until the process is told to stop.
//! The API server, controllers and node agent join it in later versions.

use std::time::Duration;

use anyhow::Context;
use embedded_store::{EmbeddedStore, StoreOptions};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ServerArgs;

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    // Listen for stop signals before anything else, so that a stop that comes early is a clean one.
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let db_dir = args.data_dir.join("server").join("db");
    let options = StoreOptions {
        engine: args.store_engine,
        cache_bytes: args.store_cache_mb as usize * 1024 * 1024,
        ..StoreOptions::default()
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
    tracing::info!("bonsai server running; stop it with SIGTERM or Ctrl-C");

    tokio::select! {
        _ = interrupt.recv() => tracing::info!("interrupted, shutting down"),
        _ = terminate.recv() => tracing::info!("terminated, shutting down"),
    }
    // Closing the store finishes queued writes and releases the data directory.
    let closing = tokio::task::spawn_blocking(move || drop(store));
    tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .context("the cluster store did not close within 30 s")?
        .context("store close task failed")?;
    tracing::info!("stopped");
    Ok(())
}
