//! packaging/vagrant/Vagrantfile's cluster, run as it would run under Vagrant, without a hypervisor (these hosts
//! have none): Ruby reads the Vagrantfile with Vagrant's configuration API stood in by recorders
//! (tests/vagrant/provisioners.rb), and each machine it defines becomes a throwaway host
//! (`bonsai_e2e::sandbox`: its own network, mount, PID and UTS namespaces) with the machine's hostname and private
//! network address on a shared switch, where its shell provisioners run as written. Two things differ from a VM,
//! and only these: the synced folder is a folder of the test's instead of `/bonsai` (there is no guest root to
//! mount it at), holding a copy of `packaging/` and, as `target/release/bonsai`, the binary under test; and
//! `apt-get` is a stub that records its call (the packages are on the host, and nothing outside the test's
//! namespaces is reachable).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bonsai_e2e::cluster::Hub;
use bonsai_e2e::sandbox::sandbox_command;
use bonsai_e2e::{NetNs, bonsai_bin, kubectl_bin, text};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Config {
    synced_folders: Vec<SyncedFolder>,
    machines: Vec<Machine>,
}

#[derive(Debug, Deserialize)]
struct SyncedFolder {
    guest: String,
}

#[derive(Debug, Deserialize)]
struct Machine {
    name: String,
    hostname: String,
    networks: Vec<Network>,
    provisioners: Vec<Provisioner>,
}

