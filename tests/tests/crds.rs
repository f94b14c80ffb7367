//! CustomResourceDefinitions end to end: the real bonsai binary, the real kubectl 1.27 and 1.33, a kube-rs
//! operator, and the real helm v4 installing a chart that brings its own CRD.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use bonsai_e2e::{Server, fails, ok, text, wait_for};
use serde_json::{Value, json};

fn widget_schema() -> Value {
    json!({"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "required": ["size"],
          "x-kubernetes-validations": [{"rule": "self.size != 'small' || self.replicas <= 5", "message": "small widgets have at most 5 replicas"}],
          "properties": {
            "size": {"type": "string", "enum": ["small", "large"]},
            "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
            "colour": {"type": "string", "default": "green", "maxLength": 10},
            "port": {"x-kubernetes-int-or-string": true},
            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "selector": {"type": "object", "x-kubernetes-map-type": "atomic", "additionalProperties": {"type": "string"}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
        }},
        "status": {"type": "object", "properties": {
            "replicas": {"type": "integer"}, "selector": {"type": "string"}, "phase": {"type": "string"},
        }},
    }}})
}

/// `widgets.example.com`: v1 (stored; status and scale subresources; printer columns), v1beta1 (served,
/// deprecated) and v1alpha1 (not served).
fn widget_crd() -> Value {
    let columns = json!([
        {"name": "Size", "type": "string", "jsonPath": ".spec.size"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Colour", "type": "string", "jsonPath": ".spec.colour", "priority": 1},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]);
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["toys"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": widget_schema(),
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                 "additionalPrinterColumns": columns, "selectableFields": [{"jsonPath": ".spec.size"}]},
                {"name": "v1beta1", "served": true, "storage": false, "deprecated": true,
                 "deprecationWarning": "example.com/v1beta1 Widget is deprecated; use example.com/v1", "schema": widget_schema()},
                {"name": "v1alpha1", "served": false, "storage": false, "schema": widget_schema()},
            ],
        },
    })
}

fn widget(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})
}

fn apply(server: &Server, minor: u32, object: &Value, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    server.kubectl_stdin(minor, &args, &object.to_string())
}

fn get_json(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(server.kubectl(33, &all))).unwrap()
}

/// Sets (or, with `null`, clears) a widget's finalizers.
fn set_finalizers(server: &Server, name: &str, finalizers: &str) {
    let patch = format!(r#"{{"metadata":{{"finalizers":{finalizers}}}}}"#);
    ok(server.kubectl(33, &["patch", "widget", name, "--type=merge", "-p", &patch]));
}

fn install_crd(server: &Server, crd: &Value) {
    ok(apply(server, 33, crd, &[]));
    let name = crd["metadata"]["name"].as_str().unwrap();
    ok(server.kubectl(
        33,
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout=30s",
            &format!("crd/{name}"),
        ],
    ));
}

