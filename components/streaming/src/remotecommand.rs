//! Remote command (exec and attach): stdin, stdout, stderr, terminal resizes and the final status, over
//! WebSocket channels or SPDY streams, as kubelet's `pkg/kubelet/cri/streaming/remotecommand` serves them.
//!
//! WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`): every message is binary, its first byte the channel:
//! 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize; v5 adds 255, the close signal (`[255, 0]`: stdin is done).
//! SPDY: one stream per kind, named by its `streamtype` header (`error`, `stdin`, `stdout`, `stderr`,
//! `resize`); the status goes on the error stream.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::spdy::frame::RST_CANCEL;
use crate::spdy::session::Session;
use crate::upgrade::{Negotiated, Subresource, Transport};
use crate::{Error, websocket};

const CHANNEL_STDIN: u8 = 0;
const CHANNEL_STDOUT: u8 = 1;
const CHANNEL_STDERR: u8 = 2;
const CHANNEL_ERROR: u8 = 3;
const CHANNEL_RESIZE: u8 = 4;
/// v5's close signal: `[255, channel]` closes that channel's reading side.
const CHANNEL_CLOSE: u8 = 255;

const PIPE_CAPACITY: usize = 64 * 1024;
/// kubelet's default streamCreationTimeout.
const STREAM_CREATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which streams the client asked for (the `stdin`, `stdout`, `stderr`, `tty` query parameters), and the
/// command and container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// Every `command` parameter, in order (exec only).
    pub command: Vec<String>,
    pub container: Option<String>,
}

impl StreamOptions {
    /// Reads the query string. As kubelet's `NewOptions`: a terminal has no separate stderr, and at least one
    /// stream is required.
    pub fn from_query(query: &str) -> Result<StreamOptions, Error> {
        let mut options = StreamOptions::default();
        let flag = |v: &str| v == "1" || v.eq_ignore_ascii_case("true");
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match name {
                "stdin" => options.stdin = flag(&value),
                "stdout" => options.stdout = flag(&value),
                "stderr" => options.stderr = flag(&value),
                "tty" => options.tty = flag(&value),
                "command" => options.command.push(value),
                "container" => options.container = Some(value),
                _ => {}
            }
        }
        if options.tty {
            options.stderr = false;
        }
        if !options.stdin && !options.stdout && !options.stderr {
            return Err(Error::refused(
                400,
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(options)
    }
}

/// `%XX` and `+` decoding of one query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A terminal size from the client (`{"Width":W,"Height":H}`, Go's `remotecommand.TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// How a command failed, for [`RemoteCommand::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The process exited with this non-zero code: kubectl exits with it too.
    ExitCode(i32),
    /// The command could not be run; kubectl prints the message.
    Internal(String),
}

/// The `metav1.Status` kubelet writes at the end (`ServeExec`), field order as Go's encoder writes it.
#[derive(Debug, Serialize)]
struct Status<'a> {
    metadata: Empty,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Debug, Serialize)]
struct Empty {}

#[derive(Debug, Serialize)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(Debug, Serialize)]
struct Cause {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: String,
}

fn status_of(result: &Result<(), Failure>) -> Status<'static> {
    match result {
        Ok(()) => Status {
            metadata: Empty {},
            status: "Success",
            message: None,
            reason: None,
            details: None,
            code: None,
        },
        Err(Failure::ExitCode(code)) => Status {
            metadata: Empty {},
            status: "Failure",
            message: Some(format!(
                "command terminated with non-zero exit code: exit status {code}"
            )),
            reason: Some("NonZeroExitCode"),
            details: Some(Details {
                causes: vec![Cause {
                    reason: Some("ExitCode"),
                    message: code.to_string(),
                }],
            }),
            code: None,
        },
        // apierrors.NewInternalError(fmt.Errorf("error executing command in container: %v", err))
        Err(Failure::Internal(message)) => {
            let error = format!("error executing command in container: {message}");
            Status {
                metadata: Empty {},
                status: "Failure",
                message: Some(format!("Internal error occurred: {error}")),
                reason: Some("InternalError"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: None,
                        message: error,
                    }],
                }),
                code: Some(500),
            }
        }
    }
}

/// What goes on the error channel: v4 and v5 write the Status as JSON (even on success); the older protocols
/// write only a failure's message, as text (`v1WriteStatusFunc`).
fn status_bytes(result: &Result<(), Failure>, json: bool) -> Vec<u8> {
    let status = status_of(result);
    if json {
        serde_json::to_vec(&status).unwrap_or_default()
    } else {
        status.message.unwrap_or_default().into_bytes()
    }
}

