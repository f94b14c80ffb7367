//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: the API server finds the pod's node and proxies
//! the request to that node's kubelet API over HTTPS (kube-apiserver's `pkg/registry/core/pod/rest/log.go`,
//! `subresources.go` and `strategy.go`'s `LogLocation`/`streamLocation`), verifying the kubelet with the cluster
//! CA and presenting a client certificate of the CA.
//!
//! Logs are a streamed body; exec, attach and port-forward are upgrades: the client's request goes to the kubelet
//! with its upgrade headers, and on the kubelet's 101 both upgraded connections are joined byte for byte (any
//! other answer goes back as it is, and kubectl falls back from WebSocket to SPDY).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use embedded_store::Store;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::Value;

use crate::pki::Pki;
use crate::status;

/// The largest kubelet error body read into a `Status` message (kube's `maxReadLength`).
const MAX_ERROR_BODY: usize = 50_000;

/// The API server's side of its connections to kubelets.
#[derive(Debug, Clone)]
pub struct KubeletClient {
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    /// Trusts kubelets whose certificate the cluster CA issued, and presents the API server's kubelet client
    /// certificate (`system:apiserver`, from the same CA).
    pub fn new(pki: &Pki) -> Result<KubeletClient, String> {
        let (client_cert_pem, client_key_pem) = pki.apiserver_kubelet_client().map_err(|e| e.to_string())?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(pki.ca_cert_pem.as_bytes()) {
            roots
                .add(ca.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let chain = CertificateDer::pem_slice_iter(client_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_slice(client_key_pem.as_bytes()).map_err(|e| e.to_string())?;
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?;
        Ok(KubeletClient { tls: Arc::new(tls) })
    }
}

/// A pod subresource served by the node: `(namespace, pod, subresource)`.
#[derive(Debug, PartialEq, Eq)]
pub struct NodeSubresource<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub subresource: &'a str,
}

/// Recognises `/api/v1/namespaces/{ns}/pods/{name}/{log|exec|attach|portforward}`.
pub fn node_subresource(path: &str) -> Option<NodeSubresource<'_>> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        [
            namespace,
            "pods",
            pod,
            subresource @ ("log" | "exec" | "attach" | "portforward"),
        ] => Some(NodeSubresource {
            namespace,
            pod,
            subresource,
        }),
        _ => None,
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    status::failure(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn internal(message: impl std::fmt::Display) -> Response {
    status::failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("Internal error occurred: {message}"),
    )
}

async fn stored(store: &dyn Store, key: String) -> Result<Option<Value>, Response> {
    let response = store.get(Bytes::from(key), 0).await.map_err(internal)?;
    Ok(response
        .kv
        .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok()))
}

fn names(containers: Option<&Value>) -> Vec<String> {
    containers
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request is for (kube's `validateContainer`): the one named, which must be in the pod, or the
/// pod's only container.
pub fn choose_container(pod: &Value, requested: Option<&str>) -> Result<String, String> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let containers = names(pod.pointer("/spec/containers"));
    let init = names(pod.pointer("/spec/initContainers"));
    let ephemeral = names(pod.pointer("/spec/ephemeralContainers"));
    match requested.filter(|c| !c.is_empty()) {
        Some(container) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|c| c == container)
            {
                Ok(container.to_string())
            } else {
                Err(format!("container {container} is not valid for pod {name}"))
            }
        }
        // Every container is listed as podutil.VisitContainers visits them: init, regular, ephemeral.
        None => match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(format!("a container name must be specified for pod {name}")),
            _ => Err(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                init.iter()
                    .chain(&containers)
                    .chain(&ephemeral)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        },
    }
}

/// The kubelet's address from its Node: the InternalIP (else the first address) and the daemon endpoint port.
pub fn kubelet_address(node: &Value) -> Option<(std::net::IpAddr, u16)> {
    let addresses = node.pointer("/status/addresses").and_then(Value::as_array)?;
    let address = addresses
        .iter()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .or_else(|| addresses.first())?
        .get("address")
        .and_then(Value::as_str)?
        .parse()
        .ok()?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(10250);
    Some((address, port))
}

/// The kubelet path and query for a log request (kube's `LogLocation`: only the log options go on).
pub fn log_query(raw: Option<&str>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if matches!(
            key.as_ref(),
            "follow" | "previous" | "timestamps" | "tailLines" | "limitBytes" | "sinceSeconds" | "sinceTime"
        ) {
            out.append_pair(&key, &value);
        }
    }
    out.finish()
}

/// Serves one node subresource request.
pub async fn serve(
    store: &dyn Store,
    kubelet: &KubeletClient,
    target: NodeSubresource<'_>,
    request: Request<Body>,
) -> Response {
    match proxy(store, kubelet, target, request).await {
        Ok(response) | Err(response) => response,
    }
}

