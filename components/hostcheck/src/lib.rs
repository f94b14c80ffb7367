//! Checks that a host can run bonsai, item by item, as `k3s check-config` does: namespaces, cgroups (v1 or v2)
//! and their controllers, overlayfs, VXLAN, nftables, br_netfilter, IP forwarding and the ports bonsai listens on.
//!
//! Every fact comes from files under `/proc`, `/sys`, `/lib/modules` and `/boot` (the kernel's configuration, as
//! k3s's script reads it), read through [`Host`], so the checks run the same against a fake hierarchy in a
//! temporary directory.

use std::io::Read;
use std::path::PathBuf;

/// Where the checks read the host from.
pub trait Host {
    /// The contents of an absolute path, or `None` when it cannot be read.
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    /// Whether an absolute path exists.
    fn exists(&self, path: &str) -> bool;
}

/// A host whose `/` is `root`: `/` itself for the real one, a temporary directory for a fake one.
#[derive(Debug, Clone)]
pub struct RootedHost {
    root: PathBuf,
}

impl RootedHost {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// This machine.
    pub fn real() -> Self {
        Self::new("/")
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Host for RootedHost {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(path)).ok()
    }

    fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
    }
}

/// How an item came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    /// bonsai runs, but something it can use is missing or will be set up at start.
    Warn,
    /// bonsai cannot run (or cannot run pods) until this is fixed.
    Fail,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One checked item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub group: &'static str,
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

