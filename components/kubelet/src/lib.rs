//! bonsai's node agent (the kubelet's job): it registers its Node, runs the containers of the pods bound to it
//! with bonsai's runtime and pod network, and reports their status.
//!
//! **Architecture Invariant:** the kubelet reaches cluster state only through the Kubernetes API (kube-rs), so it
//! works the same inside `bonsai server` and alone in `bonsai agent` on another machine.

pub mod bootstrap;
pub mod dns;
pub mod env;
pub mod eviction;
pub mod lifecycle;
pub mod metrics;
pub mod node;
pub mod pod_volumes;
pub mod pods;
pub mod probes;
pub mod sandbox;
pub mod server;
pub mod stats;
pub mod volumes;

/// Why a node-agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// True once a reflector's cache holds the whole initial list.
pub(crate) fn ready<K>(cache: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures_util::FutureExt;
    cache.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
}
