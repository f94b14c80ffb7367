//! The test plays the node (and the kubelet) through the API: registers Nodes, sets pods' status as a kubelet
//! would, and reads objects back as JSON. For controller and scheduler tests that run no real node agent.

use serde_json::Value;

use crate::{Server, ok};

/// `kubectl get -o json ARGS...` (kubectl 1.33), parsed.
pub fn get(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["get", "-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(server.kubectl(33, &all))).unwrap()
}

/// Writes `manifest` to a file in the server's directory and `kubectl VERB -f`s it (kubectl 1.33).
pub fn kubectl_file(server: &Server, verb: &str, file_name: &str, manifest: &str) -> String {
    let file = server.dir.path().join(file_name);
    std::fs::write(&file, manifest).unwrap();
    ok(server.kubectl(33, &[verb, "-f", file.to_str().unwrap()]))
}

/// Patches an object's status subresource with a merge patch (kubectl 1.33), as a kubelet would.
pub fn patch_status(server: &Server, ns: &str, kind_name: &[&str], patch: &str) {
    let mut args = vec!["-n", ns, "patch"];
    args.extend_from_slice(kind_name);
    args.extend(["--subresource=status", "--type=merge", "-p", patch]);
    ok(server.kubectl(33, &args));
}

/// Plays the kubelet: the pod runs, with `ip` and the given readiness.
pub fn set_pod(server: &Server, ns: &str, name: &str, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = format!(
        r#"{{"status": {{"phase": "Running", "podIP": "{ip}", "podIPs": [{{"ip": "{ip}"}}],
            "conditions": [{{"type": "Ready", "status": "{status}"}}]}}}}"#
    );
    patch_status(server, ns, &["pod", name], &patch);
}

/// Plays the kubelet: the pod (in `default`) ran and its container `c` exited with `code`.
pub fn finish_pod(server: &Server, name: &str, code: i32) {
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let patch = format!(
        r#"{{"status": {{"phase": "{phase}", "containerStatuses": [{{"name": "c", "image": "busybox:1", "imageID": "",
            "ready": false, "restartCount": 0, "state": {{"terminated": {{"exitCode": {code}, "finishedAt": "{}"}}}}}}]}}}}"#,
        now_rfc3339()
    );
    patch_status(server, "default", &["pod", name], &patch);
}

/// Registers a Ready node with `cpu` cores, 4 GiB and 110 pods; `extra_spec` is JSON members for its spec.
pub fn add_node(server: &Server, name: &str, cpu: &str, extra_spec: &str) {
    let object = format!(
        r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{name}", "labels": {{"kubernetes.io/hostname": "{name}"}}}},
            "spec": {{{extra_spec}}}}}"#
    );
    kubectl_file(server, "create", &format!("node-{name}.json"), &object);
    let status = format!(
        r#"{{"status": {{"allocatable": {{"cpu": "{cpu}", "memory": "4Gi", "pods": "110"}},
            "capacity": {{"cpu": "{cpu}", "memory": "4Gi", "pods": "110"}},
            "conditions": [{{"type": "Ready", "status": "True"}}]}}}}"#
    );
    patch_status(server, "default", &["node", name], &status);
}

/// The current UTC time as RFC 3339 with seconds (as Kubernetes writes times).
pub fn now_rfc3339() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Makes `namespace`'s `default` ServiceAccount, as its controller would, for tests that run without the
/// controllers (pods are admitted only with their account).
pub fn default_service_account(server: &Server, namespace: &str) {
    ok(server.kubectl(33, &["create", "serviceaccount", "default", "-n", namespace]));
}
