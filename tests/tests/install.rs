//! packaging/install.sh and the scripts it writes, run for real in a throwaway host the test builds: a network
//! namespace of its own, and a mount and PID namespace (`unshare --mount --pid --fork --mount-proc`) in which
//! /etc, /usr/local and /var/log are overlays whose writes land in the test's directory, /var/lib an empty folder
//! of the test's and /run a new tmpfs. Nothing the script writes reaches the real host, and every process it starts dies with the PID
//! namespace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use bonsai_e2e::images::{Layout, Registry};
use bonsai_e2e::sandbox::sandbox;
use bonsai_e2e::{NetNs, bonsai_bin, cgroups_naming, text};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("out").join(name)).unwrap_or_default()
}

#[test]
fn install_runs_a_pod_and_uninstall_leaves_the_host_as_it_was() {
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&netns, &dir.path().join("registry"), None);
    Layout::busybox(dir.path()).copy(
        &netns,
        "v1",
        &format!("docker://{}/test/busybox:v1", Registry::ADDR),
        None,
    );
    std::fs::write(dir.path().join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let image = format!("{}/test/busybox:v1", Registry::ADDR);
    let body = format!(
        r##"
snapshot "$OUT/before"
BONSAI_BIN="$BIN" INSTALL_BONSAI_SYMLINK=force BONSAI_KUBECONFIG_MODE=644 \
  INSTALL_BONSAI_EXEC="--node-name n1 --resolv-conf $T/resolv.conf" \
  sh "$SRC/packaging/install.sh" >"$OUT/install.log" 2>&1
ls /usr/local/bin >"$OUT/bin"
stat -c %a /etc/bonsai/bonsai.yaml >"$OUT/mode"
cp /etc/bonsai/bonsai.env "$OUT/env"
readlink /usr/local/bin/kubectl >"$OUT/link"
bonsai wait-ready --timeout 90s >"$OUT/wait-ready" 2>&1
kubectl run p --image={image} --restart=Never -- sleep 3600 >"$OUT/run" 2>&1
kubectl wait --for=condition=Ready pod/p --timeout=90s >"$OUT/wait" 2>&1 || {{ kubectl get pod p -o yaml >&2; exit 1; }}
kubectl get pod p -o jsonpath='{{.metadata.uid}}' >"$OUT/uid"
snapshot "$OUT/running"
bonsai-uninstall.sh >"$OUT/uninstall.log" 2>&1
snapshot "$OUT/after"
ls /usr/local/bin >"$OUT/bin-after"
for p in /etc/bonsai /var/lib/bonsai /var/log/pods /var/log/bonsai.log /run/bonsai; do [ -e "$p" ] && echo "$p"; done >"$OUT/left" || true
ps -e -o args= | grep -v -E '^(sh |ps |grep )' >"$OUT/ps" || true
"##,
        image = image
    );
    let out = sandbox(&netns, dir.path(), &body);
    drop(registry);
    let uid = read(dir.path(), "uid");
    // Whatever the outcome, no cgroup of the test's pod stays behind (its processes died with the namespace).
    let leftover = if uid.is_empty() {
        Vec::new()
    } else {
        cgroups_naming(&uid)
    };
    for cgroup in leftover.iter().rev() {
        let _ = std::fs::remove_dir(cgroup);
    }
    let logs = format!(
        "{}\ninstall:\n{}\nwait-ready:\n{}\nuninstall:\n{}",
        text(&out),
        read(dir.path(), "install.log"),
        read(dir.path(), "wait-ready"),
        read(dir.path(), "uninstall.log")
    );
    assert!(out.status.success(), "{logs}");

    // The binary, the scripts and the kubectl link landed where promised, with the environment file and mode.
    let bin = read(dir.path(), "bin");
    for file in [
        "bonsai",
        "bonsai-killall.sh",
        "bonsai-uninstall.sh",
        "bonsai-supervise.sh",
        "kubectl",
    ] {
        assert!(
            bin.lines().any(|l| l == file),
            "{file} not in /usr/local/bin: {bin}"
        );
    }
    assert_eq!(read(dir.path(), "link").trim(), "bonsai");
    assert_eq!(read(dir.path(), "mode").trim(), "644");
    assert!(
        read(dir.path(), "env").contains("BONSAI_KUBECONFIG_MODE=\"644\""),
        "{}",
        read(dir.path(), "env")
    );
    assert!(!read(dir.path(), "env").contains("BONSAI_BIN"));
    let install = read(dir.path(), "install.log");
    assert!(
        install.contains("started bonsai supervised in the background"),
        "{install}"
    );
    assert!(install.contains("bonsai server is running"), "{install}");
    assert_eq!(read(dir.path(), "wait-ready").trim(), "ready");

    // While it ran there was a pod network; after uninstall, links, nft tables and mounts are as before.
    let running = read(dir.path(), "running");
    assert!(
        running.contains("cni0") && running.contains("table ip bonsai"),
        "{running}"
    );
    assert_eq!(read(dir.path(), "before"), read(dir.path(), "after"), "{logs}");
    assert!(!uid.is_empty());
    assert!(leftover.is_empty(), "cgroups left behind: {leftover:?}");
    let bin_after = read(dir.path(), "bin-after");
    for file in [
        "bonsai",
        "bonsai-killall.sh",
        "bonsai-uninstall.sh",
        "bonsai-supervise.sh",
        "kubectl",
    ] {
        assert!(
            !bin_after.lines().any(|l| l == file),
            "{file} left in /usr/local/bin: {bin_after}"
        );
    }
    assert_eq!(read(dir.path(), "left"), "", "left behind");
    assert!(
        !read(dir.path(), "ps").contains("bonsai"),
        "{}",
        read(dir.path(), "ps")
    );
}