/// A remote command session, whatever the transport. Take the streams you need out of the `Option`s; drop (or
/// shut down) stdout and stderr when the process's output ends, then call [`RemoteCommand::finish`].
#[derive(Debug)]
pub struct RemoteCommand {
    /// What the client types: EOF when it closes stdin. Present when the client asked for stdin.
    pub stdin: Option<DuplexStream>,
    /// Write the process's stdout here.
    pub stdout: Option<DuplexStream>,
    /// Write the process's stderr here (never present with a terminal: it is merged into stdout).
    pub stderr: Option<DuplexStream>,
    /// Terminal size changes (only with a terminal).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// Whether the client asked for a terminal.
    pub tty: bool,
    ending: Ending,
}

#[derive(Debug)]
enum Ending {
    WebSocket {
        status: oneshot::Sender<Vec<u8>>,
        driver: tokio::task::JoinHandle<()>,
    },
    Spdy {
        session: Session,
        error: Option<(DuplexStream, oneshot::Receiver<()>)>,
        outputs: Vec<oneshot::Receiver<()>>,
        json_status: bool,
    },
}

impl RemoteCommand {
    /// Sends the final status (after all of stdout and stderr: wait until their writers are dropped) and
    /// closes the connection: WebSocket close 1000, or FIN on every stream and GOAWAY.
    pub async fn finish(mut self, result: Result<(), Failure>) -> Result<(), Error> {
        // Our own copies of the output pipes go first, or the wait below never ends.
        self.stdout.take();
        self.stderr.take();
        self.stdin.take();
        match self.ending {
            Ending::WebSocket { status, driver } => {
                // Both WebSocket protocols served (v4, v5) carry the Status as JSON.
                let _ = status.send(status_bytes(&result, true));
                driver.await.map_err(|_| Error::Closed)
            }
            Ending::Spdy {
                session,
                error,
                outputs,
                json_status,
            } => {
                for done in outputs {
                    let _ = done.await;
                }
                if let Some((mut stream, done)) = error {
                    let bytes = status_bytes(&result, json_status);
                    if !bytes.is_empty() {
                        let _ = stream.write_all(&bytes).await;
                    }
                    drop(stream);
                    let _ = done.await;
                }
                session.close().await;
                Ok(())
            }
        }
    }
}

/// Serves exec or attach on `io`, the connection after [`Negotiated::response`] went out.
pub async fn serve_remote_command<T>(
    negotiated: &Negotiated,
    io: T,
    options: &StreamOptions,
) -> Result<RemoteCommand, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if negotiated.subresource == Subresource::PortForward {
        return Err(Error::refused(400, "not a remote command request"));
    }
    match negotiated.transport {
        Transport::WebSocket => {
            let v5 = negotiated.protocol.starts_with("v5.");
            Ok(start_websocket(websocket::server(io).await, v5, options))
        }
        Transport::Spdy => start_spdy(Session::start(io)?, &negotiated.protocol, options).await,
    }
}

fn start_websocket<T>(
    ws: tokio_tungstenite::WebSocketStream<T>,
    v5: bool,
    options: &StreamOptions,
) -> RemoteCommand
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stdin_user, stdin_ours) = pipe_if(options.stdin);
    let (stdout_user, stdout_ours) = pipe_if(options.stdout);
    let (stderr_user, stderr_ours) = pipe_if(options.stderr);
    let (resize_tx, resize_rx) = if options.tty {
        let (tx, rx) = mpsc::channel(8);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (status_tx, status_rx) = oneshot::channel();
    let first = if options.stdout {
        CHANNEL_STDOUT
    } else if options.stderr {
        CHANNEL_STDERR
    } else {
        CHANNEL_ERROR
    };
    let driver = tokio::spawn(drive_websocket(
        ws,
        WebSocketPipes {
            v5,
            first,
            stdin: stdin_ours,
            stdout: stdout_ours,
            stderr: stderr_ours,
            resize: resize_tx,
        },
        status_rx,
    ));
    RemoteCommand {
        stdin: stdin_user,
        stdout: stdout_user,
        stderr: stderr_user,
        resize: resize_rx,
        tty: options.tty,
        ending: Ending::WebSocket {
            status: status_tx,
            driver,
        },
    }
}