#[test]
fn a_crd_is_validated_established_and_listed_in_discovery() {
    let server = Server::start(&[]);
    // A CRD that breaks the rules is refused with a cause per field.
    let mut bad = widget_crd();
    bad["metadata"]["name"] = json!("widgets");
    bad["spec"]["versions"][1]["storage"] = json!(true);
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["list"] =
        json!({"type": "array"});
    let refused = fails(apply(&server, 33, &bad, &[]));
    assert!(
        refused.contains(
            "metadata.name: Invalid value: \"widgets\": must be spec.names.plural+\".\"+spec.group"
        ),
        "{refused}"
    );
    assert!(refused.contains("spec.versions: Invalid value"), "{refused}");
    assert!(
        refused.contains("must have exactly one version marked as storage version"),
        "{refused}"
    );
    assert!(refused.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[list].items: Required value: must be specified"), "{refused}");

    install_crd(&server, &widget_crd());
    let crd = get_json(&server, &["crd", "widgets.example.com"]);
    let conditions = crd["status"]["conditions"].as_array().unwrap();
    for kind in ["NamesAccepted", "Established"] {
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == kind && c["status"] == "True"),
            "{conditions:?}"
        );
    }
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");

    for minor in [27, 33] {
        let resources = ok(server.kubectl(minor, &["api-resources", "--api-group=example.com"]));
        let line = resources
            .lines()
            .find(|l| l.starts_with("widgets"))
            .unwrap_or_else(|| panic!("{resources}"));
        assert!(
            line.contains("wd")
                && line.contains("example.com/v1")
                && line.contains("true")
                && line.contains("Widget"),
            "{line}"
        );
        let versions = ok(server.kubectl(minor, &["api-versions"]));
        assert!(
            versions.contains("example.com/v1\n") && versions.contains("example.com/v1beta1"),
            "{versions}"
        );
        assert!(!versions.contains("example.com/v1alpha1"), "{versions}");
    }
    // Legacy discovery: the group lists its served versions, v1 preferred; the unserved version is not there.
    let (code, group) = server.request("GET", "/apis/example.com", None, "application/json");
    assert_eq!(code, 200, "{group}");
    let group: Value = serde_json::from_str(&group).unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v1");
    assert_eq!(group["versions"].as_array().unwrap().len(), 2);
    let (code, list) = server.request("GET", "/apis/example.com/v1", None, "application/json");
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["widgets", "widgets/scale", "widgets/status"]);
    let (code, _) = server.request(
        "GET",
        "/apis/example.com/v1alpha1/namespaces/default/widgets",
        None,
        "application/json",
    );
    assert_eq!(code, 404);
    // A second CRD whose names collide with the first one's is not accepted.
    let mut rival = widget_crd();
    rival["metadata"]["name"] = json!("gadgets.example.com");
    rival["spec"]["names"] = json!({"plural": "gadgets", "kind": "Gadget", "shortNames": ["wd"]});
    ok(apply(&server, 33, &rival, &[]));
    wait_for(30, "the rival CRD's NamesAccepted=False", || {
        let rival = get_json(&server, &["crd", "gadgets.example.com"]);
        rival["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "NamesAccepted" && c["status"] == "False")
        })
    });
}

