//! The HTTP side: which protocol the client asked for, and the 101 answer.
//!
//! kubectl (client-go `tools/remotecommand/websocket.go`, `tools/portforward/tunneling_dialer.go`) first tries a
//! WebSocket upgrade (`GET`, `Sec-WebSocket-Protocol: v5.channel.k8s.io` for exec/attach,
//! `SPDY/3.1+portforward.k8s.io` for port-forward) and, on any non-101 answer, a SPDY/3.1 upgrade (`POST`,
//! `Upgrade: SPDY/3.1`, one `X-Stream-Protocol-Version` header per protocol it speaks). The SPDY negotiation and
//! its refusals follow apimachinery's `httpstream.Handshake` and `spdy.NewResponseUpgrader`.

use hyper::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::Error;

/// The subresource being served, which decides the protocols on offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Exec,
    Attach,
    PortForward,
}

/// How the streams travel once the connection is upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RFC 6455 WebSocket: channel-prefixed binary messages, or (port-forward) SPDY frames inside them.
    WebSocket,
    /// SPDY/3.1 straight on the connection.
    Spdy,
}

/// The outcome of a successful negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub subresource: Subresource,
    pub transport: Transport,
    /// The protocol agreed: a WebSocket subprotocol, or an `X-Stream-Protocol-Version` ("" when a SPDY client
    /// named none: the original `channel.k8s.io`).
    pub protocol: String,
    accept_key: Option<String>,
}

const HEADER_STREAM_PROTOCOL: &str = "x-stream-protocol-version";

/// WebSocket subprotocols for exec and attach, best first (kubelet's `createWebSocketStreams` serves these with
/// raw binary channels; the base64 variants are not served).
const WEBSOCKET_REMOTE_COMMAND: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The WebSocket subprotocol of port-forward tunnelled SPDY.
pub(crate) const WEBSOCKET_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";
/// `remotecommandconsts.SupportedStreamingProtocols`, over SPDY (v5 is WebSocket-only).
const SPDY_REMOTE_COMMAND: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const SPDY_PORT_FORWARD: &[&str] = &["portforward.k8s.io"];

/// Decides how to upgrade `request` for `subresource`. A refusal carries the HTTP status to answer with; kubectl
/// falls back from WebSocket to SPDY on any non-101 answer.
pub fn negotiate<B>(request: &Request<B>, subresource: Subresource) -> Result<Negotiated, Error> {
    let headers = request.headers();
    if !header_has_token(headers, CONNECTION.as_str(), "upgrade") {
        return Err(Error::refused(
            400,
            "unable to upgrade: missing upgrade headers in request",
        ));
    }
    if header_has_token(headers, UPGRADE.as_str(), "websocket") {
        let key = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::refused(400, "missing Sec-WebSocket-Key"))?;
        let offered: &[&str] = match subresource {
            Subresource::Exec | Subresource::Attach => WEBSOCKET_REMOTE_COMMAND,
            Subresource::PortForward => &[WEBSOCKET_PORT_FORWARD],
        };
        let requested = header_tokens(headers, "sec-websocket-protocol");
        // The client's order decides, as in apiserver's wsstream handshake.
        let protocol = requested
            .iter()
            .find(|p| offered.contains(&p.as_str()))
            .ok_or_else(|| {
                Error::refused(
                    400,
                    format!("requested protocol(s) are not supported: {requested:?}; supports {offered:?}"),
                )
            })?;
        return Ok(Negotiated {
            subresource,
            transport: Transport::WebSocket,
            protocol: protocol.clone(),
            accept_key: Some(derive_accept_key(key.as_bytes())),
        });
    }
    if !header_has_token(headers, UPGRADE.as_str(), "spdy/3.1") {
        return Err(Error::refused(
            400,
            "unable to upgrade: missing upgrade headers in request",
        ));
    }
    let server: &[&str] = match subresource {
        Subresource::Exec | Subresource::Attach => SPDY_REMOTE_COMMAND,
        Subresource::PortForward => SPDY_PORT_FORWARD,
    };
    let client = header_tokens(headers, HEADER_STREAM_PROTOCOL);
    let protocol = if client.is_empty() {
        String::new()
    } else {
        client
            .iter()
            .find(|p| server.contains(&p.as_str()))
            .cloned()
            .ok_or_else(|| {
                Error::refused(
                    403,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {client:?}, server supports {server:?}"
                    ),
                )
            })?
    };
    Ok(Negotiated {
        subresource,
        transport: Transport::Spdy,
        protocol,
        accept_key: None,
    })
}

