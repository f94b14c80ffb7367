//! Reading and tidying containers' cgroups on v1 (per-controller hierarchies) and v2 (one unified hierarchy)
//! hosts alike. libcontainer creates and limits the cgroups; this reads what the kubelet's metrics need (the
//! same figures cAdvisor reports), the OOM-kill count, and removes parents left empty. Everything goes through
//! a root path, so it is tested against a fake cgroup tree without root or a particular host.

use std::path::{Path, PathBuf};

use shim_monitor::cgroup::keyed;

/// What a container has used, as cAdvisor and the kubelet's summary API report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// CPU time used, all CPUs, since the container started.
    pub cpu_usage_nanoseconds: u64,
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file cache: what the kubelet compares with limits and evicts on.
    pub memory_working_set_bytes: u64,
    pub processes: u64,
}

#[derive(Clone, Debug)]
pub struct Cgroups {
    root: PathBuf,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Cgroups {
    /// The host's cgroup filesystem.
    pub fn host() -> Cgroups {
        Cgroups::at("/sys/fs/cgroup")
    }

    pub fn at(root: impl Into<PathBuf>) -> Cgroups {
        Cgroups { root: root.into() }
    }

    /// A unified (v2) hierarchy is mounted at the root; hybrid hosts keep their controllers on v1.
    pub fn is_v2(&self) -> bool {
        shim_monitor::cgroup::is_v2(&self.root)
    }

    /// The directory of `path` (a cgroups path like `/bonsai/pod-x/c1`) for `controller` (ignored on v2).
    fn dir(&self, controller: &str, path: &str) -> PathBuf {
        let relative = path.trim_start_matches('/');
        if self.is_v2() {
            self.root.join(relative)
        } else {
            self.root.join(controller).join(relative)
        }
    }

    pub fn usage(&self, path: &str) -> Usage {
        let (cpu, memory, inactive_file) = if self.is_v2() {
            let dir = self.dir("", path);
            (
                keyed(&dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000),
                read_u64(&dir.join("memory.current")),
                keyed(&dir.join("memory.stat"), "inactive_file"),
            )
        } else {
            let memory = self.dir("memory", path);
            (
                read_u64(&self.dir("cpuacct", path).join("cpuacct.usage")),
                read_u64(&memory.join("memory.usage_in_bytes")),
                keyed(&memory.join("memory.stat"), "total_inactive_file"),
            )
        };
        let memory = memory.unwrap_or(0);
        Usage {
            cpu_usage_nanoseconds: cpu.unwrap_or(0),
            memory_usage_bytes: memory,
            memory_working_set_bytes: memory.saturating_sub(inactive_file.unwrap_or(0)),
            processes: read_u64(&self.dir("pids", path).join("pids.current")).unwrap_or(0),
        }
    }

    /// How many times the kernel's OOM killer struck in the cgroup.
    pub fn oom_kills(&self, path: &str) -> u64 {
        shim_monitor::cgroup::oom_kills(&self.root, path)
    }

    /// The processes in the cgroup (read from the first hierarchy that has it on v1).
    pub fn processes(&self, path: &str) -> Vec<i32> {
        let candidates = if self.is_v2() {
            vec![self.dir("", path)]
        } else {
            ["pids", "memory", "cpu", "freezer"]
                .iter()
                .map(|c| self.dir(c, path))
                .collect()
        };
        candidates
            .iter()
            .find_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Removes the cgroup `path` itself, after killing what still runs in it (what a shim that was killed
    /// itself leaves behind), then its parents that are left empty.
    pub fn remove(&self, path: &str) {
        for _ in 0..100 {
            let left = self.processes(path);
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for hierarchy in self.hierarchies() {
            let _ = std::fs::remove_dir(hierarchy.join(path.trim_start_matches('/')));
        }
        self.remove_empty_parents(path);
    }

    fn hierarchies(&self) -> Vec<PathBuf> {
        if self.is_v2() {
            vec![self.root.clone()]
        } else {
            match std::fs::read_dir(&self.root) {
                Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
                Err(_) => Vec::new(),
            }
        }
    }

    /// Removes the ancestors of `path` (deepest first) that no cgroup uses any more: a cgroup directory can only
    /// be removed once it has no children and no processes, so a parent still in use stays.
    pub fn remove_empty_parents(&self, path: &str) {
        let hierarchies = self.hierarchies();
        let relative = Path::new(path.trim_start_matches('/'));
        for hierarchy in hierarchies {
            let mut parent = relative.parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                // rmdir, not remove_dir_all: cgroup directories hold only kernel files and go empty or not at all.
                if std::fs::remove_dir(hierarchy.join(dir)).is_err() {
                    break;
                }
                parent = dir.parent();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: PathBuf, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn v1_usage_from_per_controller_hierarchies() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r.join("cpuacct/bonsai/c/cpuacct.usage"), "1500000000\n");
        write(r.join("memory/bonsai/c/memory.usage_in_bytes"), "10000\n");
        write(
            r.join("memory/bonsai/c/memory.stat"),
            "cache 5000\ninactive_file 7\ntotal_inactive_file 3000\n",
        );
        write(
            r.join("memory/bonsai/c/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write(r.join("pids/bonsai/c/pids.current"), "3\n");
        let cgroups = Cgroups::at(r);
        assert!(!cgroups.is_v2());
        assert_eq!(
            cgroups.usage("/bonsai/c"),
            Usage {
                cpu_usage_nanoseconds: 1_500_000_000,
                memory_usage_bytes: 10_000,
                memory_working_set_bytes: 7_000,
                processes: 3,
            }
        );
        assert_eq!(cgroups.oom_kills("/bonsai/c"), 2);
    }

    #[test]
    fn v2_usage_from_the_unified_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r.join("cgroup.controllers"), "cpu memory pids\n");
        write(r.join("bonsai/c/cpu.stat"), "usage_usec 250\nuser_usec 200\n");
        write(r.join("bonsai/c/memory.current"), "4096\n");
        write(r.join("bonsai/c/memory.stat"), "anon 1\ninactive_file 8192\n");
        write(r.join("bonsai/c/memory.events"), "low 0\noom 1\noom_kill 1\n");
        let cgroups = Cgroups::at(r);
        assert!(cgroups.is_v2());
        let usage = cgroups.usage("bonsai/c");
        assert_eq!(usage.cpu_usage_nanoseconds, 250_000);
        // More inactive cache than usage (they are read at different moments): never below zero.
        assert_eq!(usage.memory_working_set_bytes, 0);
        assert_eq!(cgroups.oom_kills("bonsai/c"), 1);
        // A cgroup that is gone reads as nothing used.
        assert_eq!(cgroups.usage("bonsai/gone"), Usage::default());
    }

    #[test]
    fn only_empty_parents_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("memory/bonsai/pod-a")).unwrap();
        std::fs::create_dir_all(r.join("memory/bonsai/pod-b/c2")).unwrap();
        std::fs::create_dir_all(r.join("pids/bonsai/pod-a")).unwrap();
        let cgroups = Cgroups::at(r);
        cgroups.remove_empty_parents("/bonsai/pod-a/c1");
        assert!(!r.join("memory/bonsai/pod-a").exists() && !r.join("pids/bonsai").exists());
        assert!(r.join("memory/bonsai/pod-b/c2").exists(), "a parent in use stays");
        std::fs::remove_dir(r.join("memory/bonsai/pod-b/c2")).unwrap();
        cgroups.remove_empty_parents("/bonsai/pod-b/c2");
        assert!(!r.join("memory/bonsai").exists());
        assert!(r.join("memory").exists(), "never the hierarchy itself");
    }

    #[test]
    fn processes_are_read_from_cgroup_procs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r.join("pids/bonsai/c/cgroup.procs"), "12\n34\n");
        assert_eq!(Cgroups::at(r).processes("/bonsai/c"), [12, 34]);
        assert!(Cgroups::at(r).processes("/bonsai/none").is_empty());
    }
}
