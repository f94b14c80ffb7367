//! Containers' lives on the node agent, against the real binary: lifecycle hooks and graceful termination,
//! termination messages, a memory limit that kills (OOMKilled), `kubectl cp`, and a server restart that leaves
//! every container running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use bonsai_e2e::as_node::{get, kubectl_file};
use bonsai_e2e::images::AgentNode;
use bonsai_e2e::{Server, ok, text, wait_for};
use serde_json::Value;

fn terminated(server: &Server, pod: &str) -> Value {
    get(server, &["pod", pod])["status"]["containerStatuses"][0]["state"]["terminated"].clone()
}

#[test]
fn hooks_termination_messages_oom_and_cp() {
    let node = AgentNode::with_busybox();
    let image = node.image();
    let host = tempfile::tempdir().unwrap();
    let journal = host.path().join("journal");
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "hooks"}},
       "spec": {{"terminationGracePeriodSeconds": 20, "containers": [{{"name": "c", "image": "{image}",
         "command": ["sh", "-c", "trap 'echo term >> /host/journal; exit 0' TERM; while true; do sleep 0.2; done"],
         "lifecycle": {{
           "postStart": {{"exec": {{"command": ["sh", "-c", "echo started > /tmp/post-start"]}}}},
           "preStop": {{"exec": {{"command": ["sh", "-c", "echo pre-stop >> /host/journal; sleep 1"]}}}}}},
         "volumeMounts": [{{"name": "host", "mountPath": "/host"}}]}}],
         "volumes": [{{"name": "host", "hostPath": {{"path": "{dir}"}}}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "bad-hook"}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{image}",
         "command": ["sleep", "1000"],
         "lifecycle": {{"postStart": {{"exec": {{"command": ["sh", "-c", "exit 7"]}}}}}}}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "message"}},
       "spec": {{"restartPolicy": "Never", "containers": [{{"name": "c", "image": "{image}",
         "command": ["sh", "-c", "printf 'all done' > /dev/termination-log; exit 2"]}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "fallback"}},
       "spec": {{"restartPolicy": "Never", "containers": [{{"name": "c", "image": "{image}",
         "terminationMessagePolicy": "FallbackToLogsOnError",
         "command": ["sh", "-c", "echo first; echo last words >&2; exit 1"]}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "hungry"}},
       "spec": {{"restartPolicy": "Never", "containers": [{{"name": "c", "image": "{image}",
         "command": ["sh", "-c", "tail /dev/zero"],
         "resources": {{"limits": {{"memory": "32Mi"}}}}}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "sidecar"}},
       "spec": {{"terminationGracePeriodSeconds": 1,
         "initContainers": [
           {{"name": "side", "image": "{image}", "restartPolicy": "Always", "command": ["sleep", "1000"]}},
           {{"name": "after", "image": "{image}", "command": ["true"]}}],
         "containers": [{{"name": "app", "image": "{image}", "command": ["sleep", "1000"]}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "sidecar-job"}},
       "spec": {{"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
         "initContainers": [
           {{"name": "side", "image": "{image}", "restartPolicy": "Always", "command": ["sleep", "1000"]}}],
         "containers": [{{"name": "app", "image": "{image}", "command": ["sh", "-c", "sleep 1"]}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "host-port"}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{image}",
         "command": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"],
         "ports": [{{"containerPort": 8080, "hostPort": 30080}}]}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "privileged"}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{image}",
         "command": ["sleep", "1000"], "securityContext": {{"privileged": true}}}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "as-root"}},
       "spec": {{"securityContext": {{"runAsNonRoot": true}}, "containers": [{{"name": "c", "image": "{image}",
         "command": ["sleep", "1000"]}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "as-user"}},
       "spec": {{"terminationGracePeriodSeconds": 1, "securityContext": {{"runAsNonRoot": true, "runAsUser": 1000}},
         "containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "1000"],
           "securityContext": {{"allowPrivilegeEscalation": false}},
           "resources": {{"limits": {{"memory": "48Mi", "cpu": "250m"}}}},
           "env": [{{"name": "MEM_MI", "valueFrom": {{"resourceFieldRef": {{"resource": "limits.memory", "divisor": "1Mi"}}}}}},
                   {{"name": "MILLICORES", "valueFrom": {{"resourceFieldRef": {{"resource": "limits.cpu", "divisor": "1m"}}}}}}]}}]}}}}]}}"#,
        dir = host.path().display(),
    );
    let server = &node.server;
    kubectl_file(server, "apply", "lifecycle.json", &manifest);

    // postStart ran before the container counted as started.
    let waited = server.kubectl(
        33,
        &["wait", "--for=condition=Ready", "pod/hooks", "--timeout=90s"],
    );
    assert!(waited.status.success(), "{}", text(&waited));
    let started = ok(server.kubectl(33, &["exec", "hooks", "--", "cat", "/tmp/post-start"]));
    assert_eq!(started, "started\n");

    // A failing postStart hook kills the container, which restarts (and backs off).
    wait_for(60, "the failed postStart hook to restart its container", || {
        let status = &get(server, &["pod", "bad-hook"])["status"]["containerStatuses"][0];
        status["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    // What happened is in the pods' events, as `kubectl describe` shows them.
    wait_for(30, "the pods' events", || {
        let described = ok(server.kubectl(33, &["describe", "pod", "hooks"]));
        let bad = ok(server.kubectl(33, &["describe", "pod", "bad-hook"]));
        described.contains("Started container c")
            && described.contains("Pulled")
            && !described.contains("FailedPostStartHook")
            && bad.contains("FailedPostStartHook")
            && bad.contains("exited with 7")
            && bad.contains("already present on machine")
    });

    // Termination messages: the file's, or the end of the log when the policy says so.
    wait_for(60, "the message pod to finish", || {
        terminated(server, "message").is_object()
    });
    let message = terminated(server, "message");
    assert_eq!(message["exitCode"], 2, "{message}");
    assert_eq!(message["message"], "all done", "{message}");
    wait_for(60, "the fallback pod to finish", || {
        terminated(server, "fallback").is_object()
    });
    let fallback = terminated(server, "fallback");
    assert_eq!(fallback["message"], "first\nlast words\n", "{fallback}");

    // Past its memory limit the container is killed by the kernel, and says so.
    wait_for(60, "the hungry pod to be killed", || {
        terminated(server, "hungry").is_object()
    });
    let hungry = terminated(server, "hungry");
    assert_eq!(hungry["reason"], "OOMKilled", "{hungry}");
    assert_eq!(hungry["exitCode"], 137, "{hungry}");
    assert_eq!(get(server, &["pod", "hungry"])["status"]["phase"], "Failed");

    // runAsNonRoot: an image running as root is refused; a non-root runAsUser runs. resourceFieldRef reads the
    // container's limits.
    wait_for(60, "the root pod to be refused", || {
        let status = &get(server, &["pod", "as-root"])["status"]["containerStatuses"][0]["state"]["waiting"];
        status["reason"] == "CreateContainerConfigError"
            && status["message"].as_str().is_some_and(|m| {
                m.starts_with(
                    "container has runAsNonRoot and image will run as root (pod: \"as-root_default(",
                )
            })
    });
    let waited = server.kubectl(
        33,
        &["wait", "--for=condition=Ready", "pod/as-user", "--timeout=60s"],
    );
    assert!(waited.status.success(), "{}", text(&waited));
    let who = ok(server.kubectl(
        33,
        &[
            "exec",
            "as-user",
            "--",
            "sh",
            "-c",
            "id -u; echo $MEM_MI $MILLICORES",
        ],
    ));
    assert_eq!(who, "1000\n48 250\n");
    // allowPrivilegeEscalation: false sets no_new_privs; privileged gives every capability (and leaves it unset).
    let status = |pod: &str| {
        ok(server.kubectl(
            33,
            &[
                "exec",
                pod,
                "--",
                "sh",
                "-c",
                "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status",
            ],
        ))
    };
    assert!(
        status("as-user").contains("NoNewPrivs:\t1"),
        "{}",
        status("as-user")
    );
    let waited = server.kubectl(
        33,
        &["wait", "--for=condition=Ready", "pod/privileged", "--timeout=60s"],
    );
    assert!(waited.status.success(), "{}", text(&waited));
    let privileged = status("privileged");
    // Every capability the node has (a sandboxed host may lack some).
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = ours
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert!(
        privileged.contains(&format!("CapEff:\t{bounding}")) && privileged.contains("NoNewPrivs:\t0"),
        "{privileged}"
    );
    // A privileged container sees the host's devices (a character device every Linux host has), others do not.
    let devices = |pod: &str| ok(server.kubectl(33, &["exec", pod, "--", "sh", "-c", "ls /dev"]));
    let host_device = ["kmsg", "loop-control", "fuse", "net"]
        .into_iter()
        .find(|d| std::path::Path::new("/dev").join(d).exists())
        .unwrap();
    assert!(
        devices("privileged").split_whitespace().any(|d| d == host_device),
        "{}",
        devices("privileged")
    );
    assert!(
        !devices("as-user").split_whitespace().any(|d| d == host_device),
        "{}",
        devices("as-user")
    );

    // A sidecar starts before the next init container and keeps running beside the app container; in a pod that
    // runs to completion it is stopped once the app container is done.
    let waited = server.kubectl(
        33,
        &["wait", "--for=condition=Ready", "pod/sidecar", "--timeout=60s"],
    );
    assert!(waited.status.success(), "{}", text(&waited));
    let sidecar = get(server, &["pod", "sidecar"]);
    let inits = &sidecar["status"]["initContainerStatuses"];
    assert!(inits[0]["state"]["running"].is_object(), "{inits}");
    assert_eq!(inits[1]["state"]["terminated"]["exitCode"], 0, "{inits}");
    wait_for(60, "the job-like pod to succeed", || {
        get(server, &["pod", "sidecar-job"])["status"]["phase"] == "Succeeded"
    });
    wait_for(30, "its sidecar to stop", || {
        let job = get(server, &["pod", "sidecar-job"]);
        let uid = job["metadata"]["uid"].as_str().unwrap().to_string();
        std::fs::read_dir(server.data_dir().join("agent/containers"))
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{uid}_side_"))
            })
            .all(|e| e.path().join("exit.json").exists())
    });

    // A host port reaches the pod from outside the node and from the node itself.
    let waited = server.kubectl(
        33,
        &["wait", "--for=condition=Ready", "pod/host-port", "--timeout=60s"],
    );
    assert!(waited.status.success(), "{}", text(&waited));
    let url = "http://192.168.209.1:30080/hostname";
    for (from, netns) in [("outside", node.upstream()), ("the node", &server.netns)] {
        let answer = netns
            .net_command("curl")
            .args(["-s", "--max-time", "5", url])
            .output()
            .unwrap();
        assert_eq!(text(&answer).trim(), "host-port", "from {from}");
    }

    // `kubectl exec -it` from a terminal (script(1) gives it one, of 40 rows and 132 columns): the command gets a
    // terminal of the client's size, relayed by the node agent.
    for minor in [27, 33] {
        let inner = format!(
            "stty rows 40 cols 132; {} --kubeconfig {} --cache-dir {} exec -it hooks -- sh -c 'stty size'",
            bonsai_e2e::kubectl_bin(minor).display(),
            server
                .data_dir()
                .parent()
                .unwrap()
                .join("kubeconfig.yaml")
                .display(),
            server.data_dir().parent().unwrap().join("kube-cache").display(),
        );
        let out = server
            .netns
            .command("script")
            .args(["-qec", &inner, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(text(&out).contains("40 132"), "kubectl 1.{minor}: {}", text(&out));
    }

    // QoS: BestEffort containers are the kernel's first OOM victims, Guaranteed ones its last, and each class
    // has its cgroup branch.
    let adj = |pod: &str| ok(server.kubectl(33, &["exec", pod, "--", "cat", "/proc/1/oom_score_adj"]));
    assert_eq!(adj("hooks"), "1000\n");
    // Guaranteed: -997, or no lower than this host lets the node agent go (a sandbox without CAP_SYS_RESOURCE).
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = ours
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    let may_lower = u64::from_str_radix(effective, 16).unwrap() & (1 << 24) != 0;
    let guaranteed: i32 = adj("as-user").trim().parse().unwrap();
    if may_lower {
        assert_eq!(guaranteed, -997);
    } else {
        assert!(guaranteed < 1000, "{guaranteed}");
    }
    let uid = get(server, &["pod", "hooks"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let branch = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .map(|root| std::path::Path::new(root).join(format!("bonsai/pods/besteffort/pod{uid}")))
        .find(|p| p.exists());
    assert!(branch.is_some(), "no besteffort cgroup for pod {uid}");

    // kubectl cp both ways (tar through exec).
    let local = host.path().join("upload.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    ok(server.kubectl(33, &["cp", local.to_str().unwrap(), "hooks:/tmp/upload.txt"]));
    let inside = ok(server.kubectl(33, &["exec", "hooks", "--", "cat", "/tmp/upload.txt"]));
    assert_eq!(inside, "copied in\n");
    let back = host.path().join("download.txt");
    ok(server.kubectl(33, &["cp", "hooks:/tmp/post-start", back.to_str().unwrap()]));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "started\n");

    // Deleting runs preStop, then SIGTERM, which the container handles and exits on well before its grace period.
    let began = Instant::now();
    ok(server.kubectl(33, &["delete", "pod", "hooks", "--wait=true", "--timeout=60s"]));
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "pre-stop\nterm\n");
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "the pod took its whole grace period: {:?}",
        began.elapsed()
    );
}

#[test]
fn a_server_restart_leaves_containers_running() {
    let node = AgentNode::with_busybox();
    let image = node.image();
    let manifest = format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "steady"}},
       "spec": {{"replicas": 2, "selector": {{"matchLabels": {{"app": "steady"}}}},
         "template": {{"metadata": {{"labels": {{"app": "steady"}}}},
           "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{image}",
             "command": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"],
             "readinessProbe": {{"tcpSocket": {{"port": 8080}}, "periodSeconds": 1}}}}]}}}}}}}}"#
    );
    kubectl_file(&node.server, "apply", "steady.json", &manifest);
    wait_for(30, "the deployment's pods", || {
        get(&node.server, &["pods", "-l", "app=steady"])["items"]
            .as_array()
            .is_some_and(|i| i.len() == 2)
    });
    let waited = node.server.kubectl(
        33,
        &[
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "app=steady",
            "--timeout=90s",
        ],
    );
    assert!(waited.status.success(), "{}", text(&waited));
    // What identifies each running container: its ID, start time, restart count, the pod's IP and the process.
    let snapshot = |server: &Server| -> Vec<(String, Value, Value, Value, Value)> {
        let pods = get(server, &["pods", "-l", "app=steady"]);
        let mut seen: Vec<_> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let c = &p["status"]["containerStatuses"][0];
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    c["containerID"].clone(),
                    c["state"]["running"]["startedAt"].clone(),
                    c["restartCount"].clone(),
                    p["status"]["podIP"].clone(),
                )
            })
            .collect();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        seen
    };
    let before = snapshot(&node.server);
    assert_eq!(before.len(), 2);
    let shims = |node: &AgentNode| -> Vec<String> {
        let mut pids: Vec<String> = std::fs::read_dir(node.server.data_dir().join("agent/containers"))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path().join("state.json")).unwrap_or_default())
            .collect();
        pids.sort();
        pids
    };
    let states = shims(&node);

    let node = node.restart_server();
    let server = &node.server;
    // The restarted agent adopts them: the pods stay Ready with the same containers, nothing restarts.
    let waited = server.kubectl(
        33,
        &[
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "app=steady",
            "--timeout=60s",
        ],
    );
    assert!(waited.status.success(), "{}", text(&waited));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(snapshot(server), before);
    assert_eq!(shims(&node), states, "the containers' recorded states changed");
    for (_, _, _, _, ip) in &before {
        let url = format!("http://{}:8080/hostname", ip.as_str().unwrap());
        let answer = server
            .netns
            .net_command("curl")
            .args(["-s", "--max-time", "5", &url])
            .output()
            .unwrap();
        assert!(answer.status.success(), "{}", text(&answer));
    }
}

