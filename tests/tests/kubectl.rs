//! kubectl's everyday commands against the real binary with kubectl's default settings (client-side validation
//! on, so OpenAPI must be served): apply and re-apply with changes and removals, edit, patch of all three types,
//! label, annotate, set image, rollout restart, diff, explain, field validation. Each case checks the resulting
//! object, not just the exit code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::Path;

use bonsai_e2e::{Server, fails, ok, text};
use serde_json::{Value, json};

/// The kubectl versions checked here: the oldest on the machine (OpenAPI v2, protobuf) and the newest (v3).
const VERSIONS: [u32; 2] = [27, 33];

fn get(server: &Server, minor: u32, args: &[&str]) -> Value {
    let mut all = vec!["get", "-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(server.kubectl(minor, &all))).unwrap()
}

fn deployment(name: &str, image: &str, labels: Value, sidecar: bool) -> String {
    let mut containers = vec![json!({"name": "app", "image": image, "ports": [{"containerPort": 80}]})];
    if sidecar {
        containers.push(json!({"name": "sidecar", "image": "busybox:1"}));
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}},
    })
    .to_string()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

fn images(d: &Value) -> Vec<String> {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}={}", c["name"].as_str().unwrap(), c["image"].as_str().unwrap()))
        .collect()
}

#[test]
fn apply_reapply_and_remove_fields() {
    // kubectl against the API alone: no controller or scheduler writes to the objects meanwhile.
    let server = Server::start(&["--disable-controller-manager", "--disable-scheduler"]);
    for minor in VERSIONS {
        let name = format!("web{minor}");
        let dir = server.dir.path();
        let first = write(
            dir,
            "d1.json",
            &deployment(&name, "nginx:1.27", json!({"app": name, "tier": "front"}), true),
        );
        assert!(ok(server.kubectl(minor, &["apply", "-f", &first])).contains("created"));
        let created = get(&server, minor, &["deployment", &name]);
        assert!(
            created["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .is_string(),
            "client-side apply records what it applied"
        );
        // Unchanged: no write at all.
        let rv = created["metadata"]["resourceVersion"].clone();
        assert!(ok(server.kubectl(minor, &["apply", "-f", &first])).contains("unchanged"));
        assert_eq!(
            get(&server, minor, &["deployment", &name])["metadata"]["resourceVersion"],
            rv
        );

        // A change: a strategic merge patch that updates one container and keeps the other.
        let second = write(
            dir,
            "d2.json",
            &deployment(&name, "nginx:1.28", json!({"app": name, "tier": "front"}), true),
        );
        assert!(ok(server.kubectl(minor, &["apply", "-f", &second])).contains("configured"));
        let changed = get(&server, minor, &["deployment", &name]);
        assert_eq!(images(&changed), ["app=nginx:1.28", "sidecar=busybox:1"]);
        assert_eq!(changed["metadata"]["generation"], 2);

        // Removing the sidecar and a label from the file removes them from the object (three-way merge).
        let third = write(
            dir,
            "d3.json",
            &deployment(&name, "nginx:1.28", json!({"app": name}), false),
        );
        ok(server.kubectl(minor, &["apply", "-f", &third]));
        let removed = get(&server, minor, &["deployment", &name]);
        assert_eq!(images(&removed), ["app=nginx:1.28"]);
        assert_eq!(removed["metadata"]["labels"], json!({"app": name}));
        assert_eq!(
            removed["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            80
        );

        // diff: differences exit 1 and change nothing.
        let before = get(&server, minor, &["deployment", &name])["metadata"]["resourceVersion"].clone();
        let diff = server.kubectl(minor, &["diff", "-f", &second]);
        assert_eq!(diff.status.code(), Some(1), "{}", text(&diff));
        let shown = String::from_utf8_lossy(&diff.stdout).to_string();
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with('+') && l.contains("image: busybox:1")),
            "{shown}"
        );
        assert_eq!(
            get(&server, minor, &["deployment", &name])["metadata"]["resourceVersion"],
            before
        );
        let same = server.kubectl(minor, &["diff", "-f", &third]);
        assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    }
}

