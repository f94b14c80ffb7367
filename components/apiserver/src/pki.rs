//! The cluster's PKI, made on first start and reused after: a CA, the API server's serving
//! certificate, and the admin's client certificate. File names follow k3s
//! (`<data-dir>/server/tls/server-ca.crt`, `serving-kube-apiserver.crt`, `client-admin.crt`).
//!
//! The serving certificate is issued again (by the same CA) when it lacks a name the server now
//! needs, for instance after the node got a new address, or when it nears expiry; the CA and the
//! admin certificate stay, so existing kubeconfigs keep working.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

const CA_CERT: &str = "server-ca.crt";
const CA_KEY: &str = "server-ca.key";
const SERVING_CERT: &str = "serving-kube-apiserver.crt";
const SERVING_KEY: &str = "serving-kube-apiserver.key";
const ADMIN_CERT: &str = "client-admin.crt";
const ADMIN_KEY: &str = "client-admin.key";
const KUBELET_SERVING_CERT: &str = "serving-kubelet.crt";
const KUBELET_SERVING_KEY: &str = "serving-kubelet.key";
const KUBELET_CLIENT_CERT: &str = "client-kubelet.crt";
const KUBELET_CLIENT_KEY: &str = "client-kubelet.key";
const APISERVER_CLIENT_CERT: &str = "client-kube-apiserver.crt";
const APISERVER_CLIENT_KEY: &str = "client-kube-apiserver.key";

/// CA lifetime, as k3s: ten years.
const CA_DAYS: i64 = 3650;
/// Leaf lifetime, as k3s: one year, renewed when under 90 days remain.
const LEAF_DAYS: i64 = 365;
const RENEW_BEFORE_DAYS: i64 = 90;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable certificate or key: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("cannot issue {what}: {source}")]
    Issue {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
}

/// The PEM files of the cluster's PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
}