#[test]
fn custom_resources_are_validated_pruned_defaulted_and_printed() {
    let server = Server::start(&[]);
    install_crd(&server, &widget_crd());
    for minor in [27, 33] {
        let name = format!("w{minor}");
        // The schema's types, enums and bounds, with Kubernetes' causes.
        let bad = widget(&name, json!({"size": "medium", "replicas": "three"}));
        let refused = fails(apply(&server, minor, &bad, &[]));
        assert!(refused.contains("spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""), "{refused}");
        assert!(
            refused
                .contains("spec.size: Unsupported value: \"medium\": supported values: \"small\", \"large\""),
            "{refused}"
        );
        let refused = fails(apply(
            &server,
            minor,
            &widget(&name, json!({"replicas": 11})),
            &[],
        ));
        assert!(refused.contains("spec.size: Required value"), "{refused}");
        assert!(
            refused.contains(
                "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"
            ),
            "{refused}"
        );

        // Unknown fields: refused with --validate=strict, pruned otherwise; defaults are filled in.
        let unknown = widget(
            &name,
            json!({"size": "small", "bogus": 1, "port": "http", "extra": {"kept": {"deep": true}}}),
        );
        let refused = fails(apply(&server, minor, &unknown, &["--validate=strict"]));
        assert!(refused.contains("unknown field \"spec.bogus\""), "{refused}");
        ok(apply(&server, minor, &unknown, &["--validate=false"]));
        let stored = get_json(&server, &["widget", &name]);
        assert_eq!(
            stored["spec"],
            json!({"size": "small", "replicas": 1, "colour": "green", "port": "http", "extra": {"kept": {"deep": true}}})
        );
        assert_eq!(stored["metadata"]["generation"], 1);

        // Printer columns, `-o wide` adding the priority ones; short names and categories.
        let table = ok(server.kubectl(minor, &["get", "widgets"]));
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "SIZE", "REPLICAS", "PHASE", "AGE"], "{table}");
        let row = table.lines().find(|l| l.starts_with(&name)).unwrap();
        assert!(
            row.split_whitespace().take(3).eq([name.as_str(), "small", "1"]),
            "{table}"
        );
        let wide = ok(server.kubectl(minor, &["get", "wd", "-o", "wide"]));
        let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "SIZE", "REPLICAS", "COLOUR", "PHASE", "AGE"],
            "{wide}"
        );
        assert!(ok(server.kubectl(minor, &["get", "toys"])).contains(&name));
    }
    // Label and field selectors.
    ok(server.kubectl(33, &["label", "widget", "w33", "tier=gold"]));
    assert_eq!(
        ok(server.kubectl(33, &["get", "widgets", "-l", "tier=gold", "-o", "name"])).trim(),
        "widget.example.com/w33"
    );
    assert_eq!(
        ok(server.kubectl(
            33,
            &[
                "get",
                "widgets",
                "--field-selector",
                "metadata.name=w27",
                "-o",
                "name"
            ]
        ))
        .trim(),
        "widget.example.com/w27"
    );
    // The CRD's selectableFields.
    let small = ok(server.kubectl(
        33,
        &[
            "get",
            "widgets",
            "--field-selector",
            "spec.size=small",
            "-o",
            "name",
        ],
    ));
    assert_eq!(small.lines().count(), 2, "{small}");
    let refused = fails(server.kubectl(33, &["get", "widgets", "--field-selector", "spec.colour=green"]));
    assert!(
        refused.contains("field label not supported: spec.colour"),
        "{refused}"
    );
    // Merge and JSON patches; strategic merge patches are refused as Kubernetes refuses them for custom resources.
    ok(server.kubectl(
        33,
        &[
            "patch",
            "widget",
            "w33",
            "--type=merge",
            "-p",
            r#"{"spec":{"size":"large"}}"#,
        ],
    ));
    ok(server.kubectl(
        33,
        &[
            "patch",
            "widget",
            "w33",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/colour","value":"blue"}]"#,
        ],
    ));
    let patched = get_json(&server, &["widget", "w33"]);
    assert_eq!(
        (
            patched["spec"]["size"].as_str(),
            patched["spec"]["colour"].as_str()
        ),
        (Some("large"), Some("blue"))
    );
    assert_eq!(patched["metadata"]["generation"], 3);
    let refused = fails(server.kubectl(
        33,
        &[
            "patch",
            "widget",
            "w33",
            "--type=strategic",
            "-p",
            r#"{"spec":{"size":"small"}}"#,
        ],
    ));
    assert!(
        refused.contains("415")
            || refused.contains("unknown format")
            || refused.contains("strategic merge patch is not supported"),
        "{refused}"
    );
    let (code, body) = server.request(
        "PATCH",
        "/apis/example.com/v1/namespaces/default/widgets/w33",
        Some(br#"{"spec":{"size":"small"}}"#),
        "application/strategic-merge-patch+json",
    );
    assert_eq!(code, 415, "{body}");
    // The schema's CEL rule.
    let refused = fails(apply(
        &server,
        33,
        &widget("cel", json!({"size": "small", "replicas": 6})),
        &[],
    ));
    assert!(
        refused.contains("spec: Invalid value: \"object\": small widgets have at most 5 replicas"),
        "{refused}"
    );
    ok(apply(
        &server,
        33,
        &widget("cel", json!({"size": "large", "replicas": 6})),
        &[],
    ));
    // Server-side apply by two managers merges a `map` list element by element (its CRD's list type and keys).
    let ports = |name: &str, port: i64| {
        widget(
            "ports",
            json!({"size": "large", "ports": [{"name": name, "port": port}]}),
        )
    };
    ok(apply(
        &server,
        33,
        &ports("http", 80),
        &["--server-side", "--field-manager=one"],
    ));
    ok(apply(
        &server,
        33,
        &ports("https", 443),
        &["--server-side", "--field-manager=two"],
    ));
    assert_eq!(
        get_json(&server, &["widget", "ports"])["spec"]["ports"],
        json!([{"name": "http", "port": 80}, {"name": "https", "port": 443}])
    );
    let conflict = fails(apply(
        &server,
        33,
        &ports("http", 8080),
        &["--server-side", "--field-manager=two"],
    ));
    assert!(
        conflict.contains("conflict with \"one\"") && conflict.contains(".spec.ports[name=\"http\"].port"),
        "{conflict}"
    );
    // An atomic map (`x-kubernetes-map-type: atomic`) is one field: another manager's value conflicts, and
    // forced, replaces it whole rather than merging keys.
    let selector = |key: &str| widget("selector", json!({"size": "large", "selector": {key: "yes"}}));
    ok(apply(
        &server,
        33,
        &selector("a"),
        &["--server-side", "--field-manager=one"],
    ));
    let conflict = fails(apply(
        &server,
        33,
        &selector("b"),
        &["--server-side", "--field-manager=two"],
    ));
    assert!(
        conflict.contains("conflict with \"one\"") && conflict.contains(".spec.selector"),
        "{conflict}"
    );
    ok(apply(
        &server,
        33,
        &selector("b"),
        &["--server-side", "--field-manager=two", "--force-conflicts"],
    ));
    assert_eq!(
        get_json(&server, &["widget", "selector"])["spec"]["selector"],
        json!({"b": "yes"})
    );
    // Server-side apply of a custom resource, and the JSON patch that breaks the schema is a 422.
    let applied = ok(apply(
        &server,
        33,
        &widget("ssa", json!({"size": "small", "replicas": 2})),
        &["--server-side"],
    ));
    assert!(applied.contains("serverside-applied"), "{applied}");
    assert_eq!(get_json(&server, &["widget", "ssa"])["spec"]["replicas"], 2);
    let refused = fails(server.kubectl(
        33,
        &[
            "patch",
            "widget",
            "ssa",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":-1}]"#,
        ],
    ));
    assert!(
        refused.contains("spec.replicas in body should be greater than or equal to 0"),
        "{refused}"
    );
    // kubectl explain reads the CRD's schema from the OpenAPI v3 document (1.33) or the v2 one (1.27).
    for minor in [27, 33] {
        let explained = ok(server.kubectl(minor, &["explain", "widgets.spec"]));
        assert!(
            explained.contains("replicas") && explained.contains("colour") && explained.contains("<integer>"),
            "1.{minor}: {explained}"
        );
    }
    // Deleting one object, then the collection.
    ok(server.kubectl(33, &["delete", "widget", "w27"]));
    ok(server.kubectl(33, &["delete", "widgets", "--all"]));
    assert_eq!(
        ok(server.kubectl(33, &["get", "widgets", "-o", "name"])).trim(),
        ""
    );
}

