//! A multi-node cluster for end-to-end tests: a server (with its own node agent) and agents joined to it with
//! `bonsai agent`, each node a network namespace of its own with its own data directory, registry (holding
//! test/busybox:v1 on 127.0.0.1:5000, as `AgentNode`'s) and pod logs, all linked through a bridge in a hub
//! namespace (the "switch" between the machines), whose bridge address is every node's default route and
//! upstream resolver.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::images::{Layout, Registry};
use crate::{NetNs, NodeCleanup, Running, Server, run_ok};

/// The nodes' eviction thresholds: memory only, so that a test host's full disk (the kubelet's default
/// `nodefs.available<10%,imagefs.available<15%`) does not evict the pods under test.
const NO_DISK_EVICTION: &str = "eviction-hard=memory.available<100Mi";

/// The hub's bridge address.
pub const HUB_IP: &str = "192.168.230.254";

/// The switch: a namespace with a bridge every node's uplink is a port of.
#[derive(Debug)]
pub struct Hub {
    pub netns: NetNs,
    /// The bridge's address: the nodes' default route.
    pub ip: String,
    ports: std::sync::atomic::AtomicUsize,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::with_ip(HUB_IP)
    }

    /// A hub whose bridge is `ip`/24, for nodes on that subnet.
    pub fn with_ip(ip: &str) -> Hub {
        let netns = NetNs::new();
        run_ok(Command::new("ip").args(["-n", &netns.name, "link", "add", "br0", "type", "bridge"]));
        run_ok(Command::new("ip").args([
            "-n",
            &netns.name,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "br0",
        ]));
        run_ok(Command::new("ip").args(["-n", &netns.name, "link", "set", "br0", "up"]));
        Hub {
            netns,
            ip: ip.to_string(),
            ports: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Plugs `node` in: its `uplink` gets `ip`/24 and a default route through the hub.
    pub fn plug(&self, node: &NetNs, ip: &str) {
        let port = format!(
            "port{}",
            self.ports.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        run_ok(Command::new("ip").args([
            "link",
            "add",
            "uplink",
            "netns",
            &node.name,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.netns.name,
        ]));
        run_ok(Command::new("ip").args([
            "-n",
            &self.netns.name,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]));
        run_ok(Command::new("ip").args([
            "-n",
            &node.name,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "uplink",
        ]));
        run_ok(Command::new("ip").args(["-n", &node.name, "link", "set", "uplink", "up"]));
        run_ok(Command::new("ip").args(["-n", &node.name, "route", "add", "default", "via", &self.ip]));
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

/// What every node has beside its bonsai: a registry with busybox, pod logs and a resolv.conf naming the hub.
#[derive(Debug)]
struct NodeParts {
    logs: PathBuf,
    resolv_conf: PathBuf,
    _registry: Registry,
}

impl NodeParts {
    fn new(netns: &NetNs, dir: &std::path::Path) -> NodeParts {
        let registry = Registry::start(netns, &dir.join("registry"), None);
        let layout = Layout::busybox(dir);
        layout.copy(
            netns,
            "v1",
            &format!("docker://{}/test/busybox:v1", Registry::ADDR),
            None,
        );
        let resolv_conf = dir.join("resolv.conf");
        std::fs::write(&resolv_conf, format!("nameserver {HUB_IP}\n")).unwrap();
        NodeParts {
            logs: dir.join("pod-logs"),
            resolv_conf,
            _registry: registry,
        }
    }
}

/// A node joined with `bonsai agent`. Fields drop in order: the agent, its containers and mounts, its registry,
/// its namespace.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    pub ip: String,
    pub process: Option<Running>,
    pub dir: PathBuf,
    _cleanup: NodeCleanup,
    parts: NodeParts,
    pub netns: NetNs,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn new(hub: &Hub, name: &str, ip: &str) -> Agent {
        let netns = NetNs::new();
        hub.plug(&netns, ip);
        let tempdir = tempfile::tempdir().unwrap();
        let dir = tempdir.path().to_path_buf();
        let cleanup = NodeCleanup(dir.clone());
        let parts = NodeParts::new(&netns, &dir);
        Agent {
            name: name.to_string(),
            ip: ip.to_string(),
            process: None,
            dir,
            _cleanup: cleanup,
            parts,
            netns,
            _dir: tempdir,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `bonsai agent` for this node, with `token`, as a command.
    pub fn command(&self, server_ip: &str, token: &str) -> (Command, Vec<String>) {
        let command = self.netns.net_command(crate::bonsai_bin());
        let args = vec![
            "agent".to_string(),
            "--server".into(),
            format!("https://{server_ip}:6443"),
            "--token".into(),
            token.into(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--node-name".into(),
            self.name.clone(),
            "--node-ip".into(),
            self.ip.clone(),
            "--pod-logs-dir".into(),
            self.parts.logs.display().to_string(),
            "--resolv-conf".into(),
            self.parts.resolv_conf.display().to_string(),
            "--kubelet-arg".into(),
            NO_DISK_EVICTION.into(),
        ];
        (command, args)
    }

    /// Starts the agent and waits until it says it is ready.
    pub fn start(&mut self, server_ip: &str, token: &str) {
        let (command, args) = self.command(server_ip, token);
        let mut process = Running::start_with(command, &args);
        process.wait_for_log("bonsai agent ready", Duration::from_secs(60));
        self.process = Some(process);
    }

    /// Runs the agent with `token` expecting it to fail, and hands back its output (killed after 30 s).
    pub fn join_fails(&self, server_ip: &str, token: &str) -> Output {
        let (mut command, args) = self.command(server_ip, token);
        command.args(&args).env_remove("RUST_LOG");
        let out = Command::new("timeout")
            .arg("30")
            .arg(command.get_program())
            .args(command.get_args())
            .output()
            .unwrap();
        assert!(!out.status.success(), "the agent joined: {}", crate::text(&out));
        out
    }

    /// Kills the agent (SIGKILL, as a machine that dies); its containers stay.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal(libc::SIGKILL);
            process.wait(Duration::from_secs(10));
        }
    }
}

/// One server and its agents. Fields drop in order: the agents (each with its namespace), then the server's
/// guard, registry and server, and the hub last.
#[derive(Debug)]
pub struct Cluster {
    pub agents: Vec<Agent>,
    pub server: Server,
    _server_cleanup: NodeCleanup,
    _server_parts: NodeParts,
    pub hub: Hub,
    /// The server's arguments after `server`, for restarts.
    server_args: Vec<String>,
}

impl Cluster {
    pub const SERVER_IP: &'static str = "192.168.230.1";

    /// A server (node `s1`, with `server_args`) and `agents` agents (`a1`, `a2`, ...), all Ready.
    pub fn start(agents: usize, server_args: &[&str]) -> Cluster {
        let hub = Hub::new();
        let netns = NetNs::new();
        hub.plug(&netns, Self::SERVER_IP);
        let dir = tempfile::tempdir().unwrap();
        let cleanup = NodeCleanup(dir.path().to_path_buf());
        let parts = NodeParts::new(&netns, dir.path());
        let logs = parts.logs.display().to_string();
        let resolv = parts.resolv_conf.display().to_string();
        let mut args = vec![
            "--node-name",
            "s1",
            "--node-ip",
            Self::SERVER_IP,
            "--pod-logs-dir",
            &logs,
            "--resolv-conf",
            &resolv,
            "--kubelet-arg",
            NO_DISK_EVICTION,
        ];
        args.extend_from_slice(server_args);
        let server = Server::start_in_with_agent(netns, dir, &args);
        let server_args = args.iter().map(|s| s.to_string()).collect();
        let mut cluster = Cluster {
            agents: Vec::new(),
            server,
            _server_cleanup: cleanup,
            _server_parts: parts,
            hub,
            server_args,
        };
        let token = cluster.server_token();
        for i in 0..agents {
            let mut agent = Agent::new(
                &cluster.hub,
                &format!("a{}", i + 1),
                &format!("192.168.230.{}", 11 + i),
            );
            agent.start(Self::SERVER_IP, &token);
            cluster.agents.push(agent);
        }
        cluster.wait_nodes_ready();
        cluster
    }

    /// Stops the server (SIGTERM), leaves the agents without it for `down`, and starts it again on the same
    /// data: what agents see when their server goes away for a while.
    pub fn restart_server(&mut self, down: Duration) {
        self.server.process.signal(libc::SIGTERM);
        assert!(self.server.process.wait(Duration::from_secs(30)).success());
        std::thread::sleep(down);
        let mut args = vec![
            "server".to_string(),
            "--data-dir".into(),
            self.server.data_dir().display().to_string(),
            "--write-kubeconfig".into(),
            self.server.kubeconfig.display().to_string(),
        ];
        args.extend(self.server_args.iter().cloned());
        let mut process = Running::start_with(self.server.netns.net_command(crate::bonsai_bin()), &args);
        process.wait_for_log("bonsai server ready", Duration::from_secs(30));
        self.server.process = process;
    }

    /// The server's own join token (`<data-dir>/server/token`).
    pub fn server_token(&self) -> String {
        std::fs::read_to_string(self.server.data_dir().join("server/token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A new node plugged into the hub, not started.
    pub fn new_agent(&self, name: &str, ip: &str) -> Agent {
        Agent::new(&self.hub, name, ip)
    }

    /// Waits for every node (the server's and the agents') to be registered, then (90 s) to be Ready.
    pub fn wait_nodes_ready(&self) {
        let mut expected = vec!["s1".to_string()];
        expected.extend(self.agents.iter().map(|a| a.name.clone()));
        crate::wait_for(60, "every node to register", || {
            let out = self.server.kubectl(33, &["get", "nodes", "-o", "name"]);
            let names = String::from_utf8_lossy(&out.stdout).to_string();
            expected
                .iter()
                .all(|n| names.lines().any(|l| l == format!("node/{n}")))
        });
        let waited = self.server.kubectl(
            33,
            &["wait", "--for=condition=Ready", "--timeout=90s", "node", "--all"],
        );
        assert!(
            waited.status.success(),
            "{}\n{}",
            crate::text(&waited),
            crate::text(&self.server.kubectl(33, &["get", "nodes", "-o", "wide"]))
        );
    }

    /// The image every node's registry holds.
    pub fn image(&self) -> String {
        format!("{}/test/busybox:v1", Registry::ADDR)
    }
}
