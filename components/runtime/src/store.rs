//! The content store: blobs by digest, layers unpacked once each, and the image records that name them.
//!
//! ```text
//! <root>/blobs/sha256/<hex>     manifests, configs and compressed layers, exactly as their digest says
//! <root>/ingest/                downloads and imports in progress (removed at open: never trusted)
//! <root>/layers/sha256/<hex>    one layer unpacked, named by its diff ID (the digest of its uncompressed tar)
//! <root>/images/<hex>.json      one record per image name (hex: SHA-256 of the name)
//! ```
//!
//! **Invariant:** a path under `blobs/` or `layers/` exists only once its content is complete and verified: both
//! are written under a temporary name and renamed into place, so a crash never leaves a half-written blob or a
//! half-unpacked layer that looks done.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::ImageError;

/// A `sha256:<64 hex>` digest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(text: &str) -> Result<Digest, ImageError> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| ImageError::BadDigest(text.to_string()))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ImageError::BadDigest(text.to_string()));
        }
        Ok(Digest(hex.to_string()))
    }

    pub fn of(bytes: &[u8]) -> Digest {
        Digest(hex::encode(Sha256::digest(bytes)))
    }

    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest(hex::encode(hasher.finalize()))
    }

    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = ImageError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// One layer of an image: its blob, and the diff ID its unpacked directory is named by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A named image, ready to run: every blob and unpacked layer it names is in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The full reference: `docker.io/library/busybox:1.36`, or `…@sha256:…` when pulled by digest.
    pub name: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub layers: Vec<LayerRecord>,
    /// Sum of the layers' compressed sizes.
    pub size: u64,
}

#[derive(Debug)]
pub struct ContentStore {
    root: PathBuf,
}

/// What an image garbage collection removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub blobs: usize,
    pub layers: usize,
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ContentStore {
    /// Opens (creating) the store at `root`, discarding whatever an interrupted download or unpack left.
    pub fn open(root: impl AsRef<Path>) -> Result<ContentStore, ImageError> {
        let root = root.as_ref().to_path_buf();
        for dir in ["blobs/sha256", "layers/sha256", "images"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(io_at(&path))?;
        }
        let ingest = root.join("ingest");
        if ingest.exists() {
            std::fs::remove_dir_all(&ingest).map_err(io_at(&ingest))?;
        }
        std::fs::create_dir_all(&ingest).map_err(io_at(&ingest))?;
        let layers = root.join("layers/sha256");
        for entry in std::fs::read_dir(&layers).map_err(io_at(&layers))? {
            let path = entry.map_err(io_at(&layers))?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
            {
                crate::unpack::remove_tree(&path)?;
            }
        }
        Ok(ContentStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A fresh path under `ingest/` for a download or import in progress.
    pub fn ingest_path(&self, hint: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root
            .join("ingest")
            .join(format!("{hint}-{}-{n}", std::process::id()))
    }

    /// Moves a fully written file under `ingest/` into place as the blob `digest`, after checking that its
    /// content has that digest.
    pub fn commit_blob(&self, ingested: &Path, digest: &Digest) -> Result<(), ImageError> {
        let actual = hash_file(ingested)?;
        if actual != *digest {
            let _ = std::fs::remove_file(ingested);
            return Err(ImageError::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let target = self.blob_path(digest);
        std::fs::rename(ingested, &target).map_err(io_at(&target))
    }

    /// Stores `bytes` as the blob of digest `digest` (verified).
    pub fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let ingest = self.ingest_path(digest.hex());
        let mut file = std::fs::File::create(&ingest).map_err(io_at(&ingest))?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(io_at(&ingest))?;
        self.commit_blob(&ingest, digest)
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(io_at(&path))
    }

    /// The directory a layer is unpacked in; it exists only once the layer is complete.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", Digest::of(name.as_bytes()).hex()))
    }

    pub fn save_image(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let path = self.record_path(&record.name);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(record).map_err(|e| ImageError::Corrupt(e.to_string()))?;
        std::fs::write(&tmp, json).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_at(&path))
    }

    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let path = self.record_path(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ImageError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::Io { path, source: e }),
        }
    }

    /// Every image record, by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
            let path = entry.map_err(io_at(&dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).map_err(io_at(&path))?;
                let record: ImageRecord = serde_json::from_slice(&bytes)
                    .map_err(|e| ImageError::Corrupt(format!("{}: {e}", path.display())))?;
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Forgets the image name; its blobs and layers stay until `collect_garbage`.
    pub fn remove_image(&self, name: &str) -> Result<bool, ImageError> {
        let path = self.record_path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ImageError::Io { path, source: e }),
        }
    }

    /// Removes every blob and layer no image names (the node agent's image GC calls this under disk pressure).
    /// `in_use` are further layers to keep (those of running containers).
    pub fn collect_garbage(&self, in_use: &BTreeSet<Digest>) -> Result<Collected, ImageError> {
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = in_use.clone();
        for image in self.images()? {
            keep_blobs.insert(image.manifest_digest.clone());
            keep_blobs.insert(image.config_digest.clone());
            for layer in image.layers {
                keep_blobs.insert(layer.digest);
                keep_layers.insert(layer.diff_id);
            }
        }
        let mut collected = Collected::default();
        for (dir, keep, count) in [
            ("blobs/sha256", &keep_blobs, &mut collected.blobs),
            ("layers/sha256", &keep_layers, &mut collected.layers),
        ] {
            let dir = self.root.join(dir);
            for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
                let path = entry.map_err(io_at(&dir))?.path();
                let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else {
                    continue;
                };
                let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else {
                    continue;
                };
                if keep.contains(&digest) {
                    continue;
                }
                if path.is_dir() {
                    crate::unpack::remove_tree(&path)?;
                } else {
                    std::fs::remove_file(&path).map_err(io_at(&path))?;
                }
                *count += 1;
            }
        }
        Ok(collected)
    }
}

