//! Containers end to end: busybox images built by umoci, imported, and run by the real binary's runtime (a
//! libcontainer shim per container) on this host's real namespaces, overlayfs and cgroups: output and exit codes,
//! CRI logs, the memory limit (OOMKilled, 137), the pids limit, containers that outlive the command that started
//! them, stop with a grace period, and removal that leaves no mount behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Output;

use bonsai_e2e::images::Layout;
use bonsai_e2e::{NetNs, bonsai_bin, fails, ok};

/// `bonsai <group> -d <data> <rest…>` (the data directory before any `--`), in the test's network namespace.
fn bonsai(netns: &NetNs, data: &Path, args: &[&str]) -> Output {
    netns
        .net_command(bonsai_bin())
        .arg(args[0])
        .arg("-d")
        .arg(data)
        .args(&args[1..])
        .output()
        .unwrap()
}

/// A data directory with the busybox test image imported as `example.com/test/busybox:v1`.
fn with_image(dir: &Path, netns: &NetNs) -> std::path::PathBuf {
    let layout = Layout::busybox(dir);
    let archive = dir.join("busybox.tar");
    layout.copy(
        netns,
        "v1",
        &format!("docker-archive:{}:example.com/test/busybox:v1", archive.display()),
        None,
    );
    let data = dir.join("data");
    ok(bonsai(
        netns,
        &data,
        &["images", "import", archive.to_str().unwrap()],
    ));
    data
}

const IMAGE: &str = "example.com/test/busybox:v1";

fn mounted_under(path: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let prefix = path.display().to_string();
    mounts
        .lines()
        .filter(|l| l.contains(&prefix))
        .map(String::from)
        .collect()
}

#[test]
fn run_output_exit_codes_limits_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let netns = NetNs::new();
    let data = with_image(dir.path(), &netns);
    let run = |args: &[&str]| {
        let mut all = vec!["containers", "run"];
        all.extend_from_slice(args);
        bonsai(&netns, &data, &all)
    };

    // Output, environment, the image's files, and the exit code.
    let out = ok(run(&[
        "--name",
        "hello",
        "-e",
        "GREETING=hi",
        IMAGE,
        "--",
        "/bin/sh",
        "-c",
        "echo $GREETING; cat /etc/removed; echo oops >&2",
    ]));
    assert_eq!(out, "hi\ngone in v2\noops\n");
    let log = std::fs::read_to_string(data.join("agent/containers/hello/container.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.split(' ').nth(1) == Some("stderr") && l.ends_with(" F oops")),
        "{log}"
    );
    assert!(
        lines[0].split(' ').next().unwrap().ends_with('Z'),
        "CRI timestamps: {log}"
    );
    assert_eq!(ok(bonsai(&netns, &data, &["logs", "hello"])), out);
    let failed = fails(run(&["--name", "fails", IMAGE, "--", "/bin/sh", "-c", "exit 3"]));
    assert!(failed.contains("exited with 3 (Error)"), "{failed}");

    // In its own namespaces: pid 1, its own hostname, no network but loopback.
    let inside = ok(run(&[
        "--name",
        "ns",
        IMAGE,
        "--",
        "/bin/sh",
        "-c",
        "echo $$; hostname; ls /sys/class/net",
    ]));
    assert_eq!(inside, "1\nns\nlo\n");

    // The memory limit: the kernel's OOM killer, reported as Kubernetes reports it.
    let oom = fails(run(&[
        "--name",
        "oom",
        "--memory-limit",
        "16777216",
        IMAGE,
        "--",
        "/bin/sh",
        "-c",
        "x=a; while true; do x=$x$x; done",
    ]));
    assert!(oom.contains("exited with 137 (OOMKilled)"), "{oom}");
    // The pids limit holds.
    let pids = fails(run(&[
        "--name",
        "pids",
        "--pids-limit",
        "4",
        IMAGE,
        "--",
        "/bin/sh",
        "-c",
        "for i in 1 2 3 4 5 6; do sleep 3 & done; wait",
    ]));
    let pids_log = ok(bonsai(&netns, &data, &["logs", "pids"]));
    assert!(pids_log.contains("can't fork"), "{pids}\n{pids_log}");

    // A detached container outlives the command that started it, and stops with SIGTERM then SIGKILL.
    let id = ok(run(&[
        "--name",
        "bg",
        "--detach",
        IMAGE,
        "--",
        "/bin/sleep",
        "300",
    ]));
    assert_eq!(id.trim(), "bg");
    let listed = ok(bonsai(&netns, &data, &["containers", "ls"]));
    let row = listed.lines().find(|l| l.starts_with("bg ")).unwrap();
    assert!(row.contains("Running"), "{listed}");
    let refused = fails(bonsai(&netns, &data, &["containers", "rm", "bg"]));
    assert!(refused.contains("still running"), "{refused}");
    ok(bonsai(
        &netns,
        &data,
        &["containers", "stop", "bg", "--grace-seconds", "1"],
    ));
    let listed = ok(bonsai(&netns, &data, &["containers", "ls"]));
    assert!(
        listed.lines().any(|l| l.starts_with("bg ") && l.contains("137")),
        "{listed}"
    );

    // Removal leaves no mounts and no state.
    assert!(!mounted_under(&data).is_empty());
    for id in ["hello", "fails", "ns", "oom", "pids", "bg"] {
        ok(bonsai(&netns, &data, &["containers", "rm", id]));
    }
    assert_eq!(mounted_under(&data), Vec::<String>::new());
    assert_eq!(
        std::fs::read_dir(data.join("agent/containers")).unwrap().count(),
        0
    );

    // Bad input: an image that is not there, a bad id.
    let missing = fails(run(&["--name", "x", "example.com/nope:1", "--", "/bin/true"]));
    assert!(missing.contains("not found"), "{missing}");
    let bad = fails(run(&["--name", "../x", IMAGE, "--", "/bin/true"]));
    assert!(bad.contains("invalid container id"), "{bad}");
}

