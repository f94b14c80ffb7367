//! bonsai's local-path provisioner: k3s's `rancher.io/local-path` (local-path-provisioner), built into the node
//! agent. Each node's agent serves the claims the scheduler placed on its own node, so making and removing a
//! volume's directory is a local file operation, and no helper pod is needed.
//!
//! A claim of a `rancher.io/local-path` class that the PV binder handed to this provisioner (its
//! `volume.kubernetes.io/storage-provisioner` annotation) and whose `volume.kubernetes.io/selected-node` is this
//! node gets the directory `<data-dir>/storage/pvc-<uid>_<namespace>_<name>` (mode 0777) and a hostPath
//! PersistentVolume `pvc-<uid>` pinned to the node and pre-bound to the claim; the binder then binds the two. A
//! volume it made on this node that is Released with reclaim policy Delete loses its directory, then its
//! PersistentVolume; Retain leaves both. What it cannot serve (selectors, data sources, Block, modes other than
//! ReadWriteOnce and ReadWriteOncePod) gets a `ProvisioningFailed` event with local-path-provisioner's words.
//!
//! **Architecture Invariant:** the provisioner reaches cluster state only through the Kubernetes API (kube-rs),
//! and touches the file system only inside `<data-dir>/storage`, whatever a PersistentVolume's path says.

mod dirs;
mod provisioner;
pub mod volume;

use std::path::PathBuf;

pub use provisioner::run;

/// What the provisioner needs from its node agent.
#[derive(Clone, Debug)]
pub struct ProvisionerConfig {
    /// This node's name (the value of claims' `volume.kubernetes.io/selected-node`).
    pub node_name: String,
    /// The data directory; volumes live in its `storage/` (k3s's `/var/lib/rancher/k3s/storage`).
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{}: {source}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a directory of this node's local-path storage {}", path.display(), storage.display())]
    OutsideStorage { path: PathBuf, storage: PathBuf },
    #[error("the file system task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Not an error: something the provisioner needs is not there yet (its node, a fresh read); look again soon.
    #[error("waiting: {0}")]
    Waiting(String),
}

impl From<StorageError> for controllers::ControllerError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Kube { what, source } => controllers::ControllerError::Kube { what, source },
            StorageError::Waiting(why) => controllers::ControllerError::Waiting(why),
            e => controllers::ControllerError::Invalid(e.to_string()),
        }
    }
}

fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> StorageError {
    let what = what.into();
    move |source| StorageError::Kube { what, source }
}
