//! The cluster controllers against the real binary, with the test playing the node (it sets pods' IPs and
//! readiness through the status subresource, as a kubelet would) and the real kubectl as the client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use bonsai_e2e::as_node::{add_node, finish_pod, get, set_pod};
use bonsai_e2e::{Server, fails, ok, wait_until};
use serde_json::Value;

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
    // Nothing of it is left behind: a namespace made again with the name starts empty (but for the
    // `kube-root-ca.crt` ConfigMap its publisher puts in every namespace, as in Kubernetes).
    ok(server.kubectl(33, &["create", "namespace", "tmp"]));
    for kind in ["configmaps", "secrets", "deployments", "pods"] {
        let items = get(&server, &["-n", "tmp", kind]);
        let left: Vec<&serde_json::Value> = items["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["metadata"]["name"] != "kube-root-ca.crt")
            .collect();
        assert!(left.is_empty(), "{kind}: {items}");
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

#[test]
fn a_daemon_set_follows_nodes_joining_and_leaving_and_rolls_out_node_by_node() {
    let server = Server::start(&[]);
    add_node(&server, "n1", "4", "");
    add_node(&server, "n2", "4", "");
    let manifest = r#"{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
      "spec": {"selector": {"matchLabels": {"app": "agent"}},
               "template": {"metadata": {"labels": {"app": "agent"}},
                            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}"#;
    let file = server.dir.path().join("agent.json");
    std::fs::write(&file, manifest).unwrap();
    ok(server.kubectl(33, &["apply", "-f", file.to_str().unwrap()]));
    let placement = |server: &Server| -> Vec<String> {
        let mut nodes: Vec<String> = ok(server.kubectl(
            33,
            &[
                "get",
                "pods",
                "-l",
                "app=agent",
                "-o",
                "jsonpath={.items[*].spec.nodeName}",
            ],
        ))
        .split_whitespace()
        .map(String::from)
        .collect();
        nodes.sort();
        nodes
    };
    // One pod per node, placed by the scheduler through its node affinity.
    wait_until("a pod on each node", || placement(&server) == ["n1", "n2"]);

    // A node joins: it gets one. A node leaves: its pod goes.
    add_node(&server, "n3", "4", "");
    wait_until("a pod on the new node", || {
        placement(&server) == ["n1", "n2", "n3"]
    });
    ok(server.kubectl(33, &["delete", "node", "n1"]));
    // Its pod is deleted (Terminating until the pod garbage collector sees its node gone for good).
    let live = |server: &Server| -> Vec<Value> {
        get(server, &["pods", "-l", "app=agent"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .cloned()
            .collect()
    };
    wait_until("the departed node's pod to be deleted", || {
        live(&server).len() == 2
    });

    // A new template replaces the pods; `rollout history` lists both revisions.
    ok(server.kubectl(33, &["set", "image", "daemonset/agent", "c=busybox:2"]));
    wait_until("every pod on the new template", || {
        let pods = live(&server);
        pods.len() == 2
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "busybox:2")
    });
    // The test plays the kubelets: every pod runs and is ready, so `rollout status` sees the rollout through.
    for (i, pod) in live(&server).iter().enumerate() {
        let name = pod["metadata"]["name"].as_str().unwrap();
        set_pod(&server, "default", name, &format!("10.42.{i}.9"), true);
    }
    let status = ok(server.kubectl(33, &["rollout", "status", "daemonset/agent", "--timeout=20s"]));
    assert!(status.contains("successfully rolled out"), "{status}");
    let history = ok(server.kubectl(33, &["rollout", "history", "daemonset/agent"]));
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // `rollout undo` brings the first template back, as revision 3.
    ok(server.kubectl(33, &["rollout", "undo", "daemonset/agent"]));
    wait_until("every pod back on the first template", || {
        // The kubelets start each new pod; the next node's pod is replaced only once this one is available.
        for pod in live(&server).iter().filter(|p| p["status"]["podIP"].is_null()) {
            let name = pod["metadata"]["name"].as_str().unwrap();
            set_pod(&server, "default", name, "10.42.7.9", true);
        }
        let pods = live(&server);
        pods.len() == 2
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "busybox:1")
    });
    wait_until("the first template renumbered as revision 3", || {
        let history = ok(server.kubectl(33, &["rollout", "history", "daemonset/agent"]));
        let revisions: Vec<String> = history
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.parse::<u32>().is_ok())
            .map(String::from)
            .collect();
        revisions == ["2", "3"]
    });
    let described = ok(server.kubectl(33, &["describe", "daemonset", "agent"]));
    assert!(described.contains("SuccessfulCreate"), "{described}");
}

#[test]
fn controllers_run_only_while_this_server_holds_their_lease() {
    let mut server = Server::start(&[]);
    let lease = |server: &Server, name: &str| -> Value {
        get(server, &["-n", "kube-system", "lease", name])["spec"].clone()
    };
    // Both leases are held under the server's identity, `<hostname>_<id>`, with client-go's 15 s duration.
    // The leases appear once the controller manager and the scheduler have started, after `server ready`.
    let exists = |server: &Server, name: &str| {
        server
            .kubectl(33, &["-n", "kube-system", "get", "lease", name])
            .status
            .success()
    };
    wait_until("both leases held", || {
        if !exists(&server, "kube-controller-manager") || !exists(&server, "kube-scheduler") {
            return false;
        }
        let (a, b) = (
            lease(&server, "kube-controller-manager"),
            lease(&server, "kube-scheduler"),
        );
        a["holderIdentity"].is_string() && a["holderIdentity"] == b["holderIdentity"]
    });
    let held = lease(&server, "kube-controller-manager");
    let me = held["holderIdentity"].as_str().unwrap().to_string();
    assert!(me.contains('_'), "{me}");
    assert_eq!(held["leaseDurationSeconds"], 15);

    // Another server takes the controller manager's lease and keeps renewing it: this one stops its controllers
    // within the renew deadline, and a new namespace gets no default service account while the other leads.
    let take = |server: &Server| {
        let patch = format!(
            r#"{{"spec": {{"holderIdentity": "other-server", "leaseDurationSeconds": 15, "renewTime": "{}.000000Z"}}}}"#,
            bonsai_e2e::as_node::now_rfc3339().trim_end_matches('Z')
        );
        ok(server.kubectl(
            33,
            &[
                "-n",
                "kube-system",
                "patch",
                "lease",
                "kube-controller-manager",
                "--type=merge",
                "-p",
                &patch,
            ],
        ));
    };
    take(&server);
    let renewing = std::time::Instant::now();
    server
        .process
        .wait_for_log("lost leadership", std::time::Duration::from_secs(20));
    assert!(renewing.elapsed() < std::time::Duration::from_secs(15));
    ok(server.kubectl(33, &["create", "namespace", "quiet"]));
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_secs(2));
        take(&server);
    }
    assert!(
        !server
            .kubectl(33, &["-n", "quiet", "get", "serviceaccount", "default"])
            .status
            .success(),
        "a controller ran while another server held the lease"
    );
    assert_eq!(
        lease(&server, "kube-scheduler")["holderIdentity"],
        me,
        "the scheduler's lease is a separate election"
    );

    // The other server stops renewing: once its lease has expired by this server's clock, this one takes it back
    // (a transition counted) and its controllers catch up.
    let stopped = std::time::Instant::now();
    server
        .process
        .wait_for_log("became leader", std::time::Duration::from_secs(30));
    assert!(
        stopped.elapsed() >= std::time::Duration::from_secs(13),
        "taken over before the lease expired"
    );
    let retaken = lease(&server, "kube-controller-manager");
    assert_eq!(retaken["holderIdentity"], me.as_str());
    assert!(retaken["leaseTransitions"].as_i64().unwrap() >= 1, "{retaken}");
    wait_until("the new namespace's service account", || {
        server
            .kubectl(33, &["-n", "quiet", "get", "serviceaccount", "default"])
            .status
            .success()
    });

    // A restart keeps the identity, so the server takes its own leases back at once.
    let (netns, dir, status) = server.stop();
    assert!(status.success());
    let server = Server::start_in(netns, dir, &[]);
    wait_until("the leases re-held by the same identity", || {
        lease(&server, "kube-controller-manager")["holderIdentity"] == me.as_str()
            && lease(&server, "kube-scheduler")["holderIdentity"] == me.as_str()
    });
}
