//! Cluster DNS against the real binary, asked from inside busybox pods with `nslookup` through the kube-dns
//! Service: services by short and full name, headless services and their pods' hostnames, SRV, pod records,
//! ExternalName, names forwarded to an upstream DNS server (dnsmasq on the node's uplink), NXDOMAIN, a new
//! Service resolving soon after it is made, and a server that survives garbage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bonsai_e2e::as_node::kubectl_file;
use bonsai_e2e::images::AgentNode;
use bonsai_e2e::{Server, ok, text, wait_for};

/// dnsmasq answering `web.external.test` in the uplink's namespace, killed on drop.
struct Upstream(Child);

impl Upstream {
    fn start(node: &AgentNode) -> Upstream {
        let child = node
            .upstream()
            .net_command("dnsmasq")
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--pid-file",
                "--bind-interfaces",
                &format!("--listen-address={}", AgentNode::UPSTREAM_IP),
                "--host-record=web.external.test,192.0.2.11",
                "--host-record=other.external.test,192.0.2.12",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)");
        Upstream(child)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nslookup` in pod `pod` of `namespace`: (succeeded, output).
fn nslookup(server: &Server, namespace: &str, pod: &str, args: &[&str]) -> (bool, String) {
    // The image's `sh` runs busybox's applets by name (there is no nslookup file).
    let script = format!("nslookup {}", args.join(" "));
    let out = server.kubectl(33, &["exec", "-n", namespace, pod, "--", "sh", "-c", &script]);
    (out.status.success(), text(&out))
}

fn resolves(server: &Server, namespace: &str, pod: &str, args: &[&str], expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // busybox's nslookup tries every search domain and fails when any one is NXDOMAIN, so only what it
        // found counts.
        let (_, output) = nslookup(server, namespace, pod, args);
        if output.contains(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nslookup {args:?} never gave {expected}:\n{output}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn pod_ip(server: &Server, namespace: &str, pod: &str) -> String {
    ok(server.kubectl(
        33,
        &[
            "get",
            "pod",
            "-n",
            namespace,
            pod,
            "-o",
            "jsonpath={.status.podIP}",
        ],
    ))
}

#[test]
fn pods_resolve_cluster_names_and_upstream_names() {
    let mut node = AgentNode::with_busybox();
    let _upstream = Upstream::start(&node);
    let published = (0..120).any(|_| {
        std::thread::sleep(Duration::from_millis(250));
        node.server
            .log_so_far()
            .contains("cluster DNS endpoint published")
    });
    assert!(published, "no DNS endpoint: {}", node.server.log_so_far());
    let server = &node.server;
    let image = node.image();

    // The packaged kube-dns Service and this node's endpoint for it.
    wait_for(30, "the kube-dns service", || {
        let out = server.kubectl(
            33,
            &[
                "get",
                "svc",
                "-n",
                "kube-system",
                "kube-dns",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
        );
        out.status.success() && text(&out) == "10.43.0.10"
    });
    wait_for(30, "the kube-dns endpoint", || {
        let out = server.kubectl(
            33,
            &[
                "get",
                "endpointslices",
                "-n",
                "kube-system",
                "-l",
                "kubernetes.io/service-name=kube-dns",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[*]}",
            ],
        );
        text(&out).starts_with("10.42.")
    });

    let pod = |name: &str, namespace: &str, extra: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "{namespace}", "labels": {{"app": "{name}"}}}},
              "spec": {{"terminationGracePeriodSeconds": 0, {extra}
                "containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "3600"]}}]}}}}"#
        )
    };
    // The namespace first: its pods are admitted once its default ServiceAccount is there.
    ok(server.kubectl(33, &["create", "namespace", "other"]));
    for namespace in ["default", "other"] {
        bonsai_e2e::wait_until("the default service account", || {
            server
                .kubectl(33, &["get", "serviceaccount", "default", "-n", namespace])
                .status
                .success()
        });
    }
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
          {pod_client}, {pod_other}, {pod_db},
          {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web"}},
           "spec": {{"selector": {{"app": "db-0"}}, "ports": [{{"name": "http", "port": 80, "protocol": "TCP"}}]}}}},
          {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "peers"}},
           "spec": {{"clusterIP": "None", "selector": {{"app": "db-0"}}, "ports": [{{"name": "pg", "port": 5432}}]}}}},
          {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "ext"}},
           "spec": {{"type": "ExternalName", "externalName": "web.external.test"}}}}
        ]}}"#,
        pod_client = pod("client", "default", ""),
        pod_other = pod("client", "other", ""),
        pod_db = pod("db-0", "default", r#""hostname": "db-0", "subdomain": "peers","#),
    );
    kubectl_file(server, "create", "dns.json", &manifest);
    for (namespace, name) in [("default", "client"), ("other", "client"), ("default", "db-0")] {
        ok(server.kubectl(
            33,
            &[
                "wait",
                "-n",
                namespace,
                "--for=condition=Ready",
                &format!("pod/{name}"),
                "--timeout=90s",
            ],
        ));
    }
    let web_ip = ok(server.kubectl(33, &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]));
    let db_ip = pod_ip(server, "default", "db-0");

    // Services by their short name (the pod's search path; busybox searches only names without a dot), and
    // fully qualified from another namespace.
    resolves(server, "default", "client", &["web"], &web_ip);
    resolves(
        server,
        "other",
        "client",
        &["web.default.svc.cluster.local"],
        &web_ip,
    );
    // A headless service answers its ready pods, and a pod with hostname and subdomain has its own name.
    resolves(
        server,
        "default",
        "client",
        &["peers.default.svc.cluster.local"],
        &db_ip,
    );
    resolves(
        server,
        "default",
        "client",
        &["db-0.peers.default.svc.cluster.local"],
        &db_ip,
    );
    // SRV for a named port: the service's name and port, and each endpoint for the headless one.
    resolves(
        server,
        "default",
        "client",
        &["-type=SRV", "_http._tcp.web.default.svc.cluster.local"],
        "web.default.svc.cluster.local",
    );
    resolves(
        server,
        "default",
        "client",
        &["-type=SRV", "_pg._tcp.peers.default.svc.cluster.local"],
        "5432 db-0.peers.default.svc.cluster.local",
    );
    // Pod records spell their address.
    let dashed = db_ip.replace('.', "-");
    resolves(
        server,
        "default",
        "client",
        &[&format!("{dashed}.default.pod.cluster.local")],
        &db_ip,
    );
    // Reverse lookup of the service's address.
    resolves(
        server,
        "default",
        "client",
        &[&web_ip],
        "web.default.svc.cluster.local",
    );
    // Names outside the cluster come from the upstream; an ExternalName is its target's CNAME, chased.
    resolves(
        server,
        "default",
        "client",
        &["other.external.test"],
        "192.0.2.12",
    );
    resolves(
        server,
        "default",
        "client",
        &["ext.default.svc.cluster.local"],
        "192.0.2.11",
    );
    // A missing service is NXDOMAIN.
    let (found, output) = nslookup(server, "default", "client", &["nope.default.svc.cluster.local"]);
    assert!(!found && output.contains("NXDOMAIN"), "{output}");

    // A Service made now resolves shortly after.
    kubectl_file(
        server,
        "create",
        "late.json",
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
            "spec": {"ports": [{"port": 8080}]}}"#,
    );
    let late_ip = ok(server.kubectl(33, &["get", "svc", "late", "-o", "jsonpath={.spec.clusterIP}"]));
    resolves(
        server,
        "default",
        "client",
        &["late.default.svc.cluster.local"],
        &late_ip,
    );

    // Garbage, truncated and idle-TCP queries from the node do not stop the server.
    let garbage = node.server.netns.net_command("python3").args([
        "-c",
        r#"
import socket, os
for payload in [b"", b"\x00", os.urandom(11), os.urandom(512), b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(payload, ("10.43.0.10", 53)); s.close()
idle = socket.create_connection(("10.43.0.10", 53), timeout=5)
broken = socket.create_connection(("10.43.0.10", 53), timeout=5); broken.sendall(b"\xff\xff\x00"); broken.close()
"#,
    ]).status().unwrap();
    assert!(garbage.success());
    resolves(
        server,
        "default",
        "client",
        &["web.default.svc.cluster.local"],
        &web_ip,
    );
    // TCP answers too: (rcode, answer count) for the service's A record.
    let tcp = node
        .server
        .netns
        .net_command("python3")
        .args([
            "-c",
            r#"
import socket, struct
name = b"".join(bytes([len(l)]) + l for l in b"web.default.svc.cluster.local".split(b".")) + b"\x00"
query = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
s = socket.create_connection(("10.43.0.10", 53), timeout=5)
s.sendall(struct.pack(">H", len(query)) + query)
length = struct.unpack(">H", s.recv(2))[0]
reply = b""
while len(reply) < length:
    reply += s.recv(length - len(reply))
ident, flags, _, answers = struct.unpack(">HHHH", reply[:8])
print(ident == 0x4242, flags & 0xf, answers)
"#,
        ])
        .output()
        .unwrap();
    assert_eq!(text(&tcp).trim(), "True 0 1", "{tcp:?}");

    // The kube-dns Service's metrics port (CoreDNS's 9153): the DNS's own families, in a format promtool
    // accepts, counting the NXDOMAIN above; nothing of the API server's.
    let scraped = node
        .server
        .netns
        .net_command("curl")
        .args(["-s", "--max-time", "5", "http://10.43.0.10:9153/metrics"])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&scraped.stdout).to_string();
    assert!(
        metrics.contains("coredns_dns_responses_total{") && metrics.contains("rcode=\"NXDOMAIN\""),
        "{metrics}"
    );
    assert!(!metrics.contains("apiserver_"), "{metrics}");
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    drop(promtool.stdin.take());
    let checked = promtool.wait_with_output().unwrap();
    assert!(checked.status.success(), "{}", text(&checked));
}