/// A fake `systemctl` that records its calls stands in for systemd (the test host has none); what is tested is
/// the script's part: the unit and its environment file, `daemon-reload`, `enable`, and the agent's variant.
#[test]
fn install_writes_systemd_units_for_a_server_and_an_agent() {
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let body = r##"
mkdir -p /run/systemd/system /usr/local/sbin
printf '#!/bin/sh\necho "$*" >>"$OUT/systemctl"\n' >/usr/local/sbin/systemctl
chmod +x /usr/local/sbin/systemctl
BONSAI_BIN="$BIN" INSTALL_BONSAI_SKIP_START=true BONSAI_KUBECONFIG_MODE=640 \
  INSTALL_BONSAI_EXEC="server --disable servicelb" sh "$SRC/packaging/install.sh" >"$OUT/server.log" 2>&1
cp /etc/systemd/system/bonsai.service "$OUT/bonsai.service"
# systemd's own parser on the unit: unknown keys, bad values and a missing ExecStart binary are reported.
systemd-analyze verify /etc/systemd/system/bonsai.service >"$OUT/verify" 2>&1 || echo "exit $?" >>"$OUT/verify"
cp /etc/systemd/system/bonsai.service.env "$OUT/bonsai.env"
BONSAI_BIN="$BIN" BONSAI_URL=https://10.0.0.1:6443 BONSAI_TOKEN=K10secret INSTALL_BONSAI_SKIP_ENABLE=true \
  sh "$SRC/packaging/install.sh" >"$OUT/agent.log" 2>&1
cp /etc/systemd/system/bonsai-agent.service "$OUT/agent.service"
systemd-analyze verify /etc/systemd/system/bonsai-agent.service >>"$OUT/verify" 2>&1 || echo "exit $?" >>"$OUT/verify"
cp /etc/systemd/system/bonsai-agent.service.env "$OUT/agent.env"
stat -c %a /etc/systemd/system/bonsai-agent.service.env >"$OUT/agent.env.mode"
! BONSAI_URL=http://10.0.0.1:6443 BONSAI_TOKEN=x BONSAI_BIN="$BIN" sh "$SRC/packaging/install.sh" >"$OUT/bad.log" 2>&1
! BONSAI_URL=https://10.0.0.1:6443 BONSAI_BIN="$BIN" sh "$SRC/packaging/install.sh" >"$OUT/notoken.log" 2>&1
"##;
    let out = sandbox(&netns, dir.path(), body);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        text(&out),
        read(dir.path(), "server.log"),
        read(dir.path(), "agent.log")
    );
    // Nothing said: systemd-analyze prints every warning and error it finds.
    assert_eq!(read(dir.path(), "verify"), "", "systemd-analyze verify");
    let unit = read(dir.path(), "bonsai.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/bonsai server --disable servicelb"),
        "{unit}"
    );
    assert!(
        unit.contains("EnvironmentFile=-/etc/systemd/system/bonsai.service.env"),
        "{unit}"
    );
    assert!(
        unit.contains("KillMode=process") && unit.contains("Delegate=yes"),
        "{unit}"
    );
    assert!(read(dir.path(), "bonsai.env").contains("BONSAI_KUBECONFIG_MODE=\"640\""));
    let agent = read(dir.path(), "agent.service");
    assert!(
        agent.contains("ExecStart=/usr/local/bin/bonsai agent\n"),
        "{agent}"
    );
    let agent_env = read(dir.path(), "agent.env");
    assert!(
        agent_env.contains("BONSAI_URL=\"https://10.0.0.1:6443\"")
            && agent_env.contains("BONSAI_TOKEN=\"K10secret\""),
        "{agent_env}"
    );
    assert_eq!(read(dir.path(), "agent.env.mode").trim(), "600");
    let calls = read(dir.path(), "systemctl");
    assert!(calls.lines().any(|l| l == "enable bonsai"), "{calls}");
    assert!(calls.lines().any(|l| l == "daemon-reload"), "{calls}");
    // SKIP_START: never started; SKIP_ENABLE: the agent neither enabled nor started.
    assert!(
        !calls.contains("restart") && !calls.contains("enable bonsai-agent"),
        "{calls}"
    );
    assert!(read(dir.path(), "bad.log").contains("BONSAI_URL must be an https:// URL"));
    assert!(read(dir.path(), "notoken.log").contains("an agent needs BONSAI_TOKEN"));
}

