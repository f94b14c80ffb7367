//! What the monitor reads and tidies in the container's cgroup once the container's init has ended, on v1 (a
//! hierarchy per controller) and v2 (one unified hierarchy) hosts alike. Everything goes through a root path,
//! so it is tested against a fake tree.

use std::path::{Path, PathBuf};

/// The host's cgroup filesystem.
pub const HOST_ROOT: &str = "/sys/fs/cgroup";

/// A `key value` line of a flat-keyed file such as `memory.stat`, `memory.events` or `cpu.stat`.
pub fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// A unified (v2) hierarchy is mounted at the root; hybrid hosts keep their controllers on v1.
pub fn is_v2(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// How many times the kernel's OOM killer struck in the cgroup `path` (a cgroups path like `/bonsai/pod-x/c1`).
pub fn oom_kills(root: &Path, path: &str) -> u64 {
    let relative = path.trim_start_matches('/');
    if is_v2(root) {
        keyed(&root.join(relative).join("memory.events"), "oom_kill")
    } else {
        keyed(
            &root.join("memory").join(relative).join("memory.oom_control"),
            "oom_kill",
        )
    }
    .unwrap_or(0)
}

/// Removes the cgroup `path` in every hierarchy, as the runtime's delete does once the container has ended (an
/// empty memory cgroup left behind keeps its page-cache charges). Its parents are the runtime's to remove.
pub fn remove(root: &Path, path: &str) {
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        return;
    }
    let hierarchies: Vec<PathBuf> = if is_v2(root) {
        vec![root.to_path_buf()]
    } else {
        match std::fs::read_dir(root) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    };
    for hierarchy in hierarchies {
        // rmdir, not remove_dir_all: a cgroup directory holds only kernel files and goes empty or not at all.
        let _ = std::fs::remove_dir(hierarchy.join(relative));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_on_v1_and_v2() {
        let v1 = tempfile::tempdir().unwrap();
        let memory = v1.path().join("memory/bonsai/pod-a/c1");
        std::fs::create_dir_all(&memory).unwrap();
        std::fs::write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(!is_v2(v1.path()));
        assert_eq!(oom_kills(v1.path(), "/bonsai/pod-a/c1"), 2);
        assert_eq!(oom_kills(v1.path(), "/bonsai/pod-a/other"), 0);

        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let dir = v2.path().join("bonsai/pod-a/c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(oom_kills(v2.path(), "/bonsai/pod-a/c1"), 1);
    }

    #[test]
    fn removal_takes_the_cgroup_in_every_hierarchy_and_leaves_its_parent() {
        let v1 = tempfile::tempdir().unwrap();
        for controller in ["memory", "pids", "cpu,cpuacct"] {
            std::fs::create_dir_all(v1.path().join(controller).join("bonsai/pod-a/c1")).unwrap();
        }
        // A cgroup that is not empty stays (rmdir fails): a file stands for a process here.
        std::fs::write(v1.path().join("pids/bonsai/pod-a/c1/busy"), "").unwrap();
        remove(v1.path(), "/bonsai/pod-a/c1");
        assert!(!v1.path().join("memory/bonsai/pod-a/c1").exists());
        assert!(!v1.path().join("cpu,cpuacct/bonsai/pod-a/c1").exists());
        assert!(v1.path().join("pids/bonsai/pod-a/c1").exists());
        assert!(v1.path().join("memory/bonsai/pod-a").exists());
        remove(v1.path(), "/");
        assert!(v1.path().join("memory").exists());
    }
}
