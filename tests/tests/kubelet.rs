//! The node agent against the real binary: `bonsai server` runs its node's agent, which registers the Node as
//! the kubelet does and keeps its Lease and status fresh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bonsai_e2e::as_node::get;
use bonsai_e2e::{Server, ok, wait_until};

#[test]
fn the_server_registers_its_node_and_keeps_its_lease_fresh() {
    let server = Server::start_with_agent(&["--node-name", "Edge-1", "--node-label", "tier=edge"]);
    wait_until("the node to register and turn Ready", || {
        let out = server.kubectl(
            33,
            &[
                "get",
                "node",
                "edge-1",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
        );
        out.status.success() && String::from_utf8_lossy(&out.stdout) == "True"
    });
    let node = get(&server, &["node", "edge-1"]);
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "edge-1", "{node}");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
    assert_eq!(labels["tier"], "edge");
    let status = &node["status"];
    let cpus = std::thread::available_parallelism().unwrap().get().to_string();
    assert_eq!(status["capacity"]["cpu"], cpus.as_str());
    assert_eq!(status["capacity"]["pods"], "110");
    assert!(
        status["capacity"]["memory"].as_str().unwrap().ends_with("Ki"),
        "{status}"
    );
    assert!(status["allocatable"]["ephemeral-storage"].is_string());
    assert!(
        status["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("bonsai://"),
        "{status}"
    );
    assert!(
        status["nodeInfo"]["kubeletVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.33.")
    );
    assert_eq!(status["nodeInfo"]["operatingSystem"], "linux");
    assert_eq!(
        status["addresses"][1],
        serde_json::json!({"type": "Hostname", "address": "edge-1"})
    );
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]);
    // The node IPAM controller gives the registered node its pod subnet.
    wait_until("the node's pod CIDR", || {
        get(&server, &["node", "edge-1"])["spec"]["podCIDR"].is_string()
    });

    // The Lease in kube-node-lease is owned by the Node and renewed every 10 s.
    let lease = |server: &Server| get(server, &["-n", "kube-node-lease", "lease", "edge-1"]);
    wait_until("the node's lease", || {
        server
            .kubectl(33, &["-n", "kube-node-lease", "get", "lease", "edge-1"])
            .status
            .success()
    });
    let first = lease(&server);
    assert_eq!(first["spec"]["holderIdentity"], "edge-1");
    assert_eq!(first["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "Node");
    let renewed = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if lease(&server)["spec"]["renewTime"] != first["spec"]["renewTime"] {
            break;
        }
        assert!(renewed.elapsed().as_secs() < 15, "the lease was not renewed");
    }
}

