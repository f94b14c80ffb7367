//! Containers end to end: busybox images built by umoci, imported, and run by the real binary's runtime (a
//! libcontainer shim per container) on this host's real namespaces, overlayfs and cgroups: output and exit codes,
//! CRI logs, the memory limit (OOMKilled, 137), the pids limit, containers that outlive the command that started
//! them, stop with a grace period, and removal that leaves no mount behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Output;

use bonsai_e2e::images::Layout;
use bonsai_e2e::{NetNs, bonsai_bin, fails, ok};

/// The real binary in the test's network namespace, its containers' cgroups under a parent of the test's own
/// (named after its temporary directory) so that tests side by side never share one.
fn bonsai_command(netns: &NetNs, data: &Path) -> std::process::Command {
    let mut command = netns.net_command(bonsai_bin());
    command.env("BONSAI_CGROUP_PARENT", cgroup_parent(data));
    command
}

fn cgroup_parent(data: &Path) -> String {
    let dir = data.parent().and_then(Path::file_name).unwrap_or_default();
    format!("bonsai-e2e-{}", dir.to_string_lossy().trim_start_matches('.'))
}

/// `bonsai <group> -d <data> <rest…>` (the data directory before any `--`), in the test's network namespace.
fn bonsai(netns: &NetNs, data: &Path, args: &[&str]) -> Output {
    bonsai_command(netns, data)
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

/// Force-removes every container of a data directory when dropped, so that a failing test leaves no container,
/// shim, mount or cgroup behind.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.0.join("agent/containers")) else {
            return;
        };
        let ids: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new(bonsai_bin())
                .arg("containers")
                .arg("-d")
                .arg(&self.0)
                .args(["rm", "--force"])
                .args(&ids)
                .output();
        }
    }
}

