//! The node lifecycle controller, taint eviction and the pod garbage collector against the real binary, with the
//! test playing two kubelets: each renews its node's Lease in `kube-node-lease`, until one stops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bonsai_e2e::as_node::{add_node, get, kubectl_file, patch_status, set_pod};
use bonsai_e2e::{NetNs, Server, kubectl_bin, ok};
use serde_json::Value;

/// Now, with microseconds, as a Lease's `renewTime` is written.
fn micro_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What the kubelet's node lease controller does: the node's Lease renewed now.
fn renew_lease(netns: &NetNs, kubeconfig: &Path, node: &str) {
    let patch = format!(r#"{{"spec": {{"renewTime": "{}"}}}}"#, micro_now());
    let out = netns
        .command(kubectl_bin(33))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "-n",
            "kube-node-lease",
            "patch",
            "lease",
            node,
            "--type=merge",
            "-p",
            &patch,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", bonsai_e2e::text(&out));
}

fn create_lease(server: &Server, node: &str) {
    let lease = format!(
        r#"{{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {{"name": "{node}", "namespace": "kube-node-lease"}},
            "spec": {{"holderIdentity": "{node}", "leaseDurationSeconds": 40, "renewTime": "{}"}}}}"#,
        micro_now()
    );
    kubectl_file(server, "create", &format!("lease-{node}.json"), &lease);
}

/// Polls `check` every 200 ms until it holds, failing the test after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pod(server: &Server, name: &str) -> Value {
    get(server, &["pod", name])
}

fn terminating(server: &Server, name: &str) -> bool {
    !pod(server, name)["metadata"]["deletionTimestamp"].is_null()
}

fn exists(server: &Server, name: &str) -> bool {
    ok(server.kubectl(33, &["get", "pods", "-o", "name"])).contains(&format!("pod/{name}\n"))
}

fn condition<'a>(object: &'a Value, type_: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// The node's taints as `key:effect`.
fn taints(server: &Server, node: &str) -> Vec<String> {
    get(server, &["node", node])["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| format!("{}:{}", t["key"].as_str().unwrap(), t["effect"].as_str().unwrap()))
        .collect()
}

/// A pod placed by the scheduler on `node` (through its hostname label), with `tolerations` (JSON).
fn create_pod(server: &Server, name: &str, node: &str, tolerations: &str) {
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
            "spec": {{"nodeSelector": {{"kubernetes.io/hostname": "{node}"}}, "tolerations": {tolerations},
                     "terminationGracePeriodSeconds": 30, "containers": [{{"name": "c", "image": "busybox:1"}}]}}}}"#
    );
    kubectl_file(server, "create", &format!("pod-{name}.json"), &manifest);
}

/// Sets its flag when dropped, so that the renewing thread ends even when the test fails (the scope waits for it).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn events_of(server: &Server, name: &str) -> String {
    ok(server.kubectl(
        33,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ],
    ))
}

