//! The kubelet's HTTPS API on port 10250, as the API server reaches it for `pods/log`, `pods/exec`,
//! `pods/attach` and `pods/portforward` (kubelet's `pkg/kubelet/server/server.go`): `/containerLogs/...`,
//! `/exec/...`, `/attach/...` and `/portForward/...`; the Summary API, `/stats/summary` (`stats.rs`); and `/metrics`.
//!
//! Only clients with a certificate from the cluster CA are served (kubelet's `--client-ca-file`; the API server
//! presents its kubelet client certificate). The runtime's exec forks, which this multi-threaded process must
//! not do: exec and attach run the helper `bonsai exec` / `bonsai attach` with piped stdio instead, and bridge
//! its streams and exit code to the client's [`streaming::RemoteCommand`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use runtime::container::{ContainerInfo, Runtime, State};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::KubeletError;

type Body = BoxBody<Bytes, Infallible>;

/// How often a followed log is checked for more lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What the kubelet API serves with.
#[derive(Clone, Debug)]
pub struct KubeletServerConfig {
    /// The node's address and port 10250.
    pub address: SocketAddr,
    /// The cluster CA: clients must present a certificate it issued.
    pub client_ca_pem: String,
    /// This node's serving certificate (from the cluster CA) and its key.
    pub cert_pem: String,
    pub key_pem: String,
    /// The `bonsai` binary and its data directory, for the exec and attach helper processes.
    pub bonsai: PathBuf,
    pub data_dir: PathBuf,
    /// The node's name, for the Summary API (its pods are listed from the API server by it).
    pub node_name: String,
}

#[allow(missing_debug_implementations)] // kube::Client is not Debug
struct Kubelet {
    client: kube::Client,
    runtime: Arc<Runtime>,
    config: KubeletServerConfig,
    stats: Arc<crate::stats::Stats>,
}

fn tls_error(e: impl std::fmt::Display) -> KubeletError {
    KubeletError::Invalid(format!("the kubelet API's TLS set-up: {e}"))
}

fn tls_config(config: &KubeletServerConfig) -> Result<rustls::ServerConfig, KubeletError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(config.client_ca_pem.as_bytes()) {
        roots.add(ca.map_err(tls_error)?).map_err(tls_error)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(tls_error)?;
    let chain = CertificateDer::pem_slice_iter(config.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(tls_error)?;
    let key = PrivateKeyDer::from_pem_slice(config.key_pem.as_bytes()).map_err(tls_error)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Binds the kubelet API (failing at once if the port is taken) and serves it in the background.
pub async fn start(
    client: kube::Client,
    runtime: Arc<Runtime>,
    config: KubeletServerConfig,
) -> Result<(), KubeletError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&config)?));
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .map_err(|source| KubeletError::Io {
            path: PathBuf::from(config.address.to_string()),
            source,
        })?;
    let stats = crate::stats::start(runtime.clone());
    let kubelet = Arc::new(Kubelet {
        client,
        runtime,
        config,
        stats,
    });
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting on the kubelet API");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, kubelet) = (acceptor.clone(), kubelet.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "kubelet API TLS handshake");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |request| {
                    let kubelet = kubelet.clone();
                    async move { Ok::<_, Infallible>(kubelet.handle(request).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!(%peer, error = %e, "kubelet API connection");
                }
            });
        }
    });
    Ok(())
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `GET /metrics`: the process registry in the Prometheus text format.
fn scrape() -> Result<Response<Body>, Refusal> {
    let text = ::metrics::registry().encode().map_err(internal)?;
    let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(::metrics::CONTENT_TYPE),
    );
    Ok(response)
}

/// A request the kubelet refuses: the HTTP status and kube's words.
struct Refusal(StatusCode, String);

