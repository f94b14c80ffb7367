//! Probes against real servers on 127.0.0.1 (HTTP, HTTPS, TCP, gRPC) and exec probes through a fake runner.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};

use super::grpc::{HEALTH_CHECK_PATH, HealthCheckRequest, HealthCheckResponse};
use super::*;

/// An exec runner that answers every command with one scripted reply and records the commands.
#[derive(Debug)]
pub(super) struct ScriptedExec {
    pub reply: Mutex<Result<ExecOutput, ExecError>>,
    pub commands: Mutex<Vec<Vec<String>>>,
    /// Never answers (a command that hangs past any timeout).
    pub hang: bool,
}

impl ScriptedExec {
    pub fn replying(reply: Result<ExecOutput, ExecError>) -> Self {
        ScriptedExec {
            reply: Mutex::new(reply),
            commands: Mutex::new(Vec::new()),
            hang: false,
        }
    }
}

impl ExecRunner for ScriptedExec {
    async fn run_in_container(
        &self,
        _container_id: &str,
        command: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        self.commands.lock().unwrap().push(command.to_vec());
        if self.hang {
            std::future::pending::<()>().await;
        }
        self.reply.lock().unwrap().clone()
    }
}

fn no_exec() -> ScriptedExec {
    ScriptedExec::replying(Err(ExecError::Failed("no exec in this test".into())))
}

fn probe(json: serde_json::Value) -> Probe {
    serde_json::from_value(json).unwrap()
}

fn loopback() -> ProbeTarget {
    ProbeTarget {
        pod_ip: "127.0.0.1".into(),
        container_id: "bonsai://app".into(),
        named_ports: Vec::new(),
        static_env: Vec::new(),
    }
}

/// A free loopback port with nothing listening on it.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

type Seen = Arc<Mutex<Vec<(String, http::HeaderMap)>>>;

/// An HTTP/1.1 server with the answers the tests need, recording each request's target and headers.
async fn http_server() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    recorded
                        .lock()
                        .unwrap()
                        .push((request.uri().to_string(), request.headers().clone()));
                    async move { Ok::<_, Infallible>(answer(request.uri().path()).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, seen)
}

async fn answer(path: &str) -> Response<Full<Bytes>> {
    let reply = |status: u16, location: Option<&str>, body: Vec<u8>| {
        let mut response = Response::builder().status(status);
        if let Some(location) = location {
            response = response.header("Location", location);
        }
        response.body(Full::new(Bytes::from(body))).unwrap()
    };
    match path {
        "/ok" => reply(200, None, b"fine".to_vec()),
        "/fail" => reply(500, None, b"secret details".to_vec()),
        "/to-ok" => reply(302, Some("/ok"), Vec::new()),
        "/to-fail" => reply(307, Some("fail"), Vec::new()),
        "/elsewhere" => reply(302, Some("http://elsewhere.invalid/ok"), b"moved away".to_vec()),
        "/loop" => reply(302, Some("/loop"), Vec::new()),
        "/no-location" => reply(301, None, b"nowhere".to_vec()),
        "/big" => reply(200, None, vec![b'x'; 1024 * 1024]),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reply(200, None, Vec::new())
        }
        _ => reply(404, None, Vec::new()),
    }
}

async fn http_probe(address: SocketAddr, path: &str) -> ProbeResult {
    let spec =
        probe(serde_json::json!({"httpGet": {"path": path, "port": address.port()}, "timeoutSeconds": 1}));
    probe_once(&spec, &loopback(), &no_exec()).await
}

