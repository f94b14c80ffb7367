//! Resources end to end: the real bonsai binary in a network namespace of its own, driven by the
//! real kubectl 1.29 and 1.33 (and curl where kubectl has no command for a request).
//! (`--validate=false` here keeps these tests about resources; `kubectl.rs` covers validation.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::io::Write;
use std::process::{Output, Stdio};

use bonsai_e2e::{Server, fails, ok};
use serde_json::{Value, json};

/// `kubectl <args> -f -` with `object` on standard input.
fn with_stdin(server: &Server, minor: u32, args: &[&str], object: &Value) -> Output {
    let mut child = server
        .netns
        .command(bonsai_e2e::kubectl_bin(minor))
        .args(["--kubeconfig", server.kubeconfig.to_str().unwrap()])
        .args([
            "--cache-dir",
            server.dir.path().join("kube-cache").to_str().unwrap(),
        ])
        .args(args)
        .args(["--validate=false", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(object.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

/// curl as the admin, inside the server's namespace; returns (code, body).
fn curl(server: &Server, method: &str, path: &str, body: Option<&[u8]>, content_type: &str) -> (u16, String) {
    server.request(method, path, body, content_type)
}

#[test]
fn namespaces_and_discovery_from_first_start() {
    let server = Server::start(&[]);
    for minor in [29, 33] {
        let names = ok(server.kubectl(minor, &["get", "ns", "-o", "name"]));
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(
                names.contains(&format!("namespace/{ns}")),
                "kubectl 1.{minor}: {names}"
            );
        }
        let resources = ok(server.kubectl(minor, &["api-resources", "-o", "name"]));
        for r in [
            "pods",
            "configmaps",
            "deployments.apps",
            "jobs.batch",
            "leases.coordination.k8s.io",
            "clusterroles.rbac.authorization.k8s.io",
            "endpointslices.discovery.k8s.io",
            "priorityclasses.scheduling.k8s.io",
        ] {
            assert!(
                resources.lines().any(|l| l == r),
                "kubectl 1.{minor}: {r} missing from\n{resources}"
            );
        }
        let apps = ok(server.kubectl(minor, &["api-resources", "--api-group=apps", "-o", "name"]));
        assert_eq!(apps.lines().count(), 5, "{apps}");
        // Short names resolve.
        ok(server.kubectl(minor, &["get", "cm,deploy,sts,ds,rs,cj,ing,sc,pc"]));
        // The kubernetes service, as in every cluster, and cluster-info built on it.
        let ip = ok(server.kubectl(
            minor,
            &["get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"],
        ));
        assert_eq!(ip, "10.43.0.1");
        let port = ok(server.kubectl(
            minor,
            &[
                "get",
                "endpoints",
                "kubernetes",
                "-o",
                "jsonpath={.subsets[0].ports[0].port}",
            ],
        ));
        assert_eq!(port, "6443");
        ok(server.kubectl(minor, &["get", "endpointslices.discovery.k8s.io", "kubernetes"]));
        let info = ok(server.kubectl(minor, &["cluster-info"]));
        assert!(
            info.contains("is running at") && info.contains("https://127.0.0.1:6443"),
            "{info}"
        );
        let unknown = fails(server.kubectl(minor, &["get", "widgets"]));
        assert!(
            unknown.contains("the server doesn't have a resource type \"widgets\""),
            "{unknown}"
        );
    }
}

#[test]
fn create_get_list_delete_with_selectors_and_errors() {
    let server = Server::start(&[]);
    for minor in [29, 33] {
        let ns = format!("ns{minor}");
        // (kubectl 1.33 sends this one as protobuf, 1.29 as JSON.)
        ok(server.kubectl(minor, &["create", "namespace", &ns]));
        for (name, labels) in [
            ("a", json!({"app": "web", "tier": "front"})),
            ("b", json!({"app": "web"})),
            ("c", json!({"app": "db"})),
        ] {
            let out = ok(with_stdin(
                &server,
                minor,
                &["create", "-n", &ns],
                &configmap(name, labels),
            ));
            assert!(out.contains(&format!("configmap/{name} created")), "{out}");
        }
        let cm: Value = serde_json::from_str(&ok(
            server.kubectl(minor, &["get", "cm", "a", "-n", &ns, "-o", "json"])
        ))
        .unwrap();
        assert_eq!(cm["metadata"]["namespace"], ns.as_str());
        assert_eq!(cm["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert!(
            cm["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        assert!(
            cm["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
                > 1
        );
        let yaml = ok(server.kubectl(minor, &["get", "cm", "a", "-n", &ns, "-o", "yaml"]));
        assert!(
            yaml.contains("kind: ConfigMap") && yaml.contains("app: web"),
            "{yaml}"
        );

        let select = |selector: &str| {
            let out = ok(server.kubectl(minor, &["get", "cm", "-n", &ns, "-l", selector, "-o", "name"]));
            let mut names: Vec<String> = out
                .lines()
                .map(|l| l.trim_start_matches("configmap/").to_string())
                // Every namespace has the root CA ConfigMap its publisher puts there, as in Kubernetes.
                .filter(|n| n != "kube-root-ca.crt")
                .collect();
            names.sort();
            names.join(",")
        };
        assert_eq!(select("app=web"), "a,b");
        assert_eq!(select("app!=web"), "c");
        assert_eq!(select("app in (db,web),tier"), "a");
        assert_eq!(select("app notin (web)"), "c");
        assert_eq!(select("!tier"), "b,c");
        let by_name = ok(server.kubectl(
            minor,
            &[
                "get",
                "cm",
                "-n",
                &ns,
                "--field-selector",
                "metadata.name=b",
                "-o",
                "name",
            ],
        ));
        assert_eq!(by_name.trim(), "configmap/b");
        let unsupported =
            fails(server.kubectl(minor, &["get", "cm", "-n", &ns, "--field-selector", "data.k=v"]));
        assert!(
            unsupported.contains("(BadRequest)") && unsupported.contains("field label not supported: data.k"),
            "{unsupported}"
        );
        let everywhere = ok(server.kubectl(minor, &["get", "cm", "-A", "-l", "app=db", "-o", "name"]));
        assert!(everywhere.contains("configmap/c"), "{everywhere}");

        let again = fails(with_stdin(
            &server,
            minor,
            &["create", "-n", &ns],
            &configmap("a", json!({})),
        ));
        assert!(
            again.contains("AlreadyExists") && again.contains("configmaps \"a\" already exists"),
            "{again}"
        );
        let bad = fails(with_stdin(
            &server,
            minor,
            &["create", "-n", &ns],
            &configmap("Bad_Name", json!({})),
        ));
        assert!(
            bad.contains("is invalid") && bad.contains("metadata.name: Invalid value: \"Bad_Name\""),
            "{bad}"
        );
        let nowhere = fails(with_stdin(
            &server,
            minor,
            &["create", "-n", "no-such-ns"],
            &configmap("x", json!({})),
        ));
        assert!(
            nowhere.contains("namespaces \"no-such-ns\" not found"),
            "{nowhere}"
        );

        assert!(
            ok(server.kubectl(minor, &["delete", "cm", "a", "-n", &ns])).contains("configmap \"a\" deleted")
        );
        let gone = fails(server.kubectl(minor, &["get", "cm", "a", "-n", &ns]));
        assert!(
            gone.contains("NotFound") && gone.contains("configmaps \"a\" not found"),
            "{gone}"
        );
        ok(server.kubectl(minor, &["label", "cm", "b", "-n", &ns, "extra=yes"]));
        assert_eq!(select("extra=yes"), "b");
    }
}

#[test]
fn optimistic_concurrency_generations_and_status() {
    // The API alone: no deployment controller writing to the Deployment meanwhile.
    let server = Server::start(&["--disable-controller-manager"]);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    });
    ok(with_stdin(&server, 33, &["create"], &deployment));
    let current: Value =
        serde_json::from_str(&ok(server.kubectl(33, &["get", "deploy", "web", "-o", "json"]))).unwrap();
    assert_eq!(current["metadata"]["generation"], 1);
    // A replace with the current resourceVersion wins and bumps the generation...
    let mut newer = current.clone();
    newer["spec"]["replicas"] = json!(3);
    ok(with_stdin(&server, 33, &["replace"], &newer));
    let after: Value =
        serde_json::from_str(&ok(server.kubectl(33, &["get", "deploy", "web", "-o", "json"]))).unwrap();
    assert_eq!(
        (
            after["spec"]["replicas"].as_i64(),
            after["metadata"]["generation"].as_i64()
        ),
        (Some(3), Some(2))
    );
    // ...and one with the old resourceVersion is a conflict.
    let mut stale = current.clone();
    stale["spec"]["replicas"] = json!(5);
    let conflict = fails(with_stdin(&server, 29, &["replace"], &stale));
    assert!(
        conflict.contains("Conflict") && conflict.contains("the object has been modified"),
        "{conflict}"
    );
    // Status goes through the status subresource only, and does not change the generation.
    let mut with_status = after.clone();
    with_status["status"] = json!({"replicas": 3, "readyReplicas": 2});
    // Unconditional updates (no resourceVersion), as controllers that own a field may send them.
    with_status["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    let (code, body) = curl(
        &server,
        "PUT",
        path,
        Some(with_status.to_string().as_bytes()),
        "application/json",
    );
    assert_eq!(code, 200, "{body}");
    let (_, body) = curl(&server, "GET", path, None, "application/json");
    let read: Value = serde_json::from_str(&body).unwrap();
    assert!(
        read.get("status")
            .is_none_or(|s| s.get("readyReplicas").is_none()),
        "the main resource ignores status: {read}"
    );
    let (code, body) = curl(
        &server,
        "PUT",
        &format!("{path}/status"),
        Some(with_status.to_string().as_bytes()),
        "application/json",
    );
    assert_eq!(code, 200, "{body}");
    let read: Value = serde_json::from_str(&curl(&server, "GET", path, None, "").1).unwrap();
    assert_eq!(read["status"]["readyReplicas"], 2);
    assert_eq!(read["metadata"]["generation"], 2);
}

#[test]
fn deletion_with_finalizers_and_terminating_namespaces() {
    let server = Server::start(&[]);
    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    ok(with_stdin(&server, 33, &["create"], &held));
    ok(server.kubectl(33, &["delete", "cm", "held", "--wait=false"]));
    let still: Value =
        serde_json::from_str(&ok(server.kubectl(33, &["get", "cm", "held", "-o", "json"]))).unwrap();
    assert!(still["metadata"]["deletionTimestamp"].is_string(), "{still}");
    ok(server.kubectl(
        33,
        &[
            "patch",
            "cm",
            "held",
            "--type=merge",
            "-p",
            "{\"metadata\":{\"finalizers\":null}}",
        ],
    ));
    fails(server.kubectl(33, &["get", "cm", "held"]));

    ok(with_stdin(
        &server,
        33,
        &["create"],
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}}),
    ));
    // An object with a finalizer keeps its namespace Terminating (the namespace controller waits for it).
    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    ok(with_stdin(&server, 33, &["create", "-n", "doomed"], &held));
    ok(server.kubectl(33, &["delete", "namespace", "doomed", "--wait=false"]));
    let ns: Value =
        serde_json::from_str(&ok(server.kubectl(33, &["get", "ns", "doomed", "-o", "json"]))).unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    let refused = fails(with_stdin(
        &server,
        33,
        &["create", "-n", "doomed"],
        &configmap("late", json!({})),
    ));
    assert!(refused.contains("being terminated"), "{refused}");
    // Once the last object goes, so does the namespace.
    ok(server.kubectl(
        33,
        &[
            "-n",
            "doomed",
            "patch",
            "cm",
            "held",
            "--type=merge",
            "-p",
            "{\"metadata\":{\"finalizers\":null}}",
        ],
    ));
    bonsai_e2e::wait_until("the emptied namespace to go", || {
        !server.kubectl(33, &["get", "ns", "doomed"]).status.success()
    });
}

#[test]
fn paging_watching_and_bad_requests() {
    let server = Server::start(&[]);
    for i in 0..12 {
        ok(with_stdin(
            &server,
            33,
            &["create"],
            &configmap(&format!("page-{i:02}"), json!({"batch": "one"})),
        ));
    }
    // kubectl pages with limit/continue.
    for minor in [29, 33] {
        let all = ok(server.kubectl(
            minor,
            &["get", "cm", "-l", "batch=one", "--chunk-size=5", "-o", "name"],
        ));
        assert_eq!(all.lines().count(), 12, "kubectl 1.{minor}: {all}");
    }
    let (code, body) = curl(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps?limit=5",
        None,
        "",
    );
    assert_eq!(code, 200);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let rv: i64 = page["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Watch from a resourceVersion: the changes after it, in order, then the stream ends at timeoutSeconds.
    ok(server.kubectl(33, &["label", "cm", "page-00", "changed=yes"]));
    ok(server.kubectl(33, &["delete", "cm", "page-01"]));
    let (code, events) = curl(
        &server,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        None,
        "",
    );
    assert_eq!(code, 200);
    let events: Vec<Value> = events.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("MODIFIED".into(), "page-00".into()),
            ("DELETED".into(), "page-01".into())
        ]
    );
    // A label-selected watch sees an object leave its selection as a deletion.
    let (_, events) = curl(
        &server,
        "GET",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1&labelSelector=changed%21%3Dyes,batch%3Done"
        ),
        None,
        "",
    );
    let types: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, vec!["DELETED", "DELETED"], "{events}");
    // WatchList: every object, then the initial-events-end bookmark.
    let (_, events) = curl(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
        None,
        "",
    );
    let events: Vec<Value> = events.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // (The test's 11 and the `kube-root-ca.crt` its publisher puts in every namespace.)
    let added = events.iter().filter(|e| e["type"] == "ADDED");
    assert_eq!(
        added
            .filter(|e| e["object"]["metadata"]["name"] != "kube-root-ca.crt")
            .count(),
        11
    );
    let last = events.last().unwrap();
    assert_eq!(last["type"], "BOOKMARK");
    assert_eq!(
        last["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // The continue token from before the changes still reads the old snapshot.
    let (code, body) = curl(
        &server,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?limit=5&continue={token}"),
        None,
        "",
    );
    assert_eq!(code, 200, "{body}");

    // kubectl get --watch prints what it lists, then what it is told of.
    let mut watcher = server
        .netns
        .command(bonsai_e2e::kubectl_bin(33))
        .args([
            "--kubeconfig",
            server.kubeconfig.to_str().unwrap(),
            "get",
            "cm",
            "-w",
            "-o",
            "name",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(_) => {}
                Err(_) => panic!("kubectl get -w never printed {want}"),
            }
        }
    };
    wait_for("configmap/page-11");
    ok(with_stdin(
        &server,
        33,
        &["create"],
        &configmap("watched", json!({})),
    ));
    wait_for("configmap/watched");
    let _ = watcher.kill();
    let _ = watcher.wait();

    // Bad input: a clear Status, never a 500.
    let (code, body) = curl(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(b"{not json"),
        "application/json",
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["reason"],
        "BadRequest"
    );
    let wrong_type =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}, "data": {"k": 5}});
    let (code, body) = curl(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(wrong_type.to_string().as_bytes()),
        "application/json",
    );
    assert_eq!(code, 400, "{body}");
    let huge = vec![b' '; 3 * 1024 * 1024 + 10];
    let (code, body) = curl(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(&huge),
        "application/json",
    );
    assert_eq!(code, 413, "{body}");
    let (code, _) = curl(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(b"\x0a\x0b"),
        "application/vnd.kubernetes.protobuf",
    );
    assert_eq!(
        code, 400,
        "a body without the k8s protobuf magic is a bad request"
    );
    let (code, _) = curl(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(b"{}"),
        "application/x-unknown",
    );
    assert_eq!(code, 415);
    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    let (code, body) = curl(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(yaml),
        "application/yaml",
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = curl(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=a+in+b",
        None,
        "",
    );
    assert_eq!(code, 400, "{body}");
}

