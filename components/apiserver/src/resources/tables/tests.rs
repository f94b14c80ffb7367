use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};

use super::*;
use crate::resources::registry::{RESOURCES, find};

fn pod(status: Value) -> Value {
    json!({"metadata": {"name": "p", "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z", "labels": {"a": "b"}},
           "spec": {"containers": [{"name": "c"}], "nodeName": "n1"}, "status": status})
}

fn status_of(p: Value) -> (String, String, String) {
    let t = table(find("", "v1", "pods").unwrap(), "v1", &[p], json!({}), None);
    let cells = &t["rows"][0]["cells"];
    (
        cells[1].as_str().unwrap().into(),
        cells[2].as_str().unwrap().into(),
        cells[3].as_str().unwrap().into(),
    )
}

#[test]
fn human_durations_as_kubernetes_prints_them() {
    for (seconds, want) in [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (185, "3m5s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (20 * 3600, "20h"),
        (50 * 3600, "2d2h"),
        (100 * 86400, "100d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ] {
        assert_eq!(human_duration(seconds), want, "{seconds}");
    }
}

#[test]
fn pod_status_column_follows_kubectl() {
    let running = json!({"phase": "Running", "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2, "state": {"running": {}}}]});
    assert_eq!(
        status_of(pod(running)),
        ("1/1".into(), "Running".into(), "2".into())
    );
    let creating = json!({"phase": "Pending", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]});
    assert_eq!(status_of(pod(creating)).1, "ContainerCreating");
    let crashing = json!({"phase": "Running", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]});
    assert_eq!(
        status_of(pod(crashing)),
        ("0/1".into(), "CrashLoopBackOff".into(), "5".into())
    );
    let completed = json!({"phase": "Succeeded", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]});
    assert_eq!(status_of(pod(completed)).1, "Completed");
    let killed = json!({"phase": "Failed", "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]});
    assert_eq!(status_of(pod(killed)).1, "Signal:9");
    let mut init = pod(
        json!({"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
    );
    init["spec"]["initContainers"] = json!([{"name": "i"}]);
    assert_eq!(status_of(init.clone()).1, "Init:0/1");
    init["status"]["initContainerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 1, "reason": "Error"}});
    assert_eq!(status_of(init).1, "Init:Error");
    let mut deleting = pod(json!({"phase": "Running"}));
    deleting["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
    assert_eq!(status_of(deleting).1, "Terminating");
    assert_eq!(status_of(pod(json!({"phase": "Pending"}))).1, "Pending");
}

#[test]
fn rows_carry_metadata_and_every_kind_has_as_many_cells_as_columns() {
    let t = table(
        find("", "v1", "pods").unwrap(),
        "v1",
        &[pod(json!({"phase": "Running"}))],
        json!({"resourceVersion": "5"}),
        None,
    );
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["metadata"]["resourceVersion"], "5");
    let object = &t["rows"][0]["object"];
    assert_eq!(object["kind"], "PartialObjectMetadata");
    assert_eq!(object["metadata"]["labels"]["a"], "b");
    assert_eq!(t["rows"][0]["cells"][6], "n1", "wide cells are always there");
    let none = table(
        find("", "v1", "pods").unwrap(),
        "v1",
        &[pod(json!({}))],
        json!({}),
        Some("None"),
    );
    assert!(none["rows"][0].get("object").is_none());
    for r in RESOURCES {
        let t = table(r, "v1", &[json!({"metadata": {"name": "x"}})], json!({}), None);
        assert_eq!(
            t["columnDefinitions"].as_array().unwrap().len(),
            t["rows"][0]["cells"].as_array().unwrap().len(),
            "{}",
            r.kind
        );
    }
}

#[test]
fn services_and_deployments() {
    let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.10",
        "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}});
    let t = table(find("", "v1", "services").unwrap(), "v1", &[svc], json!({}), None);
    assert_eq!(
        t["rows"][0]["cells"],
        json!([
            "s",
            "NodePort",
            "10.43.0.10",
            "<none>",
            "80:30080/TCP,53/UDP",
            t["rows"][0]["cells"][5],
            "app=web"
        ])
    );
    let lb = json!({"metadata": {"name": "l"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.11", "ports": [{"port": 443}]}});
    let t = table(find("", "v1", "services").unwrap(), "v1", &[lb], json!({}), None);
    assert_eq!(t["rows"][0]["cells"][3], "<pending>");
    let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "busybox"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    let t = table(
        find("apps", "v1", "deployments").unwrap(),
        "v1",
        &[d],
        json!({}),
        None,
    );
    let cells = &t["rows"][0]["cells"];
    assert_eq!(
        (&cells[1], &cells[2], &cells[3]),
        (&json!("2/3"), &json!(3), &json!(2))
    );
    assert_eq!(
        (&cells[5], &cells[6], &cells[7]),
        (&json!("a,b"), &json!("nginx,busybox"), &json!("app=web"))
    );
}

#[test]
fn the_accept_header_decides() {
    let headers = |accept: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        h
    };
    let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    assert_eq!(requested_version(&headers(kubectl)), Some("v1"));
    assert_eq!(
        requested_version(&headers("application/json;as=Table;v=v1beta1;g=meta.k8s.io")),
        Some("v1beta1")
    );
    assert_eq!(requested_version(&headers("application/json")), None);
    assert_eq!(
        requested_version(&headers(
            "application/json, application/json;as=Table;v=v1;g=meta.k8s.io"
        )),
        None
    );
    assert_eq!(requested_version(&HeaderMap::new()), None);
}
