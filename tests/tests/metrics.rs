//! `/metrics` on the API server (authenticated, a non-resource URL) and on the node agent's kubelet API (:10250,
//! client certificates of the cluster CA): the Prometheus text format, checked by a real parser (`promtool check
//! metrics`, from Debian's `prometheus`), with the families moving as the cluster is used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::io::Write;
use std::process::{Command, Stdio};

use bonsai_e2e::{Server, ok, text, wait_until};

/// `promtool check metrics` on a scrape: it must parse (exit 0 or, for lint remarks only, exit 3 with no
/// error).
fn promtool_accepts(scrape: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    child.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{scrape}",
        text(&out)
    );
}

/// The sum of the samples of `name` whose labels include every one of `labels` (`key="value"`).
fn sample_sum(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The API server's `/metrics` as the admin; checks the status and the Content-Type.
fn scrape_api(server: &Server) -> String {
    let headers = server.dir.path().join("metrics-headers");
    let mut args = server.admin_credentials();
    args.extend(["-D".into(), headers.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body) = server.curl("/metrics", &args);
    assert_eq!(code, 200, "{body}");
    let head = std::fs::read_to_string(&headers).unwrap().to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    body
}

#[test]
fn api_server_metrics_parse_and_count_requests() {
    let server = Server::start(&[]);

    // Unauthenticated: a 401 Status, as every other non-public path.
    let (code, body) = server.curl("/metrics", &[]);
    assert_eq!(code, 401, "{body}");

    // The controllers' and the scheduler's watches are long-running requests in flight.
    wait_until("watches in flight", || {
        sample_sum(
            &scrape_api(&server),
            "apiserver_longrunning_requests",
            &["verb=\"WATCH\""],
        ) > 0.0
    });
    let before = scrape_api(&server);
    promtool_accepts(&before);
    for family in [
        "# TYPE apiserver_request_total counter",
        "# TYPE apiserver_request_duration_seconds histogram",
        "# TYPE apiserver_longrunning_requests gauge",
        "# TYPE etcd_request_duration_seconds histogram",
        "# TYPE apiserver_storage_size_bytes gauge",
        "# TYPE workqueue_depth gauge",
    ] {
        assert!(before.contains(family), "no {family}:\n{before}");
    }
    assert!(
        sample_sum(&before, "apiserver_storage_size_bytes", &[]) > 0.0,
        "{before}"
    );
    assert!(
        sample_sum(&before, "etcd_request_duration_seconds_count", &["type=\"pods\""]) > 0.0,
        "{before}"
    );

    // kubectl's requests are counted by verb, resource and code.
    let lists = [
        r#"verb="LIST""#,
        r#"resource="configmaps""#,
        r#"code="200""#,
        r#"scope="namespace""#,
    ];
    let creates = [r#"verb="POST""#, r#"resource="configmaps""#, r#"code="201""#];
    let not_found = [r#"verb="GET""#, r#"resource="configmaps""#, r#"code="404""#];
    let listed = sample_sum(&before, "apiserver_request_total", &lists);
    ok(server.kubectl(33, &["get", "configmaps"]));
    ok(server.kubectl(33, &["get", "configmaps"]));
    ok(server.kubectl(33, &["create", "configmap", "counted", "--from-literal=a=b"]));
    assert!(
        !server
            .kubectl(33, &["get", "configmap", "missing"])
            .status
            .success()
    );
    let after = scrape_api(&server);
    promtool_accepts(&after);
    assert!(
        sample_sum(&after, "apiserver_request_total", &lists) >= listed + 2.0,
        "{after}"
    );
    assert!(
        sample_sum(&after, "apiserver_request_total", &creates) >= 1.0,
        "{after}"
    );
    assert!(
        sample_sum(&after, "apiserver_request_total", &not_found) >= 1.0,
        "{after}"
    );
    assert!(
        sample_sum(
            &after,
            "apiserver_request_duration_seconds_count",
            &[r#"verb="LIST""#, r#"resource="configmaps""#]
        ) >= listed + 2.0,
        "{after}"
    );
    let writes = sample_sum(
        &after,
        "etcd_request_duration_seconds_count",
        &[r#"operation="txn""#, r#"type="configmaps""#],
    );
    assert!(writes >= 1.0, "{after}");
}

#[test]
fn agent_metrics_show_running_containers_and_pod_start() {
    let node = bonsai_e2e::images::AgentNode::with_busybox();
    let server = &node.server;
    let image = node.image();
    // The pod asks the cluster DNS until it answers, then sleeps.
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "sleeper"}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{image}",
         "command": ["/bin/sh", "-c", "until nslookup kubernetes.default.svc.cluster.local; do sleep 1; done; sleep 1000"]}}]}}}}"#
    );
    bonsai_e2e::as_node::kubectl_file(server, "apply", "pod.json", &manifest);
    let waited = server.kubectl(
        33,
        &["wait", "--for=condition=Ready", "--timeout=90s", "pod/sleeper"],
    );
    assert!(waited.status.success(), "{}", text(&waited));

    // The kubelet API on the node's address serves only clients with a certificate from the cluster CA.
    let tls = server.data_dir().join("server/tls");
    let url = "https://192.168.209.1:10250/metrics";
    let ca = tls.join("server-ca.crt");
    let curl = |with_cert: bool| {
        let mut command = server.netns.net_command("curl");
        command.args(["-s", "--max-time", "5", "--cacert", ca.to_str().unwrap()]);
        if with_cert {
            let (cert, key) = (tls.join("client-admin.crt"), tls.join("client-admin.key"));
            command.args([
                "-f",
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ]);
        }
        command.arg(url).output().unwrap()
    };
    let anonymous = curl(false);
    assert!(!anonymous.status.success(), "{}", text(&anonymous));

    let scrape = || ok(curl(true));
    wait_until(
        "the running container and the pod's start in the node's metrics",
        || {
            let s = scrape();
            sample_sum(
                &s,
                "kubelet_running_containers",
                &[r#"container_state="running""#],
            ) >= 1.0
                && sample_sum(&s, "kubelet_pod_start_duration_seconds_count", &[]) >= 1.0
        },
    );
    let s = scrape();
    promtool_accepts(&s);
    assert!(sample_sum(&s, "kubelet_running_pods", &[]) >= 1.0, "{s}");
    assert!(
        sample_sum(
            &s,
            "kubelet_runtime_operations_total",
            &[r#"operation_type="pull_image""#]
        ) >= 1.0,
        "{s}"
    );
    assert!(
        sample_sum(&s, "kubelet_image_pull_duration_seconds_count", &[]) >= 1.0,
        "{s}"
    );
    // In the server the agent shares the process registry: the scheduler's attempt is there too.
    assert!(
        sample_sum(
            &s,
            "scheduler_schedule_attempts_total",
            &[r#"result="scheduled""#]
        ) >= 1.0,
        "{s}"
    );
    // The pod's lookups were answered by the node's cluster DNS.
    wait_until("DNS responses in the node's metrics", || {
        sample_sum(&scrape(), "coredns_dns_responses_total", &[r#"rcode="NOERROR""#]) >= 1.0
    });
}