#[test]
fn edit_patch_label_annotate_set_image_and_restart() {
    let server = Server::start(&[]);
    let dir = server.dir.path();
    for minor in VERSIONS {
        let name = format!("app{minor}");
        let file = write(
            dir,
            "d.json",
            &deployment(&name, "nginx:1.27", json!({"app": name}), true),
        );
        ok(server.kubectl(minor, &["create", "-f", &file]));
        let d = format!("deployment/{name}");

        // edit, with a non-interactive editor.
        let editor = write(
            dir,
            "editor.sh",
            "#!/bin/sh\nsed -i 's/replicas: 1/replicas: 3/' \"$1\"\n",
        );
        std::process::Command::new("chmod")
            .args(["+x", &editor])
            .status()
            .unwrap();
        let out = server
            .kubectl_command(minor)
            .args(["edit", &d])
            .env("KUBE_EDITOR", &editor)
            .output()
            .unwrap();
        ok(out);
        assert_eq!(get(&server, minor, &[&d])["spec"]["replicas"], 3);

        // The three patch types.
        ok(server.kubectl(
            minor,
            &[
                "patch",
                &d,
                "-p",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:1.29"}]}}}}"#,
            ],
        ));
        assert_eq!(
            images(&get(&server, minor, &[&d])),
            ["app=nginx:1.29", "sidecar=busybox:1"]
        );
        ok(server.kubectl(
            minor,
            &[
                "patch",
                &d,
                "--type=merge",
                "-p",
                r#"{"spec":{"minReadySeconds":5}}"#,
            ],
        ));
        assert_eq!(get(&server, minor, &[&d])["spec"]["minReadySeconds"], 5);
        ok(server.kubectl(
            minor,
            &[
                "patch",
                &d,
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
            ],
        ));
        assert_eq!(get(&server, minor, &[&d])["spec"]["replicas"], 2);
        let bad = fails(server.kubectl(
            minor,
            &[
                "patch",
                &d,
                "-p",
                r#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#,
            ],
        ));
        assert!(bad.contains("merge key"), "{bad}");

        // label and annotate, adding and removing.
        ok(server.kubectl(minor, &["label", &d, "tier=web", "team=a"]));
        ok(server.kubectl(minor, &["label", &d, "team-"]));
        ok(server.kubectl(minor, &["annotate", &d, "note=hello"]));
        let labelled = get(&server, minor, &[&d]);
        assert_eq!(
            labelled["metadata"]["labels"],
            json!({"app": name, "tier": "web"})
        );
        assert_eq!(labelled["metadata"]["annotations"]["note"], "hello");
        let clash = fails(server.kubectl(minor, &["label", &d, "tier=db"]));
        assert!(clash.contains("already has a value"), "{clash}");

        // set image and rollout restart.
        ok(server.kubectl(minor, &["set", "image", &d, "sidecar=busybox:2"]));
        assert_eq!(
            images(&get(&server, minor, &[&d])),
            ["app=nginx:1.29", "sidecar=busybox:2"]
        );
        ok(server.kubectl(minor, &["rollout", "restart", &d]));
        let restarted = get(&server, minor, &[&d]);
        assert!(
            restarted["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
                .is_string()
        );
        assert_eq!(
            restarted["spec"]["template"]["metadata"]["labels"],
            json!({"app": name})
        );
    }
}

#[test]
fn field_validation_explain_and_output_formats() {
    let server = Server::start(&[]);
    let dir = server.dir.path();
    for minor in VERSIONS {
        let name = format!("cm{minor}");
        let unknown = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}, "datax": {"a": "1"}});
        let file = write(dir, "cm.json", &unknown.to_string());
        // kubectl's default, Strict: refused, naming the field.
        let refused = fails(server.kubectl(minor, &["create", "-f", &file]));
        assert!(
            refused.contains(r#"strict decoding error: unknown field "datax""#),
            "{refused}"
        );
        // --validate=false sends Ignore: created, and the unknown field is dropped as Kubernetes drops it.
        ok(server.kubectl(minor, &["create", "--validate=false", "-f", &file]));
        let stored = get(&server, minor, &["configmap", &name]);
        assert!(stored.get("datax").is_none(), "{stored}");
        // --validate=warn: created with a warning.
        let warned = server.kubectl(minor, &["apply", "--validate=warn", "-f", &file]);
        assert!(
            text(&warned).contains(r#"unknown field "datax""#),
            "{}",
            text(&warned)
        );

        // Repeated keys: Strict refuses, naming them; the default (Warn) keeps the last and warns.
        let repeated = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"dup{minor}"}},"data":{{"k":"1","k":"2"}}}}"#
        );
        let path = "/api/v1/namespaces/default/configmaps";
        let (code, body) = server.request(
            "POST",
            &format!("{path}?fieldValidation=Strict"),
            Some(repeated.as_bytes()),
            "application/json",
        );
        assert_eq!(code, 400, "{body}");
        assert!(body.contains(r#"duplicate field \"data.k\""#), "{body}");
        let (code, body) = server.request("POST", path, Some(repeated.as_bytes()), "application/json");
        assert_eq!(code, 201, "{body}");
        assert_eq!(
            get(&server, minor, &["configmap", &format!("dup{minor}")])["data"]["k"],
            "2"
        );

        let explained = ok(server.kubectl(minor, &["explain", "pod.spec.containers.ports"]));
        assert!(
            explained.contains("ContainerPort") && explained.contains("containerPort"),
            "{explained}"
        );
        let explained = ok(server.kubectl(minor, &["explain", "deployments.spec.strategy"]));
        assert!(explained.contains("Recreate"), "{explained}");

        let yaml = ok(server.kubectl(minor, &["get", "configmap", &name, "-o", "yaml"]));
        assert!(
            yaml.contains(&format!("name: {name}")) && yaml.contains("k: v"),
            "{yaml}"
        );
        assert_eq!(
            ok(server.kubectl(minor, &["get", "configmap", &name, "-o", "name"])).trim(),
            format!("configmap/{name}")
        );
        let path = ok(server.kubectl(minor, &["get", "configmap", &name, "-o", "jsonpath={.data.k}"]));
        assert_eq!(path, "v");
        let columns = ok(server.kubectl(
            minor,
            &[
                "get",
                "configmap",
                &name,
                "-o",
                "custom-columns=N:.metadata.name,K:.data.k",
            ],
        ));
        assert!(
            columns
                .lines()
                .nth(1)
                .is_some_and(|l| l.split_whitespace().eq([name.as_str(), "v"])),
            "{columns}"
        );
    }
}