/// The normal (release) path: the binary and its checksum from the release URL (a `file://` one here, the network
/// rule allowing no other), and a binary whose checksum does not match refused.
#[test]
fn install_takes_the_release_binary_and_checks_its_checksum() {
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release/download/v9.9.9");
    std::fs::create_dir_all(&release).unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        _ => "arm",
    };
    std::fs::copy(bonsai_bin(), release.join(format!("bonsai-{arch}"))).unwrap();
    let sum = Command::new("sha256sum")
        .arg(format!("bonsai-{arch}"))
        .current_dir(&release)
        .output()
        .unwrap();
    std::fs::write(release.join(format!("sha256sum-{arch}.txt")), &sum.stdout).unwrap();
    std::fs::write(
        dir.path().join("kubectl"),
        "#!/bin/sh\necho fetched-kubectl \"$@\"\n",
    )
    .unwrap();
    // Run as `curl ... | sh -` runs it: from standard input, not from a checkout.
    let body = format!(
        r##"
rm -f /usr/local/bin/kubectl
mount --bind /dev/null "$(command -v kubectl)"  # no kubectl installed, as on a fresh host
INSTALL_BONSAI_RELEASE_URL=file://$T/release INSTALL_BONSAI_VERSION=v9.9.9 \
  INSTALL_BONSAI_KUBECTL_URL=file://$T/kubectl INSTALL_BONSAI_SKIP_START=true \
  sh - <"$SRC/packaging/install.sh" >"$OUT/install.log" 2>&1
cmp "$BIN" /usr/local/bin/bonsai
readlink /usr/local/bin/kubectl >"$OUT/link"
kubectl get nodes >"$OUT/kubectl" 2>&1
echo corrupt >>"$T/release/download/v9.9.9/bonsai-{arch}"
! INSTALL_BONSAI_RELEASE_URL=file://$T/release INSTALL_BONSAI_VERSION=v9.9.9 INSTALL_BONSAI_SKIP_START=true \
  sh - <"$SRC/packaging/install.sh" >"$OUT/corrupt.log" 2>&1
"##
    );
    let out = sandbox(&netns, dir.path(), &body);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        read(dir.path(), "install.log")
    );
    // No kubectl on that PATH: the fetched one is bonsai-kubectl, `kubectl` links to bonsai, which runs it.
    assert_eq!(read(dir.path(), "link").trim(), "bonsai");
    assert_eq!(read(dir.path(), "kubectl").trim(), "fetched-kubectl get nodes");
    let corrupt = read(dir.path(), "corrupt.log");
    assert!(corrupt.contains("sha256"), "{corrupt}");
}

