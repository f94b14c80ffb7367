//! The OCI runtime spec (`config.json`) of a container: the image's config merged with the caller's overrides,
//! the namespaces, mounts, masked paths and capabilities runc and Kubernetes use, and the cgroup limits.

use std::path::Path;

use serde_json::{Value, json};

use super::{ContainerConfig, ContainerError};

/// Kubernetes' (containerd's) default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// runc's masked and read-only paths.
/// `wanted`, or this process's own score when `wanted` is lower and lowering needs a capability this process
/// lacks (CAP_SYS_RESOURCE, missing on sandboxed hosts): the container then starts, protected no more than we are.
fn settable_oom_score_adj(wanted: i32) -> i32 {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let effective = own_capabilities("CapEff:").unwrap_or(0);
    const CAP_SYS_RESOURCE: u64 = 1 << 24;
    if wanted < own && effective & CAP_SYS_RESOURCE == 0 {
        tracing::debug!(wanted, own, "cannot lower oom_score_adj without CAP_SYS_RESOURCE");
        own
    } else {
        wanted
    }
}

/// Directories of /dev that hold no host devices of a container's (runc's `HostDevices` skips them).
const NOT_HOST_DEVICES: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
/// Devices every container gets anyway (libcontainer makes them), and the console it gives a terminal.
const DEFAULT_DEVICES: [&str; 8] = [
    "null", "zero", "full", "random", "urandom", "tty", "ptmx", "console",
];

/// The character and block devices under `root` (the host's /dev) as OCI `linux.devices` entries at the same
/// paths; links, sockets and the directories above are left out.
pub fn host_devices(root: &Path) -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let mut devices = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Symbolic links are not followed (symlink_metadata): /dev/fd and friends point elsewhere.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                if dir != root || !NOT_HOST_DEVICES.contains(&name.as_str()) {
                    pending.push(path);
                }
                continue;
            }
            let type_ = if kind.is_char_device() {
                "c"
            } else if kind.is_block_device() {
                "b"
            } else {
                continue;
            };
            if dir == root && DEFAULT_DEVICES.contains(&name.as_str()) {
                continue;
            }
            let Ok(inside) = path.strip_prefix(root) else {
                continue;
            };
            let rdev = meta.rdev();
            devices.push(json!({
                "path": Path::new("/dev").join(inside),
                "type": type_,
                "major": nix::sys::stat::major(rdev),
                "minor": nix::sys::stat::minor(rdev),
                "fileMode": meta.permissions().mode() & 0o7777,
                "uid": meta.uid(),
                "gid": meta.gid(),
            }));
        }
    }
    devices.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    devices
}

/// This process's capability bounding set (`CapBnd`): a privileged container gets what the node has, as
/// containerd gives it (a sandboxed host may lack some).
fn bounding_set() -> u64 {
    own_capabilities("CapBnd:").unwrap_or(u64::MAX)
}