/// The first row after the header of `kubectl get` output, split into columns.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

#[test]
fn get_prints_kubernetes_columns_from_server_side_tables() {
    // kubectl against the API alone: no controller or scheduler writes to the objects meanwhile.
    let server = Server::start(&["--disable-controller-manager", "--disable-scheduler"]);
    for minor in VERSIONS {
        let ns = format!("t{minor}");
        ok(server.kubectl(minor, &["create", "namespace", &ns]));
        bonsai_e2e::as_node::default_service_account(&server, &ns);
        let n = ["-n", ns.as_str()];
        let k = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend_from_slice(&n);
            ok(server.kubectl(minor, &all))
        };
        k(&["create", "deployment", "web", "--image=nginx:1", "--replicas=2"]);
        let node_port_flag = format!("--node-port={}", 30000 + minor);
        k(&[
            "create",
            "service",
            "nodeport",
            "web",
            "--tcp=80:8080",
            // Node ports are cluster-wide: one per kubectl version's namespace.
            &node_port_flag,
        ]);
        k(&["run", "p1", "--image=busybox:1", "--labels=app=p1,tier=x"]);
        k(&[
            "create",
            "configmap",
            "cm",
            "--from-literal=a=1",
            "--from-literal=b=2",
        ]);
        k(&["create", "secret", "generic", "s", "--from-literal=x=y"]);

        let pods = rows(&k(&["get", "pods"]));
        assert_eq!(pods[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
        assert_eq!(&pods[1][..4], ["p1", "0/1", "Pending", "0"]);
        let wide = rows(&k(&["get", "pods", "-o", "wide"]));
        assert_eq!(
            wide[0][5..],
            ["IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
        );
        assert_eq!(wide[1][5..], ["<none>", "<none>", "<none>", "<none>"]);
        let labels = rows(&k(&["get", "pods", "--show-labels"]));
        assert_eq!(labels[0].last().unwrap(), "LABELS");
        assert_eq!(labels[1].last().unwrap(), "app=p1,tier=x");
        let column = rows(&k(&["get", "pods", "-L", "tier"]));
        assert_eq!(
            (
                column[0].last().unwrap().as_str(),
                column[1].last().unwrap().as_str()
            ),
            ("TIER", "x")
        );

        let deployments = rows(&k(&["get", "deployments"]));
        assert_eq!(
            deployments[0],
            ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        );
        assert_eq!(&deployments[1][..4], ["web", "0/2", "0", "0"]);
        let services = rows(&k(&["get", "services", "-o", "wide"]));
        assert_eq!(
            services[0],
            [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
                "SELECTOR"
            ]
        );
        assert_eq!(services[1][1], "NodePort");
        assert_eq!(services[1][4], format!("80:{}/TCP", 30000 + minor));
        assert_eq!(services[1][6], "app=web");
        let cms = rows(&k(&["get", "configmaps"]));
        assert_eq!((cms[0][1].as_str(), cms[1][1].as_str()), ("DATA", "2"));
        let secrets = rows(&k(&["get", "secrets"]));
        assert_eq!(&secrets[1][..3], ["s", "Opaque", "1"]);

        // -A adds the namespace column from each row's metadata.
        let all_ns = rows(&ok(server.kubectl(minor, &["get", "pods", "-A"])));
        assert_eq!(all_ns[0][0], "NAMESPACE");
        assert!(all_ns.iter().any(|r| r[0] == ns && r[1] == "p1"), "{all_ns:?}");
        let namespaces = rows(&ok(
            server.kubectl(minor, &["get", "namespace", &ns, "--show-labels"])
        ));
        assert_eq!(namespaces[1][1], "Active");
        assert_eq!(namespaces[1][3], format!("kubernetes.io/metadata.name={ns}"));

        // get all: one table per kind tagged `all`.
        let everything = k(&["get", "all"]);
        for wanted in ["pod/p1", "service/web", "deployment.apps/web"] {
            assert!(everything.contains(wanted), "{everything}");
        }

        // get -w: the watch's events are Tables too, printed as rows.
        let mut watch = server
            .kubectl_command(minor)
            .args(["get", "pods", "-w", "-n", &ns])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        k(&["label", "pod", "p1", "changed=yes"]);
        std::thread::sleep(std::time::Duration::from_millis(1000));
        watch.kill().unwrap();
        let watched = String::from_utf8(watch.wait_with_output().unwrap().stdout).unwrap();
        let watched = rows(&watched);
        assert_eq!(watched[0][0], "NAME");
        assert!(watched.len() >= 3, "the change arrives as a row: {watched:?}");
        assert_eq!(&watched[2][..3], ["p1", "0/1", "Pending"]);
    }
}

#[test]
fn server_side_apply_with_conflicts_force_and_field_removal() {
    let server = Server::start(&[]);
    let dir = server.dir.path();
    for minor in VERSIONS {
        let name = format!("ssa{minor}");
        let d = format!("deployment/{name}");
        let manifest = |replicas: i64, labels: Value, sidecar: bool| {
            let mut m: Value = serde_json::from_str(&deployment(&name, "nginx:1", labels, sidecar)).unwrap();
            m["spec"]["replicas"] = json!(replicas);
            write(dir, "ssa.json", &m.to_string())
        };
        let first = manifest(2, json!({"app": name, "tier": "front"}), true);
        // --dry-run=server: everything runs, nothing is stored.
        ok(server.kubectl(
            minor,
            &["apply", "--server-side", "--dry-run=server", "-f", &first],
        ));
        fails(server.kubectl(minor, &["get", &d]));
        assert!(
            ok(server.kubectl(minor, &["apply", "--server-side", "-f", &first]))
                .contains("serverside-applied")
        );
        let created = get(&server, minor, &[&d, "--show-managed-fields"]);
        let entry = &created["metadata"]["managedFields"][0];
        assert_eq!(
            (entry["manager"].as_str(), entry["operation"].as_str()),
            (Some("kubectl"), Some("Apply"))
        );
        assert!(entry["fieldsV1"]["f:spec"]["f:replicas"].is_object());

        // Another manager takes spec.replicas; re-applying a different value is a conflict naming the field.
        ok(server.kubectl(minor, &["scale", &d, "--replicas=5"]));
        let conflict = fails(server.kubectl(minor, &["apply", "--server-side", "-f", &first]));
        assert!(
            conflict.contains("conflict with") && conflict.contains(".spec.replicas"),
            "{conflict}"
        );
        assert_eq!(get(&server, minor, &[&d])["spec"]["replicas"], 5);
        ok(server.kubectl(
            minor,
            &["apply", "--server-side", "--force-conflicts", "-f", &first],
        ));
        assert_eq!(get(&server, minor, &[&d])["spec"]["replicas"], 2);

        // Fields dropped from the manifest leave the object when only this manager owned them.
        let second = manifest(2, json!({"app": name}), false);
        ok(server.kubectl(minor, &["apply", "--server-side", "-f", &second]));
        let after = get(&server, minor, &[&d]);
        assert_eq!(after["metadata"]["labels"], json!({"app": name}));
        assert_eq!(images(&after), ["app=nginx:1"]);
        // A field another manager added survives the next apply.
        ok(server.kubectl(minor, &["annotate", &d, "owner=ops"]));
        ok(server.kubectl(minor, &["apply", "--server-side", "-f", &second]));
        assert_eq!(
            get(&server, minor, &[&d])["metadata"]["annotations"]["owner"],
            "ops"
        );
    }
}

#[test]
fn whoami_wait_describe_events_and_cascading_deletes() {
    // kubectl against the API alone: no controller or scheduler writes to the objects meanwhile.
    let server = Server::start(&["--disable-controller-manager", "--disable-scheduler"]);
    bonsai_e2e::as_node::default_service_account(&server, "default");
    let dir = server.dir.path();
    for minor in VERSIONS {
        let whoami = ok(server.kubectl(minor, &["auth", "whoami"]));
        assert!(whoami.contains("system:masters"), "{whoami}");

        let pod = format!("w{minor}");
        ok(server.kubectl(minor, &["run", &pod, "--image=busybox:1"]));
        let uid = get(&server, minor, &["pod", &pod])["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();

        // wait: for a condition and a JSONPath value that a status update brings.
        let status =
            json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let waiting = server
            .kubectl_command(minor)
            .args([
                "wait",
                "--for=condition=Ready",
                &format!("pod/{pod}"),
                "--timeout=20s",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let patched = server
            .kubectl_command(minor)
            .args([
                "patch",
                "pod",
                &pod,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ])
            .output()
            .unwrap();
        ok(patched);
        let waited = waiting.wait_with_output().unwrap();
        assert!(
            String::from_utf8_lossy(&waited.stdout).contains("condition met"),
            "{}",
            text(&waited)
        );
        ok(server.kubectl(
            minor,
            &[
                "wait",
                "--for=jsonpath={.status.phase}=Running",
                &format!("pod/{pod}"),
                "--timeout=5s",
            ],
        ));
        let timed_out = fails(server.kubectl(
            minor,
            &[
                "wait",
                "--for=condition=Nope",
                &format!("pod/{pod}"),
                "--timeout=1s",
            ],
        ));
        assert!(timed_out.contains("timed out"), "{timed_out}");

        // describe shows the object's events.
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{pod}.1"), "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": "default", "uid": uid, "apiVersion": "v1"},
            "reason": "Scheduled", "message": "Successfully assigned to node1", "type": "Normal",
            "source": {"component": "default-scheduler"}, "count": 1,
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        });
        let file = write(dir, "event.json", &event.to_string());
        ok(server.kubectl(minor, &["create", "-f", &file]));
        let described = ok(server.kubectl(minor, &["describe", "pod", &pod]));
        assert!(described.contains("Events:"), "{described}");
        assert!(
            described.contains("Successfully assigned to node1") && described.contains("Scheduled"),
            "{described}"
        );
        // The same for a deployment, a service and a node.
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node{minor}")}});
        ok(server.kubectl(
            minor,
            &["create", "-f", &write(dir, "node.json", &node.to_string())],
        ));
        ok(server.kubectl(
            minor,
            &["create", "deployment", &format!("d{minor}"), "--image=nginx:1"],
        ));
        ok(server.kubectl(
            minor,
            &[
                "create",
                "service",
                "clusterip",
                &format!("s{minor}"),
                "--tcp=80:80",
            ],
        ));
        for (kind, resource, name, namespaced) in [
            ("Deployment", "deployment", format!("d{minor}"), true),
            ("Service", "service", format!("s{minor}"), true),
            ("Node", "node", format!("node{minor}"), false),
        ] {
            let uid = get(&server, minor, &[resource, &name])["metadata"]["uid"]
                .as_str()
                .unwrap()
                .to_string();
            let mut involved = json!({"kind": kind, "name": name, "uid": uid});
            if namespaced {
                involved["namespace"] = json!("default");
            }
            let message = format!("something happened to {name}");
            let event = json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{name}.2"), "namespace": "default"},
                "involvedObject": involved, "reason": "Tested", "message": message, "type": "Normal",
                "source": {"component": "tests"}, "count": 1,
                "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
            });
            ok(server.kubectl(
                minor,
                &["create", "-f", &write(dir, "event.json", &event.to_string())],
            ));
            let described = ok(server.kubectl(minor, &["describe", resource, &name]));
            assert!(described.contains(&message), "{resource}: {described}");
        }
        let events = rows(&ok(server.kubectl(minor, &["get", "events"])));
        assert_eq!(events[0][..4], ["LAST", "SEEN", "TYPE", "REASON"]);

        // wait --for=delete returns once the object is gone.
        let mut deleting = server
            .kubectl_command(minor)
            .args(["wait", "--for=delete", &format!("pod/{pod}"), "--timeout=20s"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        ok(server.kubectl(minor, &["delete", "pod", &pod]));
        assert!(deleting.wait().unwrap().success());

        // Cascading deletes: Background deletes now; Foreground and Orphan leave the object marked with the
        // finalizer the garbage collector completes.
        for (cascade, finalizer) in [
            ("foreground", Some("foregroundDeletion")),
            ("orphan", Some("orphan")),
            ("background", None),
        ] {
            let name = format!("c{minor}-{cascade}");
            ok(server.kubectl(minor, &["create", "configmap", &name]));
            ok(server.kubectl(
                minor,
                &[
                    "delete",
                    "configmap",
                    &name,
                    &format!("--cascade={cascade}"),
                    "--wait=false",
                ],
            ));
            match finalizer {
                Some(f) => {
                    let marked = get(&server, minor, &["configmap", &name]);
                    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
                    assert_eq!(marked["metadata"]["finalizers"], json!([f]));
                }
                None => {
                    fails(server.kubectl(minor, &["get", "configmap", &name]));
                }
            }
        }
    }
}

/// What `helm template` prints for a small chart: several kinds in one stream, `# Source:` comments, a document
/// that is only a comment. (helm itself is not installable from the registries these machines reach; the server
/// sees exactly what `helm template | kubectl apply -f -` sends.)
const RENDERED_CHART: &str = r#"---
# Source: demo/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: demo
  labels: {app.kubernetes.io/name: demo, helm.sh/chart: demo-0.1.0}
---
# Source: demo/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: demo-config
data:
  greeting: "hello"
---
# Source: demo/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: demo
spec:
  type: ClusterIP
  selector: {app.kubernetes.io/name: demo}
  ports:
    - {name: http, port: 80, targetPort: http, protocol: TCP}
---
# Source: demo/templates/empty.yaml
# (disabled by values)
---
# Source: demo/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
spec:
  replicas: 2
  selector:
    matchLabels: {app.kubernetes.io/name: demo}
  template:
    metadata:
      labels: {app.kubernetes.io/name: demo}
    spec:
      serviceAccountName: demo
      containers:
        - name: demo
          image: "registry.local/demo:0.1.0"
          ports: [{name: http, containerPort: 8080, protocol: TCP}]
          envFrom: [{configMapRef: {name: demo-config}}]
"#;

#[test]
fn a_rendered_chart_applies_from_standard_input() {
    use std::io::Write;
    let server = Server::start(&[]);
    for minor in VERSIONS {
        let ns = format!("chart{minor}");
        ok(server.kubectl(minor, &["create", "namespace", &ns]));
        for _ in 0..2 {
            let mut child = server
                .kubectl_command(minor)
                .args(["apply", "-n", &ns, "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(RENDERED_CHART.as_bytes())
                .unwrap();
            let out = ok(child.wait_with_output().unwrap());
            for kind in [
                "serviceaccount/demo",
                "configmap/demo-config",
                "service/demo",
                "deployment.apps/demo",
            ] {
                assert!(out.contains(kind), "{out}");
            }
        }
        let service = get(&server, minor, &["service", "demo", "-n", &ns]);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
        let deployment = get(&server, minor, &["deployment", "demo", "-n", &ns]);
        assert_eq!(
            deployment["spec"]["template"]["spec"]["serviceAccountName"],
            "demo"
        );
        assert_eq!(
            deployment["metadata"]["generation"], 1,
            "re-applying the same chart changes nothing"
        );
    }
}

#[test]
fn objects_get_kubernetes_defaults_and_reapplying_changes_nothing() {
    let server = Server::start(&["--disable-controller-manager", "--disable-scheduler"]);
    bonsai_e2e::as_node::default_service_account(&server, "default");
    let dir = server.dir.path();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 8080}],
            "resources": {"limits": {"memory": "64Mi"}},
            "livenessProbe": {"httpGet": {"port": 8080}}}],
            "volumes": [{"name": "scratch"}]}});
    let deployment = deployment("web", "busybox:1.36", json!({"app": "web"}), false);
    for minor in VERSIONS {
        let pod_file = write(dir, "pod.json", &pod.to_string());
        let deployment_file = write(dir, "deployment.json", &deployment);
        ok(server.kubectl(minor, &["apply", "-f", &pod_file, "-f", &deployment_file]));
        // What kube-apiserver fills in (SetDefaults_PodSpec, SetDefaults_Container, SetDefaults_Pod, probes,
        // volumes, SetDefaults_Deployment), so `kubectl get -o yaml` and `describe` show what they show there.
        let p = get(&server, minor, &["pod", "p"]);
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Always", "{p}");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["enableServiceLinks"], true);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always", "an untagged image is :latest");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(
            c["resources"]["requests"]["memory"], "64Mi",
            "requests default to limits"
        );
        assert_eq!(c["livenessProbe"]["periodSeconds"], 10);
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        let d = get(&server, minor, &["deployment", "web"]);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%", "{d}");
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert!(
            d["spec"]["template"]["spec"].get("enableServiceLinks").is_none(),
            "templates get only the pod spec's defaults"
        );
        // Defaults are stable: re-applying the same files changes nothing, and `kubectl diff` finds no change.
        let rv = |server: &Server| {
            get(server, minor, &["deployment", "web"])["metadata"]["resourceVersion"].clone()
        };
        let before = rv(&server);
        let out = ok(server.kubectl(minor, &["apply", "-f", &pod_file, "-f", &deployment_file]));
        assert!(out.contains("unchanged"), "{out}");
        assert_eq!(rv(&server), before);
        let diff = server.kubectl(minor, &["diff", "-f", &pod_file, "-f", &deployment_file]);
        assert!(diff.status.success(), "{}", text(&diff));
        ok(server.kubectl(
            minor,
            &["delete", "-f", &pod_file, "-f", &deployment_file, "--wait=false"],
        ));
        wait_gone(&server, minor);
    }
}

fn wait_gone(server: &Server, minor: u32) {
    bonsai_e2e::wait_until("the pod and deployment to go", || {
        !server.kubectl(minor, &["get", "pod", "p"]).status.success()
            && !server
                .kubectl(minor, &["get", "deployment", "web"])
                .status
                .success()
    });
}
