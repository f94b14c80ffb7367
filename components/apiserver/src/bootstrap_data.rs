//! Bootstrap data: what every server of one cluster must share, kept in the datastore so that a server joining an
//! external datastore (`--datastore-endpoint`) with the cluster's token becomes one more server of that cluster, as
//! k3s does with its `/bootstrap/<hash>` key.
//!
//! Shared: the cluster CA (certificate and key: every server's serving and client certificates, and the agents'
//! certificates, chain to it) and the service account signing key (a token one server issues is valid on all).
//! The blob is encrypted with AES-256-GCM under a key derived from the token's secret (PBKDF2-HMAC-SHA256), so the
//! datastore alone does not give the CA key away, and a wrong token cannot read it.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use embedded_store::{RangeRequest, Store, StoreError, WriteOutcome};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// The files every server shares, relative to `<data-dir>/server`.
pub const SHARED_FILES: &[&str] = &["tls/server-ca.crt", "tls/server-ca.key", "tls/service.key"];

const PREFIX: &str = "/bootstrap/";
const PBKDF2_ROUNDS: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "the datastore belongs to a cluster whose token is not this one: start this server with that cluster's \
         --token (it is in <data-dir>/server/token on the first server)"
    )]
    WrongToken,
    #[error("the cluster's bootstrap data in the datastore cannot be read: {0}")]
    Corrupt(String),
    #[error(
        "another server stored the cluster's bootstrap data at the same time as this one: start this server again \
         to join it"
    )]
    Raced,
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("datastore: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] crate::pki::PkiError),
}

/// What `download` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Downloaded {
    /// The cluster's files, now written into the server directory.
    Joined,
    /// No cluster in this datastore yet: this server is its first, and uploads its files once it has made them.
    Empty,
}

fn key_for(secret: &str) -> Bytes {
    let hash = hex::encode(Sha256::digest(secret.as_bytes()));
    Bytes::from(format!("{PREFIX}{}", &hash[..12]))
}

