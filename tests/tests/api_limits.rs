//! The API server's protections against the real binary: a thousand slow clients do not lock a normal one out;
//! in-flight limits answer 429 with `Retry-After` and request timeouts 504 (`--kube-apiserver-arg`); the audit log
//! records who did what with Kubernetes' event format; certificates near expiry are renewed at start and
//! `bonsai certificate rotate` issues new ones from the same CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::sync::Arc;

use bonsai_e2e::{Server, bonsai, fails, ok, text, wait_for};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// A TLS client with the admin's certificate, for hand-made (slow) requests.
fn admin_tls(server: &Server) -> tokio_rustls::TlsConnector {
    let tls = server.data_dir().join("server/tls");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(tls.join("server-ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs: Vec<_> = CertificateDer::pem_file_iter(tls.join("client-admin.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(tls.join("client-admin.key")).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(tls: &tokio_rustls::TlsConnector) -> Tls {
    let tcp = tokio::net::TcpStream::connect("127.0.0.1:6443").await.unwrap();
    tls.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// Runs `clients` on a thread in the server's namespace until `done` says stop; `ready` is sent once they are set.
fn hold<F, Fut>(
    server: &Server,
    clients: F,
) -> (
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
)
where
    F: FnOnce(tokio_rustls::TlsConnector) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<Tls>>,
{
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    let tls = admin_tls(server);
    let netns = format!("/var/run/netns/{}", server.netns.name);
    let thread = std::thread::spawn(move || {
        nix::sched::setns(
            std::fs::File::open(netns).unwrap(),
            nix::sched::CloneFlags::CLONE_NEWNET,
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let held = runtime.block_on(clients(tls));
        ready_tx.send(()).unwrap();
        let _ = done_rx.recv();
        drop(held);
    });
    (ready, done, thread)
}

#[test]
fn a_thousand_slow_clients_do_not_lock_out_a_normal_one() {
    // The test process holds a thousand sockets too.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let server = Server::start(&[]);
    let (ready, done, thread) = hold(&server, |tls| async move {
        let mut held = Vec::new();
        for _ in 0..1000 {
            let mut stream = connect(&tls).await;
            // The request line and one header, then nothing: a client that never finishes its request.
            stream
                .write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .unwrap();
            stream.flush().await.unwrap();
            held.push(stream);
        }
        held
    });
    ready.recv().unwrap();
    // With the thousand connections open and stalled, kubectl is answered.
    let out = server.kubectl(33, &["get", "namespaces", "--request-timeout=30s", "-o", "name"]);
    assert!(text(&out).contains("namespace/kube-system"), "{}", text(&out));
    let (code, _) = server.request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(br#"{"metadata":{"name":"through"}}"#),
        "application/json",
    );
    assert_eq!(code, 201);
    done.send(()).unwrap();
    thread.join().unwrap();
}

#[test]
fn in_flight_limits_timeouts_and_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit/audit.log");
    let server = Server::start(&[
        "--kube-apiserver-arg",
        "max-mutating-requests-inflight=1",
        "--kube-apiserver-arg=request-timeout=4s",
        "--audit-log-path",
        audit.to_str().unwrap(),
    ]);
    // One mutating request that sends its body slowly holds the only mutating slot.
    let (ready, done, thread) = hold(&server, |tls| async move {
        let mut stream = connect(&tls).await;
        stream
            .write_all(
                b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                  Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            )
            .await
            .unwrap();
        stream.flush().await.unwrap();
        vec![stream]
    });
    ready.recv().unwrap();
    let body = br#"{"metadata":{"name":"limited"}}"#;
    let mut refused = String::new();
    wait_for(10, "a second mutating request to be refused with 429", || {
        let (code, answer) = server.request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(body),
            "application/json",
        );
        refused = answer;
        code == 429
    });
    let status: Value = serde_json::from_str(&refused).unwrap();
    assert_eq!(status["reason"], "TooManyRequests", "{status}");
    let (headers_code, headers) = server.curl(
        "/api/v1/namespaces/default/configmaps",
        &server
            .admin_credentials()
            .iter()
            .map(String::as_str)
            .chain([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data",
                "{}",
                "-D",
                "-",
                "-o",
                "/dev/null",
            ])
            .collect::<Vec<_>>(),
    );
    assert_eq!(headers_code, 429);
    assert!(
        headers.to_ascii_lowercase().contains("retry-after: 1"),
        "{headers}"
    );
    // Reads are limited apart: they go on.
    let (code, _) = server.request(
        "GET",
        "/api/v1/namespaces/default/configmaps",
        None,
        "application/json",
    );
    assert_eq!(code, 200);
    // The slow request is cut off by the request timeout, which frees the slot.
    wait_for(
        20,
        "the slot to be free again after the slow request's timeout",
        || {
            let (code, _) = server.request(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                Some(body),
                "application/json",
            );
            code == 201
        },
    );
    done.send(()).unwrap();
    thread.join().unwrap();
    // An unauthenticated request, and a forbidden one (impersonating a user without rights).
    let (code, _) = server.curl("/api/v1/namespaces", &[]);
    assert_eq!(code, 401);
    let mut args = server.admin_credentials();
    args.extend(["-H".into(), "Impersonate-User: jane".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _) = server.curl("/api/v1/namespaces/default/secrets", &args);
    assert_eq!(code, 403);

    let log = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for event in &events {
        assert_eq!(event["kind"], "Event");
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(event["level"], "Metadata");
        assert!(
            event["auditID"].as_str().is_some_and(|id| id.len() == 36),
            "{event}"
        );
        assert!(event.get("requestObject").is_none() && event.get("responseObject").is_none());
    }
    let find = |code: u64, verb: &str| {
        events
            .iter()
            .find(|e| {
                e["responseStatus"]["code"] == code
                    && e["verb"] == verb
                    && matches!(
                        e["objectRef"]["resource"].as_str(),
                        Some("configmaps" | "namespaces" | "secrets")
                    )
            })
            .unwrap_or_else(|| panic!("no {verb} event with {code} in {log}"))
    };
    let created = find(201, "create");
    assert_eq!(created["user"]["username"], "system:admin");
    assert_eq!(created["objectRef"]["resource"], "configmaps");
    assert_eq!(created["objectRef"]["namespace"], "default");
    assert_eq!(created["stage"], "ResponseComplete");
    assert_eq!(created["annotations"]["authorization.k8s.io/decision"], "allow");
    assert_eq!(created["sourceIPs"][0], "127.0.0.1");
    assert_eq!(find(429, "create")["objectRef"]["resource"], "configmaps");
    assert_eq!(find(401, "list")["user"]["username"], "system:anonymous");
    let forbidden = find(403, "list");
    assert_eq!(forbidden["impersonatedUser"]["username"], "jane");
    assert_eq!(
        forbidden["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    text(&out)
}

#[test]
fn certificates_near_expiry_are_renewed_and_rotate_issues_new_ones() {
    let server = Server::start(&[]);
    let tls = server.data_dir().join("server/tls");
    let (netns, dir, _) = server.stop();
    let file = |name: &str| tls.join(name).display().to_string();
    // The admin certificate, re-issued by the CA with 30 days left: within k3s's 90-day renewal window.
    let csr = file("admin.csr");
    openssl(&[
        "req",
        "-new",
        "-key",
        &file("client-admin.key"),
        "-subj",
        "/O=system:masters/CN=system:admin",
        "-out",
        &csr,
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-days",
        "30",
        "-CA",
        &file("server-ca.crt"),
        "-CAkey",
        &file("server-ca.key"),
        "-CAcreateserial",
        "-out",
        &file("client-admin.crt"),
    ]);
    std::fs::remove_file(&csr).unwrap();
    let ninety_days = (90 * 86_400).to_string();
    assert!(
        !Command::new("openssl")
            .args([
                "x509",
                "-checkend",
                &ninety_days,
                "-noout",
                "-in",
                &file("client-admin.crt")
            ])
            .status()
            .unwrap()
            .success()
    );
    let serving_serial = openssl(&[
        "x509",
        "-serial",
        "-noout",
        "-in",
        &file("serving-kube-apiserver.crt"),
    ]);
    let ca = std::fs::read(file("server-ca.crt")).unwrap();

    let server = Server::start_in(netns, dir, &[]);
    // Renewed at start, and the kubeconfig written with it works.
    openssl(&[
        "x509",
        "-checkend",
        &ninety_days,
        "-noout",
        "-in",
        &file("client-admin.crt"),
    ]);
    ok(server.kubectl(33, &["get", "namespaces"]));
    // Rotation refuses while the server runs...
    let data = server.data_dir().display().to_string();
    let refused = fails(bonsai(&["certificate", "rotate", "-d", &data]));
    assert!(refused.contains("is running"), "{refused}");
    let (netns, dir, _) = server.stop();
    // ...and removes only leaves when it is stopped.
    let rotated = ok(bonsai(&["certificate", "rotate", "-d", &data]));
    assert!(rotated.contains("serving-kube-apiserver.crt"), "{rotated}");
    assert!(!rotated.contains("server-ca"), "{rotated}");
    assert!(!tls.join("serving-kube-apiserver.crt").exists());
    let server = Server::start_in(netns, dir, &[]);
    assert_ne!(
        openssl(&[
            "x509",
            "-serial",
            "-noout",
            "-in",
            &file("serving-kube-apiserver.crt")
        ]),
        serving_serial
    );
    assert_eq!(std::fs::read(file("server-ca.crt")).unwrap(), ca, "the CA stays");
    ok(server.kubectl(33, &["get", "namespaces"]));
}
