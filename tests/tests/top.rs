//! `kubectl top`: the node agent samples its pods' cgroups and serves the Summary API (`/stats/summary` on
//! :10250), and the API server serves `metrics.k8s.io/v1beta1` from it (metrics-server's job). A pod that burns
//! CPU must show clearly more than an idle one, on kubectl 1.27 and 1.33.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bonsai_e2e::{Server, fails, ok, text};

/// Millicores from a CPU quantity as kubectl top prints it (`250m`, `1`).
fn millicores(cpu: &str) -> u64 {
    match cpu.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => cpu.parse::<u64>().unwrap() * 1000,
    }
}

/// `kubectl top pods --containers`: (pod, container) → (millicores, memory as printed).
fn top_containers(
    server: &Server,
    minor: u32,
    extra: &[&str],
) -> Option<BTreeMap<(String, String), (u64, String)>> {
    let mut args = vec!["top", "pods", "--containers"];
    args.extend_from_slice(extra);
    let out = server.kubectl(minor, &args);
    if !out.status.success() {
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    assert_eq!(header, ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"], "{stdout}");
    Some(
        lines
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(fields.len(), 4, "{stdout}");
                (
                    (fields[0].to_string(), fields[1].to_string()),
                    (millicores(fields[2]), fields[3].to_string()),
                )
            })
            .collect(),
    )
}

