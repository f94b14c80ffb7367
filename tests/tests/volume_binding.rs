//! The PersistentVolume binder against the real binary: volumes and claims made with the real kubectl, bound,
//! released and protected as kube-controller-manager does it. The scheduler is off; where one is needed the test
//! plays it (it pre-binds a volume, or sets `volume.kubernetes.io/selected-node` on a claim).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bonsai_e2e::as_node::{add_node, get, kubectl_file};
use bonsai_e2e::{Server, ok, wait_until};
use serde_json::Value;

/// A PersistentVolume manifest: `size`, `class`, ReadWriteOnce, a hostPath, and `extra_spec` JSON members.
fn volume(name: &str, size: &str, class: &str, extra_spec: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {{"name": "{name}"}},
            "spec": {{"capacity": {{"storage": "{size}"}}, "accessModes": ["ReadWriteOnce"],
              "storageClassName": "{class}", "hostPath": {{"path": "/tmp/{name}"}}{extra_spec}}}}}"#
    )
}

/// A claim manifest in `default`: `size`, ReadWriteOnce, `class_member` (e.g. `"storageClassName": "fast",`) and
/// `extra_spec` JSON members.
fn claim(name: &str, size: &str, class_member: &str, extra_spec: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {{"name": "{name}", "namespace": "default"}},
            "spec": {{{class_member} "accessModes": ["ReadWriteOnce"],
              "resources": {{"requests": {{"storage": "{size}"}}}}{extra_spec}}}}}"#
    )
}

fn list(items: &[String]) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [{}]}}"#,
        items.join(",")
    )
}

