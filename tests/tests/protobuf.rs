//! Protobuf request bodies end to end: kubectl 1.32 and 1.33 send every `kubectl create <generator>` as
//! `application/vnd.kubernetes.protobuf`, and helm v4 stores releases as protobuf Secrets and deletes them with
//! protobuf DeleteOptions. kubectl drives the first part; the helm requests are rebuilt from k8s-pb's messages and
//! sent with curl (helm is not on these machines).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;

use bonsai_e2e::{Server, fails, ok};
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{Value, json};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn get_json(server: &Server, minor: u32, args: &[&str]) -> Value {
    let mut all = vec!["get", "-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(server.kubectl(minor, &all))).unwrap()
}

/// Every `kubectl create` generator for a kind bonsai serves, then the stored objects as kubectl reads them back.
fn generators(server: &Server, minor: u32) {
    let ns = format!("pb{minor}");
    let n = ["-n", ns.as_str()];
    let create = |args: &[&str]| {
        let mut all = vec!["create"];
        // Namespace flags first: `create job … -- cmd` passes everything after `--` to the container.
        if args[0] != "namespace" && !args[0].starts_with("cluster") && args[0] != "priorityclass" {
            all.extend_from_slice(&n);
        }
        all.extend_from_slice(args);
        ok(server.kubectl(minor, &all))
    };
    create(&["namespace", &ns]);
    create(&[
        "deployment",
        "web",
        "--image=busybox:1",
        "--replicas=0",
        "--port=8080",
    ]);
    create(&["configmap", "cm", "--from-literal=a=1", "--from-literal=empty="]);
    create(&["secret", "generic", "s", "--from-literal=password=hunter2"]);
    create(&["service", "clusterip", "svc", "--tcp=80:8080"]);
    create(&["job", "j", "--image=busybox:1", "--", "echo", "hi"]);
    create(&["cronjob", "cj", "--image=busybox:1", "--schedule=*/5 * * * *"]);
    create(&["serviceaccount", "sa"]);
    create(&["role", "r", "--verb=get,list", "--resource=pods"]);
    create(&["rolebinding", "rb", "--role=r", "--user=alice"]);
    create(&["quota", "q", "--hard=pods=3,limits.memory=1Gi"]);
    create(&["ingress", "ing", "--rule=foo.example/bar=svc:80"]);
    create(&[
        "clusterrole",
        &format!("cr{minor}"),
        "--verb=watch",
        "--resource=nodes",
    ]);
    create(&[
        "priorityclass",
        &format!("pc{minor}"),
        "--value=1000",
        "--description=high",
    ]);

    let namespace = get_json(server, minor, &["namespace", &ns]);
    assert_eq!(namespace["status"]["phase"], "Active");
    let deployment = get_json(server, minor, &["deployment", "web", "-n", &ns]);
    assert_eq!(
        deployment["spec"]["replicas"], 0,
        "an explicit zero survives protobuf"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox:1");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({"app": "web"})
    );
    let created = deployment["metadata"]["creationTimestamp"].as_str().unwrap();
    assert!(
        !created.starts_with("0001"),
        "the server sets creationTimestamp: {created}"
    );
    assert_eq!(deployment["metadata"]["generation"], 1);

    let cm = get_json(server, minor, &["configmap", "cm", "-n", &ns]);
    assert_eq!(cm["data"], json!({"a": "1", "empty": ""}));
    let secret = get_json(server, minor, &["secret", "s", "-n", &ns]);
    assert_eq!(secret["data"], json!({"password": "aHVudGVyMg=="}));
    assert_eq!(secret["type"], "Opaque");
    let svc = get_json(server, minor, &["service", "svc", "-n", &ns]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    let job = get_json(server, minor, &["job", "j", "-n", &ns]);
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["echo", "hi"])
    );
    let cronjob = get_json(server, minor, &["cronjob", "cj", "-n", &ns]);
    assert_eq!(cronjob["spec"]["schedule"], "*/5 * * * *");
    get_json(server, minor, &["serviceaccount", "sa", "-n", &ns]);
    let role = get_json(server, minor, &["role", "r", "-n", &ns]);
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "list"]));
    assert_eq!(role["rules"][0]["resources"], json!(["pods"]));
    let binding = get_json(server, minor, &["rolebinding", "rb", "-n", &ns]);
    assert_eq!(binding["subjects"][0]["name"], "alice");
    assert_eq!(binding["roleRef"]["name"], "r");
    let quota = get_json(server, minor, &["quota", "q", "-n", &ns]);
    assert_eq!(
        quota["spec"]["hard"],
        json!({"pods": "3", "limits.memory": "1Gi"})
    );
    let ingress = get_json(server, minor, &["ingress", "ing", "-n", &ns]);
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], "foo.example");
    assert_eq!(rule["http"]["paths"][0]["path"], "/bar");
    assert_eq!(
        rule["http"]["paths"][0]["backend"]["service"],
        json!({"name": "svc", "port": {"number": 80}})
    );
    let pc = get_json(server, minor, &["priorityclass", &format!("pc{minor}")]);
    assert_eq!(pc["value"], 1000);
    assert_eq!(pc["description"], "high");

    // Server-side errors still arrive as Status objects through the protobuf path.
    let again = fails(server.kubectl(minor, &["create", "configmap", "cm", "-n", &ns]));
    assert!(again.contains("configmaps \"cm\" already exists"), "{again}");
    let missing = fails(server.kubectl(minor, &["create", "configmap", "x", "-n", "no-such-namespace"]));
    assert!(
        missing.contains("namespaces \"no-such-namespace\" not found"),
        "{missing}"
    );
    let invalid = fails(server.kubectl(minor, &["create", "configmap", "Bad_Name", "-n", &ns]));
    assert!(invalid.contains("is invalid"), "{invalid}");
}

