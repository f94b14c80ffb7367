//! The `bonsai` command line, end to end: the real binary, run as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use bonsai_e2e::{Running, bonsai};

const START: Duration = Duration::from_secs(20);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_names_the_release_and_commit() {
    let out = bonsai(&["version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("bonsai version v{} (", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}

#[test]
fn completion_scripts_are_valid_shell() {
    let out = bonsai(&["completion", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bonsai.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {}", stderr(&check));
    assert!(String::from_utf8_lossy(&out.stdout).contains("server"));
    let bad = bonsai(&["completion", "cmd.exe"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("cmd.exe"), "{}", stderr(&bad));
}

#[test]
fn server_owns_its_data_dir_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut server = Running::start(&["server", "--data-dir", data]);
    let ready = server.wait_for_log("cluster store ready", START);
    assert!(ready.contains("engine=redb"), "{ready}");
    assert!(dir.path().join("server/db/STORE").is_file());

    // A second server on the same data directory is refused with a clear message.
    let second = bonsai(&["server", "--data-dir", data]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("in use by another process"),
        "{}",
        stderr(&second)
    );

    server.signal(libc::SIGTERM);
    let status = server.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", server.log.join("\n"));
    assert!(server.log.iter().any(|l| l.contains("stopped")));

    // It starts again on the same data, with the engine it was made with.
    let mut again = Running::start(&["server", "--data-dir", data]);
    again.wait_for_log("cluster store ready", START);
    again.signal(libc::SIGINT);
    assert!(again.wait(Duration::from_secs(30)).success());
}

#[test]
fn server_logs_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Running::start(&[
        "--log-format",
        "json",
        "server",
        "-d",
        dir.path().to_str().unwrap(),
        "--store-engine",
        "sled",
    ]);
    let line = server.wait_for_log("cluster store ready", START);
    let event: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["engine"], "sled");
    assert_eq!(event["revision"], 1);
}

#[test]
fn server_refuses_a_data_dir_it_does_not_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server/db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("member"), b"someone else's").unwrap();
    let out = bonsai(&["server", "-d", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is not a bonsai store") && err.contains("member"),
        "{err}"
    );
    assert_eq!(std::fs::read(db.join("member")).unwrap(), b"someone else's");
}

#[test]
fn server_refuses_a_different_engine_for_existing_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut server = Running::start(&["server", "-d", data, "--store-engine", "sled"]);
    server.wait_for_log("cluster store ready", START);
    server.signal(libc::SIGTERM);
    assert!(server.wait(Duration::from_secs(30)).success());
    let out = bonsai(&["server", "-d", data, "--store-engine", "redb"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("holds sled data"), "{}", stderr(&out));
    let out = bonsai(&["server", "-d", data, "--store-engine", "rocksdb"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("rocksdb"), "{}", stderr(&out));
}

#[test]
fn agent_checks_its_arguments_and_says_joining_is_not_available_yet() {
    let out = bonsai(&["agent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--server"), "{}", stderr(&out));
    let out = bonsai(&["agent", "--server", "http://10.0.0.1:6443", "--token", "t"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("https://"), "{}", stderr(&out));
    let out = bonsai(&[
        "agent",
        "--server",
        "https://10.0.0.1:6443",
        "--token",
        "K10abc::server:secret",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot join a cluster yet"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_install_script_installs_and_starts_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (bin_dir, data, log, run) = (
        dir.path().join("bin"),
        dir.path().join("data"),
        dir.path().join("bonsai.log"),
        dir.path().join("run"),
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/install.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .env("BONSAI_BIN", bonsai_e2e::bonsai_bin())
        .env("INSTALL_BONSAI_BIN_DIR", &bin_dir)
        .env("BONSAI_DATA_DIR", &data)
        .env("INSTALL_BONSAI_LOG", &log)
        .env("INSTALL_BONSAI_RUN_DIR", &run)
        .output()
        .unwrap();
    // Whatever happened, stop what the script started.
    let pid: Option<i32> = std::fs::read_to_string(run.join("bonsai.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    let _stop = StopOnDrop(pid);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bonsai server is ready"));
    assert!(bin_dir.join("bonsai").is_file());
    assert!(data.join("server/db/STORE").is_file());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("cluster store ready")
    );
}

/// Stops (SIGTERM, then SIGKILL) the process the install script left running.
struct StopOnDrop(Option<i32>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let Some(pid) = self.0 else { return };
        let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
        let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        for _ in 0..100 {
            if !alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}
