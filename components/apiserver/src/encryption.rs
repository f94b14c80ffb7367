//! Encryption of Secrets at rest (`--secrets-encryption`), as kube-apiserver's `aesgcm` provider stores them:
//! `k8s:enc:aesgcm:v1:<key name>:` + a 12-byte nonce + AES-256-GCM ciphertext, authenticated with the value's
//! storage key, so a stolen disk (or etcd dump) does not give the Secrets away and a value moved to another key
//! does not decrypt.
//!
//! The keys live in an `EncryptionConfiguration` file (`apiserver.config.k8s.io/v1`, the `aesgcm` and `identity`
//! providers; k3s keeps its in `<data-dir>/server/cred/encryption-config.json`). The first provider writes; every
//! listed key reads, and so does plaintext, so that a cluster can turn encryption on and rotate keys without a
//! stop. `EncryptedSecrets` is a `Store` over the cluster store that encrypts and decrypts the values under the
//! Secrets' prefix and passes everything else through; `rotate` makes a new key the writer and rewrites every
//! Secret with it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use embedded_store::{
    GetResponse, KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnOp, TxnOpResult,
    TxnResponse, WatchRequest, WatchStream, WriteOutcome,
};
use futures_util::StreamExt;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

/// Where Secrets are kept in the store.
pub const SECRETS_PREFIX: &[u8] = b"/registry/core/secrets/";
const AESGCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable EncryptionConfiguration: {problem}")]
    Config { path: PathBuf, problem: String },
    #[error("no randomness for a new key")]
    Random,
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// One named AES-256 key.
struct NamedKey {
    name: String,
    secret: [u8; 32],
    key: LessSafeKey,
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NamedKey {
    fn new(name: String, secret: [u8; 32]) -> Result<NamedKey, String> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| "a key is not 32 bytes".to_string())?;
        Ok(NamedKey {
            name,
            secret,
            key: LessSafeKey::new(unbound),
        })
    }
}

/// The keys, writer first; `encrypt == false` writes plaintext (the `identity` provider first).
#[derive(Debug, Default)]
struct KeySet {
    keys: Vec<NamedKey>,
    encrypt: bool,
}

impl KeySet {
    fn parse(text: &str) -> Result<KeySet, String> {
        let config: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if config["kind"] != "EncryptionConfiguration" {
            return Err("kind is not EncryptionConfiguration".into());
        }
        let resources = config["resources"].as_array().ok_or("no resources")?;
        let secrets = resources
            .iter()
            .find(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x == "secrets"))
            })
            .ok_or("no entry for secrets")?;
        let providers = secrets["providers"].as_array().ok_or("no providers")?;
        let mut set = KeySet::default();
        for (i, provider) in providers.iter().enumerate() {
            if provider.get("identity").is_some() {
                continue;
            }
            let Some(aesgcm) = provider.get("aesgcm") else {
                return Err(format!("provider {i}: only aesgcm and identity are supported"));
            };
            if i == 0 {
                set.encrypt = true;
            }
            for key in aesgcm["keys"].as_array().ok_or("aesgcm without keys")? {
                let name = key["name"].as_str().ok_or("a key without a name")?.to_string();
                let bytes = STANDARD
                    .decode(key["secret"].as_str().ok_or("a key without a secret")?)
                    .map_err(|e| format!("key {name}: {e}"))?;
                let secret: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| format!("key {name}: an aesgcm key here is 32 bytes"))?;
                set.keys.push(NamedKey::new(name, secret)?);
            }
        }
        Ok(set)
    }

    fn to_config(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| json!({"name": k.name, "secret": STANDARD.encode(k.secret)}))
            .collect();
        let mut providers = vec![];
        if !self.encrypt {
            providers.push(json!({"identity": {}}));
        }
        if !keys.is_empty() {
            providers.push(json!({"aesgcm": {"keys": keys}}));
        }
        if self.encrypt {
            providers.push(json!({"identity": {}}));
        }
        json!({
            "kind": "EncryptionConfiguration",
            "apiVersion": "apiserver.config.k8s.io/v1",
            "resources": [{"resources": ["secrets"], "providers": providers}],
        })
    }

    fn seal(&self, storage_key: &[u8], plain: &[u8]) -> Result<Bytes, StoreError> {
        let Some(writer) = self.keys.first().filter(|_| self.encrypt) else {
            return Ok(Bytes::copy_from_slice(plain));
        };
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::Failed("no randomness to encrypt a Secret".into()))?;
        let mut data = plain.to_vec();
        writer
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(storage_key),
                &mut data,
            )
            .map_err(|_| StoreError::Failed("encrypting a Secret failed".into()))?;
        let mut out = format!("{AESGCM_PREFIX}{}:", writer.name).into_bytes();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(Bytes::from(out))
    }

    fn open(&self, storage_key: &[u8], stored: &Bytes) -> Result<Bytes, StoreError> {
        let Some(rest) = stored.strip_prefix(AESGCM_PREFIX.as_bytes()) else {
            // Written before encryption was turned on (or with identity first): plaintext.
            return Ok(stored.clone());
        };
        let key_name = String::from_utf8_lossy(storage_key).into_owned();
        let failed = |why: String| StoreError::Failed(format!("cannot decrypt {key_name}: {why}"));
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| failed("no key name".into()))?;
        let (name, sealed) = (
            String::from_utf8_lossy(&rest[..colon]).into_owned(),
            &rest[colon + 1..],
        );
        let key = self.keys.iter().find(|k| k.name == name).ok_or_else(|| {
            failed(format!(
                "it was encrypted with key {name:?}, which the configuration no longer has"
            ))
        })?;
        if sealed.len() < NONCE_LEN {
            return Err(failed("too short".into()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| failed("bad nonce".into()))?;
        let mut data = ciphertext.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(storage_key), &mut data)
            .map_err(|_| failed("authentication failed".into()))?;
        Ok(Bytes::copy_from_slice(plain))
    }
}