#[test]
fn disk_pressure_collects_unused_images_then_evicts_pods() {
    // A threshold the node is always past: it is under disk pressure from the first round on (and tainted
    // node.kubernetes.io/disk-pressure, which the pod tolerates).
    let node = AgentNode::with_busybox_and(&["--kubelet-arg", "eviction-hard=nodefs.available<100%"]);
    let server = &node.server;
    let image = node.image();
    wait_for(40, "the node's DiskPressure condition", || {
        get(server, &["node", "n1"])["status"]["conditions"]
            .as_array()
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "DiskPressure" && c["status"] == "True")
            })
    });
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "victim"}},
       "spec": {{"terminationGracePeriodSeconds": 30, "containers": [{{"name": "c", "image": "{image}",
         "command": ["sleep", "1000"]}}],
         "tolerations": [{{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}}]}}}}"#
    );
    kubectl_file(server, "apply", "victim.json", &manifest);
    // The image is in use while the pod runs; reclaiming it is not enough, so the pod is evicted.
    wait_for(60, "the pod to be evicted", || {
        get(server, &["pod", "victim"])["status"]["reason"] == "Evicted"
    });
    let victim = get(server, &["pod", "victim"]);
    let status = &victim["status"];
    assert_eq!(status["phase"], "Failed", "{status}");
    assert!(
        status["message"].as_str().unwrap().starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 100%, available: "
        ),
        "{status}"
    );
    let disruption = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .cloned()
        .unwrap();
    assert_eq!(disruption["reason"], "TerminationByKubelet");
    // Its containers are gone, and then the image no container uses any more.
    let data = server.data_dir();
    wait_for(30, "the pod's containers to go", || {
        std::fs::read_dir(data.join("agent/containers")).is_ok_and(|mut d| d.next().is_none())
    });
    wait_for(30, "the unused image to be collected", || {
        let listed = bonsai_e2e::bonsai(&["images", "-d", data.to_str().unwrap(), "ls"]);
        listed.status.success() && !String::from_utf8_lossy(&listed.stdout).contains("busybox")
    });
    let described = ok(server.kubectl(33, &["describe", "pod", "victim"]));
    assert!(described.contains("Evicted"), "{described}");
}

