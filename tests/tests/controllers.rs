//! The cluster controllers against the real binary, with the test playing the node (it sets pods' IPs and
//! readiness through the status subresource, as a kubelet would) and the real kubectl as the client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bonsai_e2e::{Server, fails, ok, wait_until};
use serde_json::Value;

fn get(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["get", "-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(server.kubectl(33, &all))).unwrap()
}

/// Plays the kubelet: the pod gets `ip` and the given readiness.
fn set_pod(server: &Server, ns: &str, name: &str, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = format!(
        r#"{{"status": {{"phase": "Running", "podIP": "{ip}", "podIPs": [{{"ip": "{ip}"}}],
            "conditions": [{{"type": "Ready", "status": "{status}"}}]}}}}"#
    );
    ok(server.kubectl(
        33,
        &[
            "-n",
            ns,
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    ));
}

/// (address, ready) of every endpoint in the service's slices, sorted.
fn slice_endpoints(server: &Server, ns: &str, service: &str) -> Vec<(String, bool)> {
    let selector = format!("kubernetes.io/service-name={service}");
    let slices = get(server, &["-n", ns, "endpointslices", "-l", &selector]);
    let mut out: Vec<(String, bool)> = slices["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["addresses"][0].as_str().unwrap().to_string(),
                e["conditions"]["ready"] == true,
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_services_endpoint_slices_follow_its_pods() {
    let server = Server::start(&[]);
    ok(server.kubectl(33, &["create", "namespace", "shop"]));
    let manifest = r#"{"apiVersion": "v1", "kind": "List", "items": [
      {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
       "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "shop", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "c", "image": "busybox:1", "ports": [{"name": "http", "containerPort": 8080}]}]}},
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": "shop", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "c", "image": "busybox:1", "ports": [{"name": "http", "containerPort": 8080}]}]}},
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other", "namespace": "shop", "labels": {"app": "db"}},
       "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}]}"#;
    let file = server.dir.path().join("shop.json");
    std::fs::write(&file, manifest).unwrap();
    ok(server.kubectl(27, &["apply", "-f", file.to_str().unwrap()]));

    // No pod has an IP yet: one empty slice, as Kubernetes keeps.
    wait_until("the service's slice", || {
        get(&server, &["-n", "shop", "endpointslices"])["items"]
            .as_array()
            .is_some_and(|i| i.len() == 1)
    });
    assert!(slice_endpoints(&server, "shop", "web").is_empty());

    set_pod(&server, "shop", "a", "10.42.0.5", true);
    set_pod(&server, "shop", "b", "10.42.0.6", false);
    set_pod(&server, "shop", "other", "10.42.0.7", true);
    let want = vec![("10.42.0.5".to_string(), true), ("10.42.0.6".to_string(), false)];
    wait_until("both selected pods in the slice", || {
        slice_endpoints(&server, "shop", "web") == want
    });
    let slice = &get(&server, &["-n", "shop", "endpointslices"])["items"][0];
    assert_eq!(
        slice["ports"][0]["port"], 8080,
        "the named target port resolved to the container's"
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );

    // Readiness changes follow; so does the Endpoints object that `kubectl describe` shows.
    set_pod(&server, "shop", "b", "10.42.0.6", true);
    wait_until("b to turn ready", || {
        slice_endpoints(&server, "shop", "web")
            .iter()
            .all(|(_, ready)| *ready)
    });
    let describe = ok(server.kubectl(33, &["-n", "shop", "describe", "service", "web"]));
    assert!(
        describe.contains("10.42.0.5:8080") && describe.contains("10.42.0.6:8080"),
        "{describe}"
    );

    // A deleted pod leaves; a relabelled one leaves; the service's deletion takes its slices along.
    ok(server.kubectl(33, &["-n", "shop", "delete", "pod", "a"]));
    wait_until("a to leave", || {
        slice_endpoints(&server, "shop", "web") == vec![("10.42.0.6".to_string(), true)]
    });
    ok(server.kubectl(
        33,
        &["-n", "shop", "label", "pod", "b", "app=other", "--overwrite"],
    ));
    wait_until("b to leave", || {
        slice_endpoints(&server, "shop", "web").is_empty()
    });
    ok(server.kubectl(33, &["-n", "shop", "delete", "service", "web"]));
    wait_until("the slices to go", || {
        get(&server, &["-n", "shop", "endpointslices"])["items"]
            .as_array()
            .is_some_and(|i| i.is_empty())
    });
}

#[test]
fn namespaces_get_a_default_service_account_and_are_emptied_when_deleted() {
    let server = Server::start(&[]);
    ok(server.kubectl(33, &["create", "namespace", "tmp"]));
    wait_until("the default service account", || {
        server
            .kubectl(33, &["-n", "tmp", "get", "sa", "default"])
            .status
            .success()
    });
    ok(server.kubectl(33, &["-n", "tmp", "delete", "sa", "default"]));
    wait_until("the default service account again", || {
        server
            .kubectl(33, &["-n", "tmp", "get", "sa", "default"])
            .status
            .success()
    });
    ok(server.kubectl(
        33,
        &["-n", "tmp", "create", "configmap", "c", "--from-literal=a=b"],
    ));
    ok(server.kubectl(
        33,
        &[
            "-n",
            "tmp",
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=a=b",
        ],
    ));
    ok(server.kubectl(
        33,
        &["-n", "tmp", "create", "deployment", "d", "--image=busybox:1"],
    ));
    ok(server.kubectl(33, &["-n", "tmp", "run", "p", "--image=busybox:1"]));

    // kubectl waits for the namespace to be gone; the controller empties it first.
    ok(server.kubectl(33, &["delete", "namespace", "tmp", "--timeout=30s"]));
    let error = fails(server.kubectl(33, &["get", "namespace", "tmp"]));
    assert!(
        error.contains("NotFound") || error.contains("not found"),
        "{error}"
    );
    // Nothing of it is left behind: a namespace made again with the name starts empty.
    ok(server.kubectl(33, &["create", "namespace", "tmp"]));
    for kind in ["configmaps", "secrets", "deployments", "pods"] {
        let items = get(&server, &["-n", "tmp", kind]);
        assert_eq!(
            items["items"].as_array().map(Vec::len),
            Some(0),
            "{kind}: {items}"
        );
    }
}

/// A ConfigMap in `default` owned by the object of `owner_uid` (a ConfigMap named `owner`).
fn owned_configmap(server: &Server, name: &str, owner: &str, owner_uid: &str, extra_metadata: &str) {
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "{name}", {extra_metadata}
            "ownerReferences": [{{"apiVersion": "v1", "kind": "ConfigMap", "name": "{owner}", "uid": "{owner_uid}",
                                 "blockOwnerDeletion": true}}]}}}}"#
    );
    let file = server.dir.path().join(format!("{name}.json"));
    std::fs::write(&file, manifest).unwrap();
    ok(server.kubectl(33, &["create", "-f", file.to_str().unwrap()]));
}