#[tokio::test]
async fn http_status_codes_decide_success_and_failure() {
    let (address, _) = http_server().await;
    assert_eq!(http_probe(address, "/ok").await, ProbeResult::Success);
    assert_eq!(
        http_probe(address, "/fail").await,
        ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(
        http_probe(address, "/missing").await,
        ProbeResult::Failure("HTTP probe failed with statuscode: 404".into())
    );
    // A body far past 10 KiB is cut, not an error.
    assert_eq!(http_probe(address, "/big").await, ProbeResult::Success);
}

#[tokio::test]
async fn http_redirects_are_followed_only_on_the_same_host() {
    let (address, seen) = http_server().await;
    assert_eq!(http_probe(address, "/to-ok").await, ProbeResult::Success);
    assert_eq!(
        http_probe(address, "/to-fail").await,
        ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(
        http_probe(address, "/elsewhere").await,
        ProbeResult::Warning("Probe terminated redirects, Response body: moved away".into())
    );
    assert_eq!(
        http_probe(address, "/no-location").await,
        ProbeResult::Warning("Probe terminated redirects, Response body: nowhere".into())
    );
    assert_eq!(
        http_probe(address, "/loop").await,
        ProbeResult::Failure("Get \"/loop\": stopped after 10 redirects".into())
    );
    let seen = seen.lock().unwrap();
    let loops = seen.iter().filter(|(target, _)| target == "/loop").count();
    assert_eq!(loops, 10, "Go's client sends 10 requests before giving up");
    let (_, followed) = seen.iter().find(|(target, _)| target == "/ok").unwrap();
    assert_eq!(
        followed["user-agent"], "kube-probe/1.33",
        "a redirect keeps the probe's headers"
    );
    let referer = format!("http://127.0.0.1:{}/to-ok", address.port());
    assert_eq!(followed["referer"], referer.as_str());
}

#[tokio::test]
async fn http_sends_kubelet_headers_and_custom_ones() {
    let (address, seen) = http_server().await;
    let spec = probe(serde_json::json!({"httpGet": {
        "path": "/ok", "port": "web",
        "httpHeaders": [{"name": "x-probe", "value": "a"}, {"name": "X-Probe", "value": "b"}, {"name": "Host", "value": "app.test"}]
    }}));
    let mut target = loopback();
    target.named_ports = vec![("web".into(), i32::from(address.port()))];
    assert_eq!(probe_once(&spec, &target, &no_exec()).await, ProbeResult::Success);
    let seen = seen.lock().unwrap();
    let (_, headers) = seen.last().unwrap();
    assert_eq!(headers["user-agent"], "kube-probe/1.33");
    assert_eq!(headers["accept"], "*/*");
    assert_eq!(headers["host"], "app.test");
    assert_eq!(headers["connection"], "close");
    let probes: Vec<_> = headers
        .get_all("x-probe")
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    assert_eq!(probes, ["a", "b"]);
    assert!(
        !headers.contains_key("accept-encoding"),
        "the kubelet disables compression"
    );
}

#[tokio::test]
async fn http_request_head_is_written_as_go_writes_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buffer = [0u8; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0);
            head.extend_from_slice(&buffer[..read]);
        }
        stream
            .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8(head).unwrap()
    });
    let spec = probe(serde_json::json!({"httpGet": {"path": "/healthz", "port": port}}));
    assert_eq!(
        probe_once(&spec, &loopback(), &no_exec()).await,
        ProbeResult::Success
    );
    let head = server.await.unwrap();
    assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
    assert!(head.contains("\r\nUser-Agent: kube-probe/1.33\r\n"), "{head}");
    assert!(head.contains("\r\nAccept: */*\r\n"), "{head}");
}

#[tokio::test]
async fn http_connection_refused_and_timeout_read_as_kubelet_events() {
    let port = closed_port().await;
    let spec = probe(serde_json::json!({"httpGet": {"path": "/", "port": port}}));
    assert_eq!(
        probe_once(&spec, &loopback(), &no_exec()).await,
        ProbeResult::Failure(format!(
            "Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );
    let (address, _) = http_server().await;
    let started = std::time::Instant::now();
    assert_eq!(
        http_probe(address, "/slow").await,
        ProbeResult::Failure(format!(
            "Get \"http://127.0.0.1:{}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            address.port()
        ))
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeoutSeconds bounds the probe"
    );
}

#[tokio::test]
async fn https_probe_skips_certificate_verification() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let certificate = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(request.uri().path()).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let spec = probe(serde_json::json!({"httpGet": {"path": "/ok", "port": port, "scheme": "HTTPS"}}));
    assert_eq!(
        probe_once(&spec, &loopback(), &no_exec()).await,
        ProbeResult::Success
    );
    let spec = probe(serde_json::json!({"httpGet": {"path": "/fail", "port": port, "scheme": "HTTPS"}}));
    assert_eq!(
        probe_once(&spec, &loopback(), &no_exec()).await,
        ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
    );
}

#[tokio::test]
async fn tcp_probe_connects_or_reports_the_dial_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let spec = probe(serde_json::json!({"tcpSocket": {"port": port}}));
    assert_eq!(
        probe_once(&spec, &loopback(), &no_exec()).await,
        ProbeResult::Success
    );
    drop(listener);
    assert_eq!(
        probe_once(&spec, &loopback(), &no_exec()).await,
        ProbeResult::Failure(format!("dial tcp 127.0.0.1:{port}: connect: connection refused"))
    );
    let spec = probe(serde_json::json!({"tcpSocket": {"port": "db"}}));
    assert_eq!(
        probe_once(&spec, &loopback(), &no_exec()).await,
        ProbeResult::Unknown("strconv.Atoi: parsing \"db\": invalid syntax".into())
    );
}

/// A `grpc.health.v1.Health` server: `""` and `"app"` are SERVING, `"db"` NOT_SERVING, others NotFound.
#[derive(Debug, Clone, Default)]
struct Health {
    user_agents: Arc<Mutex<Vec<String>>>,
}

impl tonic::server::NamedService for Health {
    const NAME: &'static str = "grpc.health.v1.Health";
}

impl Service<http::Request<tonic::body::Body>> for Health {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let health = self.clone();
        Box::pin(async move {
            if let Some(agent) = request.headers().get("user-agent") {
                health
                    .user_agents
                    .lock()
                    .unwrap()
                    .push(agent.to_str().unwrap().to_string());
            }
            if request.uri().path() != HEALTH_CHECK_PATH {
                return Ok(tonic::Status::unimplemented("no such method").into_http());
            }
            let codec = tonic_prost::ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default();
            Ok(tonic::server::Grpc::new(codec).unary(Check, request).await)
        })
    }
}