/// What the checks need besides the host.
#[derive(Debug, Clone)]
pub struct Options {
    /// TCP ports bonsai listens on (the API server's, the kubelet's).
    pub tcp_ports: Vec<u16>,
    /// UDP ports bonsai binds (VXLAN's).
    pub udp_ports: Vec<u16>,
    /// The folders of `PATH`, to find the programs bonsai runs (`nft`).
    pub path: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tcp_ports: vec![6443, 10250],
            udp_ports: vec![8472],
            path: [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// The hint for a disabled memory controller, where it matters most (Raspberry Pi OS ships it off).
pub const MEMORY_CGROUP_HINT: &str = "add `cgroup_memory=1 cgroup_enable=memory` to the kernel command line \
     (/boot/firmware/cmdline.txt, or /boot/cmdline.txt, on a Raspberry Pi) and reboot";

/// Every check, in the order they print.
pub fn check(host: &dyn Host, options: &Options) -> Vec<Item> {
    let kernel = KernelFacts::read(host);
    let mut items = Vec::new();
    namespaces(host, &kernel, &mut items);
    cgroups(host, &mut items);
    filesystems(host, &kernel, &mut items);
    networking(host, &kernel, options, &mut items);
    ports(host, options, &mut items);
    items
}

/// The worst verdict of a list (Ok for none).
pub fn worst(items: &[Item]) -> Verdict {
    items.iter().map(|i| i.verdict).max().unwrap_or(Verdict::Ok)
}

/// What is known about the running kernel: its release, its build configuration (when one is found) and its
/// built-in and loaded modules.
#[derive(Debug, Default)]
struct KernelFacts {
    release: String,
    /// `CONFIG_X` → `y`/`m`, from /proc/config.gz or /boot/config-<release>.
    config: Option<std::collections::HashMap<String, String>>,
    config_source: String,
    builtin: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Feature {
    /// In the kernel now (built in, or a module already loaded).
    Present(String),
    /// A module the kernel can load on first use.
    Loadable(String),
    Missing(String),
    Unknown,
}

impl KernelFacts {
    fn read(host: &dyn Host) -> Self {
        let release = host
            .read("/proc/sys/kernel/osrelease")
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        let mut facts = KernelFacts {
            builtin: host
                .read(&format!("/lib/modules/{release}/modules.builtin"))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            release,
            ..KernelFacts::default()
        };
        let gz = host.read("/proc/config.gz").and_then(|bytes| {
            let mut text = String::new();
            flate2::read::GzDecoder::new(bytes.as_slice())
                .read_to_string(&mut text)
                .ok()
                .map(|_| text)
        });
        let candidates = [
            ("/proc/config.gz".to_string(), gz),
            (format!("/boot/config-{}", facts.release), None),
            (format!("/lib/modules/{}/build/.config", facts.release), None),
        ];
        for (source, text) in candidates {
            let text = text.or_else(|| {
                host.read(&source)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            });
            if let Some(text) = text {
                facts.config = Some(parse_kernel_config(&text));
                facts.config_source = source;
                break;
            }
        }
        facts
    }

    /// Whether `option` (e.g. `CONFIG_VXLAN`, module `vxlan` at `kernel/drivers/net/vxlan`) is available.
    fn feature(&self, host: &dyn Host, option: &str, module: &str) -> Feature {
        if host.exists(&format!("/sys/module/{module}")) {
            return Feature::Present("loaded".into());
        }
        if self.builtin.lines().any(|l| module_name(l) == module) {
            return Feature::Present("built in".into());
        }
        match self.config.as_ref().map(|c| c.get(option).map(String::as_str)) {
            Some(Some("y")) => Feature::Present(format!("built in ({option}=y)")),
            Some(Some("m")) => {
                Feature::Loadable(format!("module {module} ({option}=m), loaded on first use"))
            }
            Some(_) => Feature::Missing(format!("{option} is not set in {}", self.config_source)),
            None => Feature::Unknown,
        }
    }
}

/// `kernel/drivers/net/vxlan/vxlan.ko` → `vxlan`.
fn module_name(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file)
}

fn parse_kernel_config(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

fn item(items: &mut Vec<Item>, group: &'static str, name: &str, verdict: Verdict, detail: impl Into<String>) {
    items.push(Item {
        group,
        name: name.to_string(),
        verdict,
        detail: detail.into(),
    });
}

/// A kernel feature's item: missing is `missing` (Fail or Warn), unknown (no kernel configuration) is a warning.
fn feature_item(
    items: &mut Vec<Item>,
    group: &'static str,
    name: &str,
    feature: Feature,
    missing: Verdict,
    advice: &str,
) {
    match feature {
        Feature::Present(d) | Feature::Loadable(d) => item(items, group, name, Verdict::Ok, d),
        Feature::Missing(d) => item(items, group, name, missing, format!("{d}: {advice}")),
        Feature::Unknown => item(
            items,
            group,
            name,
            Verdict::Warn,
            format!("not loaded, and no kernel configuration found to tell: {advice}"),
        ),
    }
}

fn namespaces(host: &dyn Host, kernel: &KernelFacts, items: &mut Vec<Item>) {
    for (ns, option) in [
        ("mnt", "CONFIG_NAMESPACES"),
        ("net", "CONFIG_NET_NS"),
        ("pid", "CONFIG_PID_NS"),
        ("ipc", "CONFIG_IPC_NS"),
        ("uts", "CONFIG_UTS_NS"),
    ] {
        if host.exists(&format!("/proc/self/ns/{ns}")) {
            item(items, "namespaces", ns, Verdict::Ok, "available");
        } else {
            let why = match kernel.config.as_ref().and_then(|c| c.get(option)) {
                Some(v) => format!("/proc/self/ns/{ns} is missing ({option}={v})"),
                None => format!("/proc/self/ns/{ns} is missing: the kernel needs {option}=y"),
            };
            item(items, "namespaces", ns, Verdict::Fail, why);
        }
    }
}

/// The controllers the node agent sets limits and reads usage with; the rest are used when present.
const REQUIRED_CONTROLLERS_V2: [&str; 3] = ["cpu", "memory", "pids"];
const OPTIONAL_CONTROLLERS_V2: [&str; 2] = ["cpuset", "io"];
const REQUIRED_CONTROLLERS_V1: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "devices"];
const OPTIONAL_CONTROLLERS_V1: [&str; 3] = ["cpuset", "freezer", "blkio"];

fn cgroups(host: &dyn Host, items: &mut Vec<Item>) {
    let cmdline = host
        .read("/proc/cmdline")
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let memory_disabled_on_cmdline = cmdline.split_whitespace().any(|w| w == "cgroup_disable=memory");
    let missing = |controller: &str, required: bool| -> (Verdict, String) {
        if controller == "memory" {
            let why = if memory_disabled_on_cmdline {
                "disabled by cgroup_disable=memory on the kernel command line"
            } else {
                "not enabled"
            };
            (Verdict::Fail, format!("{why}: {MEMORY_CGROUP_HINT}"))
        } else if required {
            (Verdict::Fail, "not enabled: pods' limits cannot be set".into())
        } else {
            (Verdict::Warn, "not enabled (optional)".into())
        }
    };
    if let Some(controllers) = host.read("/sys/fs/cgroup/cgroup.controllers") {
        let controllers = String::from_utf8_lossy(&controllers).into_owned();
        item(
            items,
            "cgroups",
            "hierarchy",
            Verdict::Ok,
            "v2 (unified) at /sys/fs/cgroup",
        );
        let enabled: Vec<&str> = controllers.split_whitespace().collect();
        for (controller, required) in REQUIRED_CONTROLLERS_V2
            .iter()
            .map(|c| (*c, true))
            .chain(OPTIONAL_CONTROLLERS_V2.iter().map(|c| (*c, false)))
        {
            if enabled.contains(&controller) {
                item(items, "cgroups", controller, Verdict::Ok, "enabled");
            } else {
                let (verdict, detail) = missing(controller, required);
                item(items, "cgroups", controller, verdict, detail);
            }
        }
        return;
    }
    let Some(table) = host.read("/proc/cgroups") else {
        item(
            items,
            "cgroups",
            "hierarchy",
            Verdict::Fail,
            "neither /sys/fs/cgroup/cgroup.controllers (v2) nor /proc/cgroups (v1) can be read: the kernel needs \
             CONFIG_CGROUPS and a cgroup file system mounted at /sys/fs/cgroup",
        );
        return;
    };
    let table = String::from_utf8_lossy(&table).into_owned();
    // `#subsys_name hierarchy num_cgroups enabled`
    let enabled: std::collections::HashMap<&str, bool> = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() >= 4).then(|| (fields[0], fields[3] == "1"))
        })
        .collect();
    let unified = host.exists("/sys/fs/cgroup/unified");
    item(
        items,
        "cgroups",
        "hierarchy",
        Verdict::Ok,
        if unified {
            "v1 (hybrid, with v2 at /sys/fs/cgroup/unified)"
        } else {
            "v1"
        },
    );
    for (controller, required) in REQUIRED_CONTROLLERS_V1
        .iter()
        .map(|c| (*c, true))
        .chain(OPTIONAL_CONTROLLERS_V1.iter().map(|c| (*c, false)))
    {
        let mounted = host.exists(&format!("/sys/fs/cgroup/{controller}"));
        match enabled.get(controller) {
            Some(true) if mounted => item(items, "cgroups", controller, Verdict::Ok, "enabled and mounted"),
            Some(true) => item(
                items,
                "cgroups",
                controller,
                if required { Verdict::Fail } else { Verdict::Warn },
                format!("enabled but not mounted at /sys/fs/cgroup/{controller}"),
            ),
            _ => {
                let (verdict, detail) = missing(controller, required);
                item(items, "cgroups", controller, verdict, detail);
            }
        }
    }
}