/// One of this process's capability sets (`CapEff:`, `CapBnd:`...) from /proc/self/status.
fn own_capabilities(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix(field))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities whose bits are set in `mask`.
fn privileged_capabilities(mask: u64) -> Vec<String> {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Every capability the kernel knows, by number (up to CAP_CHECKPOINT_RESTORE, 40, Linux 5.9).
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// The process's argv: Kubernetes' rules (`command` replaces the entrypoint, `args` the cmd).
pub fn argv(image: &Value, command: &Option<Vec<String>>, args: &Option<Vec<String>>) -> Vec<String> {
    let entrypoint = strings(image.pointer("/config/Entrypoint"));
    let cmd = strings(image.pointer("/config/Cmd"));
    match (command, args) {
        (Some(c), Some(a)) => c.iter().chain(a).cloned().collect(),
        (Some(c), None) => c.clone(),
        (None, Some(a)) => entrypoint.into_iter().chain(a.iter().cloned()).collect(),
        (None, None) => entrypoint.into_iter().chain(cmd).collect(),
    }
}

/// `user` as uid:gid: numeric, or names looked up in the image's /etc/passwd and /etc/group.
pub fn resolve_user(user: &str, rootfs: &std::path::Path) -> Result<(u32, u32), ContainerError> {
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |file: &str, key: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&key)).then(|| {
                let id = fields.get(2).and_then(|f| f.parse().ok()).unwrap_or(0);
                let gid = fields.get(3).and_then(|f| f.parse().ok()).unwrap_or(id);
                (id, gid)
            })
        })
    };
    let (uid, mut gid) = match name.parse::<u32>() {
        Ok(uid) => (uid, lookup_uid_gid(rootfs, uid).unwrap_or(uid)),
        Err(_) if name.is_empty() => (0, 0),
        Err(_) => lookup("etc/passwd", name)
            .ok_or_else(|| ContainerError::Config(format!("no user {name:?} in the image")))?,
    };
    if let Some(group) = group {
        gid = match group.parse::<u32>() {
            Ok(g) => g,
            Err(_) => lookup("etc/group", group)
                .map(|(g, _)| g)
                .ok_or_else(|| ContainerError::Config(format!("no group {group:?} in the image")))?,
        };
    }
    Ok((uid, gid))
}

fn lookup_uid_gid(rootfs: &std::path::Path, uid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2).and_then(|f| f.parse::<u32>().ok()) == Some(uid))
            .then(|| fields.get(3)?.parse().ok())?
    })
}