fn read_line(reader: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

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
    let _cleanup = Cleanup(data.clone());
    let run = |args: &[&str]| {
        let mut all = vec!["containers", "run"];
        all.extend_from_slice(args);
        bonsai(&netns, &data, &all)
    };

    // Output, environment, the image's files, and the exit code.
    let out = run(&[
        "--name",
        "hello",
        "-e",
        "GREETING=hi",
        IMAGE,
        "--",
        "/bin/sh",
        "-c",
        "echo $GREETING; cat /etc/removed; echo oops >&2",
    ]);
    assert!(out.status.success(), "{}", bonsai_e2e::text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\ngone in v2\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
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
    assert_eq!(
        ok(bonsai(&netns, &data, &["logs", "hello"])),
        "hi\ngone in v2\noops\n"
    );
    let failed = fails(run(&["--name", "fails", IMAGE, "--", "/bin/sh", "-c", "exit 3"]));
    assert!(failed.contains("exited with 3 (Error)"), "{failed}");

    // A log path of the caller's, as the node agent gives under /var/log/pods (its folders are made).
    let pod_log = dir.path().join("pods/default_web_1f2e/app/0.log");
    ok(run(&[
        "--name",
        "podlog",
        "--log-path",
        pod_log.to_str().unwrap(),
        IMAGE,
        "--",
        "/bin/echo",
        "to the pod log",
    ]));
    let text = std::fs::read_to_string(&pod_log).unwrap();
    assert!(text.ends_with(" stdout F to the pod log\n"), "{text}");

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

    // A command that is not in the image: a clear error, not a hang.
    let missing = fails(run(&["--name", "missing", IMAGE, "--", "/bin/nope"]));
    assert!(
        missing.contains("exited with 128 (StartError)") && missing.contains("/bin/nope"),
        "{missing}"
    );

    // Seccomp: unprivileged user namespaces are the kernel's to allow, but RuntimeDefault refuses them; a
    // Localhost profile is the user's own; a bad one is refused before anything runs.
    let unshare = ["--", "/bin/busybox", "unshare", "-U", "/bin/true"];
    let mut args = vec!["--name", "unconfined", IMAGE];
    args.extend(unshare);
    ok(run(&args));
    let mut args = vec!["--name", "confined", "--seccomp", "runtime-default", IMAGE];
    args.extend(unshare);
    let denied = fails(run(&args));
    assert!(denied.contains("Operation not permitted"), "{denied}");
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let own = fails(run(&[
        "--name",
        "own",
        "--seccomp",
        profile.to_str().unwrap(),
        IMAGE,
        "--",
        "/bin/busybox",
        "mkdir",
        "/made",
    ]));
    assert!(own.contains("Permission denied"), "{own}");
    std::fs::write(&profile, "{\"defaultAction\": 7}").unwrap();
    let bad = fails(run(&[
        "--name",
        "bad",
        "--seccomp",
        profile.to_str().unwrap(),
        IMAGE,
    ]));
    assert!(
        bad.contains("seccomp profile") && bad.contains("no-mkdir.json"),
        "{bad}"
    );

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

    // Usage, read from the container's cgroup: a shell holding a 20 MB string, and a sleep.
    ok(run(&[
        "--name",
        "big",
        "--detach",
        IMAGE,
        "--",
        "/bin/sh",
        "-c",
        "x=$(head -c 20000000 /dev/zero | tr '\\0' a); echo ready; sleep 300; echo ${#x}",
    ]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ok(bonsai(&netns, &data, &["logs", "big"])).contains("ready") {
        assert!(std::time::Instant::now() < deadline, "the string was never built");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stats = ok(bonsai(&netns, &data, &["containers", "stats", "--json", "big"]));
    let stats: serde_json::Value = serde_json::from_str(stats.trim()).unwrap();
    let usage = &stats["usage"];
    assert!(
        usage["memory_working_set_bytes"].as_u64().unwrap() > 20_000_000,
        "{stats}"
    );
    assert!(usage["cpu_usage_nanoseconds"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(usage["processes"], 2, "sh and sleep: {stats}");
    let table = ok(bonsai(&netns, &data, &["containers", "stats"]));
    assert!(table.lines().any(|l| l.starts_with("big ")), "{table}");
    let missing = fails(bonsai(&netns, &data, &["containers", "stats", "hello"]));
    assert!(missing.contains("no running container hello"), "{missing}");
    ok(bonsai(&netns, &data, &["containers", "rm", "--force", "big"]));

    // Removal leaves no mounts, no cgroups and no state.
    assert!(!mounted_under(&data).is_empty());
    for id in [
        "hello",
        "fails",
        "missing",
        "podlog",
        "ns",
        "unconfined",
        "confined",
        "own",
        "oom",
        "pids",
        "bg",
    ] {
        ok(bonsai(&netns, &data, &["containers", "rm", id]));
    }
    assert_eq!(mounted_under(&data), Vec::<String>::new());
    assert_eq!(
        std::fs::read_dir(data.join("agent/containers")).unwrap().count(),
        0
    );
    let parent = cgroup_parent(&data);
    let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join(&parent))
        .filter(|p| p.exists())
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");

    // Bad input: an image that is not there, a bad id.
    let missing = fails(run(&["--name", "x", "example.com/nope:1", "--", "/bin/true"]));
    assert!(missing.contains("not found"), "{missing}");
    let bad = fails(run(&["--name", "../x", IMAGE, "--", "/bin/true"]));
    assert!(bad.contains("invalid container id"), "{bad}");
}

/// A detached container `svc` sleeping for five minutes, in a namespace and data directory of its own; removed
/// (with whatever else the test ran) on drop.
struct Sleeper {
    _cleanup: Cleanup,
    netns: NetNs,
    data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Sleeper {
    fn start() -> Sleeper {
        let dir = tempfile::tempdir().unwrap();
        let netns = NetNs::new();
        let data = with_image(dir.path(), &netns);
        let sleeper = Sleeper {
            _cleanup: Cleanup(data.clone()),
            netns,
            data,
            _dir: dir,
        };
        let args = [
            "containers",
            "run",
            "--name",
            "svc",
            "--detach",
            IMAGE,
            "--",
            "/bin/sleep",
            "300",
        ];
        ok(bonsai(&sleeper.netns, &sleeper.data, &args));
        sleeper
    }
}

#[test]
fn exec_runs_in_the_container_and_passes_on_stdin_and_the_exit_code() {
    use std::io::Write;
    let sleeper = Sleeper::start();
    let (netns, data) = (&sleeper.netns, &sleeper.data);
    let out = bonsai(
        netns,
        data,
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
    let mut cat = bonsai_command(netns, data)
        .args(["exec", "-d"])
        .arg(data)
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
    let stopped = fails(bonsai(netns, data, &["exec", "nope", "--", "/bin/true"]));
    assert!(stopped.contains("no container nope"), "{stopped}");
    ok(bonsai(
        netns,
        data,
        &["containers", "stop", "svc", "--grace-seconds", "0"],
    ));
    let not_running = fails(bonsai(netns, data, &["exec", "svc", "--", "/bin/true"]));
    assert!(not_running.contains("not running"), "{not_running}");
    ok(bonsai(netns, data, &["containers", "rm", "svc"]));
    assert_eq!(mounted_under(data), Vec::<String>::new());
}

#[test]
fn attach_streams_both_ways_and_outlives_whoever_started_the_container() {
    use std::io::{BufReader, Write};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let netns = NetNs::new();
    let data = with_image(dir.path(), &netns);
    let _cleanup = Cleanup(data.clone());
    let spawn = |args: &[&str]| {
        bonsai_command(&netns, &data)
            .arg(args[0])
            .arg("-d")
            .arg(&data)
            .args(&args[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // In the foreground with --interactive: input goes in (and its end closes the container's input), stdout
    // and stderr come out apart, and the container's exit code is bonsai's.
    let mut fg = spawn(&[
        "containers",
        "run",
        "--name",
        "fg",
        "-i",
        IMAGE,
        "--",
        "/bin/sh",
        "-c",
        "read x; echo got $x; echo err >&2; cat; exit 3",
    ]);
    fg.stdin.take().unwrap().write_all(b"hello\nthe rest\n").unwrap();
    let out = fg.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", bonsai_e2e::text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello\nthe rest\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("err\n"),
        "{}",
        bonsai_e2e::text(&out)
    );

    // With a terminal, all output comes through it (as stdout, with the terminal's line endings).
    let out = ok(bonsai(
        &netns,
        &data,
        &[
            "containers",
            "run",
            "--name",
            "tty",
            "-t",
            IMAGE,
            "--",
            "/bin/sh",
            "-c",
            "tty; echo err >&2",
        ],
    ));
    assert!(
        out.starts_with("/dev/pts/") && out.ends_with("\r\nerr\r\n"),
        "{out:?}"
    );
    let log = std::fs::read_to_string(data.join("agent/containers/tty/container.log")).unwrap();
    assert!(
        log.lines().all(|l| l.split(' ').nth(1) == Some("stdout")),
        "{log}"
    );

    // kill -9 the command that started a container: the container runs on, and a new client re-attaches to
    // its live output.
    let mut starter = spawn(&[
        "containers",
        "run",
        "--name",
        "ticker",
        IMAGE,
        "--",
        "/bin/sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done",
    ]);
    let mut ticks = BufReader::new(starter.stdout.take().unwrap());
    assert_eq!(read_line(&mut ticks), "tick 0\n");
    starter.kill().unwrap();
    starter.wait().unwrap();
    let listed = ok(bonsai(&netns, &data, &["containers", "ls"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("ticker ") && l.contains("Running")),
        "{listed}"
    );
    // Its monitor is the small static binary the runtime wrote out, not a copy of bonsai.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("agent/containers/ticker/state.json")).unwrap())
            .unwrap();
    let monitor = std::fs::read_link(format!("/proc/{}/exe", state["shim_pid"])).unwrap();
    assert!(
        monitor.starts_with(data.join("agent/bin"))
            && monitor
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("bonsai-shim-monitor-")),
        "{}",
        monitor.display()
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("agent/containers/ticker/config.json")).unwrap())
            .unwrap();
    let cgroup = {
        let relative = format!(
            "{}/ticker",
            config["cgroup_parent"].as_str().unwrap().trim_matches('/')
        );
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        std::path::Path::new(if v2 {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/memory"
        })
        .join(relative)
    };
    assert!(cgroup.is_dir(), "{}", cgroup.display());
    let mut again = spawn(&["attach", "ticker"]);
    let mut ticks = BufReader::new(again.stdout.take().unwrap());
    let line = read_line(&mut ticks);
    let n: u32 = line
        .strip_prefix("tick ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(n > 0, "a live tick, not a replay: {line}");
    assert_eq!(read_line(&mut ticks), format!("tick {}\n", n + 1));
    // Stopping the container ends the attached client with the container's exit code.
    ok(bonsai(
        &netns,
        &data,
        &["containers", "stop", "ticker", "--grace-seconds", "0"],
    ));
    let ended = again.wait().unwrap();
    assert_eq!(ended.code(), Some(137));
    // The monitor removed the ended container's cgroup (before `rm`), as libcontainer's delete does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cgroup.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!cgroup.exists(), "{} is left", cgroup.display());

    // A detached interactive container keeps its input open across clients.
    ok(bonsai(
        &netns,
        &data,
        &[
            "containers",
            "run",
            "--name",
            "echo",
            "--detach",
            "-i",
            IMAGE,
            "--",
            "/bin/sh",
            "-c",
            "while read x; do echo \"echo $x\"; done; echo bye",
        ],
    ));
    for word in ["one", "two"] {
        let mut client = spawn(&["attach", "-i", "echo"]);
        let mut lines = BufReader::new(client.stdout.take().unwrap());
        client
            .stdin
            .as_mut()
            .unwrap()
            .write_all(format!("{word}\n").as_bytes())
            .unwrap();
        assert_eq!(read_line(&mut lines), format!("echo {word}\n"));
        client.kill().unwrap();
        client.wait().unwrap();
    }
    let refused = fails(bonsai(&netns, &data, &["attach", "-i", "ticker"]));
    assert!(refused.contains("not run with --interactive"), "{refused}");
    let log = ok(bonsai(&netns, &data, &["logs", "echo"]));
    assert_eq!(log, "echo one\necho two\n");
    for id in ["fg", "tty", "ticker"] {
        ok(bonsai(&netns, &data, &["containers", "rm", id]));
    }
    ok(bonsai(&netns, &data, &["containers", "rm", "--force", "echo"]));
    assert_eq!(mounted_under(&data), Vec::<String>::new());
}

/// A pseudo-terminal pair: (master, slave).
fn pty(rows: u16, cols: u16) -> (std::fs::File, std::fs::File) {
    use rustix::pty::OpenptFlags;
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&master, size).unwrap();
    (std::fs::File::from(master), slave)
}

#[test]
fn exec_with_a_terminal_starts_at_its_size_and_follows_resizes() {
    use std::io::Read;
    let sleeper = Sleeper::start();
    let (netns, data) = (&sleeper.netns, &sleeper.data);
    let (mut master, slave) = pty(24, 80);
    // The command waits (up to 10 s) for the size the test sets next, then reports it.
    let script = "tty; stty size; i=0; \
                  while [ \"$(stty size)\" != '40 100' ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
                  stty size; exit 5";
    let mut child = bonsai_command(netns, data)
        .args(["exec", "-d"])
        .arg(data)
        .args(["-t", "svc", "--", "/bin/sh", "-c", script])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while !seen.contains("24 80") {
        match master.read(&mut buffer) {
            Ok(n @ 1..) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            _ => panic!("the terminal ended before its size was printed: {seen:?}"),
        }
    }
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 40,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
    // Reads end with EIO once bonsai, the last holder of the terminal's other side, has exited.
    while let Ok(n @ 1..) = master.read(&mut buffer) {
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    assert_eq!(child.wait().unwrap().code(), Some(5), "{seen:?}");
    let lines: Vec<&str> = seen.lines().map(str::trim_end).collect();
    assert!(
        lines[0].starts_with("/dev/pts/"),
        "a terminal of its own: {seen:?}"
    );
    assert_eq!(lines[1..], ["24 80", "40 100"], "{seen:?}");
}