fn exists(server: &Server, name: &str) -> bool {
    server.kubectl(33, &["get", "configmap", name]).status.success()
}

fn uid(server: &Server, name: &str) -> String {
    ok(server.kubectl(33, &["get", "configmap", name, "-o", "jsonpath={.metadata.uid}"]))
}

#[test]
fn the_garbage_collector_follows_owner_references_and_propagation_policies() {
    let server = Server::start(&[]);
    // Background (kubectl's default): the owner goes at once, then its dependents.
    ok(server.kubectl(33, &["create", "configmap", "owner1"]));
    owned_configmap(&server, "dep1", "owner1", &uid(&server, "owner1"), "");
    ok(server.kubectl(33, &["delete", "configmap", "owner1"]));
    wait_until("dep1 to be collected", || !exists(&server, "dep1"));

    // An owner that never existed (or was replaced under the same name) owns nothing.
    ok(server.kubectl(33, &["create", "configmap", "owner0"]));
    owned_configmap(
        &server,
        "dep0",
        "owner0",
        "00000000-0000-0000-0000-000000000000",
        "",
    );
    wait_until(
        "dep0 (owned by a uid that does not exist) to be collected",
        || !exists(&server, "dep0"),
    );
    assert!(exists(&server, "owner0"));

    // Foreground: the owner stays, marked, until its blocking dependent is gone.
    ok(server.kubectl(33, &["create", "configmap", "owner2"]));
    owned_configmap(
        &server,
        "dep2",
        "owner2",
        &uid(&server, "owner2"),
        r#""finalizers": ["example.com/hold"],"#,
    );
    ok(server.kubectl(
        33,
        &[
            "delete",
            "configmap",
            "owner2",
            "--cascade=foreground",
            "--wait=false",
        ],
    ));
    wait_until("dep2 to be marked for deletion", || {
        !ok(server.kubectl(
            33,
            &[
                "get",
                "configmap",
                "dep2",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ],
        ))
        .is_empty()
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(exists(&server, "owner2"), "the owner waits for its dependent");
    ok(server.kubectl(
        33,
        &[
            "patch",
            "configmap",
            "dep2",
            "--type=merge",
            "-p",
            r#"{"metadata": {"finalizers": null}}"#,
        ],
    ));
    wait_until("owner2 to go after dep2", || {
        !exists(&server, "owner2") && !exists(&server, "dep2")
    });

    // Orphan: the owner goes, the dependent stays and forgets it.
    ok(server.kubectl(33, &["create", "configmap", "owner3"]));
    owned_configmap(&server, "dep3", "owner3", &uid(&server, "owner3"), "");
    ok(server.kubectl(33, &["delete", "configmap", "owner3", "--cascade=orphan"]));
    wait_until("owner3 to go", || !exists(&server, "owner3"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(exists(&server, "dep3"), "an orphan is kept");
    let owners = ok(server.kubectl(
        33,
        &[
            "get",
            "configmap",
            "dep3",
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ],
    ));
    assert!(owners.is_empty() || owners == "[]", "{owners}");
}

/// Plays the kubelet registering a node: the Node, then its allocatable resources and readiness in its status.
fn add_node(server: &Server, name: &str, cpu: &str, extra_spec: &str) {
    let object = format!(
        r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{name}", "labels": {{"kubernetes.io/hostname": "{name}"}}}},
            "spec": {{{extra_spec}}}}}"#
    );
    let file = server.dir.path().join(format!("{name}.json"));
    std::fs::write(&file, object).unwrap();
    ok(server.kubectl(33, &["create", "-f", file.to_str().unwrap()]));
    let status = format!(
        r#"{{"status": {{"allocatable": {{"cpu": "{cpu}", "memory": "4Gi", "pods": "110"}},
            "capacity": {{"cpu": "{cpu}", "memory": "4Gi", "pods": "110"}},
            "conditions": [{{"type": "Ready", "status": "True"}}]}}}}"#
    );
    ok(server.kubectl(
        33,
        &[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ],
    ));
}