#[test]
fn status_and_scale_subresources_and_versions() {
    let server = Server::start(&[]);
    install_crd(&server, &widget_crd());
    ok(apply(
        &server,
        33,
        &widget("w", json!({"size": "small", "replicas": 2})),
        &[],
    ));
    // Status writes change only the status, and do not count a generation; spec writes leave the status.
    ok(server.kubectl(
        33,
        &[
            "patch",
            "widget",
            "w",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Ready","replicas":2,"selector":"app=w"},"spec":{"size":"large"}}"#,
        ],
    ));
    let w = get_json(&server, &["widget", "w"]);
    assert_eq!(
        (w["status"]["phase"].as_str(), w["spec"]["size"].as_str()),
        (Some("Ready"), Some("small"))
    );
    assert_eq!(w["metadata"]["generation"], 1);
    ok(server.kubectl(
        33,
        &[
            "patch",
            "widget",
            "w",
            "--type=merge",
            "-p",
            r#"{"spec":{"size":"large"},"status":{"phase":"Gone"}}"#,
        ],
    ));
    let w = get_json(&server, &["widget", "w"]);
    assert_eq!(
        (w["status"]["phase"].as_str(), w["spec"]["size"].as_str()),
        (Some("Ready"), Some("large"))
    );
    assert_eq!(w["metadata"]["generation"], 2);
    assert!(ok(server.kubectl(33, &["get", "widgets"])).contains("Ready"));

    // /scale maps the CRD's replica and selector paths; `kubectl scale` writes spec.replicas.
    for minor in [27, 33] {
        let replicas = format!("--replicas={}", minor % 10);
        ok(server.kubectl(minor, &["scale", "widget", "w", &replicas]));
        assert_eq!(
            get_json(&server, &["widget", "w"])["spec"]["replicas"],
            minor % 10
        );
    }
    let (code, scale) = server.request(
        "GET",
        "/apis/example.com/v1/namespaces/default/widgets/w/scale",
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{scale}");
    let scale: Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"], json!({"replicas": 2, "selector": "app=w"}));
    let refused = fails(server.kubectl(33, &["scale", "widget", "w", "--replicas=11"]));
    assert!(
        refused.contains("should be less than or equal to 10"),
        "{refused}"
    );

    // The same object read through the deprecated v1beta1 (with its warning); objects written there are stored
    // in v1 and read back in either version.
    let out = server.kubectl(33, &["get", "widgets.v1beta1.example.com", "w", "-o", "json"]);
    let warned = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        warned.contains("example.com/v1beta1 Widget is deprecated; use example.com/v1"),
        "{warned}"
    );
    let old: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(old["apiVersion"], "example.com/v1beta1");
    assert_eq!(old["spec"]["size"], "large");
    let mut beta = widget("b", json!({"size": "small"}));
    beta["apiVersion"] = json!("example.com/v1beta1");
    ok(apply(&server, 33, &beta, &[]));
    let b = get_json(&server, &["widgets.v1.example.com", "b"]);
    assert_eq!(b["apiVersion"], "example.com/v1");
    assert_eq!(b["spec"]["replicas"], 1);
    let (code, raw) = server.request(
        "GET",
        "/apis/example.com/v1beta1/namespaces/default/widgets/b",
        None,
        "application/json",
    );
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&raw).unwrap()["apiVersion"],
        "example.com/v1beta1"
    );
}

