//! Port-forward: SPDY streams in pairs, one pair per TCP connection kubectl accepts locally, as kubelet's
//! `pkg/kubelet/cri/streaming/portforward/httpstream.go` serves them. Each stream names its `streamtype`
//! (`error` or `data`), the pod `port` and a `requestid` shared by the pair. The SPDY runs on the connection
//! itself, or (kubectl 1.30 on) inside WebSocket binary messages, subprotocol `SPDY/3.1+portforward.k8s.io`.

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;

use crate::spdy::frame::RST_CANCEL;
use crate::spdy::session::{IncomingStream, Session};
use crate::upgrade::{Negotiated, Subresource, Transport};
use crate::{Error, websocket};

/// One forwarded connection: connect `data` to the pod's `port`; write a failure's text to `error` (kubectl
/// prints it). Dropping (or shutting down) each closes it towards the client.
///
/// kubectl closes its local connection only once the error stream has closed, and it keeps its side of `data`
/// open until then: so when the pod's side of the connection ends, drop both (containerd waits one more second
/// for the other direction, then closes both), rather than waiting for `data` to reach EOF.
#[derive(Debug)]
pub struct ForwardedConnection {
    pub port: u16,
    pub request_id: String,
    pub data: DuplexStream,
    pub error: DuplexStream,
}

/// A port-forward session: the connections kubectl forwards, until it goes.
#[derive(Debug)]
pub struct PortForward {
    connections: mpsc::Receiver<ForwardedConnection>,
}

impl PortForward {
    /// The next forwarded connection; `None` once the client is gone.
    pub async fn next(&mut self) -> Option<ForwardedConnection> {
        self.connections.recv().await
    }
}

/// Serves port-forward on `io`, the connection after [`Negotiated::response`] went out.
pub async fn serve_port_forward<T>(negotiated: &Negotiated, io: T) -> Result<PortForward, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if negotiated.subresource != Subresource::PortForward {
        return Err(Error::refused(400, "not a port-forward request"));
    }
    let session = match negotiated.transport {
        Transport::Spdy => Session::start(io)?,
        Transport::WebSocket => {
            let ws = websocket::server(io).await;
            let (spdy_side, ws_side) = tokio::io::duplex(64 * 1024);
            tokio::spawn(websocket::bridge(ws, ws_side));
            Session::start(spdy_side)?
        }
    };
    let (tx, connections) = mpsc::channel(16);
    tokio::spawn(pair_streams(session, tx));
    Ok(PortForward { connections })
}