impl Pki {
    /// Loads the PKI in `dir`, creating what is missing, and making sure the serving certificate
    /// covers every name in `serving_names` (DNS names or IP addresses).
    pub fn load_or_create(dir: &Path, serving_names: &[String]) -> Result<Pki, PkiError> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let (ca_cert_pem, ca_key) = load_or_create_ca(dir)?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key).map_err(|e| invalid(&dir.join(CA_CERT), e))?;

        let serving_ok = |pem: &str| covers(pem, serving_names) && fresh(pem) && signed_by(pem, &ca_cert_pem);
        let (serving_cert_pem, serving_key_pem) = load_or_issue(
            dir,
            SERVING_CERT,
            SERVING_KEY,
            serving_ok,
            "the serving certificate",
            || {
                let mut params = leaf_params("kube-apiserver", None)?;
                params.subject_alt_names = serving_names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                Ok(params)
            },
            &issuer,
        )?;

        let admin_ok = |pem: &str| fresh(pem) && signed_by(pem, &ca_cert_pem);
        let (admin_cert_pem, admin_key_pem) = load_or_issue(
            dir,
            ADMIN_CERT,
            ADMIN_KEY,
            admin_ok,
            "the admin certificate",
            || {
                let mut params = leaf_params("system:admin", Some("system:masters"))?;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                Ok(params)
            },
            &issuer,
        )?;

        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_cert_pem,
            serving_cert_pem,
            serving_key_pem,
            admin_cert_pem,
            admin_key_pem,
        })
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// The API server's client certificate towards kubelets (kube-apiserver's `apiserver-kubelet-client`; k3s's
    /// `client-kube-apiserver.crt`): `CN=system:apiserver`, `O=system:masters`. Returns the certificate and key PEM.
    pub fn apiserver_kubelet_client(&self) -> Result<(String, String), PkiError> {
        let (ca_cert_pem, ca_key) = load_or_create_ca(&self.dir)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key)
            .map_err(|e| invalid(&self.dir.join(CA_CERT), e))?;
        load_or_issue(
            &self.dir,
            APISERVER_CLIENT_CERT,
            APISERVER_CLIENT_KEY,
            |pem: &str| fresh(pem) && signed_by(pem, &ca_cert_pem),
            "the API server's kubelet client certificate",
            || {
                let mut params = leaf_params("system:apiserver", Some("system:masters"))?;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                Ok(params)
            },
            &issuer,
        )
    }

    /// A client certificate for one of the server's own components, as k3s keeps them (`client-scheduler.crt`,
    /// `client-controller.crt`): `CN=<user>`, `O=<group>` if given, reissued when it nears expiry or names another
    /// user. `file` is the name without extension. Returns the certificate and key PEM.
    pub fn component_client(
        &self,
        file: &str,
        user: &str,
        group: Option<&str>,
    ) -> Result<(String, String), PkiError> {
        let (ca_cert_pem, ca_key) = load_or_create_ca(&self.dir)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key)
            .map_err(|e| invalid(&self.dir.join(CA_CERT), e))?;
        let names_user = |pem: &str| {
            with_cert(pem, |c| {
                c.subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    == Some(user)
            })
            .unwrap_or(false)
        };
        load_or_issue(
            &self.dir,
            &format!("{file}.crt"),
            &format!("{file}.key"),
            |pem: &str| fresh(pem) && signed_by(pem, &ca_cert_pem) && names_user(pem),
            "a component's client certificate",
            || {
                let mut params = leaf_params(user, group)?;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                Ok(params)
            },
            &issuer,
        )
    }

    /// The CA's key (PEM), for the certificate signer of the controllers (kube-controller-manager's
    /// `--cluster-signing-key-file`).
    pub fn ca_key_pem(&self) -> Result<String, PkiError> {
        let path = self.dir.join(CA_KEY);
        fs::read_to_string(&path).map_err(io("read", &path))
    }

    /// The client certificate of the server's own node agent (`client-kubelet.crt`, as k3s signs its own node's
    /// at start): `CN=system:node:<node>`, `O=system:nodes`, the identity every joined node gets through its
    /// CSR. Returns the certificate and key PEM.
    pub fn node_client(&self, node: &str) -> Result<(String, String), PkiError> {
        let (ca_cert_pem, ca_key) = load_or_create_ca(&self.dir)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key)
            .map_err(|e| invalid(&self.dir.join(CA_CERT), e))?;
        let user = format!("system:node:{node}");
        let still_good = |pem: &str| {
            fresh(pem)
                && signed_by(pem, &ca_cert_pem)
                && with_cert(pem, |c| {
                    c.subject()
                        .iter_common_name()
                        .next()
                        .and_then(|n| n.as_str().ok())
                        == Some(user.as_str())
                })
                .unwrap_or(false)
        };
        load_or_issue(
            &self.dir,
            KUBELET_CLIENT_CERT,
            KUBELET_CLIENT_KEY,
            still_good,
            "the node's client certificate",
            || {
                let mut params = leaf_params(&user, Some("system:nodes"))?;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                Ok(params)
            },
            &issuer,
        )
    }

    /// The node agent's serving certificate for port 10250 (`serving-kubelet.crt`, k3s's name), issued by the
    /// cluster CA for `names` (the node's name and addresses) and reissued when one is missing or it nears
    /// expiry. Returns the certificate and key PEM.
    pub fn kubelet_serving(&self, names: &[String]) -> Result<(String, String), PkiError> {
        let (ca_cert_pem, ca_key) = load_or_create_ca(&self.dir)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key)
            .map_err(|e| invalid(&self.dir.join(CA_CERT), e))?;
        let still_good = |pem: &str| covers(pem, names) && fresh(pem) && signed_by(pem, &ca_cert_pem);
        load_or_issue(
            &self.dir,
            KUBELET_SERVING_CERT,
            KUBELET_SERVING_KEY,
            still_good,
            "the kubelet serving certificate",
            || {
                let mut params = leaf_params(names.first().map_or("kubelet", String::as_str), None)?;
                params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                Ok(params)
            },
            &issuer,
        )
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, detail: impl std::fmt::Display) -> PkiError {
    PkiError::Invalid {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn san(name: &str) -> Result<SanType, rcgen::Error> {
    Ok(match name.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.to_string().try_into()?),
    })
}