#[test]
fn watches_see_custom_resources_and_deleting_the_crd_removes_them() {
    let server = Server::start(&[]);
    install_crd(&server, &widget_crd());
    ok(apply(
        &server,
        33,
        &widget("first", json!({"size": "small"})),
        &[],
    ));
    // `kubectl get -w` (server-side Table rows) while objects come and go.
    let mut watch = server
        .kubectl_command(33)
        .args([
            "get",
            "widgets",
            "-w",
            "--output-watch-events",
            "--request-timeout=20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    ok(apply(
        &server,
        33,
        &widget("second", json!({"size": "large", "replicas": 4})),
        &[],
    ));
    ok(server.kubectl(33, &["delete", "widget", "first"]));
    std::thread::sleep(Duration::from_secs(2));
    let _ = watch.kill();
    let mut seen = String::new();
    watch.stdout.take().unwrap().read_to_string(&mut seen).unwrap();
    let _ = watch.wait();
    let events: Vec<Vec<&str>> = seen.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(events.iter().any(|e| e[..2] == ["ADDED", "first"]), "{seen}");
    assert!(
        events.iter().any(|e| e[..4] == ["ADDED", "second", "large", "4"]),
        "{seen}"
    );
    assert!(events.iter().any(|e| e[..2] == ["DELETED", "first"]), "{seen}");

    // Deleting the CRD deletes its objects (the cleanup finalizer holds it until they are gone; an object
    // with a finalizer of its own holds it longer), then the resources leave discovery.
    set_finalizers(&server, "second", r#"["example.com/hold"]"#);
    ok(server.kubectl(33, &["delete", "crd", "widgets.example.com", "--wait=false"]));
    wait_for(30, "the CRD to be Terminating and its held object marked", || {
        let crd = get_json(&server, &["crd", "widgets.example.com"]);
        let terminating = crd["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Terminating" && c["status"] == "True")
        });
        let second = get_json(&server, &["widget", "second"]);
        terminating && second["metadata"]["deletionTimestamp"].is_string()
    });
    let refused = fails(apply(
        &server,
        33,
        &widget("third", json!({"size": "small"})),
        &[],
    ));
    assert!(refused.contains("terminating"), "{refused}");
    set_finalizers(&server, "second", r#"null"#);
    wait_for(30, "the CRD to go", || {
        !server
            .kubectl(33, &["get", "crd", "widgets.example.com"])
            .status
            .success()
    });
    let gone = fails(server.kubectl(33, &["get", "widgets"]));
    // (kubectl names the resource from its discovery cache, or finds it no longer there.)
    assert!(
        gone.contains("the server could not find the requested resource")
            || gone.contains("the server doesn't have a resource type \"widgets\""),
        "{gone}"
    );
    let (code, _) = server.request("GET", "/apis/example.com/v1", None, "application/json");
    assert_eq!(code, 404);
    let (_, index) = server.request("GET", "/openapi/v3", None, "application/json");
    assert!(!index.contains("apis/example.com/v1"), "{index}");
    // Made again, the CRD starts empty: nothing of the old objects is left in the store.
    install_crd(&server, &widget_crd());
    assert_eq!(
        ok(server.kubectl(33, &["get", "widgets", "-A", "-o", "name"])).trim(),
        "",
        "{}",
        text(&server.kubectl(33, &["get", "widgets", "-A"]))
    );
}