impl From<streaming::Error> for Refusal {
    fn from(e: streaming::Error) -> Self {
        match e {
            streaming::Error::Refused { status, message } => Refusal(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                message,
            ),
            other => Refusal(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

fn internal(message: impl std::fmt::Display) -> Refusal {
    Refusal(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
}

/// The kubelet's URL path, split (namespaces, pods and containers are DNS names: nothing to decode).
fn segments(path: &str) -> Vec<String> {
    path.trim_matches('/').split('/').map(str::to_string).collect()
}

impl Kubelet {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let parts = segments(request.uri().path());
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let result = match (request.method(), parts.as_slice()) {
            (&Method::GET, ["containerLogs", ns, pod, container]) => {
                let query = request.uri().query().unwrap_or("").to_string();
                self.logs(ns, pod, container, &query).await
            }
            (&Method::GET | &Method::POST, ["exec", ns, pod, container]) => {
                self.remote_command(request, streaming::Subresource::Exec, ns, pod, container)
                    .await
            }
            (&Method::GET | &Method::POST, ["attach", ns, pod, container]) => {
                self.remote_command(request, streaming::Subresource::Attach, ns, pod, container)
                    .await
            }
            (&Method::GET | &Method::POST, ["portForward", ns, pod]) => {
                self.port_forward(request, ns, pod).await
            }
            (&Method::GET, ["stats", "summary"]) => self.summary().await,
            // The process's metrics (in the server, the same registry the API server serves).
            (&Method::GET, ["metrics"]) => scrape(),
            _ => Err(Refusal(StatusCode::NOT_FOUND, "404 page not found".into())),
        };
        result.unwrap_or_else(|Refusal(status, message)| text(status, message))
    }

    async fn pod(&self, namespace: &str, name: &str) -> Result<Pod, Refusal> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(pod)) => Ok(pod),
            Ok(None) => Err(Refusal(
                StatusCode::NOT_FOUND,
                format!("pod {namespace}/{name} not found"),
            )),
            Err(e) => Err(internal(e)),
        }
    }

    /// The runtime attempts of `container` in `pod`, oldest first.
    async fn attempts(&self, pod: &Pod, container: &str) -> Result<Vec<ContainerInfo>, Refusal> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let runtime = self.runtime.clone();
        let all = tokio::task::spawn_blocking(move || runtime.list())
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(crate::pods::attempts_by_name(&uid, &all)
            .remove(container)
            .map(|a| a.into_iter().map(|(_, info)| info).collect())
            .unwrap_or_default())
    }