#[test]
fn a_compacted_resource_version_is_gone() {
    let server = Server::start(&[
        "--store-compaction-interval",
        "200ms",
        "--store-compaction-retain",
        "1",
    ]);
    let created = curl(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(configmap("old", json!({})).to_string().as_bytes()),
        "application/json",
    );
    assert_eq!(created.0, 201, "{}", created.1);
    let old_rv = serde_json::from_str::<Value>(&created.1).unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..5 {
        ok(server.kubectl(33, &["label", "cm", "old", &format!("round={i}"), "--overwrite"]));
    }
    // Wait until compaction has passed the revision after `old_rv`: a list at `old_rv` needs that
    // state, and a watch from `old_rv` needs the events from `old_rv + 1` on.
    let after: i64 = old_rv.parse::<i64>().unwrap() + 1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, body) = curl(
            &server,
            "GET",
            &format!(
                "/api/v1/namespaces/default/configmaps?resourceVersion={after}&resourceVersionMatch=Exact"
            ),
            None,
            "",
        );
        if code == 410 {
            let status: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                (status["reason"].as_str(), status["code"].as_i64()),
                (Some("Expired"), Some(410)),
                "{body}"
            );
            break;
        }
        assert_eq!(code, 200, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "history was never compacted"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A watch from there gets one ERROR event with 410 Expired, as client-go expects to relist.
    let (code, events) = curl(
        &server,
        "GET",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old_rv}&timeoutSeconds=1"
        ),
        None,
        "",
    );
    assert_eq!(code, 200);
    let event: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    // The current state is whole.
    let cm: Value =
        serde_json::from_str(&ok(server.kubectl(33, &["get", "cm", "old", "-o", "json"]))).unwrap();
    assert_eq!(cm["metadata"]["labels"]["round"], "4");
}