#[test]
fn soft_thresholds_evict_after_their_grace_period_and_give_pods_a_grace_of_their_own() {
    // A soft threshold the node is always past, with a grace period: pressure at once, eviction only later, and
    // then with SIGTERM and up to eviction-max-pod-grace-period.
    let node = AgentNode::with_busybox_and(&[
        "--kubelet-arg",
        "eviction-soft=nodefs.available<100%",
        "--kubelet-arg",
        "eviction-soft-grace-period=nodefs.available=15s",
        "--kubelet-arg",
        "eviction-max-pod-grace-period=5",
    ]);
    let server = &node.server;
    let image = node.image();
    let pressure_since = |node_object: &serde_json::Value| {
        node_object["status"]["conditions"].as_array().and_then(|c| {
            c.iter()
                .find(|c| c["type"] == "DiskPressure" && c["status"] == "True")
                .and_then(|c| c["lastTransitionTime"].as_str().map(String::from))
        })
    };
    wait_for(40, "the node's DiskPressure condition", || {
        pressure_since(&get(server, &["node", "n1"])).is_some()
    });
    let since = pressure_since(&get(server, &["node", "n1"])).unwrap();
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "soft-victim"}},
       "spec": {{"terminationGracePeriodSeconds": 30, "containers": [{{"name": "c", "image": "{image}",
         "command": ["sh", "-c", "trap 'echo got-sigterm; exit 0' TERM; echo started; while true; do sleep 1; done"]}}],
         "tolerations": [{{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}}]}}}}"#
    );
    kubectl_file(server, "apply", "soft-victim.json", &manifest);
    wait_for(90, "the pod to be evicted", || {
        get(server, &["pod", "soft-victim"])["status"]["reason"] == "Evicted"
    });
    let status = get(server, &["pod", "soft-victim"])["status"].clone();
    assert!(
        status["message"].as_str().unwrap().starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 100%, available: "
        ),
        "{status}"
    );
    // Not before the threshold had been crossed for its grace period (API timestamps, to the second).
    let evicted_at = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap()
        .to_string();
    let seconds = |t: &str| {
        serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>(serde_json::json!(t))
            .unwrap()
            .0
            .as_second()
    };
    assert!(
        seconds(&evicted_at) - seconds(&since) >= 14,
        "evicted at {evicted_at}, under pressure since {since}"
    );
    // The container was asked to stop (SIGTERM, which it traps), not killed outright.
    wait_for(30, "the container's last words in its log", || {
        find_files(&node.logs, "0.log").iter().any(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains("got-sigterm")
        })
    });
}

