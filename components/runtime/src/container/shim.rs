//! The shim: one small process per container (`bonsai shim <state-dir>`), single-threaded apart from its
//! standard-stream loop (`stdio`), with no async runtime. It becomes a child subreaper, creates and starts the container with
//! libcontainer (which forks: safe only in a process like this one), writes the container's output as CRI log
//! lines, waits for the container's init, records how it ended (reading the cgroup's OOM kill count before the
//! cgroup goes), and removes libcontainer's state.

use std::os::fd::OwnedFd;
use std::path::Path;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitStatus, waitpid};

use super::stdio::{StdioLoop, Stream, Streams};
use super::{ContainerConfig, ContainerError, Exited, Started, now_rfc3339, write_json};

/// Where libcontainer sends a terminal container's pseudo-terminal master.
const CONSOLE_SOCKET: &str = "console.sock";

/// One CRI log line: `<RFC 3339 nano time> <stream> <F|P> <text>`.
pub fn cri_line(stream: &str, text: &[u8], complete: bool) -> Vec<u8> {
    let mut line = format!("{} {stream} {} ", now_rfc3339(), if complete { "F" } else { "P" }).into_bytes();
    line.extend_from_slice(text);
    line.push(b'\n');
    line
}

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
    if config.attach_before_start {
        // The first client must be attached before the process starts: the standard-stream loop runs here and
        // now, so this shim stays the container's monitor.
        let (first_client, attached) = std::sync::mpsc::channel();
        // Threads only now: libcontainer has forked (a fork copies no other thread, and their locks stay held).
        let io = std::thread::spawn(move || StdioLoop::new(streams, listener, log, Some(first_client)).run());
        let _ = attached.recv_timeout(std::time::Duration::from_secs(30));
        container
            .start()
            .map_err(runtime_error("starting the container"))?;
        let pid = started(dir, &container)?;
        let ended = wait_for(pid, &cgroups_path)?;
        let _ = io.join();
        return record_exit(dir, ended, || {
            container
                .delete(true)
                .map_err(runtime_error("removing the container's runtime state"))
        });
    }
    container
        .start()
        .map_err(runtime_error("starting the container"))?;
    let pid = started(dir, &container)?;
    // The container runs; what is left is the monitor's small job. A fresh image of this binary does it, so the
    // pages libcontainer and the set-up touched (code, heap) are not kept for the container's whole life.
    let handoff = Handoff {
        id: config.id.clone(),
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
    };
    let error = exec_monitor(dir, &handoff, &log, &listener, &streams);
    // The exec failed: monitor the container from this process instead.
    tracing_free_warning(&error);
    let io = std::thread::spawn(move || StdioLoop::new(streams, listener, log, None).run());
    let ended = wait_for(pid, &cgroups_path)?;
    let _ = io.join();
    record_exit(dir, ended, || {
        container
            .delete(true)
            .map_err(runtime_error("removing the container's runtime state"))
    })
}

fn tracing_free_warning(error: &ContainerError) {
    // The shim has no log subscriber; its standard error is `shim.log`.
    eprintln!("bonsai shim: monitoring in the set-up process ({error})");
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

/// How the container's init ended: its exit code (128 + signal when killed), and whether the OOM killer did it.
#[derive(Debug)]
struct Ended {
    exit_code: i32,
    oom_killed: bool,
}

/// Reaps everything reparented to this subreaper until the container's init ends.
fn wait_for(pid: i32, cgroups_path: &str) -> Result<Ended, ContainerError> {
    let pid = nix::unistd::Pid::from_raw(pid);
    let (exit_code, signal) = loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => break (code, None),
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => break (128 + signal as i32, Some(signal)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ContainerError::Runtime(format!("waiting for the container: {e}"))),
        }
    };
    // The OOM kill count is read before the cgroup goes.
    let oom_killed = signal == Some(nix::sys::signal::Signal::SIGKILL)
        && super::cgroups::Cgroups::host().oom_kills(cgroups_path) > 0;
    Ok(Ended {
        exit_code,
        oom_killed,
    })
}

/// Writes `exit.json` (Kubernetes' reasons) and removes libcontainer's state with `delete`.
fn record_exit(
    dir: &Path,
    ended: Ended,
    delete: impl FnOnce() -> Result<(), ContainerError>,
) -> Result<(), ContainerError> {
    let (reason, message) = if ended.oom_killed {
        (
            "OOMKilled",
            "the container went over its memory limit".to_string(),
        )
    } else if ended.exit_code == 0 {
        ("Completed", String::new())
    } else {
        ("Error", String::new())
    };
    let _ = std::fs::remove_file(dir.join(super::attach::SOCKET));
    write_json(
        &dir.join("exit.json"),
        &Exited {
            exit_code: ended.exit_code,
            reason: reason.into(),
            message,
            finished_at: now_rfc3339(),
        },
    )?;
    delete()
}

/// What the set-up shim tells its monitor across `execve`; the descriptors travel beside it as `SCM_RIGHTS`, in
/// this order: the log, the attach listener, each output, the stdin writer, the terminal master.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Handoff {
    id: String,
    pid: i32,
    cgroups_path: String,
    /// One per output descriptor: true for stderr.
    outputs: Vec<bool>,
    stdin: bool,
    terminal: bool,
    stdin_once: bool,
}

/// The most descriptors a hand-off carries (log, listener, two outputs, stdin, terminal).
const MAX_HANDOFF_FDS: usize = 6;

