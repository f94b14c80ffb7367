//! The StatefulSet controller against the real binary, with the test playing the node (it registers a Node,
//! marks pods Running and Ready as a kubelet would, and finishes the graceful deletion of pods bound to the
//! node) and the real kubectl as the client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use bonsai_e2e::as_node::{add_node, get, kubectl_file, patch_status, set_pod};
use bonsai_e2e::{Server, ok, wait_until};
use serde_json::Value;

/// The set's pods by name.
fn pods(server: &Server) -> BTreeMap<String, Value> {
    get(server, &["pods", "-l", "app=web"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["metadata"]["name"].as_str().unwrap().to_string(), p.clone()))
        .collect()
}

fn terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

/// Names of the pods not being deleted.
fn live(server: &Server) -> Vec<String> {
    pods(server)
        .into_iter()
        .filter(|(_, p)| !terminating(p))
        .map(|(n, _)| n)
        .collect()
}

fn image(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"].as_str().unwrap()
}

fn set_field(server: &Server, path: &str) -> String {
    ok(server.kubectl(
        33,
        &["get", "statefulset", "web", "-o", &format!("jsonpath={{{path}}}")],
    ))
}

/// Plays the kubelet: the pod runs and is ready.
fn ready(server: &Server, name: &str, n: u8) {
    set_pod(server, "default", name, &format!("10.42.0.{n}"), true);
}

