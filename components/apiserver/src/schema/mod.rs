//! What the API's types look like beyond their Rust definitions: Kubernetes' patch metadata (merge keys, list
//! types) for strategic merge patch, server-side apply and the OpenAPI documents.

pub mod patch_meta;
pub mod types;