fn leaf_params(common_name: &str, organization: Option<&str>) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(LEAF_DAYS);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn load_or_create_ca(dir: &Path) -> Result<(String, KeyPair), PkiError> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if cert_path.exists() || key_path.exists() {
        // An existing CA is never replaced: every issued credential depends on it.
        let cert = fs::read_to_string(&cert_path).map_err(io("read", &cert_path))?;
        let key = fs::read_to_string(&key_path).map_err(io("read", &key_path))?;
        let key = KeyPair::from_pem(&key).map_err(|e| invalid(&key_path, e))?;
        parse_pem(&cert).map_err(|e| invalid(&cert_path, e))?;
        return Ok((cert, key));
    }
    let key = KeyPair::generate().map_err(|source| PkiError::Issue {
        what: "the CA key",
        source,
    })?;
    let mut params = CertificateParams::default();
    let now = OffsetDateTime::now_utc();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("bonsai-server-ca@{}", now.unix_timestamp()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).map_err(|source| PkiError::Issue {
        what: "the CA",
        source,
    })?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert.pem(), key))
}

fn load_or_issue(
    dir: &Path,
    cert_name: &str,
    key_name: &str,
    still_good: impl Fn(&str) -> bool,
    what: &'static str,
    params: impl FnOnce() -> Result<CertificateParams, rcgen::Error>,
    issuer: &Issuer<'_, &KeyPair>,
) -> Result<(String, String), PkiError> {
    let (cert_path, key_path) = (dir.join(cert_name), dir.join(key_name));
    if let (Ok(cert), Ok(key)) = (fs::read_to_string(&cert_path), fs::read_to_string(&key_path))
        && KeyPair::from_pem(&key).is_ok()
        && still_good(&cert)
    {
        return Ok((cert, key));
    }
    let key = KeyPair::generate().map_err(|source| PkiError::Issue { what, source })?;
    let params = params().map_err(|source| PkiError::Issue { what, source })?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| PkiError::Issue { what, source })?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(path = %cert_path.display(), "issued {what}");
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a file whole (temporary file, fsync, rename) with `mode`.
/// `bonsai certificate rotate`: removes the leaf certificates (and keys) in `dir`, all of them or those of the named
/// services (`admin`, `kube-apiserver`, `scheduler`, `kubelet`, ...: the part of the file name after `client-` or
/// `serving-`), so that the next start issues them again from the same CA, as `k3s certificate rotate` does. The
/// CA and the service-account key stay: every other credential depends on them. Returns the files removed.
pub fn remove_leaves(dir: &Path, services: &[String]) -> Result<Vec<PathBuf>, PkiError> {
    let entries = fs::read_dir(dir).map_err(io("read", dir))?;
    let mut removed = Vec::new();
    for entry in entries {
        let path = entry.map_err(io("read", dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".crt").or_else(|| name.strip_suffix(".key")) else {
            continue;
        };
        let Some(service) = stem
            .strip_prefix("client-")
            .or_else(|| stem.strip_prefix("serving-"))
        else {
            continue; // server-ca.*, service.key
        };
        if services.is_empty() || services.iter().any(|s| s == service) {
            fs::remove_file(&path).map_err(io("remove", &path))?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("write", &tmp))?;
    // The mode given to open() is filtered by the umask; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io("set the mode of", &tmp))?;
    file.write_all(contents).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io("write", path))
}

pub(crate) fn parse_pem(pem: &str) -> Result<Vec<u8>, String> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    Ok(parsed.contents)
}

fn with_cert<T>(pem: &str, f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T) -> Option<T> {
    let der = parse_pem(pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(f(&cert))
}

/// The DNS names and IP addresses a certificate is valid for.
pub fn subject_alt_names(pem: &str) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    with_cert(pem, |cert| {
        let Ok(Some(ext)) = cert.subject_alternative_name() else {
            return vec![];
        };
        ext.value
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
            .collect()
    })
    .unwrap_or_default()
}

fn covers(pem: &str, names: &[String]) -> bool {
    let sans = subject_alt_names(pem);
    names.iter().all(|n| sans.contains(n))
}

fn fresh(pem: &str) -> bool {
    with_cert(pem, |cert| {
        let not_after = cert.validity().not_after.timestamp();
        not_after > (OffsetDateTime::now_utc() + Duration::days(RENEW_BEFORE_DAYS)).unix_timestamp()
    })
    .unwrap_or(false)
}

fn signed_by(pem: &str, ca_pem: &str) -> bool {
    let Some(ca_der) = parse_pem(ca_pem).ok() else {
        return false;
    };
    let Ok((_, ca)) = x509_parser::parse_x509_certificate(&ca_der) else {
        return false;
    };
    with_cert(pem, |cert| cert.verify_signature(Some(ca.public_key())).is_ok()).unwrap_or(false)
}