/// What the operator's reconciler needs.
struct Operator {
    client: kube::Client,
    widgets: kube::api::ApiResource,
}

#[derive(Debug)]
struct ReconcileError(String);

impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReconcileError {}

/// The operator's reconcile: one ConfigMap per Widget (owned by it, server-side applied), then the Widget's status.
async fn reconcile(
    widget: std::sync::Arc<kube::api::DynamicObject>,
    ctx: std::sync::Arc<Operator>,
) -> Result<kube::runtime::controller::Action, ReconcileError> {
    use kube::api::{Api, Patch, PatchParams};
    use kube::{Resource, ResourceExt};
    let fail = |e: kube::Error| ReconcileError(e.to_string());
    let namespace = widget.namespace().unwrap_or_default();
    let name = widget.name_any();
    let size = widget.data["spec"]["size"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let owner = widget.controller_owner_ref(&ctx.widgets).unwrap();
    let configmap = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-config"), "ownerReferences": [owner]},
        "data": {"size": size},
    });
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(ctx.client.clone(), &namespace);
    configmaps
        .patch(
            &format!("{name}-config"),
            &PatchParams::apply("widget-operator").force(),
            &Patch::Apply(&configmap),
        )
        .await
        .map_err(fail)?;
    let widgets: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.widgets);
    let status = json!({"status": {"phase": "Configured", "replicas": widget.data["spec"]["replicas"]}});
    widgets
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(fail)?;
    Ok(kube::runtime::controller::Action::await_change())
}

