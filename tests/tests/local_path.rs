//! The built-in local-path provisioner against the real binary: k3s's default StorageClass (`local-path`,
//! `manifests/local-storage.yaml`), claims of it provisioned as directories under `<data-dir>/storage/` on the
//! node of their first pod, kept across pods and a restart of the server, and removed with their claim (reclaim
//! policy Delete) or kept (Retain); what local-path cannot serve is refused with its words.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bonsai_e2e::as_node::{get, kubectl_file};
use bonsai_e2e::images::AgentNode;
use bonsai_e2e::{Server, ok, text, wait_for};
use serde_json::Value;

/// The StorageClass k3s ships, which the server applies from its manifests at start: waits for it, the default.
fn wait_for_default_class(server: &Server) {
    wait_for(30, "the packaged local-path StorageClass", || {
        let out = server.kubectl(33, &["get", "storageclass", "local-path", "-o", "json"]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).unwrap()["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                == "true"
    });
}

/// The StorageClass k3s ships, applied by hand (for a server that was told not to).
fn apply_default_class(server: &Server) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/local-storage.yaml");
    ok(server.kubectl(33, &["apply", "-f", manifest.to_str().unwrap()]));
}

/// A claim in `default`: ReadWriteOnce unless `modes` says otherwise, 64Mi, of `class` (none: the default).
fn claim(name: &str, class: Option<&str>, modes: &str) -> String {
    let class = class
        .map(|c| format!(r#""storageClassName": "{c}","#))
        .unwrap_or_default();
    format!(
        r#"{{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {{"name": "{name}"}},
            "spec": {{{class} "accessModes": [{modes}], "resources": {{"requests": {{"storage": "64Mi"}}}}}}}}"#
    )
}

/// A busybox pod running `script` with `claim` mounted at /data.
fn pod(name: &str, image: &str, claim: &str, script: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
            "spec": {{"terminationGracePeriodSeconds": 1,
              "containers": [{{"name": "c", "image": "{image}", "command": ["sh", "-c", "{script}"],
                "volumeMounts": [{{"name": "data", "mountPath": "/data"}}]}}],
              "volumes": [{{"name": "data", "persistentVolumeClaim": {{"claimName": "{claim}"}}}}]}}}}"#
    )
}

fn wait_ready(server: &Server, pod: &str) {
    let waited = server.kubectl(
        33,
        &[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=90s",
        ],
    );
    assert!(
        waited.status.success(),
        "{}\n{}\n{}",
        text(&waited),
        ok(server.kubectl(33, &["describe", "pod", pod])),
        ok(server.kubectl(33, &["describe", "pvc"]))
    );
}

fn delete_pod(server: &Server, pod: &str) {
    ok(server.kubectl(33, &["delete", "pod", pod, "--wait=true", "--timeout=60s"]));
}

fn exists(server: &Server, args: &[&str]) -> bool {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    server.kubectl(33, &all).status.success()
}

/// The provisioned volumes (`pvc-...`) the cluster has.
fn provisioned_volumes(server: &Server) -> Vec<Value> {
    get(server, &["pv"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            v["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "rancher.io/local-path"
        })
        .cloned()
        .collect()
}

/// The bound claim's volume, checked to be what local-path-provisioner makes for it on node `n1`.
fn volume_of(server: &Server, claim_name: &str, class: &str, reclaim: &str) -> (String, PathBuf) {
    let claim = get(server, &["pvc", claim_name]);
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    assert_eq!(claim["spec"]["storageClassName"], class, "{claim}");
    let uid = claim["metadata"]["uid"].as_str().unwrap();
    let name = format!("pvc-{uid}");
    assert_eq!(claim["spec"]["volumeName"], name.as_str());
    let volume = get(server, &["pv", &name]);
    assert_eq!(volume["status"]["phase"], "Bound", "{volume}");
    let dir = server
        .data_dir()
        .join(format!("storage/{name}_default_{claim_name}"));
    let spec = &volume["spec"];
    assert_eq!(spec["hostPath"]["path"], dir.to_str().unwrap(), "{volume}");
    assert_eq!(spec["hostPath"]["type"], "DirectoryOrCreate");
    assert_eq!(
        spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        serde_json::json!({"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]})
    );
    assert_eq!(spec["capacity"]["storage"], "64Mi");
    assert_eq!(spec["accessModes"], serde_json::json!(["ReadWriteOnce"]));
    assert_eq!(spec["storageClassName"], class);
    assert_eq!(spec["persistentVolumeReclaimPolicy"], reclaim);
    assert_eq!(spec["claimRef"]["uid"], uid);
    (name, dir)
}

/// (type, reason, message) of the events about the claim `name` in `default`.
fn claim_events(server: &Server, name: &str) -> Vec<(String, String, String)> {
    get(server, &["events"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["involvedObject"]["kind"] == "PersistentVolumeClaim" && e["involvedObject"]["name"] == name
        })
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&e["type"]), s(&e["reason"]), s(&e["message"]))
        })
        .collect()
}