#[test]
fn a_silent_node_turns_unknown_its_pods_are_evicted_by_their_tolerations_and_collected_when_it_goes() {
    let server = Server::start(&["--kube-controller-manager-arg", "node-monitor-grace-period=10s"]);
    add_node(&server, "healthy", "4", "");
    add_node(&server, "failing", "4", "");
    create_lease(&server, "healthy");
    create_lease(&server, "failing");
    let failing_alive = AtomicBool::new(true);
    let stop = AtomicBool::new(false);
    let (netns, kubeconfig) = (&server.netns, server.kubeconfig.clone());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                renew_lease(netns, &kubeconfig, "healthy");
                if failing_alive.load(Ordering::Relaxed) {
                    renew_lease(netns, &kubeconfig, "failing");
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        let _stop = StopOnDrop(&stop);
        let unreachable_for = |seconds: &str| {
            format!(
                r#"[{{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"{seconds}}}]"#
            )
        };
        create_pod(&server, "plain", "failing", "[]");
        create_pod(
            &server,
            "at-once",
            "failing",
            &unreachable_for(r#", "tolerationSeconds": 0"#),
        );
        create_pod(
            &server,
            "five",
            "failing",
            &unreachable_for(r#", "tolerationSeconds": 5"#),
        );
        create_pod(&server, "forever", "failing", &unreachable_for(""));
        create_pod(&server, "intolerant", "healthy", "[]");
        create_pod(
            &server,
            "tolerant",
            "healthy",
            r#"[{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute"}]"#,
        );
        for (name, ip) in [
            ("plain", "10.42.1.2"),
            ("at-once", "10.42.1.3"),
            ("five", "10.42.1.4"),
            ("forever", "10.42.1.5"),
        ] {
            wait_for(&format!("{name} to be bound"), Duration::from_secs(15), || {
                pod(&server, name)["spec"]["nodeName"] == "failing"
            });
            set_pod(&server, "default", name, ip, true);
        }

        // DefaultTolerationSeconds: five minutes for each of the two taints a pod did not tolerate already.
        let tolerations = pod(&server, "plain")["spec"]["tolerations"].clone();
        assert_eq!(
            tolerations,
            serde_json::json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        let five = pod(&server, "five")["spec"]["tolerations"].clone();
        assert_eq!(
            five.as_array().unwrap().len(),
            2,
            "only not-ready was added: {five}"
        );

        // A NoExecute taint a pod does not tolerate deletes it at once; one tolerating it stays.
        wait_for(
            "tolerant and intolerant to be bound",
            Duration::from_secs(15),
            || {
                pod(&server, "intolerant")["spec"]["nodeName"] == "healthy"
                    && pod(&server, "tolerant")["spec"]["nodeName"] == "healthy"
            },
        );
        ok(server.kubectl(33, &["taint", "node", "healthy", "dedicated=db:NoExecute"]));
        wait_for(
            "the intolerant pod to be evicted",
            Duration::from_secs(10),
            || terminating(&server, "intolerant"),
        );
        let events = events_of(&server, "intolerant");
        assert!(
            events.contains("TaintManagerEviction")
                && events.contains("Marking for deletion Pod default/intolerant"),
            "{events}"
        );
        let target = condition(&pod(&server, "intolerant"), "DisruptionTarget").clone();
        assert_eq!(target["reason"], "DeletionByTaintManager", "{target}");
        assert!(!terminating(&server, "tolerant"));

        // The failing node's kubelet falls silent: after the grace period, every condition is Unknown.
        failing_alive.store(false, Ordering::Relaxed);
        let silent_since = Instant::now();
        wait_for(
            "the failing node to turn Unknown",
            Duration::from_secs(30),
            || condition(&get(&server, &["node", "failing"]), "Ready")["status"] == "Unknown",
        );
        let waited = silent_since.elapsed();
        assert!(waited >= Duration::from_secs(8), "Unknown after only {waited:?}");
        let node = get(&server, &["node", "failing"]);
        for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(condition(&node, type_)["status"], "Unknown", "{type_}: {node}");
        }
        assert_eq!(condition(&node, "Ready")["reason"], "NodeStatusUnknown");
        assert_eq!(
            condition(&node, "Ready")["message"],
            "Kubelet stopped posting node status."
        );
        assert_eq!(
            condition(&get(&server, &["node", "healthy"]), "Ready")["status"],
            "True"
        );

        // The unreachable taints, with the time they were added.
        wait_for("the unreachable taints", Duration::from_secs(10), || {
            let t = taints(&server, "failing");
            t.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string())
                && t.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
        });
        let tainted_at = Instant::now();
        let node = get(&server, &["node", "failing"]);
        assert!(
            node["spec"]["taints"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["timeAdded"].is_string()),
            "{node}"
        );

        // Tolerated for 0 s: evicted at once; for 5 s: about 5 s later; forever (or for the default 300 s): stays.
        wait_for("at-once to be evicted", Duration::from_secs(5), || {
            terminating(&server, "at-once")
        });
        assert!(!terminating(&server, "five"), "five went with at-once");
        wait_for("five to be evicted", Duration::from_secs(15), || {
            terminating(&server, "five")
        });
        let after = tainted_at.elapsed();
        assert!(
            after >= Duration::from_secs(3) && after <= Duration::from_secs(10),
            "five was evicted {after:?} after the taint"
        );
        let events = events_of(&server, "five");
        assert!(
            events.contains("Marking for deletion Pod default/five"),
            "{events}"
        );
        std::thread::sleep(Duration::from_secs(1));
        assert!(!terminating(&server, "forever"));
        assert!(!terminating(&server, "plain"));
        // The node's pods are not Ready any more.
        wait_for("the pods to be marked not Ready", Duration::from_secs(10), || {
            condition(&pod(&server, "forever"), "Ready")["status"] == "False"
                && condition(&pod(&server, "plain"), "Ready")["status"] == "False"
        });

        // The kubelet is back: Ready again, the unreachable taints go.
        renew_lease(netns, &kubeconfig, "failing");
        let heartbeat = bonsai_e2e::as_node::now_rfc3339();
        patch_status(
            &server,
            "default",
            &["node", "failing"],
            &format!(
                r#"{{"status": {{"conditions": [{{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "lastHeartbeatTime": "{heartbeat}", "lastTransitionTime": "{heartbeat}"}}]}}}}"#
            ),
        );
        failing_alive.store(true, Ordering::Relaxed);
        wait_for("the unreachable taints to go", Duration::from_secs(10), || {
            taints(&server, "failing").is_empty()
        });
        assert_eq!(
            condition(&get(&server, &["node", "failing"]), "Ready")["status"],
            "True"
        );

        // The node is deleted: the pod garbage collector force-deletes its pods, terminating ones too, after its
        // quarantine (40 s) and a live read that the node is gone.
        failing_alive.store(false, Ordering::Relaxed);
        ok(server.kubectl(33, &["delete", "node", "failing"]));
        wait_for(
            "the departed node's pods to be collected",
            Duration::from_secs(65),
            || {
                ["plain", "at-once", "five", "forever"]
                    .iter()
                    .all(|name| !exists(&server, name))
            },
        );
        assert!(exists(&server, "tolerant"), "pods of other nodes stay");
        // A force delete finishes a terminating pod too.
        assert!(terminating(&server, "intolerant"));
        ok(server.kubectl(
            33,
            &["delete", "pod", "intolerant", "--force", "--grace-period=0"],
        ));
        assert!(!exists(&server, "intolerant"));
    });
}
