//! The streaming crate against the real kubectl: a small HTTPS server in a network namespace, built on
//! `streaming`, answers the few requests kubectl makes first (version, discovery, the pod) and then serves
//! `kubectl exec` by running a real local process and `kubectl port-forward` by connecting to a local TCP
//! listener. kubectl 1.27 speaks SPDY/3.1 for both; kubectl 1.33 speaks WebSocket (`v5.channel.k8s.io`) for
//! exec and SPDY tunnelled in WebSocket for port-forward. The server records which transport each request
//! used, so each case checks that the protocol it means to cover was the one spoken.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bonsai_e2e::{NetNs, kubectl_bin, text};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use streaming::{Failure, Negotiated, Subresource, Transport};
use tokio::io::AsyncWriteExt;

type Log = Arc<Mutex<Vec<(Subresource, Transport, String)>>>;

/// The test server, running on a thread of its own inside `netns`.
struct TestServer {
    netns: NetNs,
    kubeconfig: PathBuf,
    log: Log,
    _dir: tempfile::TempDir,
}

fn start() -> TestServer {
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Arc::default();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let ns_name = netns.name.clone();
    let server_log = log.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{ns_name}")).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // One thread: every socket (the listener, and the pod-port connections) is made in the namespace.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(serve(port_tx, server_log));
    });
    let port: u16 = port_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: t\n    user: u\n    namespace: default\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    TestServer {
        netns,
        kubeconfig,
        log,
        _dir: dir,
    }
}

impl TestServer {
    fn kubectl(&self, minor: u32) -> Command {
        let mut command = self.netns.command(kubectl_bin(minor));
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self._dir.path().join("cache"));
        command
    }

    /// The transports used so far for `subresource`, with their protocols.
    fn used(&self, subresource: Subresource) -> Vec<(Transport, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| *s == subresource)
            .map(|(_, t, p)| (*t, p.clone()))
            .collect()
    }
}

async fn serve(port_tx: std::sync::mpsc::Sender<u16>, log: Log) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    // Upgrades need HTTP/1.1.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
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
            let service = hyper::service::service_fn(move |req| {
                let log = log.clone();
                async move { Ok::<_, std::convert::Infallible>(route(req, log)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await;
        });
    }
}

fn json(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn route(mut req: Request<Incoming>, log: Log) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    match path.as_str() {
        "/version" => json(
            200,
            r#"{"major":"1","minor":"33","gitVersion":"v1.33.0","gitCommit":"0","gitTreeState":"clean","buildDate":"2025-01-01T00:00:00Z","goVersion":"go1.24","compiler":"gc","platform":"linux/amd64"}"#.into(),
        ),
        "/api" => json(200, r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]}"#.into()),
        "/apis" => json(200, r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#.into()),
        "/api/v1" => json(
            200,
            r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},{"name":"pods/attach","singularName":"","namespaced":true,"kind":"PodAttachOptions","verbs":["create","get"]},{"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},{"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#.into(),
        ),
        "/api/v1/namespaces/default/pods/demo" => json(
            200,
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"demo","namespace":"default","uid":"6d0c1f3e-0000-4000-8000-000000000001","resourceVersion":"1","creationTimestamp":"2025-01-01T00:00:00Z"},"spec":{"containers":[{"name":"main","image":"busybox"}]},"status":{"phase":"Running","containerStatuses":[{"name":"main","ready":true,"restartCount":0,"image":"busybox","imageID":"","state":{"running":{"startedAt":"2025-01-01T00:00:00Z"}}}]}}"#.into(),
        ),
        "/api/v1/namespaces/default/pods/demo/attach" => {
            upgrade(&mut req, Subresource::Attach, &query, log)
        }
        "/api/v1/namespaces/default/pods/demo/exec" => upgrade(&mut req, Subresource::Exec, &query, log),
        "/api/v1/namespaces/default/pods/demo/portforward" => {
            upgrade(&mut req, Subresource::PortForward, &query, log)
        }
        _ => json(
            404,
            format!(r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{path} not found","reason":"NotFound","code":404}}"#),
        ),
    }
}

