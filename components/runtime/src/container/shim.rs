//! The shim: one small process per container (`bonsai shim <state-dir>`), single-threaded apart from its
//! standard-stream loop (`stdio`), with no async runtime. It becomes a child subreaper, creates and starts the container with
//! libcontainer (which forks: safe only in a process like this one), writes the container's output as CRI log
//! lines, waits for the container's init, records how it ended (reading the cgroup's OOM kill count before the
//! cgroup goes), and removes libcontainer's state.
//!
//! Once the container runs, the shim executes the small static monitor (`shim_monitor`, embedded in this crate
//! by build.rs and written out by `monitor_binary`) and hands it the container's descriptors, so that each running
//! container costs about a megabyte of memory instead of a mapping of this whole binary. Where that cannot run,
//! it re-executes this binary as `bonsai shim-monitor`, and failing that it monitors from the set-up process.

use std::os::fd::OwnedFd;
use std::path::Path;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

use shim_monitor::handoff::Handoff;
use shim_monitor::{StdioLoop, Stream, Streams};

use super::{ContainerConfig, ContainerError, Exited, Started, now_rfc3339, write_json};

/// Where libcontainer sends a terminal container's pseudo-terminal master.
const CONSOLE_SOCKET: &str = "console.sock";

fn runtime_error(
    context: &str,
) -> impl FnOnce(libcontainer::error::LibcontainerError) -> ContainerError + '_ {
    move |e| ContainerError::Runtime(format!("{context}: {e}"))
}

/// The shim's whole life. Errors before the container runs are recorded as a `StartError` exit.
pub fn run(dir: &Path) -> Result<(), ContainerError> {
    let result = supervise(dir);
    if let Err(e) = &result
        && !dir.join("exit.json").exists()
    {
        write_json(
            &dir.join("exit.json"),
            &Exited {
                exit_code: 128,
                reason: "StartError".into(),
                message: e.to_string(),
                finished_at: now_rfc3339(),
            },
        )?;
    }
    result
}