    /// The attempt that is running now (the newest), or kubelet's words for a container that has none.
    async fn current(&self, pod: &Pod, container: &str) -> Result<ContainerInfo, Refusal> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.attempts(pod, container).await?.pop().ok_or_else(|| {
            bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            ))
        })
    }

    async fn logs(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        query: &str,
    ) -> Result<Response<Body>, Refusal> {
        let options = LogOptions::parse(query).map_err(bad_request)?;
        let pod = self.pod(namespace, name).await?;
        let mut attempts = self.attempts(&pod, container).await?;
        let info = if options.previous {
            let len = attempts.len();
            if len < 2 {
                return Err(bad_request(format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                )));
            }
            attempts.swap_remove(len - 2)
        } else {
            attempts.pop().ok_or_else(|| {
                bad_request(format!(
                    "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
                ))
            })?
        };
        let follow = options.follow && !options.previous;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            if let Err(e) = stream_log(&runtime, &info, options, follow, &tx).await {
                tracing::debug!(error = %e, "streaming a container log");
            }
        });
        let body = StreamBody::new(tokio_stream_from(rx)).boxed();
        let mut response = Response::new(body);
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        Ok(response)
    }

    async fn remote_command(
        self: Arc<Self>,
        request: Request<Incoming>,
        subresource: streaming::Subresource,
        namespace: &str,
        name: &str,
        container: &str,
    ) -> Result<Response<Body>, Refusal> {
        let options = streaming::StreamOptions::from_query(request.uri().query().unwrap_or(""))?;
        let negotiated = streaming::negotiate(&request, subresource)?;
        let pod = self.pod(namespace, name).await?;
        let info = self.current(&pod, container).await?;
        if !matches!(info.state, State::Running(_)) {
            return Err(bad_request(format!(
                "container {container} is not valid for pod {name}: container not running ({})",
                info.config.id
            )));
        }
        let mut helper = tokio::process::Command::new(&self.config.bonsai);
        let mut resize_fifo = None;
        // The operands, added last (after the terminal's first size, which comes once the session is up).
        let mut operands: Vec<std::ffi::OsString> = vec![info.config.id.clone().into()];
        match subresource {
            streaming::Subresource::Attach => {
                helper.arg("attach").arg("-d").arg(&self.config.data_dir);
                if options.stdin {
                    helper.arg("-i");
                }
                if options.tty && info.config.tty {
                    // The container's terminal follows the client's: its resizes reach the helper through a FIFO.
                    let fifo = resize_fifo_path(&self.config.data_dir);
                    match make_fifo(&fifo) {
                        Ok(()) => {
                            helper.arg("--resize-fifo").arg(&fifo);
                            resize_fifo = Some(fifo);
                        }
                        Err(e) => tracing::warn!(error = %e, "no terminal resizes for this attach"),
                    }
                }
            }
            _ => {
                helper.arg("exec").arg("-d").arg(&self.config.data_dir);
                if options.tty {
                    // The helper gives the command a terminal and bridges it to its pipes; the client's resizes
                    // reach it through a FIFO.
                    helper.arg("-t");
                    let fifo = resize_fifo_path(&self.config.data_dir);
                    match make_fifo(&fifo) {
                        Ok(()) => {
                            helper.arg("--resize-fifo").arg(&fifo);
                            resize_fifo = Some(fifo);
                        }
                        Err(e) => tracing::warn!(error = %e, "no terminal resizes for this exec"),
                    }
                }
                operands.push("--".into());
                operands.extend(options.command.iter().map(Into::into));
            }
        }
        let piped = |on: bool| {
            if on {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            }
        };
        helper
            .stdin(piped(options.stdin))
            .stdout(piped(options.stdout || options.tty))
            .stderr(piped(options.stderr))
            .kill_on_drop(true);
        let response = negotiated.response::<Body>();
        let upgrade = hyper::upgrade::on(request);
        tokio::spawn(async move {
            let io = match streaming::upgraded(upgrade).await {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrading a remote command");
                    return;
                }
            };
            let command = match streaming::serve_remote_command(&negotiated, io, &options).await {
                Ok(command) => command,
                Err(e) => {
                    tracing::debug!(error = %e, "setting up a remote command");
                    return;
                }
            };
            run_helper(helper, operands, command, resize_fifo).await;
        });
        Ok(response)
    }
    /// `GET /stats/summary`: the last sample of the node and its pods, the pods named as the API server knows
    /// the ones bound to this node (the runtime knows only their uids).
    async fn summary(&self) -> Result<Response<Body>, Refusal> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let params = kube::api::ListParams::default()
            .fields(&format!("spec.nodeName={}", self.config.node_name))
            .match_any();
        let list = pods.list(&params).await.map_err(internal)?;
        let named: Vec<(String, String, String)> = list
            .items
            .iter()
            .filter_map(|p| {
                let m = &p.metadata;
                Some((m.uid.clone()?, m.namespace.clone()?, m.name.clone()?))
            })
            .collect();
        let summary = self.stats.summary(&self.config.node_name, &named);
        let body = serde_json::to_vec(&summary).map_err(internal)?;
        let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }

    async fn port_forward(
        self: Arc<Self>,
        request: Request<Incoming>,
        namespace: &str,
        name: &str,
    ) -> Result<Response<Body>, Refusal> {
        let negotiated = streaming::negotiate(&request, streaming::Subresource::PortForward)?;
        let pod = self.pod(namespace, name).await?;
        let pod_ip: std::net::IpAddr = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| bad_request(format!("pod {name} has no IP address yet")))?;
        let response = negotiated.response::<Body>();
        let upgrade = hyper::upgrade::on(request);
        tokio::spawn(async move {
            let io = match streaming::upgraded(upgrade).await {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrading a port-forward");
                    return;
                }
            };
            let mut forward = match streaming::serve_port_forward(&negotiated, io).await {
                Ok(forward) => forward,
                Err(e) => {
                    tracing::debug!(error = %e, "setting up a port-forward");
                    return;
                }
            };
            while let Some(connection) = forward.next().await {
                tokio::spawn(forward_one(pod_ip, connection));
            }
        });
        Ok(response)
    }
}

/// How long an exec with a terminal waits for the client's first terminal size.
const FIRST_SIZE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A fresh FIFO path for one exec's terminal sizes, under `<data-dir>/agent/exec`.
fn resize_fifo_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    data_dir
        .join("agent/exec")
        .join(format!("{}-{n}.resize", std::process::id()))
}

