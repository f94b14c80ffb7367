//! The resource layer: one generic code path serving every built-in kind over the store.

mod bootstrap;
mod certificates;
pub mod custom;
mod defaults;
mod discovery;
pub(crate) mod errors;
mod handlers;
mod objects;
pub mod registry;
pub(crate) mod selectors;
mod service_account_admission;
pub mod services;
mod tables;
pub(crate) mod validation;
mod watch;
mod watch_cache;

pub use bootstrap::{
    ensure_bootstrap_policy, ensure_default_namespaces, ensure_kubernetes_service, ensure_service_ranges,
};
pub use errors::ApiError;
pub use handlers::{dispatch, token_request};
pub use objects::{new_uid, now_rfc3339};
pub use watch_cache::WatchCaches;
