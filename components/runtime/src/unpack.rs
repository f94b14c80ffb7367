//! Unpacking one layer into its own directory, in the form overlayfs reads: OCI whiteouts (`.wh.<name>`) become
//! overlay whiteouts (a 0/0 character device named `<name>`), and opaque markers (`.wh..wh..opq`) become the
//! `trusted.overlay.opaque=y` attribute on their directory. The uncompressed stream's digest must equal the
//! layer's diff ID. Nothing is written outside the layer's directory: paths with `..` are refused, and `tar`'s
//! `unpack_in` refuses entries that would land outside through a symlink.

use std::io::Read;
#[cfg(test)]
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::ImageError;
use crate::store::Digest;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a directory tree (a layer, a failed unpack).
pub fn remove_tree(path: &Path) -> Result<(), ImageError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The compression of a layer blob or archive, from its first bytes (media types lie: `docker save` layers are
/// plain tar whatever their name).
pub fn decompressed_reader(mut file: std::fs::File, path: &Path) -> Result<Box<dyn Read>, ImageError> {
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(io_at(path))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let whole = head.chain(file);
    Ok(if magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(whole))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(whole).map_err(io_at(path))?)
    } else {
        Box::new(whole)
    })
}

/// The entry's path inside the layer, or an error when it would leave it.
fn inside(path: &Path) -> Result<PathBuf, ImageError> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImageError::PathEscape(path.display().to_string()));
            }
        }
    }
    Ok(out)
}

/// Unpacks the layer blob at `blob` into `target` (which must not exist yet), checking its diff ID.
pub fn unpack_layer(blob: &Path, diff_id: &Digest, target: &Path) -> Result<(), ImageError> {
    let file = std::fs::File::open(blob).map_err(io_at(blob))?;
    let mut reader = Hashing {
        inner: decompressed_reader(file, blob)?,
        hasher: Sha256::new(),
    };
    let tmp = target.with_file_name(format!(
        "{}.tmp-{}",
        target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        std::process::id()
    ));
    remove_tree(&tmp)?;
    std::fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
    let result = unpack_into(&mut reader, &tmp, blob);
    let result = result.and_then(|()| {
        // The tar reader may stop before the stream's end (padding): the digest covers all of it.
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(io_at(blob))?;
        let actual = Digest::from_hasher(std::mem::take(&mut reader.hasher));
        if actual != *diff_id {
            return Err(ImageError::DigestMismatch {
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    });
    if let Err(e) = result {
        remove_tree(&tmp)?;
        return Err(e);
    }
    match std::fs::rename(&tmp, target) {
        Ok(()) => Ok(()),
        // Someone else finished the same layer first.
        Err(_) if target.is_dir() => remove_tree(&tmp),
        Err(e) => {
            remove_tree(&tmp)?;
            Err(ImageError::Io {
                path: target.to_path_buf(),
                source: e,
            })
        }
    }
}

fn unpack_into(reader: &mut impl Read, dir: &Path, blob: &Path) -> Result<(), ImageError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let bad = |e: std::io::Error| {
        let cause = std::error::Error::source(&e)
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        ImageError::BadLayer(format!("{}: {e}{cause}", blob.display()))
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = inside(&entry.path().map_err(bad)?)?;
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else {
            continue;
        };
        let parent = dir.join(path.parent().unwrap_or(Path::new("")));
        if name == OPAQUE {
            std::fs::create_dir_all(&parent).map_err(io_at(&parent))?;
            xattr::set(&parent, "trusted.overlay.opaque", b"y").map_err(io_at(&parent))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            std::fs::create_dir_all(&parent).map_err(io_at(&parent))?;
            let whiteout = parent.join(hidden);
            remove_tree(&whiteout).or_else(|_| std::fs::remove_file(&whiteout).map_err(io_at(&whiteout)))?;
            nix::sys::stat::mknod(
                &whiteout,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|e| ImageError::Io {
                path: whiteout.clone(),
                source: e.into(),
            })?;
            continue;
        }
        if !entry.unpack_in(dir).map_err(bad)? {
            return Err(ImageError::PathEscape(path.display().to_string()));
        }
    }
    Ok(())
}

/// Writes a tar stream (for tests): `(path, contents)` files and `path/` directories.
#[cfg(test)]
pub(crate) fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if let Some(dir) = path.strip_suffix('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            let _ = builder.append_data(&mut header, dir, std::io::empty());
        } else {
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            let _ = builder.append_data(&mut header, path, *data);
        }
    }
    builder.into_inner().unwrap_or_default()
}