fn upgrade(
    req: &mut Request<Incoming>,
    subresource: Subresource,
    query: &str,
    log: Log,
) -> Response<Full<Bytes>> {
    let negotiated = match streaming::negotiate(req, subresource) {
        Ok(negotiated) => negotiated,
        Err(streaming::Error::Refused { status, message }) => {
            return json(
                status,
                format!(
                    r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":{message:?},"code":{status}}}"#
                ),
            );
        }
        Err(e) => panic!("{e}"),
    };
    log.lock()
        .unwrap()
        .push((subresource, negotiated.transport, negotiated.protocol.clone()));
    let on_upgrade = hyper::upgrade::on(req);
    let query = query.to_string();
    let response = negotiated.response();
    tokio::spawn(async move {
        let io = streaming::upgraded(on_upgrade).await.unwrap();
        match subresource {
            Subresource::PortForward => port_forward(&negotiated, io).await,
            // The "container's main process" attach joins: a short one of our own.
            Subresource::Attach => {
                let query = format!(
                    "{query}&command=sh&command=-c&command=echo%20attached%3B%20echo%20to-stderr%20%3E%262"
                );
                exec(&negotiated, io, &query).await
            }
            Subresource::Exec => exec(&negotiated, io, &query).await,
        }
    });
    response
}

/// Runs the requested command as a local process, its stdio wired to the session.
async fn exec<T>(negotiated: &Negotiated, io: T, query: &str)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let options = streaming::StreamOptions::from_query(query).unwrap();
    let mut session = streaming::serve_remote_command(negotiated, io, &options)
        .await
        .unwrap();
    let mut child = tokio::process::Command::new(&options.command[0])
        .args(&options.command[1..])
        .stdin(if session.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut copies = Vec::new();
    if let (Some(mut from), Some(mut to)) = (session.stdin.take(), child.stdin.take()) {
        copies.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        }));
    }
    let mut child_stdout = child.stdout.take().unwrap();
    let mut child_stderr = child.stderr.take().unwrap();
    let mut stdout = session.stdout.take();
    let mut stderr = session.stderr.take();
    let outputs = tokio::spawn(async move {
        let out = async {
            if let Some(to) = stdout.as_mut() {
                let _ = tokio::io::copy(&mut child_stdout, to).await;
            }
        };
        let err = async {
            if let Some(to) = stderr.as_mut() {
                let _ = tokio::io::copy(&mut child_stderr, to).await;
            }
        };
        tokio::join!(out, err);
    });
    let status = child.wait().await.unwrap();
    let _ = outputs.await;
    let result = match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Failure::ExitCode(code)),
        None => Err(Failure::Internal("killed by a signal".into())),
    };
    session.finish(result).await.unwrap();
    for copy in copies {
        copy.abort();
    }
}

/// Connects each forwarded connection to the requested port on this namespace's loopback.
async fn port_forward<T>(negotiated: &Negotiated, io: T)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut session = streaming::serve_port_forward(negotiated, io).await.unwrap();
    while let Some(mut connection) = session.next().await {
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(("127.0.0.1", connection.port)).await {
                Ok(tcp) => {
                    // As containerd does: when either direction ends, give the other a second, then close
                    // both streams (kubectl waits for the error stream to close before it lets go).
                    let (mut tcp_read, mut tcp_write) = tcp.into_split();
                    let (mut data_read, mut data_write) = tokio::io::split(connection.data);
                    let up = async {
                        let _ = tokio::io::copy(&mut data_read, &mut tcp_write).await;
                        let _ = tcp_write.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut tcp_read, &mut data_write).await;
                        let _ = data_write.shutdown().await;
                    };
                    tokio::pin!(up, down);
                    tokio::select! {
                        _ = &mut up => { let _ = tokio::time::timeout(Duration::from_secs(1), down).await; }
                        _ = &mut down => { let _ = tokio::time::timeout(Duration::from_secs(1), up).await; }
                    }
                }
                Err(e) => {
                    let _ = connection
                        .error
                        .write_all(format!("error forwarding port {}: {e}", connection.port).as_bytes())
                        .await;
                }
            }
        });
    }
}

