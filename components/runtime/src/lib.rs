//! bonsai's container runtime. Today: images — pulled from OCI/Docker registries (`pull`, configured by
//! `registries`), imported from `docker save` and OCI-archive tarballs (`import`), kept in a content store
//! (`store`) with each layer unpacked once, in overlayfs form (`unpack`). Containers (overlayfs root filesystems,
//! namespaces, cgroups, a shim per container) are *planned*.
//!
//! **Architecture Invariant:** the runtime knows nothing of Kubernetes: the node agent turns pods into calls here.

pub mod container;
pub mod import;
pub mod pull;
pub mod registries;
pub mod store;
pub mod unpack;

use std::path::PathBuf;

/// Why an image operation failed, in terms a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {0}")]
    BadReference(String),
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    BadDigest(String),
    #[error("image {0} not found")]
    NotFound(String),
    #[error("not authorized by {0}")]
    Unauthorized(String),
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{reference} has no image for {platform}")]
    NoPlatform { reference: String, platform: String },
    #[error("invalid image manifest: {0}")]
    BadManifest(String),
    #[error("invalid layer: {0}")]
    BadLayer(String),
    #[error("a layer entry's path leaves the layer: {0}")]
    PathEscape(String),
    #[error("{0} is not an image archive (docker save or OCI layout)")]
    NotAnArchive(String),
    #[error("registry configuration: {0}")]
    Config(String),
    #[error("the image store is damaged: {0}")]
    Corrupt(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The name an image is recorded under: `busybox` → `docker.io/library/busybox:latest`,
/// `127.0.0.1:5000/x/y@sha256:…` as it is.
pub fn image_name(reference: &str) -> Result<String, ImageError> {
    let r: oci_client::Reference = reference
        .parse()
        .map_err(|e| ImageError::BadReference(format!("{reference}: {e}")))?;
    Ok(match r.digest() {
        Some(_) => r.whole(),
        None => format!(
            "{}/{}:{}",
            r.registry(),
            r.repository(),
            r.tag().unwrap_or("latest")
        ),
    })
}

/// oci-client's TLS (rustls without a built-in provider) needs the process-wide provider; ring, as everywhere
/// in bonsai. Installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
