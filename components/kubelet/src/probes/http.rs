//! HTTP(S) probes (`pkg/probe/http`): one GET per probe on a fresh connection (the kubelet disables
//! keep-alives), the kubelet's headers, HTTPS without certificate verification, redirects followed only to the
//! same host name (at most 10), 10 KiB of body, and everything within `timeoutSeconds` (Go's
//! `http.Client.Timeout`). Success is `200 <= code < 400`; a redirect the prober did not follow is a success with a
//! warning.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::HTTPGetAction;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};
use url::{Position, Url};

use super::tcp::dial;
use super::{KUBE_PROBE_USER_AGENT, ProbeResult, ProbeTarget, go_quote, join_host_port, resolve_port};

/// `maxRespBodyLength`: the most of a response body the prober reads.
const MAX_BODY_BYTES: usize = 10 * 1024;
/// Go's default redirect limit, which the kubelet's redirect checker keeps.
const MAX_REDIRECTS: usize = 10;

pub(super) async fn probe(action: &HTTPGetAction, target: &ProbeTarget, timeout: Duration) -> ProbeResult {
    match ProbeRequest::new(action, target) {
        Ok(request) => request.run(Instant::now() + timeout).await,
        Err(message) => ProbeResult::Unknown(message),
    }
}

/// The request `NewRequestForHTTPGetAction` builds.
#[derive(Debug)]
struct ProbeRequest {
    first: Hop,
    /// Header lines as Go writes them (canonical names), without Host.
    headers: Vec<(String, String)>,
}

/// One request of a redirect chain.
#[derive(Debug, Clone)]
struct Hop {
    url: Url,
    /// `host:port` as the URL was written (the `url` crate drops default ports; Go's Host line keeps them).
    authority: String,
    /// A `Host` header from the probe's httpHeaders (Go's `req.Host`).
    host_override: Option<String>,
    referer: Option<String>,
}

impl ProbeRequest {
    fn new(action: &HTTPGetAction, target: &ProbeTarget) -> Result<Self, String> {
        let scheme = action.scheme.as_deref().unwrap_or_default().to_ascii_lowercase();
        let scheme = if scheme.is_empty() {
            "http".to_string()
        } else {
            scheme
        };
        let host = action
            .host
            .as_deref()
            .filter(|host| !host.is_empty())
            .unwrap_or(&target.pod_ip);
        let port = resolve_port(&action.port, &target.named_ports)?;
        let authority = join_host_port(host, port);
        let path = action.path.as_deref().unwrap_or_default();
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let url = Url::parse(&format!("{scheme}://{authority}{path}")).map_err(|error| {
            format!(
                "parse {}: {error}",
                go_quote(&format!("{scheme}://{authority}{path}"))
            )
        })?;

        let mut headers: Vec<(String, String)> = action
            .http_headers
            .iter()
            .flatten()
            .map(|header| (canonical_header_name(&header.name), header.value.clone()))
            .collect();
        // Go writes one User-Agent line, the first value, and none at all for an empty one.
        match headers.iter().position(|(name, _)| name == "User-Agent") {
            None => headers.push(("User-Agent".into(), KUBE_PROBE_USER_AGENT.into())),
            Some(first) => {
                let agent = headers[first].1.clone();
                headers.retain(|(name, _)| name != "User-Agent");
                if !agent.is_empty() {
                    headers.insert(first.min(headers.len()), ("User-Agent".into(), agent));
                }
            }
        }
        match headers
            .iter()
            .find(|(name, _)| name == "Accept")
            .map(|(_, value)| value.is_empty())
        {
            None => headers.push(("Accept".into(), "*/*".into())),
            // "Accept header was overridden but is empty. removing"
            Some(true) => headers.retain(|(name, _)| name != "Accept"),
            Some(false) => {}
        }
        let host_override = headers
            .iter()
            .find(|(name, _)| name == "Host")
            .map(|(_, value)| value.clone())
            .filter(|v| !v.is_empty());
        headers.retain(|(name, _)| name != "Host");
        Ok(ProbeRequest {
            first: Hop {
                url,
                authority,
                host_override,
                referer: None,
            },
            headers,
        })
    }