/// Files named `name` anywhere under `dir`.
fn find_files(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n == name) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn attach_with_a_terminal_follows_the_clients_size() {
    let node = AgentNode::with_busybox();
    let server = &node.server;
    let image = node.image();
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "tty"}},
       "spec": {{"terminationGracePeriodSeconds": 0, "containers": [{{"name": "c", "image": "{image}",
         "tty": true, "stdin": true, "command": ["sh", "-c", "while true; do stty size; sleep 1; done"]}}]}}}}"#
    );
    kubectl_file(server, "apply", "tty.json", &manifest);
    ok(server.kubectl(33, &["wait", "--for=condition=Ready", "pod/tty", "--timeout=60s"]));
    // Before anyone attaches, the container's terminal has no size (busybox's stty says so as an error).
    assert!(!ok(server.kubectl(33, &["logs", "tty"])).contains("33 111"));
    // `kubectl attach -it` from a terminal of 33 rows and 111 columns (script(1) gives it one), then resized to
    // 20x70 while attached: the container's terminal follows, through the node agent's relay.
    for minor in [27, 33] {
        let kubectl = format!(
            "{} --kubeconfig {} --cache-dir {} attach -it tty",
            bonsai_e2e::kubectl_bin(minor).display(),
            server.kubeconfig.display(),
            server.dir.path().join("kube-cache").display(),
        );
        let inner = format!(
            "stty rows 33 cols 111; {kubectl} </dev/tty & sleep 4; stty rows 20 cols 70; kill -WINCH $!; sleep 3; kill $!"
        );
        let out = server
            .netns
            .command("script")
            .args(["-qc", &inner, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let seen = text(&out);
        assert!(seen.contains("33 111"), "kubectl 1.{minor}: {seen}");
        assert!(
            seen.contains("20 70"),
            "kubectl 1.{minor}, after the resize: {seen}"
        );
    }
}

#[test]
fn a_soft_threshold_without_a_grace_period_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = bonsai_e2e::bonsai(&[
        "server",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--kubelet-arg",
        "eviction-soft=memory.available<1Gi",
    ]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("grace period must be specified for the soft eviction threshold memory.available"),
        "{said}"
    );
    assert!(!dir.path().join("server").exists(), "nothing was started");
}

