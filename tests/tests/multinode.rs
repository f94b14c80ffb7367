//! Multi-node clusters: `bonsai agent` joined to a `bonsai server`, each node a network namespace of its own
//! linked through a bridge (`bonsai_e2e::cluster`). The join (CA check, token, CSRs), pods spread over the nodes,
//! their traffic over the VXLAN overlay, services and DNS across nodes, `kubectl logs`/`exec` through the API
//! server to an agent, an agent's restart adopting its pods, a dead agent's pods moved, and tokens refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::Duration;

use bonsai_e2e::cluster::Cluster;
use bonsai_e2e::{ok, text, wait_for};
use serde_json::Value;

fn json(out: std::process::Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn pods(cluster: &Cluster, selector: &str) -> Vec<Value> {
    json(
        cluster
            .server
            .kubectl(33, &["get", "pods", "-l", selector, "-o", "json"]),
    )["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string()
}

fn name_of(pod: &Value) -> String {
    pod["metadata"]["name"].as_str().unwrap().to_string()
}

/// The pod of `pods` on `node`.
fn on_node(pods: &[Value], node: &str) -> Value {
    pods.iter()
        .find(|p| node_of(p) == node && p["metadata"]["deletionTimestamp"].is_null())
        .unwrap_or_else(|| panic!("no pod on {node}: {pods:?}"))
        .clone()
}

/// `wget -qO- url` from pod `from`, through `kubectl exec` (so the exec goes through the API server to that
/// pod's node).
fn wget(cluster: &Cluster, from: &str, url: &str) -> Option<String> {
    let out = cluster.server.kubectl(
        33,
        &[
            "exec",
            from,
            "--",
            // (this busybox's wget crashes on -T: the timeout comes from its timeout applet)
            "/bin/busybox",
            "timeout",
            "5",
            "/bin/busybox",
            "wget",
            "-q",
            "-O",
            "-",
            url,
        ],
    );
    if !out.status.success() {
        eprintln!("wget {url} from {from}: {}", text(&out));
    }
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: web
        image: IMAGE
        command: ["/bin/sh", "-c", "mkdir -p /tmp/w; echo $HOSTNAME > /tmp/w/index.html; echo serving $HOSTNAME; exec /bin/busybox httpd -f -p 8080 -h /tmp/w"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: mover}
spec:
  replicas: 1
  selector: {matchLabels: {app: mover}}
  template:
    metadata: {labels: {app: mover}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{key: kubernetes.io/hostname, operator: NotIn, values: [s1]}]
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - {name: mover, image: IMAGE, command: ["/bin/sleep", "100000"]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: {kubernetes.io/hostname: a1}
  containers:
  - {name: client, image: IMAGE, command: ["/bin/sleep", "100000"]}
"#;

/// One server and two agents joined with the server's token: every check that needs a running multi-node
/// cluster, in order, on one cluster.
#[test]
fn joined_agents_run_pods_that_reach_each_other_and_survive_restarts() {
    let mut cluster = Cluster::start(
        2,
        &["--kube-controller-manager-arg", "node-monitor-grace-period=10s"],
    );

    // The join: each agent keeps its credentials, got through approved and issued CSRs.
    for agent in &cluster.agents {
        for file in [
            "server-ca.crt",
            "client-kubelet.crt",
            "client-kubelet.key",
            "serving-kubelet.crt",
            "kubelet.kubeconfig",
        ] {
            assert!(
                agent.data_dir().join("agent").join(file).is_file(),
                "{} has no {file}",
                agent.name
            );
        }
    }
    let csrs = json(cluster.server.kubectl(33, &["get", "csr", "-o", "json"]));
    let csrs = csrs["items"].as_array().unwrap();
    for (signer, requestor) in [
        (
            "kubernetes.io/kube-apiserver-client-kubelet",
            "system:bootstrap:server",
        ),
        ("kubernetes.io/kubelet-serving", "system:node:a1"),
        ("kubernetes.io/kubelet-serving", "system:node:a2"),
    ] {
        let csr = csrs
            .iter()
            .find(|c| c["spec"]["signerName"] == signer && c["spec"]["username"] == requestor)
            .unwrap_or_else(|| panic!("no CSR of {signer} by {requestor}: {csrs:?}"));
        assert_eq!(csr["status"]["conditions"][0]["type"], "Approved", "{csr}");
        assert!(
            csr["status"]["certificate"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{csr}"
        );
    }
    // kubectl's columns, as kube prints them.
    let table = ok(cluster.server.kubectl(33, &["get", "csr"]));
    assert!(
        table.contains("SIGNERNAME") && table.contains("Approved,Issued"),
        "{table}"
    );
    let nodes = json(cluster.server.kubectl(33, &["get", "nodes", "-o", "json"]));
    let cidrs: BTreeSet<&str> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["spec"]["podCIDR"].as_str().unwrap())
        .collect();
    assert_eq!(cidrs.len(), 3, "every node has a pod CIDR of its own: {cidrs:?}");

    // A Deployment spread over the three nodes.
    let manifest = WORKLOADS.replace("IMAGE", &cluster.image());
    let path = cluster.server.dir.path().join("workloads.yaml");
    std::fs::write(&path, manifest).unwrap();
    ok(cluster
        .server
        .kubectl(33, &["apply", "-f", path.to_str().unwrap()]));
    for deployment in ["web", "mover"] {
        let out = cluster.server.kubectl(
            33,
            &[
                "rollout",
                "status",
                &format!("deployment/{deployment}"),
                "--timeout=120s",
            ],
        );
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out),
            text(&cluster.server.kubectl(33, &["get", "pods", "-o", "wide"]))
        );
    }
    cluster.server.wait_ready(&["client"]);
    let web = pods(&cluster, "app=web");
    let spread: BTreeSet<String> = web.iter().map(node_of).collect();
    assert_eq!(spread, BTreeSet::from(["s1".into(), "a1".into(), "a2".into()]));

    // Pod to pod across nodes (a1 to a2 and to s1), over the overlay.
    for node in ["a2", "s1"] {
        let target = on_node(&web, node);
        let ip = target["status"]["podIP"].as_str().unwrap();
        assert_eq!(
            wget(&cluster, "client", &format!("http://{ip}:8080/")).as_deref(),
            Some(name_of(&target).as_str()),
            "from a1 to the pod on {node}"
        );
    }
    // A ClusterIP service by its DNS name, from a pod on an agent: backends on the other nodes answer.
    let mut answered = BTreeSet::new();
    wait_for(
        60,
        "the service's backends on s1 and a2 to answer a pod on a1",
        || {
            if let Some(name) = wget(&cluster, "client", "http://web.default.svc.cluster.local/") {
                answered.insert(name);
            }
            ["s1", "a2"]
                .iter()
                .all(|n| answered.contains(&name_of(&on_node(&web, n))))
        },
    );

    // kubectl logs and exec of a pod on an agent, through the API server.
    let on_a2 = name_of(&on_node(&web, "a2"));
    let logs = ok(cluster.server.kubectl(33, &["logs", &on_a2]));
    assert!(logs.contains(&format!("serving {on_a2}")), "{logs}");
    let exec = ok(cluster
        .server
        .kubectl(33, &["exec", &on_a2, "--", "cat", "/tmp/w/index.html"]));
    assert_eq!(exec.trim(), on_a2);

    // An agent's restart adopts its running pods: same container, no restart, no new CSR.
    let container_of = |cluster: &Cluster, name: &str| {
        let pod = json(cluster.server.kubectl(33, &["get", "pod", name, "-o", "json"]));
        let status = &pod["status"]["containerStatuses"][0];
        (
            status["containerID"].as_str().unwrap_or_default().to_string(),
            status["restartCount"].as_i64(),
        )
    };
    let on_a1 = name_of(&on_node(&web, "a1"));
    let before = container_of(&cluster, &on_a1);
    let csr_count = csrs.len();
    let token = cluster.server_token();
    {
        let a1 = &mut cluster.agents[0];
        let mut process = a1.process.take().unwrap();
        process.signal(libc::SIGTERM);
        assert!(process.wait(Duration::from_secs(30)).success());
        a1.start(Cluster::SERVER_IP, &token);
        let log = a1.process.as_mut().unwrap().log_so_far();
        assert!(log.contains("reusing the node's client certificate"), "{log}");
    }
    cluster.server.wait_ready(&[&on_a1, "client"]);
    assert_eq!(
        container_of(&cluster, &on_a1),
        before,
        "the restarted agent adopted its container"
    );
    let after = json(cluster.server.kubectl(33, &["get", "csr", "-o", "json"]));
    assert_eq!(
        after["items"].as_array().unwrap().len(),
        csr_count,
        "a restart makes no new CSR"
    );
    assert_eq!(
        wget(
            &cluster,
            "client",
            &format!(
                "http://{}:8080/",
                on_node(&web, "s1")["status"]["podIP"].as_str().unwrap()
            )
        )
        .as_deref(),
        Some(name_of(&on_node(&web, "s1")).as_str())
    );

    // A server away for a while: the agents keep their pods running and come back when it does.
    let on_a2_before = container_of(&cluster, &on_a2);
    cluster.restart_server(Duration::from_secs(15));
    cluster.wait_nodes_ready();
    cluster.server.wait_ready(&[&on_a1, &on_a2, "client"]);
    assert_eq!(
        container_of(&cluster, &on_a1),
        before,
        "a1's container ran on through the server's absence"
    );
    assert_eq!(
        container_of(&cluster, &on_a2),
        on_a2_before,
        "a2's container ran on through the server's absence"
    );
    let exec = ok(cluster
        .server
        .kubectl(33, &["exec", &on_a2, "--", "cat", "/tmp/w/index.html"]));
    assert_eq!(exec.trim(), on_a2);

    // A dead agent: its node goes Unknown, and its pods go elsewhere once their tolerations run out.
    // (on an agent, by its node affinity)
    let mover = pods(&cluster, "app=mover")[0].clone();
    let dead = node_of(&mover);
    let index = cluster.agents.iter().position(|a| a.name == dead).unwrap();
    cluster.agents[index].kill();
    wait_for(60, "the dead agent's node to be marked Unknown", || {
        let node = json(cluster.server.kubectl(33, &["get", "node", &dead, "-o", "json"]));
        node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "Unknown")
    });
    wait_for(90, "the mover pod to run on another node", || {
        pods(&cluster, "app=mover").iter().any(|p| {
            name_of(p) != name_of(&mover)
                && node_of(p) != dead
                && !node_of(p).is_empty()
                && p["status"]["containerStatuses"][0]["ready"] == true
        })
    });
}

/// Tokens: a wrong CA hash or a wrong secret is refused before any Node exists; `bonsai token create` makes one
/// that joins; a deleted or expired one does not (and the expired one's Secret is cleaned up).
#[test]
fn agents_join_only_with_a_valid_token() {
    let cluster = Cluster::start(0, &[]);
    let server_token = cluster.server_token();
    let no_node = |name: &str| {
        let out = cluster.server.kubectl(33, &["get", "node", name]);
        assert!(!out.status.success(), "node {name} exists: {}", text(&out));
    };
    let mut x1 = cluster.new_agent("x1", "192.168.230.21");
    let flipped = if &server_token[3..4] == "0" { "1" } else { "0" };
    let wrong_hash = format!("K10{flipped}{}", &server_token[4..]);
    let out = text(&x1.join_fails(Cluster::SERVER_IP, &wrong_hash));
    assert!(
        out.contains("does not match the token") && out.contains("Nothing secret was sent"),
        "{out}"
    );
    let (hash, _) = server_token.split_once("::").unwrap();
    let out = text(&x1.join_fails(Cluster::SERVER_IP, &format!("{hash}::server:not-the-secret")));
    assert!(out.contains("refused the join token"), "{out}");
    let out = text(&x1.join_fails(Cluster::SERVER_IP, "not-a-token"));
    assert!(out.contains("is not a join token"), "{out}");
    no_node("x1");

    let token_command = |args: &[&str]| {
        let mut command = cluster.server.netns.command(bonsai_e2e::bonsai_bin());
        command
            .arg("token")
            .args(args)
            .arg("--data-dir")
            .arg(cluster.server.data_dir())
            .arg("--kubeconfig")
            .arg(&cluster.server.kubeconfig);
        command.output().unwrap()
    };
    // A created token joins, as system:bootstrap:<id>.
    let created = ok(token_command(&[
        "create",
        "--ttl",
        "1h",
        "--description",
        "for x1",
    ]));
    let created = created.trim().to_string();
    let (_, credential) = created.split_once("::").unwrap();
    let id = credential.split('.').next().unwrap().to_string();
    assert!(created.starts_with(hash), "{created}");
    let listed = ok(token_command(&["list"]));
    assert!(listed.contains(&id) && listed.contains("for x1"), "{listed}");
    x1.start(Cluster::SERVER_IP, &created);
    wait_for(60, "node x1 to be Ready", || {
        cluster
            .server
            .kubectl(33, &["wait", "--for=condition=Ready", "--timeout=5s", "node/x1"])
            .status
            .success()
    });
    let csrs = json(cluster.server.kubectl(33, &["get", "csr", "-o", "json"]));
    assert!(
        csrs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["spec"]["username"] == format!("system:bootstrap:{id}")),
        "{csrs}"
    );
    x1.kill();

    // Deleted, it joins no more.
    ok(token_command(&["delete", &id]));
    let x2 = cluster.new_agent("x2", "192.168.230.22");
    let out = text(&x2.join_fails(Cluster::SERVER_IP, &created));
    assert!(out.contains("refused the join token"), "{out}");
    // Expired, neither; and the token cleaner deletes its Secret.
    let expiring = ok(token_command(&["create", "--ttl", "2s"])).trim().to_string();
    let expiring_id = expiring
        .split_once("::")
        .unwrap()
        .1
        .split('.')
        .next()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_secs(3));
    let out = text(&x2.join_fails(Cluster::SERVER_IP, &expiring));
    assert!(out.contains("refused the join token"), "{out}");
    wait_for(30, "the expired token's Secret to be deleted", || {
        !cluster
            .server
            .kubectl(
                33,
                &[
                    "-n",
                    "kube-system",
                    "get",
                    "secret",
                    &format!("bootstrap-token-{expiring_id}"),
                ],
            )
            .status
            .success()
    });
    no_node("x2");

    // CSRs the controllers do not recognise are left to people: `kubectl certificate approve/deny` write
    // `/approval`, and the requester is the user who created it, whatever the body says.
    for (name, verb, condition) in [("alice", "approve", "Approved"), ("mallory", "deny", "Denied")] {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let encoded = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(pem.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        let csr = format!(
            r#"{{"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {{"name": "{name}"}},
                "spec": {{"request": "{}", "signerName": "example.com/custom", "usages": ["client auth"], "username": "system:node:s1"}}}}"#,
            String::from_utf8(encoded.stdout).unwrap()
        );
        let path = cluster.server.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, csr).unwrap();
        ok(cluster
            .server
            .kubectl(33, &["create", "-f", path.to_str().unwrap()]));
        ok(cluster.server.kubectl(33, &["certificate", verb, name]));
        let written = json(cluster.server.kubectl(33, &["get", "csr", name, "-o", "json"]));
        assert_eq!(written["spec"]["username"], "system:admin", "{written}");
        assert_eq!(written["status"]["conditions"][0]["type"], condition, "{written}");
        assert!(written["status"].get("certificate").is_none(), "{written}");
    }
    let out = cluster
        .server
        .kubectl(33, &["get", "csr", "mallory", "-o", "json"]);
    let mut denied: Value = serde_json::from_str(&ok(out)).unwrap();
    denied["status"]["conditions"] = serde_json::json!([{"type": "Approved", "status": "True"}]);
    let path = cluster.server.dir.path().join("mallory-approved.json");
    std::fs::write(&path, denied.to_string()).unwrap();
    let out = cluster.server.kubectl(
        33,
        &[
            "replace",
            "--subresource",
            "approval",
            "-f",
            path.to_str().unwrap(),
        ],
    );
    assert!(
        !out.status.success() && text(&out).contains("may not remove a condition"),
        "{}",
        text(&out)
    );
    let refused = token_command(&["create", "not.valid"]);
    assert!(
        !refused.status.success() && text(&refused).contains("is not a bootstrap token"),
        "{}",
        text(&refused)
    );
}