fn pv_phase(server: &Server, name: &str) -> String {
    let out = server.kubectl(33, &["get", "pv", name, "-o", "jsonpath={.status.phase}"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pvc_phase(server: &Server, name: &str) -> String {
    let out = server.kubectl(
        33,
        &[
            "-n",
            "default",
            "get",
            "pvc",
            name,
            "-o",
            "jsonpath={.status.phase}",
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exists(server: &Server, args: &[&str]) -> bool {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    server.kubectl(33, &all).status.success()
}

/// (type, reason, message, source component) of the events about `kind`/`name` in `default`.
fn events_about(server: &Server, kind: &str, name: &str) -> Vec<(String, String, String, String)> {
    let events = get(server, &["-n", "default", "events"]);
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&e["type"]),
                s(&e["reason"]),
                s(&e["message"]),
                s(&e["source"]["component"]),
            )
        })
        .collect()
}

/// The whitespace-separated cells of the row of `kubectl get pv,pvc` that starts with `name`.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn claims_bind_to_the_smallest_fitting_volume_of_their_class_and_are_released_by_policy() {
    let server = Server::start(&["--disable-scheduler"]);
    let delete_policy = r#", "persistentVolumeReclaimPolicy": "Delete""#;
    let volumes = list(&[
        volume("fast-small", "1Gi", "fast", ""),
        volume("fast-big", "5Gi", "fast", ""),
        volume("fast-tiny", "500Mi", "fast", ""),
        volume("slow-small", "1Gi", "slow", ""),
        volume("spare", "1Gi", "", ""),
        volume(
            "reserved",
            "2Gi",
            "",
            r#", "claimRef": {"namespace": "default", "name": "mine"}"#,
        ),
        volume("chosen", "3Gi", "", ""),
        volume("scratch", "1Gi", "", delete_policy),
    ]);
    kubectl_file(&server, "create", "volumes.json", &volumes);
    wait_until("every volume Available", || {
        [
            "fast-small",
            "fast-big",
            "fast-tiny",
            "slow-small",
            "spare",
            "reserved",
            "chosen",
            "scratch",
        ]
        .iter()
        .all(|v| pv_phase(&server, v) == "Available")
    });
    let pv = get(&server, &["pv", "fast-small"]);
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(
        pv["metadata"]["finalizers"],
        serde_json::json!(["kubernetes.io/pv-protection"])
    );

    let claims = list(&[
        claim("data", "800Mi", r#""storageClassName": "fast","#, ""),
        claim("huge", "100Gi", r#""storageClassName": "","#, ""),
        claim("mine", "1Gi", r#""storageClassName": "","#, ""),
        claim(
            "named",
            "1Gi",
            r#""storageClassName": "","#,
            r#", "volumeName": "chosen""#,
        ),
        claim(
            "tmp",
            "1Gi",
            r#""storageClassName": "","#,
            r#", "volumeName": "scratch""#,
        ),
    ]);
    kubectl_file(&server, "create", "claims.json", &claims);
    wait_until("the claims bound", || {
        ["data", "mine", "named", "tmp"]
            .iter()
            .all(|c| pvc_phase(&server, c) == "Bound")
    });

    // The smallest volume of the class that fits, in kubectl's columns for both.
    let table = ok(server.kubectl(33, &["get", "pv,pvc"]));
    assert_eq!(
        row(&table, "persistentvolume/fast-small")[1..7],
        ["1Gi", "RWO", "Retain", "Bound", "default/data", "fast"],
        "{table}"
    );
    assert_eq!(
        row(&table, "persistentvolumeclaim/data")[1..6],
        ["Bound", "fast-small", "1Gi", "RWO", "fast"],
        "{table}"
    );
    for unclaimed in ["fast-big", "fast-tiny", "slow-small", "spare"] {
        assert_eq!(
            row(&table, &format!("persistentvolume/{unclaimed}"))[4],
            "Available",
            "{table}"
        );
    }

    // The binding as Kubernetes writes it.
    let pvc = get(&server, &["-n", "default", "pvc", "data"]);
    let pv = get(&server, &["pv", "fast-small"]);
    let reference = &pv["spec"]["claimRef"];
    assert_eq!(reference["kind"], "PersistentVolumeClaim");
    assert_eq!(reference["apiVersion"], "v1");
    assert_eq!(reference["namespace"], "default");
    assert_eq!(reference["name"], "data");
    assert_eq!(reference["uid"], pvc["metadata"]["uid"]);
    assert!(
        reference["resourceVersion"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    assert!(pv["status"]["lastPhaseTransitionTime"].is_string());
    assert_eq!(pvc["spec"]["volumeName"], "fast-small");
    assert_eq!(
        pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    assert_eq!(
        pvc["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    assert_eq!(pvc["status"]["capacity"]["storage"], "1Gi");
    assert_eq!(pvc["status"]["accessModes"], serde_json::json!(["ReadWriteOnce"]));
    assert_eq!(
        pvc["metadata"]["finalizers"],
        serde_json::json!(["kubernetes.io/pvc-protection"])
    );

    // A volume pre-bound to a claim gets it, though a smaller one would fit; the user's binding is not the
    // controller's.
    let reserved = get(&server, &["pv", "reserved"]);
    let mine = get(&server, &["-n", "default", "pvc", "mine"]);
    assert_eq!(mine["spec"]["volumeName"], "reserved");
    assert_eq!(reserved["spec"]["claimRef"]["uid"], mine["metadata"]["uid"]);
    assert!(reserved["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"].is_null());
    assert_eq!(
        mine["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    // A claim that names its volume gets it; the claim's side was the user's.
    let named = get(&server, &["-n", "default", "pvc", "named"]);
    assert_eq!(
        get(&server, &["pv", "chosen"])["spec"]["claimRef"]["name"],
        "named"
    );
    assert!(named["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"].is_null());
    assert_eq!(named["status"]["capacity"]["storage"], "3Gi");

    // Too big for every volume, no class: Pending, with Kubernetes' event.
    wait_until("the FailedBinding event", || {
        events_about(&server, "PersistentVolumeClaim", "huge").contains(&(
            "Normal".into(),
            "FailedBinding".into(),
            "no persistent volumes available for this claim and no storage class is set".into(),
            "persistentvolume-controller".into(),
        ))
    });
    assert_eq!(pvc_phase(&server, "huge"), "Pending");
    assert!(get(&server, &["-n", "default", "pvc", "huge"])["spec"]["volumeName"].is_null());

    // Deleting claims: a Retain volume is Released (still naming its claim), a Delete one is deleted.
    ok(server.kubectl(33, &["-n", "default", "delete", "pvc", "data", "tmp"]));
    wait_until("fast-small Released", || {
        pv_phase(&server, "fast-small") == "Released"
    });
    wait_until("scratch deleted", || !exists(&server, &["pv", "scratch"]));
    let table = ok(server.kubectl(33, &["get", "pv"]));
    assert_eq!(
        row(&table, "fast-small")[4..6],
        ["Released", "default/data"],
        "{table}"
    );
    // A released volume is not offered to a new claim of the same name.
    kubectl_file(
        &server,
        "create",
        "again.json",
        &claim("data", "800Mi", r#""storageClassName": "fast","#, ""),
    );
    wait_until("the new claim bound", || pvc_phase(&server, "data") == "Bound");
    let again = get(&server, &["-n", "default", "pvc", "data"]);
    assert_eq!(again["spec"]["volumeName"], "fast-big");
    assert_eq!(pv_phase(&server, "fast-small"), "Released");
}

#[test]
fn a_claim_in_use_keeps_its_protection_until_its_pod_is_gone() {
    let server = Server::start(&["--disable-scheduler"]);
    add_node(&server, "n1", "4", "");
    kubectl_file(
        &server,
        "create",
        "objects.json",
        &list(&[
            volume("disk", "1Gi", "", ""),
            claim("data", "1Gi", r#""storageClassName": "","#, ""),
        ]),
    );
    wait_until("the claim bound", || pvc_phase(&server, "data") == "Bound");
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox:1"}],
          "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}"#;
    kubectl_file(&server, "create", "pod.json", pod);

    ok(server.kubectl(33, &["-n", "default", "delete", "pvc", "data", "--wait=false"]));
    let pvc = get(&server, &["-n", "default", "pvc", "data"]);
    assert!(pvc["metadata"]["deletionTimestamp"].is_string());
    // The controllers have had time to act; the claim stays, protected, and its volume stays bound.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pvc = get(&server, &["-n", "default", "pvc", "data"]);
    assert_eq!(
        pvc["metadata"]["finalizers"],
        serde_json::json!(["kubernetes.io/pvc-protection"])
    );
    assert_eq!(pv_phase(&server, "disk"), "Bound");
    // Deleting the volume waits too: it is bound.
    ok(server.kubectl(33, &["delete", "pv", "disk", "--wait=false"]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(exists(&server, &["pv", "disk"]));

    // The pod goes: the claim goes, its volume is released and then goes too.
    ok(server.kubectl(
        33,
        &[
            "-n",
            "default",
            "delete",
            "pod",
            "user",
            "--grace-period=0",
            "--force",
        ],
    ));
    wait_until("the claim deleted", || {
        !exists(&server, &["-n", "default", "pvc", "data"])
    });
    wait_until("the volume deleted", || !exists(&server, &["pv", "disk"]));
}

#[test]
fn wait_for_first_consumer_claims_bind_on_the_node_the_scheduler_chose() {
    let server = Server::start(&["--disable-scheduler"]);
    add_node(&server, "a", "4", "");
    add_node(&server, "b", "4", "");
    let on_node = |host: &str| {
        format!(
            r#", "nodeAffinity": {{"required": {{"nodeSelectorTerms": [{{"matchExpressions": [
                {{"key": "kubernetes.io/hostname", "operator": "In", "values": ["{host}"]}}]}}]}}}}"#
        )
    };
    let class = r#"{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"}"#;
    kubectl_file(&server, "create", "class.json", class);
    kubectl_file(
        &server,
        "create",
        "volumes.json",
        &list(&[
            volume("on-a", "1Gi", "local", &on_node("a")),
            volume("on-b", "2Gi", "local", &on_node("b")),
        ]),
    );
    // No class named: the default class is the claim's (the DefaultStorageClass admission).
    kubectl_file(&server, "create", "claim.json", &claim("data", "1Gi", "", ""));
    assert_eq!(
        get(&server, &["-n", "default", "pvc", "data"])["spec"]["storageClassName"],
        "local"
    );
    wait_until("the WaitForFirstConsumer event", || {
        events_about(&server, "PersistentVolumeClaim", "data").contains(&(
            "Normal".into(),
            "WaitForFirstConsumer".into(),
            "waiting for first consumer to be created before binding".into(),
            "persistentvolume-controller".into(),
        ))
    });
    // A pod not scheduled yet is named in the event.
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}],
          "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}"#;
    kubectl_file(&server, "create", "pod.json", pod);
    wait_until("the WaitForPodScheduled event", || {
        events_about(&server, "PersistentVolumeClaim", "data")
            .iter()
            .any(|(_, reason, message, _)| {
                reason == "WaitForPodScheduled" && message == "waiting for pod user to be scheduled"
            })
    });
    assert_eq!(pvc_phase(&server, "data"), "Pending");
    assert_eq!(pv_phase(&server, "on-a"), "Available");

    // The scheduler chose node b and pre-bound the volume there (kube-scheduler's PreBind: the volume's
    // claimRef), though the one on a is smaller: the binder completes that binding.
    let uid = get(&server, &["-n", "default", "pvc", "data"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let prebind = format!(
        r#"{{"metadata": {{"annotations": {{"pv.kubernetes.io/bound-by-controller": "yes"}}}},
            "spec": {{"claimRef": {{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "default",
              "name": "data", "uid": "{uid}"}}}}}}"#
    );
    ok(server.kubectl(33, &["patch", "pv", "on-b", "--type=merge", "-p", &prebind]));
    wait_until("the claim bound", || pvc_phase(&server, "data") == "Bound");
    assert_eq!(
        get(&server, &["-n", "default", "pvc", "data"])["spec"]["volumeName"],
        "on-b"
    );
    assert_eq!(pv_phase(&server, "on-b"), "Bound");
    assert_eq!(pv_phase(&server, "on-a"), "Available");

    // A selected node alone means "provision one there" (the scheduler found no volume): the binder binds no
    // other volume to the claim, even one that node could use, and this class's provisioner makes none.
    kubectl_file(&server, "create", "other.json", &claim("other", "1Gi", "", ""));
    ok(server.kubectl(
        33,
        &[
            "-n",
            "default",
            "annotate",
            "pvc",
            "other",
            "volume.kubernetes.io/selected-node=a",
        ],
    ));
    wait_until("the ProvisioningFailed event", || {
        events_about(&server, "PersistentVolumeClaim", "other").contains(&(
            "Warning".into(),
            "ProvisioningFailed".into(),
            "no volume plugin matched name: kubernetes.io/no-provisioner".into(),
            "persistentvolume-controller".into(),
        ))
    });
    assert_eq!(pvc_phase(&server, "other"), "Pending");
    assert_eq!(pv_phase(&server, "on-a"), "Available");
}

#[test]
fn the_scheduler_places_a_pod_where_its_claim_can_bind() {
    let server = Server::start(&[]);
    add_node(&server, "a", "4", "");
    add_node(&server, "b", "4", "");
    let class = r#"{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local"},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"}"#;
    kubectl_file(&server, "create", "class.json", class);
    let on_b = r#", "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}}"#;
    kubectl_file(
        &server,
        "create",
        "volume.json",
        &volume("on-b", "1Gi", "local", on_b),
    );
    let user = |pod: &str, claim_name: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{pod}", "namespace": "default"}},
                "spec": {{"containers": [{{"name": "c", "image": "busybox:1"}}],
                  "volumes": [{{"name": "d", "persistentVolumeClaim": {{"claimName": "{claim_name}"}}}}]}}}}"#
        )
    };
    kubectl_file(
        &server,
        "create",
        "objects.json",
        &list(&[
            claim("data", "1Gi", r#""storageClassName": "local","#, ""),
            claim("more", "1Gi", r#""storageClassName": "local","#, ""),
            user("first", "data"),
        ]),
    );
    // Only node b has a volume for the claim: the pod goes there and the claim binds to it.
    wait_until("the claim bound", || pvc_phase(&server, "data") == "Bound");
    assert_eq!(
        get(&server, &["-n", "default", "pvc", "data"])["spec"]["volumeName"],
        "on-b"
    );
    let pod = get(&server, &["-n", "default", "pod", "first"]);
    assert_eq!(pod["spec"]["nodeName"], "b");

    // No volume is left for another claim: no node fits, in kube-scheduler's words.
    kubectl_file(&server, "create", "second.json", &user("second", "more"));
    wait_until("the FailedScheduling event", || {
        let events = get(&server, &["-n", "default", "events"]);
        events["items"].as_array().unwrap().iter().any(|e| {
            e["involvedObject"]["name"] == "second"
                && e["reason"] == "FailedScheduling"
                && e["message"].as_str().unwrap_or("").starts_with(
                    "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind.",
                )
        })
    });
    assert_eq!(pvc_phase(&server, "more"), "Pending");
}