fn exec_case(minor: u32, expected: Transport, protocol: &str) {
    let server = start();
    // stdin piped through, stdout and stderr kept apart, the exit code propagated.
    let mut child = server
        .kubectl(minor)
        .args(["exec", "-i", "demo", "--", "sh", "-c"])
        .arg("read line; echo \"got $line\"; echo oops >&2; exit 3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got hello\n",
        "{}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("oops\n"), "{stderr}");
    assert!(stderr.contains("command terminated with exit code 3"), "{stderr}");

    // Larger than one SPDY window / WebSocket read, both ways, and a clean exit.
    let input: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let mut child = server
        .kubectl(minor)
        .args(["exec", "-i", "demo", "--", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap())
    };
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{input}done\n"));

    // attach: the same session API, on the attach subresource.
    let out = server.kubectl(minor).args(["attach", "demo"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "attached\n",
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("to-stderr\n"),
        "{}",
        text(&out)
    );
    let used = server.used(Subresource::Attach);
    assert_eq!(used.len(), 1, "{used:?}");
    assert!(
        used.iter().all(|(t, p)| *t == expected && p == protocol),
        "{used:?}"
    );

    let used = server.used(Subresource::Exec);
    assert_eq!(used.len(), 2, "{used:?}");
    assert!(
        used.iter().all(|(t, p)| *t == expected && p == protocol),
        "{used:?}"
    );
}

#[test]
fn kubectl_1_27_exec_and_attach_over_spdy() {
    exec_case(27, Transport::Spdy, "v4.channel.k8s.io");
}

#[test]
fn kubectl_1_33_exec_and_attach_over_websocket_v5() {
    exec_case(33, Transport::WebSocket, "v5.channel.k8s.io");
}

fn port_forward_case(minor: u32, expected: Transport, protocol: &str) {
    let server = start();
    // The pod's port: a line-answering TCP server in the namespace.
    let (pod_port_tx, pod_port_rx) = std::sync::mpsc::channel();
    let ns_name = server.netns.name.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{ns_name}")).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        pod_port_tx.send(listener.local_addr().unwrap().port()).unwrap();
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut line = String::new();
            BufReader::new(conn.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            let reply = format!("pong {}{}", line.trim_end(), "x".repeat(100_000));
            conn.write_all(reply.as_bytes()).unwrap();
        }
    });
    let pod_port: u16 = pod_port_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let mut kubectl = server
        .kubectl(minor)
        .args(["port-forward", "pod/demo", &format!(":{pod_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(kubectl.stdout.take().unwrap()).lines();
    let local_port: u16 = loop {
        let line = lines.next().expect("kubectl port-forward ended").unwrap();
        // "Forwarding from 127.0.0.1:LOCAL -> POD"
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };

    // Two connections, one after the other: two stream pairs on the one session.
    let ns_name = server.netns.name.clone();
    let replies = std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{ns_name}")).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        (1..=2)
            .map(|i| {
                let mut conn = std::net::TcpStream::connect(("127.0.0.1", local_port)).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                conn.write_all(format!("ping{i}\n").as_bytes()).unwrap();
                let mut reply = String::new();
                conn.read_to_string(&mut reply).unwrap();
                reply
            })
            .collect::<Vec<_>>()
    })
    .join();
    let _ = kubectl.kill();
    let output = kubectl.wait_with_output().unwrap();
    let replies = replies.unwrap_or_else(|_| panic!("port-forward failed: {}", text(&output)));
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(
            reply.len(),
            format!("pong ping{}", i + 1).len() + 100_000,
            "{}",
            text(&output)
        );
        assert!(
            reply.starts_with(&format!("pong ping{}x", i + 1)),
            "{}",
            &reply[..40.min(reply.len())]
        );
    }
    let used = server.used(Subresource::PortForward);
    assert!(!used.is_empty());
    assert!(
        used.iter().all(|(t, p)| *t == expected && p == protocol),
        "{used:?}"
    );
}

#[test]
fn kubectl_1_27_port_forward_over_spdy() {
    port_forward_case(27, Transport::Spdy, "portforward.k8s.io");
}

#[test]
fn kubectl_1_33_port_forward_over_spdy_in_websocket() {
    port_forward_case(33, Transport::WebSocket, "SPDY/3.1+portforward.k8s.io");
}