#[test]
fn image_pull_secrets_open_a_private_registry() {
    let node = AgentNode::with_private_busybox("puller", "s3cret");
    let server = &node.server;
    let image = node.image();
    let pod = |name: &str, secrets: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
           "spec": {{"terminationGracePeriodSeconds": 1, "imagePullSecrets": [{secrets}],
             "containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "1000"]}}]}}}}"#
        )
    };
    // Without credentials the pull is refused, and backs off.
    kubectl_file(server, "apply", "anonymous.json", &pod("anonymous", ""));
    wait_for(60, "the anonymous pull to back off", || {
        let state = &get(server, &["pod", "anonymous"])["status"]["containerStatuses"][0]["state"]["waiting"];
        state["reason"] == "ImagePullBackOff"
    });
    // A docker-registry Secret named in imagePullSecrets gets it through; a missing one is skipped.
    ok(server.kubectl(
        33,
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "--docker-server=127.0.0.1:5000",
            "--docker-username=puller",
            "--docker-password=s3cret",
        ],
    ));
    kubectl_file(
        server,
        "apply",
        "private.json",
        &pod("private", r#"{"name": "missing"}, {"name": "regcred"}"#),
    );
    let waited = server.kubectl(
        33,
        &["wait", "--for=condition=Ready", "pod/private", "--timeout=60s"],
    );
    assert!(waited.status.success(), "{}", text(&waited));
    let described = ok(server.kubectl(33, &["describe", "pod", "private"]));
    assert!(
        described.contains("FailedToRetrieveImagePullSecret"),
        "{described}"
    );
}
