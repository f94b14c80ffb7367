//! Containers: an overlayfs root filesystem over an image's unpacked layers, an OCI runtime spec, and a shim per
//! container (this binary re-executed as `bonsai shim`) that runs it with youki's libcontainer, writes its
//! output as CRI logs and records how it ended. The shim is its own process group and outlives whoever started
//! it, so containers keep running across restarts of the server or agent.
//!
//! ```text
//! <root>/<id>/config.json        what the caller asked for (ContainerConfig)
//! <root>/<id>/bundle/config.json the OCI runtime spec; bundle/rootfs is the overlay mount
//! <root>/<id>/upper, work        the container's writable layer
//! <root>/<id>/state.json         written by the shim once the container runs: pids, start time
//! <root>/<id>/exit.json          written by the shim when it ends: exit code, reason, time
//! ```

pub mod attach;
pub mod cgroups;
pub mod monitor_binary;
pub mod seccomp;
pub mod shim;
pub mod spec;
pub mod terminal;

pub use shim_monitor::log::now_rfc3339;

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ImageError;
use crate::store::ContentStore;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("invalid container configuration: {0}")]
    Config(String),
    #[error("no container {0}")]
    NotFound(String),
    #[error("container {0} already exists")]
    Exists(String),
    #[error("container {0} is still running")]
    Running(String),
    #[error("{0}")]
    Runtime(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_limit: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    /// An image name in the store (`docker.io/library/busybox:1.36`, or as pulled).
    pub image: String,
    /// Replaces the image's entrypoint (Kubernetes' `command`).
    pub command: Option<Vec<String>>,
    /// Replaces the image's cmd (Kubernetes' `args`).
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    /// The network namespace to join (a pod's); none: a new, empty one.
    pub network_namespace: Option<PathBuf>,
    pub mounts: Vec<BindMount>,
    pub resources: Resources,
    /// The cgroup this container's cgroup goes under, relative to the cgroup root (`bonsai/pod-<uid>`).
    pub cgroup_parent: String,
    pub readonly_rootfs: bool,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    /// Where the CRI-format log goes; default `<state>/container.log`.
    pub log_path: Option<PathBuf>,
    /// Keep the container's standard input open for attached clients (Kubernetes' `stdin`).
    #[serde(default)]
    pub stdin: bool,
    /// Close it when the first attached client's input ends (`stdinOnce`).
    #[serde(default)]
    pub stdin_once: bool,
    /// Give the container a terminal (`tty`): its output then comes as one stream, logged as stdout.
    #[serde(default)]
    pub tty: bool,
    /// Kubernetes' `seccompProfile`.
    #[serde(default)]
    pub seccomp: seccomp::Seccomp,
    /// Start the process only once a client is attached (up to 30 s), so that it sees all the output.
    #[serde(default)]
    pub attach_before_start: bool,
    /// Groups the process is in besides its own (Kubernetes' fsGroup and supplementalGroups).
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// `securityContext.privileged`: every capability, no masked or read-only paths, /sys writable, every device
    /// allowed by the device cgroup.
    #[serde(default)]
    pub privileged: bool,
    /// The `no_new_privs` bit: set only when `allowPrivilegeEscalation: false` (the kubelet's
    /// `AddNoNewPrivileges`).
    #[serde(default)]
    pub no_new_privileges: bool,
    /// The process's `oom_score_adj` (the kubelet's per-QoS values); `None` leaves the runtime's.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
}

impl ContainerConfig {
    /// The container's cgroup, relative to the cgroup root.
    pub fn cgroups_path(&self) -> String {
        format!("/{}/{}", self.cgroup_parent.trim_matches('/'), self.id)
    }