fn make_fifo(path: &std::path::Path) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Removes a file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Bridges the helper process's stdio to the client's streams and ends the session with its exit code.
async fn run_helper(
    mut helper: tokio::process::Command,
    operands: Vec<std::ffi::OsString>,
    mut command: streaming::RemoteCommand,
    resize_fifo: Option<std::path::PathBuf>,
) {
    // Removed when the session ends, however it ends.
    let _fifo = resize_fifo.as_ref().map(|path| RemoveOnDrop(path.clone()));
    if let (Some(path), Some(mut sizes)) = (resize_fifo, command.resize.take()) {
        // The client sends its terminal's size first: the command's terminal is made with it, so that even a
        // command that asks at once (`stty size`) sees it. A client that sends none gets the default.
        if let Ok(Some(first)) = tokio::time::timeout(FIRST_SIZE_WAIT, sizes.recv()).await {
            helper
                .arg("--terminal-size")
                .arg(format!("{}x{}", first.height, first.width));
        }
        // Opened read-write so that opening never waits for (or fails without) the helper's reading end.
        match tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&path)
        {
            Ok(mut fifo) => {
                tokio::spawn(async move {
                    while let Some(size) = sizes.recv().await {
                        let line = format!("{} {}\n", size.height, size.width);
                        if fifo.write_all(line.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "opening the resize FIFO"),
        }
    }
    helper.args(operands);
    let mut child = match helper.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = command
                .finish(Err(streaming::Failure::Internal(format!(
                    "running the exec helper: {e}"
                ))))
                .await;
            return;
        }
    };
    if let (Some(mut from), Some(mut to)) = (command.stdin.take(), child.stdin.take()) {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        });
    }
    // A client that goes away (its side of an output stream closes) ends the helper: an attach would otherwise
    // stay until the container ends.
    let (gone_tx, mut gone) = tokio::sync::mpsc::channel::<()>(2);
    let stdout = copy_to_client(child.stdout.take(), command.stdout.take(), &gone_tx);
    let stderr = copy_to_client(child.stderr.take(), command.stderr.take(), &gone_tx);
    drop(gone_tx);
    let status = tokio::select! {
        status = child.wait() => status,
        Some(()) = gone.recv() => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    for copy in [stdout, stderr].into_iter().flatten() {
        let _ = copy.await;
    }
    let result = match status.map(|s| s.code()) {
        Ok(Some(0)) => Ok(()),
        Ok(Some(code)) => Err(streaming::Failure::ExitCode(code)),
        Ok(None) => Err(streaming::Failure::Internal("the exec helper was killed".into())),
        Err(e) => Err(streaming::Failure::Internal(format!(
            "waiting for the exec helper: {e}"
        ))),
    };
    if let Err(e) = command.finish(result).await {
        tracing::debug!(error = %e, "ending a remote command");
    }
}

/// Copies one of the helper's outputs to the client, telling `gone` when the client's side is closed.
fn copy_to_client<R>(
    from: Option<R>,
    to: Option<tokio::io::DuplexStream>,
    gone: &tokio::sync::mpsc::Sender<()>,
) -> Option<tokio::task::JoinHandle<()>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let (mut from, mut to, gone) = (from?, to?, gone.clone());
    Some(tokio::spawn(async move {
        if tokio::io::copy(&mut from, &mut to).await.is_err() {
            let _ = gone.send(()).await;
        }
        let _ = to.shutdown().await;
    }))
}

/// One forwarded connection: dial the pod from the node and copy both ways; when the pod's side ends, both
/// streams towards the client are dropped (see [`streaming::ForwardedConnection`]).
async fn forward_one(pod_ip: std::net::IpAddr, connection: streaming::ForwardedConnection) {
    let streaming::ForwardedConnection {
        port,
        mut data,
        mut error,
        ..
    } = connection;
    let mut tcp = match tokio::net::TcpStream::connect((pod_ip, port)).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let _ = error
                .write_all(format!("error forwarding port {port} to pod {pod_ip}: {e}").as_bytes())
                .await;
            return;
        }
    };
    let (mut pod_read, mut pod_write) = tcp.split();
    let (mut client_read, mut client_write) = tokio::io::split(&mut data);
    let to_pod = async {
        let _ = tokio::io::copy(&mut client_read, &mut pod_write).await;
        let _ = pod_write.shutdown().await;
        std::future::pending::<()>().await;
    };
    let from_pod = async {
        let _ = tokio::io::copy(&mut pod_read, &mut client_write).await;
    };
    tokio::select! {
        () = to_pod => {}
        () = from_pod => {}
    }
    drop(error);
}

