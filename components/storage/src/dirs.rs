//! The volumes' directories on this node: made as local-path-provisioner's setup script makes them
//! (`mkdir -m 0777 -p`), removed as its teardown does (`rm -rf`), but only ever inside `<data-dir>/storage`.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path};

use crate::StorageError;

/// The storage directory itself: only root reaches the volumes through it (containers get their own directory
/// bind-mounted, so they never walk this one), and other users of the host cannot read claims' data.
const STORAGE_MODE: u32 = 0o700;
/// A volume's directory: writable by whatever user the pod runs as, as local-path-provisioner makes it.
const VOLUME_MODE: u32 = 0o777;

/// True when `path` is a directory directly inside `storage`, named plainly (no `..`, no `.`): the only paths
/// this provisioner creates or removes, whatever a PersistentVolume says.
pub fn is_volume_dir(storage: &Path, path: &Path) -> bool {
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    plain && path.is_absolute() && path.parent() == Some(storage) && path.file_name().is_some()
}

/// Makes `path` (inside `storage`), mode 0777; an existing directory is kept, with its contents, and given that
/// mode again.
pub fn create(storage: &Path, path: &Path) -> Result<(), StorageError> {
    let failed = |source: io::Error| StorageError::Directory {
        path: path.to_path_buf(),
        source,
    };
    if !is_volume_dir(storage, path) {
        return Err(StorageError::OutsideStorage {
            path: path.to_path_buf(),
            storage: storage.to_path_buf(),
        });
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(STORAGE_MODE)
        .create(storage)
        .map_err(|source| StorageError::Directory {
            path: storage.to_path_buf(),
            source,
        })?;
    match std::fs::DirBuilder::new().mode(VOLUME_MODE).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Made by an earlier attempt: fine, if it is a directory and not something put in its place.
            let meta = std::fs::symlink_metadata(path).map_err(failed)?;
            if !meta.is_dir() {
                return Err(failed(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                )));
            }
        }
        Err(e) => return Err(failed(e)),
    }
    // The umask narrowed the mode mkdir was given; `mkdir -m` sets it exactly, so this does too.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(VOLUME_MODE)).map_err(failed)
}

/// Removes `path` (inside `storage`) and everything in it; a path already gone is removed. Symbolic links in it
/// are removed, never followed (`remove_dir_all`).
pub fn remove(storage: &Path, path: &Path) -> Result<(), StorageError> {
    if !is_volume_dir(storage, path) {
        return Err(StorageError::OutsideStorage {
            path: path.to_path_buf(),
            storage: storage.to_path_buf(),
        });
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Ok(meta) if !meta.is_dir() => std::fs::remove_file(path),
        _ => std::fs::remove_dir_all(path),
    }
    .or_else(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    })
    .map_err(|source| StorageError::Directory {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn only_plain_children_of_the_storage_directory_are_volume_directories() {
        let storage = Path::new("/var/lib/bonsai/storage");
        assert!(is_volume_dir(storage, &storage.join("pvc-1_ns_c")));
        assert!(!is_volume_dir(storage, storage));
        assert!(!is_volume_dir(storage, Path::new("/")));
        assert!(!is_volume_dir(storage, Path::new("/var/lib/bonsai/storage/a/b")));
        assert!(!is_volume_dir(
            storage,
            Path::new("/var/lib/bonsai/storage/../etc")
        ));
        assert!(!is_volume_dir(storage, Path::new("/var/lib/bonsai/other/pvc-1")));
        assert!(!is_volume_dir(storage, Path::new("storage/pvc-1")));
    }

    #[test]
    fn directories_are_made_world_writable_again_and_removed_without_following_links() {
        let root = tempfile::tempdir().unwrap();
        let storage = root.path().join("storage");
        let volume = storage.join("pvc-1_ns_c");
        create(&storage, &volume).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&volume), 0o777);
        assert_eq!(mode(&storage), 0o700);
        std::fs::write(volume.join("data"), "kept").unwrap();
        // Again (a restart, a retry): the contents stay.
        create(&storage, &volume).unwrap();
        assert_eq!(std::fs::read_to_string(volume.join("data")).unwrap(), "kept");

        // A link inside the volume pointing out of it: removal takes the link, not what it points at.
        let outside = root.path().join("precious");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, volume.join("link")).unwrap();
        remove(&storage, &volume).unwrap();
        assert!(!volume.exists());
        assert!(outside.join("file").exists());
        // Gone already is fine.
        remove(&storage, &volume).unwrap();

        // Paths a volume may name but this provisioner never made are refused, and left alone.
        assert!(matches!(
            remove(&storage, &outside),
            Err(StorageError::OutsideStorage { .. })
        ));
        assert!(outside.join("file").exists());
        assert!(create(&storage, &root.path().join("elsewhere")).is_err());
        // A file where the directory should be is an error, not a volume.
        std::fs::write(storage.join("pvc-2_ns_c"), "").unwrap();
        assert!(create(&storage, &storage.join("pvc-2_ns_c")).is_err());
    }
}