fn supervise(dir: &Path) -> Result<(), ContainerError> {
    let config: ContainerConfig = super::read_json(&dir.join("config.json"))
        .ok_or_else(|| ContainerError::Config(format!("{}/config.json is missing", dir.display())))?;
    let spec: serde_json::Value = super::read_json(&dir.join("bundle/config.json"))
        .ok_or_else(|| ContainerError::Config("the bundle's config.json is missing".into()))?;
    let cgroups_path = spec
        .pointer("/linux/cgroupsPath")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| ContainerError::Runtime(format!("subreaper: {e}")))?;
    let log_path = config
        .log_path
        .clone()
        .unwrap_or_else(|| dir.join("container.log"));
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ContainerError::Io {
            path: parent.to_path_buf(),
            source: e,
        })?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| ContainerError::Io {
            path: log_path.clone(),
            source: e,
        })?;
    // Bound before the container exists, so that clients can connect as soon as `run` returns.
    let listener = super::attach::listen(dir, super::attach::SOCKET)?;
    let pipe = || nix::unistd::pipe().map_err(|e| ContainerError::Runtime(format!("pipe: {e}")));
    let builder = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(dir.join("libcontainer"))
        .map_err(runtime_error("state directory"))?;
    let (builder, console, mut streams) = if config.tty {
        let console = super::attach::listen(dir, CONSOLE_SOCKET)?;
        let builder = builder.with_console_socket(Some(dir.join(CONSOLE_SOCKET)));
        (builder, Some(console), None)
    } else {
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let (stdin_read, stdin_write) = if config.stdin {
            let (read, write) = pipe()?;
            (read, Some(write))
        } else {
            let null = std::fs::File::open("/dev/null").map_err(|e| ContainerError::Io {
                path: "/dev/null".into(),
                source: e,
            })?;
            (OwnedFd::from(null), None)
        };
        let builder = builder
            .with_stdin(stdin_read)
            .with_stdout(out_write)
            .with_stderr(err_write);
        let streams = Streams {
            outputs: vec![(out_read, Stream::Stdout), (err_read, Stream::Stderr)],
            stdin: stdin_write,
            stdin_once: config.stdin_once,
            terminal: None,
        };
        (builder, None, Some(streams))
    };
    let mut container = builder
        .as_init(dir.join("bundle"))
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(runtime_error("creating the container"))?;
    if let Some(console) = console {
        // libcontainer has sent the terminal's master by now; the socket is done with.
        let master = super::terminal::receive_master(&console)?;
        let _ = std::fs::remove_file(dir.join(CONSOLE_SOCKET));
        let clone = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| ContainerError::Runtime(format!("terminal: {e}")))
        };
        streams = Some(Streams {
            outputs: vec![(clone(&master)?, Stream::Stdout)],
            stdin: if config.stdin { Some(clone(&master)?) } else { None },
            stdin_once: config.stdin_once,
            terminal: Some(master),
        });
    }
    let streams = streams.ok_or_else(|| ContainerError::Runtime("no standard streams".into()))?;
    // A container that must see its first client before it starts waits for it (up to 30 s, as before a
    // client gives up); the client, accepted here, is the monitor's from the start, and so sees all the output.
    let first_client = if config.attach_before_start {
        accept_within(&listener, std::time::Duration::from_secs(30))
    } else {
        None
    };
    container
        .start()
        .map_err(runtime_error("starting the container"))?;
    let pid = started(dir, &container)?;
    // The container runs; what is left is the monitor's small job, done by a fresh, small image: the pages
    // libcontainer and the set-up touched (code, heap) are not kept for the container's whole life.
    let handoff = Handoff {
        pid,
        cgroups_path: cgroups_path.clone(),
        outputs: streams
            .outputs
            .iter()
            .map(|(_, s)| *s == Stream::Stderr)
            .collect(),
        stdin: streams.stdin.is_some(),
        terminal: streams.terminal.is_some(),
        stdin_once: streams.stdin_once,
        client: first_client.is_some(),
    };
    let error = exec_monitor(dir, &handoff, &log, &listener, &streams, first_client.as_ref());
    // No monitor could be executed: monitor the container from this process instead.
    eprintln!("bonsai shim: monitoring in the set-up process ({error})");
    // Threads only now: libcontainer has forked (a fork copies no other thread, and their locks stay held).
    let io = std::thread::spawn(move || StdioLoop::new(streams, listener, log, first_client).run());
    let ended = shim_monitor::wait_for(pid, Path::new(shim_monitor::cgroup::HOST_ROOT), &cgroups_path);
    let _ = io.join();
    finish(dir, ended, &mut container)
}