#[test]
fn exec_runs_in_the_container_and_passes_on_stdin_and_the_exit_code() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let netns = NetNs::new();
    let data = with_image(dir.path(), &netns);
    ok(bonsai(
        &netns,
        &data,
        &[
            "containers",
            "run",
            "--name",
            "svc",
            "--detach",
            IMAGE,
            "--",
            "/bin/sleep",
            "300",
        ],
    ));
    let out = bonsai(
        &netns,
        &data,
        &[
            "exec",
            "-e",
            "X=1",
            "svc",
            "--",
            "/bin/sh",
            "-c",
            "echo $$ $X; hostname; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", bonsai_e2e::text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 1\nsvc\n",
        "the container's pid namespace and hostname"
    );
    assert!(
        out.stderr.is_empty(),
        "no noise: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cat = netns
        .net_command(bonsai_bin())
        .args(["exec", "-d"])
        .arg(&data)
        .args(["svc", "--", "/bin/cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin.take().unwrap().write_all(b"through stdin\n").unwrap();
    assert_eq!(
        String::from_utf8(cat.wait_with_output().unwrap().stdout).unwrap(),
        "through stdin\n"
    );
    let stopped = fails(bonsai(&netns, &data, &["exec", "nope", "--", "/bin/true"]));
    assert!(stopped.contains("no container nope"), "{stopped}");
    ok(bonsai(
        &netns,
        &data,
        &["containers", "stop", "svc", "--grace-seconds", "0"],
    ));
    let not_running = fails(bonsai(&netns, &data, &["exec", "svc", "--", "/bin/true"]));
    assert!(not_running.contains("not running"), "{not_running}");
    ok(bonsai(&netns, &data, &["containers", "rm", "svc"]));
    assert_eq!(mounted_under(&data), Vec::<String>::new());
}