#[cfg(test)]
mod rotate_tests {
    use super::*;

    #[test]
    fn rotation_removes_leaves_and_keeps_the_ca_and_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "server-ca.crt",
            "server-ca.key",
            "service.key",
            "client-admin.crt",
            "client-admin.key",
            "serving-kube-apiserver.crt",
            "serving-kube-apiserver.key",
            "client-scheduler.crt",
            "client-scheduler.key",
        ] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        let removed = remove_leaves(dir.path(), &["scheduler".into()]).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!dir.path().join("client-scheduler.crt").exists());
        assert!(dir.path().join("client-admin.crt").exists());
        let removed = remove_leaves(dir.path(), &[]).unwrap();
        assert_eq!(removed.len(), 4);
        for kept in ["server-ca.crt", "server-ca.key", "service.key"] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn made_once_reused_after_and_reissued_for_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &names(&["127.0.0.1", "kubernetes"])).unwrap();
        assert!(signed_by(&first.serving_cert_pem, &first.ca_cert_pem));
        assert!(signed_by(&first.admin_cert_pem, &first.ca_cert_pem));
        let sans = subject_alt_names(&first.serving_cert_pem);
        assert!(
            sans.contains(&"127.0.0.1".to_string()) && sans.contains(&"kubernetes".to_string()),
            "{sans:?}"
        );
        let mode = fs::metadata(dir.path().join(CA_KEY))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        let again = Pki::load_or_create(dir.path(), &names(&["127.0.0.1"])).unwrap();
        assert_eq!(again.ca_cert_pem, first.ca_cert_pem);
        assert_eq!(
            again.serving_cert_pem, first.serving_cert_pem,
            "a covering certificate is reused"
        );
        assert_eq!(again.admin_cert_pem, first.admin_cert_pem);

        let moved = Pki::load_or_create(dir.path(), &names(&["127.0.0.1", "10.9.8.7"])).unwrap();
        assert_eq!(moved.ca_cert_pem, first.ca_cert_pem, "the CA is never replaced");
        assert_ne!(moved.serving_cert_pem, first.serving_cert_pem);
        assert!(subject_alt_names(&moved.serving_cert_pem).contains(&"10.9.8.7".to_string()));
        assert_eq!(moved.admin_cert_pem, first.admin_cert_pem);
    }

    #[test]
    fn the_kubelet_serving_certificate_covers_the_node_and_is_reissued_when_it_moves() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &names(&["127.0.0.1"])).unwrap();
        let (cert, key) = pki.kubelet_serving(&names(&["n1", "10.0.0.5"])).unwrap();
        assert!(signed_by(&cert, &pki.ca_cert_pem));
        assert!(KeyPair::from_pem(&key).is_ok());
        assert_eq!(subject_alt_names(&cert), names(&["n1", "10.0.0.5"]));
        let (again, _) = pki.kubelet_serving(&names(&["n1", "10.0.0.5"])).unwrap();
        assert_eq!(again, cert, "a covering certificate is reused");
        let (moved, _) = pki.kubelet_serving(&names(&["n1", "10.0.0.6"])).unwrap();
        assert!(subject_alt_names(&moved).contains(&"10.0.0.6".to_string()));
        let (node, _) = pki.node_client("n1").unwrap();
        assert!(signed_by(&node, &pki.ca_cert_pem));
        assert_eq!(pki.node_client("n1").unwrap().0, node, "reused");
        assert_ne!(
            pki.node_client("n2").unwrap().0,
            node,
            "another node's name is another certificate"
        );
        let (client, _) = pki.apiserver_kubelet_client().unwrap();
        assert!(signed_by(&client, &pki.ca_cert_pem));
        assert_eq!(pki.apiserver_kubelet_client().unwrap().0, client);
        assert_eq!(
            Pki::load_or_create(dir.path(), &names(&["127.0.0.1"]))
                .unwrap()
                .ca_cert_pem,
            pki.ca_cert_pem
        );
    }

    #[test]
    fn a_damaged_ca_is_an_error_not_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        Pki::load_or_create(dir.path(), &names(&["127.0.0.1"])).unwrap();
        fs::write(dir.path().join(CA_KEY), "garbage").unwrap();
        let err = Pki::load_or_create(dir.path(), &names(&["127.0.0.1"])).unwrap_err();
        assert!(err.to_string().contains(CA_KEY), "{err}");
    }
}