/// The SHA-256 of a file's content.
pub fn hash_file(path: &Path) -> Result<Digest, ImageError> {
    let mut file = std::fs::File::open(path).map_err(io_at(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_at(path))?;
    Ok(Digest::from_hasher(hasher))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked() {
        let d = Digest::of(b"hello");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        for bad in [
            "",
            "sha256:",
            "sha512:abcd",
            "sha256:XYZ",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blobs_are_verified_and_records_round_trip_and_garbage_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"content");
        assert!(matches!(
            store.write_blob(&d, b"other"),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&d));
        store.write_blob(&d, b"content").unwrap();
        assert_eq!(store.read_blob(&d).unwrap(), b"content");
        let record = ImageRecord {
            name: "docker.io/library/x:1".into(),
            manifest_digest: d.clone(),
            config_digest: d.clone(),
            layers: vec![],
            size: 0,
        };
        store.save_image(&record).unwrap();
        assert_eq!(
            store.image("docker.io/library/x:1").unwrap(),
            Some(record.clone())
        );
        let orphan = Digest::of(b"orphan");
        store.write_blob(&orphan, b"orphan").unwrap();
        std::fs::create_dir_all(store.layer_dir(&orphan)).unwrap();
        assert_eq!(
            store.collect_garbage(&BTreeSet::new()).unwrap(),
            Collected { blobs: 1, layers: 1 }
        );
        assert!(store.has_blob(&d));
        assert!(store.remove_image(&record.name).unwrap());
        assert_eq!(
            store.collect_garbage(&BTreeSet::new()).unwrap(),
            Collected { blobs: 1, layers: 0 }
        );
        // Leftovers of an interrupted unpack are gone at the next open.
        let tmp = store
            .root()
            .join("layers/sha256")
            .join(format!("{}.tmp-1", d.hex()));
        std::fs::create_dir_all(tmp.join("half")).unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        assert!(!tmp.exists() && store.images().unwrap().is_empty());
    }
}