/// Polls `check` every second for up to `limit` (sampling happens every 10 s): no timing is asserted, only that
/// the state is reached at all.
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn kubectl_top_shows_cpu_that_moves_when_a_pod_burns_it() {
    let node = bonsai_e2e::images::AgentNode::with_busybox();
    let server = &node.server;
    let image = node.image();
    // The burner asks for CPU so that its cgroup's shares hold their own on a busy machine.
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "burner", "labels": {{"app": "burn"}}}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "burn", "image": "{image}",
         "command": ["sh", "-c", "while :; do :; done"], "resources": {{"requests": {{"cpu": "500m"}}}}}}]}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "idle", "labels": {{"app": "idle"}}}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [
         {{"name": "sleeper", "image": "{image}", "command": ["sleep", "100000"]}},
         {{"name": "side", "image": "{image}", "command": ["sleep", "100000"]}}]}}}}]}}"#
    );
    bonsai_e2e::as_node::kubectl_file(server, "apply", "pods.json", &manifest);
    server.wait_ready(&["burner", "idle"]);

    // The group is discovered, by legacy and aggregated discovery alike.
    for minor in [27, 33] {
        let versions = ok(server.kubectl(minor, &["api-versions"]));
        assert!(
            versions.lines().any(|l| l == "metrics.k8s.io/v1beta1"),
            "{versions}"
        );
        let resources = ok(server.kubectl(minor, &["api-resources", "--api-group=metrics.k8s.io"]));
        assert!(
            resources.contains("PodMetrics") && resources.contains("NodeMetrics"),
            "{resources}"
        );
    }
    let admin = server.admin_credentials();
    let admin: Vec<&str> = admin.iter().map(String::as_str).collect();
    let (code, body) = server.curl("/apis/metrics.k8s.io/v1beta1", &admin);
    assert_eq!(code, 200, "{body}");

    // The burner's CPU shows clearly above the idle pod's once two samples are taken.
    let mut seen = BTreeMap::new();
    eventually(
        "the burner's CPU in kubectl top",
        Duration::from_secs(120),
        || {
            let Some(top) = top_containers(server, 33, &[]) else {
                return false;
            };
            seen = top.clone();
            let burn = top.get(&("burner".into(), "burn".into()));
            let idle = top.get(&("idle".into(), "sleeper".into()));
            let side = top.get(&("idle".into(), "side".into()));
            match (burn, idle, side) {
                (Some(burn), Some(idle), Some(side)) => {
                    burn.0 >= 200 && idle.0 * 4 < burn.0 && side.0 * 4 < burn.0
                }
                _ => false,
            }
        },
    );
    for ((_, _), (_, memory)) in &seen {
        assert!(memory.ends_with("Mi"), "memory as kubectl prints it: {seen:?}");
    }

    // kubectl 1.27 reads the same; a label selector picks the pods.
    let old = top_containers(server, 27, &[]).expect("kubectl 1.27 top pods");
    assert!(old.contains_key(&("burner".into(), "burn".into())), "{old:?}");
    let selected = top_containers(server, 33, &["-l", "app=burn"]).unwrap();
    assert_eq!(
        selected.keys().collect::<Vec<_>>(),
        [&("burner".to_string(), "burn".to_string())],
        "{selected:?}"
    );
    for minor in [27, 33] {
        let pods = ok(server.kubectl(minor, &["top", "pods", "-A"]));
        assert!(
            pods.lines()
                .any(|l| l.starts_with("default ") && l.contains("burner")),
            "{pods}"
        );
    }

    // kubectl top nodes: the node with its CPU and memory, and the percentages of allocatable.
    for minor in [27, 33] {
        let nodes = ok(server.kubectl(minor, &["top", "nodes"]));
        let line = nodes
            .lines()
            .find(|l| l.starts_with("n1 "))
            .unwrap_or_else(|| panic!("{nodes}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 5, "{nodes}");
        assert!(
            millicores(fields[1]) >= 200,
            "the node carries the burner: {nodes}"
        );
        assert!(fields[2].ends_with('%') && fields[4].ends_with('%'), "{nodes}");
        assert!(fields[3].ends_with("Mi"), "{nodes}");
    }

    // The objects as the API serves them.
    let raw = ok(server.kubectl(
        33,
        &[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner",
        ],
    ));
    let metrics: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(metrics["kind"], "PodMetrics", "{raw}");
    assert_eq!(metrics["metadata"]["name"], "burner");
    assert_eq!(metrics["metadata"]["labels"]["app"], "burn");
    assert_eq!(metrics["window"], "10s");
    assert!(metrics["timestamp"].as_str().unwrap().ends_with('Z'), "{raw}");
    assert_eq!(metrics["containers"][0]["name"], "burn");
    assert!(metrics["containers"][0]["usage"]["cpu"].is_string(), "{raw}");
    let nodes = ok(server.kubectl(33, &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]));
    let nodes: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    assert_eq!(nodes["kind"], "NodeMetricsList");
    assert_eq!(nodes["items"][0]["metadata"]["name"], "n1");
    let all = ok(server.kubectl(33, &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods"]));
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all["kind"], "PodMetricsList");
    assert!(all["items"].as_array().unwrap().len() >= 2, "{all}");
    let missing = fails(server.kubectl(
        33,
        &[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
        ],
    ));
    assert!(
        missing.contains("NotFound") && missing.contains("\"default/nope\" not found"),
        "{missing}"
    );
    let (code, body) = server.curl("/apis/metrics.k8s.io/v1beta1/nodes/nope", &admin);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("\"kind\":\"Status\""), "{body}");

    // The kubelet's Summary API on :10250, for clients with a certificate of the cluster CA only.
    let tls = server.data_dir().join("server/tls");
    let ca = tls.join("server-ca.crt");
    let url = "https://192.168.209.1:10250/stats/summary";
    let anonymous = server
        .netns
        .net_command("curl")
        .args(["-sf", "--max-time", "5", "--cacert", ca.to_str().unwrap(), url])
        .output()
        .unwrap();
    assert!(!anonymous.status.success(), "{}", text(&anonymous));
    let (cert, key) = (tls.join("client-admin.crt"), tls.join("client-admin.key"));
    let summary = ok(server
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
        .unwrap());
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["node"]["nodeName"], "n1", "{summary}");
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["node"]["memory"]["workingSetBytes"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let burner = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "burner")
        .unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(burner["podRef"]["namespace"], "default");
    assert!(burner["podRef"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        burner["cpu"]["usageNanoCores"].as_u64().unwrap() >= 200_000_000,
        "{burner}"
    );
    assert_eq!(burner["containers"][0]["name"], "burn");
    assert!(
        burner["containers"][0]["memory"]["workingSetBytes"].is_u64(),
        "{burner}"
    );
}
