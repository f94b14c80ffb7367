//! The admin kubeconfig, as k3s writes `/etc/rancher/k3s/k3s.yaml`: cluster, context and user all
//! named `default`, credentials inline.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::pki::{Pki, PkiError, write_file};

pub fn render(server_url: &str, pki: &Pki) -> String {
    render_with(
        server_url,
        &pki.ca_cert_pem,
        &pki.admin_cert_pem,
        &pki.admin_key_pem,
    )
}

/// A kubeconfig for `server_url`, trusting `ca_pem`, presenting the client certificate `cert_pem`/`key_pem`
/// (the admin's, or a node's).
pub fn render_with(server_url: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: {server_url}\n  name: default\n\
         contexts:\n\
         - context:\n    cluster: default\n    user: default\n  name: default\n\
         current-context: default\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: default\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = STANDARD.encode(ca_pem),
        cert = STANDARD.encode(cert_pem),
        key = STANDARD.encode(key_pem),
    )
}

/// Writes the kubeconfig with exactly `mode` (the directory is created if needed).
pub fn write(path: &Path, mode: u32, server_url: &str, pki: &Pki) -> Result<(), PkiError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write_file(path, render(server_url, pki).as_bytes(), mode)
}
