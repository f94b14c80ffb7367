//! bonsai's Kubernetes API server.
//!
//! **Architecture Invariant:** the API server never touches containers, networks or nodes; it
//! serves the API over the cluster store. **Architecture Invariant:** only the API server knows
//! wire formats; the store below it holds bytes.
//!
//! HTTPS with the cluster PKI, authentication (client certificates, static tokens), the
//! authorization seam, health checks, `/version`, discovery, and the resource layer
//! (`resources`): one generic code path for every built-in kind.

pub mod admission;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod bootstrap_data;
pub mod bootstrap_tokens;
pub mod encryption;
mod health;
pub mod identity;
pub mod kubeconfig;
pub mod limits;
pub mod metrics;
mod metrics_api;
mod node_proxy;
mod openapi;
mod patch;
pub mod pki;
mod protobuf;
pub mod ready;
pub mod request_info;
pub mod resources;
pub mod schema;
mod server;
pub mod service_account_tokens;
mod status;
pub mod token;

pub use server::{
    ApiServerConfig, ApiServerError, AppState, KubernetesVersion, RunningApiServer, SECRETS_ENCRYPTION_PATH,
    SNAPSHOT_PATH, go_arch, start,
};
