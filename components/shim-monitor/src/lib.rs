//! The container monitor: what a shim becomes once its container runs. It copies the container's standard
//! streams to the CRI log and to attached clients, reaps what is reparented to it (it is a child subreaper)
//! until the container's init ends, and records how it ended in `exit.json`.
//!
//! The set-up shim (`runtime::container::shim`) needs libcontainer and most of bonsai; this part needs only std
//! and rustix, so it is also built as its own small static binary, `bonsai-shim-monitor`, which the runtime
//! embeds and the shim executes, handing over its descriptors (`handoff`). A monitor per running container is
//! then about 1 MB of memory instead of a mapping of the whole bonsai binary.
//!
//! **Architecture Invariant:** this crate depends on nothing but std, rustix and thiserror; the binary must stay
//! small and static.

pub mod cgroup;
pub mod exit;
pub mod frame;
pub mod handoff;
pub mod log;
pub mod stdio;

use std::path::Path;

pub use exit::{EXIT_FILE, ExitRecord};
pub use stdio::{StdioLoop, Stream, Streams};

/// The attach socket's file name in a container's state directory.
pub const ATTACH_SOCKET: &str = "attach.sock";

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the hand-off: {0}")]
    Handoff(String),
}

/// How the container's init ended: its exit code (128 + signal when killed), and whether the OOM killer did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    pub exit_code: i32,
    pub oom_killed: bool,
}

const SIGKILL: i32 = 9;

impl Ended {
    /// Kubernetes' reason for it.
    pub fn record(&self) -> ExitRecord {
        let (reason, message) = if self.oom_killed {
            ("OOMKilled", "the container went over its memory limit")
        } else if self.exit_code == 0 {
            ("Completed", "")
        } else {
            ("Error", "")
        };
        ExitRecord {
            exit_code: self.exit_code,
            reason: reason.into(),
            message: message.into(),
            finished_at: log::now_rfc3339(),
        }
    }
}

/// Reaps everything reparented to this subreaper until the container's init (`pid`) ends, then reads the OOM
/// kill count of its cgroup (under `cgroup_root`) before the cgroup goes.
pub fn wait_for(pid: i32, cgroup_root: &Path, cgroups_path: &str) -> Result<Ended, MonitorError> {
    let (exit_code, signal) = loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((child, status))) if child.as_raw_nonzero().get() == pid => {
                if let Some(code) = status.exit_status() {
                    break (code, None);
                }
                if let Some(signal) = status.terminating_signal() {
                    break (128 + signal, Some(signal));
                }
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(source) => {
                return Err(MonitorError::Os {
                    what: "waiting for the container",
                    source,
                });
            }
        }
    };
    let oom_killed = signal == Some(SIGKILL) && cgroup::oom_kills(cgroup_root, cgroups_path) > 0;
    Ok(Ended {
        exit_code,
        oom_killed,
    })
}

/// Writes `exit.json` once the container has ended, after removing the attach socket (nobody can attach to an
/// ended container).
pub fn record_exit(dir: &Path, record: &ExitRecord) -> Result<(), MonitorError> {
    let _ = std::fs::remove_file(dir.join(ATTACH_SOCKET));
    record.write(dir).map_err(|source| MonitorError::Io {
        what: format!("writing {}/{EXIT_FILE}", dir.display()),
        source,
    })
}

/// The monitor's whole life, from the hand-off on standard input: the container's streams, its end, `exit.json`,
/// and its cgroup removed. An error is recorded as the container's end, when nothing else was.
pub fn run(dir: &Path) -> Result<(), MonitorError> {
    let result = monitor(dir);
    if let Err(e) = &result
        && !dir.join(EXIT_FILE).exists()
    {
        record_exit(
            dir,
            &ExitRecord {
                exit_code: 128,
                reason: "Error".into(),
                message: format!("the container's monitor failed: {e}"),
                finished_at: log::now_rfc3339(),
            },
        )?;
    }
    result
}

fn monitor(dir: &Path) -> Result<(), MonitorError> {
    let received = handoff::receive(std::io::stdin())?;
    // Inherited across the exec already; set again so that a monitor started any other way reaps too.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let handoff = received.handoff;
    let io = std::thread::Builder::new()
        .name("stdio".into())
        // The loop's buffers are on the heap; a small stack keeps the thread's share of memory small.
        .stack_size(64 * 1024)
        .spawn(move || {
            StdioLoop::new(received.streams, received.listener, received.log, received.client).run()
        })
        .map_err(|source| MonitorError::Io {
            what: "starting the standard-stream loop".into(),
            source,
        })?;
    let root = Path::new(cgroup::HOST_ROOT);
    let ended = wait_for(handoff.pid, root, &handoff.cgroups_path);
    let _ = io.join();
    record_exit(dir, &ended?.record())?;
    cgroup::remove(root, &handoff.cgroups_path);
    Ok(())
}