/// Sends the hand-off and its descriptors into a socket pair whose other end becomes standard input, then
/// re-executes this binary as `bonsai shim-monitor DIR`. Returns only if that failed. The queued message (and the
/// descriptors in flight with it) outlives the sending end, which `execve` closes.
fn exec_monitor(
    dir: &Path,
    handoff: &Handoff,
    log: &std::fs::File,
    listener: &std::os::unix::net::UnixListener,
    streams: &Streams,
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
    let payload = match serde_json::to_vec(handoff) {
        Ok(p) => p,
        Err(e) => return fail("the monitor's hand-off", &e),
    };
    let mut fds: Vec<BorrowedFd> = vec![log.as_fd(), listener.as_fd()];
    fds.extend(streams.outputs.iter().map(|(fd, _)| fd.as_fd()));
    fds.extend(streams.stdin.iter().map(|fd| fd.as_fd()));
    fds.extend(streams.terminal.iter().map(|fd| fd.as_fd()));
    // The monitor gets its descriptors from the message only: a stray inherited copy of the stdin pipe's write
    // end would keep the container from ever seeing the end of its input.
    for fd in &fds {
        if let Err(e) = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC) {
            return fail("closing descriptors on exec", &e);
        }
    }
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_HANDOFF_FDS))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_HANDOFF_FDS || !control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
        return ContainerError::Runtime("too many descriptors for the monitor".into());
    }
    if let Err(e) = rustix::net::sendmsg(
        &ours,
        &[std::io::IoSlice::new(&payload)],
        &mut control,
        rustix::net::SendFlags::empty(),
    ) {
        return fail("handing off to the monitor", &e);
    }
    drop(ours);
    if let Err(e) = nix::unistd::dup2_stdin(&theirs) {
        return fail("the monitor's standard input", &e);
    }
    drop(theirs);
    let error = std::process::Command::new("/proc/self/exe")
        .arg0("bonsai")
        .arg(MONITOR_COMMAND)
        .arg(dir)
        .exec();
    fail("re-executing as the monitor", &error)
}

/// The hidden command the shim re-executes itself as.
pub const MONITOR_COMMAND: &str = "shim-monitor";

/// The monitor's whole life; like `run`, an error is recorded as the container's end.
pub fn run_monitor(dir: &Path) -> Result<(), ContainerError> {
    let result = monitor(dir);
    if let Err(e) = &result
        && !dir.join("exit.json").exists()
    {
        write_json(
            &dir.join("exit.json"),
            &Exited {
                exit_code: 128,
                reason: "Error".into(),
                message: format!("the container's monitor failed: {e}"),
                finished_at: now_rfc3339(),
            },
        )?;
    }
    result
}

/// `bonsai shim-monitor DIR`: takes the hand-off from standard input, then copies the container's streams to its
/// log and attached clients, waits for it, records how it ended, and removes libcontainer's state.
fn monitor(dir: &Path) -> Result<(), ContainerError> {
    use std::os::fd::AsFd;

    let stdin = std::io::stdin();
    let mut payload = vec![0u8; 64 * 1024];
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_HANDOFF_FDS))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        stdin.as_fd(),
        &mut [std::io::IoSliceMut::new(&mut payload)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| ContainerError::Runtime(format!("receiving the hand-off: {e}")))?;
    let handoff: Handoff = serde_json::from_slice(payload.get(..received.bytes).unwrap_or_default())
        .map_err(|e| ContainerError::Runtime(format!("the hand-off: {e}")))?;
    let mut fds: std::collections::VecDeque<OwnedFd> = control
        .drain()
        .flat_map(|message| match message {
            rustix::net::RecvAncillaryMessage::ScmRights(fds) => fds.collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    let mut next = |what: &str| {
        fds.pop_front()
            .ok_or_else(|| ContainerError::Runtime(format!("the hand-off carried no {what}")))
    };
    let log = std::fs::File::from(next("log")?);
    let listener = std::os::unix::net::UnixListener::from(next("attach listener")?);
    let mut outputs = Vec::new();
    for stderr in &handoff.outputs {
        let stream = if *stderr { Stream::Stderr } else { Stream::Stdout };
        outputs.push((next("output")?, stream));
    }
    let streams = Streams {
        outputs,
        stdin: if handoff.stdin { Some(next("stdin")?) } else { None },
        stdin_once: handoff.stdin_once,
        terminal: if handoff.terminal {
            Some(next("terminal")?)
        } else {
            None
        },
    };
    drop(payload);
    let io = std::thread::spawn(move || StdioLoop::new(streams, listener, log, None).run());
    let ended = wait_for(handoff.pid, &handoff.cgroups_path);
    let _ = io.join();
    let ended = ended?;
    record_exit(dir, ended, || {
        libcontainer::container::Container::load(dir.join("libcontainer").join(&handoff.id))
            .and_then(|mut container| container.delete(true))
            .map_err(runtime_error("removing the container's runtime state"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines() {
        let line = String::from_utf8(cri_line("stdout", b"hello", true)).unwrap();
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        assert_eq!(parts[1..], ["stdout", "F", "hello\n"]);
        assert!(parts[0].ends_with('Z') && parts[0].len() == 30, "{}", parts[0]);
        assert!(
            String::from_utf8(cri_line("stderr", b"part", false))
                .unwrap()
                .contains(" stderr P part\n")
        );
    }
}
