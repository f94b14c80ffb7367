//! Test images and a real registry: images built from Debian's `busybox-static` with `umoci`, pushed with
//! `skopeo` to Debian's `docker-registry`, which runs in the test's network namespace with its own config and
//! storage in the test's directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{NetNs, NodeCleanup, Running, Server};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An OCI image layout with busybox images in it.
#[derive(Debug)]
pub struct Layout {
    pub path: PathBuf,
    work: PathBuf,
}

impl Layout {
    /// A layout with tag `v1` (busybox, `/etc/removed`, cmd `/bin/sh`) and tag `v2` (v1 plus a layer that deletes
    /// `/etc/removed` and replaces `/var/cache`: whiteouts).
    pub fn busybox(dir: &Path) -> Layout {
        let path = dir.join("layout");
        let work = dir.join("layout-work");
        std::fs::create_dir_all(&work).unwrap();
        let layout = Layout { path, work };
        let l = layout.path.display().to_string();
        run(Command::new("umoci").args(["init", "--layout", &l]));
        run(Command::new("umoci").args(["new", "--image", &format!("{l}:base")]));
        let bundle = layout.work.join("b1");
        run(Command::new("umoci")
            .args(["unpack", "--image", &format!("{l}:base")])
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        for dir in ["bin", "etc", "var/cache/old", "tmp"] {
            std::fs::create_dir_all(rootfs.join(dir)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for tool in ["sh", "echo", "cat", "ls", "sleep", "true", "tar"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
        }
        std::fs::write(rootfs.join("etc/removed"), "gone in v2\n").unwrap();
        std::fs::write(rootfs.join("var/cache/old/data"), "cached\n").unwrap();
        run(Command::new("umoci")
            .args(["repack", "--image", &format!("{l}:base")])
            .arg(&bundle));
        run(Command::new("umoci").args([
            "config",
            "--image",
            &format!("{l}:base"),
            "--tag",
            "v1",
            "--config.cmd",
            "/bin/sh",
        ]));
        let bundle = layout.work.join("b2");
        run(Command::new("umoci")
            .args(["unpack", "--image", &format!("{l}:v1")])
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        std::fs::remove_file(rootfs.join("etc/removed")).unwrap();
        std::fs::remove_dir_all(rootfs.join("var/cache")).unwrap();
        std::fs::create_dir_all(rootfs.join("var/cache")).unwrap();
        std::fs::write(rootfs.join("var/cache/new"), "fresh\n").unwrap();
        run(Command::new("umoci")
            .args(["repack", "--image", &format!("{l}:v2")])
            .arg(&bundle));
        layout
    }

    /// Tag `to`: tag `from` plus the host's `files` (copied to the same paths, modes kept).
    pub fn with_host_files(&self, from: &str, to: &str, files: &[PathBuf]) {
        let l = self.path.display().to_string();
        let bundle = self.work.join(format!("with-{to}"));
        run(Command::new("umoci")
            .args(["unpack", "--image", &format!("{l}:{from}")])
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        for file in files {
            let dest = rootfs.join(file.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(file, &dest).unwrap();
        }
        run(Command::new("umoci")
            .args(["repack", "--image", &format!("{l}:{to}")])
            .arg(&bundle));
    }

    /// `skopeo copy` from tag `tag` of the layout to `dest` (any skopeo transport), as root in `netns`.
    pub fn copy(&self, netns: &NetNs, tag: &str, dest: &str, creds: Option<&str>) {
        let mut cmd = netns.command("skopeo");
        cmd.args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--multi-arch",
            "all",
        ]);
        if let Some(creds) = creds {
            cmd.args(["--dest-creds", creds]);
        }
        cmd.arg(format!("oci:{}:{tag}", self.path.display())).arg(dest);
        run(&mut cmd);
    }

    /// Adds tag `multi`: an image index whose linux/arm64 entry is `v2` and whose entry for this machine's
    /// architecture is `v1`, so a correct pull on this machine gets `v1`.
    pub fn multi_arch(&self) {
        use sha2::Digest as _;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let other = if arch == "arm64" { "amd64" } else { "arm64" };
        let entry = |tag: &str, arch: &str| {
            let digest = self.digest(tag);
            let size = std::fs::metadata(self.path.join("blobs/sha256").join(&digest[7..]))
                .unwrap()
                .len();
            serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
                               "platform": {"os": "linux", "architecture": arch}})
        };
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                       "manifests": [entry("v2", other), entry("v1", arch)]});
        let bytes = serde_json::to_vec(&index).unwrap();
        let hex = hex::encode(sha2::Sha256::digest(&bytes));
        std::fs::write(self.path.join("blobs/sha256").join(&hex), &bytes).unwrap();
        let index_path = self.path.join("index.json");
        let mut top: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
        top["manifests"].as_array_mut().unwrap().push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{hex}"), "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}}));
        std::fs::write(&index_path, serde_json::to_vec(&top).unwrap()).unwrap();
    }

    /// The manifest digest of a tag, as the layout records it.
    pub fn digest(&self, tag: &str) -> String {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.path.join("index.json")).unwrap()).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .unwrap()
    }
}

/// Debian's `docker-registry` on 127.0.0.1:5000 inside a network namespace, storing in `dir`; with basic auth
/// when `credentials` are given.
#[derive(Debug)]
pub struct Registry {
    pub process: Running,
}

