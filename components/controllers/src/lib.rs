//! bonsai's cluster controllers: kube-controller-manager's jobs, as clients of the API only (the server runs them
//! in process, over loopback, as k3s runs its own).
//!
//! Each controller is watcher -> cache -> queue -> idempotent reconcile (`work`): reflectors keep caches of the
//! kinds it reads, every change to one names the keys it affects, and the reconcile of a key makes the cluster
//! match what the caches say, whatever happened before.
//!
//! **Architecture Invariant:** controllers read and write cluster state only through the Kubernetes API.

pub mod deployment;
pub mod endpointslice;
pub mod events;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod replicaset;
pub mod serviceaccount;
pub mod work;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// Not an error: the work is under way (objects being deleted) and the key should be looked at again soon.
    #[error("waiting: {0}")]
    Waiting(String),
}

pub(crate) fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ControllerError {
    let what = what.into();
    move |source| ControllerError::Kube { what, source }
}

/// Starts every controller of this crate on `tasks`.
pub fn spawn_all(client: kube::Client, tasks: &mut tokio::task::JoinSet<()>) {
    tasks.spawn(endpointslice::run(client.clone()));
    tasks.spawn(namespace::run(client.clone()));
    tasks.spawn(serviceaccount::run(client.clone()));
    tasks.spawn(gc::run(client.clone()));
    tasks.spawn(replicaset::run(client.clone()));
    tasks.spawn(deployment::run(client.clone()));
    tasks.spawn(job::run(client));
}