#[test]
fn a_default_claim_gets_a_directory_that_outlives_its_pods_and_goes_with_the_claim() {
    let node = AgentNode::with_busybox();
    let image = node.image();
    wait_for_default_class(&node.server);
    let writer = pod(
        "writer",
        &image,
        "data",
        "echo kept-across-pods > /data/file && sleep 1000",
    );
    kubectl_file(
        &node.server,
        "create",
        "claim.json",
        &claim("data", None, r#""ReadWriteOnce""#),
    );
    kubectl_file(&node.server, "create", "writer.json", &writer);
    wait_ready(&node.server, "writer");

    // The claim got the default class, a volume of its own on this node, and a directory under the data dir.
    let (volume, dir) = volume_of(&node.server, "data", "local-path", "Delete");
    let reasons: Vec<String> = claim_events(&node.server, "data")
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "ProvisioningSucceeded"),
        "{reasons:?}"
    );
    assert!(dir.is_dir(), "{} is missing", dir.display());
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o777
    );
    wait_for(30, "the pod's file on the host", || {
        std::fs::read_to_string(dir.join("file")).is_ok_and(|s| s == "kept-across-pods\n")
    });

    // The pod goes, the data stays; a restart of the server makes no second volume and loses none.
    delete_pod(&node.server, "writer");
    let node = node.restart_server();
    let server = &node.server;
    std::thread::sleep(Duration::from_secs(3));
    let volumes = provisioned_volumes(server);
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0]["metadata"]["name"], volume.as_str());
    assert_eq!(volumes[0]["status"]["phase"], "Bound");

    // Another pod on the same claim reads it back.
    let reader = pod("reader", &image, "data", "sleep 1000");
    kubectl_file(server, "create", "reader.json", &reader);
    wait_ready(server, "reader");
    assert_eq!(
        ok(server.kubectl(33, &["exec", "reader", "--", "cat", "/data/file"])),
        "kept-across-pods\n"
    );

    // Pod and claim deleted: the volume is Released and reclaimed, directory first.
    delete_pod(server, "reader");
    ok(server.kubectl(33, &["delete", "pvc", "data", "--wait=true", "--timeout=60s"]));
    wait_for(60, "the released volume to be deleted", || {
        !exists(server, &["pv", &volume])
    });
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(server.data_dir().join("storage").is_dir());
}

#[test]
fn a_retain_class_keeps_the_released_volume_and_unservable_claims_are_refused() {
    let node = AgentNode::with_busybox();
    let server = &node.server;
    let image = node.image();
    wait_for_default_class(server);
    let keep = r#"{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "keep"},
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain"}"#;
    kubectl_file(server, "create", "keep.json", keep);
    kubectl_file(
        server,
        "create",
        "claim.json",
        &claim("kept", Some("keep"), r#""ReadWriteOnce""#),
    );
    kubectl_file(
        server,
        "create",
        "writer.json",
        &pod(
            "writer",
            &image,
            "kept",
            "echo retained > /data/file && sleep 1000",
        ),
    );
    // A claim shared between nodes cannot be a node's directory: refused, its pod left waiting.
    kubectl_file(
        server,
        "create",
        "shared.json",
        &claim("shared", None, r#""ReadWriteMany""#),
    );
    kubectl_file(
        server,
        "create",
        "sharer.json",
        &pod("sharer", &image, "shared", "sleep 1000"),
    );
    wait_ready(server, "writer");
    let (volume, dir) = volume_of(server, "kept", "keep", "Retain");
    wait_for(30, "the pod's file on the host", || {
        std::fs::read_to_string(dir.join("file")).is_ok_and(|s| s == "retained\n")
    });

    delete_pod(server, "writer");
    ok(server.kubectl(33, &["delete", "pvc", "kept", "--wait=true", "--timeout=60s"]));
    wait_for(30, "the volume to be Released", || {
        get(server, &["pv", &volume])["status"]["phase"] == "Released"
    });
    // Give the provisioner time to (wrongly) act: the volume and its data stay.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get(server, &["pv", &volume])["status"]["phase"], "Released");
    assert_eq!(std::fs::read_to_string(dir.join("file")).unwrap(), "retained\n");

    wait_for(30, "the refusal of the ReadWriteMany claim", || {
        claim_events(server, "shared").iter().any(|(t, r, m)| {
            t == "Warning"
                && r == "ProvisioningFailed"
                && m == "failed to provision volume with StorageClass \"local-path\": NodePath only supports \
                         ReadWriteOnce and ReadWriteOncePod (1.22+) access modes"
        })
    });
    assert_eq!(get(server, &["pvc", "shared"])["status"]["phase"], "Pending");
    assert_eq!(get(server, &["pod", "sharer"])["status"]["phase"], "Pending");
    assert_eq!(provisioned_volumes(server).len(), 1);
}

#[test]
fn with_local_storage_disabled_no_volume_is_provisioned() {
    let node = AgentNode::with_busybox_and(&["--disable", "local-storage"]);
    let server = &node.server;
    // The packaged class is not applied (the deploy controller applied the DNS Service, so it has run) ...
    wait_for(30, "the packaged kube-dns Service", || {
        server
            .kubectl(33, &["get", "svc", "-n", "kube-system", "kube-dns"])
            .status
            .success()
    });
    assert!(
        !server
            .kubectl(33, &["get", "storageclass", "local-path"])
            .status
            .success()
    );
    assert!(
        !server
            .data_dir()
            .join("server/manifests/local-storage.yaml")
            .exists()
    );
    // ... and a class of the provisioner's made by hand is not served either.
    apply_default_class(server);
    kubectl_file(
        server,
        "create",
        "claim.json",
        &claim("data", None, r#""ReadWriteOnce""#),
    );
    kubectl_file(
        server,
        "create",
        "pod.json",
        &pod("user", &node.image(), "data", "sleep 1000"),
    );
    // The scheduler placed the pod and the binder asked the provisioner: nothing answers.
    wait_for(30, "the claim handed to the provisioner", || {
        let annotations = &get(server, &["pvc", "data"])["metadata"]["annotations"];
        annotations["volume.kubernetes.io/selected-node"] == "n1"
            && annotations["volume.kubernetes.io/storage-provisioner"] == "rancher.io/local-path"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(provisioned_volumes(server).is_empty());
    assert_eq!(get(server, &["pvc", "data"])["status"]["phase"], "Pending");
    assert!(!server.data_dir().join("storage").exists());
}
