//! The shim: one small process per container (`bonsai shim <state-dir>`), single-threaded apart from two log
//! pumps, with no async runtime. It becomes a child subreaper, creates and starts the container with
//! libcontainer (which forks: safe only in a process like this one), writes the container's output as CRI log
//! lines, waits for the container's init, records how it ended (reading the cgroup's OOM kill count before the
//! cgroup goes), and removes libcontainer's state.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitStatus, waitpid};

use super::{ContainerConfig, ContainerError, Exited, Started, now_rfc3339, write_json};

/// One CRI log line: `<RFC 3339 nano time> <stream> <F|P> <text>`.
pub fn cri_line(stream: &str, text: &[u8], complete: bool) -> Vec<u8> {
    let mut line = format!("{} {stream} {} ", now_rfc3339(), if complete { "F" } else { "P" }).into_bytes();
    line.extend_from_slice(text);
    line.push(b'\n');
    line
}

/// Copies one of the container's output pipes into the log, a line at a time.
fn pump(read: OwnedFd, stream: &'static str, log: Arc<Mutex<std::fs::File>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(16 * 1024, std::fs::File::from(read));
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let complete = buf.last() == Some(&b'\n');
                    let text = if complete { &buf[..buf.len() - 1] } else { &buf[..] };
                    let line = cri_line(stream, text, complete);
                    let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = file.write_all(&line);
                }
            }
        }
    })
}

/// How many times the kernel's OOM killer struck in the container's cgroup (v1 or v2).
fn oom_kills(cgroups_path: &str) -> u64 {
    let relative = cgroups_path.trim_start_matches('/');
    let (file, key) = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        (format!("/sys/fs/cgroup/{relative}/memory.events"), "oom_kill")
    } else {
        (
            format!("/sys/fs/cgroup/memory/{relative}/memory.oom_control"),
            "oom_kill",
        )
    };
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
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
    let log = Arc::new(Mutex::new(log));
    let pipe = || nix::unistd::pipe().map_err(|e| ContainerError::Runtime(format!("pipe: {e}")));
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let null = std::fs::File::open("/dev/null").map_err(|e| ContainerError::Io {
        path: "/dev/null".into(),
        source: e,
    })?;

    let mut container = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(dir.join("libcontainer"))
        .map_err(runtime_error("state directory"))?
        .with_stdin(OwnedFd::from(null))
        .with_stdout(out_write)
        .with_stderr(err_write)
        .as_init(dir.join("bundle"))
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(runtime_error("creating the container"))?;
    let pumps = [
        pump(out_read, "stdout", log.clone()),
        pump(err_read, "stderr", log),
    ];
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
    let (reason, message) =
        if signal == Some(nix::sys::signal::Signal::SIGKILL) && oom_kills(&cgroups_path) > 0 {
            (
                "OOMKilled",
                "the container went over its memory limit".to_string(),
            )
        } else if exit_code == 0 {
            ("Completed", String::new())
        } else {
            ("Error", String::new())
        };
    for p in pumps {
        let _ = p.join();
    }
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