#[test]
fn kubectl_create_generators_send_protobuf() {
    let server = Server::start(&[]);
    for minor in [32, 33] {
        generators(&server, minor);
    }
}

/// `k8s\0` + runtime.Unknown, as client-go's protobuf serializer frames a body.
fn framed(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let envelope = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(envelope.encode_to_vec());
    body
}

fn release_secret(version: &str, resource_version: Option<String>) -> core::Secret {
    core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: Some("sh.helm.release.v1.demo.v1".into()),
            namespace: Some("default".into()),
            labels: BTreeMap::from([
                ("owner".into(), "helm".into()),
                ("name".into(), "demo".into()),
                ("version".into(), version.into()),
            ]),
            resource_version,
            ..Default::default()
        }),
        data: BTreeMap::from([("release".into(), b"H4sIAAAAAAAA/wEAAP//AAAAAAAAAAA=".to_vec())]),
        r#type: Some("helm.sh/release.v1".into()),
        ..Default::default()
    }
}

#[test]
fn helm_style_protobuf_secrets_and_delete_options() {
    let server = Server::start(&[]);
    let secrets = "/api/v1/namespaces/default/secrets";
    let (code, body) = server.request(
        "POST",
        secrets,
        Some(&framed("v1", "Secret", &release_secret("1", None))),
        PROTOBUF,
    );
    assert_eq!(code, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["type"], "helm.sh/release.v1");
    assert_eq!(created["metadata"]["labels"]["owner"], "helm");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();

    let one = format!("{secrets}/sh.helm.release.v1.demo.v1");
    let update = framed("v1", "Secret", &release_secret("2", Some(rv.clone())));
    let (code, body) = server.request("PUT", &one, Some(&update), PROTOBUF);
    assert_eq!(code, 200, "{body}");
    let updated: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(updated["metadata"]["labels"]["version"], "2");
    // The same stale resourceVersion again: 409, as for JSON.
    let (code, body) = server.request("PUT", &one, Some(&update), PROTOBUF);
    assert_eq!(code, 409, "{body}");

    let delete = |uid: &str| {
        let options = meta::DeleteOptions {
            preconditions: Some(meta::Preconditions {
                uid: Some(uid.into()),
                resource_version: None,
            }),
            propagation_policy: Some("Background".into()),
            ..Default::default()
        };
        server.request(
            "DELETE",
            &one,
            Some(&framed("v1", "DeleteOptions", &options)),
            PROTOBUF,
        )
    };
    let (code, body) = delete("not-the-uid");
    assert_eq!(
        code, 409,
        "the precondition in the protobuf DeleteOptions is honoured: {body}"
    );
    let (code, body) = delete(&uid);
    assert_eq!(code, 200, "{body}");
    let (code, _) = server.request("GET", &one, None, "application/json");
    assert_eq!(code, 404);

    // Malformed protobuf is a 400 Status naming the problem, never a 500.
    let (code, body) = server.request("POST", secrets, Some(b"k8s\0\xff\xff\xff\xff"), PROTOBUF);
    assert_eq!(code, 400, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "BadRequest");
    assert!(status["message"].as_str().unwrap().contains("protobuf"), "{body}");
    let (code, body) = server.request(
        "POST",
        secrets,
        Some(&framed("v1", "Widget", &meta::Status::default())),
        PROTOBUF,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no kind \\\"Widget\\\" is registered"), "{body}");
    // A protobuf body of another kind than the URL's resource.
    let pod = framed("v1", "Pod", &core::Pod::default());
    let (code, body) = server.request("POST", secrets, Some(&pod), PROTOBUF);
    assert_eq!(code, 400, "{body}");
}
