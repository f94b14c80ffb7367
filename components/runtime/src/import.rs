//! Air-gap imports: `docker save` tarballs (`manifest.json` with `RepoTags`) and OCI archives (`oci-layout`,
//! `index.json`, `blobs/`), plain or gzip/zstd-compressed, as `bonsai images import FILE` and the server's start
//! (every tarball in `<data-dir>/agent/images/`, as k3s does) read them. Blocking: call from a blocking thread.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::ImageError;
use crate::store::{ContentStore, Digest, ImageRecord, LayerRecord, hash_file};

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `busybox:1` → `docker.io/library/busybox:1`; names that are not references (a bare tag) are `None`.
fn normalise(name: &str) -> Option<String> {
    if !name.contains(':') && !name.contains('/') && !name.contains('@') {
        return None;
    }
    crate::image_name(name).ok()
}

/// Imports every image in the archive at `path`; returns their records.
pub fn import(store: &ContentStore, path: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let dir = store.ingest_path("import");
    let result = extract(path, &dir).and_then(|()| {
        if dir.join("manifest.json").is_file() {
            import_docker(store, &dir)
        } else if dir.join("index.json").is_file() {
            import_oci(store, &dir)
        } else {
            Err(ImageError::NotAnArchive(path.display().to_string()))
        }
    });
    let _ = crate::unpack::remove_tree(&dir);
    result
}

fn extract(archive: &Path, dir: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let file = std::fs::File::open(archive).map_err(io_at(archive))?;
    let reader = crate::unpack::decompressed_reader(file, archive)?;
    let mut tar = tar::Archive::new(reader);
    let bad = |e: std::io::Error| ImageError::NotAnArchive(format!("{}: {e}", archive.display()));
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.unpack_in(dir).map_err(bad)? {
            return Err(ImageError::PathEscape(format!(
                "{} in {}",
                entry.path().map_err(bad)?.display(),
                archive.display()
            )));
        }
    }
    Ok(())
}

/// A file of the archive named by the archive itself, kept inside it.
fn member(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    let relative = Path::new(name);
    if relative
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
    {
        return Err(ImageError::PathEscape(name.to_string()));
    }
    Ok(dir.join(relative))
}

/// Copies a file into the store as a blob, returning its digest (checked against `expected` when given).
fn store_file(store: &ContentStore, file: &Path, expected: Option<&Digest>) -> Result<Digest, ImageError> {
    let digest = hash_file(file)?;
    if let Some(expected) = expected
        && *expected != digest
    {
        return Err(ImageError::DigestMismatch {
            expected: expected.to_string(),
            actual: digest.to_string(),
        });
    }
    if !store.has_blob(&digest) {
        let ingest = store.ingest_path(digest.hex());
        std::fs::copy(file, &ingest).map_err(io_at(&ingest))?;
        store.commit_blob(&ingest, &digest)?;
    }
    Ok(digest)
}

fn unpack_all(store: &ContentStore, layers: &[LayerRecord]) -> Result<(), ImageError> {
    for layer in layers {
        if !store.has_layer(&layer.diff_id) {
            crate::unpack::unpack_layer(
                &store.blob_path(&layer.digest),
                &layer.diff_id,
                &store.layer_dir(&layer.diff_id),
            )?;
        }
    }
    Ok(())
}

fn diff_ids(config: &[u8]) -> Result<Vec<Digest>, ImageError> {
    let config: Value =
        serde_json::from_slice(config).map_err(|e| ImageError::BadManifest(format!("image config: {e}")))?;
    config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| ImageError::BadManifest("image config has no rootfs.diff_ids".into()))?
        .iter()
        .map(|d| Digest::parse(d.as_str().unwrap_or("")))
        .collect()
}