fn pod_field(server: &Server, name: &str, path: &str) -> String {
    ok(server.kubectl(33, &["get", "pod", name, "-o", &format!("jsonpath={path}")]))
}

#[test]
fn the_scheduler_binds_what_fits_and_explains_what_does_not() {
    let server = Server::start(&[]);
    add_node(&server, "small", "1", "");
    add_node(
        &server,
        "tainted",
        "8",
        r#""taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]"#,
    );
    add_node(&server, "cordoned", "8", r#""unschedulable": true"#);
    let pod = |name: &str, cpu: &str, extra: &str| {
        let manifest = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
                "spec": {{{extra} "containers": [{{"name": "c", "image": "busybox:1", "resources": {{"requests": {{"cpu": "{cpu}"}}}}}}]}}}}"#
        );
        let file = server.dir.path().join(format!("pod-{name}.json"));
        std::fs::write(&file, manifest).unwrap();
        ok(server.kubectl(33, &["create", "-f", file.to_str().unwrap()]));
    };

    // Fits only on the small node.
    pod("fits", "500m", "");
    wait_until("fits to be bound", || {
        pod_field(&server, "fits", "{.spec.nodeName}") == "small"
    });
    assert_eq!(
        pod_field(
            &server,
            "fits",
            "{.status.conditions[?(@.type==\"PodScheduled\")].status}"
        ),
        "True"
    );
    let events = ok(server.kubectl(
        33,
        &["get", "events", "--field-selector", "involvedObject.name=fits"],
    ));
    assert!(
        events.contains("Successfully assigned default/fits to small"),
        "{events}"
    );

    // Too big for what is left: kube-scheduler's message, counted per reason.
    pod("big", "2", "");
    let expected = "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: db}, \
                    1 node(s) were unschedulable. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    wait_until("big to be reported unschedulable", || {
        pod_field(
            &server,
            "big",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ) == expected
    });
    assert_eq!(
        pod_field(
            &server,
            "big",
            "{.status.conditions[?(@.type==\"PodScheduled\")].reason}"
        ),
        "Unschedulable"
    );
    let describe = ok(server.kubectl(33, &["describe", "pod", "big"]));
    assert!(describe.contains("FailedScheduling"), "{describe}");

    // Uncordoning a node makes room: the waiting pod is scheduled as soon as it fits.
    ok(server.kubectl(33, &["uncordon", "cordoned"]));
    wait_until("big to go to the uncordoned node", || {
        pod_field(&server, "big", "{.spec.nodeName}") == "cordoned"
    });

    // A toleration and a node selector choose the tainted node.
    pod(
        "db",
        "1",
        r#""tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}], "nodeSelector": {"kubernetes.io/hostname": "tainted"},"#,
    );
    wait_until("db on the tainted node", || {
        pod_field(&server, "db", "{.spec.nodeName}") == "tainted"
    });
}