#[derive(Debug, Deserialize)]
struct Network {
    #[serde(rename = "type")]
    kind: String,
    ip: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Provisioner {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    inline: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `path` with every absolute reference to the guest's synced folder (`/bonsai/...`, not `/var/lib/bonsai/...`)
/// pointing at `host` instead.
fn relocate(script: &str, guest: &str, host: &Path) -> String {
    let host = host.display().to_string();
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(at) = rest.find(guest) {
        let before = rest[..at].chars().last();
        let after = rest[at + guest.len()..].chars().next();
        let starts_a_path = before.is_none_or(|c| !(c.is_alphanumeric() || "/._-".contains(c)));
        let ends_a_component = after.is_none_or(|c| c == '/' || c.is_whitespace() || "\"';".contains(c));
        out.push_str(&rest[..at]);
        out.push_str(if starts_a_path && ends_a_component {
            &host
        } else {
            guest
        });
        rest = &rest[at + guest.len()..];
    }
    out.push_str(rest);
    out
}

fn single_quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// A machine's life in its sandbox: the provisioners as Vagrant runs them (as root, with their environment),
/// then it runs until told to stop (`$T/stop`), then bonsai-uninstall.sh.
const MACHINE: &str = r##"
mkdir -p "$T/stub"
printf '#!/bin/sh\necho "apt-get $*" >>"$OUT/apt-get"\n' >"$T/stub/apt-get"
chmod +x "$T/stub/apt-get"
export PATH="$T/stub:$PATH"
hostname "$(cat "$T/hostname")"
snapshot "$OUT/before"
finish() {
  bonsai-uninstall.sh >"$OUT/uninstall.log" 2>&1 || echo "uninstall failed: $?" >>"$OUT/uninstall.log"
  snapshot "$OUT/after"
}
trap finish EXIT
for p in "$T"/provision-*.sh; do
  sh "$p" >>"$OUT/provision.log" 2>&1
done
[ ! -f /etc/bonsai/bonsai.yaml ] || cp /etc/bonsai/bonsai.yaml "$OUT/kubeconfig"
touch "$OUT/provisioned"
while [ ! -e "$T/stop" ]; do sleep 0.2; done
"##;

/// The machines' sandboxes: on drop (a failed test too), each is told to stop (agents first, as `vagrant
/// destroy` would leave the server to last), given a minute to uninstall, then killed.
struct Machines {
    running: Vec<(String, PathBuf, Child)>,
}

impl Machines {
    fn stop(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let index = self.running.iter().position(|(n, _, _)| n == name)?;
        let (_, dir, mut child) = self.running.remove(index);
        std::fs::write(dir.join("stop"), "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        let names: Vec<String> = self.running.iter().rev().map(|(n, _, _)| n.clone()).collect();
        for name in names {
            self.stop(&name);
        }
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("out").join(name)).unwrap_or_default()
}

#[test]
fn the_vagrantfile_brings_up_a_server_and_two_agents_that_join_it() {
    let parsed = Command::new("ruby")
        .arg(workspace().join("tests/vagrant/provisioners.rb"))
        .arg(workspace().join("packaging/vagrant/Vagrantfile"))
        .output()
        .expect("ruby is missing (tests/run.sh installs it)");
    assert!(parsed.status.success(), "{}", text(&parsed));
    let config: Config = serde_json::from_slice(&parsed.stdout).unwrap();
    let names: Vec<&str> = config.machines.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["server", "agent1", "agent2"]);
    let guest = &config.synced_folders[0].guest;

    // The synced folder: the packaging scripts, and the binary under test where a Linux release build would be.
    let dir = tempfile::tempdir().unwrap();
    let synced = dir.path().join("synced");
    std::fs::create_dir_all(synced.join("target/release")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(workspace().join("packaging"))
        .arg(&synced)
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", text(&copied));
    std::os::unix::fs::symlink(bonsai_bin(), synced.join("target/release/bonsai")).unwrap();

    let ips: Vec<String> = config
        .machines
        .iter()
        .map(|m| {
            let network = m.networks.iter().find(|n| n.kind == "private_network").unwrap();
            network.ip.clone().unwrap()
        })
        .collect();
    // The host side of Vagrant's private network: the switch, at .1 of the machines' subnet.
    let subnet = ips[0].rsplit_once('.').unwrap().0;
    let hub = Hub::with_ip(&format!("{subnet}.1"));
    let mut namespaces: Vec<NetNs> = Vec::new();
    let mut machines = Machines { running: Vec::new() };
    for (machine, ip) in config.machines.iter().zip(&ips) {
        let netns = NetNs::new();
        hub.plug(&netns, ip);
        let home = dir.path().join(&machine.name);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("hostname"), &machine.hostname).unwrap();
        for (n, provisioner) in machine.provisioners.iter().enumerate() {
            assert_eq!(provisioner.kind, "shell");
            let mut script = String::new();
            for (key, value) in &provisioner.env {
                script.push_str(&format!("export {key}={}\n", single_quoted(value)));
            }
            script.push_str(&relocate(&provisioner.inline, guest, &synced));
            std::fs::write(home.join(format!("provision-{n}.sh")), script).unwrap();
        }
        let child = sandbox_command(&netns, &home, MACHINE)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        machines.running.push((machine.name.clone(), home.clone(), child));
        // As `vagrant up` does, one machine after the other: each is provisioned before the next boots.
        let deadline = Instant::now() + Duration::from_secs(240);
        while !home.join("out/provisioned").exists() {
            let (_, _, child) = machines.running.last_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{} ended ({status}) while provisioning:\n{}",
                    machine.name,
                    read(&home, "provision.log")
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} is not provisioned after 240 s:\n{}",
                machine.name,
                read(&home, "provision.log")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        namespaces.push(netns);
    }

    // The server wrote the join token to the synced folder; every machine is a Ready node under its hostname.
    let server_home = dir.path().join("server");
    let token = std::fs::read_to_string(synced.join("packaging/vagrant/.cluster/token")).unwrap();
    assert!(token.starts_with("K10"), "{token}");
    let kubeconfig = server_home.join("out/kubeconfig");
    let kubectl = |args: &[&str]| {
        namespaces[0]
            .net_command(kubectl_bin(33))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .unwrap()
    };
    bonsai_e2e::wait_for(90, "the three machines to register as nodes", || {
        let out = kubectl(&["get", "nodes", "-o", "name"]);
        let listed = String::from_utf8_lossy(&out.stdout).to_string();
        ["server", "agent1", "agent2"]
            .iter()
            .all(|n| listed.lines().any(|l| l == format!("node/{n}")))
    });
    let waited = kubectl(&["wait", "--for=condition=Ready", "--timeout=90s", "node", "--all"]);
    assert!(waited.status.success(), "{}", text(&waited));
    let wide = kubectl(&["get", "nodes", "-o", "wide"]);
    let wide = String::from_utf8_lossy(&wide.stdout).to_string();
    for (machine, ip) in config.machines.iter().zip(&ips) {
        assert!(
            wide.lines()
                .any(|l| l.starts_with(&format!("{} ", machine.hostname)) && l.contains(ip.as_str())),
            "{} with {ip}: {wide}",
            machine.hostname
        );
    }
    // The agents were installed as agents (their own service, joined with the token), the server as a server.
    let provision = read(&dir.path().join("agent1"), "provision.log");
    assert!(provision.contains("bonsai-agent"), "{provision}");
    assert!(read(&server_home, "apt-get").contains("install -y -qq curl iproute2 nftables"));

    // `vagrant destroy`: agents, then the server; each uninstalls and leaves its host as it found it.
    for name in ["agent2", "agent1", "server"] {
        let status = machines.stop(name).unwrap();
        let home = dir.path().join(name);
        assert!(
            status.success(),
            "{name}: {status}\n{}\n{}",
            read(&home, "provision.log"),
            read(&home, "uninstall.log")
        );
        assert_eq!(
            read(&home, "before"),
            read(&home, "after"),
            "{name}: {}",
            read(&home, "uninstall.log")
        );
    }
}

#[test]
fn only_the_synced_folder_is_relocated() {
    let host = Path::new("/tmp/t/synced");
    assert_eq!(
        relocate(
            "sh /bonsai/packaging/install.sh; cp /var/lib/bonsai/server/token /bonsai/x; [ -x /bonsai ] && echo /bonsaix",
            "/bonsai",
            host
        ),
        "sh /tmp/t/synced/packaging/install.sh; cp /var/lib/bonsai/server/token /tmp/t/synced/x; [ -x /tmp/t/synced ] && echo /bonsaix"
    );
    assert_eq!(single_quoted("it's"), "'it'\\''s'");
}