/// gzip-compresses bytes (for tests).
#[cfg(test)]
pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;

    use super::*;

    fn layer(dir: &Path, name: &str, tar: &[u8], compress: bool) -> (PathBuf, Digest) {
        let blob = dir.join(name);
        std::fs::write(&blob, if compress { gzip(tar) } else { tar.to_vec() }).unwrap();
        (blob, Digest::of(tar))
    }

    #[test]
    fn files_whiteouts_and_opaque_directories() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("etc/", b""),
            ("etc/hostname", b"box\n"),
            ("etc/.wh.passwd", b""),
            ("var/cache/", b""),
            ("var/cache/.wh..wh..opq", b""),
            ("./bin/tool", b"#!/bin/sh\n"),
        ]);
        let (blob, diff_id) = layer(dir.path(), "l1", &tar, true);
        let target = dir.path().join("out");
        unpack_layer(&blob, &diff_id, &target).unwrap();
        assert_eq!(std::fs::read(target.join("etc/hostname")).unwrap(), b"box\n");
        assert_eq!(std::fs::read(target.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
        let whiteout = std::fs::symlink_metadata(target.join("etc/passwd")).unwrap();
        assert!(
            whiteout.file_type().is_char_device(),
            "a whiteout is a 0/0 character device"
        );
        assert_eq!(
            xattr::get(target.join("var/cache"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        assert!(!target.join("etc/.wh.passwd").exists() && !target.join("var/cache/.wh..wh..opq").exists());
    }

    #[test]
    fn wrong_diff_ids_and_escaping_paths_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("a", b"1")]);
        let (blob, _) = layer(dir.path(), "l1", &tar, false);
        let target = dir.path().join("out");
        let wrong = Digest::of(b"something else");
        assert!(matches!(
            unpack_layer(&blob, &wrong, &target),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(!target.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary directory left"
        );

        // A path with `..` (written raw: tar's builder refuses to make one).
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        {
            let name = b"../escaped";
            let raw = header.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name);
        }
        header.set_cksum();
        let mut evil = Vec::new();
        evil.extend_from_slice(header.as_bytes());
        evil.extend_from_slice(&[b'x'; 512]);
        evil.extend_from_slice(&[0u8; 1024]);
        let (blob, diff_id) = layer(dir.path(), "evil", &evil, false);
        assert!(matches!(
            unpack_layer(&blob, &diff_id, &target),
            Err(ImageError::PathEscape(_))
        ));
        assert!(!dir.path().join("escaped").exists() && !target.exists());

        // A symlink out of the layer, then a file written through it.
        let mut builder = tar::Builder::new(Vec::new());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_uid(0);
        link.set_gid(0);
        link.set_mtime(0);
        builder.append_link(&mut link, "out", dir.path()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(1);
        file.set_mode(0o644);
        file.set_uid(0);
        file.set_gid(0);
        file.set_mtime(0);
        builder.append_data(&mut file, "out/pwned", &b"x"[..]).unwrap();
        let through = builder.into_inner().unwrap();
        let (blob, diff_id) = layer(dir.path(), "through", &through, false);
        assert!(unpack_layer(&blob, &diff_id, &target).is_err());
        assert!(!dir.path().join("pwned").exists());
    }
}
