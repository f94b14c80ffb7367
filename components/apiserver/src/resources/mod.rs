//! The resource layer: one generic code path serving every built-in kind over the store.

mod discovery;
mod errors;
mod handlers;
mod objects;
pub mod registry;
mod selectors;
mod validation;
mod watch;

pub use errors::ApiError;
pub use handlers::{dispatch, ensure_default_namespaces};