#[test]
fn kubectl_scale_and_pod_binding() {
    let server = Server::start(&[]);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    });
    ok(with_stdin(&server, 33, &["create"], &deployment));
    for (minor, replicas) in [(29, "3"), (33, "5")] {
        let out = ok(server.kubectl(
            minor,
            &["scale", "deployment", "web", &format!("--replicas={replicas}")],
        ));
        assert!(out.contains("deployment.apps/web scaled"), "{out}");
        let read = ok(server.kubectl(
            minor,
            &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
        ));
        assert_eq!(read, replicas);
    }
    let scale: Value = serde_json::from_str(
        &curl(
            &server,
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            None,
            "",
        )
        .1,
    )
    .unwrap();
    assert_eq!(
        (
            scale["kind"].as_str(),
            scale["spec"]["replicas"].as_i64(),
            scale["status"]["selector"].as_str()
        ),
        (Some("Scale"), Some(5), Some("app=web"))
    );
    let negative = fails(server.kubectl(33, &["scale", "deployment", "web", "--replicas=-1"]));
    assert!(negative.contains("replicas"), "{negative}");

    // The scheduler's binding: once, to one node.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    ok(with_stdin(&server, 33, &["create"], &pod));
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node-a"}});
    let (code, body) = curl(
        &server,
        "POST",
        "/api/v1/namespaces/default/pods/p/binding",
        Some(binding.to_string().as_bytes()),
        "application/json",
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        ok(server.kubectl(33, &["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"])),
        "node-a"
    );
    let (code, body) = curl(
        &server,
        "POST",
        "/api/v1/namespaces/default/pods/p/binding",
        Some(binding.to_string().as_bytes()),
        "application/json",
    );
    assert_eq!(code, 409, "{body}");
    // A bound pod is deleted gracefully: it stays, marked, for its node agent to stop.
    ok(server.kubectl(33, &["delete", "pod", "p", "--wait=false"]));
    let marked: Value =
        serde_json::from_str(&ok(server.kubectl(33, &["get", "pod", "p", "-o", "json"]))).unwrap();
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    // An eviction of an unbound pod deletes it at once (no disruption budgets are served yet).
    let q = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    ok(with_stdin(&server, 33, &["create"], &q));
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "q", "namespace": "default"}});
    let (code, body) = curl(
        &server,
        "POST",
        "/api/v1/namespaces/default/pods/q/eviction",
        Some(eviction.to_string().as_bytes()),
        "application/json",
    );
    assert_eq!(code, 201, "{body}");
    fails(server.kubectl(33, &["get", "pod", "q"]));
    // The node agent's subresources go to the pod's node: one that does not exist is an error, as in Kubernetes.
    let logs = fails(server.kubectl(33, &["logs", "p"]));
    assert!(logs.contains(r#"nodes "node-a" not found"#), "{logs}");
}