fn import_docker(store: &ContentStore, dir: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let manifest_path = dir.join("manifest.json");
    let entries: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).map_err(io_at(&manifest_path))?)
            .map_err(|e| ImageError::BadManifest(format!("manifest.json: {e}")))?;
    let mut records = Vec::new();
    for entry in entries.as_array().into_iter().flatten() {
        let config_file = member(dir, entry.get("Config").and_then(Value::as_str).unwrap_or(""))?;
        let config_digest = store_file(store, &config_file, None)?;
        let ids = diff_ids(&store.read_blob(&config_digest)?)?;
        let files = entry
            .get("Layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if files.len() != ids.len() {
            return Err(ImageError::BadManifest(format!(
                "{} layers but {} diff IDs",
                files.len(),
                ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (file, diff_id) in files.iter().zip(ids) {
            let file = member(dir, file.as_str().unwrap_or(""))?;
            let size = std::fs::metadata(&file).map_err(io_at(&file))?.len();
            let digest = store_file(store, &file, None)?;
            layers.push(LayerRecord {
                digest,
                diff_id,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                size,
            });
        }
        // `docker save` has no registry manifest: write the OCI manifest that describes the same content.
        let config_size = std::fs::metadata(&config_file)
            .map_err(io_at(&config_file))?
            .len();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_size},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size})).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Corrupt(e.to_string()))?;
        let manifest_digest = Digest::of(&manifest_bytes);
        store.write_blob(&manifest_digest, &manifest_bytes)?;
        unpack_all(store, &layers)?;
        let names: Vec<String> = entry
            .get("RepoTags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(normalise)
            .collect();
        for name in names {
            let record = ImageRecord {
                name,
                manifest_digest: manifest_digest.clone(),
                config_digest: config_digest.clone(),
                size: layers.iter().map(|l| l.size).sum(),
                layers: layers.clone(),
            };
            store.save_image(&record)?;
            records.push(record);
        }
    }
    Ok(records)
}

fn import_oci(store: &ContentStore, dir: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let blob = |digest: &Digest| dir.join("blobs/sha256").join(digest.hex());
    let read_json = |path: &Path| -> Result<Value, ImageError> {
        serde_json::from_slice(&std::fs::read(path).map_err(io_at(path))?)
            .map_err(|e| ImageError::BadManifest(format!("{}: {e}", path.display())))
    };
    let index = read_json(&dir.join("index.json"))?;
    let mut records = Vec::new();
    for entry in index
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let annotations = entry.get("annotations");
        let annotation = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
        let Some(name) = annotation("io.containerd.image.name")
            .or_else(|| annotation("org.opencontainers.image.ref.name"))
            .and_then(normalise)
        else {
            continue; // an unnamed image cannot be run by name
        };
        let mut digest = Digest::parse(entry.get("digest").and_then(Value::as_str).unwrap_or(""))?;
        let mut manifest = read_json(&blob(&digest))?;
        if manifest.get("manifests").is_some() {
            let (_, chosen) =
                crate::pull::choose_platform(&manifest).ok_or_else(|| ImageError::NoPlatform {
                    reference: name.clone(),
                    platform: format!("linux/{}", crate::pull::platform().0),
                })?;
            digest = chosen;
            manifest = read_json(&blob(&digest))?;
        }
        let manifest_digest = store_file(store, &blob(&digest), Some(&digest))?;
        let config_digest = Digest::parse(
            manifest
                .pointer("/config/digest")
                .and_then(Value::as_str)
                .unwrap_or(""),
        )?;
        store_file(store, &blob(&config_digest), Some(&config_digest))?;
        let ids = diff_ids(&store.read_blob(&config_digest)?)?;
        let descriptors = manifest
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if descriptors.len() != ids.len() {
            return Err(ImageError::BadManifest(format!(
                "{} layers but {} diff IDs",
                descriptors.len(),
                ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (d, diff_id) in descriptors.iter().zip(ids) {
            let layer_digest = Digest::parse(d.get("digest").and_then(Value::as_str).unwrap_or(""))?;
            store_file(store, &blob(&layer_digest), Some(&layer_digest))?;
            layers.push(LayerRecord {
                digest: layer_digest,
                diff_id,
                media_type: d
                    .get("mediaType")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                size: d.get("size").and_then(Value::as_u64).unwrap_or(0),
            });
        }
        unpack_all(store, &layers)?;
        let record = ImageRecord {
            name,
            manifest_digest,
            config_digest,
            size: layers.iter().map(|l| l.size).sum(),
            layers,
        };
        store.save_image(&record)?;
        records.push(record);
    }
    Ok(records)
}

/// Imports every `*.tar`, `*.tar.gz`, `*.tgz` and `*.tar.zst` in `dir` (k3s's `agent/images/`), returning how many
/// images each file held; a file that fails is reported and skipped.
pub fn import_directory(store: &ContentStore, dir: &Path) -> Vec<(PathBuf, Result<usize, ImageError>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            [".tar", ".tar.gz", ".tgz", ".tar.zst"]
                .iter()
                .any(|ext| name.ends_with(ext))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let r = import(store, &f).map(|r| r.len());
            (f, r)
        })
        .collect()
}