    pub fn new(id: &str, image: &str) -> ContainerConfig {
        ContainerConfig {
            id: id.to_string(),
            image: image.to_string(),
            command: None,
            args: None,
            env: Vec::new(),
            working_dir: None,
            user: None,
            hostname: None,
            network_namespace: None,
            mounts: Vec::new(),
            resources: Resources::default(),
            cgroup_parent: "bonsai".into(),
            readonly_rootfs: false,
            capabilities_add: Vec::new(),
            capabilities_drop: Vec::new(),
            log_path: None,
            stdin: false,
            stdin_once: false,
            tty: false,
            attach_before_start: false,
            additional_gids: Vec::new(),
            privileged: false,
            no_new_privileges: false,
            oom_score_adj: None,
            seccomp: seccomp::Seccomp::Unconfined,
        }
    }
}

/// Written by the shim once the container runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub shim_pid: i32,
    pub pid: i32,
    pub started_at: String,
}

/// Written by the shim when the container has ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exited {
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled` (Kubernetes' container state reasons), or `StartError`.
    pub reason: String,
    pub message: String,
    pub finished_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum State {
    Created,
    Running(Started),
    Exited(Option<Started>, Exited),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    pub config: ContainerConfig,
    pub state: State,
    pub log_path: PathBuf,
}

/// The containers of one node.
#[derive(Debug)]
pub struct Runtime {
    root: PathBuf,
    store: Arc<ContentStore>,
    shim: PathBuf,
    /// The small monitor binary, written out at the first container start; `None` when it could not be.
    monitor: std::sync::OnceLock<Option<PathBuf>>,
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
}

/// Where the kubelet (and so log shippers such as Fluent Bit) expects a pod's container log:
/// `<root>/<namespace>_<pod>_<uid>/<container>/<restart count>.log`, `root` being `/var/log/pods`.
pub fn pod_log_path(
    root: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    restart_count: u32,
) -> PathBuf {
    root.join(format!("{namespace}_{pod}_{uid}"))
        .join(container)
        .join(format!("{restart_count}.log"))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), ContainerError> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| ContainerError::Runtime(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// A command to run in a running container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// Added to (or replacing in) the container's environment.
    pub env: Vec<(String, String)>,
    /// Give it a terminal (its master goes to the caller).
    pub tty: bool,
    /// The terminal's size (rows, columns) before the command starts.
    pub terminal_size: Option<(u16, u16)>,
}

/// A command started by `Runtime::exec`: a child of the calling process.
#[derive(Debug)]
pub struct ExecProcess {
    pid: nix::unistd::Pid,
    /// The terminal's master, for a command started with one.
    pub terminal: Option<std::os::fd::OwnedFd>,
}

impl ExecProcess {
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Waits for the command to end; its exit code (128 + the signal for a killed one).
    pub fn wait(&self) -> Result<i32, ContainerError> {
        loop {
            match nix::sys::wait::waitpid(self.pid, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ContainerError::Runtime(format!("waiting for the exec: {e}"))),
            }
        }
    }
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

impl Runtime {
    /// `root` holds the containers' state (`<data-dir>/agent/containers`); `shim` is the binary to re-execute
    /// as `shim` (the running bonsai).
    pub fn new(
        root: impl Into<PathBuf>,
        store: Arc<ContentStore>,
        shim: impl Into<PathBuf>,
    ) -> Result<Runtime, ContainerError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io_at(&root))?;
        Ok(Runtime {
            root,
            store,
            shim: shim.into(),
            monitor: std::sync::OnceLock::new(),
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The monitor binary for shims to execute: `<root>/../bin/bonsai-shim-monitor-<hash>`
    /// (`<data-dir>/agent/bin`), written out once.
    fn monitor(&self) -> Option<&PathBuf> {
        self.monitor
            .get_or_init(|| {
                let bin = match self.root.parent() {
                    Some(parent) => parent.join("bin"),
                    None => self.root.join(".bin"),
                };
                match monitor_binary::install(&bin) {
                    Ok(path) => path,
                    Err(e) => {
                        tracing::warn!("the shims' monitor binary: {e}; they will monitor from this binary");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Creates the container and starts it; returns once it runs (or has already ended).
    pub fn run(&self, config: ContainerConfig) -> Result<ContainerInfo, ContainerError> {
        Ok(self.create_and_start(config, false)?.0)
    }

    /// Like `run`, attached to the container's standard streams before its process starts, so that no output
    /// is missed.
    pub fn run_attached(
        &self,
        mut config: ContainerConfig,
    ) -> Result<(ContainerInfo, UnixStream), ContainerError> {
        config.attach_before_start = true;
        let (info, stream) = self.create_and_start(config, true)?;
        let stream = stream.ok_or_else(|| {
            ContainerError::Runtime(format!(
                "container {} ended before it could be attached to",
                info.config.id
            ))
        })?;
        Ok((info, stream))
    }

    fn create_and_start(
        &self,
        config: ContainerConfig,
        attached: bool,
    ) -> Result<(ContainerInfo, Option<UnixStream>), ContainerError> {
        if !is_valid_id(&config.id) {
            return Err(ContainerError::Config(format!(
                "invalid container id {:?}",
                config.id
            )));
        }
        let dir = self.dir(&config.id);
        if dir.exists() {
            return Err(ContainerError::Exists(config.id));
        }
        // The name as stored first: normalising a reference compiles oci-client's reference grammar, a
        // regex that costs a short-lived CLI process tens of milliseconds.
        let image = match self.store.image(&config.image)? {
            Some(image) => image,
            None => self
                .store
                .image(&crate::image_name(&config.image)?)?
                .ok_or_else(|| ContainerError::Image(ImageError::NotFound(config.image.clone())))?,
        };
        let image_config: serde_json::Value =
            serde_json::from_slice(&self.store.read_blob(&image.config_digest)?)
                .map_err(|e| ContainerError::Config(format!("image config: {e}")))?;
        let result = self
            .prepare(&dir, &config, &image, &image_config)
            .and_then(|()| self.start_shim(&dir, &config, attached));
        match result {
            Ok(stream) => Ok((self.status(&config.id)?, stream)),
            Err(e) => {
                cgroups::Cgroups::host().remove(&config.cgroups_path());
                let _ = self.cleanup(&dir);
                Err(e)
            }
        }
    }

    fn prepare(
        &self,
        dir: &Path,
        config: &ContainerConfig,
        image: &crate::store::ImageRecord,
        image_config: &serde_json::Value,
    ) -> Result<(), ContainerError> {
        let rootfs = dir.join("bundle/rootfs");
        for d in [rootfs.clone(), dir.join("upper"), dir.join("work")] {
            std::fs::create_dir_all(&d).map_err(io_at(&d))?;
        }
        write_json(&dir.join("config.json"), config)?;
        // overlayfs lists lower directories top first.
        let lowers: Vec<String> = image
            .layers
            .iter()
            .rev()
            .map(|l| self.store.layer_dir(&l.diff_id).display().to_string())
            .collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| ContainerError::Runtime(format!("mounting the root filesystem: {e}")))?;
        let runtime_spec = spec::runtime_spec(image_config, config, &rootfs, &config.cgroups_path())?;
        write_json(&dir.join("bundle/config.json"), &runtime_spec)
    }

    fn start_shim(
        &self,
        dir: &Path,
        config: &ContainerConfig,
        attached: bool,
    ) -> Result<Option<UnixStream>, ContainerError> {
        let log = dir.join("shim.log");
        let shim_log = std::fs::File::create(&log).map_err(io_at(&log))?;
        let mut command = Command::new(&self.shim);
        if let Some(monitor) = self.monitor() {
            command.env(shim::MONITOR_ENV, monitor);
        }
        let mut child = command
            .arg("shim")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(shim_log)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                ContainerError::Runtime(format!("starting the shim {}: {e}", self.shim.display()))
            })?;
        // Reap the shim when it ends (it outlives us if we end first; then init reaps it).
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = None;
        while attached && stream.is_none() && !dir.join("exit.json").exists() && Instant::now() < deadline {
            match attach::connect(dir, attach::SOCKET) {
                Ok(s) => stream = Some(s),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        while !dir.join("state.json").exists() && !dir.join("exit.json").exists() {
            if Instant::now() > deadline {
                return Err(ContainerError::Runtime(format!(
                    "container {} did not start within 30 s",
                    config.id
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(stream)
    }

    pub fn status(&self, id: &str) -> Result<ContainerInfo, ContainerError> {
        let dir = self.dir(id);
        let config: ContainerConfig =
            read_json(&dir.join("config.json")).ok_or_else(|| ContainerError::NotFound(id.to_string()))?;
        let started: Option<Started> = read_json(&dir.join("state.json"));
        let exited: Option<Exited> = read_json(&dir.join("exit.json"));
        let state = match (started, exited) {
            (s, Some(e)) => State::Exited(s, e),
            (Some(s), None) if alive(s.shim_pid) => State::Running(s),
            (Some(s), None) => State::Exited(
                Some(s),
                Exited {
                    exit_code: 255,
                    reason: "Unknown".into(),
                    message: "the container's shim ended without recording an exit status".into(),
                    finished_at: now_rfc3339(),
                },
            ),
            (None, None) => State::Created,
        };
        let log_path = config
            .log_path
            .clone()
            .unwrap_or_else(|| dir.join("container.log"));
        Ok(ContainerInfo {
            config,
            state,
            log_path,
        })
    }

    pub fn list(&self) -> Result<Vec<ContainerInfo>, ContainerError> {
        self.list_prefixed("")
    }

    /// The containers whose ids start with `prefix` (the node agent's containers of one pod), reading only
    /// their state.
    pub fn list_prefixed(&self, prefix: &str) -> Result<Vec<ContainerInfo>, ContainerError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io_at(&self.root))? {
            let entry = entry.map_err(io_at(&self.root))?;
            let id = entry.file_name().to_string_lossy().to_string();
            if !id.starts_with(prefix) {
                continue;
            }
            if let Ok(info) = self.status(&id) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        Ok(out)
    }

    /// Connects to the standard streams of the running container `id` (see `attach` for the protocol).
    pub fn attach(&self, id: &str) -> Result<UnixStream, ContainerError> {
        if !matches!(self.status(id)?.state, State::Running(_)) {
            return Err(ContainerError::Runtime(format!("container {id} is not running")));
        }
        attach::connect(&self.dir(id), attach::SOCKET)
            .map_err(|e| ContainerError::Runtime(format!("attaching to {id}: {e}")))
    }

    /// Runs `request.args` inside the running container `id`: its namespaces, cgroup, user, capabilities and
    /// environment (plus `request.env`). Without a terminal the process shares this process's standard streams;
    /// with one, the caller gets its master. Forks: call it from a single-threaded process (the CLI, or a helper
    /// process of the node agent), never from the async server.
    pub fn exec(&self, id: &str, request: ExecRequest) -> Result<ExecProcess, ContainerError> {
        let info = self.status(id)?;
        if !matches!(info.state, State::Running(_)) {
            return Err(ContainerError::Runtime(format!("container {id} is not running")));
        }
        if request.args.is_empty() {
            return Err(ContainerError::Config("exec needs a command".into()));
        }
        let dir = self.dir(id);
        // The exec'd process is the container's own process with other args: same user, groups, capabilities,
        // rlimits, no_new_privs and working directory, as runc exec does.
        let spec: serde_json::Value = read_json(&dir.join("bundle/config.json"))
            .ok_or_else(|| ContainerError::Runtime(format!("container {id} has no runtime spec")))?;
        let mut process = spec.get("process").cloned().unwrap_or_default();
        let mut env: Vec<String> = process["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(String::from))
            .collect();
        for (k, v) in &request.env {
            env.retain(|e| e.split('=').next() != Some(k.as_str()));
            env.push(format!("{k}={v}"));
        }
        process["args"] = serde_json::json!(request.args);
        process["env"] = serde_json::json!(env);
        process["terminal"] = serde_json::json!(request.tty);
        let unique = format!("exec-{}-{}", std::process::id(), now_nanos());
        let process_file = dir.join(format!("{unique}.json"));
        write_json(&process_file, &process)?;
        let console_name = format!("{unique}.sock");
        let console = if request.tty {
            Some(attach::listen(&dir, &console_name)?)
        } else {
            None
        };
        // The command starts as soon as libcontainer has sent its terminal: take it (and size it) on a thread
        // already waiting in accept() before libcontainer forks, so the command never sees a 0x0 terminal. The
        // barrier makes the fork wait until that thread holds no lock (it is then only ever in syscalls).
        let receiver = console.map(|listener| {
            let ready = Arc::new(std::sync::Barrier::new(2));
            let thread_ready = ready.clone();
            let size = request.terminal_size;
            let handle = std::thread::spawn(move || {
                thread_ready.wait();
                let master = terminal::receive_master(&listener)?;
                if let Some((rows, cols)) = size {
                    terminal::resize(&master, rows, cols)?;
                }
                Ok::<_, ContainerError>(master)
            });
            ready.wait();
            handle
        });
        let built = libcontainer::container::builder::ContainerBuilder::new(
            id.to_string(),
            libcontainer::syscall::syscall::SyscallType::default(),
        )
        .with_root_path(dir.join("libcontainer"))
        .and_then(|b| {
            b.with_console_socket(request.tty.then(|| dir.join(&console_name)))
                .as_tenant()
                .with_process(Some(&process_file))
                .with_detach(request.tty)
                .build()
        });
        let _ = std::fs::remove_file(&process_file);
        let terminal = match receiver {
            Some(handle) => {
                if built.is_err() {
                    // Wake the waiting thread: it finds no terminal on this connection and ends.
                    let _ = attach::connect(&dir, &console_name);
                }
                let _ = std::fs::remove_file(dir.join(&console_name));
                Some(
                    handle
                        .join()
                        .map_err(|_| ContainerError::Runtime("receiving the terminal failed".into()))?,
                )
            }
            None => None,
        };
        let pid = built.map_err(|e| ContainerError::Runtime(format!("exec: {e}")))?;
        Ok(ExecProcess {
            pid: nix::unistd::Pid::from_raw(pid.as_raw()),
            terminal: terminal.transpose()?,
        })
    }

    /// Sends SIGTERM, then SIGKILL after `grace`, and waits for the container to end.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<(), ContainerError> {
        let State::Running(started) = self.status(id)?.state else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(started.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        let mut killed = false;
        while matches!(self.status(id)?.state, State::Running(_)) {
            if !killed && Instant::now() >= deadline {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                killed = true;
            }
            if Instant::now() > deadline + Duration::from_secs(30) {
                return Err(ContainerError::Runtime(format!("container {id} did not stop")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// What the container uses now (zero once it has ended).
    pub fn usage(&self, id: &str) -> Result<cgroups::Usage, ContainerError> {
        let info = self.status(id)?;
        Ok(match info.state {
            State::Running(_) => cgroups::Cgroups::host().usage(&info.config.cgroups_path()),
            _ => cgroups::Usage::default(),
        })
    }

    /// Removes a container that has ended: its mounts, cgroup (and parents left empty) and state.
    pub fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let info = self.status(id)?;
        if matches!(info.state, State::Running(_)) {
            return Err(ContainerError::Running(id.to_string()));
        }
        cgroups::Cgroups::host().remove(&info.config.cgroups_path());
        self.cleanup(&self.dir(id))
    }

    fn cleanup(&self, dir: &Path) -> Result<(), ContainerError> {
        let rootfs = dir.join("bundle/rootfs");
        match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(ContainerError::Runtime(format!(
                    "unmounting {}: {e}",
                    rootfs.display()
                )));
            }
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContainerError::Io {
                path: dir.to_path_buf(),
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("web-1.a_b+c"));
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }
}
