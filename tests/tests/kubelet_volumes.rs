//! Pod volumes against the real binary: configMap, secret, downwardAPI, projected, emptyDir (disk and memory),
//! hostPath and a claimed hostPath PersistentVolume, mounted into busybox containers, kept current while the pod
//! runs, and gone from the node with the pod.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bonsai_e2e::as_node::{get, kubectl_file};
use bonsai_e2e::images::AgentNode;
use bonsai_e2e::{Server, ok, text, wait_for};

/// `kubectl exec <pod> -c <container> -- sh -c <script>`, its output.
fn sh(server: &Server, pod: &str, container: &str, script: &str) -> String {
    ok(server.kubectl(33, &["exec", pod, "-c", container, "--", "sh", "-c", script]))
}

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|p| p.starts_with(dir.to_str().unwrap()))
        })
        .map(String::from)
        .collect()
}

#[test]
fn volumes_are_mounted_kept_current_and_removed() {
    let node = AgentNode::with_busybox();
    let server = &node.server;
    let image = node.image();
    let host = tempfile::tempdir().unwrap();
    let host_dir = host.path().join("shared");
    let claimed = host.path().join("claimed");
    std::fs::create_dir(&claimed).unwrap();
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
      {{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "settings"}},
       "data": {{"greeting": "hello", "colour": "green"}}}},
      {{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "creds"}}, "stringData": {{"password": "s3cret"}}}},
      {{"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {{"name": "pv-claimed"}},
       "spec": {{"capacity": {{"storage": "1Gi"}}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
         "hostPath": {{"path": "{claimed}"}}}}}},
      {{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {{"name": "data"}},
       "spec": {{"accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": "pv-claimed",
         "resources": {{"requests": {{"storage": "1Gi"}}}}}}}},
      {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "vol", "labels": {{"app": "vol"}}}},
       "spec": {{"terminationGracePeriodSeconds": 1,
         "securityContext": {{"fsGroup": 2345}},
         "initContainers": [{{"name": "prep", "image": "{image}",
           "command": ["sh", "-c", "echo from-init > /work/handoff"],
           "volumeMounts": [{{"name": "work", "mountPath": "/work"}}]}}],
         "containers": [{{"name": "app", "image": "{image}", "command": ["sleep", "1000"],
           "env": [{{"name": "POD", "valueFrom": {{"fieldRef": {{"fieldPath": "metadata.name"}}}}}}],
           "volumeMounts": [
             {{"name": "config", "mountPath": "/etc/settings"}},
             {{"name": "config", "mountPath": "/etc/greeting.txt", "subPath": "greeting"}},
             {{"name": "creds", "mountPath": "/etc/creds"}},
             {{"name": "info", "mountPath": "/etc/info"}},
             {{"name": "all", "mountPath": "/etc/all"}},
             {{"name": "work", "mountPath": "/work"}},
             {{"name": "work", "mountPath": "/per-pod", "subPathExpr": "pods/$(POD)"}},
             {{"name": "scratch", "mountPath": "/scratch"}},
             {{"name": "host", "mountPath": "/host"}},
             {{"name": "claim", "mountPath": "/claim"}}]}}],
         "volumes": [
           {{"name": "config", "configMap": {{"name": "settings"}}}},
           {{"name": "creds", "secret": {{"secretName": "creds", "defaultMode": 256}}}},
           {{"name": "info", "downwardAPI": {{"items": [
             {{"path": "labels", "fieldRef": {{"fieldPath": "metadata.labels"}}}},
             {{"path": "name", "fieldRef": {{"fieldPath": "metadata.name"}}}}]}}}},
           {{"name": "all", "projected": {{"sources": [
             {{"configMap": {{"name": "settings", "items": [{{"key": "colour", "path": "colour"}}]}}}},
             {{"secret": {{"name": "creds"}}}}]}}}},
           {{"name": "work", "emptyDir": {{}}}},
           {{"name": "scratch", "emptyDir": {{"medium": "Memory", "sizeLimit": "8Mi"}}}},
           {{"name": "host", "hostPath": {{"path": "{host_dir}", "type": "DirectoryOrCreate"}}}},
           {{"name": "claim", "persistentVolumeClaim": {{"claimName": "data"}}}}]}}}}]}}"#,
        claimed = claimed.display(),
        host_dir = host_dir.display(),
    );
    kubectl_file(server, "apply", "volumes.json", &manifest);
    let waited = server.kubectl(33, &["wait", "--for=condition=Ready", "pod/vol", "--timeout=90s"]);
    assert!(
        waited.status.success(),
        "{}\n{}",
        text(&waited),
        ok(server.kubectl(33, &["get", "pod", "vol", "-o", "yaml"]))
    );

    // Each kind shows what its source holds.
    assert_eq!(sh(server, "vol", "app", "cat /etc/settings/greeting"), "hello");
    assert_eq!(sh(server, "vol", "app", "cat /etc/greeting.txt"), "hello");
    assert_eq!(sh(server, "vol", "app", "cat /etc/creds/password"), "s3cret");
    assert_eq!(sh(server, "vol", "app", "cat /etc/info/name"), "vol");
    assert_eq!(sh(server, "vol", "app", "cat /etc/info/labels"), "app=\"vol\"");
    assert_eq!(
        sh(server, "vol", "app", "cat /etc/all/colour /etc/all/password"),
        "greens3cret"
    );
    assert_eq!(sh(server, "vol", "app", "cat /work/handoff"), "from-init\n");
    // Files appear through the `..data` link, with the modes asked for (fsGroup adds the group's read bit, as
    // SetVolumeOwnership does), and projections are read-only.
    let listing = sh(server, "vol", "app", "ls -a /etc/settings");
    assert!(
        listing.contains("..data") && listing.contains("greeting"),
        "{listing}"
    );
    let mode = sh(server, "vol", "app", "stat -L -c %a /etc/creds/password");
    assert_eq!(mode.trim(), "440");
    let refused = server.kubectl(
        33,
        &[
            "exec",
            "vol",
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "echo x > /etc/settings/new",
        ],
    );
    assert!(!refused.status.success(), "a configMap volume was writable");
    // fsGroup: the process is in the group, and the emptyDir belongs to it.
    let groups = sh(server, "vol", "app", "id -G");
    assert!(groups.split_whitespace().any(|g| g == "2345"), "{groups}");
    assert_eq!(sh(server, "vol", "app", "stat -c %g /work").trim(), "2345");
    // subPathExpr: a directory per pod inside the emptyDir.
    sh(server, "vol", "app", "echo mine > /per-pod/file");
    assert_eq!(sh(server, "vol", "app", "cat /work/pods/vol/file"), "mine\n");
    // Memory emptyDir and secrets are tmpfs mounts on the node; the hostPath and the claimed volume are the host's.
    let pod = get(server, &["pod", "vol"]);
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let volumes_dir = server.data_dir().join(format!("agent/pods/{uid}/volumes"));
    let tmpfs: Vec<String> = mounts_under(&volumes_dir)
        .into_iter()
        .filter(|l| l.contains(" - tmpfs "))
        .collect();
    for plugin in [
        "empty-dir/scratch",
        "secret/creds",
        "downward-api/info",
        "projected/all",
    ] {
        assert!(
            tmpfs
                .iter()
                .any(|l| l.contains(&format!("kubernetes.io~{plugin} "))),
            "{plugin} is not a tmpfs: {tmpfs:?}"
        );
    }
    let scratch = sh(server, "vol", "app", "df -k /scratch | tail -1");
    assert!(scratch.split_whitespace().nth(1) == Some("8192"), "{scratch}");
    sh(
        server,
        "vol",
        "app",
        "echo on-host > /host/note; echo kept > /claim/note",
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("note")).unwrap(),
        "on-host\n"
    );
    assert_eq!(std::fs::read_to_string(claimed.join("note")).unwrap(), "kept\n");

    // Changes to the objects reach the running container; so do the pod's own labels.
    ok(server.kubectl(
        33,
        &[
            "patch",
            "configmap",
            "settings",
            "-p",
            r#"{"data":{"greeting":"bonjour"}}"#,
        ],
    ));
    ok(server.kubectl(33, &["label", "pod", "vol", "tier=web"]));
    wait_for(30, "the configMap change inside the pod", || {
        sh(server, "vol", "app", "cat /etc/settings/greeting") == "bonjour"
    });
    wait_for(30, "the new label inside the pod", || {
        sh(server, "vol", "app", "cat /etc/info/labels").contains("tier=\"web\"")
    });
    // A subPath mount is a fixed file: it keeps what it had (as on Kubernetes).
    assert_eq!(sh(server, "vol", "app", "cat /etc/greeting.txt"), "hello");

    // A pod whose configMap is missing waits in ContainerCreating, and starts once it exists.
    let waiting = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "waits"}},
       "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{image}",
         "command": ["sleep", "1000"], "volumeMounts": [{{"name": "late", "mountPath": "/late"}}]}}],
         "volumes": [{{"name": "late", "configMap": {{"name": "late"}}}}]}}}}"#
    );
    kubectl_file(server, "apply", "waits.json", &waiting);
    wait_for(30, "the pod to wait for its volume", || {
        get(server, &["pod", "waits"])["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "ContainerCreating"
    });
    assert_eq!(get(server, &["pod", "waits"])["status"]["phase"], "Pending");
    ok(server.kubectl(33, &["create", "configmap", "late", "--from-literal=k=v"]));
    let waited = server.kubectl(
        33,
        &["wait", "--for=condition=Ready", "pod/waits", "--timeout=60s"],
    );
    assert!(waited.status.success(), "{}", text(&waited));
    assert_eq!(sh(server, "waits", "c", "cat /late/k"), "v");

    // Deleted pods leave no mount and no volume directory; the host's data stays.
    ok(server.kubectl(33, &["delete", "pod", "vol", "waits"]));
    let deleted = server.kubectl(
        33,
        &["wait", "--for=delete", "pod/vol", "pod/waits", "--timeout=60s"],
    );
    assert!(deleted.status.success(), "{}", text(&deleted));
    wait_for(30, "the pods' directories and mounts to go", || {
        !server.data_dir().join(format!("agent/pods/{uid}")).exists()
            && mounts_under(&server.data_dir().join("agent/pods")).is_empty()
    });
    assert!(claimed.join("note").exists() && host_dir.join("note").exists());
}