/// Waits for the pod's events (as `kubectl describe` lists them) to mention each of `needles`.
fn wait_for_events(server: &Server, pod: &str, needles: &[&str]) {
    let mut described = String::new();
    for _ in 0..60 {
        described = ok(server.kubectl(33, &["describe", "pod", pod]));
        if needles.iter().all(|n| described.contains(n)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("the events of {pod} do not mention {needles:?}:\n{described}");
}

fn in_node(server: &Server, program: &str, args: &[&str]) -> std::process::Output {
    server.netns.net_command(program).args(args).output().unwrap()
}

#[test]
fn pods_run_serve_restart_and_stop_for_real() {
    let node = bonsai_e2e::images::AgentNode::with_busybox();
    let server = &node.server;
    let logs = node.logs.clone();
    let image = node.image();
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
      {{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "web"}},
       "spec": {{"replicas": 2, "selector": {{"matchLabels": {{"app": "web"}}}},
         "template": {{"metadata": {{"labels": {{"app": "web"}}}},
           "spec": {{"terminationGracePeriodSeconds": 3, "containers": [{{"name": "httpd", "image": "{image}",
             "command": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"],
             "env": [{{"name": "POD_NAME", "valueFrom": {{"fieldRef": {{"fieldPath": "metadata.name"}}}}}}],
             "ports": [{{"containerPort": 8080}}]}}]}}}}}}}},
      {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web"}},
       "spec": {{"selector": {{"app": "web"}}, "ports": [{{"port": 80, "targetPort": 8080}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "probed"}},
       "spec": {{"terminationGracePeriodSeconds": 2, "containers": [{{"name": "c", "image": "{image}",
         "command": ["/bin/sh", "-c", "touch /tmp/healthy; /bin/busybox httpd -f -p 8081 -h /etc & sleep 4; rm /tmp/healthy; sleep 1000"],
         "readinessProbe": {{"httpGet": {{"path": "/hostname", "port": 8081}}, "periodSeconds": 1}},
         "livenessProbe": {{"exec": {{"command": ["cat", "/tmp/healthy"]}}, "initialDelaySeconds": 1, "periodSeconds": 1,
           "failureThreshold": 1}}}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "never-ready"}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "1000"],
         "readinessProbe": {{"tcpSocket": {{"port": 9999}}, "periodSeconds": 1}}}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "crasher"}},
       "spec": {{"containers": [{{"name": "c", "image": "{image}", "command": ["/bin/sh", "-c", "echo bye; exit 3"]}}]}}}}]}}"#
    );
    bonsai_e2e::as_node::kubectl_file(server, "apply", "web.json", &manifest);

    // Both replicas run and turn Ready.
    wait_until("the deployment's pods", || {
        get(server, &["pods", "-l", "app=web"])["items"]
            .as_array()
            .is_some_and(|i| i.len() == 2)
    });
    let waited = server.kubectl(
        33,
        &[
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "app=web",
            "--timeout=90s",
        ],
    );
    assert!(
        waited.status.success(),
        "{}\n{}",
        bonsai_e2e::text(&waited),
        ok(server.kubectl(33, &["get", "pods", "-o", "yaml"]))
    );
    let pods = get(server, &["pods", "-l", "app=web"]);
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 2);
    for pod in pods {
        let status = &pod["status"];
        assert_eq!(status["phase"], "Running", "{status}");
        assert!(
            status["podIP"].as_str().unwrap().starts_with("10.42."),
            "{status}"
        );
        assert_eq!(status["hostIP"], "192.168.209.1");
        assert_eq!(status["qosClass"], "BestEffort");
        let container = &status["containerStatuses"][0];
        assert!(
            container["state"]["running"]["startedAt"].is_string(),
            "{container}"
        );
        assert_eq!(container["restartCount"], 0);
        assert!(
            container["containerID"]
                .as_str()
                .unwrap()
                .starts_with("bonsai://")
        );
        // Each answers on its own address, with its own host name (the kubelet's /etc/hostname).
        let name = pod["metadata"]["name"].as_str().unwrap();
        let url = format!("http://{}:8080/hostname", status["podIP"].as_str().unwrap());
        let answer = ok(in_node(server, "curl", &["-s", "--max-time", "5", &url]));
        assert_eq!(answer.trim(), name);
    }
    // A running pod whose state does not change is not written again: its resourceVersion stays (each write
    // would be a watch event for every client of the cluster).
    let name = pods[0]["metadata"]["name"].as_str().unwrap();
    let version = |server: &Server| get(server, &["pod", name])["metadata"]["resourceVersion"].clone();
    let before = version(server);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        version(server),
        before,
        "the pod's status was written again unchanged"
    );

    // The Service reaches them through its cluster IP, on the node's proxy.
    let cluster_ip = ok(server.kubectl(33, &["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]));
    wait_until("the service to answer", || {
        in_node(
            server,
            "curl",
            &["-s", "--max-time", "2", &format!("http://{cluster_ip}/hostname")],
        )
        .status
        .success()
    });

    // Probes: readiness (httpGet) makes the pod Ready, a failing liveness probe (exec) restarts the container,
    // and a readiness probe that never passes keeps a running pod out of Ready.
    let waited = server.kubectl(
        33,
        &["wait", "--for=condition=Ready", "pod/probed", "--timeout=60s"],
    );
    assert!(waited.status.success(), "{}", bonsai_e2e::text(&waited));
    wait_until("the liveness probe to restart the container", || {
        let pod = get(server, &["pod", "probed"]);
        let c = &pod["status"]["containerStatuses"][0];
        c["restartCount"].as_i64().unwrap_or(0) >= 1 && c["lastState"]["terminated"].is_object()
    });
    wait_for_events(
        server,
        "probed",
        &[
            "Unhealthy",
            "Liveness probe failed",
            "failed liveness probe, will be restarted",
        ],
    );
    let never = get(server, &["pod", "never-ready"]);
    assert_eq!(never["status"]["phase"], "Running", "{never}");
    assert_eq!(never["status"]["containerStatuses"][0]["ready"], false);
    let ready = never["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "False", "{never}");

    // A crashing container is restarted, then backs off.
    wait_until("the crasher to back off", || {
        let pod = get(server, &["pod", "crasher"]);
        let c = &pod["status"]["containerStatuses"][0];
        c["restartCount"].as_i64().unwrap_or(0) >= 1 && c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    wait_for_events(
        server,
        "crasher",
        &["Back-off restarting failed container c in pod crasher_default("],
    );
    let crasher = get(server, &["pod", "crasher"]);
    assert_eq!(
        crasher["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        3
    );
    let uid = crasher["metadata"]["uid"].as_str().unwrap();
    let log = std::fs::read_to_string(logs.join(format!("default_crasher_{uid}/c/0.log"))).unwrap();
    assert!(log.contains(" stdout F bye"), "{log}");

    // Deleting stops everything: the pods go from the API, their containers and sandboxes from the node.
    ok(server.kubectl(33, &["delete", "deployment", "web"]));
    ok(server.kubectl(33, &["delete", "pod", "crasher", "probed", "never-ready"]));
    let deleted = server.kubectl(33, &["wait", "--for=delete", "pod", "--all", "--timeout=60s"]);
    assert!(deleted.status.success(), "{}", bonsai_e2e::text(&deleted));
    // (The ReplicaSet may replace a terminating pod before the garbage collector deletes it: wait for all.)
    wait_until("every pod gone from the API", || {
        get(server, &["pods"])["items"]
            .as_array()
            .is_some_and(|i| i.is_empty())
    });
    wait_until("no container left on the node", || {
        std::fs::read_dir(server.data_dir().join("agent/containers")).is_ok_and(|mut d| d.next().is_none())
    });
    let pods_dir = server.data_dir().join("agent/pods");
    let pinned = || -> Vec<String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mounts
            .lines()
            .filter(|l| l.contains(pods_dir.to_str().unwrap()))
            .map(String::from)
            .collect()
    };
    wait_until("no pod's namespace left pinned", || pinned().is_empty());
}
