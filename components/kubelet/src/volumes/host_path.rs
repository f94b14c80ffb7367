//! hostPath volumes (`pkg/volume/hostpath/host_path.go`): the host's own path, checked against the volume's
//! `type` (and made, for the `OrCreate` types) before it is bind-mounted.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::HostPathVolumeSource;

use super::VolumeError;

/// hostPathMounter's `SetUp`: no `..` in the path (`ValidatePathNoBacksteps`), then the type check; returns the
/// path to bind-mount.
pub(crate) fn set_up(source: &HostPathVolumeSource) -> Result<PathBuf, VolumeError> {
    let path = source.path.as_str();
    if path.split('/').any(|element| element == "..") {
        return Err(VolumeError::HostPath(format!(
            "invalid HostPath `{path}`: must not contain '..'"
        )));
    }
    check_type(Path::new(path), source.type_.as_deref().unwrap_or_default())?;
    Ok(PathBuf::from(path))
}

/// `checkTypeInternal`, with Kubernetes' messages. Types follow symlinks (`os.Stat`), as the kubelet's host utils
/// do; a "file" is anything that exists and is not a directory.
pub(crate) fn check_type(path: &Path, path_type: &str) -> Result<(), VolumeError> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).ok();
    let is_dir = metadata.as_ref().is_some_and(|m| m.is_dir());
    let file_type = metadata.as_ref().map(|m| m.file_type());
    let failed = |what: &str| {
        Err(VolumeError::HostPath(format!(
            "hostPath type check failed: {shown} is not {what}"
        )))
    };
    match path_type {
        "" => Ok(()),
        "DirectoryOrCreate" if metadata.is_none() => make_dir(path),
        "DirectoryOrCreate" | "Directory" => {
            if is_dir {
                Ok(())
            } else {
                failed("a directory")
            }
        }
        "FileOrCreate" if metadata.is_none() => make_file(path),
        "FileOrCreate" | "File" => {
            if metadata.is_some() && !is_dir {
                Ok(())
            } else {
                failed("a file")
            }
        }
        "Socket" => {
            if file_type.is_some_and(|t| t.is_socket()) {
                Ok(())
            } else {
                failed("a socket file")
            }
        }
        "CharDevice" => {
            if file_type.is_some_and(|t| t.is_char_device()) {
                Ok(())
            } else {
                failed("a character device")
            }
        }
        "BlockDevice" => {
            if file_type.is_some_and(|t| t.is_block_device()) {
                Ok(())
            } else {
                failed("a block device")
            }
        }
        other => Err(VolumeError::HostPath(format!(
            "{other} is an invalid volume type"
        ))),
    }
}

/// `makeDir`: `MkdirAll` with 0755.
fn make_dir(path: &Path) -> Result<(), VolumeError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(VolumeError::io(path, error)),
    }
}

/// `makeFile`: an empty file with 0644 (its directory must exist).
fn make_file(path: &Path) -> Result<(), VolumeError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(VolumeError::io(path, error)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn source(path: &Path, path_type: Option<&str>) -> HostPathVolumeSource {
        HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: path_type.map(str::to_string),
        }
    }

    fn message(path: &Path, path_type: &str) -> String {
        set_up(&source(path, Some(path_type))).unwrap_err().to_string()
    }

    #[test]
    fn types_are_checked_with_kubernetes_messages() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let socket_path = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
        let missing = dir.path().join("missing");

        assert!(set_up(&source(dir.path(), Some("Directory"))).is_ok());
        assert_eq!(
            message(&file, "Directory"),
            format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            )
        );
        assert_eq!(
            message(&missing, "Directory"),
            format!(
                "hostPath type check failed: {} is not a directory",
                missing.display()
            )
        );
        assert!(set_up(&source(&file, Some("File"))).is_ok());
        assert_eq!(
            message(dir.path(), "File"),
            format!(
                "hostPath type check failed: {} is not a file",
                dir.path().display()
            )
        );
        assert_eq!(
            message(&missing, "File"),
            format!("hostPath type check failed: {} is not a file", missing.display())
        );
        assert!(set_up(&source(&socket_path, Some("Socket"))).is_ok());
        assert_eq!(
            message(&file, "Socket"),
            format!(
                "hostPath type check failed: {} is not a socket file",
                file.display()
            )
        );
        assert!(set_up(&source(Path::new("/dev/null"), Some("CharDevice"))).is_ok());
        assert_eq!(
            message(&file, "CharDevice"),
            format!(
                "hostPath type check failed: {} is not a character device",
                file.display()
            )
        );
        assert_eq!(
            message(Path::new("/dev/null"), "BlockDevice"),
            "hostPath type check failed: /dev/null is not a block device"
        );
        assert_eq!(message(&file, "Pipe"), "Pipe is an invalid volume type");
        // No type, no check: even a missing path is bind-mounted as it is (the runtime makes it).
        assert_eq!(set_up(&source(&missing, None)).unwrap(), missing);
        assert!(set_up(&source(&missing, Some(""))).is_ok());
        assert!(!missing.exists());
        assert_eq!(
            set_up(&source(Path::new("/var/../etc"), None))
                .unwrap_err()
                .to_string(),
            "invalid HostPath `/var/../etc`: must not contain '..'"
        );
    }

    #[test]
    fn or_create_types_make_what_is_missing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let new_dir = dir.path().join("a/b");
        assert!(set_up(&source(&new_dir, Some("DirectoryOrCreate"))).is_ok());
        assert!(new_dir.is_dir());
        let new_file = dir.path().join("a/f");
        assert!(set_up(&source(&new_file, Some("FileOrCreate"))).is_ok());
        assert!(new_file.is_file());
        assert_eq!(
            std::fs::metadata(&new_file).unwrap().permissions().mode() & 0o777,
            0o644 & !umask_bits()
        );
        // An existing path of the other kind fails the check.
        assert_eq!(
            message(&new_file, "DirectoryOrCreate"),
            format!(
                "hostPath type check failed: {} is not a directory",
                new_file.display()
            )
        );
        assert_eq!(
            message(&new_dir, "FileOrCreate"),
            format!("hostPath type check failed: {} is not a file", new_dir.display())
        );
    }

    fn umask_bits() -> u32 {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        nix::sys::stat::umask(old);
        old.bits()
    }
}