async fn proxy(
    store: &dyn Store,
    kubelet: &KubeletClient,
    target: NodeSubresource<'_>,
    mut request: Request<Body>,
) -> Result<Response, Response> {
    let NodeSubresource {
        namespace,
        pod: name,
        subresource,
    } = target;
    let pod = stored(store, format!("/registry/core/pods/{namespace}/{name}"))
        .await?
        .ok_or_else(|| {
            status::failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("pods \"{name}\" not found"),
            )
        })?;
    let query = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect::<Vec<_>>();
    let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let path = if subresource == "portforward" {
        format!("/portForward/{namespace}/{name}")
    } else {
        let container = choose_container(&pod, param("container")).map_err(bad_request)?;
        let kind = match subresource {
            "log" => "containerLogs",
            "exec" => "exec",
            _ => "attach",
        };
        format!("/{kind}/{namespace}/{name}/{container}")
    };
    let Some(node_name) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        // kube's LogLocation gives no location for an unscheduled pod, and its LocationStreamer an empty body.
        if subresource == "log" {
            let mut response = Response::new(Body::empty());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(response);
        }
        return Err(bad_request(format!("pod {name} does not have a host assigned")));
    };
    let node = stored(store, format!("/registry/core/nodes/{node_name}"))
        .await?
        .ok_or_else(|| {
            status::failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("nodes \"{node_name}\" not found"),
            )
        })?;
    let (ip, port) = kubelet_address(&node)
        .ok_or_else(|| internal(format!("node {node_name} has no address for its kubelet")))?;
    let query = if subresource == "log" {
        log_query(request.uri().query())
    } else {
        request.uri().query().unwrap_or("").to_string()
    };
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };

    let tcp = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| internal(format!("dialing the kubelet at {ip}:{port}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(kubelet.tls.clone())
        .connect(ServerName::IpAddress(ip.into()), tcp)
        .await
        .map_err(|e| internal(format!("TLS to the kubelet at {ip}:{port}: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(internal)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "connection to a kubelet");
        }
    });

    let upgrading = subresource != "log";
    let mut outgoing = hyper::Request::builder()
        .method(request.method().clone())
        .uri(uri);
    if upgrading {
        for (key, value) in request.headers() {
            let name = key.as_str();
            if name.starts_with("sec-websocket-")
                || name.starts_with("x-stream-protocol-")
                || key == header::UPGRADE
                || key == header::CONNECTION
            {
                outgoing = outgoing.header(key, value);
            }
        }
    }
    let outgoing = outgoing
        .header(header::HOST, format!("{ip}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(internal)?;
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut request));
    let mut answer = sender.send_request(outgoing).await.map_err(internal)?;

    if let Some(client_upgrade) = client_upgrade
        && answer.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *response.headers_mut() = answer.headers().clone();
        let kubelet_upgrade = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            let (client, kubelet) = match tokio::join!(client_upgrade, kubelet_upgrade) {
                (Ok(client), Ok(kubelet)) => (client, kubelet),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(error = %e, "upgrading a proxied stream");
                    return;
                }
            };
            let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
                tracing::debug!(error = %e, "a proxied stream ended");
            }
        });
        return Ok(response);
    }

    if subresource == "log" && !answer.status().is_success() {
        // kube's GenericHttpResponseChecker: the kubelet's words become a Status with its code.
        let code = answer.status();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            answer.into_body(),
            MAX_ERROR_BODY,
        ))
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default();
        let reason = match code {
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::FORBIDDEN => "Forbidden",
            _ => "InternalError",
        };
        return Err(status::failure(code, reason, body));
    }
    let (parts, body) = answer.into_parts();
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = parts.status;
    if subresource == "log" && parts.status.is_success() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    } else {
        *response.headers_mut() = parts.headers;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn only_node_subresources_of_pods_are_recognised() {
        let t = node_subresource("/api/v1/namespaces/ns/pods/web/log").unwrap();
        assert_eq!((t.namespace, t.pod, t.subresource), ("ns", "web", "log"));
        assert!(node_subresource("/api/v1/namespaces/ns/pods/web/exec").is_some());
        assert!(node_subresource("/api/v1/namespaces/ns/pods/web/status").is_none());
        assert!(node_subresource("/api/v1/namespaces/ns/services/web/proxy").is_none());
        assert!(node_subresource("/api/v1/namespaces/ns/pods/web").is_none());
    }

    #[test]
    fn containers_are_chosen_with_kubes_words() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}]}});
        assert_eq!(
            choose_container(&pod, None).unwrap_err(),
            "a container name must be specified for pod p, choose one of: [i a b]"
        );
        assert_eq!(choose_container(&pod, Some("b")).unwrap(), "b");
        assert_eq!(choose_container(&pod, Some("i")).unwrap(), "i");
        assert_eq!(
            choose_container(&pod, Some("z")).unwrap_err(),
            "container z is not valid for pod p"
        );
        let single = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "only"}]}});
        assert_eq!(choose_container(&single, Some("")).unwrap(), "only");
    }

    #[test]
    fn the_kubelet_is_found_from_the_node() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n"},
            {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(kubelet_address(&node), Some(("10.0.0.5".parse().unwrap(), 10250)));
        assert_eq!(kubelet_address(&json!({"status": {}})), None);
    }

    #[test]
    fn only_log_options_go_to_the_kubelet() {
        assert_eq!(
            log_query(Some("container=c&follow=true&tailLines=3&pretty=true")),
            "follow=true&tailLines=3"
        );
    }
}