/// The names of the pods of job `job`, in creation order.
fn job_pods(server: &Server, job: &str) -> Vec<String> {
    let items = get(
        server,
        &[
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-name={job}"),
            "--sort-by=.metadata.creationTimestamp",
        ],
    );
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Plays the kubelet: the pod ran and exited with `code`.
fn finish_pod(server: &Server, name: &str, code: i32) {
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let patch = format!(
        r#"{{"status": {{"phase": "{phase}", "containerStatuses": [{{"name": "c", "image": "busybox:1", "imageID": "",
            "ready": false, "restartCount": 0, "state": {{"terminated": {{"exitCode": {code}, "finishedAt": "{}"}}}}}}]}}}}"#,
        now_rfc3339()
    );
    ok(server.kubectl(
        33,
        &[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    ));
}

fn now_rfc3339() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn create_job(server: &Server, name: &str, spec: &str) {
    let manifest = format!(
        r#"{{"apiVersion": "batch/v1", "kind": "Job", "metadata": {{"name": "{name}"}},
            "spec": {{{spec} "template": {{"spec": {{"restartPolicy": "Never", "containers": [{{"name": "c", "image": "busybox:1"}}]}}}}}}}}"#
    );
    let file = server.dir.path().join(format!("job-{name}.json"));
    std::fs::write(&file, manifest).unwrap();
    ok(server.kubectl(27, &["create", "-f", file.to_str().unwrap()]));
}

#[test]
fn jobs_complete_back_off_fail_at_the_limit_and_go_after_their_ttl() {
    let server = Server::start(&["--disable-scheduler"]);
    // Two completions, two at a time; kubectl wait sees the Complete condition.
    create_job(&server, "ok", r#""completions": 2, "parallelism": 2,"#);
    wait_until("two pods", || job_pods(&server, "ok").len() == 2);
    for pod in job_pods(&server, "ok") {
        finish_pod(&server, &pod, 0);
    }
    ok(server.kubectl(
        33,
        &["wait", "--for=condition=complete", "job/ok", "--timeout=15s"],
    ));
    assert_eq!(
        ok(server.kubectl(33, &["get", "job", "ok", "-o", "jsonpath={.status.succeeded}"])),
        "2"
    );

    // Indexed: one pod per index, and the completed indexes in Kubernetes' form.
    create_job(
        &server,
        "idx",
        r#""completions": 3, "parallelism": 3, "completionMode": "Indexed","#,
    );
    wait_until("three indexed pods", || job_pods(&server, "idx").len() == 3);
    let indexes = ok(server.kubectl(
        33,
        &[
            "get",
            "pods",
            "-l",
            "batch.kubernetes.io/job-name=idx",
            "-o",
            "jsonpath={.items[*].metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}",
        ],
    ));
    let mut indexes: Vec<&str> = indexes.split_whitespace().collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    for pod in job_pods(&server, "idx") {
        finish_pod(&server, &pod, 0);
    }
    ok(server.kubectl(
        33,
        &["wait", "--for=condition=complete", "job/idx", "--timeout=15s"],
    ));
    assert_eq!(
        ok(server.kubectl(
            33,
            &["get", "job", "idx", "-o", "jsonpath={.status.completedIndexes}"]
        )),
        "0-2"
    );

    // Failing pods are replaced after a back-off (10 s after the first failure) until backoffLimit.
    create_job(&server, "bad", r#""backoffLimit": 1,"#);
    wait_until("the first pod", || job_pods(&server, "bad").len() == 1);
    finish_pod(&server, &job_pods(&server, "bad")[0], 3);
    let failed_at = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(
        job_pods(&server, "bad").len(),
        1,
        "no replacement before the back-off"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while job_pods(&server, "bad").len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no replacement after the back-off"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        failed_at.elapsed() >= std::time::Duration::from_secs(8),
        "replaced after {:?}",
        failed_at.elapsed()
    );
    finish_pod(&server, &job_pods(&server, "bad")[1], 3);
    ok(server.kubectl(
        33,
        &["wait", "--for=condition=failed", "job/bad", "--timeout=15s"],
    ));
    let reason = ok(server.kubectl(
        33,
        &[
            "get",
            "job",
            "bad",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
        ],
    ));
    assert_eq!(reason, "BackoffLimitExceeded");

    // ttlSecondsAfterFinished: 0 deletes the finished Job, and the garbage collector its pods.
    create_job(&server, "once", r#""ttlSecondsAfterFinished": 0,"#);
    wait_until("its pod", || job_pods(&server, "once").len() == 1);
    finish_pod(&server, &job_pods(&server, "once")[0], 0);
    wait_until("the finished job and its pod to go", || {
        !server.kubectl(33, &["get", "job", "once"]).status.success() && job_pods(&server, "once").is_empty()
    });
}