fn pipe_if(wanted: bool) -> (Option<DuplexStream>, Option<DuplexStream>) {
    if wanted {
        let (user, ours) = tokio::io::duplex(PIPE_CAPACITY);
        (Some(user), Some(ours))
    } else {
        (None, None)
    }
}

struct WebSocketPipes {
    v5: bool,
    /// The channel of the empty message that tells the client the streams are ready (kubelet writes one).
    first: u8,
    stdin: Option<DuplexStream>,
    stdout: Option<DuplexStream>,
    stderr: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TerminalSize>>,
}

async fn read_some(pipe: &mut Option<DuplexStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn drive_websocket<T>(
    mut ws: tokio_tungstenite::WebSocketStream<T>,
    mut pipes: WebSocketPipes,
    mut status_rx: oneshot::Receiver<Vec<u8>>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    let mut out_buf = vec![0u8; 32 * 1024];
    let mut err_buf = vec![0u8; 32 * 1024];
    let mut status: Option<Vec<u8>> = None;
    let mut client_gone = ws.send(Message::Binary(vec![pipes.first].into())).await.is_err();
    loop {
        if client_gone {
            // Nobody to write to: let the user's writes fail, and wait for the status to return.
            pipes.stdout = None;
            pipes.stderr = None;
            pipes.stdin = None;
            if status.is_none() {
                let _ = (&mut status_rx).await;
            }
            return;
        }
        if let Some(bytes) = status.as_ref()
            && pipes.stdout.is_none()
            && pipes.stderr.is_none()
        {
            let mut message = Vec::with_capacity(bytes.len() + 1);
            message.push(CHANNEL_ERROR);
            message.extend_from_slice(bytes);
            let _ = ws.send(Message::Binary(message.into())).await;
            let _ = ws.send(websocket::normal_close()).await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
            return;
        }
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Binary(data))) => handle_client_message(&mut pipes, &data).await,
                Some(Ok(Message::Ping(_))) => {
                    let _ = ws.flush().await;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => client_gone = true,
                Some(Ok(_)) => {}
            },
            read = read_some(&mut pipes.stdout, &mut out_buf) => match read {
                Ok(0) | Err(_) => pipes.stdout = None,
                Ok(n) => client_gone |= send_channel(&mut ws, CHANNEL_STDOUT, &out_buf[..n]).await.is_err(),
            },
            read = read_some(&mut pipes.stderr, &mut err_buf) => match read {
                Ok(0) | Err(_) => pipes.stderr = None,
                Ok(n) => client_gone |= send_channel(&mut ws, CHANNEL_STDERR, &err_buf[..n]).await.is_err(),
            },
            bytes = &mut status_rx, if status.is_none() => {
                status = Some(bytes.unwrap_or_default());
            }
        }
    }
}

async fn send_channel<T>(
    ws: &mut tokio_tungstenite::WebSocketStream<T>,
    channel: u8,
    data: &[u8],
) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    ws.send(Message::Binary(message.into())).await?;
    Ok(())
}

async fn handle_client_message(pipes: &mut WebSocketPipes, data: &[u8]) {
    let Some((&channel, payload)) = data.split_first() else {
        return;
    };
    match channel {
        CHANNEL_STDIN => {
            if let Some(stdin) = pipes.stdin.as_mut()
                && stdin.write_all(payload).await.is_err()
            {
                pipes.stdin = None;
            }
        }
        CHANNEL_RESIZE => {
            if let (Some(resize), Ok(size)) = (
                pipes.resize.as_ref(),
                serde_json::from_slice::<TerminalSize>(payload),
            ) {
                let _ = resize.send(size).await;
            }
        }
        // EOF for the reader: dropping our end of the pipe.
        CHANNEL_CLOSE if pipes.v5 && payload.first() == Some(&CHANNEL_STDIN) => pipes.stdin = None,
        _ => {}
    }
}

