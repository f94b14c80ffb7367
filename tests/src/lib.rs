//! Harness for bonsai's end-to-end tests: the real `bonsai` binary, run as a user runs it, with
//! every process it starts stopped and every directory it uses removed, even when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
        let mut child = Command::new(bonsai_bin())
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
