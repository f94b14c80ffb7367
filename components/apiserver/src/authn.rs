//! Who is asking: client certificates signed by the cluster CA (CN = user, O = groups; the TLS
//! handshake has already verified the chain), then bearer tokens from a static token file in
//! kube-apiserver's `--token-auth-file` format (`token,user,uid,"group1,group2"`), then service account tokens
//! this server signed (`service_account_tokens`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// An authenticated user, as Kubernetes' `user.Info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

const AUTHENTICATED: &str = "system:authenticated";

#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path}, line {line}: {problem}")]
    Malformed {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    service_accounts: Option<std::sync::Arc<crate::service_account_tokens::TokenIssuer>>,
    /// The server join token's credential part (`server:<secret>`), a bootstrap credential.
    server_token: Option<String>,
}

impl Authenticator {
    pub fn new() -> Self {
        Authenticator::default()
    }

    /// Accepts the service account tokens `issuer` signs.
    pub fn with_service_account_tokens(
        mut self,
        issuer: std::sync::Arc<crate::service_account_tokens::TokenIssuer>,
    ) -> Self {
        self.service_accounts = Some(issuer);
        self
    }

    /// Accepts the join token `K10<hash>::server:<secret>` (its `server:<secret>` part, which agents send as
    /// their bearer token) as a bootstrap credential.
    pub fn with_join_token(mut self, join_token: &str) -> Self {
        self.server_token = crate::token::credential(join_token).map(String::from);
        self
    }

    /// Adds the tokens of a static token file.
    pub fn with_token_file(mut self, path: &Path) -> Result<Self, AuthnError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthnError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let malformed = |problem: &str| AuthnError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                problem: problem.into(),
            };
            let fields = split_csv(line).ok_or_else(|| malformed("unterminated quote"))?;
            if fields.len() < 3 {
                return Err(malformed("expected token,user,uid[,\"group1,group2\"]"));
            }
            if fields[0].is_empty() || fields[1].is_empty() {
                return Err(malformed("empty token or user"));
            }
            let groups = fields.get(3).map_or_else(Vec::new, |g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(String::from)
                    .collect()
            });
            let user = UserInfo {
                name: fields[1].clone(),
                uid: fields[2].clone(),
                groups,
            };
            self.tokens.insert(fields[0].clone(), with_authenticated(user));
        }
        Ok(self)
    }

    /// The user behind a request: its verified client certificate chain (leaf first), else its
    /// `Authorization` header. `None` means unauthenticated.
    pub fn authenticate(
        &self,
        peer_certificates: &[Vec<u8>],
        authorization: Option<&str>,
    ) -> Option<UserInfo> {
        self.authenticate_with_claims(peer_certificates, authorization)
            .map(|(user, _)| user)
    }

    /// As `authenticate`, with the claims of a service account token (whose bound objects the caller checks
    /// against the store: `service_account_tokens::still_bound`).
    pub fn authenticate_with_claims(
        &self,
        peer_certificates: &[Vec<u8>],
        authorization: Option<&str>,
    ) -> Option<(UserInfo, Option<serde_json::Value>)> {
        if let Some(leaf) = peer_certificates.first()
            && let Some(user) = user_from_certificate(leaf)
        {
            return Some((user, None));
        }
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        if let Some(user) = self.tokens.get(token) {
            return Some((user.clone(), None));
        }
        if let Some(server) = &self.server_token
            && constant_time_eq(server.as_bytes(), token.as_bytes())
        {
            return Some((crate::bootstrap_tokens::server_token_user(), None));
        }
        let now = crate::service_account_tokens::unix_now();
        let (user, claims) = self.service_accounts.as_ref()?.user_and_claims(token, now)?;
        Some((user, Some(claims)))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn with_authenticated(mut user: UserInfo) -> UserInfo {
    if !user.groups.iter().any(|g| g == AUTHENTICATED) {
        user.groups.push(AUTHENTICATED.to_string());
    }
    user
}

fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(with_authenticated(UserInfo {
        name,
        uid: String::new(),
        groups,
    }))
}

/// Splits one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (!quoted).then(|| fields.into_iter().map(|f| f.trim().to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_in_kube_apiserver_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "s3cret,alice,1001,\"dev,ops\"\n\nt2,bob,1002\n").unwrap();
        let authn = Authenticator::new().with_token_file(&path).unwrap();
        let alice = authn.authenticate(&[], Some("Bearer s3cret")).unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, vec!["dev", "ops", "system:authenticated"]);
        assert_eq!(
            authn.authenticate(&[], Some("Bearer t2")).unwrap().groups,
            vec!["system:authenticated"]
        );
        assert_eq!(authn.authenticate(&[], Some("Bearer wrong")), None);
        assert_eq!(authn.authenticate(&[], Some("Basic s3cret")), None);
        assert_eq!(authn.authenticate(&[], None), None);

        std::fs::write(&path, "only,two\n").unwrap();
        let err = Authenticator::new().with_token_file(&path).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::write(&path, "t,u,1,\"open\n").unwrap();
        assert!(Authenticator::new().with_token_file(&path).is_err());
    }

    #[test]
    fn client_certificates_name_the_user_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::Pki::load_or_create(dir.path(), &["127.0.0.1".to_string()]).unwrap();
        let der = crate::pki::parse_pem(&pki.admin_cert_pem).unwrap();
        let user = Authenticator::new()
            .authenticate(&[der], Some("Bearer ignored"))
            .unwrap();
        assert_eq!(user.name, "system:admin");
        assert_eq!(user.groups, vec!["system:masters", "system:authenticated"]);
    }
}