    /// Go's `http.Client.Do` with the kubelet's `CheckRedirect`, then `DoHTTPProbe`'s verdict.
    async fn run(&self, deadline: Instant) -> ProbeResult {
        let first_host = self.first.url.host_str().map(str::to_owned);
        let mut hop = self.first.clone();
        let mut requests = 0;
        loop {
            requests += 1;
            let (response, connection) = match timeout_at(deadline, self.send(&hop, deadline)).await {
                Ok(Ok(sent)) => sent,
                Ok(Err(message)) => {
                    return ProbeResult::Failure(format!("Get {}: {message}", go_quote(hop.url.as_str())));
                }
                Err(_) => {
                    return ProbeResult::Failure(format!(
                        "Get {}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                        go_quote(hop.url.as_str())
                    ));
                }
            };
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .filter(|location| !location.is_empty())
                .map(str::to_owned);
            // Go's redirectBehavior: these codes redirect a GET; a 3xx without Location is the final response.
            let location = match location {
                Some(location) if matches!(status, 301 | 302 | 303 | 307 | 308) => location,
                _ => return verdict(response, connection, deadline).await,
            };
            let next = match hop.url.join(&location) {
                Ok(next) => next,
                Err(error) => {
                    return ProbeResult::Failure(format!(
                        "Get {}: failed to parse Location header {}: {error}",
                        go_quote(hop.url.as_str()),
                        go_quote(&location)
                    ));
                }
            };
            // followNonLocalRedirects=false: a redirect to another host name ends the chain with this response
            // (http.ErrUseLastResponse), which the verdict reports as a warning.
            if next.host_str() != first_host.as_deref() {
                return verdict(response, connection, deadline).await;
            }
            if requests >= MAX_REDIRECTS {
                return ProbeResult::Failure(format!(
                    "Get {}: stopped after 10 redirects",
                    go_quote(&location)
                ));
            }
            drop((response, connection));
            // Go keeps a custom Host through a redirect only when the Location is relative.
            let relative = matches!(
                Url::parse(&location),
                Err(url::ParseError::RelativeUrlWithoutBase)
            );
            let referer = (!(hop.url.scheme() == "https" && next.scheme() == "http")).then(|| {
                let mut referer = hop.url.clone();
                referer.set_fragment(None);
                referer.to_string()
            });
            hop = Hop {
                authority: authority_of(&next),
                host_override: if relative { hop.host_override.clone() } else { None },
                url: next,
                referer,
            };
        }
    }

    /// Sends one GET on a new connection and returns the response head; the connection lives as long as the
    /// returned task guard, so the body can still be read.
    async fn send(
        &self,
        hop: &Hop,
        deadline: Instant,
    ) -> Result<(Response<Incoming>, ConnectionTask), String> {
        let scheme = hop.url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(format!("unsupported protocol scheme {}", go_quote(scheme)));
        }
        let host = match hop.url.host() {
            Some(url::Host::Domain(name)) => name.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("http: no Host in request URL".into()),
        };
        let port = hop
            .url
            .port_or_known_default()
            .ok_or_else(|| "http: no port in request URL".to_string())?;
        let request = self.request(hop)?;
        // A connection that does not open in time reads as Go's dial timeout under the client's deadline.
        let stream = timeout_at(deadline, dial(&host, port)).await.map_err(|_| {
            format!(
                "dial tcp {}: i/o timeout (Client.Timeout exceeded while awaiting headers)",
                join_host_port(&host, port)
            )
        })??;
        if scheme == "https" {
            let config = tls_config()?;
            let server_name = ServerName::try_from(host.clone()).map_err(|error| format!("tls: {error}"))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, stream)
                .await
                .map_err(|error| error.to_string())?;
            send_on(stream, request).await
        } else {
            send_on(stream, request).await
        }
    }

    fn request(&self, hop: &Hop) -> Result<Request<Empty<Bytes>>, String> {
        let target = &hop.url[Position::BeforePath..Position::AfterQuery];
        let host = hop.host_override.as_deref().unwrap_or(&hop.authority);
        let mut request = Request::get(target)
            .body(Empty::<Bytes>::new())
            .map_err(|error| format!("net/http: invalid request {}: {error}", go_quote(target)))?;
        let headers = request.headers_mut();
        let value = |name: &str, value: &str| {
            HeaderValue::from_str(value)
                .map_err(|_| format!("net/http: invalid header field value for {}", go_quote(name)))
        };
        headers.insert(hyper::header::HOST, value("Host", host)?);
        for (name, field) in &self.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("net/http: invalid header field name {}", go_quote(name)))?;
            headers.append(header, value(name, field)?);
        }
        if let Some(referer) = &hop.referer
            && !headers.contains_key(hyper::header::REFERER)
        {
            headers.insert(hyper::header::REFERER, value("Referer", referer)?);
        }
        // DisableKeepAlives: Go's transport asks the server to close the connection.
        headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        Ok(request)
    }
}

/// `DoHTTPProbe` once the response head is in: reads at most 10 KiB of body, then judges the status code.
async fn verdict(response: Response<Incoming>, connection: ConnectionTask, deadline: Instant) -> ProbeResult {
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut read = Vec::new();
    while read.len() <= MAX_BODY_BYTES {
        match timeout_at(deadline, body.frame()).await {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
            // A body that breaks off is an error of the probe, not a failure of the container.
            Ok(Some(Err(error))) => return ProbeResult::Unknown(hyper_message(&error)),
            Err(_) => {
                return ProbeResult::Unknown(
                    "context deadline exceeded (Client.Timeout or context cancellation while reading body)"
                        .into(),
                );
            }
        }
    }
    drop(connection);
    // Longer bodies are cut, not an error ("Non fatal body truncation").
    read.truncate(MAX_BODY_BYTES);
    if (200..400).contains(&status) {
        if status >= 300 {
            let body = String::from_utf8_lossy(&read);
            return ProbeResult::Warning(format!("Probe terminated redirects, Response body: {body}"));
        }
        return ProbeResult::Success;
    }
    // Kubernetes keeps the body out of the user-facing message (kubernetes#99425).
    ProbeResult::Failure(format!("HTTP probe failed with statuscode: {status}"))
}

