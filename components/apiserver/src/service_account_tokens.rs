//! Service account tokens: the TokenRequest API's JWTs (`serviceaccounts/<name>/token`), signed ES256 with a key
//! kept in the data directory (`<data-dir>/server/tls/service.key`, as k3s keeps its), and their verification
//! for the authenticator; with the OIDC discovery documents (`/.well-known/openid-configuration`,
//! `/openid/v1/jwks`) that let others verify them.
//!
//! Claims are kube-apiserver's (`pkg/serviceaccount/claims.go`): `iss`, `sub`
//! (`system:serviceaccount:<ns>:<name>`), `aud`, `exp`, `iat`, `nbf`, `jti`, and `kubernetes.io` with the
//! namespace, the service account and the object the token is bound to (a pod, a secret or a node).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::Digest;

use crate::authn::UserInfo;

/// k3s's issuer and API audiences (`--service-account-issuer`, `--api-audiences`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const AUDIENCES: [&str; 2] = ["https://kubernetes.default.svc.cluster.local", "k3s"];
/// The issuer of legacy tokens (the ones the tokens controller puts in `kubernetes.io/service-account-token`
/// Secrets), as kube-apiserver's `LegacyIssuer`.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// Clock skew tolerated on `nbf` and `exp` (kube-apiserver's leeway).
const LEEWAY_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    #[error("the service account key {path}: {message}")]
    Key { path: String, message: String },
}

/// Issues and verifies service account tokens with one key.
pub struct TokenIssuer {
    key: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("key_id", &self.key_id)
            .finish()
    }
}

