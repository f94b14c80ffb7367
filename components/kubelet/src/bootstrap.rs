//! The kubelet's TLS bootstrap (`k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap`), with k3s's first step:
//!
//! 1. the cluster CA bundle is fetched from the server's `/cacerts` without credentials and without trusting
//!    the connection (there is nothing to trust it with yet); the caller checks its sha256 against the join
//!    token before anything secret is sent;
//! 2. with the token's credential, a CertificateSigningRequest for the node's client certificate
//!    (`kubernetes.io/kube-apiserver-client-kubelet`, `CN=system:node:<name>, O=system:nodes`) is created and
//!    waited on until the certificate controllers issue it;
//! 3. with the node's own identity, the serving certificate of port 10250 (`kubernetes.io/kubelet-serving`, the
//!    node's name and addresses as SANs) is requested the same way.
//!
//! Keys are made here (ECDSA P-256) and never leave the node.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{0} is not an https:// URL with a host")]
    Url(String),
    #[error("cannot reach the server at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the server at {url} answered {status} to GET /cacerts")]
    CaStatus { url: String, status: u16 },
    #[error(
        "the server refused the join token's credential (401 Unauthorized): the token is wrong, expired or deleted"
    )]
    Unauthorized,
    #[error("the certificate request {name} was {outcome}: {message}")]
    Refused {
        name: String,
        outcome: &'static str,
        message: String,
    },
    #[error(
        "the certificate request {name} was not issued within {seconds} s (are the server's controllers running?)"
    )]
    Timeout { name: String, seconds: u64 },
    #[error("cannot make a key or request: {0}")]
    Key(String),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// A rustls verifier that accepts any server certificate: used only to fetch `/cacerts`, whose content is
/// then checked against the hash the token carries (what k3s's agent does).
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `GET <server>/cacerts`: the cluster CA bundle, as the server serves it (unverified: check it against the
/// token's hash before using it).
pub async fn fetch_ca_bundle(server: &str) -> Result<String, BootstrapError> {
    use http_body_util::BodyExt;
    let url: url::Url = server.parse().map_err(|_| BootstrapError::Url(server.into()))?;
    let host = url
        .host_str()
        .filter(|_| url.scheme() == "https")
        .ok_or_else(|| BootstrapError::Url(server.into()))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port().unwrap_or(443);
    let unreachable = |detail: String| BootstrapError::Unreachable {
        url: server.to_string(),
        detail,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| unreachable(e.to_string()))?;
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/cacerts")
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(BootstrapError::CaStatus {
                url: server.to_string(),
                status,
            });
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| unreachable("the CA bundle is not text".into()))
    };
    tokio::time::timeout(Duration::from_secs(15), fetch)
        .await
        .map_err(|_| unreachable("no answer within 15 s".into()))?
}