async fn send_on<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
) -> Result<(Response<Incoming>, ConnectionTask), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Header names go out in Go's canonical form (User-Agent, X-Custom-Header), as kubelet writes them.
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|error| hyper_message(&error))?;
    let connection = ConnectionTask(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| hyper_message(&error))?;
    Ok((response, connection))
}

/// Drives a probe's connection; dropping it (a timeout, a finished probe) closes the connection.
struct ConnectionTask(tokio::task::JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A hyper error with its causes; a connection closed before the response is Go's `EOF`.
fn hyper_message(error: &hyper::Error) -> String {
    if error.is_incomplete_message() {
        return "EOF".into();
    }
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn authority_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-custom-header` → `X-Custom-Header`; a name with a byte that is
/// not a token character is left as it is.
fn canonical_header_name(name: &str) -> String {
    let token = |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
    if name.is_empty() || !name.bytes().all(token) {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|character| {
            let mapped = if upper {
                character.to_ascii_uppercase()
            } else {
                character.to_ascii_lowercase()
            };
            upper = character == '-';
            mapped
        })
        .collect()
}

/// The kubelet's probe TLS: `InsecureSkipVerify` (probes reach pods by IP, with certificates no one can check).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|error| format!("tls: {error}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// Accepts any server certificate, but still checks the handshake's signatures (as Go's InsecureSkipVerify).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn header_names_are_canonicalised_as_go_does() {
        assert_eq!(canonical_header_name("x-custom-header"), "X-Custom-Header");
        assert_eq!(canonical_header_name("user-agent"), "User-Agent");
        assert_eq!(canonical_header_name("ACCEPT"), "Accept");
        assert_eq!(canonical_header_name("bad header"), "bad header");
    }

    fn action(json: serde_json::Value) -> HTTPGetAction {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn request_gets_kubelet_defaults_and_keeps_overrides() {
        let target = ProbeTarget {
            pod_ip: "10.42.0.9".into(),
            named_ports: vec![("web".into(), 8080)],
            ..Default::default()
        };
        let request = ProbeRequest::new(
            &action(serde_json::json!({"port": "web", "path": "healthz?full=1"})),
            &target,
        )
        .unwrap();
        assert_eq!(request.first.url.as_str(), "http://10.42.0.9:8080/healthz?full=1");
        assert_eq!(request.first.authority, "10.42.0.9:8080");
        assert_eq!(
            request.headers,
            vec![
                ("User-Agent".to_string(), "kube-probe/1.33".to_string()),
                ("Accept".to_string(), "*/*".to_string())
            ]
        );

        let request = ProbeRequest::new(
            &action(serde_json::json!({
                "port": 443, "scheme": "HTTPS", "host": "example.test",
                "httpHeaders": [
                    {"name": "accept", "value": ""}, {"name": "user-agent", "value": "mine"},
                    {"name": "host", "value": "virtual.test"}, {"name": "x-a", "value": "1"}
                ]
            })),
            &target,
        )
        .unwrap();
        assert_eq!(request.first.url.as_str(), "https://example.test/");
        assert_eq!(request.first.authority, "example.test:443");
        assert_eq!(request.first.host_override.as_deref(), Some("virtual.test"));
        assert_eq!(
            request.headers,
            vec![
                ("User-Agent".to_string(), "mine".to_string()),
                ("X-A".to_string(), "1".to_string())
            ]
        );
    }

    #[test]
    fn an_empty_user_agent_sends_none_and_only_the_first_is_kept() {
        let target = ProbeTarget {
            pod_ip: "10.42.0.9".into(),
            ..Default::default()
        };
        let headers = |json| ProbeRequest::new(&action(json), &target).unwrap().headers;
        assert_eq!(
            headers(serde_json::json!({"port": 80, "httpHeaders": [{"name": "User-Agent", "value": ""}]})),
            vec![("Accept".to_string(), "*/*".to_string())]
        );
        assert_eq!(
            headers(serde_json::json!({"port": 80, "httpHeaders": [
                {"name": "X-A", "value": "1"}, {"name": "User-Agent", "value": "one"}, {"name": "user-agent", "value": "two"}
            ]})),
            vec![
                ("X-A".to_string(), "1".to_string()),
                ("User-Agent".to_string(), "one".to_string()),
                ("Accept".to_string(), "*/*".to_string())
            ]
        );
    }

    #[test]
    fn unknown_named_port_is_an_unknown_result() {
        let target = ProbeTarget {
            pod_ip: "10.42.0.9".into(),
            ..Default::default()
        };
        let error = ProbeRequest::new(&action(serde_json::json!({"port": "web"})), &target).unwrap_err();
        assert_eq!(error, "strconv.Atoi: parsing \"web\": invalid syntax");
    }
}
