//! A pod's sandbox on this node: its network namespace, pinned by a bind mount as `ip netns add` pins one (so it
//! outlives every container and the agent itself), and the files the kubelet bind-mounts into each container
//! (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::KubeletError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KubeletError + '_ {
    move |source| KubeletError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a pod's state lives on the node: `<data-dir>/agent/pods/<uid>`.
pub fn pod_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("agent/pods").join(uid)
}

/// The pinned network namespace of a pod.
pub fn netns_path(data_dir: &Path, uid: &str) -> PathBuf {
    pod_dir(data_dir, uid).join("netns")
}

/// True when `path` holds a pinned namespace (a bind mount of a namespace file).
pub fn is_pinned(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mounts| {
        let wanted = path.to_string_lossy();
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(wanted.as_ref()))
    })
}

/// Makes a new network namespace and pins it at `path`. A short-lived thread enters it (namespaces belong to
/// threads), so no thread of the agent is left in it.
pub fn create_netns(path: &Path) -> Result<(), KubeletError> {
    if is_pinned(path) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::File::create(path).map_err(io(path))?;
    let target = path.to_path_buf();
    let pinned = std::thread::spawn(move || -> Result<(), KubeletError> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| KubeletError::Invalid(format!("cannot make a network namespace: {e}")))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            KubeletError::Invalid(format!(
                "cannot pin the network namespace at {}: {e}",
                target.display()
            ))
        })
    })
    .join()
    .map_err(|_| KubeletError::Invalid("the namespace thread panicked".into()))?;
    if pinned.is_err() {
        let _ = std::fs::remove_file(path);
    }
    pinned
}

/// Unpins and removes a pod's network namespace (it goes once nothing is in it). Absent is fine.
pub fn remove_netns(path: &Path) -> Result<(), KubeletError> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(KubeletError::Invalid(format!(
                "cannot unpin the network namespace at {}: {e}",
                path.display()
            )));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes a file the containers will see (atomically: a rename over the old one).
pub fn write_file(path: &Path, contents: &str) -> Result<(), KubeletError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // Unchanged files are left alone: every pass writes them, and each write would be a new inode.
    if std::fs::read(path).is_ok_and(|current| current == contents.as_bytes()) {
        return Ok(());
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).map_err(io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io(path))
}

/// Removes what the sandbox left in the pod's directory (its namespace first).
pub fn remove(data_dir: &Path, uid: &str) -> Result<(), KubeletError> {
    remove_netns(&netns_path(data_dir, uid))?;
    let dir = pod_dir(data_dir, uid);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_namespace_is_made_reused_and_removed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to make network namespaces");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = netns_path(dir.path(), "uid-1");
        create_netns(&path).unwrap();
        assert!(is_pinned(&path));
        let inode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap()
        };
        let first = inode(&path);
        create_netns(&path).unwrap();
        assert_eq!(inode(&path), first, "an existing namespace is kept");
        assert_ne!(
            first,
            inode(Path::new("/proc/self/ns/net")),
            "a namespace of its own"
        );
        remove(dir.path(), "uid-1").unwrap();
        assert!(!is_pinned(&path));
        assert!(!pod_dir(dir.path(), "uid-1").exists());
        remove(dir.path(), "uid-1").unwrap();
    }
}
