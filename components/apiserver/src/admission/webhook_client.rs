//! Calls to admission webhooks: a POST of a JSON review over HTTPS (rustls), trusting only the webhook's
//! caBundle (without one, the host's system roots, as kube-apiserver), the whole call bounded by the webhook's timeout. A `url` is called as written; a `service` is
//! called at `<svc>.<ns>.svc` (the name its certificate must hold) on the address of one of its ready endpoints
//! (kube-apiserver's endpoint resolver, as with `--enable-aggregator-routing`: the API server reaches pod IPs on
//! its node, not necessarily cluster IPs).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::Value;

/// Where a webhook is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address connected to (a host name or IP).
    pub connect_host: String,
    pub port: u16,
    /// The TLS server name, and the Host header.
    pub server_name: String,
    /// Path and query.
    pub path: String,
    /// The URL as messages show it.
    pub url: String,
}

impl Endpoint {
    /// The endpoint of a `clientConfig.url`.
    pub fn from_url(raw: &str) -> Result<Endpoint, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("invalid url {raw:?}: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("invalid url {raw:?}: no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(Endpoint {
            connect_host: host.clone(),
            port: url.port_or_known_default().unwrap_or(443),
            server_name: host,
            path: match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            },
            url: raw.to_string(),
        })
    }
}

/// Why a call failed, in the words kube-apiserver's client uses after `failed calling webhook "NAME": `.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("failed to call webhook: Post \"{url}\": {detail}")]
    Call { url: String, detail: String },
    #[error("received invalid webhook response: {0}")]
    Response(String),
}

/// The host's trust roots (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the distribution's bundle), read once: what
/// kube-apiserver's Go TLS client trusts when a webhook has no caBundle. Certificates that do not parse are left
/// out, as Go leaves them out of its system pool.
fn system_roots() -> &'static rustls::RootCertStore {
    static ROOTS: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "reading the system trust roots");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(
            added,
            ignored,
            "system trust roots for webhooks without a caBundle"
        );
        roots
    })
}

fn roots_for(ca_bundle: Option<&[u8]>) -> Result<rustls::RootCertStore, String> {
    let Some(pem) = ca_bundle else {
        return Ok(system_roots().clone());
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("invalid caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("invalid caBundle: {e}"))?;
    }
    Ok(roots)
}

fn tls_config(ca_bundle: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = roots_for(ca_bundle)?;
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn post_unbounded(
    endpoint: &Endpoint,
    ca_bundle: Option<&[u8]>,
    body: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let tls = tls_config(ca_bundle)?;
    let server_name = ServerName::try_from(endpoint.server_name.clone()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect((endpoint.connect_host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("dial tcp {}:{}: {e}", endpoint.connect_host, endpoint.port))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection to a webhook");
        }
    });
    let host = if endpoint.port == 443 {
        endpoint.server_name.clone()
    } else {
        format!("{}:{}", endpoint.server_name, endpoint.port)
    };
    let request = hyper::Request::post(endpoint.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the server responded with the status code {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&bytes).trim()
        ));
    }
    Ok(bytes.to_vec())
}

/// POSTs `review` to `endpoint` within `timeout`; the decoded answer.
pub async fn post(
    endpoint: &Endpoint,
    ca_bundle: Option<&[u8]>,
    review: &Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    let body = serde_json::to_vec(review).map_err(|e| CallError::Response(e.to_string()))?;
    let call = |detail: String| CallError::Call {
        url: endpoint.url.clone(),
        detail,
    };
    let bytes = tokio::time::timeout(timeout, post_unbounded(endpoint, ca_bundle, body))
        .await
        .map_err(|_| call("context deadline exceeded".into()))?
        .map_err(call)?;
    serde_json::from_slice(&bytes).map_err(|e| CallError::Response(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_endpoints() {
        let e = Endpoint::from_url("https://127.0.0.1:8443/validate?x=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.connect_host.as_str(), e.port, e.path.as_str()),
            ("127.0.0.1", 8443, "/validate?x=1")
        );
        let e = Endpoint::from_url("https://hooks.example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.server_name.as_str(), e.port, e.path.as_str()),
            ("hooks.example.com", 443, "/")
        );
    }

    #[test]
    fn without_a_ca_bundle_the_system_roots_are_trusted_and_with_one_only_it() {
        // This host has Debian's ca-certificates bundle; a machine without any gets an empty store, never a panic.
        let system = roots_for(None).unwrap_or_else(|e| panic!("{e}"));
        if std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
            assert!(system.len() > 10, "{} system roots", system.len());
        }
        let certified = rcgen::generate_simple_self_signed(vec!["hooks.example.com".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        let own = roots_for(Some(certified.cert.pem().as_bytes())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(own.len(), 1);
        assert!(
            roots_for(Some(
                b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
            ))
            .is_err()
        );
    }
}
