use serde_json::{Value, json};

use super::*;
use crate::patch::fields;

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

fn manager(name: &str) -> Manager {
    Manager {
        name: name.into(),
        api_version: "apps/v1".into(),
        subresource: None,
    }
}

fn deployment(replicas: i64, containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}})
}

fn owners(object: &Value) -> Vec<(String, String, Vec<String>)> {
    object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let set = fields::from_fields_v1(&e["fieldsV1"]);
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
                set.iter().map(fields::display).collect(),
            )
        })
        .collect()
}

fn owned_by(object: &Value, name: &str) -> Vec<String> {
    owners(object)
        .into_iter()
        .filter(|(m, _, _)| m == name)
        .flat_map(|(_, _, s)| s)
        .collect()
}

#[test]
fn an_apply_creates_and_owns_exactly_what_it_sent() {
    let applied = deployment(2, json!([{"name": "nginx", "image": "nginx:1"}]));
    let created = apply(DEPLOYMENT, None, &applied, &manager("kubectl"), false).unwrap();
    assert_eq!(created["spec"]["replicas"], 2);
    let fields = owned_by(&created, "kubectl");
    for want in [
        ".metadata.labels.app",
        ".spec.replicas",
        ".spec.template.spec.containers[name=\"nginx\"]",
        ".spec.template.spec.containers[name=\"nginx\"].image",
        ".spec.template.spec.containers[name=\"nginx\"].name",
    ] {
        assert!(fields.iter().any(|f| f == want), "{want} not in {fields:?}");
    }
    assert!(
        !fields
            .iter()
            .any(|f| f.starts_with(".metadata.name") || f.starts_with(".apiVersion")),
        "{fields:?}"
    );
    assert_eq!(owners(&created)[0].1, "Apply");
    // fieldsV1 is the tree form.
    let tree = &created["metadata"]["managedFields"][0]["fieldsV1"];
    assert!(
        tree["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]["."].is_object()
    );
}

#[test]
fn conflicts_with_other_managers_unless_forced() {
    let applied = deployment(2, json!([{"name": "nginx", "image": "nginx:1"}]));
    let mut live = apply(DEPLOYMENT, None, &applied, &manager("kubectl"), false).unwrap();
    // Someone scales it with an ordinary update.
    let old = live.clone();
    live["spec"]["replicas"] = json!(5);
    record_update(DEPLOYMENT, Some(&old), &mut live, &manager("kubectl-scale"));
    assert_eq!(owned_by(&live, "kubectl-scale"), [".spec.replicas"]);
    assert!(
        !owned_by(&live, "kubectl").contains(&".spec.replicas".to_string()),
        "an update takes the field"
    );

    // Re-applying replicas: 2 now conflicts with the scaler.
    let err = apply(DEPLOYMENT, Some(&live), &applied, &manager("kubectl"), false).unwrap_err();
    assert_eq!(
        err,
        ApplyError::Conflicts(vec![(
            "kubectl-scale".into(),
            "apps/v1".into(),
            ".spec.replicas".into()
        )])
    );
    // Agreeing with the current value is no conflict: the field is shared.
    let agreeing = deployment(5, json!([{"name": "nginx", "image": "nginx:1"}]));
    let shared = apply(DEPLOYMENT, Some(&live), &agreeing, &manager("kubectl"), false).unwrap();
    assert!(owned_by(&shared, "kubectl").contains(&".spec.replicas".to_string()));
    assert!(owned_by(&shared, "kubectl-scale").contains(&".spec.replicas".to_string()));
    // Forcing takes it.
    let forced = apply(DEPLOYMENT, Some(&live), &applied, &manager("kubectl"), true).unwrap();
    assert_eq!(forced["spec"]["replicas"], 2);
    assert!(owned_by(&forced, "kubectl-scale").is_empty());
}

#[test]
fn fields_no_longer_applied_are_removed_unless_someone_else_owns_them() {
    let mut first = deployment(
        2,
        json!([{"name": "nginx", "image": "nginx:1"}, {"name": "sidecar", "image": "busybox"}]),
    );
    first["metadata"]["labels"]["tier"] = json!("front");
    let mut live = apply(DEPLOYMENT, None, &first, &manager("helm"), false).unwrap();
    // Another manager adds its own container and annotation.
    let old = live.clone();
    live["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "injected", "image": "proxy"}));
    live["metadata"]["annotations"] = json!({"note": "x"});
    record_update(DEPLOYMENT, Some(&old), &mut live, &manager("injector"));

    // The next apply drops the sidecar and the tier label.
    let second = deployment(2, json!([{"name": "nginx", "image": "nginx:2"}]));
    let result = apply(DEPLOYMENT, Some(&live), &second, &manager("helm"), false).unwrap();
    let names: Vec<&str> = result["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["nginx", "injected"],
        "the sidecar goes; the injector's container stays"
    );
    assert_eq!(
        result["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    assert_eq!(result["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(result["metadata"]["annotations"], json!({"note": "x"}));
    assert!(
        owned_by(&result, "injector")
            .iter()
            .any(|f| f.contains("injected"))
    );
}

#[test]
fn updates_track_what_changed_and_clients_may_rewrite_managed_fields() {
    let mut created = deployment(1, json!([{"name": "a", "image": "x"}]));
    record_update(DEPLOYMENT, None, &mut created, &manager("kubectl-create"));
    assert!(owned_by(&created, "kubectl-create").contains(&".spec.replicas".to_string()));
    let old = created.clone();
    let mut edited = created.clone();
    edited["metadata"]["labels"]["new"] = json!("y");
    record_update(DEPLOYMENT, Some(&old), &mut edited, &manager("kubectl-edit"));
    assert_eq!(owned_by(&edited, "kubectl-edit"), [".metadata.labels.new"]);
    // Removing a field removes it from every owner.
    let old = edited.clone();
    edited["spec"].as_object_mut().unwrap().remove("replicas");
    record_update(DEPLOYMENT, Some(&old), &mut edited, &manager("kubectl-edit"));
    assert!(!owned_by(&edited, "kubectl-create").contains(&".spec.replicas".to_string()));
    // A client that sends its own managedFields keeps them.
    let old = edited.clone();
    edited["metadata"]["managedFields"] = json!([]);
    record_update(DEPLOYMENT, Some(&old), &mut edited, &manager("migrator"));
    assert_eq!(edited["metadata"]["managedFields"], json!([]));
    // An apply must not carry managedFields.
    let mut bad = deployment(1, json!([]));
    bad["metadata"]["managedFields"] = json!([{"manager": "x"}]);
    assert_eq!(
        apply(DEPLOYMENT, None, &bad, &manager("m"), false),
        Err(ApplyError::ManagedFieldsInBody)
    );
}

#[test]
fn atomic_maps_are_owned_and_replaced_whole_granular_ones_key_by_key() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "selector": {"type": "object", "x-kubernetes-map-type": "atomic", "additionalProperties": {"type": "string"}},
    }}}});
    crate::schema::types::set_custom_schemas(std::iter::once(("maptype.test", "v1", "Gadget", &schema)));
    let definition = crate::schema::types::custom_definition("maptype.test", "v1", "Gadget");
    let gadget = |spec: Value| json!({"apiVersion": "maptype.test/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": spec});
    let one = apply(
        &definition,
        None,
        &gadget(json!({"labels": {"a": "1"}, "selector": {"a": "1"}})),
        &manager("one"),
        false,
    )
    .unwrap();
    assert!(owned_by(&one, "one").contains(&".spec.selector".to_string()));
    assert!(owned_by(&one, "one").contains(&".spec.labels.a".to_string()));
    // A granular map takes a second manager's key beside the first's.
    let both = apply(
        &definition,
        Some(&one),
        &gadget(json!({"labels": {"b": "2"}})),
        &manager("two"),
        false,
    )
    .unwrap();
    assert_eq!(both["spec"]["labels"], json!({"a": "1", "b": "2"}));
    // An atomic one is a single field: another value conflicts, and forced, replaces it whole.
    let selector = gadget(json!({"labels": {"b": "2"}, "selector": {"b": "2"}}));
    match apply(&definition, Some(&both), &selector, &manager("two"), false) {
        Err(ApplyError::Conflicts(conflicts)) => {
            assert_eq!(conflicts.len(), 1, "{conflicts:?}");
            assert_eq!(
                (conflicts[0].0.as_str(), conflicts[0].2.as_str()),
                ("one", ".spec.selector")
            );
        }
        other => panic!("{other:?}"),
    }
    let forced = apply(&definition, Some(&both), &selector, &manager("two"), true).unwrap();
    assert_eq!(forced["spec"]["selector"], json!({"b": "2"}));
    assert!(!owned_by(&forced, "one").contains(&".spec.selector".to_string()));
    assert!(owned_by(&forced, "two").contains(&".spec.selector".to_string()));
    crate::schema::types::set_custom_schemas(std::iter::empty());
}