impl Registry {
    pub const ADDR: &'static str = "127.0.0.1:5000";

    pub fn start(netns: &NetNs, dir: &Path, credentials: Option<(&str, &str)>) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {}\n",
            dir.join("data").display(),
            Registry::ADDR
        );
        if let Some((user, password)) = credentials {
            let htpasswd = dir.join("htpasswd");
            let line = run(Command::new("htpasswd").args(["-nbB", user, password]));
            std::fs::write(&htpasswd, line).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: bonsai-tests\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let process = Running::start_with(
            netns.command("docker-registry"),
            &[std::ffi::OsStr::new("serve"), config_path.as_os_str()],
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let probe = netns
                .command("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &format!("http://{}/v2/", Registry::ADDR),
                ])
                .output()
                .unwrap();
            let code = String::from_utf8_lossy(&probe.stdout).to_string();
            if code == "200" || code == "401" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry { process }
    }
}

#[derive(Debug)]
/// A node namespace with an upstream link (a default route, as a real node has), a registry with busybox, and a
/// server running its agent. Fields drop in order: the server first (so no agent restarts what the guard then
/// removes), then the node's containers and mounts, the registry, and the upstream namespace.
pub struct AgentNode {
    pub server: Server,
    /// Where its containers' logs go (`--pod-logs-dir`).
    pub logs: std::path::PathBuf,
    /// The server's extra arguments, kept for restarts.
    extra: Vec<String>,
    _cleanup: NodeCleanup,
    _registry: Registry,
    _upstream: NetNs,
}

impl AgentNode {
    /// The address of the uplink's far end, in `upstream()`; the node's resolv.conf names it.
    pub const UPSTREAM_IP: &'static str = "192.168.209.2";

    /// The node, ready.
    pub fn with_busybox() -> AgentNode {
        Self::with_busybox_and(&[])
    }

    /// The node, its server started with `extra` arguments too.
    pub fn with_busybox_and(extra: &[&str]) -> AgentNode {
        Self::build(extra, None)
    }

    /// The node, its registry asking for these credentials (basic auth) before it serves anything.
    pub fn with_private_busybox(user: &str, password: &str) -> AgentNode {
        Self::build(&[], Some((user, password)))
    }

    fn build(extra: &[&str], credentials: Option<(&str, &str)>) -> AgentNode {
        let (node, upstream) = (NetNs::new(), NetNs::new());
        node.link_to("192.168.209.1", &upstream, Self::UPSTREAM_IP);
        assert!(
            std::process::Command::new("ip")
                .args([
                    "-n",
                    &node.name,
                    "route",
                    "add",
                    "default",
                    "via",
                    "192.168.209.2"
                ])
                .status()
                .unwrap()
                .success()
        );
        let dir = tempfile::tempdir().unwrap();
        let cleanup = NodeCleanup(dir.path().to_path_buf());
        let registry = Registry::start(&node, &dir.path().join("registry"), credentials);
        let layout = Layout::busybox(dir.path());
        let creds = credentials.map(|(user, password)| format!("{user}:{password}"));
        layout.copy(
            &node,
            "v1",
            &format!("docker://{}/test/busybox:v1", Registry::ADDR),
            creds.as_deref(),
        );
        let logs = dir.path().join("pod-logs");
        // Names outside the cluster go to the uplink's far end (where a test may run a DNS server), never to
        // the host's resolvers.
        let resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(&resolv_conf, format!("nameserver {}\n", Self::UPSTREAM_IP)).unwrap();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.extend(["--resolv-conf".to_string(), resolv_conf.display().to_string()]);
        let server = Server::start_in_with_agent(node, dir, &Self::server_args(&logs, &extra));
        AgentNode {
            server,
            logs,
            extra,
            _cleanup: cleanup,
            _registry: registry,
            _upstream: upstream,
        }
    }
}

impl AgentNode {
    fn server_args<'a>(logs: &'a std::path::Path, extra: &'a [String]) -> Vec<&'a str> {
        let mut args = vec!["--node-name", "n1", "--pod-logs-dir", logs.to_str().unwrap()];
        args.extend(extra.iter().map(String::as_str));
        args
    }

    /// Stops the server (SIGTERM) and starts it again on the same namespace and data: the node's containers are
    /// left running in between, as they would be across an upgrade.
    pub fn restart_server(self) -> AgentNode {
        let AgentNode {
            server,
            logs,
            extra,
            _cleanup,
            _registry,
            _upstream,
        } = self;
        let (netns, dir, status) = server.stop();
        assert!(status.success(), "the server exited with {status}");
        let server = Server::start_in_with_agent(netns, dir, &Self::server_args(&logs, &extra));
        AgentNode {
            server,
            logs,
            extra,
            _cleanup,
            _registry,
            _upstream,
        }
    }

    /// The namespace on the other end of the node's uplink (where traffic from outside the node comes from).
    pub fn upstream(&self) -> &NetNs {
        &self._upstream
    }

    /// The image the node's registry holds: busybox (`sh`, `echo`, `cat`, `ls`, `sleep`, `true`, `tar`; `sh` runs
    /// every other applet by name).
    pub fn image(&self) -> String {
        format!("{}/test/busybox:v1", Registry::ADDR)
    }
}
