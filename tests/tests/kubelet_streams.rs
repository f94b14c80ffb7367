//! `kubectl logs`, `exec`, `attach` and `port-forward` against pods the node agent runs for real: the API server
//! finds the pod's node and proxies to the kubelet API on :10250 (HTTPS, cluster CA both ways).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bonsai_e2e::as_node::get;
use bonsai_e2e::{Server, fails, ok, text, wait_until};

/// How many `bonsai <verb> -d <this server's data dir>` helper processes run.
fn helpers(server: &Server, verb: &str) -> usize {
    let data = server.data_dir().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.len() > 3 && args[1] == verb.as_bytes() && args[2] == b"-d" && args[3] == data.as_bytes()
        })
        .count()
}

#[test]
fn kubectl_logs_exec_and_port_forward_reach_the_pods() {
    let node = bonsai_e2e::images::AgentNode::with_busybox();
    let server = &node.server;
    let image = node.image();
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "talker"}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{image}",
         "command": ["/bin/sh", "-c", "echo hello; i=0; while true; do echo line $i; i=$((i+1)); sleep 1; done"]}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "web"}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [
         {{"name": "httpd", "image": "{image}", "command": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"]}},
         {{"name": "side", "image": "{image}", "command": ["sleep", "1000"]}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "restarter"}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{image}",
         "command": ["/bin/sh", "-c", "echo attempt $(cat /proc/uptime); sleep 3; exit 1"]}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "unscheduled"}},
       "spec": {{"nodeSelector": {{"no-such": "node"}}, "containers": [{{"name": "c", "image": "{image}"}}]}}}}]}}"#
    );
    bonsai_e2e::as_node::kubectl_file(server, "apply", "pods.json", &manifest);
    server.wait_ready(&["talker", "web"]);

    // The kubelet API on the node's address: its certificate is the cluster CA's, and it serves only clients
    // with a certificate of the CA.
    let tls = server.data_dir().join("server/tls");
    let url = "https://192.168.209.1:10250/containerLogs/default/talker/c?tailLines=1";
    let ca = tls.join("server-ca.crt");
    let anonymous = server
        .netns
        .net_command("curl")
        .args(["-s", "--max-time", "5", "--cacert", ca.to_str().unwrap(), url])
        .output()
        .unwrap();
    assert!(!anonymous.status.success(), "{}", text(&anonymous));
    let (cert, key) = (tls.join("client-admin.crt"), tls.join("client-admin.key"));
    let direct = server
        .netns
        .net_command("curl")
        .args(["-sf", "--max-time", "5", "--cacert", ca.to_str().unwrap()])
        .args([
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            url,
        ])
        .output()
        .unwrap();
    let direct = ok(direct);
    assert_eq!(direct.lines().count(), 1, "{direct}");
    assert!(
        direct.starts_with("hello") || direct.starts_with("line "),
        "{direct}"
    );

    // Logs: the whole log, its tail, timestamps, on both kubectl versions.
    wait_until("three log lines", || {
        ok(server.kubectl(33, &["logs", "talker"])).lines().count() >= 3
    });
    for minor in [33, 27] {
        let all = ok(server.kubectl(minor, &["logs", "talker"]));
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines[0], "hello", "{all}");
        assert_eq!(lines[1], "line 0", "{all}");
        let tail = ok(server.kubectl(minor, &["logs", "talker", "--tail=1"]));
        assert_eq!(tail.lines().count(), 1, "{tail}");
        assert!(tail.starts_with("line "), "{tail}");
        let stamped = ok(server.kubectl(minor, &["logs", "talker", "--timestamps", "--tail=2"]));
        for line in stamped.lines() {
            let (time, rest) = line.split_once(' ').unwrap();
            assert!(time.ends_with('Z') && time.contains('T'), "{line}");
            assert!(rest.starts_with("line "), "{line}");
        }
        let limited = ok(server.kubectl(minor, &["logs", "talker", "--limit-bytes=3"]));
        assert_eq!(limited, "hel");
    }

    // Following streams new lines as they are written, until kubectl is stopped.
    let mut follow = server
        .kubectl_command(33)
        .args(["logs", "-f", "talker", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the followed log ended: {seen:?}"
        );
        seen.push(line.trim().to_string());
        assert!(started.elapsed() < Duration::from_secs(20), "{seen:?}");
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
    let numbers: Vec<u32> = seen
        .iter()
        .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers[1], numbers[0] + 1, "{seen:?}");
    assert_eq!(numbers[2], numbers[1] + 1, "{seen:?}");

    // The API server's refusals, in Kubernetes' words.
    // (kubectl itself picks a pod's first container when none is named: ask the API directly.)
    let several = fails(server.kubectl(33, &["get", "--raw", "/api/v1/namespaces/default/pods/web/log"]));
    assert!(
        several.contains("a container name must be specified for pod web, choose one of: [httpd side]"),
        "{several}"
    );
    let unknown = fails(server.kubectl(33, &["logs", "web", "-c", "nope"]));
    assert!(
        unknown.contains("container nope is not valid for pod web"),
        "{unknown}"
    );
    let unscheduled = fails(server.kubectl(33, &["exec", "unscheduled", "--", "true"]));
    assert!(
        unscheduled.contains("pod unscheduled does not have a host assigned"),
        "{unscheduled}"
    );
    let raw_log = ok(server.kubectl(
        33,
        &["get", "--raw", "/api/v1/namespaces/default/pods/unscheduled/log"],
    ));
    assert_eq!(
        raw_log, "",
        "an unscheduled pod's log is empty, as kube-apiserver's"
    );
    let missing = fails(server.kubectl(33, &["logs", "ghost"]));
    assert!(missing.contains("pods \"ghost\" not found"), "{missing}");

    // --previous: the attempt before the restart.
    wait_until("the restarter to restart", || {
        get(server, &["pod", "restarter"])["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    });
    let previous = ok(server.kubectl(33, &["logs", "restarter", "--previous"]));
    assert!(previous.starts_with("attempt "), "{previous}");
    // Following a container's log ends when the container does (the restarter's attempts last 3 s).
    let followed = Instant::now();
    let mut follow = server
        .kubectl_command(33)
        .args(["logs", "-f", "restarter"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = follow.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        if followed.elapsed() > Duration::from_secs(15) {
            follow.kill().unwrap();
            panic!("kubectl logs -f did not end with the container");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let never = fails(server.kubectl(33, &["logs", "talker", "--previous"]));
    assert!(
        never.contains("previous terminated container \"c\" in pod \"talker\" not found"),
        "{never}"
    );

    // exec: output, exit codes and standard input, on both versions (WebSocket on 1.33, SPDY on 1.27).
    for minor in [33, 27] {
        let hi = ok(server.kubectl(minor, &["exec", "talker", "--", "echo", "hi"]));
        assert_eq!(hi, "hi\n");
        let code = server.kubectl(
            minor,
            &[
                "exec",
                "talker",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        );
        assert_eq!(code.status.code(), Some(3), "{}", text(&code));
        assert_eq!(String::from_utf8_lossy(&code.stdout), "out\n");
        assert!(
            String::from_utf8_lossy(&code.stderr).contains("err"),
            "{}",
            text(&code)
        );
        let mut cat = server
            .kubectl_command(minor)
            .args(["exec", "-i", "talker", "--", "sh", "-c", "tr a-z A-Z"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        cat.stdin.take().unwrap().write_all(b"piped in\n").unwrap();
        let out = cat.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED IN\n");
        let named = ok(server.kubectl(
            minor,
            &["exec", "web", "-c", "side", "--", "cat", "/proc/1/cmdline"],
        ));
        assert!(named.starts_with("sleep"), "{named:?}");
    }

    // attach: the running container's output from now on.
    for minor in [33, 27] {
        let mut attach = server
            .kubectl_command(minor)
            .args(["attach", "talker"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(attach.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("line "), "{line:?}");
        assert_eq!(helpers(server, "attach"), 1);
        attach.kill().unwrap();
        attach.wait().unwrap();
        // The kubelet's helper goes with its client (it would otherwise stay until the container ends).
        wait_until("the attach helper to end", || helpers(server, "attach") == 0);
    }

    // port-forward: a local port in the node's namespace reaches the pod's httpd.
    for (minor, port) in [(33, "18080"), (27, "18081")] {
        let mut forward = server
            .kubectl_command(minor)
            .args(["port-forward", "pod/web", &format!("{port}:8080")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(forward.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("Forwarding from"), "{line}");
        for _ in 0..2 {
            let answer = server
                .netns
                .net_command("curl")
                .args([
                    "-s",
                    "--max-time",
                    "5",
                    &format!("http://127.0.0.1:{port}/hostname"),
                ])
                .output()
                .unwrap();
            assert_eq!(ok(answer).trim(), "web");
        }
        forward.kill().unwrap();
        forward.wait().unwrap();
    }
}