fn cipher_key(secret: &str, salt: &[u8]) -> Result<LessSafeKey, BootstrapError> {
    let mut key = [0u8; 32];
    let rounds = NonZeroU32::new(PBKDF2_ROUNDS).ok_or_else(|| BootstrapError::Corrupt("rounds".into()))?;
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        secret.as_bytes(),
        &mut key,
    );
    let unbound =
        UnboundKey::new(&AES_256_GCM, &key).map_err(|_| BootstrapError::Corrupt("key derivation".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// The sealed form: `{"salt", "nonce", "ciphertext"}`, base64 each.
fn seal(secret: &str, files: &BTreeMap<String, String>) -> Result<Vec<u8>, BootstrapError> {
    let rng = SystemRandom::new();
    let (mut salt, mut nonce) = ([0u8; 16], [0u8; NONCE_LEN]);
    rng.fill(&mut salt)
        .and_then(|()| rng.fill(&mut nonce))
        .map_err(|_| BootstrapError::Corrupt("no randomness".into()))?;
    let mut data = serde_json::to_vec(files).map_err(|e| BootstrapError::Corrupt(e.to_string()))?;
    cipher_key(secret, &salt)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .map_err(|_| BootstrapError::Corrupt("encryption failed".into()))?;
    let sealed = serde_json::json!({
        "salt": STANDARD.encode(salt),
        "nonce": STANDARD.encode(nonce),
        "ciphertext": STANDARD.encode(data),
    });
    Ok(sealed.to_string().into_bytes())
}

fn open(secret: &str, sealed: &[u8]) -> Result<BTreeMap<String, String>, BootstrapError> {
    let corrupt = |what: &str| BootstrapError::Corrupt(what.to_string());
    let value: serde_json::Value = serde_json::from_slice(sealed).map_err(|e| corrupt(&e.to_string()))?;
    let field = |name: &str| -> Result<Vec<u8>, BootstrapError> {
        let text = value[name]
            .as_str()
            .ok_or_else(|| corrupt(&format!("no {name}")))?;
        STANDARD
            .decode(text)
            .map_err(|e| corrupt(&format!("{name}: {e}")))
    };
    let (salt, nonce, mut data) = (field("salt")?, field("nonce")?, field("ciphertext")?);
    let nonce = Nonce::try_assume_unique_for_key(&nonce).map_err(|_| corrupt("nonce"))?;
    // The key hashes to the right name, so a failure here means another secret with the same 48-bit name prefix,
    // or tampering: either way the token does not open it.
    let plain = cipher_key(secret, &salt)?
        .open_in_place(nonce, Aad::empty(), &mut data)
        .map_err(|_| BootstrapError::WrongToken)?;
    serde_json::from_slice(plain).map_err(|e| corrupt(&e.to_string()))
}

/// Fetches the cluster's bootstrap data for `secret` and writes its files into `server_dir`, replacing what this
/// server had made before (its own leaf certificates are then re-issued by `Pki::load_or_create`, which finds
/// them not signed by the CA).
pub async fn download(
    store: &dyn Store,
    server_dir: &Path,
    secret: &str,
) -> Result<Downloaded, BootstrapError> {
    let found = store.get(key_for(secret), 0).await?;
    let Some(kv) = found.kv else {
        let others = store
            .range(RangeRequest {
                prefix: Bytes::from_static(PREFIX.as_bytes()),
                start: None,
                limit: 1,
                revision: 0,
            })
            .await?;
        return if others.count > 0 {
            Err(BootstrapError::WrongToken)
        } else {
            Ok(Downloaded::Empty)
        };
    };
    let files = open(secret, &kv.value)?;
    for name in SHARED_FILES {
        let content = files
            .get(*name)
            .ok_or_else(|| BootstrapError::Corrupt(format!("{name} is missing")))?;
        let path = server_dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|local| local != *content) {
            tracing::warn!(path = %path.display(), "replacing this server's own file with the cluster's");
        }
        write_private(&path, content)?;
    }
    Ok(Downloaded::Joined)
}

/// Stores this server's shared files as the cluster's bootstrap data; only if none are stored yet.
pub async fn upload(store: &dyn Store, server_dir: &Path, secret: &str) -> Result<(), BootstrapError> {
    let mut files = BTreeMap::new();
    for name in SHARED_FILES {
        let path = server_dir.join(name);
        let content = std::fs::read_to_string(&path).map_err(|source| BootstrapError::Io {
            action: "read",
            path,
            source,
        })?;
        files.insert((*name).to_string(), content);
    }
    let sealed = seal(secret, &files)?;
    match store.create(key_for(secret), Bytes::from(sealed)).await? {
        WriteOutcome::Written { .. } => Ok(()),
        WriteOutcome::Conflict { .. } => Err(BootstrapError::Raced),
    }
}

fn write_private(path: &Path, content: &str) -> Result<(), BootstrapError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| BootstrapError::Io {
            action: "create",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    Ok(crate::pki::write_file(path, content.as_bytes(), 0o600)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_dir(ca: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in SHARED_FILES {
            write_private(&dir.path().join(name), &format!("{ca} {name}")).unwrap();
        }
        dir
    }

    async fn store() -> (tempfile::TempDir, embedded_store::EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            embedded_store::EmbeddedStore::open(dir.path(), embedded_store::StoreOptions::default()).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_second_server_with_the_token_gets_the_first_ones_files() {
        let (_db, store) = store().await;
        let first = server_dir("first");
        assert_eq!(
            download(&store, first.path(), "s3cret").await.unwrap(),
            Downloaded::Empty
        );
        upload(&store, first.path(), "s3cret").await.unwrap();

        let second = server_dir("second");
        assert_eq!(
            download(&store, second.path(), "s3cret").await.unwrap(),
            Downloaded::Joined
        );
        for name in SHARED_FILES {
            assert_eq!(
                std::fs::read_to_string(second.path().join(name)).unwrap(),
                format!("first {name}")
            );
        }
        // A second upload (a restart of the first server's start-up sequence) does not overwrite.
        assert!(matches!(
            upload(&store, second.path(), "s3cret").await,
            Err(BootstrapError::Raced)
        ));
    }

    #[tokio::test]
    async fn a_wrong_token_reads_nothing_and_writes_nothing() {
        let (_db, store) = store().await;
        let first = server_dir("first");
        upload(&store, first.path(), "right").await.unwrap();
        let other = server_dir("other");
        assert!(matches!(
            download(&store, other.path(), "wrong").await,
            Err(BootstrapError::WrongToken)
        ));
        assert_eq!(
            std::fs::read_to_string(other.path().join("tls/server-ca.key")).unwrap(),
            "other tls/server-ca.key"
        );
        // The stored blob holds no key in the clear.
        let stored = store.get(key_for("right"), 0).await.unwrap().kv.unwrap();
        assert!(!String::from_utf8_lossy(&stored.value).contains("server-ca.key"));
    }
}