/// A new key (PEM) and a certificate request (PEM) for `common_name`/`organization` with `sans`.
pub fn new_request(
    common_name: &str,
    organization: &str,
    sans: &[String],
) -> Result<(String, String), BootstrapError> {
    let key = rcgen::KeyPair::generate().map_err(|e| BootstrapError::Key(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(sans.to_vec()).map_err(|e| BootstrapError::Key(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, organization);
    let request = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| BootstrapError::Key(e.to_string()))?;
    Ok((key.serialize_pem(), request))
}

/// Creates a CSR for `request_pem` with `signer` and `usages`, then waits (up to `timeout`) for its certificate.
pub async fn request_certificate(
    client: &kube::Client,
    request_pem: &str,
    signer: &str,
    usages: &[&str],
    timeout: Duration,
) -> Result<String, BootstrapError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("csr-".into()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(request_pem.as_bytes().to_vec()),
            signer_name: signer.to_string(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(|source| match source {
            kube::Error::Api(e) if e.code == 401 => BootstrapError::Unauthorized,
            source => BootstrapError::Kube {
                what: "creating the certificate request".into(),
                source,
            },
        })?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, signer, "certificate requested");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = api.get(&name).await.map_err(|source| BootstrapError::Kube {
            what: format!("reading the certificate request {name}"),
            source,
        })?;
        if let Some(status) = &current.status {
            for c in status.conditions.iter().flatten() {
                if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                    return Err(BootstrapError::Refused {
                        name,
                        outcome: if c.type_ == "Denied" { "denied" } else { "failed" },
                        message: c.message.clone().unwrap_or_default(),
                    });
                }
            }
            if let Some(cert) = status.certificate.as_ref().filter(|c| !c.0.is_empty()) {
                return String::from_utf8(cert.0.clone()).map_err(|_| BootstrapError::Refused {
                    name,
                    outcome: "issued",
                    message: "the certificate is not PEM text".into(),
                });
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BootstrapError::Timeout {
                name,
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn first_certificate(pem: &str) -> Option<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(block.contents)
}

/// Whether the certificate in `cert_path` (with its key beside it) is one to keep: issued by `ca_pem`, for
/// `common_name`, covering every name of `sans`, and valid for at least `min_left` more.
pub fn still_valid(
    cert_pem: &str,
    ca_pem: &str,
    common_name: &str,
    sans: &[String],
    min_left: Duration,
) -> bool {
    use x509_parser::extensions::GeneralName;
    let (Some(der), Some(ca_der)) = (first_certificate(cert_pem), first_certificate(ca_pem)) else {
        return false;
    };
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(&der),
        x509_parser::parse_x509_certificate(&ca_der),
    ) else {
        return false;
    };
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return false;
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    if cn != Some(common_name) {
        return false;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if cert.validity().not_after.timestamp() < now + min_left.as_secs() as i64 {
        return false;
    }
    let names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => <[u8; 4]>::try_from(*b)
                        .ok()
                        .map(|a| std::net::IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(*b)
                        .ok()
                        .map(|a| std::net::IpAddr::from(a).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    sans.iter().all(|s| names.contains(s))
}

/// Reads a certificate and key pair kept in `dir` under `name.crt`/`name.key`.
pub fn read_pair(dir: &Path, name: &str) -> Option<(String, String)> {
    let cert = std::fs::read_to_string(dir.join(format!("{name}.crt"))).ok()?;
    let key = std::fs::read_to_string(dir.join(format!("{name}.key"))).ok()?;
    rcgen::KeyPair::from_pem(&key).ok()?;
    Some((cert, key))
}

/// Writes a certificate (0644) and its key (0600) into `dir` as `name.crt`/`name.key`, each whole.
pub fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> std::io::Result<()> {
    write_file(&dir.join(format!("{name}.key")), key.as_bytes(), 0o600)?;
    write_file(&dir.join(format!("{name}.crt")), cert.as_bytes(), 0o644)
}

/// Writes a file whole (temporary file, then rename) with `mode`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_certificates_must_be_the_cas_the_nodes_and_fresh() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["n2".to_string(), "10.0.0.2".to_string()]).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n2");
        let cert = leaf.signed_by(&key, &issuer).unwrap().pem();
        let day = Duration::from_secs(86400);
        let names = vec!["n2".to_string(), "10.0.0.2".to_string()];
        assert!(still_valid(&cert, &ca_cert.pem(), "system:node:n2", &names, day));
        assert!(!still_valid(&cert, &ca_cert.pem(), "system:node:n3", &[], day));
        assert!(!still_valid(
            &cert,
            &ca_cert.pem(),
            "system:node:n2",
            &["10.0.0.3".to_string()],
            day
        ));
        assert!(
            !still_valid(&cert, &cert, "system:node:n2", &[], day),
            "another issuer"
        );
        let (key_pem, request) = new_request("system:node:n2", "system:nodes", &[]).unwrap();
        assert!(request.contains("CERTIFICATE REQUEST") && key_pem.contains("PRIVATE KEY"));
    }
}