/// Why a stream is refused (`httpStreamReceived`): kube resets such a stream.
fn check_stream(stream: &IncomingStream) -> Result<(u16, bool), String> {
    let port = stream.header("port").unwrap_or("");
    if port.is_empty() {
        return Err("\"port\" header is required".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port < 1 {
        return Err(format!("port \"{port}\" must be > 0"));
    }
    match stream.header("streamtype").unwrap_or("") {
        "" => Err("\"streamType\" header is required".into()),
        "error" => Ok((port, true)),
        "data" => Ok((port, false)),
        other => Err(format!("invalid stream type {other:?}")),
    }
}

/// The pair a stream belongs to: its `requestID`, or, from clients too old to send one, kube's guess from the
/// stream id (error = id, data = id - 2).
fn request_id(stream: &IncomingStream, is_error: bool) -> String {
    match stream.header("requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ if is_error => stream.id.to_string(),
        _ => (i64::from(stream.id) - 2).to_string(),
    }
}

#[derive(Default)]
struct HalfPair {
    data: Option<(u16, DuplexStream)>,
    error: Option<DuplexStream>,
}

async fn pair_streams(mut session: Session, connections: mpsc::Sender<ForwardedConnection>) {
    let mut pending: HashMap<String, HalfPair> = HashMap::new();
    while let Some(stream) = session.next_stream().await {
        let (port, is_error) = match check_stream(&stream) {
            Ok(checked) => checked,
            Err(reason) => {
                tracing::debug!(%reason, "port-forward: refusing a stream");
                stream.reject(RST_CANCEL);
                continue;
            }
        };
        let id = request_id(&stream, is_error);
        let half = pending.entry(id.clone()).or_default();
        let taken = if is_error {
            half.error.is_some()
        } else {
            half.data.is_some()
        };
        if taken {
            tracing::debug!(request = %id, "port-forward: stream already assigned");
            stream.reject(RST_CANCEL);
            continue;
        }
        let (io, _done) = stream.accept();
        if is_error {
            half.error = Some(io);
        } else {
            half.data = Some((port, io));
        }
        if half.error.is_some()
            && half.data.is_some()
            && let Some(HalfPair {
                data: Some((port, data)),
                error: Some(error),
            }) = pending.remove(&id)
        {
            let connection = ForwardedConnection {
                port,
                request_id: id,
                data,
                error,
            };
            if connections.send(connection).await.is_err() {
                break;
            }
        }
    }
    session.close().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::spdy::frame::{FLAG_FIN, Frame};
    use crate::spdy::session::testing::pair;

    fn syn(stream_id: u32, headers: &[(&str, &str)]) -> Frame {
        Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[tokio::test]
    async fn streams_pair_up_by_request_id_and_bad_ones_are_reset() {
        let (session, mut peer) = pair();
        let (tx, mut connections) = mpsc::channel(4);
        tokio::spawn(pair_streams(session, tx));
        // No port: reset, as kubelet's httpStreamReceived refuses it.
        peer.send(syn(1, &[("streamtype", "error"), ("requestid", "0")]))
            .await;
        assert_eq!(
            peer.recv().await,
            Some(Frame::RstStream {
                stream_id: 1,
                status: RST_CANCEL
            })
        );
        peer.send(syn(
            3,
            &[("streamtype", "error"), ("port", "80"), ("requestid", "7")],
        ))
        .await;
        assert!(matches!(
            peer.recv().await,
            Some(Frame::SynReply { stream_id: 3, .. })
        ));
        // A second error stream for the same request is refused ("error stream already assigned").
        peer.send(syn(
            5,
            &[("streamtype", "error"), ("port", "80"), ("requestid", "7")],
        ))
        .await;
        assert_eq!(
            peer.recv().await,
            Some(Frame::RstStream {
                stream_id: 5,
                status: RST_CANCEL
            })
        );
        peer.send(syn(
            7,
            &[("streamtype", "data"), ("port", "80"), ("requestid", "7")],
        ))
        .await;
        let mut connection = connections.recv().await.unwrap();
        assert_eq!((connection.port, connection.request_id.as_str()), (80, "7"));
        assert!(matches!(
            peer.recv().await,
            Some(Frame::SynReply { stream_id: 7, .. })
        ));
        peer.send(Frame::Data {
            stream_id: 7,
            flags: FLAG_FIN,
            data: bytes::Bytes::from_static(b"GET /"),
        })
        .await;
        let mut request = Vec::new();
        connection.data.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"GET /");
        connection.error.write_all(b"refused").await.unwrap();
        drop(connection);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(peer.recv().await.unwrap());
        }
        assert!(seen.contains(&Frame::Data {
            stream_id: 3,
            flags: 0,
            data: bytes::Bytes::from_static(b"refused")
        }));
        assert!(seen.contains(&Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: bytes::Bytes::new()
        }));
        assert!(seen.contains(&Frame::Data {
            stream_id: 7,
            flags: FLAG_FIN,
            data: bytes::Bytes::new()
        }));
    }

    #[tokio::test]
    async fn streams_without_a_request_id_pair_as_kubelet_guesses() {
        let (session, mut peer) = pair();
        let (tx, mut connections) = mpsc::channel(4);
        tokio::spawn(pair_streams(session, tx));
        peer.send(syn(1, &[("streamtype", "error"), ("port", "8080")]))
            .await;
        peer.send(syn(3, &[("streamtype", "data"), ("port", "8080")]))
            .await;
        let connection = connections.recv().await.unwrap();
        assert_eq!((connection.port, connection.request_id.as_str()), (8080, "1"));
    }
}
