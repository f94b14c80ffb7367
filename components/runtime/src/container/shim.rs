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
    // Threads only now: libcontainer has forked (a fork copies no other thread, and their locks stay held).
    let (first_client, attached) = std::sync::mpsc::channel();
    let first_client = config.attach_before_start.then_some(first_client);
    let io = std::thread::spawn(move || StdioLoop::new(streams, listener, log, first_client).run());
    if config.attach_before_start {
        let _ = attached.recv_timeout(std::time::Duration::from_secs(30));
    }
    container
        .start()
        .map_err(runtime_error("starting the container"))?;
    // libcontainer has its own nix: carry the pid over as a number.
    let pid = nix::unistd::Pid::from_raw(
        container
            .pid()
            .ok_or_else(|| ContainerError::Runtime("the container has no process".into()))?
            .as_raw(),
    );
    write_json(
        &dir.join("state.json"),
        &Started {
            shim_pid: std::process::id() as i32,
            pid: pid.as_raw(),
            started_at: now_rfc3339(),
        },
    )?;

    // Reap everything reparented to us; the container's init decides the exit status.
    let status = loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => break (code, None),
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => break (128 + signal as i32, Some(signal)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ContainerError::Runtime(format!("waiting for the container: {e}"))),
        }
    };
    let (exit_code, signal) = status;
    let (reason, message) = if signal == Some(nix::sys::signal::Signal::SIGKILL)
        && super::cgroups::Cgroups::host().oom_kills(&cgroups_path) > 0
    {
        (
            "OOMKilled",
            "the container went over its memory limit".to_string(),
        )
    } else if exit_code == 0 {
        ("Completed", String::new())
    } else {
        ("Error", String::new())
    };
    let _ = io.join();
    let _ = std::fs::remove_file(dir.join(super::attach::SOCKET));
    write_json(
        &dir.join("exit.json"),
        &Exited {
            exit_code,
            reason: reason.into(),
            message,
            finished_at: now_rfc3339(),
        },
    )?;
    container
        .delete(true)
        .map_err(runtime_error("removing the container's runtime state"))?;
    Ok(())
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
