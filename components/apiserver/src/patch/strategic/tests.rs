//! Cases as Kubernetes' `strategicpatch` handles them, with the patches kubectl sends.

use serde_json::{Value, json};

use super::{StrategicPatchError, apply};

const POD: &str = "io.k8s.api.core.v1.Pod";
const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a", "b"]},
        "spec": {
            "containers": [
                {"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "args": ["-x", "-y"]},
                {"name": "sidecar", "image": "busybox"},
            ],
            "tolerations": [{"key": "k1", "operator": "Exists"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    })
}

fn patched(definition: &str, mut original: Value, patch: Value) -> Value {
    apply(definition, &mut original, patch).unwrap();
    original
}

#[test]
fn kubectl_apply_changes_one_container_and_keeps_the_rest() {
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}, "labels": {"tier": "web"}},
        "spec": {"$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}],
                 "containers": [{"image": "nginx:1.28", "name": "nginx"}]},
    });
    let out = patched(POD, pod(), patch);
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "tier": "web"}));
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{}"
    );
    let containers = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["image"], "nginx:1.28");
    assert_eq!(
        containers[0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}]),
        "untouched fields stay"
    );
    assert_eq!(containers[1], json!({"name": "sidecar", "image": "busybox"}));
    assert!(out["spec"].get("$setElementOrder/containers").is_none());
}

#[test]
fn nested_keyed_lists_merge_and_atomic_lists_are_replaced() {
    let patch = json!({"spec": {
        "containers": [{"name": "nginx", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                        "ports": [{"containerPort": 443, "protocol": "TCP"}], "args": ["-z"]}],
        "tolerations": [{"key": "k2", "operator": "Exists"}],
    }});
    let out = patched(POD, pod(), patch);
    let nginx = &out["spec"]["containers"][0];
    assert_eq!(
        nginx["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
    );
    assert_eq!(
        nginx["ports"].as_array().unwrap().len(),
        2,
        "ports merge by containerPort"
    );
    assert_eq!(
        nginx["args"],
        json!(["-z"]),
        "a list without a merge strategy is replaced"
    );
    assert_eq!(
        out["spec"]["tolerations"],
        json!([{"key": "k2", "operator": "Exists"}])
    );
}

#[test]
fn deleting_elements_keys_and_set_members() {
    let patch = json!({
        "metadata": {"labels": {"tier": null}, "$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]},
        "spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]},
    });
    let out = patched(POD, pod(), patch);
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["b", "c"]),
        "finalizers merge as a set"
    );
    let names: Vec<&str> = out["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nginx"]);
}

#[test]
fn retain_keys_switches_a_volume_source_and_a_deployment_strategy() {
    let patch = json!({"spec": {"volumes": [{"name": "data", "hostPath": {"path": "/srv"}, "$retainKeys": ["hostPath", "name"]}]}});
    let out = patched(POD, pod(), patch);
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "data", "hostPath": {"path": "/srv"}}])
    );

    let deployment = json!({"spec": {"replicas": 2, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let out = patched(DEPLOYMENT, deployment, patch);
    assert_eq!(
        out["spec"],
        json!({"replicas": 2, "strategy": {"type": "Recreate"}})
    );
}

#[test]
fn replace_directives_and_set_element_order() {
    let patch = json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}});
    assert_eq!(
        patched(POD, pod(), patch)["metadata"]["labels"],
        json!({"only": "this"})
    );

    let patch = json!({"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}});
    assert_eq!(
        patched(POD, pod(), patch)["spec"]["containers"],
        json!([{"name": "only", "image": "x"}])
    );

    let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "nginx"}]}});
    let out = patched(POD, pod(), patch);
    assert_eq!(out["spec"]["containers"][0]["name"], "sidecar");
    assert_eq!(out["spec"]["containers"][1]["name"], "nginx");
}

#[test]
fn rollout_restart_adds_a_template_annotation() {
    let deployment = json!({"spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-25T05:00:00Z"}}}}});
    let out = patched(DEPLOYMENT, deployment, patch);
    assert_eq!(
        out["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(
        out["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2026-11-25T05:00:00Z"
    );
    assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "i");
}

#[test]
fn bad_patches_are_errors() {
    let mut p = pod();
    assert_eq!(
        apply(POD, &mut p, json!([1])),
        Err(StrategicPatchError::NotAnObject)
    );
    assert!(matches!(
        apply(POD, &mut p, json!({"metadata": {"$patch": "explode"}})),
        Err(StrategicPatchError::UnknownDirective(_))
    ));
    assert!(matches!(
        apply(
            POD,
            &mut p,
            json!({"spec": {"containers": [{"image": "no-name"}]}})
        ),
        Err(StrategicPatchError::MissingMergeKey { .. })
    ));
    assert!(matches!(
        apply(POD, &mut p, json!({"spec": {"$setElementOrder/containers": "x"}})),
        Err(StrategicPatchError::NotAList(_))
    ));
}