fn is_secret(key: &[u8]) -> bool {
    key.starts_with(SECRETS_PREFIX)
}

fn new_key(name: String) -> Result<NamedKey, EncryptionError> {
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| EncryptionError::Random)?;
    NamedKey::new(name, secret).map_err(|_| EncryptionError::Random)
}

/// The encryption configuration file and the keys it holds, shared by the store wrapper and the rotation.
#[derive(Debug, Clone)]
pub struct SecretsEncryption {
    path: PathBuf,
    keys: Arc<RwLock<KeySet>>,
    /// The store under the wrapper, once `wrap` made one: what the status reads.
    raw: Option<Arc<dyn Store>>,
}

/// What `bonsai secrets-encrypt status` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionStatus {
    pub encryption: bool,
    /// The key new writes use.
    pub current_key: Option<String>,
    /// Every key the configuration holds, writer first.
    pub keys: Vec<String>,
    /// Secrets per key they are stored with ("identity": plaintext).
    pub secrets_by_key: std::collections::BTreeMap<String, usize>,
}

impl SecretsEncryption {
    /// Loads the configuration at `path`; with `enable`, makes one (a new aesgcm key) when there is none, and
    /// makes its key the writer when it was written with identity first.
    pub fn load_or_create(path: &Path, enable: bool) -> Result<SecretsEncryption, EncryptionError> {
        let config_error = |problem: String| EncryptionError::Config {
            path: path.to_path_buf(),
            problem,
        };
        let mut set = match std::fs::read_to_string(path) {
            Ok(text) => KeySet::parse(&text).map_err(config_error)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeySet::default(),
            Err(source) => {
                return Err(EncryptionError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let mut changed = false;
        if enable && set.keys.is_empty() {
            set.keys.push(new_key(key_name())?);
            changed = true;
        }
        if enable && !set.encrypt {
            set.encrypt = true;
            changed = true;
        }
        let encryption = SecretsEncryption {
            path: path.to_path_buf(),
            keys: Arc::new(RwLock::new(set)),
            raw: None,
        };
        if changed {
            encryption.save()?;
        }
        Ok(encryption)
    }

    fn save(&self) -> Result<(), EncryptionError> {
        let config = self.read().to_config();
        let text = serde_json::to_string_pretty(&config).unwrap_or_default();
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| EncryptionError::Io {
                action: "create",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        crate::pki::write_file(&self.path, text.as_bytes(), 0o600).map_err(|e| EncryptionError::Config {
            path: self.path.clone(),
            problem: e.to_string(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeySet> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enabled(&self) -> bool {
        self.read().encrypt
    }

    /// The store with Secrets encrypted on their way in and decrypted on their way out; this keeps `inner` for
    /// `current_status` and `rotate_keys`.
    pub fn wrap(&mut self, inner: Arc<dyn Store>) -> Arc<dyn Store> {
        self.raw = Some(inner.clone());
        Arc::new(EncryptedSecrets {
            inner,
            keys: self.keys.clone(),
        })
    }

    /// The store under the wrapper (Secrets as stored: what a snapshot copies).
    pub fn raw_store(&self) -> Option<Arc<dyn Store>> {
        self.raw.clone()
    }

    fn raw(&self) -> Result<&Arc<dyn Store>, EncryptionError> {
        self.raw.as_ref().ok_or_else(|| {
            EncryptionError::Store(StoreError::Failed("secrets encryption wraps no store".into()))
        })
    }

    /// `status` of the wrapped store.
    pub async fn current_status(&self) -> Result<EncryptionStatus, EncryptionError> {
        self.status(self.raw()?.as_ref()).await
    }

    /// `rotate` through `wrapped` (the store `wrap` returned), reading the status from the store under it.
    pub async fn rotate_keys(&self, wrapped: &dyn Store) -> Result<EncryptionStatus, EncryptionError> {
        let raw = self.raw()?.clone();
        self.rotate(wrapped, raw.as_ref()).await
    }

    /// Which key each Secret is stored with, read from the raw store (not the wrapper).
    pub async fn status(&self, raw: &dyn Store) -> Result<EncryptionStatus, EncryptionError> {
        let all = raw
            .range(RangeRequest {
                prefix: Bytes::from_static(SECRETS_PREFIX),
                start: None,
                limit: 0,
                revision: 0,
            })
            .await?;
        let mut by_key = std::collections::BTreeMap::new();
        for kv in &all.kvs {
            let name = match kv.value.strip_prefix(AESGCM_PREFIX.as_bytes()) {
                Some(rest) => {
                    let end = rest.iter().position(|b| *b == b':').unwrap_or(rest.len());
                    String::from_utf8_lossy(&rest[..end]).into_owned()
                }
                None => "identity".to_string(),
            };
            *by_key.entry(name).or_insert(0) += 1;
        }
        let keys = self.read();
        Ok(EncryptionStatus {
            encryption: keys.encrypt,
            current_key: keys.keys.first().filter(|_| keys.encrypt).map(|k| k.name.clone()),
            keys: keys.keys.iter().map(|k| k.name.clone()).collect(),
            secrets_by_key: by_key,
        })
    }

    /// `rotate-keys`: a new key becomes the writer, every Secret is rewritten with it (through `store`, the
    /// wrapper), then the old keys are dropped from the configuration; the status is read from `raw`, the store
    /// under the wrapper. A Secret changed meanwhile by a client is
    /// re-read and rewritten again.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        raw: &dyn Store,
    ) -> Result<EncryptionStatus, EncryptionError> {
        {
            let mut keys = self.write();
            keys.keys.insert(0, new_key(key_name())?);
            keys.encrypt = true;
        }
        self.save()?;
        let all = store
            .range(RangeRequest {
                prefix: Bytes::from_static(SECRETS_PREFIX),
                start: None,
                limit: 0,
                revision: 0,
            })
            .await?;
        for kv in all.kvs {
            rewrite(store, kv).await?;
        }
        {
            let mut keys = self.write();
            keys.keys.truncate(1);
        }
        self.save()?;
        self.status(raw).await
    }
}

async fn rewrite(store: &dyn Store, mut kv: KeyValue) -> Result<(), EncryptionError> {
    loop {
        match store
            .update(kv.key.clone(), kv.value.clone(), kv.mod_revision)
            .await?
        {
            WriteOutcome::Written { .. } | WriteOutcome::Conflict { current: None } => return Ok(()),
            WriteOutcome::Conflict {
                current: Some(current),
            } => kv = current,
        }
    }
}

fn key_name() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("aesgcmkey-{seconds}")
}

/// The store wrapper.
#[derive(Debug)]
struct EncryptedSecrets {
    inner: Arc<dyn Store>,
    keys: Arc<RwLock<KeySet>>,
}

impl EncryptedSecrets {
    fn keys(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn opened(&self, mut kv: KeyValue) -> Result<KeyValue, StoreError> {
        if is_secret(&kv.key) && !kv.value.is_empty() {
            kv.value = self.keys().open(&kv.key, &kv.value)?;
        }
        Ok(kv)
    }

    fn opened_opt(&self, kv: Option<KeyValue>) -> Result<Option<KeyValue>, StoreError> {
        kv.map(|kv| self.opened(kv)).transpose()
    }
}

#[async_trait]
impl Store for EncryptedSecrets {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }

    async fn compact_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compact_revision().await
    }

    async fn get(&self, key: Bytes, revision: Revision) -> Result<GetResponse, StoreError> {
        let response = self.inner.get(key, revision).await?;
        Ok(GetResponse {
            kv: self.opened_opt(response.kv)?,
            revision: response.revision,
        })
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        let mut response = self.inner.range(request).await?;
        response.kvs = response
            .kvs
            .into_iter()
            .map(|kv| self.opened(kv))
            .collect::<Result<_, _>>()?;
        Ok(response)
    }

    async fn txn(&self, mut txn: Txn) -> Result<TxnResponse, StoreError> {
        {
            let keys = self.keys();
            for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
                if let TxnOp::Put { key, value } = op
                    && is_secret(key)
                {
                    *value = keys.seal(key, value)?;
                }
            }
        }
        let mut response = self.inner.txn(txn).await?;
        for result in &mut response.results {
            match result {
                TxnOpResult::Put { prev } | TxnOpResult::Delete { prev } => {
                    *prev = self.opened_opt(prev.take())?
                }
                TxnOpResult::Get { kv } => *kv = self.opened_opt(kv.take())?,
            }
        }
        Ok(response)
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream, StoreError> {
        let stream = self.inner.watch(request).await?;
        let keys = self.keys.clone();
        let open = move |kv: KeyValue| -> Result<KeyValue, StoreError> {
            let mut kv = kv;
            if is_secret(&kv.key) && !kv.value.is_empty() {
                kv.value = keys
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .open(&kv.key, &kv.value)?;
            }
            Ok(kv)
        };
        Ok(stream
            .map(move |event| {
                let mut event = event?;
                event.kv = open(event.kv)?;
                event.prev_kv = event.prev_kv.map(&open).transpose()?;
                Ok(event)
            })
            .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = embedded_store::EmbeddedStore::open(
            dir.path().join("db"),
            embedded_store::StoreOptions::default(),
        )
        .unwrap();
        (dir, Arc::new(store))
    }

    fn secret(name: &str) -> Bytes {
        Bytes::from(format!("/registry/core/secrets/default/{name}"))
    }

    #[tokio::test]
    async fn secrets_are_stored_encrypted_and_read_back_plain() {
        let (dir, raw) = store().await;
        let mut encryption =
            SecretsEncryption::load_or_create(&dir.path().join("cred/encryption-config.json"), true).unwrap();
        let store = encryption.wrap(raw.clone());
        store
            .put(secret("a"), Bytes::from_static(b"hunter2"))
            .await
            .unwrap();
        store
            .put(
                Bytes::from_static(b"/registry/core/configmaps/default/c"),
                Bytes::from_static(b"plain"),
            )
            .await
            .unwrap();
        let stored = raw.get(secret("a"), 0).await.unwrap().kv.unwrap();
        assert!(
            stored.value.starts_with(b"k8s:enc:aesgcm:v1:aesgcmkey-"),
            "{:?}",
            stored.value
        );
        assert!(!stored.value.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            store.get(secret("a"), 0).await.unwrap().kv.unwrap().value,
            Bytes::from_static(b"hunter2")
        );
        assert_eq!(
            raw.get(Bytes::from_static(b"/registry/core/configmaps/default/c"), 0)
                .await
                .unwrap()
                .kv
                .unwrap()
                .value,
            Bytes::from_static(b"plain")
        );
        // A value moved under another key does not decrypt (the storage key is authenticated).
        raw.put(secret("moved"), stored.value.clone()).await.unwrap();
        let error = store.get(secret("moved"), 0).await.unwrap_err().to_string();
        assert!(error.contains("authentication failed"), "{error}");
        // The configuration is kube-apiserver's format, and a restart reads the same key.
        let mut again =
            SecretsEncryption::load_or_create(&dir.path().join("cred/encryption-config.json"), true).unwrap();
        let store = again.wrap(raw.clone());
        assert_eq!(
            store.get(secret("a"), 0).await.unwrap().kv.unwrap().value,
            Bytes::from_static(b"hunter2")
        );
    }

    #[tokio::test]
    async fn rotation_rewrites_every_secret_with_the_new_key_only() {
        let (dir, raw) = store().await;
        let path = dir.path().join("config.json");
        // Secrets written before encryption was on are plaintext, and still read.
        raw.put(secret("old"), Bytes::from_static(b"before"))
            .await
            .unwrap();
        let mut encryption = SecretsEncryption::load_or_create(&path, true).unwrap();
        let store = encryption.wrap(raw.clone());
        store
            .put(secret("new"), Bytes::from_static(b"after"))
            .await
            .unwrap();
        let before = encryption.status(raw.as_ref()).await.unwrap();
        assert_eq!(before.secrets_by_key.get("identity"), Some(&1));
        let first_key = before.current_key.clone().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100)); // key names carry the second
        encryption.rotate(store.as_ref(), raw.as_ref()).await.unwrap();
        let after = encryption.status(raw.as_ref()).await.unwrap();
        let second_key = after.current_key.clone().unwrap();
        assert_ne!(first_key, second_key);
        assert_eq!(after.keys, vec![second_key.clone()]);
        assert_eq!(after.secrets_by_key, [(second_key, 2)].into_iter().collect());
        for (name, value) in [("old", "before"), ("new", "after")] {
            assert_eq!(
                store.get(secret(name), 0).await.unwrap().kv.unwrap().value,
                Bytes::from(value)
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&first_key), "{text}");
    }

    #[test]
    fn a_bad_configuration_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(
            &path,
            r#"{"kind": "EncryptionConfiguration", "resources": [{"resources": ["secrets"],
            "providers": [{"kms": {}}]}]}"#,
        )
        .unwrap();
        let error = SecretsEncryption::load_or_create(&path, true)
            .unwrap_err()
            .to_string();
        assert!(error.contains("only aesgcm and identity"), "{error}");
    }
}
