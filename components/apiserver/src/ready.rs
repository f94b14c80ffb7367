//! The server asks itself whether it answers, over TLS as a client would, before it declares
//! itself ready (and writes the kubeconfig).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
#[error("the API server at {addr} did not answer /readyz: {detail}")]
pub struct NotReady {
    pub addr: SocketAddr,
    pub detail: String,
}

/// One GET /readyz over TLS, trusting only `ca_pem`; Ok when it answers 200.
pub async fn probe(addr: SocketAddr, ca_pem: &str) -> Result<(), NotReady> {
    let fail = |detail: String| NotReady { addr, detail };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut response = Vec::new();
        tls.read_to_end(&mut response)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let head = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
        if head.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(fail(format!("answered {head:?}")))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| fail("timed out".into()))?
}

/// Probes until the server answers, for up to `patience`.
pub async fn wait(addr: SocketAddr, ca_pem: &str, patience: Duration) -> Result<(), NotReady> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match probe(addr, ca_pem).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