async fn start_spdy(
    mut session: Session,
    protocol: &str,
    options: &StreamOptions,
) -> Result<RemoteCommand, Error> {
    // v1 and v2 have no resize stream (`supportsTerminalResizing`).
    let resizing = matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let json_status = protocol == "v4.channel.k8s.io";
    let expected = 1
        + usize::from(options.stdin)
        + usize::from(options.stdout)
        + usize::from(options.stderr)
        + usize::from(options.tty && resizing);
    let (mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None);
    let mut error = None;
    let mut outputs = Vec::new();
    let mut received = 0;
    let collect = async {
        while received < expected {
            let Some(stream) = session.next_stream().await else {
                return Err(Error::Closed);
            };
            let kind = stream.header("streamtype").unwrap_or("").to_string();
            match kind.as_str() {
                "error" | "stdin" | "stdout" | "stderr" | "resize" => {}
                other => {
                    tracing::debug!(streamtype = other, "remote command: unexpected stream type");
                    stream.reject(RST_CANCEL);
                    continue;
                }
            }
            let (io, done) = stream.accept();
            received += 1;
            match kind.as_str() {
                "error" => error = Some((io, done)),
                "stdin" => stdin = Some(io),
                "stdout" => {
                    stdout = Some(io);
                    outputs.push(done);
                }
                "stderr" => {
                    stderr = Some(io);
                    outputs.push(done);
                }
                _ => resize = Some(spawn_resize_reader(io)),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(STREAM_CREATION_TIMEOUT, collect).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(Error::StreamsTimedOut),
    }
    Ok(RemoteCommand {
        stdin,
        stdout,
        stderr,
        resize,
        tty: options.tty,
        ending: Ending::Spdy {
            session,
            error,
            outputs,
            json_status,
        },
    })
}

/// The resize stream is a sequence of JSON objects (Go's `json.Decoder`): parse each as it completes.
fn spawn_resize_reader(mut io: DuplexStream) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 4096];
        loop {
            let mut consumed = 0;
            let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
            loop {
                match stream.next() {
                    Some(Ok(size)) => {
                        consumed = stream.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => return,
                    None => {
                        consumed = buf.len();
                        break;
                    }
                }
            }
            buf.drain(..consumed);
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn status_json_is_what_kubelet_sends() {
        assert_eq!(
            String::from_utf8(status_bytes(&Ok(()), true)).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(
            String::from_utf8(status_bytes(&Err(Failure::ExitCode(3)), true)).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        assert_eq!(
            String::from_utf8(status_bytes(&Err(Failure::Internal("no such file".into())), true)).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: no such file","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: no such file"}]},"code":500}"#
        );
        // The text protocols say nothing on success.
        assert!(status_bytes(&Ok(()), false).is_empty());
    }

    #[test]
    fn options_follow_kubelet() {
        let options =
            StreamOptions::from_query("command=sh&command=-c&command=echo%20hi%3B+exit&container=c&stdin=true&stdout=true&stderr=true&tty=true")
                .unwrap();
        assert_eq!(options.command, ["sh", "-c", "echo hi; exit"]);
        assert_eq!(options.container.as_deref(), Some("c"));
        assert!(options.stdin && options.stdout && options.tty);
        assert!(!options.stderr, "a terminal has no separate stderr");
        assert!(StreamOptions::from_query("stdout=1").unwrap().stdout);
        assert!(StreamOptions::from_query("command=ls").is_err());
    }

    /// A client end of the WebSocket, for driving the server side in memory.
    async fn ws_pair(
        options: &StreamOptions,
    ) -> (RemoteCommand, tokio_tungstenite::WebSocketStream<DuplexStream>) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let server = websocket::server(ours).await;
        let client = tokio_tungstenite::WebSocketStream::from_raw_socket(
            theirs,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        (start_websocket(server, true, options), client)
    }

    #[tokio::test]
    async fn websocket_channels_carry_stdio_resize_and_the_status() {
        use futures_util::{SinkExt, StreamExt};
        let options = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
            ..StreamOptions::default()
        };
        let (mut command, mut client) = ws_pair(&options).await;
        // The ready signal: an empty stdout message.
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Binary(vec![1].into())
        );
        client
            .send(Message::Binary(b"\x00some input\n".to_vec().into()))
            .await
            .unwrap();
        client.send(Message::Binary(vec![255, 0].into())).await.unwrap();
        let mut stdin = command.stdin.take().unwrap();
        let mut input = String::new();
        stdin.read_to_string(&mut input).await.unwrap();
        assert_eq!(input, "some input\n");
        let mut stdout = command.stdout.take().unwrap();
        let mut stderr = command.stderr.take().unwrap();
        stdout.write_all(b"out").await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Binary(b"\x01out".to_vec().into())
        );
        stderr.write_all(b"err").await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Binary(b"\x02err".to_vec().into())
        );
        drop((stdout, stderr));
        let finish = tokio::spawn(command.finish(Err(Failure::ExitCode(3))));
        let Message::Binary(status) = client.next().await.unwrap().unwrap() else {
            panic!("expected the status")
        };
        assert_eq!(status[0], 3);
        let status: serde_json::Value = serde_json::from_slice(&status[1..]).unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        let Message::Close(Some(close)) = client.next().await.unwrap().unwrap() else {
            panic!("expected a close")
        };
        assert_eq!(u16::from(close.code), 1000);
        drop(client);
        finish.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn websocket_resize_events_reach_the_caller_and_pings_get_pongs() {
        use futures_util::{SinkExt, StreamExt};
        let options = StreamOptions {
            stdout: true,
            tty: true,
            ..StreamOptions::default()
        };
        let (mut command, mut client) = ws_pair(&options).await;
        assert!(command.stderr.is_none());
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Binary(vec![1].into())
        );
        client
            .send(Message::Binary(
                b"\x04{\"Width\":80,\"Height\":24}\n".to_vec().into(),
            ))
            .await
            .unwrap();
        let size = command.resize.as_mut().unwrap().recv().await.unwrap();
        assert_eq!(
            size,
            TerminalSize {
                width: 80,
                height: 24
            }
        );
        client.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Pong(b"p".to_vec().into())
        );
    }

    #[tokio::test]
    async fn spdy_resize_stream_is_a_sequence_of_json_objects() {
        let (user, mut writer) = tokio::io::duplex(1024);
        let mut sizes = spawn_resize_reader(user);
        writer
            .write_all(b"{\"Width\":1,\"Height\":2}{\"Wid")
            .await
            .unwrap();
        assert_eq!(sizes.recv().await, Some(TerminalSize { width: 1, height: 2 }));
        writer.write_all(b"th\":3,\"Height\":4}\n").await.unwrap();
        assert_eq!(sizes.recv().await, Some(TerminalSize { width: 3, height: 4 }));
        drop(writer);
        assert_eq!(sizes.recv().await, None);
    }

    fn syn(stream_id: u32, kind: &str) -> crate::spdy::frame::Frame {
        crate::spdy::frame::Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: vec![("streamtype".into(), kind.into())],
        }
    }

    /// Runs a SPDY session for `protocol` with the client opening error and stdout, and returns what the
    /// client sees on the error stream once the command finished with `result`.
    async fn spdy_error_stream(protocol: &str, result: Result<(), Failure>) -> Vec<u8> {
        use crate::spdy::frame::{FLAG_FIN, Frame};
        let (session, mut peer) = crate::spdy::session::testing::pair();
        let options = StreamOptions {
            stdout: true,
            ..StreamOptions::default()
        };
        peer.send(syn(1, "error")).await;
        peer.send(syn(3, "stdout")).await;
        let mut command = start_spdy(session, protocol, &options).await.unwrap();
        command.stdout.take().unwrap().write_all(b"hi").await.unwrap();
        command.finish(result).await.unwrap();
        let (mut error, mut stdout) = (Vec::new(), Vec::new());
        let mut fins = 0;
        while let Some(frame) = peer.recv().await {
            match frame {
                Frame::Data {
                    stream_id,
                    data,
                    flags,
                } => {
                    if stream_id == 1 {
                        error.extend_from_slice(&data);
                    } else {
                        stdout.extend_from_slice(&data);
                    }
                    fins += usize::from(flags & FLAG_FIN != 0);
                }
                Frame::GoAway { .. } => break,
                _ => {}
            }
        }
        assert_eq!(stdout, b"hi");
        assert_eq!(fins, 2, "every stream ends with FIN before GOAWAY");
        error
    }

    #[tokio::test]
    async fn spdy_v4_sends_the_status_as_json_and_older_protocols_as_text() {
        let v4 = spdy_error_stream("v4.channel.k8s.io", Err(Failure::ExitCode(2))).await;
        let v4: serde_json::Value = serde_json::from_slice(&v4).unwrap();
        assert_eq!(v4["reason"], "NonZeroExitCode");
        assert_eq!(v4["details"]["causes"][0]["message"], "2");
        let success = spdy_error_stream("v4.channel.k8s.io", Ok(())).await;
        assert_eq!(success, br#"{"metadata":{},"status":"Success"}"#);
        let v3 = spdy_error_stream("v3.channel.k8s.io", Err(Failure::ExitCode(2))).await;
        assert_eq!(v3, b"command terminated with non-zero exit code: exit status 2");
        assert!(spdy_error_stream("v2.channel.k8s.io", Ok(())).await.is_empty());
    }
}
