//! Admission webhooks end to end: the real bonsai binary and the real kubectl against webhook servers this test
//! runs on loopback inside the server's network namespace, over HTTPS with a certificate made by rcgen (the
//! configurations carry it as their caBundle).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bonsai_e2e::{NetNs, Server, fails, ok, text};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The reviews the webhooks received: (path, request).
type Reviews = Arc<Mutex<Vec<(String, Value)>>>;

/// Webhooks on `https://127.0.0.1:<port>/<path>` in a network namespace, until dropped.
struct Webhooks {
    port: u16,
    ca_bundle: String,
    reviews: Reviews,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Webhooks {
    fn start(netns: &str) -> Webhooks {
        let netns = netns.to_string();
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "hooks.webhooks.svc".to_string(),
        ])
        .unwrap();
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(certified.cert.pem());
        let reviews: Reviews = Arc::default();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel();
        let log = reviews.clone();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(format!("/var/run/netns/{netns}")).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                tokio::select! {
                    _ = serve(certified, port_tx, log) => {}
                    _ = shutdown_rx => {}
                }
            });
        });
        let port = port_rx.recv().unwrap();
        Webhooks {
            port,
            ca_bundle,
            reviews,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    fn client_config(&self, path: &str) -> Value {
        json!({"url": format!("https://127.0.0.1:{}/{path}", self.port), "caBundle": self.ca_bundle})
    }

    fn reviews_of(&self, path: &str) -> Vec<Value> {
        self.reviews
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    certified: rcgen::CertifiedKey<rcgen::KeyPair>,
    port_tx: std::sync::mpsc::Sender<u16>,
    log: Reviews,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    port_tx.send(listener.local_addr().unwrap().port()).unwrap();
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = acceptor.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| answer(req, log.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn labels_of(object: &Value) -> serde_json::Map<String, Value> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// A JSONPatch that sets the object's labels to `labels`.
fn set_labels(labels: serde_json::Map<String, Value>) -> Value {
    let patch = json!([{"op": "add", "path": "/metadata/labels", "value": labels}]);
    json!({"patchType": "JSONPatch",
        "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
}

/// The webhooks, by path: `deny` refuses what has the label `deny`, `first` labels `mutated` (and
/// `first-saw-second` once `second` is there), `second` labels `second`, `warn` allows with a warning, `record`
/// allows, `hang` never answers.
async fn answer(req: Request<Incoming>, log: Reviews) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap();
    let request = review["request"].clone();
    log.lock().unwrap().push((path.clone(), request.clone()));
    let object = if request["object"].is_null() {
        request["oldObject"].clone()
    } else {
        request["object"].clone()
    };
    let mut labels = labels_of(&object);
    let mut response = json!({"uid": request["uid"], "allowed": true});
    match path.as_str() {
        "deny" => {
            response["allowed"] = json!(false);
            response["status"] = json!({"code": 403, "message": format!("{} {} is labelled deny", request["operation"].as_str().unwrap(), request["name"].as_str().unwrap())});
        }
        "first" => {
            labels.insert("mutated".into(), json!("yes"));
            if labels.contains_key("second") {
                labels.insert("first-saw-second".into(), json!("yes"));
            }
            response
                .as_object_mut()
                .unwrap()
                .extend(set_labels(labels).as_object().unwrap().clone());
        }
        "second" => {
            labels.insert("second".into(), json!("yes"));
            response
                .as_object_mut()
                .unwrap()
                .extend(set_labels(labels).as_object().unwrap().clone());
        }
        "warn" => response["warnings"] = json!(["this configmap is watched closely"]),
        "hang" => std::future::pending::<()>().await,
        _ => {}
    }
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap())
}

fn webhook(name: &str, client_config: Value, operations: &[&str], extra: Value) -> Value {
    let mut hook = json!({
        "name": name,
        "clientConfig": client_config,
        "rules": [{"operations": operations, "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    hook.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    hook
}

fn configuration(kind: &str, name: &str, webhooks: Vec<Value>) -> String {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "webhooks": webhooks})
        .to_string()
}

fn apply(server: &Server, manifest: &str) -> String {
    ok(server.kubectl_stdin(33, &["apply", "-f", "-"], manifest))
}

fn configmap(namespace: &str, name: &str, labels: Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace, "labels": labels}})
        .to_string()
}

fn labels_in_cluster(server: &Server, namespace: &str, name: &str) -> Value {
    let out = ok(server.kubectl(33, &["get", "configmap", "-n", namespace, name, "-o", "json"]));
    serde_json::from_str::<Value>(&out).unwrap()["metadata"]["labels"].clone()
}

#[test]
fn validating_and_mutating_webhooks_with_kubectl() {
    let server = Server::start(&[]);
    let hooks = Webhooks::start(&server.netns.name);
    for (namespace, labels) in [
        ("guarded", "webhooks=enabled"),
        ("open", ""),
        ("mutate", "mutate=yes"),
    ] {
        ok(server.kubectl(33, &["create", "namespace", namespace]));
        if !labels.is_empty() {
            ok(server.kubectl(33, &["label", "namespace", namespace, labels]));
        }
    }
    let validating = configuration(
        "ValidatingWebhookConfiguration",
        "guard",
        vec![
            webhook(
                "deny.webhooks.example.com",
                hooks.client_config("deny"),
                &["CREATE", "UPDATE", "DELETE"],
                json!({"namespaceSelector": {"matchLabels": {"webhooks": "enabled"}},
                       "objectSelector": {"matchExpressions": [{"key": "deny", "operator": "Exists"}]}}),
            ),
            webhook(
                "warn.webhooks.example.com",
                hooks.client_config("warn"),
                &["CREATE"],
                json!({"objectSelector": {"matchLabels": {"warn": "yes"}}}),
            ),
        ],
    );
    assert!(apply(&server, &validating).contains("created"));
    // Served like any built-in kind: defaults, table, discovery.
    let stored: Value = serde_json::from_str(&ok(server.kubectl(
        33,
        &["get", "validatingwebhookconfiguration", "guard", "-o", "json"],
    )))
    .unwrap();
    let deny = &stored["webhooks"][0];
    assert_eq!(
        (
            &deny["failurePolicy"],
            &deny["matchPolicy"],
            &deny["timeoutSeconds"]
        ),
        (&json!("Fail"), &json!("Equivalent"), &json!(10))
    );
    assert_eq!(deny["rules"][0]["scope"], "*");
    let table = ok(server.kubectl(33, &["get", "validatingwebhookconfigurations"]));
    assert!(table.contains("WEBHOOKS") && table.contains("guard"), "{table}");
    let resources = ok(server.kubectl(33, &["api-resources", "--api-group=admissionregistration.k8s.io"]));
    assert!(resources.contains("mutatingwebhookconfigurations"), "{resources}");

    // A denial shows the webhook's message; only the labelled object in the selected namespace is sent.
    let denied = fails(server.kubectl_stdin(
        33,
        &["apply", "-f", "-"],
        &configmap("guarded", "bad", json!({"deny": "yes"})),
    ));
    assert!(
        denied.contains(
            "admission webhook \"deny.webhooks.example.com\" denied the request: CREATE bad is labelled deny"
        ),
        "{denied}"
    );
    apply(&server, &configmap("guarded", "unlabelled", json!({})));
    apply(&server, &configmap("open", "bad", json!({"deny": "yes"})));
    let sent: Vec<String> = hooks
        .reviews_of("deny")
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["namespace"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(sent, ["guarded/bad"]);
    let review = &hooks.reviews_of("deny")[0];
    assert_eq!(
        review["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(
        review["resource"],
        json!({"group": "", "version": "v1", "resource": "configmaps"})
    );
    assert_eq!(
        (&review["operation"], &review["dryRun"]),
        (&json!("CREATE"), &json!(false))
    );
    assert!(
        !review["userInfo"]["username"].as_str().unwrap().is_empty(),
        "{review}"
    );
    assert!(review["uid"].as_str().is_some_and(|u| !u.is_empty()));

    // An object labelled later is checked on update (with its old object) and on delete.
    ok(server.kubectl(
        33,
        &["label", "configmap", "-n", "guarded", "unlabelled", "keep=1"],
    ));
    let relabel = fails(server.kubectl(
        33,
        &["label", "configmap", "-n", "guarded", "unlabelled", "deny=yes"],
    ));
    assert!(
        relabel.contains("UPDATE unlabelled is labelled deny"),
        "{relabel}"
    );
    let update = hooks.reviews_of("deny").pop().unwrap();
    assert_eq!(update["oldObject"]["metadata"]["labels"], json!({"keep": "1"}));
    ok(server.kubectl(33, &["delete", "validatingwebhookconfiguration", "guard"]));
    ok(server.kubectl(
        33,
        &["label", "configmap", "-n", "guarded", "unlabelled", "deny=yes"],
    ));
    assert!(apply(&server, &validating).contains("created"));
    let delete = fails(server.kubectl(33, &["delete", "configmap", "-n", "guarded", "unlabelled"]));
    assert!(delete.contains("DELETE unlabelled is labelled deny"), "{delete}");

    // Warnings reach kubectl.
    let out = server.kubectl_stdin(
        33,
        &["apply", "-f", "-"],
        &configmap("open", "watched", json!({"warn": "yes"})),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Warning: this configmap is watched closely"),
        "{}",
        text(&out)
    );

    // Mutating webhooks patch the object, in configuration name order; `IfNeeded` sees it again after a later
    // webhook changed it.
    let only_mutate = json!({"namespaceSelector": {"matchLabels": {"mutate": "yes"}}});
    let mut first = webhook(
        "first.webhooks.example.com",
        hooks.client_config("first"),
        &["CREATE"],
        only_mutate.clone(),
    );
    first["reinvocationPolicy"] = json!("IfNeeded");
    apply(
        &server,
        &configuration("MutatingWebhookConfiguration", "a-first", vec![first]),
    );
    apply(
        &server,
        &configuration(
            "MutatingWebhookConfiguration",
            "b-second",
            vec![webhook(
                "second.webhooks.example.com",
                hooks.client_config("second"),
                &["CREATE"],
                only_mutate,
            )],
        ),
    );
    apply(&server, &configmap("mutate", "patched", json!({"own": "label"})));
    assert_eq!(
        labels_in_cluster(&server, "mutate", "patched"),
        json!({"own": "label", "mutated": "yes", "second": "yes", "first-saw-second": "yes"})
    );
    assert_eq!(hooks.reviews_of("first").len(), 2, "called, then called again");
    assert_eq!(hooks.reviews_of("second").len(), 1);
    // Outside the selected namespace nothing changes.
    apply(&server, &configmap("open", "plain", json!({"own": "label"})));
    assert_eq!(
        labels_in_cluster(&server, "open", "plain"),
        json!({"own": "label"})
    );
}

#[test]
fn failure_policy_timeout_dry_run_and_validation() {
    let server = Server::start(&[]);
    let hooks = Webhooks::start(&server.netns.name);
    ok(server.kubectl(33, &["create", "namespace", "apps"]));
    // Nothing listens on port 1 in the namespace: the webhook is down.
    let down = json!({"url": "https://127.0.0.1:1/down", "caBundle": hooks.ca_bundle});
    let hooks_of = |policy: &str, label: &str, config: Value| {
        webhook(
            &format!("{}.webhooks.example.com", policy.to_lowercase()),
            config,
            &["CREATE"],
            json!({"failurePolicy": policy, "objectSelector": {"matchLabels": {label: "yes"}}}),
        )
    };
    apply(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "down",
            vec![
                hooks_of("Fail", "fail", down.clone()),
                hooks_of("Ignore", "ignore", down),
            ],
        ),
    );
    let failed = fails(server.kubectl_stdin(
        33,
        &["apply", "-f", "-"],
        &configmap("apps", "a", json!({"fail": "yes"})),
    ));
    assert!(
        failed.contains("Internal error occurred: failed calling webhook \"fail.webhooks.example.com\": failed to call webhook: Post \"https://127.0.0.1:1/down\""),
        "{failed}"
    );
    apply(&server, &configmap("apps", "b", json!({"ignore": "yes"})));
    ok(server.kubectl(33, &["get", "configmap", "-n", "apps", "b"]));

    // A webhook that does not answer within its timeout fails the call.
    let mut hang = webhook(
        "hang.webhooks.example.com",
        hooks.client_config("hang"),
        &["CREATE"],
        json!({"objectSelector": {"matchLabels": {"hang": "yes"}}}),
    );
    hang["timeoutSeconds"] = json!(1);
    apply(
        &server,
        &configuration("ValidatingWebhookConfiguration", "hang", vec![hang]),
    );
    let timed_out = fails(server.kubectl_stdin(
        33,
        &["apply", "-f", "-"],
        &configmap("apps", "c", json!({"hang": "yes"})),
    ));
    assert!(
        timed_out.contains("failed calling webhook \"hang.webhooks.example.com\"")
            && timed_out.contains("context deadline exceeded"),
        "{timed_out}"
    );

    // Dry runs reach webhooks without side effects, marked as such, and store nothing.
    apply(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "record",
            vec![webhook(
                "record.webhooks.example.com",
                hooks.client_config("record"),
                &["CREATE"],
                json!({"objectSelector": {"matchLabels": {"record": "yes"}}}),
            )],
        ),
    );
    ok(server.kubectl_stdin(
        33,
        &["apply", "--dry-run=server", "-f", "-"],
        &configmap("apps", "dry", json!({"record": "yes"})),
    ));
    let recorded = hooks.reviews_of("record");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["dryRun"], true);
    assert_eq!(recorded[0]["options"]["dryRun"], json!(["All"]));
    fails(server.kubectl(33, &["get", "configmap", "-n", "apps", "dry"]));

    // Kubernetes' validation of configurations: v1 allows no side effects but None and NoneOnDryRun, and
    // names need three segments.
    let mut some = webhook(
        "some.webhooks.example.com",
        hooks.client_config("record"),
        &["CREATE"],
        json!({}),
    );
    some["sideEffects"] = json!("Some");
    let refused = fails(server.kubectl_stdin(
        33,
        &["apply", "-f", "-"],
        &configuration("ValidatingWebhookConfiguration", "some", vec![some]),
    ));
    assert!(
        refused.contains("webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\""),
        "{refused}"
    );
    let short = webhook(
        "short.example",
        json!({"url": "http://x/"}),
        &["CREATE"],
        json!({}),
    );
    let refused = fails(server.kubectl_stdin(
        33,
        &["apply", "-f", "-"],
        &configuration("MutatingWebhookConfiguration", "short", vec![short]),
    ));
    assert!(
        refused.contains("should be a domain with at least three segments separated by dots"),
        "{refused}"
    );
    assert!(
        refused.contains("'https' is the only allowed URL scheme"),
        "{refused}"
    );

    // A service reference is called as `<svc>.<ns>.svc` at its EndpointSlice's ready address and port.
    ok(server.kubectl(33, &["create", "namespace", "webhooks"]));
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hooks", "namespace": "webhooks"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hooks.port}]}});
    apply(&server, &service.to_string());
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "hooks-1", "namespace": "webhooks", "labels": {"kubernetes.io/service-name": "hooks"}},
        "addressType": "IPv4", "ports": [{"name": "https", "port": hooks.port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]});
    apply(&server, &slice.to_string());
    let by_service = json!({"service": {"namespace": "webhooks", "name": "hooks", "path": "/deny"}, "caBundle": hooks.ca_bundle});
    apply(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "by-service",
            vec![webhook(
                "service.webhooks.example.com",
                by_service,
                &["CREATE"],
                json!({"objectSelector": {"matchLabels": {"deny": "service"}}}),
            )],
        ),
    );
    let denied = fails(server.kubectl_stdin(
        33,
        &["apply", "-f", "-"],
        &configmap("apps", "d", json!({"deny": "service"})),
    ));
    assert!(
        denied.contains(
            "admission webhook \"service.webhooks.example.com\" denied the request: CREATE d is labelled deny"
        ),
        "{denied}"
    );
}

