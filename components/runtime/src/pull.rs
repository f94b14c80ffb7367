//! Pulling an image: resolve the reference through the registry configuration, fetch the manifest (choosing this
//! machine's platform from an index), the config and every layer blob with `oci-client` (streamed to disk, each
//! digest verified), unpack each layer once, and record the image.
//!
//! Concurrent pulls share work: one lock per blob digest and per layer, so the second puller of a blob waits for
//! the first and then finds it in the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::ImageError;
use crate::registries::{Endpoint, RegistriesConfig};
use crate::store::{ContentStore, Digest, ImageRecord, LayerRecord};
use oci_client::secrets::RegistryAuth;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_TYPES: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Told about a pull as it goes (the CLI draws progress bars).
pub trait Progress: Send + Sync {
    fn layer(&self, _digest: &str, _done: u64, _total: u64) {}
}

/// No progress reporting.
#[derive(Debug)]
pub struct Quiet;
impl Progress for Quiet {}

/// This machine's platform as OCI names it: (architecture, variant).
pub fn platform() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        other => (other, None),
    }
}

/// The manifest of an index that fits this machine: linux, this architecture, this variant if the index names
/// variants (arm64 entries often do not).
pub fn choose_platform(index: &Value) -> Option<(String, Digest)> {
    let (arch, variant) = platform();
    let entries = index.get("manifests")?.as_array()?;
    let fits = |e: &&Value, strict: bool| {
        let p = e.get("platform");
        let field = |k: &str| p.and_then(|p| p.get(k)).and_then(Value::as_str);
        field("os") == Some("linux")
            && field("architecture") == Some(arch)
            && (!strict || variant.is_none() || field("variant").is_none_or(|v| Some(v) == variant))
    };
    let chosen = entries
        .iter()
        .find(|e| fits(e, true))
        .or_else(|| entries.iter().find(|e| fits(e, false)))?;
    let digest = Digest::parse(chosen.get("digest")?.as_str()?).ok()?;
    let media_type = chosen
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or(OCI_MANIFEST)
        .to_string();
    Some((media_type, digest))
}

/// A user name and password for one registry (from a docker config: `auths` keyed by host or URL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// As the docker config keys it: `127.0.0.1:5000`, `https://index.docker.io/v1/`, `registry.example`.
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl Credential {
    /// Whether this credential is for `host` (scheme and path of a URL key ignored; Docker Hub's v1 URL is
    /// `docker.io`'s).
    pub fn matches(&self, host: &str) -> bool {
        let key = self
            .registry
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let key = key.split('/').next().unwrap_or(key);
        let normal = |h: &str| match h {
            "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
            other => other.to_string(),
        };
        normal(key) == normal(host)
    }
}

#[derive(Debug)]
pub struct Puller {
    store: Arc<ContentStore>,
    registries: RegistriesConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn registry_error(reference: &Reference, e: oci_client::errors::OciDistributionError) -> ImageError {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::ImageManifestNotFoundError(_) => ImageError::NotFound(reference.whole()),
        E::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| format!("{:?}", e.code).contains("Unknown")) =>
        {
            ImageError::NotFound(reference.whole())
        }
        E::AuthenticationFailure(m) | E::UnauthorizedError { url: m } => {
            ImageError::Unauthorized(format!("{}: {m}", reference.resolve_registry()))
        }
        other => ImageError::Registry {
            registry: reference.resolve_registry().to_string(),
            message: other.to_string(),
        },
    }
}

fn client_for(endpoint: &Endpoint) -> Client {
    crate::install_crypto_provider();
    let mut config = ClientConfig {
        protocol: if endpoint.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: endpoint.insecure_skip_verify,
        ..ClientConfig::default()
    };
    if let Some(pem) = &endpoint.ca_pem {
        config.extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: pem.clone(),
        });
    }
    Client::new(config)
}

