//! The first-run experience: `bonsai check-config`, the config file and its precedence, `bonsai kubectl`,
//! `bonsai wait-ready`, and `bonsai server --ephemeral` leaving nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bonsai_e2e::images::{Layout, Registry};
use bonsai_e2e::{NetNs, Running, bonsai, bonsai_bin, cgroups_naming, kubectl_bin, text};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn check_config_passes_on_this_host_and_reports_a_taken_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let out = bonsai(&["check-config", "--https-listen-port", &port]);
    let report = stdout(&out);
    assert!(out.status.success(), "{}", text(&out));
    for line in [
        "namespaces:",
        "cgroups:",
        "  ok    memory",
        "  ok    overlayfs",
        "  ok    vxlan",
        "  ok    nftables",
        "verdict: this host can run bonsai",
    ] {
        assert!(report.contains(line), "no {line:?} in:\n{report}");
    }
    let taken = report
        .lines()
        .find(|l| l.contains(&format!("tcp/{port} ")))
        .unwrap_or_default();
    assert!(
        taken.starts_with("  warn") && taken.contains("in use"),
        "{report}"
    );
}

/// A server in `netns` with `args` and `env`, up once it says so.
fn server(netns: &NetNs, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut command = netns.command(bonsai_bin());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut running = Running::start_with(command, args);
    running.wait_for_log("bonsai server ready", Duration::from_secs(30));
    running
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_config_file_and_its_dropins_apply_and_env_and_flags_take_precedence() {
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    std::fs::write(
        &config,
        format!(
            "data-dir: {}\nwrite-kubeconfig: {}\nwrite-kubeconfig-mode: \"644\"\ndisable-agent: true\n\
             https-listen-port: 7443\n",
            dir.path().join("data").display(),
            kubeconfig.display()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("config.yaml.d")).unwrap();
    std::fs::write(
        dir.path().join("config.yaml.d/50-port.yaml"),
        "https-listen-port: 7444\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();

    // The file (its drop-in last): mode 644, port 7444.
    let mut running = server(&netns, &["server", "-c", config_arg], &[]);
    assert_eq!(mode(&kubeconfig), 0o644);
    assert!(
        running.log_so_far().contains("https://127.0.0.1:7444"),
        "{}",
        running.log_so_far()
    );
    drop(running);

    // The environment beats the file, found through BONSAI_CONFIG_FILE.
    let running = server(
        &netns,
        &["server"],
        &[
            ("BONSAI_CONFIG_FILE", config_arg),
            ("BONSAI_KUBECONFIG_MODE", "640"),
        ],
    );
    assert_eq!(mode(&kubeconfig), 0o640);
    drop(running);

    // A flag beats both.
    let running = server(
        &netns,
        &["server", "--config", config_arg, "--write-kubeconfig-mode", "600"],
        &[("BONSAI_KUBECONFIG_MODE", "640")],
    );
    assert_eq!(mode(&kubeconfig), 0o600);
    drop(running);

    // An unknown key is refused by name, with its file; so is a named file that is missing.
    std::fs::write(
        dir.path().join("config.yaml.d/60-typo.yaml"),
        "htps-listen-port: 1\n",
    )
    .unwrap();
    let out = bonsai(&["server", "-c", config_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("unknown key \"htps-listen-port\"") && err.contains("60-typo.yaml"),
        "{err}"
    );
    let out = bonsai(&["server", "-c", "/nonexistent/config.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("/nonexistent/config.yaml"), "{}", text(&out));
    // A bad value from the file says it came from the file.
    std::fs::write(
        dir.path().join("config.yaml.d/60-typo.yaml"),
        "https-listen-port: lots\n",
    )
    .unwrap();
    let out = bonsai(&["server", "-c", config_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("config file") && text(&out).contains("lots"),
        "{}",
        text(&out)
    );
}

#[test]
fn wait_ready_gives_up_after_its_timeout_with_the_reason() {
    let started = std::time::Instant::now();
    let out = bonsai(&[
        "wait-ready",
        "--timeout",
        "1s",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = text(&out);
    assert!(
        err.contains("not ready within") && err.contains("/nonexistent/kubeconfig"),
        "{err}"
    );
}

#[test]
fn bonsai_kubectl_finds_a_real_kubectl_and_never_itself() {
    let dir = tempfile::tempdir().unwrap();
    let links = dir.path().join("bin");
    std::fs::create_dir(&links).unwrap();
    std::os::unix::fs::symlink(bonsai_bin(), links.join("kubectl")).unwrap();
    let real = kubectl_bin(33);
    let real_dir = real.parent().unwrap();

    // Through the `kubectl` link, with the real kubectl later on PATH: that one runs, with the user's kubeconfig.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\ncurrent-context: x\ncontexts:\n- name: x\n  context: {cluster: x, user: x}\nclusters:\n- name: x\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: x\n  user: {}\n").unwrap();
    let path = std::env::join_paths([links.as_path(), real_dir]).unwrap();
    let out = Command::new(links.join("kubectl"))
        .args(["config", "view", "-o", "jsonpath={.clusters[0].cluster.server}"])
        .env("PATH", &path)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), "https://127.0.0.1:1");
    let out = Command::new(bonsai_bin())
        .args(["kubectl", "version", "--client"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && stdout(&out).contains("Client Version"),
        "{}",
        text(&out)
    );

    // Only the link on PATH: a clear message, not a loop.
    let out = Command::new(links.join("kubectl"))
        .arg("get")
        .arg("pods")
        .env("PATH", &links)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out);
    assert!(
        err.contains("is a link to bonsai itself") && err.contains("BONSAI_KUBECTL"),
        "{err}"
    );

    // BONSAI_KUBECTL names the program.
    let out = Command::new(bonsai_bin())
        .args(["kubectl", "version", "--client"])
        .env("PATH", &links)
        .env("BONSAI_KUBECTL", &real)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn an_ephemeral_server_runs_pods_and_leaves_nothing_behind() {
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let _registry = Registry::start(&netns, &dir.path().join("registry"), None);
    Layout::busybox(dir.path()).copy(
        &netns,
        "v1",
        &format!("docker://{}/test/busybox:v1", Registry::ADDR),
        None,
    );
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let links_before = text(&netns.command("ip").args(["-o", "link"]).output().unwrap());
    let mut command = netns.net_command(bonsai_bin());
    command.env("TMPDIR", dir.path());
    let mut server = Running::start_with(
        command,
        &[
            "server",
            "--ephemeral",
            "--node-name",
            "n1",
            "--resolv-conf",
            resolv.to_str().unwrap(),
        ],
    );
    let line = server.wait_for_log("ephemeral cluster", Duration::from_secs(10));
    let root = PathBuf::from(line.split("dir=").nth(1).unwrap().trim());
    assert!(root.starts_with(dir.path()), "{line}");
    let kubeconfig = root.join("kubeconfig.yaml");
    server.wait_for_log("bonsai server ready", Duration::from_secs(30));

    // wait-ready returns once the API and the node are ready.
    let waited = netns
        .command(bonsai_bin())
        .args(["wait-ready", "--timeout", "60s", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(waited.status.success(), "{}", text(&waited));
    assert_eq!(stdout(&waited).trim(), "ready");
    let kubectl = |args: &[&str]| {
        netns
            .command(kubectl_bin(33))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .unwrap()
    };
    let image = format!("{}/test/busybox:v1", Registry::ADDR);
    let ran = kubectl(&[
        "run",
        "p",
        "--image",
        &image,
        "--restart=Never",
        "--",
        "sleep",
        "3600",
    ]);
    assert!(ran.status.success(), "{}", text(&ran));
    let ready = kubectl(&["wait", "--for=condition=Ready", "pod/p", "--timeout=90s"]);
    assert!(
        ready.status.success(),
        "{}\n{}",
        text(&ready),
        server.log_so_far()
    );
    let uid = stdout(&kubectl(&["get", "pod", "p", "-o", "jsonpath={.metadata.uid}"]));
    assert!(!uid.is_empty());
    assert!(!cgroups_naming(&uid).is_empty(), "the pod has no cgroup");

    server.signal(libc::SIGTERM);
    let status = server.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}: {}", server.log_so_far());
    assert!(!root.exists(), "{} is left", root.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(root.to_str().unwrap()),
        "mounts left under {}",
        root.display()
    );
    assert_eq!(
        text(&netns.command("ip").args(["-o", "link"]).output().unwrap()),
        links_before
    );
    let tables = netns.command("nft").args(["list", "tables"]).output().unwrap();
    assert_eq!(stdout(&tables), "", "nft tables left");
    assert_eq!(cgroups_naming(&uid), Vec::<PathBuf>::new(), "cgroups left");
    assert!(
        !std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read_to_string(p.path().join("cmdline"))
                .is_ok_and(|c| c.contains(root.to_str().unwrap()))
        }),
        "a process of the ephemeral cluster is left"
    );
}