#[test]
fn a_webhook_without_a_ca_bundle_is_checked_against_the_system_roots() {
    // The webhook's CA is made the host's only trust root for the server (SSL_CERT_FILE, which the system roots
    // are read from, as Go reads them); the configuration carries no caBundle.
    let netns = NetNs::new();
    let hooks = Webhooks::start(&netns.name);
    let roots = tempfile::tempdir().unwrap();
    let roots_file = roots.path().join("roots.pem");
    std::fs::write(
        &roots_file,
        base64::engine::general_purpose::STANDARD
            .decode(&hooks.ca_bundle)
            .unwrap(),
    )
    .unwrap();
    let server = Server::start_in_with_env(
        netns,
        tempfile::tempdir().unwrap(),
        &[],
        &[("SSL_CERT_FILE", roots_file.to_str().unwrap())],
    );
    ok(server.kubectl(33, &["create", "namespace", "apps"]));
    let system_trusted = json!({"url": format!("https://127.0.0.1:{}/deny", hooks.port)});
    apply(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "system-roots",
            vec![webhook(
                "system.webhooks.example.com",
                system_trusted,
                &["CREATE"],
                json!({"objectSelector": {"matchLabels": {"deny": "system"}}}),
            )],
        ),
    );
    let denied = fails(server.kubectl_stdin(
        33,
        &["apply", "-f", "-"],
        &configmap("apps", "s", json!({"deny": "system"})),
    ));
    assert!(
        denied.contains(
            "admission webhook \"system.webhooks.example.com\" denied the request: CREATE s is labelled deny"
        ),
        "{denied}"
    );
    assert_eq!(hooks.reviews_of("deny").len(), 1);
}