fn filesystems(host: &dyn Host, kernel: &KernelFacts, items: &mut Vec<Item>) {
    let filesystems = host
        .read("/proc/filesystems")
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let registered = filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"));
    let feature = if registered {
        Feature::Present("registered in /proc/filesystems".into())
    } else {
        kernel.feature(host, "CONFIG_OVERLAY_FS", "overlay")
    };
    feature_item(
        items,
        "filesystems",
        "overlayfs",
        feature,
        Verdict::Fail,
        "containers' root file systems are overlay mounts; the kernel needs CONFIG_OVERLAY_FS",
    );
}

fn networking(host: &dyn Host, kernel: &KernelFacts, options: &Options, items: &mut Vec<Item>) {
    for (name, option, module, missing, advice) in [
        (
            "bridge",
            "CONFIG_BRIDGE",
            "bridge",
            Verdict::Fail,
            "pods attach to the cni0 bridge; the kernel needs CONFIG_BRIDGE",
        ),
        (
            "veth",
            "CONFIG_VETH",
            "veth",
            Verdict::Fail,
            "each pod's interface is a veth pair; the kernel needs CONFIG_VETH",
        ),
        (
            "vxlan",
            "CONFIG_VXLAN",
            "vxlan",
            Verdict::Warn,
            "the default flannel backend (vxlan) needs it across nodes; use --flannel-backend host-gw without it",
        ),
        (
            "nftables",
            "CONFIG_NF_TABLES",
            "nf_tables",
            Verdict::Fail,
            "pod masquerade, host ports and the service proxy are nftables rules; the kernel needs CONFIG_NF_TABLES",
        ),
        (
            "nft NAT",
            "CONFIG_NFT_NAT",
            "nft_nat",
            Verdict::Fail,
            "Services and masquerade need NAT in nftables; the kernel needs CONFIG_NFT_NAT",
        ),
    ] {
        feature_item(
            items,
            "networking",
            name,
            kernel.feature(host, option, module),
            missing,
            advice,
        );
    }
    match options
        .path
        .iter()
        .map(|dir| format!("{}/nft", dir.trim_end_matches('/')))
        .find(|p| host.exists(p))
    {
        Some(nft) => item(items, "networking", "nft program", Verdict::Ok, nft),
        None => item(
            items,
            "networking",
            "nft program",
            Verdict::Fail,
            "`nft` is not on PATH: install nftables (apt-get install nftables)",
        ),
    }
    if host.exists("/proc/sys/net/bridge/bridge-nf-call-iptables") {
        item(items, "networking", "br_netfilter", Verdict::Ok, "loaded");
    } else {
        let detail = match kernel.feature(host, "CONFIG_BRIDGE_NETFILTER", "br_netfilter") {
            Feature::Present(_) | Feature::Loadable(_) => {
                "not loaded: `modprobe br_netfilter` (and list it in /etc/modules-load.d/) for Services reached \
                 from a pod on the same bridge"
                    .to_string()
            }
            Feature::Missing(d) => format!("{d}: Services reached from a pod on the same bridge may not answer"),
            Feature::Unknown => "not loaded: `modprobe br_netfilter`".to_string(),
        };
        item(items, "networking", "br_netfilter", Verdict::Warn, detail);
    }
    match host
        .read("/proc/sys/net/ipv4/ip_forward")
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .as_deref()
    {
        Some("1") => item(
            items,
            "networking",
            "ip_forward",
            Verdict::Ok,
            "net.ipv4.ip_forward = 1",
        ),
        Some(_) => item(
            items,
            "networking",
            "ip_forward",
            Verdict::Warn,
            "net.ipv4.ip_forward = 0: bonsai turns it on when it sets up the pod network",
        ),
        None => item(
            items,
            "networking",
            "ip_forward",
            Verdict::Fail,
            "/proc/sys/net/ipv4/ip_forward cannot be read: the kernel needs IPv4 networking",
        ),
    }
}