/// The first client to connect within `timeout`, if one does.
fn accept_within(
    listener: &std::os::unix::net::UnixListener,
    timeout: std::time::Duration,
) -> Option<std::os::unix::net::UnixStream> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut fds = [PollFd::new(listener, PollFlags::IN)];
        let wait = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&wait)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => return None,
        }
        match listener.accept() {
            Ok((stream, _)) => return Some(stream),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

/// Records how the container ended and removes libcontainer's state (and with it the container's cgroup).
fn finish(
    dir: &Path,
    ended: Result<shim_monitor::Ended, shim_monitor::MonitorError>,
    container: &mut libcontainer::container::Container,
) -> Result<(), ContainerError> {
    let ended = ended.map_err(monitor_error)?;
    shim_monitor::record_exit(dir, &ended.record()).map_err(monitor_error)?;
    container
        .delete(true)
        .map_err(runtime_error("removing the container's runtime state"))
}

fn monitor_error(e: shim_monitor::MonitorError) -> ContainerError {
    ContainerError::Runtime(e.to_string())
}

/// Records that the container runs (`state.json`) and returns its init's pid.
fn started(dir: &Path, container: &libcontainer::container::Container) -> Result<i32, ContainerError> {
    // libcontainer has its own nix: carry the pid over as a number.
    let pid = container
        .pid()
        .ok_or_else(|| ContainerError::Runtime("the container has no process".into()))?
        .as_raw();
    write_json(
        &dir.join("state.json"),
        &Started {
            shim_pid: std::process::id() as i32,
            pid,
            started_at: now_rfc3339(),
        },
    )?;
    Ok(pid)
}

/// The environment variable through which the runtime tells the shim where the monitor binary is.
pub const MONITOR_ENV: &str = "BONSAI_SHIM_MONITOR";

/// Sends the hand-off and its descriptors into a socket pair whose other end becomes standard input, then
/// executes the monitor: the small binary named by `BONSAI_SHIM_MONITOR`, else this binary as
/// `bonsai shim-monitor DIR`. Returns only if neither could be executed. The queued message (and the descriptors
/// in flight with it) outlives the sending end, which `execve` closes, and stays queued for the next candidate
/// when one fails.
fn exec_monitor(
    dir: &Path,
    handoff: &Handoff,
    log: &std::fs::File,
    listener: &std::os::unix::net::UnixListener,
    streams: &Streams,
    client: Option<&std::os::unix::net::UnixStream>,
) -> ContainerError {
    use std::os::fd::{AsFd, BorrowedFd};
    use std::os::unix::process::CommandExt;

    let fail = |what: &str, e: &dyn std::fmt::Display| ContainerError::Runtime(format!("{what}: {e}"));
    let (ours, theirs) = match rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    ) {
        Ok(pair) => pair,
        Err(e) => return fail("the monitor's socket pair", &e),
    };
    let mut fds: Vec<BorrowedFd> = vec![log.as_fd(), listener.as_fd()];
    fds.extend(streams.outputs.iter().map(|(fd, _)| fd.as_fd()));
    fds.extend(streams.stdin.iter().map(|fd| fd.as_fd()));
    fds.extend(streams.terminal.iter().map(|fd| fd.as_fd()));
    fds.extend(client.map(|c| c.as_fd()));
    // The monitor gets its descriptors from the message only: a stray inherited copy of the stdin pipe's write
    // end would keep the container from ever seeing the end of its input.
    for fd in &fds {
        if let Err(e) = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC) {
            return fail("closing descriptors on exec", &e);
        }
    }
    if let Err(e) = shim_monitor::handoff::send(&ours, handoff, &fds) {
        return fail("handing off to the monitor", &e);
    }
    drop(ours);
    if let Err(e) = nix::unistd::dup2_stdin(&theirs) {
        return fail("the monitor's standard input", &e);
    }
    drop(theirs);
    let mut errors = Vec::new();
    if let Some(monitor) = std::env::var_os(MONITOR_ENV) {
        let error = std::process::Command::new(&monitor)
            .arg0("bonsai-shim-monitor")
            .arg(dir)
            .env_remove(MONITOR_ENV)
            .exec();
        errors.push(format!("{}: {error}", std::path::Path::new(&monitor).display()));
    }
    let error = std::process::Command::new("/proc/self/exe")
        .arg0("bonsai")
        .arg(MONITOR_COMMAND)
        .arg(dir)
        .env_remove(MONITOR_ENV)
        .exec();
    errors.push(format!("re-executing as the monitor: {error}"));
    ContainerError::Runtime(errors.join("; "))
}

/// The hidden command the shim re-executes itself as when the small monitor cannot run.
pub const MONITOR_COMMAND: &str = "shim-monitor";

/// `bonsai shim-monitor DIR`: the monitor's whole life, in this binary (see `shim_monitor::run`).
pub fn run_monitor(dir: &Path) -> Result<(), ContainerError> {
    shim_monitor::run(dir).map_err(monitor_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monitors_exit_record_reads_as_the_runtimes() {
        let ended = shim_monitor::Ended {
            exit_code: 137,
            oom_killed: true,
        };
        let record = ended.record();
        let exited: Exited = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(exited.exit_code, 137);
        assert_eq!(exited.reason, "OOMKilled");
        assert_eq!(exited.message, record.message);
        assert_eq!(exited.finished_at, record.finished_at);
    }
}