/// The query of `/containerLogs` (kubelet's `PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    /// Only lines written at or after this time (`sinceSeconds` or `sinceTime`), in nanoseconds since the epoch.
    pub since_nanos: Option<i128>,
}

impl LogOptions {
    pub fn parse(query: &str) -> Result<LogOptions, String> {
        let mut options = LogOptions::default();
        let number = |key: &str, value: &str| {
            value
                .parse::<i64>()
                .map_err(|_| format!("{key}: invalid value {value:?}"))
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let on = matches!(value.as_ref(), "" | "true" | "1");
            match key.as_ref() {
                "follow" => options.follow = on,
                "previous" => options.previous = on,
                "timestamps" => options.timestamps = on,
                "tailLines" => {
                    options.tail_lines = Some(usize::try_from(number("tailLines", &value)?).unwrap_or(0));
                }
                "limitBytes" => {
                    let n = number("limitBytes", &value)?;
                    if n < 1 {
                        return Err("limitBytes: Invalid value: must be greater than 0".into());
                    }
                    options.limit_bytes = usize::try_from(n).ok();
                }
                "sinceSeconds" => {
                    let n = number("sinceSeconds", &value)?;
                    if n < 1 {
                        return Err("sinceSeconds: Invalid value: must be greater than 0".into());
                    }
                    let now = k8s_openapi::jiff::Timestamp::now().as_nanosecond();
                    options.since_nanos = Some(now - i128::from(n) * 1_000_000_000);
                }
                "sinceTime" => {
                    let t: k8s_openapi::jiff::Timestamp =
                        value.parse().map_err(|e| format!("sinceTime: {e}"))?;
                    options.since_nanos = Some(t.as_nanosecond());
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

/// One CRI log line: `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`.
#[derive(Debug, PartialEq, Eq)]
struct CriLine<'a> {
    time: &'a str,
    full: bool,
    text: &'a [u8],
}

fn parse_cri_line(line: &[u8]) -> Option<CriLine<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let _stream = fields.next()?;
    let tag = fields.next()?;
    let text = fields.next().unwrap_or(b"");
    Some(CriLine {
        time,
        full: !tag.starts_with(b"P"),
        text,
    })
}

/// Turns CRI lines into the plain text a client reads, as kubelet's `kuberuntime/logs` does: partial lines
/// joined, the timestamp prefixed once per joined line, output stopped at `limitBytes`.
#[derive(Debug)]
struct LogWriter {
    timestamps: bool,
    since_nanos: Option<i128>,
    remaining: Option<usize>,
    /// The previous message was partial: the next continues its line (no timestamp prefix).
    in_line: bool,
}

impl LogWriter {
    fn new(options: &LogOptions) -> LogWriter {
        LogWriter {
            timestamps: options.timestamps,
            since_nanos: options.since_nanos,
            remaining: options.limit_bytes,
            in_line: false,
        }
    }

    fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// The text of one CRI line (`raw`, without its newline).
    fn write(&mut self, raw: &[u8]) -> Vec<u8> {
        let Some(line) = parse_cri_line(raw) else {
            return Vec::new();
        };
        if let Some(since) = self.since_nanos
            && line
                .time
                .parse::<k8s_openapi::jiff::Timestamp>()
                .is_ok_and(|t| t.as_nanosecond() < since)
        {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(line.text.len() + 40);
        if self.timestamps && !self.in_line {
            out.extend_from_slice(line.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(line.text);
        if line.full {
            out.push(b'\n');
        }
        self.in_line = !line.full;
        if let Some(remaining) = self.remaining.as_mut() {
            out.truncate(*remaining);
            *remaining -= out.len();
        }
        out
    }
}

/// Where the last `tail` full lines begin among `lines` (partial pieces belong to the line their final piece ends).
fn tail_start(lines: &[&[u8]], tail: usize) -> usize {
    let mut full_seen = 0;
    for (i, raw) in lines.iter().enumerate().rev() {
        if parse_cri_line(raw).is_some_and(|l| l.full) {
            if full_seen == tail {
                return i + 1;
            }
            full_seen += 1;
        }
    }
    0
}

/// Sends the log of one attempt, and with `follow` what it writes after, until the container has exited and the
/// file has no more.
async fn stream_log(
    runtime: &Arc<Runtime>,
    info: &ContainerInfo,
    options: LogOptions,
    follow: bool,
    tx: &tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) -> Result<(), std::io::Error> {
    let mut writer = LogWriter::new(&options);
    let mut file = tokio::fs::File::open(&info.log_path).await?;
    let mut content = Vec::new();
    file.read_to_end(&mut content).await?;
    let mut offset = content.len() as u64;
    // Only whole lines now; an unfinished last line is read again with the rest of it.
    let whole = content.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    offset -= (content.len() - whole) as u64;
    let lines: Vec<&[u8]> = content[..whole]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let start = options.tail_lines.map_or(0, |tail| tail_start(&lines, tail));
    let mut out = Vec::new();
    for raw in &lines[start..] {
        out.extend(writer.write(raw));
    }
    if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
        return Ok(());
    }
    if !follow {
        return Ok(());
    }
    let id = info.config.id.clone();
    let mut pending = Vec::new();
    while !writer.done() {
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut more = Vec::new();
        file.read_to_end(&mut more).await?;
        offset += more.len() as u64;
        pending.extend_from_slice(&more);
        let mut out = Vec::new();
        while let Some(newline) = pending.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=newline).collect();
            out.extend(writer.write(&raw[..newline]));
        }
        if !out.is_empty() {
            if tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                return Ok(());
            }
            continue;
        }
        if tx.is_closed() {
            return Ok(());
        }
        let (runtime, id) = (runtime.clone(), id.clone());
        let running = tokio::task::spawn_blocking(move || runtime.status(&id))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|i| !matches!(i.state, State::Exited(..)));
        if !running && more.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn cri_lines_become_plain_text_with_partials_joined() {
        let mut w = LogWriter::new(&LogOptions::default());
        assert_eq!(
            w.write(b"2026-01-01T00:00:00.000000001Z stdout F hello"),
            b"hello\n"
        );
        assert_eq!(w.write(b"2026-01-01T00:00:00.000000002Z stdout P par"), b"par");
        assert_eq!(
            w.write(b"2026-01-01T00:00:00.000000003Z stderr F tial"),
            b"tial\n"
        );
        assert_eq!(w.write(b"2026-01-01T00:00:00.000000004Z stdout F "), b"\n");
    }

    #[test]
    fn timestamps_prefix_each_joined_line_once() {
        let options = LogOptions::parse("timestamps=true").unwrap();
        let mut w = LogWriter::new(&options);
        assert_eq!(
            w.write(b"2026-01-01T00:00:00.000000002Z stdout P a"),
            b"2026-01-01T00:00:00.000000002Z a"
        );
        assert_eq!(w.write(b"2026-01-01T00:00:00.000000003Z stdout F b"), b"b\n");
        assert_eq!(
            w.write(b"2026-01-01T00:00:01.000000000Z stdout F c"),
            b"2026-01-01T00:00:01.000000000Z c\n"
        );
    }

    #[test]
    fn limit_bytes_and_since_time() {
        let options = LogOptions::parse("limitBytes=4&sinceTime=2026-01-01T00:00:01Z").unwrap();
        let mut w = LogWriter::new(&options);
        assert!(w.write(b"2026-01-01T00:00:00.000000000Z stdout F old").is_empty());
        assert_eq!(w.write(b"2026-01-01T00:00:02.000000000Z stdout F abc"), b"abc\n");
        assert!(w.done());
        assert!(
            w.write(b"2026-01-01T00:00:03.000000000Z stdout F more")
                .is_empty()
        );
        assert!(LogOptions::parse("limitBytes=0").is_err());
        assert!(LogOptions::parse("sinceSeconds=x").is_err());
    }

    #[test]
    fn tail_counts_whole_lines() {
        let lines: Vec<&[u8]> = vec![
            b"t stdout F one",
            b"t stdout P tw",
            b"t stdout F o",
            b"t stdout F three",
        ];
        assert_eq!(tail_start(&lines, 1), 3);
        assert_eq!(tail_start(&lines, 2), 1);
        assert_eq!(tail_start(&lines, 0), 4);
        assert_eq!(tail_start(&lines, 10), 0);
    }

    #[test]
    fn paths_split_into_segments() {
        assert_eq!(
            segments("/containerLogs/ns/pod/c"),
            vec!["containerLogs", "ns", "pod", "c"]
        );
    }
}
