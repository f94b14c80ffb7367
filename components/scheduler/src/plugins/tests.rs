use super::*;
use serde_json::json;

fn node(name: &str, extra: serde_json::Value) -> Node {
    let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}});
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            if k == "labels" {
                for (lk, lv) in v.as_object().unwrap() {
                    n["metadata"]["labels"][lk] = lv.clone();
                }
            } else {
                n[k] = v;
            }
        }
    }
    serde_json::from_value(n).unwrap()
}

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
    }
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d", "uid": name, "labels": {"app": name}}, "spec": spec})).unwrap()
}

fn reasons(p: &Pod, nodes: &[Node], placed: &[(&str, &Pod)]) -> Vec<Vec<String>> {
    let infos: Vec<NodeInfo> = nodes
        .iter()
        .map(|n| {
            NodeInfo::new(
                n,
                placed
                    .iter()
                    .filter(|(at, _)| Some(*at) == n.metadata.name.as_deref())
                    .map(|(_, p)| *p)
                    .collect(),
            )
        })
        .collect();
    infos.iter().map(|i| filter(p, i, &infos)).collect()
}

#[test]
fn filters_say_what_kube_scheduler_says() {
    let nodes = [
        node(
            "small",
            json!({"status": {"allocatable": {"cpu": "500m", "memory": "1Gi", "pods": "110"}}}),
        ),
        node(
            "tainted",
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
        ),
        node("cordoned", json!({"spec": {"unschedulable": true}})),
        node("ssd", json!({"labels": {"disk": "ssd"}})),
    ];
    let big = pod(
        "big",
        json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}),
    );
    let r = reasons(&big, &nodes, &[]);
    assert_eq!(r[0], ["Insufficient cpu"]);
    assert_eq!(r[1], ["node(s) had untolerated taint {dedicated: db}"]);
    assert_eq!(r[2], ["node(s) were unschedulable"]);
    assert!(r[3].is_empty());
    // The node lifecycle controller's taint for the cordon does not count twice.
    let tainted_cordon = [node(
        "cordoned",
        json!({"spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
    )];
    assert_eq!(
        reasons(&big, &tainted_cordon, &[])[0],
        ["node(s) were unschedulable"]
    );
    let tolerant = pod(
        "t",
        json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}], "nodeSelector": {"disk": "ssd"}}),
    );
    let r = reasons(&tolerant, &nodes, &[]);
    assert_eq!(r[1], ["node(s) didn't match Pod's node affinity/selector"]);
    assert!(r[3].is_empty());
    let affine = pod(
        "a",
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}}),
    );
    assert!(reasons(&affine, &nodes, &[])[3].is_empty());
    assert_eq!(
        reasons(&affine, &nodes, &[])[0],
        ["node(s) didn't match Pod's node affinity/selector"]
    );
}

#[test]
fn host_ports_and_anti_affinity_keep_pods_apart() {
    let nodes = [node("a", json!({})), node("b", json!({}))];
    let web1 = pod(
        "web1",
        json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
    );
    let web2 = pod(
        "web2",
        json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
    );
    let r = reasons(&web2, &nodes, &[("a", &web1)]);
    assert_eq!(
        r[0],
        ["node(s) didn't have free ports for the requested pod ports"]
    );
    assert!(r[1].is_empty());
    let anti = |name: &str| {
        let mut p = pod(
            name,
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"group": "g"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        );
        p.metadata.labels = Some([("group".to_string(), "g".to_string())].into());
        p
    };
    let (one, two) = (anti("one"), anti("two"));
    let r = reasons(&two, &nodes, &[("a", &one)]);
    assert_eq!(r[0], ["node(s) didn't match pod anti-affinity rules"]);
    assert!(r[1].is_empty());
}

#[test]
fn the_message_counts_reasons_in_kubernetes_order() {
    let mut reasons = BTreeMap::new();
    reasons.insert(
        "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }".to_string(),
        2,
    );
    reasons.insert("Insufficient cpu".to_string(), 1);
    assert_eq!(
        unschedulable_message(3, &reasons),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    assert_eq!(
        unschedulable_message(0, &BTreeMap::new()),
        "no nodes available to schedule pods"
    );
}

#[test]
fn scores_prefer_emptier_nodes_and_spread_siblings() {
    let nodes = [node("a", json!({})), node("b", json!({}))];
    let busy = pod(
        "busy",
        json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m", "memory": "3Gi"}}}]}),
    );
    let new = pod("new", json!({}));
    let infos = [
        NodeInfo::new(&nodes[0], vec![&busy]),
        NodeInfo::new(&nodes[1], vec![]),
    ];
    assert!(score(&new, &infos[1], &infos) > score(&new, &infos[0], &infos));
}
