use std::path::Path;

use super::*;

/// A fake host: files under a temporary root.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, path: &str, contents: &str) -> &Self {
        let p = self.dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
        self
    }

    fn dir(&self, path: &str) -> &Self {
        std::fs::create_dir_all(self.dir.path().join(path.trim_start_matches('/'))).unwrap();
        self
    }

    fn host(&self) -> RootedHost {
        RootedHost::new(self.dir.path())
    }

    /// A healthy host: namespaces, overlay, the network modules, nft, forwarding on, nothing listening.
    fn healthy() -> Self {
        let fake = Fake::new();
        for ns in ["mnt", "net", "pid", "ipc", "uts"] {
            fake.file(&format!("/proc/self/ns/{ns}"), "");
        }
        fake.file("/proc/sys/kernel/osrelease", "6.1.0-test\n")
            .file("/proc/cmdline", "console=ttyS0 root=/dev/sda1\n")
            .file("/proc/filesystems", "nodev\tsysfs\nnodev\toverlay\n")
            .file("/proc/sys/net/ipv4/ip_forward", "1\n")
            .file("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n")
            .file("/usr/sbin/nft", "")
            .file(
                "/lib/modules/6.1.0-test/modules.builtin",
                "kernel/net/bridge/bridge.ko\nkernel/drivers/net/veth.ko\nkernel/net/netfilter/nf_tables.ko\n\
                 kernel/net/netfilter/nft_nat.ko\n",
            )
            .dir("/sys/module/vxlan");
        fake
    }

    fn v1(self, memory_enabled: bool) -> Self {
        let mut table = String::from("#subsys_name\thierarchy\tnum_cgroups\tenabled\n");
        for c in [
            "cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "pids",
        ] {
            let enabled = if c == "memory" && !memory_enabled { 0 } else { 1 };
            table.push_str(&format!("{c}\t1\t1\t{enabled}\n"));
            self.dir(&format!("/sys/fs/cgroup/{c}"));
        }
        self.file("/proc/cgroups", &table);
        self
    }

    fn v2(self, controllers: &str) -> Self {
        self.file("/sys/fs/cgroup/cgroup.controllers", controllers);
        self
    }
}

fn find<'a>(items: &'a [Item], group: &str, name: &str) -> &'a Item {
    items
        .iter()
        .find(|i| i.group == group && i.name == name)
        .unwrap_or_else(|| panic!("no item {group}/{name} in {items:#?}"))
}

#[test]
fn a_healthy_v1_host_passes() {
    let fake = Fake::healthy().v1(true);
    let items = check(&fake.host(), &Options::default());
    assert_eq!(worst(&items), Verdict::Ok, "{}", render(&items));
    assert_eq!(find(&items, "cgroups", "hierarchy").detail, "v1");
    assert_eq!(find(&items, "cgroups", "memory").verdict, Verdict::Ok);
    assert_eq!(find(&items, "networking", "vxlan").detail, "loaded");
    assert_eq!(find(&items, "networking", "bridge").detail, "built in");
    assert!(render(&items).contains("verdict: this host can run bonsai (0 warnings)"));
}

#[test]
fn a_healthy_v2_host_passes() {
    let fake = Fake::healthy().v2("cpuset cpu io memory hugetlb pids rdma misc\n");
    let items = check(&fake.host(), &Options::default());
    assert_eq!(worst(&items), Verdict::Ok, "{}", render(&items));
    assert!(find(&items, "cgroups", "hierarchy").detail.starts_with("v2"));
    // v1's controllers are not asked for on a v2 host.
    assert!(items.iter().all(|i| i.name != "cpuacct"));
}

#[test]
fn a_disabled_memory_controller_fails_with_the_raspberry_pi_hint() {
    for fake in [
        Fake::healthy().v1(false),
        Fake::healthy().v2("cpuset cpu io pids\n"),
    ] {
        let items = check(&fake.host(), &Options::default());
        let memory = find(&items, "cgroups", "memory");
        assert_eq!(memory.verdict, Verdict::Fail);
        assert!(
            memory.detail.contains("cgroup_memory=1 cgroup_enable=memory"),
            "{}",
            memory.detail
        );
        assert_eq!(worst(&items), Verdict::Fail);
        assert!(render(&items).contains("essential items missing"));
    }
    let fake = Fake::healthy().v1(false);
    fake.file("/proc/cmdline", "console=tty1 cgroup_disable=memory\n");
    let items = check(&fake.host(), &Options::default());
    assert!(
        find(&items, "cgroups", "memory")
            .detail
            .contains("cgroup_disable=memory on the kernel command line")
    );
}

#[test]
fn a_missing_optional_controller_is_a_warning() {
    let fake = Fake::healthy().v2("cpu memory pids\n");
    let items = check(&fake.host(), &Options::default());
    assert_eq!(find(&items, "cgroups", "io").verdict, Verdict::Warn);
    assert_eq!(worst(&items), Verdict::Warn);
}