/// The whole `config.json`.
pub fn runtime_spec(
    image: &Value,
    config: &ContainerConfig,
    rootfs: &std::path::Path,
    cgroups_path: &str,
) -> Result<Value, ContainerError> {
    let args = argv(image, &config.command, &config.args);
    if args.is_empty() {
        return Err(ContainerError::Config(
            "no command: the image has none and none was given".into(),
        ));
    }
    let mut env: Vec<String> = strings(image.pointer("/config/Env"));
    for (k, v) in &config.env {
        env.retain(|e| e.split('=').next() != Some(k.as_str()));
        env.push(format!("{k}={v}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let cwd = config
        .working_dir
        .clone()
        .or_else(|| {
            image
                .pointer("/config/WorkingDir")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| "/".into());
    let user = config
        .user
        .clone()
        .or_else(|| {
            image
                .pointer("/config/User")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_default();
    let (uid, gid) = resolve_user(&user, rootfs)?;
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    let canonical = |c: &String| {
        if c.starts_with("CAP_") {
            c.clone()
        } else {
            format!("CAP_{c}")
        }
    };
    for add in config.capabilities_add.iter().map(canonical) {
        if !caps.contains(&add) {
            caps.push(add);
        }
    }
    let drops: Vec<String> = config.capabilities_drop.iter().map(canonical).collect();
    if drops.iter().any(|d| d == "CAP_ALL") {
        caps.clear();
    }
    caps.retain(|c| !drops.contains(c));
    if config.privileged {
        caps = privileged_capabilities(bounding_set());
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    match &config.network_namespace {
        Some(path) => namespaces.push(json!({"type": "network", "path": path})),
        None => namespaces.push(json!({"type": "network"})),
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in &config.mounts {
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        options.push(if m.readonly { "ro" } else { "rw" }.into());
        mounts.push(
            json!({"destination": m.destination, "type": "bind", "source": m.source, "options": options}),
        );
    }
    if config.privileged {
        // /sys and the cgroup file system writable, as runc's privileged spec has them.
        for mount in mounts
            .iter_mut()
            .filter(|m| m["type"] == "sysfs" || m["type"] == "cgroup")
        {
            if let Some(Value::Array(options)) = mount.get_mut("options") {
                options.retain(|o| o != "ro");
            }
        }
    }
    let mut resources = json!({"devices": [{"allow": config.privileged, "access": "rwm"}]});
    // A privileged container sees the host's devices, as containerd's CRI gives them (`WithHostDevices`).
    let devices = if config.privileged {
        host_devices(Path::new("/dev"))
    } else {
        Vec::new()
    };
    let r = &config.resources;
    if let Some(limit) = r.memory_limit {
        resources["memory"] = json!({"limit": limit, "swap": limit});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = r.cpu_quota {
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(r.cpu_period.unwrap_or(100_000)));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(pids) = r.pids_limit {
        resources["pids"] = json!({"limit": pids});
    }
    // As many open files as this process may have, at most 1,048,576 (what containerd gives): raising the hard
    // limit above ours would need CAP_SYS_RESOURCE in the user namespace we run in.
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.min(1_048_576))
        .unwrap_or(1024);
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path,
        "resources": resources,
        "devices": devices,
        "maskedPaths": if config.privileged { &[][..] } else { MASKED },
        "readonlyPaths": if config.privileged { &[][..] } else { READONLY },
    });
    if let Some(profile) = super::seccomp::profile(&config.seccomp, &caps)? {
        linux["seccomp"] = profile;
    }
    // The kernel loads a seccomp filter into a process without CAP_SYS_ADMIN only under no_new_privs, and
    // libcontainer loads it after dropping capabilities: a filtered container without that capability gets the
    // bit whatever allowPrivilegeEscalation says (runc loads the filter earlier and need not).
    let filtered = linux.get("seccomp").is_some();
    let no_new_privileges =
        config.no_new_privileges || (filtered && !caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": config.tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": config.additional_gids},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": no_new_privileges,
        },
        "root": {"path": rootfs, "readonly": config.readonly_rootfs},
        "hostname": config.hostname.clone().unwrap_or_else(|| config.id.chars().take(12).collect()),
        "mounts": mounts,
        "linux": linux,
    });
    if let Some(adj) = config.oom_score_adj {
        spec["process"]["oomScoreAdj"] = json!(settable_oom_score_adj(adj));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_command_and_args_rules() {
        let image = json!({"config": {"Entrypoint": ["/entry"], "Cmd": ["default"]}});
        let v = |s: &[&str]| Some(s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(argv(&image, &None, &None), ["/entry", "default"]);
        assert_eq!(argv(&image, &None, &v(&["x"])), ["/entry", "x"]);
        assert_eq!(argv(&image, &v(&["/bin/sh"]), &None), ["/bin/sh"]);
        assert_eq!(
            argv(&image, &v(&["/bin/sh"]), &v(&["-c", "true"])),
            ["/bin/sh", "-c", "true"]
        );
    }

    #[test]
    fn no_new_privs_is_set_when_asked_or_when_a_filter_needs_it() {
        let rootfs = tempfile::tempdir().unwrap();
        let mut config = ContainerConfig::new("n", "busybox");
        config.command = Some(vec!["/bin/sh".into()]);
        let spec = |config: &ContainerConfig| runtime_spec(&json!({}), config, rootfs.path(), "/x").unwrap();
        assert_eq!(
            spec(&config)["process"]["noNewPrivileges"],
            false,
            "Kubernetes' default"
        );
        config.seccomp = crate::container::seccomp::Seccomp::RuntimeDefault;
        assert_eq!(
            spec(&config)["process"]["noNewPrivileges"],
            true,
            "a filter without CAP_SYS_ADMIN"
        );
        config.capabilities_add = vec!["SYS_ADMIN".into()];
        assert_eq!(spec(&config)["process"]["noNewPrivileges"], false);
        config.no_new_privileges = true;
        assert_eq!(spec(&config)["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn privileged_containers_get_the_hosts_devices_but_not_its_terminals_or_the_defaults() {
        let devices = host_devices(Path::new("/dev"));
        let paths: Vec<&str> = devices.iter().filter_map(|d| d["path"].as_str()).collect();
        // Every Linux host has /dev/kmsg (1, 11) or at least /dev/mem-like character devices; /dev/null is a
        // default device, /dev/pts's terminals are the container's own.
        assert!(
            !paths.contains(&"/dev/null") && !paths.iter().any(|p| p.starts_with("/dev/pts/")),
            "{paths:?}"
        );
        if let Some(kmsg) = devices.iter().find(|d| d["path"] == "/dev/kmsg") {
            assert_eq!(
                (
                    kmsg["type"].as_str(),
                    kmsg["major"].as_u64(),
                    kmsg["minor"].as_u64()
                ),
                (Some("c"), Some(1), Some(11))
            );
        }
        let dir = tempfile::tempdir().expect("a directory");
        std::fs::write(dir.path().join("plain"), "").expect("a file");
        assert!(host_devices(dir.path()).is_empty());
    }

    #[test]
    fn privileged_containers_get_every_capability_and_an_open_sys() {
        let rootfs = tempfile::tempdir().unwrap();
        let mut config = ContainerConfig::new("p", "busybox");
        config.privileged = true;
        config.mounts.push(crate::container::BindMount {
            source: "/tmp/x".into(),
            destination: "/data".into(),
            readonly: true,
        });
        config.command = Some(vec!["/bin/sh".into()]);
        let spec = runtime_spec(&json!({}), &config, rootfs.path(), "/bonsai/p").unwrap();
        let caps = spec["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), privileged_capabilities(bounding_set()).len());
        let without_sys_resource = privileged_capabilities(0x1fffeffffff);
        assert_eq!(without_sys_resource.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!without_sys_resource.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert_eq!(spec["linux"]["maskedPaths"], json!([]));
        assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], true);
        let sys = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert!(!sys["options"].as_array().unwrap().contains(&json!("ro")));
        let data = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert!(
            data["options"].as_array().unwrap().contains(&json!("ro")),
            "volumes keep readOnly"
        );
        assert_eq!(spec["process"]["noNewPrivileges"], false);
    }

    #[test]
    fn users_resolve_numerically_or_from_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65533::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user("", dir.path()).unwrap(), (0, 0));
        assert_eq!(resolve_user("nobody", dir.path()).unwrap(), (65534, 65533));
        assert_eq!(resolve_user("65534", dir.path()).unwrap(), (65534, 65533));
        assert_eq!(resolve_user("1000:staff", dir.path()).unwrap(), (1000, 50));
        assert_eq!(resolve_user("1000:7", dir.path()).unwrap(), (1000, 7));
        assert!(resolve_user("ghost", dir.path()).is_err());
    }

    #[test]
    fn the_spec_carries_limits_capabilities_and_the_given_network_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ContainerConfig::new("c1", "img");
        config.command = Some(vec!["/bin/true".into()]);
        config.resources.memory_limit = Some(64 << 20);
        config.resources.pids_limit = Some(10);
        config.network_namespace = Some("/var/run/netns/x".into());
        config.capabilities_drop = vec!["NET_RAW".into()];
        config.capabilities_add = vec!["SYS_ADMIN".into()];
        config.env = vec![("A".into(), "1".into())];
        let spec = runtime_spec(
            &json!({"config": {"Env": ["A=0", "B=2"]}}),
            &config,
            dir.path(),
            "/bonsai/c1",
        )
        .unwrap();
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 10);
        let caps = spec["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(caps.contains(&json!("CAP_SYS_ADMIN")) && !caps.contains(&json!("CAP_NET_RAW")));
        assert!(
            spec["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!({"type": "network", "path": "/var/run/netns/x"}))
        );
        let env = spec["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("A=1")) && env.contains(&json!("B=2")) && !env.contains(&json!("A=0")));
        config.command = None;
        assert!(
            runtime_spec(&json!({}), &config, dir.path(), "/x").is_err(),
            "no command anywhere"
        );
    }
}
