//! WebSocket plumbing shared by remote command and port-forward.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

/// Wraps the upgraded connection as the server end of a WebSocket (the handshake was the 101 answer).
pub(crate) async fn server<T>(io: T) -> WebSocketStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, Role::Server, None).await
}

/// The normal closure (1000) kube's server ends with.
pub(crate) fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Carries a byte stream in binary messages both ways (port-forward's tunnelled SPDY): the payloads of the
/// client's messages are concatenated into `pipe`, and what is written to `pipe` goes out as messages. Pings
/// are answered by tungstenite while reading; the flush sends the pong at once.
pub(crate) async fn bridge<T>(mut ws: WebSocketStream<T>, mut pipe: DuplexStream)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if pipe.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_))) => {
                    let _ = ws.flush().await;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = ws.send(normal_close()).await;
                    // Let the client's close answer arrive (bounded), so the TCP connection ends cleanly.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    return;
                }
                Ok(n) => {
                    if ws.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
}