impl Puller {
    pub fn new(store: Arc<ContentStore>, registries: RegistriesConfig) -> Puller {
        Puller {
            store,
            registries,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Pulls `reference` (`busybox`, `127.0.0.1:5000/x/y:tag`, `…@sha256:…`) and records it.
    pub async fn pull(&self, reference: &str, progress: &dyn Progress) -> Result<ImageRecord, ImageError> {
        self.pull_with(reference, progress, &[]).await
    }

    /// `pull`, trying each of `credentials` for its registry first (a pod's `imagePullSecrets`, as the kubelet
    /// tries them in order before the node's own configuration).
    pub async fn pull_with(
        &self,
        reference: &str,
        progress: &dyn Progress,
        credentials: &[Credential],
    ) -> Result<ImageRecord, ImageError> {
        let parsed: Reference = reference
            .parse()
            .map_err(|e| ImageError::BadReference(format!("{reference}: {e}")))?;
        let mut endpoints = Vec::new();
        for endpoint in self.registries.endpoints(&parsed)? {
            let host = endpoint.reference.resolve_registry().to_string();
            for credential in credentials.iter().filter(|c| c.matches(&host)) {
                endpoints.push(Endpoint {
                    auth: RegistryAuth::Basic(credential.username.clone(), credential.password.clone()),
                    ..endpoint.clone()
                });
            }
            endpoints.push(endpoint);
        }
        let mut last_error = None;
        for endpoint in &endpoints {
            match self.pull_from(&parsed, endpoint, progress).await {
                Ok(record) => return Ok(record),
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint.reference.whole(), error = %e, "pull from endpoint failed");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ImageError::NotFound(parsed.whole())))
    }

    async fn manifest(
        &self,
        client: &Client,
        endpoint: &Endpoint,
        reference: &Reference,
    ) -> Result<(Vec<u8>, Digest), ImageError> {
        let (bytes, digest) = client
            .pull_manifest_raw(reference, &endpoint.auth, MANIFEST_TYPES)
            .await
            .map_err(|e| registry_error(reference, e))?;
        let actual = Digest::of(&bytes);
        if let Some(wanted) = reference.digest() {
            let wanted = Digest::parse(wanted)?;
            if actual != wanted {
                return Err(ImageError::DigestMismatch {
                    expected: wanted.to_string(),
                    actual: actual.to_string(),
                });
            }
        } else if Digest::parse(&digest).is_ok_and(|d| d != actual) {
            return Err(ImageError::DigestMismatch {
                expected: digest,
                actual: actual.to_string(),
            });
        }
        Ok((bytes.to_vec(), actual))
    }

    async fn pull_from(
        &self,
        original: &Reference,
        endpoint: &Endpoint,
        progress: &dyn Progress,
    ) -> Result<ImageRecord, ImageError> {
        let client = client_for(endpoint);
        let reference = &endpoint.reference;
        let (mut bytes, mut manifest_digest) = self.manifest(&client, endpoint, reference).await?;
        let mut manifest: Value =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::BadManifest(e.to_string()))?;
        if manifest.get("manifests").is_some() {
            self.store.write_blob(&manifest_digest, &bytes)?;
            let (_, chosen) = choose_platform(&manifest).ok_or_else(|| {
                let (arch, _) = platform();
                ImageError::NoPlatform {
                    reference: original.whole(),
                    platform: format!("linux/{arch}"),
                }
            })?;
            let by_digest = Reference::with_digest(
                reference.registry().to_string(),
                reference.repository().to_string(),
                chosen.to_string(),
            );
            (bytes, manifest_digest) = self.manifest(&client, endpoint, &by_digest).await?;
            manifest = serde_json::from_slice(&bytes).map_err(|e| ImageError::BadManifest(e.to_string()))?;
        }
        let descriptor = |v: &Value| -> Result<(Digest, String, u64), ImageError> {
            let digest = Digest::parse(v.get("digest").and_then(Value::as_str).unwrap_or(""))?;
            let media_type = v
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let size = v.get("size").and_then(Value::as_u64).unwrap_or(0);
            Ok((digest, media_type, size))
        };
        let config = manifest
            .get("config")
            .ok_or_else(|| ImageError::BadManifest("no config".into()))?;
        let (config_digest, _, config_size) = descriptor(config)?;
        self.fetch_blob(&client, endpoint, &config_digest, config_size, progress)
            .await?;
        let config: Value = serde_json::from_slice(&self.store.read_blob(&config_digest)?)
            .map_err(|e| ImageError::BadManifest(format!("image config: {e}")))?;
        let diff_ids: Vec<Digest> = config
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .ok_or_else(|| ImageError::BadManifest("image config has no rootfs.diff_ids".into()))?
            .iter()
            .map(|d| Digest::parse(d.as_str().unwrap_or("")))
            .collect::<Result<_, _>>()?;
        let layers = manifest
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if layers.len() != diff_ids.len() {
            return Err(ImageError::BadManifest(format!(
                "{} layers but {} diff IDs in the config",
                layers.len(),
                diff_ids.len()
            )));
        }
        let mut records = Vec::new();
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let (digest, media_type, size) = descriptor(layer)?;
            if !self.store.has_layer(&diff_id) {
                self.fetch_blob(&client, endpoint, &digest, size, progress)
                    .await?;
                self.unpack(&digest, &diff_id).await?;
            }
            records.push(LayerRecord {
                digest,
                diff_id,
                media_type,
                size,
            });
        }
        self.store.write_blob(&manifest_digest, &bytes)?;
        let name = crate::image_name(&original.whole())?;
        let record = ImageRecord {
            name,
            manifest_digest,
            config_digest,
            size: records.iter().map(|l| l.size).sum(),
            layers: records,
        };
        self.store.save_image(&record)?;
        Ok(record)
    }

    /// Unpacks a layer blob into the store, once, however many pulls want it.
    pub async fn unpack(&self, digest: &Digest, diff_id: &Digest) -> Result<(), ImageError> {
        let lock = self.lock(&format!("layer:{diff_id}"));
        let _held = lock.lock().await;
        if self.store.has_layer(diff_id) {
            return Ok(());
        }
        let blob = self.store.blob_path(digest);
        let target = self.store.layer_dir(diff_id);
        let diff_id = diff_id.clone();
        tokio::task::spawn_blocking(move || crate::unpack::unpack_layer(&blob, &diff_id, &target))
            .await
            .map_err(|e| ImageError::Corrupt(format!("unpack task: {e}")))?
    }

    async fn fetch_blob(
        &self,
        client: &Client,
        endpoint: &Endpoint,
        digest: &Digest,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<(), ImageError> {
        let lock = self.lock(&format!("blob:{digest}"));
        let _held = lock.lock().await;
        if self.store.has_blob(digest) {
            progress.layer(&digest.to_string(), size, size);
            return Ok(());
        }
        let reference = &endpoint.reference;
        let wanted = digest.to_string();
        let mut stream = client
            .pull_blob_stream(reference, wanted.as_str())
            .await
            .map_err(|e| registry_error(reference, e))?;
        let path = self.store.ingest_path(digest.hex());
        let io = |e: std::io::Error| ImageError::Io {
            path: path.clone(),
            source: e,
        };
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| ImageError::Registry {
                registry: reference.resolve_registry().to_string(),
                message: format!("reading {digest}: {e}"),
            })?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
            done += chunk.len() as u64;
            progress.layer(&wanted, done, size);
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        let actual = Digest::from_hasher(hasher);
        if actual != *digest {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ImageError::DigestMismatch {
                expected: wanted,
                actual: actual.to_string(),
            });
        }
        let target = self.store.blob_path(digest);
        tokio::fs::rename(&path, &target)
            .await
            .map_err(|e| ImageError::Io {
                path: target.clone(),
                source: e,
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn credentials_match_their_registry_as_docker_configs_key_them() {
        let credential = |registry: &str| Credential {
            registry: registry.into(),
            username: "u".into(),
            password: "p".into(),
        };
        assert!(credential("127.0.0.1:5000").matches("127.0.0.1:5000"));
        assert!(credential("https://127.0.0.1:5000/v2/").matches("127.0.0.1:5000"));
        assert!(credential("https://index.docker.io/v1/").matches("docker.io"));
        assert!(!credential("127.0.0.1:5000").matches("127.0.0.1:5001"));
    }

    #[test]
    fn the_platform_is_chosen_from_an_index() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = json!({"manifests": [
            {"digest": d('a'), "platform": {"os": "windows", "architecture": "amd64"}},
            {"digest": d('b'), "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
            {"digest": d('c'), "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": d('e'), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": d('f'), "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        let (_, chosen) = choose_platform(&index).unwrap();
        let want = match platform().0 {
            "amd64" => 'f',
            "arm64" => 'e',
            "arm" => 'c',
            _ => return,
        };
        assert_eq!(chosen.to_string(), d(want));
        assert!(choose_platform(&json!({"manifests": [{"digest": d('a'), "platform": {"os": "windows", "architecture": "amd64"}}]})).is_none());
    }
}