struct Check;

impl tonic::server::UnaryService<HealthCheckRequest> for Check {
    type Response = HealthCheckResponse;
    type Future = BoxFuture<tonic::Response<HealthCheckResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<HealthCheckRequest>) -> Self::Future {
        Box::pin(async move {
            match request.into_inner().service.as_str() {
                "" | "app" => Ok(tonic::Response::new(HealthCheckResponse { status: 1 })),
                "db" => Ok(tonic::Response::new(HealthCheckResponse { status: 2 })),
                _ => Err(tonic::Status::not_found("unknown service")),
            }
        })
    }
}

/// A gRPC server without the health service.
#[derive(Debug, Clone)]
struct Other;

impl tonic::server::NamedService for Other {
    const NAME: &'static str = "test.Other";
}

impl Service<http::Request<tonic::body::Body>> for Other {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async { Ok(tonic::Status::unimplemented("").into_http()) })
    }
}

async fn grpc_probe(port: u16, service: Option<&str>) -> ProbeResult {
    let spec = probe(serde_json::json!({"grpc": {"port": port, "service": service}, "timeoutSeconds": 1}));
    probe_once(&spec, &loopback(), &no_exec()).await
}

#[tokio::test]
async fn grpc_health_check_round_trip() {
    let health = Health::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tonic::transport::Server::builder()
        .add_service(health.clone())
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);

    assert_eq!(grpc_probe(port, None).await, ProbeResult::Success);
    assert_eq!(grpc_probe(port, Some("app")).await, ProbeResult::Success);
    assert_eq!(
        grpc_probe(port, Some("db")).await,
        ProbeResult::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    assert_eq!(
        grpc_probe(port, Some("cache")).await,
        ProbeResult::Failure(
            "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service".into()
        )
    );
    let agents = health.user_agents.lock().unwrap();
    assert!(
        agents.iter().all(|agent| agent.starts_with("kube-probe/1.33")),
        "{agents:?}"
    );
}

#[tokio::test]
async fn grpc_without_health_service_or_server_fails_as_kubelet_says() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tonic::transport::Server::builder()
        .add_service(Other)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    let ProbeResult::Failure(message) = grpc_probe(port, None).await else {
        panic!("expected a failure")
    };
    assert!(
        message.starts_with(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): "
        ),
        "{message}"
    );

    let port = closed_port().await;
    assert_eq!(
        grpc_probe(port, None).await,
        ProbeResult::Failure(format!(
            "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: context deadline exceeded"
        ))
    );
}

#[tokio::test]
async fn exec_exit_codes_output_and_timeouts() {
    let spec = probe(serde_json::json!({"exec": {"command": ["check", "$(PORT)"]}, "timeoutSeconds": 2}));
    let mut target = loopback();
    target.static_env = vec![("PORT".into(), "8080".into())];

    let runner = ScriptedExec::replying(Ok(ExecOutput {
        exit_code: 0,
        output: b"ok".to_vec(),
    }));
    assert_eq!(probe_once(&spec, &target, &runner).await, ProbeResult::Success);
    assert_eq!(runner.commands.lock().unwrap()[0], ["check", "8080"]);

    let runner = ScriptedExec::replying(Ok(ExecOutput {
        exit_code: 3,
        output: b"not yet\n".to_vec(),
    }));
    assert_eq!(
        probe_once(&spec, &target, &runner).await,
        ProbeResult::Failure("not yet\n".into())
    );

    let runner = ScriptedExec::replying(Err(ExecError::TimedOut));
    assert_eq!(
        probe_once(&spec, &target, &runner).await,
        ProbeResult::Failure("command \"check 8080\" timed out".into())
    );

    let runner = ScriptedExec::replying(Err(ExecError::Failed("container not running".into())));
    assert_eq!(
        probe_once(&spec, &target, &runner).await,
        ProbeResult::Unknown("container not running".into())
    );
}

#[tokio::test(start_paused = true)]
async fn exec_that_hangs_fails_at_the_timeout() {
    let spec = probe(serde_json::json!({"exec": {"command": ["sleep", "60"]}, "timeoutSeconds": 2}));
    let mut runner = ScriptedExec::replying(Ok(ExecOutput {
        exit_code: 0,
        output: Vec::new(),
    }));
    runner.hang = true;
    let started = tokio::time::Instant::now();
    assert_eq!(
        probe_once(&spec, &loopback(), &runner).await,
        ProbeResult::Failure("command \"sleep 60\" timed out".into())
    );
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}
