//! bonsai's cluster controllers: kube-controller-manager's jobs, as clients of the API only (the server runs them
//! in process, over loopback, as k3s runs its own).
//!
//! Each controller is watcher -> cache -> queue -> idempotent reconcile (`work`): reflectors keep caches of the
//! kinds it reads, every change to one names the keys it affects, and the reconcile of a key makes the cluster
//! match what the caches say, whatever happened before.
//!
//! **Architecture Invariant:** controllers read and write cluster state only through the Kubernetes API.

pub mod certificates;
pub mod clusterroleaggregation;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
/// The event recorder, its own crate (the scheduler and the node agent record events too).
pub use events;
pub mod gc;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod rootcacertpublisher;
pub mod serviceaccount;
pub mod serviceaccounttoken;
pub mod statefulset;
pub mod tokencleaner;
pub mod volumebinding;
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

/// kube-controller-manager's flags that bonsai's controllers take (`--kube-controller-manager-arg`).
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// `--node-monitor-grace-period`: how long a node may stay silent before it is marked Unknown.
    pub node_monitor_grace_period: std::time::Duration,
    /// `--terminated-pod-gc-threshold`: terminated pods kept before the oldest are deleted (0: all kept).
    pub terminated_pod_gc_threshold: i32,
    /// `--root-ca-file`'s contents: the CA published in every namespace as `kube-root-ca.crt` (none if empty).
    pub root_ca_pem: String,
    /// What signs legacy tokens for `kubernetes.io/service-account-token` Secrets (the tokens controller runs
    /// only with one).
    pub legacy_token_signer: Option<std::sync::Arc<dyn serviceaccounttoken::LegacyTokenSigner>>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            node_monitor_grace_period: nodelifecycle::NODE_MONITOR_GRACE_PERIOD,
            terminated_pod_gc_threshold: podgc::TERMINATED_POD_GC_THRESHOLD,
            root_ca_pem: String::new(),
            legacy_token_signer: None,
        }
    }
}

/// Starts every controller of this crate on `tasks`. `client_of` gives the client of a controller by its
/// kube-controller-manager name (the ServiceAccount it acts as with `--use-service-account-credentials`);
/// `manager` is the controller manager's own, for the controllers kube-controller-manager runs with its root
/// client (the tokens controller, which makes the tokens the others need; the token cleaner, whose
/// namespaced `kube-system` Role bonsai's bootstrap policy does not have).
pub fn spawn_all(
    manager: kube::Client,
    client_of: &dyn Fn(&str) -> kube::Client,
    options: &ControllerOptions,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    tasks.spawn(nodelifecycle::run(
        client_of("node-controller"),
        options.node_monitor_grace_period,
    ));
    tasks.spawn(podgc::run(
        client_of("pod-garbage-collector"),
        options.terminated_pod_gc_threshold,
    ));
    tasks.spawn(endpointslice::run(
        client_of("endpointslice-controller"),
        client_of("endpoint-controller"),
    ));
    tasks.spawn(namespace::run(client_of("namespace-controller")));
    tasks.spawn(serviceaccount::run(client_of("service-account-controller")));
    tasks.spawn(gc::run(client_of("generic-garbage-collector")));
    tasks.spawn(statefulset::run(client_of("statefulset-controller")));
    tasks.spawn(replicaset::run(client_of("replicaset-controller")));
    tasks.spawn(deployment::run(client_of("deployment-controller")));
    tasks.spawn(job::run(
        client_of("job-controller"),
        client_of("ttl-after-finished-controller"),
    ));
    tasks.spawn(cronjob::run(client_of("cronjob-controller")));
    tasks.spawn(volumebinding::run(client_of("persistent-volume-binder")));
    tasks.spawn(tokencleaner::run(manager.clone()));
    tasks.spawn(daemonset::run(client_of("daemon-set-controller")));
    if !options.root_ca_pem.is_empty() {
        tasks.spawn(rootcacertpublisher::run(
            client_of("root-ca-cert-publisher"),
            options.root_ca_pem.clone(),
        ));
    }
    if let Some(signer) = &options.legacy_token_signer {
        tasks.spawn(serviceaccounttoken::run(
            manager,
            signer.clone(),
            options.root_ca_pem.clone(),
        ));
    }
    tasks.spawn(clusterroleaggregation::run(client_of(
        "clusterrole-aggregation-controller",
    )));
}
