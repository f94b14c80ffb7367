//! An external etcd (`--datastore-endpoint`) against the real binary: a 3-member etcd cluster (Debian's
//! `etcd-server`) on the loopback of a network namespace of the test's, and two bonsai servers beside it that share
//! it with one token. Both serve the same cluster (one CA, one service-account key, one state); the scheduler and
//! controllers run on one at a time; when that one is killed the other takes them over and the API keeps
//! answering; the state survives; a server with another token is turned away; etcd losing one member of three
//! changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use bonsai_e2e::{NetNs, Running, bonsai_bin, kubectl_bin, ok, text, wait_for};

/// One etcd member, killed on drop.
struct Member(Child);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A 3-member etcd cluster on the namespace's loopback: clients on 2379, 2389, 2399.
struct EtcdCluster {
    members: Vec<Option<Member>>,
    _dir: tempfile::TempDir,
}

const CLIENT_PORTS: [u16; 3] = [2379, 2389, 2399];

fn etcd_bin() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .expect("etcd is missing: apt-get install etcd-server (tests/run.sh does)")
}

impl EtcdCluster {
    fn start(ns: &NetNs) -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap();
        let peers: Vec<String> = CLIENT_PORTS
            .iter()
            .map(|p| format!("http://127.0.0.1:{}", p + 1))
            .collect();
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}={p}"))
            .collect();
        let members = CLIENT_PORTS
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let url = format!("http://127.0.0.1:{port}");
                let child = ns
                    .command(etcd_bin())
                    .args(["--name", &format!("e{i}"), "--data-dir"])
                    .arg(dir.path().join(format!("e{i}")))
                    .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
                    .args([
                        "--listen-peer-urls",
                        &peers[i],
                        "--initial-advertise-peer-urls",
                        &peers[i],
                    ])
                    .args(["--initial-cluster", &initial.join(",")])
                    .args(["--initial-cluster-state", "new", "--log-level", "error"])
                    .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                Some(Member(child))
            })
            .collect();
        let cluster = EtcdCluster { members, _dir: dir };
        wait_for(60, "the etcd cluster to be healthy", || {
            CLIENT_PORTS.iter().all(|port| {
                let out = ns
                    .command("curl")
                    .args([
                        "-s",
                        "--max-time",
                        "2",
                        &format!("http://127.0.0.1:{port}/health"),
                    ])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains(r#""health":"true""#)
            })
        });
        cluster
    }

    fn endpoint() -> String {
        CLIENT_PORTS
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A control-plane-only bonsai server in the shared namespace, on its own port and data directory.
struct ControlPlane {
    process: Option<Running>,
    dir: tempfile::TempDir,
    port: u16,
}

impl ControlPlane {
    fn args(&self, token: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "server".into(),
            "--disable-agent".into(),
            "--data-dir".into(),
            self.data().display().to_string(),
            "--write-kubeconfig".into(),
            self.kubeconfig().display().to_string(),
            "--https-listen-port".into(),
            self.port.to_string(),
            "--datastore-endpoint".into(),
            EtcdCluster::endpoint(),
        ];
        if let Some(token) = token {
            args.extend(["--token".into(), token.into()]);
        }
        args
    }

    fn start(ns: &NetNs, port: u16, token: Option<&str>) -> ControlPlane {
        let mut server = ControlPlane {
            process: None,
            dir: tempfile::tempdir().unwrap(),
            port,
        };
        server.launch(ns, token);
        server
    }

    fn launch(&mut self, ns: &NetNs, token: Option<&str>) {
        let mut process = Running::start_with(ns.command(bonsai_bin()), &self.args(token));
        process.wait_for_log("bonsai server ready", Duration::from_secs(60));
        self.process = Some(process);
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.data().join("server/token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The identity this server takes Leases with (`<hostname>_<id>`): its id is in the data directory.
    fn identity_suffix(&self) -> String {
        std::fs::read_to_string(self.data().join("server/identity"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn kubectl(&self, ns: &NetNs, args: &[&str]) -> Output {
        ns.command(kubectl_bin(33))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .output()
            .unwrap()
    }

    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.signal(libc::SIGKILL);
            drop(process);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn lease_holder(server: &ControlPlane, ns: &NetNs, lease: &str) -> String {
    let out = server.kubectl(
        ns,
        &[
            "get",
            "lease",
            "-n",
            "kube-system",
            lease,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    text(&out)
}

#[test]
fn two_servers_share_one_etcd_and_the_survivor_takes_over_when_the_leader_dies() {
    let ns = NetNs::new();
    let mut etcd = EtcdCluster::start(&ns);
    let first = ControlPlane::start(&ns, 6443, None);
    let token = first.token();
    assert!(token.starts_with("K10"), "{token}");
    let second = ControlPlane::start(&ns, 6444, Some(&token));

    // One cluster: the same CA and service-account key, and the same token, on both.
    for file in [
        "server/tls/server-ca.crt",
        "server/tls/server-ca.key",
        "server/tls/service.key",
    ] {
        assert_eq!(
            read(&first.data().join(file)),
            read(&second.data().join(file)),
            "{file}"
        );
    }
    assert_eq!(second.token(), token);

    // One state: what one server writes, the other serves, at the same resourceVersion.
    ok(first.kubectl(&ns, &["create", "configmap", "shared", "--from-literal=k=v"]));
    let rv_first = ok(first.kubectl(
        &ns,
        &[
            "get",
            "cm",
            "shared",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    ));
    let rv_second = ok(second.kubectl(
        &ns,
        &[
            "get",
            "cm",
            "shared",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    ));
    assert_eq!(rv_first, rv_second);
    // A service-account token one server issues is accepted by the other (one signing key).
    let sa_token = ok(first.kubectl(&ns, &["create", "token", "default"]));
    // (A kubeconfig-less kubectl: with the admin's client certificate, the certificate would be who asks.)
    let whoami = ok(ns
        .command(kubectl_bin(33))
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            &format!("https://127.0.0.1:{}", second.port),
        ])
        .arg("--certificate-authority")
        .arg(second.data().join("server/tls/server-ca.crt"))
        .args([
            "--token",
            sa_token.trim(),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap());
    assert_eq!(whoami, "system:serviceaccount:default:default");

    // A server with another cluster's token is turned away before it serves anything.
    let stranger = tempfile::tempdir().unwrap();
    let mut refused = Running::start_with(
        ns.command(bonsai_bin()),
        &[
            "server",
            "--disable-agent",
            "--data-dir",
            stranger.path().join("data").to_str().unwrap(),
            "--write-kubeconfig",
            stranger.path().join("kubeconfig.yaml").to_str().unwrap(),
            "--https-listen-port",
            "6445",
            "--datastore-endpoint",
            &EtcdCluster::endpoint(),
            "--token",
            "not-the-cluster-secret",
        ],
    );
    let status = refused.wait(Duration::from_secs(30));
    assert!(!status.success());
    let log = refused.log_so_far();
    assert!(log.contains("whose token is not this one"), "{log}");
    assert!(!stranger.path().join("kubeconfig.yaml").exists());

    // The scheduler and the controllers run on one server at a time.
    let mut servers = [first, second];
    let holder = |servers: &[ControlPlane], lease: &str| {
        let live = servers.iter().find(|s| s.process.is_some()).unwrap();
        lease_holder(live, &ns, lease)
    };
    wait_for(60, "both Leases to be held", || {
        !holder(&servers, "kube-controller-manager").is_empty()
            && !holder(&servers, "kube-scheduler").is_empty()
    });
    let leader_identity = holder(&servers, "kube-controller-manager");
    let leader = servers
        .iter()
        .position(|s| leader_identity.ends_with(&s.identity_suffix()))
        .unwrap_or_else(|| panic!("{leader_identity} is neither server"));
    let survivor = 1 - leader;

    // The leader dies without a goodbye; the survivor answers throughout and takes over within the lease time.
    servers[leader].kill();
    ok(servers[survivor].kubectl(&ns, &["get", "cm", "shared"]));
    let survivor_id = servers[survivor].identity_suffix();
    wait_for(
        90,
        "the survivor to take over the controllers' and scheduler's Leases",
        || {
            holder(&servers, "kube-controller-manager").ends_with(&survivor_id)
                && holder(&servers, "kube-scheduler").ends_with(&survivor_id)
        },
    );
    // Its controllers work: a Deployment created now gets its ReplicaSet and pods.
    ok(servers[survivor].kubectl(
        &ns,
        &[
            "create",
            "deployment",
            "after",
            "--image=registry.invalid/x:1",
            "--replicas=2",
        ],
    ));
    wait_for(
        60,
        "the survivor's controllers to create the deployment's pods",
        || {
            let pods =
                text(&servers[survivor].kubectl(&ns, &["get", "pods", "-l", "app=after", "-o", "name"]));
            pods.lines().count() == 2
        },
    );

    // etcd losing one member of three keeps its quorum: once it has a leader again (a write in flight meanwhile
    // gets a 503, as from kube-apiserver), writes and reads go on.
    etcd.members[0] = None;
    let manifest = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-member-loss"}}"#;
    wait_for(30, "a write after etcd lost a member", || {
        let mut child = ns
            .command(kubectl_bin(33))
            .arg("--kubeconfig")
            .arg(servers[survivor].kubeconfig())
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        child.wait().unwrap().success()
    });

    // The killed server comes back into the same cluster, with everything written meanwhile.
    servers[leader].launch(&ns, Some(&token));
    for name in ["shared", "after-member-loss"] {
        ok(servers[leader].kubectl(&ns, &["get", "cm", name]));
    }
    let rs = ok(servers[leader].kubectl(&ns, &["get", "rs", "-l", "app=after", "-o", "name"]));
    assert_eq!(rs.lines().count(), 1, "{rs}");
}
