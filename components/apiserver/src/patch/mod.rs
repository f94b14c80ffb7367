//! Patches the API server applies to stored objects beyond RFC 6902 and RFC 7386, which the `json-patch` crate
//! handles: Kubernetes' strategic merge patch, and field management with server-side apply.

pub mod fields;
pub mod managed;
pub mod strategic;
