//! The small static container monitor (`shim_monitor`'s binary), built by this crate's build.rs and embedded
//! here, written out once per content hash to `<dir>/bonsai-shim-monitor-<hash>` for the shims to execute. As
//! k3s ships containerd's shims beside its binary, this keeps bonsai one file to install.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::ContainerError;

static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bonsai-shim-monitor"));
const HASH: &str = env!("BONSAI_SHIM_MONITOR_HASH");

/// The file name the embedded monitor is written to.
pub fn file_name() -> String {
    format!("bonsai-shim-monitor-{HASH}")
}

/// Whether this build carries the monitor (its build can fail where no static libc is at hand).
pub fn is_embedded() -> bool {
    !IMAGE.is_empty()
}

/// Writes the embedded monitor into `dir` unless it is there already, whole; returns its path, or `None` when
/// this build carries none. A partly written file is never left under the final name: it is written to a
/// temporary name and renamed.
pub fn install(dir: &Path) -> Result<Option<PathBuf>, ContainerError> {
    install_image(dir, &file_name(), IMAGE)
}

fn install_image(dir: &Path, name: &str, image: &[u8]) -> Result<Option<PathBuf>, ContainerError> {
    if image.is_empty() {
        return Ok(None);
    }
    let path = dir.join(name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContainerError::Io { path, source }
    };
    if let Ok(meta) = std::fs::metadata(&path)
        && meta.is_file()
        && meta.len() == image.len() as u64
        && meta.permissions().mode() & 0o111 != 0
    {
        return Ok(Some(path));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let written = (|| {
        {
            // Closed before it is renamed into place: a binary still open for writing cannot be executed.
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(image)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&path)(e));
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_once_whole_and_executable() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let path = install_image(&bin, "m-1", b"#!/bin/sh\nexit 0\n")
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"#!/bin/sh\nexit 0\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(std::process::Command::new(&path).status().unwrap().success());
        // A truncated file (a crash mid-copy by an older version) is replaced.
        std::fs::write(&path, b"#!").unwrap();
        install_image(&bin, "m-1", b"#!/bin/sh\nexit 0\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 17);
        assert_eq!(
            std::fs::read_dir(&bin).unwrap().count(),
            1,
            "no temporary file is left"
        );
        assert_eq!(install_image(&bin, "m-2", b"").unwrap(), None);
    }

    #[test]
    fn this_build_embeds_a_static_monitor() {
        // The build script falls back to an empty image with a warning; the release must not.
        assert!(
            is_embedded(),
            "the shim monitor was not built: see the cargo warning of the runtime crate"
        );
        assert_eq!(&IMAGE[..4], b"\x7fELF");
        assert_eq!(HASH.len(), 16);
    }
}