fn pem_encode(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn pem_decode(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

impl TokenIssuer {
    /// The issuer of the key at `path`, made (mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<TokenIssuer, TokenKeyError> {
        let failed = |message: String| TokenKeyError::Key {
            path: path.display().to_string(),
            message,
        };
        let rng = SystemRandom::new();
        let der = match std::fs::read_to_string(path) {
            Ok(text) => pem_decode(&text).ok_or_else(|| failed("not a PEM PKCS#8 private key".into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| failed("cannot generate a key".into()))?;
                let temporary = path.with_extension("key.tmp");
                std::fs::write(&temporary, pem_encode(document.as_ref()))
                    .and_then(|()| {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
                    })
                    .and_then(|()| std::fs::rename(&temporary, path))
                    .map_err(|e| failed(e.to_string()))?;
                document.as_ref().to_vec()
            }
            Err(e) => return Err(failed(e.to_string())),
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| failed(format!("not an ECDSA P-256 key: {e}")))?;
        // The key id is the public key's digest, as kube-apiserver's (keyIDFromPublicKey).
        let key_id = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(key.public_key().as_ref()));
        Ok(TokenIssuer { key, key_id, rng })
    }

    /// A signed JWT of `claims`.
    pub fn sign(&self, claims: &Value) -> Option<String> {
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(&self.rng, signing_input.as_bytes()).ok()?;
        Some(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// A legacy token for a Secret of `account` (kube's `LegacyClaims`: no audience, no expiry; valid as long as
    /// the Secret holds it and the account exists).
    pub fn legacy_token(
        &self,
        namespace: &str,
        account: &str,
        account_uid: &str,
        secret: &str,
    ) -> Option<String> {
        self.sign(&json!({
            "iss": LEGACY_ISSUER,
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/secret.name": secret,
            "kubernetes.io/serviceaccount/service-account.name": account,
            "kubernetes.io/serviceaccount/service-account.uid": account_uid,
            "sub": format!("system:serviceaccount:{namespace}:{account}"),
        }))
    }

    /// The claims of a token this issuer signed that is valid at `now` (Unix seconds) for one of the API's
    /// audiences; `None` for anything else (forged, expired, not yet valid, another issuer's).
    pub fn verify(&self, token: &str, now: i64) -> Option<Value> {
        let mut parts = token.split('.');
        let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header["alg"] != "ES256" || header["kid"] != self.key_id.as_str() {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let public =
            ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref());
        public
            .verify(
                format!("{}.{claims}", token.split('.').next()?).as_bytes(),
                &signature,
            )
            .ok()?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
        if claims["iss"] == LEGACY_ISSUER {
            return legacy_claims(&claims);
        }
        if claims["iss"] != ISSUER {
            return None;
        }
        let audiences: Vec<&str> = match &claims["aud"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences.iter().any(|a| AUDIENCES.contains(a)) {
            return None;
        }
        let exp = claims["exp"].as_i64()?;
        let nbf = claims["nbf"].as_i64().unwrap_or(0);
        if now > exp + LEEWAY_SECONDS || now + LEEWAY_SECONDS < nbf {
            return None;
        }
        Some(claims)
    }

    /// The user a valid token speaks for: `system:serviceaccount:<ns>:<name>` in the service accounts' groups.
    pub fn user(&self, token: &str, now: i64) -> Option<UserInfo> {
        self.user_and_claims(token, now).map(|(user, _)| user)
    }

    /// The user a valid token speaks for, and the token's claims (for `still_bound`).
    pub fn user_and_claims(&self, token: &str, now: i64) -> Option<(UserInfo, Value)> {
        let claims = self.verify(token, now)?;
        let subject = claims["sub"].as_str()?;
        let rest = subject.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        if namespace.is_empty() || name.is_empty() {
            return None;
        }
        let user = UserInfo {
            name: subject.to_string(),
            uid: claims
                .pointer("/kubernetes.io/serviceaccount/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        };
        Some((user, claims))
    }

    /// `/openid/v1/jwks`: the public key as a JWK set.
    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        // An uncompressed P-256 point: 0x04, then X and Y (32 bytes each).
        let (x, y) = if point.len() == 65 {
            (&point[1..33], &point[33..])
        } else {
            (&[][..], &[][..])
        };
        json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.key_id, "crv": "P-256", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }
}

/// A legacy token's claims in the shape of a bound token's (`kubernetes.io` naming the namespace, account and
/// Secret), marked with the legacy issuer.
fn legacy_claims(claims: &Value) -> Option<Value> {
    let text = |k: &str| {
        claims
            .get(format!("kubernetes.io/serviceaccount/{k}"))
            .and_then(Value::as_str)
    };
    let (namespace, account, secret) = (
        text("namespace")?,
        text("service-account.name")?,
        text("secret.name")?,
    );
    Some(json!({
        "iss": LEGACY_ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{account}"),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": account, "uid": text("service-account.uid").unwrap_or_default()},
            "secret": {"name": secret},
        },
    }))
}

/// kube-apiserver's check of a token's private claims at each use (pkg/serviceaccount/claims.go): the service
/// account, and the pod or secret the token is bound to, must still exist with the uids the token names. The
/// error says why (it is logged; the client only gets 401, as from kube-apiserver).
pub async fn still_bound(
    store: &dyn embedded_store::Store,
    claims: &Value,
    token: &str,
) -> Result<(), String> {
    let Some(private) = claims.get("kubernetes.io") else {
        return Ok(());
    };
    let namespace = private
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    for (what, plural) in [
        ("serviceaccount", "serviceaccounts"),
        ("pod", "pods"),
        ("secret", "secrets"),
    ] {
        let Some(reference) = private.get(what) else {
            continue;
        };
        let name = reference.get("name").and_then(Value::as_str).unwrap_or_default();
        let uid = reference.get("uid").and_then(Value::as_str).unwrap_or_default();
        let key = format!("/registry/core/{plural}/{namespace}/{name}");
        let stored = store
            .get(bytes::Bytes::from(key), 0)
            .await
            .map_err(|e| format!("cannot read {what} {namespace}/{name}: {e}"))?
            .kv
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok());
        let Some(stored) = stored else {
            let label = if what == "serviceaccount" {
                "service account"
            } else {
                what
            };
            return Err(format!("{label} {namespace}/{name} has been deleted"));
        };
        if what == "secret" && claims["iss"] == LEGACY_ISSUER {
            // A legacy token is good only while its Secret holds it.
            let held = stored
                .pointer("/data/token")
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
            if held.as_deref() != Some(token.as_bytes()) {
                return Err(format!("token does not match secret {namespace}/{name}"));
            }
        }
        let actual = stored
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !uid.is_empty() && actual != uid {
            return Err(format!("{what} UID ({actual}) does not match claim ({uid})"));
        }
    }
    Ok(())
}

/// Now, in Unix seconds (what `exp`, `iat` and `nbf` count).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `/.well-known/openid-configuration`, as kube-apiserver serves it.
pub fn openid_configuration() -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64, aud: &str) -> Value {
        json!({"iss": ISSUER, "sub": "system:serviceaccount:web:builder", "aud": [aud], "exp": now + 600,
               "iat": now, "nbf": now, "kubernetes.io": {"namespace": "web", "serviceaccount": {"name": "builder", "uid": "u1"}}})
    }

    #[test]
    fn tokens_verify_until_they_expire_and_forged_or_foreign_ones_do_not() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("service.key");
        let issuer = TokenIssuer::load_or_create(&path).expect("an issuer");
        // The key is kept: a second load verifies the first one's tokens.
        let again = TokenIssuer::load_or_create(&path).expect("the same issuer");
        let now = 1_800_000_000;
        let token = issuer.sign(&claims(now, "k3s")).expect("signed");
        let user = again.user(&token, now + 10).expect("valid");
        assert_eq!(user.name, "system:serviceaccount:web:builder");
        assert_eq!(user.groups[1], "system:serviceaccounts:web");
        assert!(
            issuer.user(&token, now + 600 + LEEWAY_SECONDS + 1).is_none(),
            "expired"
        );
        assert!(
            issuer
                .user(&issuer.sign(&claims(now, "elsewhere")).expect("signed"), now)
                .is_none(),
            "audience"
        );
        // A changed claim breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut forged = claims(now, "k3s");
        forged["sub"] = json!("system:serviceaccount:kube-system:admin");
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
        assert!(issuer.user(&parts.join("."), now).is_none(), "forged");
        // Another key's token is not ours.
        let other = TokenIssuer::load_or_create(&dir.path().join("other.key")).expect("another issuer");
        assert!(
            issuer
                .user(&other.sign(&claims(now, "k3s")).expect("signed"), now)
                .is_none()
        );
        assert!(issuer.user("not.a.jwt", now).is_none());
        assert_eq!(issuer.jwks()["keys"][0]["kty"], "EC");
    }
}