/// Ports in `/proc/net/{tcp,tcp6}` in the LISTEN state, and in `/proc/net/{udp,udp6}` bound at all.
fn ports(host: &dyn Host, options: &Options, items: &mut Vec<Item>) {
    let in_use = |files: [&str; 2], listen_only: bool| -> Vec<u16> {
        files
            .iter()
            .filter_map(|f| host.read(f))
            .flat_map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .skip(1)
                    .filter_map(|l| {
                        let fields: Vec<&str> = l.split_whitespace().collect();
                        let port = fields.get(1)?.rsplit(':').next()?;
                        let state = fields.get(3)?;
                        (!listen_only || *state == "0A")
                            .then(|| u16::from_str_radix(port, 16).ok())
                            .flatten()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let tcp = in_use(["/proc/net/tcp", "/proc/net/tcp6"], true);
    let udp = in_use(["/proc/net/udp", "/proc/net/udp6"], false);
    for (ports, taken, protocol) in [
        (&options.tcp_ports, &tcp, "tcp"),
        (&options.udp_ports, &udp, "udp"),
    ] {
        for port in ports {
            let name = format!("{protocol}/{port}");
            if taken.contains(port) {
                item(
                    items,
                    "ports",
                    &name,
                    Verdict::Warn,
                    "in use (by bonsai itself if it runs; else stop the program holding it, or choose another port)",
                );
            } else {
                item(items, "ports", &name, Verdict::Ok, "free");
            }
        }
    }
}

/// The report as `bonsai check-config` prints it: a line per item, grouped, and a verdict.
pub fn render(items: &[Item]) -> String {
    let mut out = String::new();
    let mut group = "";
    for i in items {
        if i.group != group {
            group = i.group;
            out.push_str(&format!("{group}:\n"));
        }
        out.push_str(&format!(
            "  {:<4}  {:<14} {}\n",
            i.verdict.to_string(),
            i.name,
            i.detail
        ));
    }
    let fails = items.iter().filter(|i| i.verdict == Verdict::Fail).count();
    let warns = items.iter().filter(|i| i.verdict == Verdict::Warn).count();
    out.push_str(&match fails {
        0 => format!(
            "\nverdict: this host can run bonsai ({warns} warning{})\n",
            if warns == 1 { "" } else { "s" }
        ),
        n => format!("\nverdict: {n} essential items missing: bonsai cannot run here until they are fixed\n"),
    });
    out
}

#[cfg(test)]
mod tests;