#[test]
fn no_cgroups_at_all_fails() {
    let fake = Fake::healthy();
    let items = check(&fake.host(), &Options::default());
    assert_eq!(find(&items, "cgroups", "hierarchy").verdict, Verdict::Fail);
}

#[test]
fn kernel_features_come_from_the_kernel_configuration_when_not_loaded() {
    let fake = Fake::new().v2("cpu memory pids cpuset io\n");
    fake.file("/proc/sys/kernel/osrelease", "6.1.0-cfg\n").file(
        "/boot/config-6.1.0-cfg",
        "CONFIG_BRIDGE=m\nCONFIG_VETH=y\n# CONFIG_VXLAN is not set\nCONFIG_NF_TABLES=m\nCONFIG_NFT_NAT=m\n\
         CONFIG_OVERLAY_FS=m\nCONFIG_BRIDGE_NETFILTER=m\n",
    );
    let items = check(&fake.host(), &Options::default());
    assert_eq!(find(&items, "networking", "bridge").verdict, Verdict::Ok);
    assert!(
        find(&items, "networking", "bridge")
            .detail
            .contains("loaded on first use")
    );
    assert_eq!(
        find(&items, "networking", "veth").detail,
        "built in (CONFIG_VETH=y)"
    );
    let vxlan = find(&items, "networking", "vxlan");
    assert_eq!(vxlan.verdict, Verdict::Warn);
    assert!(vxlan.detail.contains("host-gw"), "{}", vxlan.detail);
    assert_eq!(find(&items, "filesystems", "overlayfs").verdict, Verdict::Ok);
    let br = find(&items, "networking", "br_netfilter");
    assert_eq!(br.verdict, Verdict::Warn);
    assert!(br.detail.contains("modprobe br_netfilter"));
    // No namespaces, no nft, no ip_forward in this fake: each an essential failure.
    assert_eq!(find(&items, "namespaces", "net").verdict, Verdict::Fail);
    assert_eq!(find(&items, "networking", "nft program").verdict, Verdict::Fail);
    assert_eq!(find(&items, "networking", "ip_forward").verdict, Verdict::Fail);
}

#[test]
fn a_compressed_proc_config_is_read() {
    use std::io::Write;
    let fake = Fake::new();
    fake.file("/proc/sys/kernel/osrelease", "6.1.0-gz\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"CONFIG_OVERLAY_FS=y\n").unwrap();
    std::fs::create_dir_all(fake.dir.path().join("proc")).unwrap();
    std::fs::write(fake.dir.path().join("proc/config.gz"), gz.finish().unwrap()).unwrap();
    let items = check(&fake.host(), &Options::default());
    assert_eq!(
        find(&items, "filesystems", "overlayfs").detail,
        "built in (CONFIG_OVERLAY_FS=y)"
    );
    // Not in that configuration: missing, an essential failure.
    assert_eq!(find(&items, "networking", "nftables").verdict, Verdict::Fail);
}

#[test]
fn forwarding_off_is_a_warning_and_taken_ports_are_reported() {
    let fake = Fake::healthy().v1(true);
    fake.file("/proc/sys/net/ipv4/ip_forward", "0\n")
        .file(
            "/proc/net/tcp",
            "  sl  local_address rem_address   st\n   0: 00000000:192B 00000000:0000 0A 0\n   1: \
             0100007F:280A 0100007F:1234 01 0\n",
        )
        .file(
            "/proc/net/udp",
            "  sl  local_address rem_address   st\n   0: 00000000:2118 00000000:0000 07 0\n",
        );
    let items = check(&fake.host(), &Options::default());
    assert_eq!(find(&items, "networking", "ip_forward").verdict, Verdict::Warn);
    // 0x192B = 6443 listening; 0x280A = 10250 only as a connection's local end, not listening.
    assert_eq!(find(&items, "ports", "tcp/6443").verdict, Verdict::Warn);
    assert_eq!(find(&items, "ports", "tcp/10250").verdict, Verdict::Ok);
    assert_eq!(find(&items, "ports", "udp/8472").verdict, Verdict::Warn);
    assert_eq!(worst(&items), Verdict::Warn);
}

#[test]
fn module_names_from_paths() {
    assert_eq!(module_name("kernel/drivers/net/vxlan/vxlan.ko"), "vxlan");
    assert_eq!(module_name("kernel/fs/overlayfs/overlay.ko.zst"), "overlay");
    assert!(Path::new("/").exists());
}

#[test]
fn this_host_is_checked_without_panicking() {
    let items = check(&RootedHost::real(), &Options::default());
    assert!(items.iter().any(|i| i.group == "cgroups"));
    assert!(!render(&items).is_empty());
}