/// The README's first command, run as written (`sudo ./packaging/install.sh`) on a fresh clone of the repository
/// at HEAD: a release build from scratch, so slow on small machines; CI runs it once (tests/run.sh runs ignored
/// tests of this file). CARGO_TARGET_DIR, when set, is reused by the build.
#[test]
#[ignore = "a release build from scratch: tests/run.sh runs it with --run-ignored"]
fn the_readme_first_command_installs_from_a_fresh_clone() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let first = readme
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .nth(1)
        .unwrap();
    let command = first.split('#').next().unwrap().trim().to_string();
    assert_eq!(command, "sudo ./packaging/install.sh");
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path().join("clone");
    let cloned = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(workspace())
        .arg(&clone)
        .output()
        .unwrap();
    assert!(cloned.status.success(), "{}", text(&cloned));
    let body = format!(
        r##"
mkdir -p "$T/sudo"; printf '#!/bin/sh\nexec "$@"\n' >"$T/sudo/sudo"; chmod +x "$T/sudo/sudo"
export PATH="$PATH:$T/sudo:$HOME/.cargo/bin"
cd "$T/clone"
INSTALL_BONSAI_EXEC="--disable-agent" {command} >"$OUT/install.log" 2>&1
bonsai kubectl get namespaces >"$OUT/namespaces" 2>&1
bonsai-uninstall.sh >"$OUT/uninstall.log" 2>&1
"##
    );
    let out = sandbox(&netns, dir.path(), &body);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        read(dir.path(), "install.log")
    );
    assert!(read(dir.path(), "namespaces").contains("kube-system"));
}

