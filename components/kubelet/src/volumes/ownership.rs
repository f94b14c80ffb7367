//! fsGroup ownership (`pkg/volume/volume_linux.go`'s `SetVolumeOwnership`): every file and directory of a volume
//! is given the pod's fsGroup as its group, with group read (and write, for a writable volume); directories get
//! group search and the setgid bit, so that files made later inherit the group.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::VolumeError;

const READ_WRITE_MASK: u32 = 0o660;
const READ_ONLY_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// Changes ownership of everything under `dir` (children before their directory, `walkDeep`'s order), without
/// following symlinks. A failed chown or chmod of one file is logged and the walk goes on, as in Kubernetes; a
/// directory that cannot be read fails it. Nothing is done without an fsGroup.
pub(crate) fn set_volume_ownership(
    dir: &Path,
    fs_group: Option<u32>,
    read_only: bool,
) -> Result<(), VolumeError> {
    let Some(group) = fs_group else {
        return Ok(());
    };
    walk_deep(dir, &|path, metadata| {
        change_file_permission(path, group, read_only, metadata)
    })
}

fn walk_deep(path: &Path, visit: &dyn Fn(&Path, &std::fs::Metadata)) -> Result<(), VolumeError> {
    let metadata = std::fs::symlink_metadata(path).map_err(|error| VolumeError::io(path, error))?;
    if metadata.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|error| VolumeError::io(path, error))?;
        for entry in entries {
            let entry = entry.map_err(|error| VolumeError::io(path, error))?;
            walk_deep(&entry.path(), visit)?;
        }
    }
    visit(path, &metadata);
    Ok(())
}

/// `changeFilePermission`.
fn change_file_permission(path: &Path, group: u32, read_only: bool, metadata: &std::fs::Metadata) {
    if let Err(error) = std::os::unix::fs::lchown(path, None, Some(group)) {
        tracing::warn!(path = %path.display(), %error, "lchown for fsGroup failed");
    }
    // A symlink's mode means nothing, and chmod would go through it to its target.
    if metadata.file_type().is_symlink() {
        return;
    }
    let mut mask = if read_only {
        READ_ONLY_MASK
    } else {
        READ_WRITE_MASK
    };
    if metadata.is_dir() {
        mask |= SETGID | EXEC_MASK;
    }
    let mode = (metadata.permissions().mode() & 0o7777) | mask;
    if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        tracing::warn!(path = %path.display(), %error, "chmod for fsGroup failed");
    }
}