#[test]
fn an_operator_written_with_kube_rs_reconciles_widgets() {
    use futures_util::StreamExt;
    use kube::api::{Api, DynamicObject, PostParams};
    let server = Server::start(&[]);
    install_crd(&server, &widget_crd());
    server.with_client(|client| async move {
        let gvk = kube::api::GroupVersionKind::gvk("example.com", "v1", "Widget");
        let (widgets, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &widgets);
        let operator = std::sync::Arc::new(Operator {
            client: client.clone(),
            widgets: widgets.clone(),
        });
        let controller = kube::runtime::Controller::new_with(
            api.clone(),
            kube::runtime::watcher::Config::default(),
            widgets.clone(),
        )
        .run(
            reconcile,
            |_, _, _| kube::runtime::controller::Action::requeue(Duration::from_secs(1)),
            operator,
        )
        .for_each(|_| async {});
        tokio::spawn(controller);

        let mut object = DynamicObject::new("op", &widgets).within("default");
        object.data = json!({"spec": {"size": "large", "replicas": 3}});
        api.create(&PostParams::default(), &object).await.unwrap();
        let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(client.clone(), "default");
        let mut done = None;
        for _ in 0..100 {
            let widget = api.get("op").await.unwrap();
            if widget.data["status"]["phase"] == "Configured" {
                done = Some(widget);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let widget = done.expect("the operator never configured the widget");
        assert_eq!(widget.data["status"]["replicas"], 3);
        // The status write did not count a generation.
        assert_eq!(widget.metadata.generation, Some(1));
        let configmap = configmaps.get("op-config").await.unwrap();
        assert_eq!(configmap.data.unwrap()["size"], "large");
        let owners = configmap.metadata.owner_references.unwrap();
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].name.as_str()),
            ("Widget", "op")
        );
        // A change of the spec is reconciled too.
        let patch = json!({"spec": {"size": "small"}});
        api.patch(
            "op",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
        let mut size = String::new();
        for _ in 0..100 {
            size = configmaps.get("op-config").await.unwrap().data.unwrap()["size"].clone();
            if size == "small" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(size, "small");
    });
    // A foreground delete of the widget waits for the garbage collector to delete its ConfigMap first (the
    // collector follows kinds served since it started); then both are gone.
    ok(server.kubectl(
        33,
        &["delete", "widget", "op", "--cascade=foreground", "--wait=false"],
    ));
    wait_for(90, "the widget and its ConfigMap to go", || {
        !server.kubectl(33, &["get", "widget", "op"]).status.success()
            && !server
                .kubectl(33, &["get", "configmap", "op-config"])
                .status
                .success()
    });
}

/// A cluster-scoped kind without a schema's extras: created, replaced (`kubectl replace`, with the
/// resourceVersion it read), listed, and deleted as a collection; a resourceVersion from before is a conflict.
#[test]
fn cluster_scoped_custom_resources_are_replaced_and_deleted_as_a_collection() {
    let server = Server::start(&[]);
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "regions.geo.example.com"},
        "spec": {"group": "geo.example.com", "scope": "Cluster",
            "names": {"plural": "regions", "kind": "Region"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {"zones": {"type": "integer"}}}}}}}]},
    });
    install_crd(&server, &crd);
    let region = |name: &str, zones: i64| json!({"apiVersion": "geo.example.com/v1", "kind": "Region", "metadata": {"name": name}, "spec": {"zones": zones}});
    for name in ["north", "south"] {
        ok(server.kubectl_stdin(33, &["create", "-f", "-"], &region(name, 1).to_string()));
    }
    let north = get_json(&server, &["region", "north"]);
    assert!(north["metadata"].get("namespace").is_none(), "{north}");
    let mut replaced = north.clone();
    replaced["spec"]["zones"] = json!(3);
    ok(server.kubectl_stdin(33, &["replace", "-f", "-"], &replaced.to_string()));
    assert_eq!(get_json(&server, &["region", "north"])["spec"]["zones"], 3);
    // The resourceVersion read before the replace is stale now.
    let stale = fails(server.kubectl_stdin(33, &["replace", "-f", "-"], &north.to_string()));
    assert!(stale.contains("the object has been modified"), "{stale}");
    let table = ok(server.kubectl(33, &["get", "regions"]));
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "AGE"]
    );
    assert_eq!(table.lines().count(), 3, "{table}");
    let (code, body) = server.request(
        "DELETE",
        "/apis/geo.example.com/v1/regions",
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        ok(server.kubectl(33, &["get", "regions", "-o", "name"])).trim(),
        ""
    );
}