impl Negotiated {
    /// The `101 Switching Protocols` answer. After sending it, take the connection over with [`upgraded`].
    pub fn response<B: Default>(&self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        match self.transport {
            Transport::WebSocket => {
                headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
                if let Some(accept) = self
                    .accept_key
                    .as_deref()
                    .and_then(|k| HeaderValue::from_str(k).ok())
                {
                    headers.insert("sec-websocket-accept", accept);
                }
                if let Ok(protocol) = HeaderValue::from_str(&self.protocol) {
                    headers.insert("sec-websocket-protocol", protocol);
                }
            }
            Transport::Spdy => {
                headers.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
                if !self.protocol.is_empty()
                    && let Ok(protocol) = HeaderValue::from_str(&self.protocol)
                {
                    headers.insert(HEADER_STREAM_PROTOCOL, protocol);
                }
            }
        }
        response
    }
}

/// Waits for hyper to hand over the connection after the 101 answer went out (call
/// `hyper::upgrade::on(&mut request)` before answering, and pass its future here).
pub async fn upgraded(
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, Error> {
    Ok(TokioIo::new(on_upgrade.await?))
}

/// Every comma-separated token of every `name` header, trimmed.
fn header_tokens(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn header_has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    header_tokens(headers, name)
        .iter()
        .any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/api/v1/namespaces/default/pods/p/exec");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn kubectl_1_33_exec_gets_websocket_v5() {
        let req = request(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
        ]);
        let negotiated = negotiate(&req, Subresource::Exec).unwrap();
        assert_eq!(negotiated.transport, Transport::WebSocket);
        assert_eq!(negotiated.protocol, "v5.channel.k8s.io");
        let response: Response<()> = negotiated.response();
        assert_eq!(response.status(), 101);
        // RFC 6455's own example key.
        assert_eq!(
            response.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(response.headers()["sec-websocket-protocol"], "v5.channel.k8s.io");
    }

    #[test]
    fn port_forward_over_websocket_needs_the_spdy_tunnel_protocol() {
        let mut headers = vec![
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", "SPDY/3.1+portforward.k8s.io"),
        ];
        let negotiated = negotiate(&request(&headers), Subresource::PortForward).unwrap();
        assert_eq!(negotiated.protocol, WEBSOCKET_PORT_FORWARD);
        headers[3] = ("Sec-WebSocket-Protocol", "v5.channel.k8s.io");
        let Err(Error::Refused { status, .. }) = negotiate(&request(&headers), Subresource::PortForward)
        else {
            panic!("accepted a protocol port-forward does not speak")
        };
        assert_eq!(status, 400);
    }

    #[test]
    fn spdy_picks_the_first_client_protocol_the_server_has() {
        // kubectl 1.29's five headers, v5 first: v5 is WebSocket-only, so v4.
        let req = request(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v5.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v2.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "channel.k8s.io"),
        ]);
        let negotiated = negotiate(&req, Subresource::Exec).unwrap();
        assert_eq!(negotiated.transport, Transport::Spdy);
        assert_eq!(negotiated.protocol, "v4.channel.k8s.io");
        let response: Response<()> = negotiated.response();
        assert_eq!(response.headers()["upgrade"], "SPDY/3.1");
        assert_eq!(
            response.headers()["x-stream-protocol-version"],
            "v4.channel.k8s.io"
        );
    }

    #[test]
    fn refusals_carry_kubes_status_codes() {
        let no_upgrade = request(&[]);
        assert!(matches!(
            negotiate(&no_upgrade, Subresource::Exec),
            Err(Error::Refused { status: 400, .. })
        ));
        let wrong = request(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v9.channel.k8s.io"),
        ]);
        assert!(matches!(
            negotiate(&wrong, Subresource::Exec),
            Err(Error::Refused { status: 403, .. })
        ));
        let none = request(&[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]);
        let negotiated = negotiate(&none, Subresource::Exec).unwrap();
        assert_eq!(negotiated.protocol, "");
        let response: Response<()> = negotiated.response();
        assert!(!response.headers().contains_key("x-stream-protocol-version"));
    }
}
