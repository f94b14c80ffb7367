//! Registry configuration in k3s's `registries.yaml` format: mirrors (endpoints tried in order, with repository
//! rewrites) and per-registry configs (auth, TLS). A registry on loopback (127.0.0.0/8, `localhost`, `[::1]`)
//! is reached over plain HTTP unless an endpoint says `https://`, as Docker allows.
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["https://mirror.example:5000"]
//!     rewrite: {"^library/(.*)": "mirrored/$1"}
//! configs:
//!   "mirror.example:5000":
//!     auth: {username: u, password: p}
//!     tls: {ca_file: /etc/ssl/ca.pem, insecure_skip_verify: false}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::ImageError;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regular expression → replacement, applied to the repository path (`library/busybox`).
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub auth: Option<Auth>,
    pub tls: Option<Tls>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// base64 of `username:password`.
    pub auth: Option<String>,
    pub identitytoken: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// One place to try for an image: a host, the reference as that host knows it, and how to talk to it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The reference rewritten to this endpoint's host and repository.
    pub reference: Reference,
    pub plain_http: bool,
    pub auth: RegistryAuth,
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
}

/// Whether a registry host (with or without a port) is this machine.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl RegistriesConfig {
    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<RegistriesConfig, ImageError> {
        match std::fs::read_to_string(path) {
            Ok(text) => RegistriesConfig::parse(&text)
                .map_err(|e| ImageError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RegistriesConfig::default()),
            Err(e) => Err(ImageError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<RegistriesConfig, String> {
        if text.trim().is_empty() {
            return Ok(RegistriesConfig::default());
        }
        let config: RegistriesConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        for (registry, mirror) in &config.mirrors {
            for pattern in mirror.rewrite.keys() {
                regex::Regex::new(pattern)
                    .map_err(|e| format!("mirrors.{registry}.rewrite {pattern:?}: {e}"))?;
            }
        }
        Ok(config)
    }

    /// Where to look for `reference`, in order: its registry's mirrors (or the `*` mirror's), then the registry
    /// itself.
    pub fn endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>, ImageError> {
        let registry = reference.resolve_registry().to_string();
        let mirror = self
            .mirrors
            .get(reference.registry())
            .or_else(|| self.mirrors.get("*"));
        let mut out = Vec::new();
        if let Some(mirror) = mirror {
            for url in &mirror.endpoint {
                let (plain_http, host) = match url.split_once("://") {
                    Some(("http", rest)) => (true, rest),
                    Some((_, rest)) => (false, rest),
                    None => (is_loopback(url), url.as_str()),
                };
                let host = host.trim_end_matches('/').trim_end_matches("/v2");
                let repository = rewrite(&mirror.rewrite, reference.repository());
                out.push(self.endpoint(host, &repository, reference, plain_http)?);
            }
        }
        out.push(self.endpoint(
            &registry,
            reference.repository(),
            reference,
            is_loopback(&registry),
        )?);
        Ok(out)
    }

    fn endpoint(
        &self,
        host: &str,
        repository: &str,
        original: &Reference,
        plain_http: bool,
    ) -> Result<Endpoint, ImageError> {
        let reference = match original.digest() {
            Some(digest) => {
                Reference::with_digest(host.to_string(), repository.to_string(), digest.to_string())
            }
            None => Reference::with_tag(
                host.to_string(),
                repository.to_string(),
                original.tag().unwrap_or("latest").to_string(),
            ),
        };
        let config = self
            .configs
            .get(host)
            .or_else(|| self.configs.get(original.registry()));
        let auth = match config.and_then(|c| c.auth.as_ref()) {
            None => RegistryAuth::Anonymous,
            Some(Auth {
                identitytoken: Some(token),
                ..
            }) => RegistryAuth::Bearer(token.clone()),
            Some(Auth {
                username: Some(u),
                password: Some(p),
                ..
            }) => RegistryAuth::Basic(u.clone(), p.clone()),
            Some(Auth {
                auth: Some(encoded), ..
            }) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ImageError::Config(format!("configs.{host}.auth.auth is not base64 of user:password"))
                    })?;
                let (u, p) = decoded.split_once(':').ok_or_else(|| {
                    ImageError::Config(format!("configs.{host}.auth.auth is not user:password"))
                })?;
                RegistryAuth::Basic(u.to_string(), p.to_string())
            }
            Some(_) => {
                return Err(ImageError::Config(format!(
                    "configs.{host}.auth needs username and password"
                )));
            }
        };
        let tls = config.and_then(|c| c.tls.as_ref());
        if tls.is_some_and(|t| t.cert_file.is_some() || t.key_file.is_some()) {
            return Err(ImageError::Config(format!(
                "configs.{host}.tls: client certificates are not supported by this version of bonsai"
            )));
        }
        let ca_pem = match tls.and_then(|t| t.ca_file.as_deref()) {
            Some(file) => Some(std::fs::read(file).map_err(|e| ImageError::Io {
                path: file.into(),
                source: e,
            })?),
            None => None,
        };
        Ok(Endpoint {
            reference,
            plain_http,
            auth,
            ca_pem,
            insecure_skip_verify: tls.is_some_and(|t| t.insecure_skip_verify),
        })
    }
}

fn rewrite(rules: &BTreeMap<String, String>, repository: &str) -> String {
    for (pattern, replacement) in rules {
        if let Ok(re) = regex::Regex::new(pattern)
            && re.is_match(repository)
        {
            return re.replace(repository, replacement.as_str()).to_string();
        }
    }
    repository.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_rewrites_auth_and_loopback() {
        let config = RegistriesConfig::parse(
            r#"
mirrors:
  docker.io:
    endpoint: ["https://mirror.example:5000", "http://127.0.0.1:5001"]
    rewrite:
      "^library/(.*)": "mirrored/$1"
configs:
  "mirror.example:5000":
    auth: {username: u, password: p}
    tls: {insecure_skip_verify: true}
  "127.0.0.1:5001":
    auth: {auth: "dTI6cDI="}
"#,
        )
        .unwrap();
        let reference: Reference = "busybox:1.36".parse().unwrap();
        let endpoints = config.endpoints(&reference).unwrap();
        assert_eq!(endpoints.len(), 3);
        assert_eq!(
            endpoints[0].reference.whole(),
            "mirror.example:5000/mirrored/busybox:1.36"
        );
        assert!(!endpoints[0].plain_http && endpoints[0].insecure_skip_verify);
        assert!(matches!(&endpoints[0].auth, RegistryAuth::Basic(u, p) if u == "u" && p == "p"));
        assert!(endpoints[1].plain_http);
        assert!(matches!(&endpoints[1].auth, RegistryAuth::Basic(u, p) if u == "u2" && p == "p2"));
        assert_eq!(endpoints[2].reference.resolve_registry(), "index.docker.io");
        assert!(!endpoints[2].plain_http);

        let local: Reference = "127.0.0.1:5000/test/busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .parse()
            .unwrap();
        let only = RegistriesConfig::default().endpoints(&local).unwrap();
        assert_eq!(only.len(), 1);
        assert!(only[0].plain_http, "loopback registries speak plain HTTP");
        assert!(only[0].reference.digest().is_some());
        for host in ["localhost:5000", "127.0.0.5", "[::1]:5000"] {
            assert!(is_loopback(host), "{host}");
        }
        assert!(!is_loopback("registry.example:5000"));
        assert!(RegistriesConfig::parse("mirrors: {x: {rewrite: {'(': 'y'}}}").is_err());
        assert!(RegistriesConfig::parse("bogus: 1").is_err());
    }
}
