//! `bonsai server --ephemeral`: a throwaway cluster whose state lives in a new temporary directory and which
//! leaves nothing behind when it exits: its containers are killed and removed (with their cgroups and mounts), the
//! node's pod network is removed (cni0, flannel.1, the veths, bonsai's nft table), whatever is still mounted under
//! the directory is unmounted, and the directory goes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

#[derive(Debug)]
pub struct Ephemeral {
    pub root: PathBuf,
}

impl Ephemeral {
    /// Makes the temporary directory (in `$TMPDIR`, else /tmp).
    pub fn create() -> anyhow::Result<Ephemeral> {
        let dir = tempfile::Builder::new()
            .prefix("bonsai-ephemeral-")
            .tempdir()
            .context("cannot make a temporary directory for --ephemeral")?;
        Ok(Ephemeral { root: dir.keep() })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Removes everything the cluster made. Called once the server's runtime has stopped, so no task starts a
    /// container again meanwhile. Every step runs even when one before it failed; the first error is returned.
    pub fn teardown(self) -> anyhow::Result<()> {
        let data = self.data_dir();
        let mut first: Option<anyhow::Error> = None;
        let mut keep = |r: anyhow::Result<()>| {
            if let Err(e) = r {
                tracing::warn!(error = %format!("{e:#}"), "ephemeral teardown");
                first.get_or_insert(e);
            }
        };
        keep(remove_containers(&data));
        keep(remove_network(&data));
        keep(unmount_under(&self.root));
        keep(
            std::fs::remove_dir_all(&self.root)
                .with_context(|| format!("cannot remove {}", self.root.display())),
        );
        tracing::info!(dir = %self.root.display(), "ephemeral cluster removed");
        first.map_or(Ok(()), Err)
    }
}

fn remove_containers(data: &Path) -> anyhow::Result<()> {
    let containers = data.join("agent/containers");
    if !containers.is_dir() {
        return Ok(());
    }
    let store = Arc::new(runtime::store::ContentStore::open(crate::images::store_dir(
        data,
    ))?);
    let shim = std::env::current_exe().context("cannot find the bonsai binary")?;
    let runtime = runtime::container::Runtime::new(containers, store, shim)?;
    for info in runtime.list()? {
        runtime.stop(&info.config.id, Duration::ZERO)?;
        runtime.remove(&info.config.id)?;
    }
    Ok(())
}

fn remove_network(data: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(network::node::remove_all(&data.join("agent/network/leases")))?;
    Ok(())
}

/// Unmounts (lazily, deepest first) every mount at or under `root`: pods' pinned namespaces, root file systems,
/// memory-backed volumes.
fn unmount_under(root: &Path) -> anyhow::Result<()> {
    let mounts =
        std::fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    let mut under: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(root))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for mount in under {
        match nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(anyhow::anyhow!("cannot unmount {}: {e}", mount.display())),
        }
    }
    Ok(())
}
