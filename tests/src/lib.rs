//! Harness for bonsai's end-to-end tests: the real `bonsai` binary, run as a user runs it, with
//! every process it starts stopped and every directory it uses removed, even when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod as_node;
pub mod cluster;
pub mod helm;
pub mod images;
pub mod sandbox;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// The bonsai binary under test: `$BONSAI_BIN`, else the workspace's debug build.
pub fn bonsai_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BONSAI_BIN") {
        return PathBuf::from(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let bin = target.join("debug").join("bonsai");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p bonsai` first (or set BONSAI_BIN)",
        bin.display()
    );
    bin
}

/// Runs `bonsai ARGS` to completion.
pub fn bonsai(args: &[&str]) -> Output {
    Command::new(bonsai_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A long-running bonsai process. Dropping it kills it (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    /// Every line of standard error so far.
    pub log: Vec<String>,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        Running::start_with(Command::new(bonsai_bin()), args)
    }

    /// Starts `command` (bonsai, possibly wrapped, e.g. by `ip netns exec`) with `args`.
    pub fn start_with(mut command: Command, args: &[impl AsRef<std::ffi::OsStr>]) -> Running {
        let mut child = command
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`, failing the test after `timeout`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?} within {timeout:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Every line of standard error so far (for a failing test's message).
    pub fn log_so_far(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    pub fn signal(&self, signal: i32) {
        let rc = unsafe_free_kill(self.child.id() as i32, signal);
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit, failing the test after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.log.extend(self.lines.try_iter());
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "bonsai did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_free_kill(pid: i32, signal: i32) -> i32 {
    // `kill` is the one libc call the harness needs; keep the unsafe block this small.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal)
    }
}

/// A network namespace of the test's own, with loopback up; deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("bonsai-e2e-{}-{n}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    /// Moves the calling thread into the namespace (network namespaces are per thread), so that sockets it
    /// opens from then on, such as an in-process client's, reach the server in there.
    pub fn enter_this_thread(&self) {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.name)).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    }

    /// `program` run in the namespace's network only (`nsenter --net`): unlike `ip netns exec`, which remounts
    /// `/sys` for the namespace and so hides the host's cgroup mounts, this keeps every mount as it is.
    pub fn net_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Links this namespace to `other` with a veth pair named `uplink` on both sides, each end with an address
    /// in a /24 (`ip` and `other_ip`).
    pub fn link_to(&self, ip: &str, other: &NetNs, other_ip: &str) {
        run_ok(Command::new("ip").args([
            "link",
            "add",
            "uplink",
            "netns",
            &self.name,
            "type",
            "veth",
            "peer",
            "name",
            "uplink",
            "netns",
            &other.name,
        ]));
        for (ns, addr) in [(self, ip), (other, other_ip)] {
            run_ok(Command::new("ip").args([
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "uplink",
            ]));
            run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", "uplink", "up"]));
        }
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Default for NetNs {
    fn default() -> Self {
        NetNs::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

pub(crate) fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real kubectl of minor version `minor` (the `kubectl.1.NN` binaries beside `kubectl`).
pub fn kubectl_bin(minor: u32) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kubectl = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl is not on the PATH");
    let real = std::fs::canonicalize(kubectl).unwrap();
    let bin = real.parent().unwrap().join(format!("kubectl.1.{minor}"));
    assert!(bin.is_file(), "{} is missing", bin.display());
    bin
}

/// A test node's guard, on the directory holding its `data` directory. When dropped: force-removes every container of the node's data directory (their shims outlive the server)
/// and unmounts what is still mounted under it (pods' pinned namespaces, root filesystems), so that a failing test
/// leaves nothing behind.
#[derive(Debug)]
pub struct NodeCleanup(pub PathBuf);

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        let data = self.0.join("data");
        if let Ok(entries) = std::fs::read_dir(data.join("agent/containers")) {
            let ids: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new(bonsai_bin())
                    .args(["containers", "-d"])
                    .arg(&data)
                    .args(["rm", "--force"])
                    .args(&ids)
                    .output();
            }
        }
        let prefix = self.0.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in under {
            let _ = std::process::Command::new("umount").args(["-l", mount]).status();
        }
        // The server's directory could not all go while the containers' mounts were in it (and removing the
        // containers opened it again): it goes now that nothing is mounted there.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `bonsai server` in a network namespace and data directory of its own, stopped and removed
/// on drop.
#[derive(Debug)]
pub struct Server {
    pub process: Running,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    // Declared last: the namespace goes after the process in it.
    pub netns: NetNs,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let netns = NetNs::new();
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(netns, dir, extra)
    }

    /// Starts a server on an existing namespace and directory (for restarts).
    pub fn start_in(netns: NetNs, dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Self::launch(netns, dir, extra, false, &[])
    }

    /// `start_in` with environment variables for the server process.
    pub fn start_in_with_env(
        netns: NetNs,
        dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Self::launch(netns, dir, extra, false, env)
    }

    /// Starts a server that runs its node agent too (`start` runs the control plane alone, `--disable-agent`, so
    /// that tests which play the nodes have only their own).
    pub fn start_with_agent(extra: &[&str]) -> Server {
        Self::launch(NetNs::new(), tempfile::tempdir().unwrap(), extra, true, &[])
    }

    /// `start_with_agent` on an existing namespace and directory (for restarts).
    pub fn start_in_with_agent(netns: NetNs, dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Self::launch(netns, dir, extra, true, &[])
    }

    fn launch(
        netns: NetNs,
        dir: tempfile::TempDir,
        extra: &[&str],
        agent: bool,
        env: &[(&str, &str)],
    ) -> Server {
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let data = dir.path().join("data");
        let mut args: Vec<String> = vec!["server".into(), "--data-dir".into(), data.display().to_string()];
        if !agent {
            args.push("--disable-agent".into());
        }
        args.extend(["--write-kubeconfig".into(), kubeconfig.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        // A node agent needs the host's cgroup mounts, which `ip netns exec` hides (it remounts /sys).
        let mut command = if agent {
            netns.net_command(bonsai_bin())
        } else {
            netns.command(bonsai_bin())
        };
        command.envs(env.iter().copied());
        let mut process = Running::start_with(command, &args);
        process.wait_for_log("bonsai server ready", Duration::from_secs(30));
        Server {
            process,
            dir,
            kubeconfig,
            netns,
        }
    }

    /// Runs `test` with a kube-rs client for this server (see `with_client_in`).
    pub fn with_client<F, Fut>(&self, test: F)
    where
        F: FnOnce(kube::Client) -> Fut + Send,
        Fut: std::future::Future<Output = ()>,
    {
        with_client_in(&self.netns, &self.kubeconfig, test)
    }

    /// Waits (`kubectl wait`, 90 s) for `pods` to be Ready; a failure shows every pod.
    pub fn wait_ready(&self, pods: &[&str]) {
        let mut args = vec!["wait", "--for=condition=Ready", "--timeout=90s", "pod"];
        args.extend_from_slice(pods);
        let waited = self.kubectl(33, &args);
        assert!(
            waited.status.success(),
            "{}\n{}",
            text(&waited),
            ok(self.kubectl(33, &["get", "pods", "-o", "yaml"]))
        );
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs the real kubectl 1.`minor` against this server.
    pub fn kubectl(&self, minor: u32, args: &[&str]) -> Output {
        self.kubectl_command(minor).args(args).output().unwrap()
    }

    /// kubectl 1.`minor` set up for this server, for callers that add environment or standard input.
    pub fn kubectl_command(&self, minor: u32) -> Command {
        let mut command = self.netns.command(kubectl_bin(minor));
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"));
        command
    }

    /// kubectl 1.`minor` with `args` and `input` on its standard input (for `-f -`).
    pub fn kubectl_stdin(&self, minor: u32, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_command(minor)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// The server's log so far.
    pub fn log_so_far(&mut self) -> String {
        self.process.log_so_far()
    }

    /// Stops the server with SIGTERM and hands back its namespace and directory.
    pub fn stop(mut self) -> (NetNs, tempfile::TempDir, ExitStatus) {
        self.process.signal(libc::SIGTERM);
        let status = self.process.wait(Duration::from_secs(30));
        let Server {
            process, dir, netns, ..
        } = self;
        drop(process);
        (netns, dir, status)
    }
}

/// Standard output and standard error of a finished command, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Standard output of a command that must have succeeded.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Everything a command that must have failed printed.
pub fn fails(out: Output) -> String {
    assert!(!out.status.success(), "expected a failure: {}", text(&out));
    text(&out)
}

impl Server {
    /// curl inside the server's namespace, trusting the cluster CA, with `extra` arguments
    /// (credentials, method, body); returns (HTTP code, body).
    pub fn curl(&self, path: &str, extra: &[&str]) -> (u16, String) {
        let ca = self.data_dir().join("server/tls/server-ca.crt");
        let out = self
            .netns
            .command("curl")
            .args([
                "-s",
                "-N",
                "-w",
                "\n%{http_code}",
                "--cacert",
                ca.to_str().unwrap(),
            ])
            .args(extra)
            .arg(format!("https://127.0.0.1:6443{path}"))
            .output()
            .unwrap();
        let all = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = all.rsplit_once('\n').unwrap_or(("", all.as_str()));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// A request as the admin (curl inside the server's namespace) with an optional body of the given
    /// content type; returns (HTTP code, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: &str,
    ) -> (u16, String) {
        let mut args: Vec<String> = vec![
            "-X".into(),
            method.into(),
            "-H".into(),
            format!("Content-Type: {content_type}"),
        ];
        args.extend(self.admin_credentials());
        if let Some(b) = body {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let file = self.dir.path().join(format!("body-{n}"));
            std::fs::write(&file, b).unwrap();
            args.extend(["--data-binary".into(), format!("@{}", file.display())]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.curl(path, &args)
    }

    /// The admin's client certificate and key, as curl arguments.
    pub fn admin_credentials(&self) -> Vec<String> {
        let tls = self.data_dir().join("server/tls");
        vec![
            "--cert".into(),
            tls.join("client-admin.crt").display().to_string(),
            "--key".into(),
            tls.join("client-admin.key").display().to_string(),
        ]
    }
}

/// Polls `check` every 250 ms until it holds; fails the test after `seconds`, naming `what` it waited for.
pub fn wait_for(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls `check` every 50 ms until it holds; fails the test after 15 s, naming `what` it waited for.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `test` with a kube-rs client from `kubeconfig`, on a thread moved into `netns`, failing after 60 s.
pub fn with_client_in<F, Fut>(netns: &NetNs, kubeconfig: &Path, test: F)
where
    F: FnOnce(kube::Client) -> Fut + Send,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                netns.enter_this_thread();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
                    let options = kube::config::KubeConfigOptions::default();
                    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                        .await
                        .unwrap();
                    let client = kube::Client::try_from(config).unwrap();
                    tokio::time::timeout(Duration::from_secs(60), test(client))
                        .await
                        .expect("test timed out");
                });
            })
            .join()
            .unwrap()
    });
}

/// The cgroup directories, in any hierarchy, whose path names `needle` (a pod's uid, say): what a test checks is
/// gone once its cluster is.
pub fn cgroups_naming(needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if entry.path().to_string_lossy().contains(needle) {
                    found.push(entry.path());
                }
                stack.push(entry.path());
            }
        }
    }
    found
}
