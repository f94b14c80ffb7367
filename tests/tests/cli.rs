//! The `bonsai` command line, end to end: the real binary, run as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use bonsai_e2e::{NetNs, Running, Server, bonsai, bonsai_bin};

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
    let server = Server::start(&[]);
    assert!(
        server
            .process
            .log
            .iter()
            .any(|l| l.contains("cluster store ready") && l.contains("engine=redb"))
    );
    assert!(server.data_dir().join("server/db/STORE").is_file());

    // A second server on the same data directory is refused with a clear message.
    let second = server
        .netns
        .command(bonsai_bin())
        .args([
            "server",
            "-d",
            server.data_dir().to_str().unwrap(),
            "-o",
            "/dev/null/unused",
        ])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("in use by another process"),
        "{}",
        stderr(&second)
    );

    let (netns, dir, status) = server.stop();
    assert!(status.success(), "{status:?}");

    // It starts again on the same data, with the engine it was made with; SIGINT stops it too.
    let mut again = Server::start_in(netns, dir, &[]);
    again.process.signal(libc::SIGINT);
    assert!(again.process.wait(Duration::from_secs(30)).success());
    assert!(again.process.log.iter().any(|l| l.contains("stopped")));
}

#[test]
fn server_logs_json_when_asked() {
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = netns.command(bonsai_bin());
    cmd.env("BONSAI_LOG_FORMAT", "json");
    let data = dir.path().join("data");
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    let mut server = Running::start_with(
        cmd,
        &[
            "server",
            "-d",
            data.to_str().unwrap(),
            "-o",
            kubeconfig.to_str().unwrap(),
            "--store-engine",
            "sled",
        ],
    );
    let line = server.wait_for_log("cluster store ready", START);
    let event: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["engine"], "sled");
    assert_eq!(event["revision"], 1);
    let ready = server.wait_for_log("bonsai server ready", START);
    assert!(
        serde_json::from_str::<serde_json::Value>(&ready).is_ok(),
        "{ready}"
    );
}

#[test]
fn server_refuses_a_data_dir_it_does_not_own() {
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server/db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("member"), b"someone else's").unwrap();
    let out = netns
        .command(bonsai_bin())
        .args([
            "server",
            "-d",
            dir.path().to_str().unwrap(),
            "-o",
            dir.path().join("k.yaml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is not a bonsai store") && err.contains("member"),
        "{err}"
    );
    assert_eq!(std::fs::read(db.join("member")).unwrap(), b"someone else's");
    assert!(
        !dir.path().join("k.yaml").exists(),
        "no kubeconfig for a server that never became ready"
    );
}

#[test]
fn server_refuses_a_different_engine_for_existing_data() {
    let server = Server::start(&["--store-engine", "sled"]);
    let data = server.data_dir();
    let (netns, dir, status) = server.stop();
    assert!(status.success());
    let out = netns
        .command(bonsai_bin())
        .args([
            "server",
            "-d",
            data.to_str().unwrap(),
            "--store-engine",
            "redb",
            "-o",
            "/dev/null/unused",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("holds sled data"), "{}", stderr(&out));
    let out = bonsai(&[
        "server",
        "-d",
        data.to_str().unwrap(),
        "--store-engine",
        "rocksdb",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("rocksdb"), "{}", stderr(&out));
    drop(dir);
}

#[test]
fn agent_checks_its_arguments_before_it_joins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = bonsai(&["agent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--server"), "{}", stderr(&out));
    let out = bonsai(&[
        "agent",
        "-d",
        data,
        "--server",
        "http://10.0.0.1:6443",
        "--token",
        "t",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("https://"), "{}", stderr(&out));
    for token in ["K10abc::server:secret", "secret", ""] {
        let out = bonsai(&[
            "agent",
            "-d",
            data,
            "--server",
            "https://10.0.0.1:6443",
            "--token",
            token,
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("is not a join token") || stderr(&out).contains("--token is empty"),
            "{}",
            stderr(&out)
        );
    }
    assert!(
        !std::path::Path::new(data).exists(),
        "nothing is written before the token is checked"
    );
}
