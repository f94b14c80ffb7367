//! A pod reaches the API with its own ServiceAccount token from inside the pod: a kube-rs client
//! (`tests/probe/in_cluster_probe.rs`, its in-cluster configuration: `KUBERNETES_SERVICE_HOST`/`_PORT`, the
//! mounted token and CA) in an image made from busybox, the probe and the shared libraries it links. Its account's
//! Role allows listing pods only: the list works, reading a Secret is a 403.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;

use bonsai_e2e::as_node::kubectl_file;
use bonsai_e2e::images::{AgentNode, Layout, Registry};
use bonsai_e2e::ok;

/// The probe and what `ldd` says it loads (the dynamic loader included).
fn probe_and_libraries() -> Vec<PathBuf> {
    let probe = PathBuf::from(env!("CARGO_BIN_EXE_in-cluster-probe"));
    let out = std::process::Command::new("ldd").arg(&probe).output().unwrap();
    assert!(
        out.status.success(),
        "ldd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = vec![probe];
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let path = match line.split_once("=>") {
            Some((_, target)) => target.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(path));
        }
    }
    files
}

#[test]
fn a_pod_lists_pods_with_its_own_token_and_is_refused_secrets() {
    let node = AgentNode::with_busybox();
    let server = &node.server;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::busybox(dir.path());
    let files = probe_and_libraries();
    layout.with_host_files("v1", "probe", &files);
    let image = format!("{}/test/probe:v1", Registry::ADDR);
    layout.copy(&server.netns, "probe", &format!("docker://{image}"), None);

    ok(server.kubectl(33, &["create", "serviceaccount", "prober"]));
    ok(server.kubectl(
        33,
        &["create", "role", "pod-lister", "--verb=list", "--resource=pods"],
    ));
    ok(server.kubectl(
        33,
        &[
            "create",
            "rolebinding",
            "prober",
            "--role=pod-lister",
            "--serviceaccount=default:prober",
        ],
    ));
    ok(server.kubectl(
        33,
        &["create", "secret", "generic", "not-for-you", "--from-literal=k=v"],
    ));
    let probe = files[0].display().to_string();
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "probe"}},
       "spec": {{"serviceAccountName": "prober", "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
         "containers": [{{"name": "probe", "image": "{image}", "command": ["{probe}"]}}]}}}}"#
    );
    kubectl_file(server, "apply", "probe.json", &manifest);
    ok(server.kubectl(
        33,
        &[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pod/probe",
            "--timeout=120s",
        ],
    ));
    let output = ok(server.kubectl(33, &["logs", "probe"]));
    let service_ip = ok(server.kubectl(
        33,
        &["get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"],
    ));
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines,
        [
            format!("api: {service_ip}:443").as_str(),
            "pods in default: probe",
            "secret: 403 secrets \"not-for-you\" is forbidden: User \"system:serviceaccount:default:prober\" \
             cannot get resource \"secrets\" in API group \"\" in the namespace \"default\"",
        ],
        "{output}"
    );
}