/// Waits for `name` to be (re)made, live, on `on_image`, then makes it ready; returns its uid.
fn comes_up(server: &Server, name: &str, on_image: &str, n: u8) -> String {
    wait_until(&format!("{name} on {on_image}"), || {
        pods(server)
            .get(name)
            .is_some_and(|p| !terminating(p) && image(p) == on_image)
    });
    ready(server, name, n);
    pods(server)[name]["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn uid_of(server: &Server, name: &str) -> String {
    pods(server)[name]["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits for the controller to delete the pod `name` that has `uid` (and for no other pod to be deleted
/// meanwhile), then plays the kubelet finishing its graceful deletion.
fn goes(server: &Server, name: &str, uid: &str) {
    let mut still_there = false;
    wait_until(&format!("{name} to be deleted"), || {
        let all = pods(server);
        let going: Vec<&String> = all
            .iter()
            .filter(|(_, p)| terminating(p))
            .map(|(n, _)| n)
            .collect();
        assert!(
            going.iter().all(|n| *n == name),
            "{going:?} deleted, expected only {name}"
        );
        // A pod the scheduler had not bound yet goes at once (and may be back already, as another pod).
        match all.get(name) {
            Some(p) if p["metadata"]["uid"] == uid => {
                still_there = terminating(p);
                still_there
            }
            _ => true,
        }
    });
    if still_there {
        finish(server, name, uid);
    }
}

/// Deletes the pod `name` if it is still the one with `uid` (gracefully unless `grace` says otherwise); the HTTP
/// code (409 when another write got in between, or it is another pod now).
fn delete_pod(server: &Server, name: &str, uid: &str, grace: Option<u32>) -> u16 {
    let grace = grace.map_or(String::new(), |g| format!(r#", "gracePeriodSeconds": {g}"#));
    let options = format!(
        r#"{{"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {{"uid": "{uid}"}}{grace}}}"#
    );
    let path = format!("/api/v1/namespaces/default/pods/{name}");
    let (code, body) = server.request("DELETE", &path, Some(options.as_bytes()), "application/json");
    assert!(matches!(code, 200 | 404 | 409), "{code} {body}");
    code
}

/// Plays the kubelet: the pod with `uid` has stopped, its deletion is finished.
fn finish(server: &Server, name: &str, uid: &str) {
    wait_until(&format!("{name} to be gone"), || {
        let here = pods(server)
            .get(name)
            .is_some_and(|p| p["metadata"]["uid"] == uid);
        !here || delete_pod(server, name, uid, Some(0)) != 409
    });
}

fn claim_uid(server: &Server, name: &str) -> String {
    get(server, &["pvc", name])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn messages(server: &Server) -> String {
    ok(server.kubectl(
        33,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=StatefulSet,involvedObject.name=web",
            "-o",
            "jsonpath={range .items[*]}{.message}{'\\n'}{end}",
        ],
    ))
}

const MANIFEST: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
   "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}},
  {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
   "spec": {"replicas": 3, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}]}"#;

#[test]
fn a_stateful_set_starts_in_order_keeps_identities_and_claims_and_rolls_out_above_its_partition() {
    // The node never renews a Lease: the node lifecycle controller is given longer than the test takes.
    let server = Server::start(&["--kube-controller-manager-arg", "node-monitor-grace-period=5m"]);
    add_node(&server, "n1", "8", "");
    kubectl_file(&server, "apply", "web.json", MANIFEST);

    // The API server's defaults, as Kubernetes'.
    let spec = &get(&server, &["statefulset", "web"])["spec"];
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        spec["updateStrategy"],
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        serde_json::json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );

    // web-0 first, with its identity and its claim.
    wait_until("web-0", || pods(&server).contains_key("web-0"));
    let web0 = &pods(&server)["web-0"];
    assert_eq!(web0["spec"]["hostname"], "web-0");
    assert_eq!(web0["spec"]["subdomain"], "web");
    let labels = &web0["metadata"]["labels"];
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    let first_revision = labels["controller-revision-hash"].as_str().unwrap().to_string();
    assert!(first_revision.starts_with("web-"), "{first_revision}");
    let owner = &web0["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "StatefulSet");
    assert_eq!(owner["name"], "web");
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    assert_eq!(
        web0["spec"]["volumes"][0],
        serde_json::json!({"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}})
    );
    let claim = get(&server, &["pvc", "data-web-0"]);
    assert_eq!(claim["metadata"]["labels"]["app"], "web");

    // OrderedReady: web-1 waits for web-0 to be Running and Ready.
    set_pod(&server, "default", "web-0", "10.42.0.10", false);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(live(&server), ["web-0"], "web-1 made before web-0 was ready");
    ready(&server, "web-0", 10);
    comes_up(&server, "web-1", "busybox:1", 11);
    comes_up(&server, "web-2", "busybox:1", 12);
    for claim in ["data-web-0", "data-web-1", "data-web-2"] {
        claim_uid(&server, claim);
    }
    let status = ok(server.kubectl(33, &["rollout", "status", "statefulset/web", "--timeout=20s"]));
    assert!(status.contains("roll out complete"), "{status}");
    wait_until("the status to count 3 ready", || {
        set_field(&server, ".status.readyReplicas") == "3"
            && set_field(&server, ".status.availableReplicas") == "3"
            && set_field(&server, ".status.currentRevision") == first_revision
            && set_field(&server, ".status.updateRevision") == first_revision
    });
    let events = messages(&server);
    assert!(
        events.contains("create Pod web-0 in StatefulSet web successful"),
        "{events}"
    );
    assert!(
        events.contains("create Claim data-web-0 Pod web-0 in StatefulSet web success"),
        "{events}"
    );

    // Scale down: the highest ordinal first, one at a time; claims are kept.
    let claim1 = claim_uid(&server, "data-web-1");
    let (web1, web2) = (uid_of(&server, "web-1"), uid_of(&server, "web-2"));
    ok(server.kubectl(33, &["scale", "statefulset/web", "--replicas=1"]));
    goes(&server, "web-2", &web2);
    goes(&server, "web-1", &web1);
    wait_until("only web-0", || pods(&server).keys().eq(["web-0"]));
    assert_eq!(claim_uid(&server, "data-web-1"), claim1, "the claim was kept");
    claim_uid(&server, "data-web-2");
    assert!(messages(&server).contains("delete Pod web-2 in StatefulSet web successful"));

    // Scale up again: the same names, the same claims.
    ok(server.kubectl(33, &["scale", "statefulset/web", "--replicas=3"]));
    comes_up(&server, "web-1", "busybox:1", 21);
    comes_up(&server, "web-2", "busybox:1", 22);
    assert_eq!(claim_uid(&server, "data-web-1"), claim1, "the claim was reused");

    // A deleted pod comes back under its name; so does a failed one.
    let before = uid_of(&server, "web-1");
    wait_until("web-1 deleted", || {
        delete_pod(&server, "web-1", &before, None) != 409
    });
    finish(&server, "web-1", &before);
    let again = comes_up(&server, "web-1", "busybox:1", 31);
    assert_ne!(before, again);
    patch_status(
        &server,
        "default",
        &["pod", "web-1"],
        r#"{"status": {"phase": "Failed"}}"#,
    );
    goes(&server, "web-1", &again);
    let third = comes_up(&server, "web-1", "busybox:1", 32);
    assert_ne!(again, third);

    // A rolling update above partition 1: web-2, then web-1, each once the one above it is ready; web-0 stays.
    ok(server.kubectl(
        33,
        &[
            "patch",
            "statefulset",
            "web",
            "-p",
            r#"{"spec": {"updateStrategy": {"rollingUpdate": {"partition": 1}}}}"#,
        ],
    ));
    let (web1, web2) = (uid_of(&server, "web-1"), uid_of(&server, "web-2"));
    ok(server.kubectl(33, &["set", "image", "statefulset/web", "c=busybox:2"]));
    goes(&server, "web-2", &web2);
    wait_until("web-2 on busybox:2", || {
        pods(&server)
            .get("web-2")
            .is_some_and(|p| image(p) == "busybox:2")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        live(&server),
        ["web-0", "web-1", "web-2"],
        "web-1 went before web-2 was ready"
    );
    ready(&server, "web-2", 42);
    goes(&server, "web-1", &web1);
    comes_up(&server, "web-1", "busybox:2", 41);
    let status = ok(server.kubectl(33, &["rollout", "status", "statefulset/web", "--timeout=20s"]));
    assert!(
        status.contains("partitioned roll out complete: 2 new pods"),
        "{status}"
    );
    let all = pods(&server);
    assert_eq!(image(&all["web-0"]), "busybox:1");
    assert_eq!(
        all["web-0"]["metadata"]["labels"]["controller-revision-hash"],
        first_revision.as_str()
    );
    let second_revision = set_field(&server, ".status.updateRevision");
    assert_ne!(second_revision, first_revision);
    assert_eq!(set_field(&server, ".status.currentRevision"), first_revision);
    assert_eq!(set_field(&server, ".status.updatedReplicas"), "2");
    let history = ok(server.kubectl(33, &["rollout", "history", "statefulset/web"]));
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo: the first template comes back, as its own revision renumbered 3, pods again from the highest.
    let (web1, web2) = (uid_of(&server, "web-1"), uid_of(&server, "web-2"));
    ok(server.kubectl(33, &["rollout", "undo", "statefulset/web"]));
    wait_until("the first template back", || {
        set_field(&server, ".spec.template.spec.containers[0].image") == "busybox:1"
    });
    goes(&server, "web-2", &web2);
    comes_up(&server, "web-2", "busybox:1", 52);
    goes(&server, "web-1", &web1);
    comes_up(&server, "web-1", "busybox:1", 51);
    wait_until("the first revision current again", || {
        set_field(&server, ".status.updateRevision") == first_revision
            && set_field(&server, ".status.currentRevision") == first_revision
            && set_field(&server, ".status.updatedReplicas") == "3"
    });
    let revisions = get(&server, &["controllerrevisions", "-l", "app=web"]);
    let mut numbers: Vec<(String, i64)> = revisions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metadata"]["name"].as_str().unwrap().to_string(),
                r["revision"].as_i64().unwrap(),
            )
        })
        .collect();
    numbers.sort();
    let mut expected = vec![(first_revision.clone(), 3), (second_revision, 2)];
    expected.sort();
    assert_eq!(numbers, expected);
    let history = ok(server.kubectl(33, &["rollout", "history", "statefulset/web"]));
    assert!(history.contains('3') && !history.contains("\n1 "), "{history}");
}

/// The claim's owner references as (kind, name) pairs.
fn claim_owners(server: &Server, name: &str) -> Vec<(String, String)> {
    let out = ok(server.kubectl(33, &["get", "pvc", name, "--ignore-not-found", "-o", "json"]));
    let claim: Value = serde_json::from_str(&out).unwrap_or_default();
    claim["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|r| r["controller"] == true)
        .map(|r| {
            let field = |f: &str| r[f].as_str().unwrap().to_string();
            (field("kind"), field("name"))
        })
        .collect()
}

/// Gone, or being deleted (a claim keeps its `pvc-protection` finalizer until no pod uses it).
fn deleted(server: &Server, kind_name: &[&str]) -> bool {
    let mut args = vec!["get", "--ignore-not-found", "-o", "json"];
    args.extend_from_slice(kind_name);
    let out = ok(server.kubectl(33, &args));
    out.trim().is_empty() || {
        let object: Value = serde_json::from_str(&out).unwrap();
        !object["metadata"]["deletionTimestamp"].is_null()
    }
}

#[test]
fn parallel_pods_start_together_and_claims_follow_the_retention_policy() {
    let server = Server::start(&["--kube-controller-manager-arg", "node-monitor-grace-period=5m"]);
    add_node(&server, "n1", "8", "");
    let manifest = r#"{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
       "spec": {"replicas": 2, "serviceName": "web", "podManagementPolicy": "Parallel",
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}"#;
    kubectl_file(&server, "apply", "web.json", manifest);
    // Parallel: both at once, neither ready.
    wait_until("web-0 and web-1", || live(&server) == ["web-0", "web-1"]);
    let set = || ("StatefulSet".to_string(), "web".to_string());
    // whenDeleted=Delete: the set owns the claims of the pods in range.
    wait_until("the claims owned by the set", || {
        claim_owners(&server, "data-web-0") == [set()] && claim_owners(&server, "data-web-1") == [set()]
    });

    // whenScaled=Delete: the condemned pod's claim passes to the pod, and goes with it.
    let web1 = uid_of(&server, "web-1");
    ok(server.kubectl(33, &["scale", "statefulset/web", "--replicas=1"]));
    // (Gone already, if the pod was deleted at once: only an owner gone makes the garbage collector take it.)
    wait_until("data-web-1 owned by web-1", || {
        deleted(&server, &["pvc", "data-web-1"])
            || claim_owners(&server, "data-web-1") == [("Pod".to_string(), "web-1".to_string())]
    });
    goes(&server, "web-1", &web1);
    wait_until("data-web-1 to go with its pod", || {
        deleted(&server, &["pvc", "data-web-1"])
    });
    assert_eq!(claim_owners(&server, "data-web-0"), [set()]);

    // Orphaned, then adopted by a new set of the same name: the same pod, no new one.
    let web0 = uid_of(&server, "web-0");
    ok(server.kubectl(33, &["delete", "statefulset", "web", "--cascade=orphan"]));
    wait_until("web-0 orphaned", || {
        pods(&server)["web-0"]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty())
    });
    let one = manifest.replace(r#""replicas": 2"#, r#""replicas": 1"#);
    kubectl_file(&server, "apply", "web.json", &one);
    let new_set = get(&server, &["statefulset", "web"])["metadata"]["uid"].clone();
    wait_until("web-0 adopted", || {
        pods(&server)["web-0"]["metadata"]["ownerReferences"][0]["uid"] == new_set
    });
    assert_eq!(uid_of(&server, "web-0"), web0);
    assert_eq!(live(&server), ["web-0"]);
    wait_until("the claim adopted too", || {
        claim_owners(&server, "data-web-0") == [set()]
    });

    // Deleting the set takes its pods and, whenDeleted=Delete, the claims it owns.
    ok(server.kubectl(33, &["delete", "statefulset", "web", "--wait=false"]));
    wait_until("web-0 and data-web-0 to go with the set", || {
        deleted(&server, &["pod", "web-0"]) && deleted(&server, &["pvc", "data-web-0"])
    });
}