/// OpenRC, for real: Debian's openrc (unpacked by tests/tools/fetch-openrc.sh, not installed on the host) put into
/// the sandbox's /usr, and /run/openrc set up as its boot would. install.sh takes the OpenRC path: the init script
/// starts bonsai under supervise-daemon, which restarts it when it is killed; `rc-service` stops and starts it;
/// uninstall removes the service from its runlevel and leaves the host as it was.
#[test]
fn install_under_openrc_supervises_bonsai_and_uninstall_removes_the_service() {
    let openrc = workspace().join("tests/.tools/openrc");
    assert!(
        openrc.join("sbin/openrc-run").is_file(),
        "run tests/tools/fetch-openrc.sh first (tests/run.sh does)"
    );
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let body = r##"
R="$SRC/tests/.tools/openrc"
for d in /usr/sbin /usr/bin /usr/lib; do
  mkdir -p "$T/ov$d/upper" "$T/ov$d/work"
  mount -t overlay overlay -o "lowerdir=$d,upperdir=$T/ov$d/upper,workdir=$T/ov$d/work" "$d"
done
cp -a "$R/sbin/." /usr/sbin/
cp -a "$R/bin/." /usr/bin/
cp -a "$R/lib/rc" /usr/lib/rc
for libdir in "$R"/lib/*-linux-gnu; do cp -a "$libdir/." "/usr/lib/$(basename "$libdir")/"; done
cp "$R/etc/rc.conf" /etc/rc.conf
touch /etc/insserv.conf
mkdir -p /etc/conf.d /etc/runlevels/sysinit /etc/runlevels/boot /etc/runlevels/default /etc/runlevels/shutdown
# What OpenRC's own boot leaves in /run: its state directories and the runlevel it reached.
for s in daemons exclusive failed hotplugged inactive options scheduled started starting stopping tmp wasinactive; do
  mkdir -p "/run/openrc/$s"
done
echo default >/run/openrc/softlevel
bonsai_pid() { ps -e -o pid=,args= | awk '$2 == "/usr/local/bin/bonsai" && $3 == "server" {print $1}'; }
snapshot "$OUT/before"
BONSAI_BIN="$BIN" INSTALL_BONSAI_EXEC="--node-name n1 --resolv-conf $T/resolv.conf" \
  sh "$SRC/packaging/install.sh" >"$OUT/install.log" 2>&1
cp /etc/init.d/bonsai "$OUT/init.d"
ls /etc/runlevels/default >"$OUT/runlevel"
bonsai wait-ready --timeout 90s >"$OUT/wait-ready" 2>&1 || { cp /var/log/bonsai.log "$OUT/bonsai.log"; exit 1; }
rc-service bonsai status >"$OUT/status" 2>&1
ps -e -o args= | grep '^supervise-daemon bonsai' >"$OUT/supervisor"
first=$(bonsai_pid); echo "$first" >"$OUT/first"
kill -9 "$first"
i=0; while { [ -z "$(bonsai_pid)" ] || [ "$(bonsai_pid)" = "$first" ]; } && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
bonsai_pid >"$OUT/second"
bonsai wait-ready --timeout 90s >>"$OUT/wait-ready" 2>&1
bonsai kubectl get nodes -o name >"$OUT/nodes"
rc-service bonsai stop >"$OUT/stop" 2>&1
bonsai_pid >"$OUT/after-stop"
rc-service bonsai start >"$OUT/start" 2>&1
bonsai wait-ready --timeout 90s >>"$OUT/wait-ready" 2>&1
bonsai-uninstall.sh >"$OUT/uninstall.log" 2>&1
snapshot "$OUT/after"
bonsai_pid >"$OUT/after-uninstall"
ls /etc/runlevels/default >"$OUT/runlevel-after"
[ -e /etc/init.d/bonsai ] && echo "/etc/init.d/bonsai" >"$OUT/left" || true
"##;
    let out = sandbox(&netns, dir.path(), body);
    let logs = format!(
        "{}\ninstall:\n{}\nwait-ready:\n{}\nuninstall:\n{}\nbonsai.log:\n{}",
        text(&out),
        read(dir.path(), "install.log"),
        read(dir.path(), "wait-ready"),
        read(dir.path(), "uninstall.log"),
        read(dir.path(), "bonsai.log")
    );
    assert!(out.status.success(), "{logs}");
    let init = read(dir.path(), "init.d");
    assert!(
        init.starts_with("#!/sbin/openrc-run") && init.contains("supervisor=supervise-daemon"),
        "{init}"
    );
    assert_eq!(read(dir.path(), "runlevel").trim(), "bonsai", "{logs}");
    assert!(
        read(dir.path(), "status").contains("started"),
        "{}",
        read(dir.path(), "status")
    );
    assert!(!read(dir.path(), "supervisor").is_empty(), "{logs}");
    // supervise-daemon started a new bonsai after the kill, which came back ready.
    let (first, second) = (read(dir.path(), "first"), read(dir.path(), "second"));
    assert!(
        !first.trim().is_empty() && !second.trim().is_empty() && first != second,
        "{first:?} {second:?}\n{logs}"
    );
    assert_eq!(
        read(dir.path(), "wait-ready").matches("ready").count(),
        3,
        "{logs}"
    );
    assert_eq!(read(dir.path(), "nodes").trim(), "node/n1");
    assert_eq!(
        read(dir.path(), "after-stop").trim(),
        "",
        "bonsai still runs after rc-service stop"
    );
    assert_eq!(read(dir.path(), "after-uninstall").trim(), "");
    assert_eq!(read(dir.path(), "runlevel-after").trim(), "");
    assert_eq!(read(dir.path(), "left"), "");
    assert_eq!(read(dir.path(), "before"), read(dir.path(), "after"), "{logs}");
    // OpenRC made no cgroup hierarchy of its own on the host (a `bonsai` cgroup may be other tests' clusters').
    assert!(
        !Path::new("/sys/fs/cgroup/openrc").exists(),
        "OpenRC's cgroup was left"
    );
}
