//! The server side of a SPDY/3.1 session: the peer (kubectl, through moby/spdystream) opens every stream; this
//! side replies to (or resets) each, moves DATA between each stream and an in-memory pipe, answers PINGs, and
//! keeps SPDY/3.1's flow-control windows.
//!
//! Flow control: this side advertises nothing (so the peer may send 64 KiB per stream and per session before a
//! WINDOW_UPDATE, section 2.6.8), and returns each window as the bytes are handed to the stream's reader.
//! Sending, it counts down the peer's windows, but only once the peer has shown that it keeps them (a
//! WINDOW_UPDATE or a SETTINGS_INITIAL_WINDOW_SIZE): spdystream, the only client that matters, never sends either
//! and never checks them, so enforcing the default 64 KiB against it would stall every transfer past 64 KiB.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc, oneshot};

use super::frame::{self, FLAG_FIN, FLAG_UNIDIRECTIONAL, Frame, HeaderDecoder, HeaderEncoder, Headers};
use crate::Error;

/// SPDY/3's initial window, for each stream and for the session.
const DEFAULT_WINDOW: i64 = 64 * 1024;
/// The pipe between a stream and its user: also the most one stream buffers.
const PIPE_CAPACITY: usize = 64 * 1024;
/// The largest DATA frame this side writes (spdystream reads any size; 32 KiB keeps frames interleaved).
const MAX_DATA_CHUNK: usize = 32 * 1024;

/// A stream the peer opened, not yet answered.
#[derive(Debug)]
pub(crate) struct IncomingStream {
    pub(crate) id: u32,
    pub(crate) headers: Headers,
    user: DuplexStream,
    pump: ReadHalf<DuplexStream>,
    local_fin: bool,
    session: SessionHandle,
}

impl IncomingStream {
    /// The first value of header `name` (names are compared without case, as Go's `http.Header.Get` does).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }

    /// Sends SYN_REPLY and hands back the stream: reads give the peer's DATA (EOF at its FIN), writes become DATA
    /// frames, and shutting down (or dropping) the writing side sends FIN. `done` fires once that FIN is out.
    pub(crate) fn accept(self) -> (DuplexStream, oneshot::Receiver<()>) {
        let (done_tx, done_rx) = oneshot::channel();
        let session = self.session.clone();
        let id = self.id;
        let _ = session.out.send(Frame::SynReply {
            stream_id: id,
            flags: 0,
            headers: Vec::new(),
        });
        let pump = self.pump;
        let local_fin = self.local_fin;
        tokio::spawn(async move {
            if !local_fin {
                pump_outbound(&session, id, pump).await;
            }
            session.flow().reset.insert(id);
            let _ = done_tx.send(());
        });
        (self.user, done_rx)
    }

    /// Refuses the stream with RST_STREAM (what spdystream's server does when its handler rejects one).
    pub(crate) fn reject(self, status: u32) {
        self.session.flow().reset.insert(self.id);
        let _ = self.session.out.send(Frame::RstStream {
            stream_id: self.id,
            status,
        });
    }
}

/// Copies what the user writes into DATA frames, within the peer's windows, then sends FIN.
async fn pump_outbound(session: &SessionHandle, id: u32, mut pump: ReadHalf<DuplexStream>) {
    let mut buf = vec![0u8; MAX_DATA_CHUNK];
    loop {
        let n = match pump.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut sent = 0;
        while sent < n {
            let Some(allowed) = session.take_send_window(id, n - sent).await else {
                return; // reset by the peer, or the session is gone
            };
            let chunk = Bytes::copy_from_slice(&buf[sent..sent + allowed]);
            if session
                .out
                .send(Frame::Data {
                    stream_id: id,
                    flags: 0,
                    data: chunk,
                })
                .is_err()
            {
                return;
            }
            sent += allowed;
        }
    }
    if !session.flow().reset.contains(&id) {
        let _ = session.out.send(Frame::Data {
            stream_id: id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        });
    }
}

/// The peer's windows as this side sees them.
#[derive(Debug, Default)]
struct Flow {
    /// Whether the peer has shown it keeps windows (see the module comment).
    enforced: bool,
    initial: i64,
    session_send: i64,
    stream_send: HashMap<u32, i64>,
    /// Streams reset (by either side) or finished: their pumps stop.
    reset: HashSet<u32>,
    closed: bool,
}

#[derive(Debug, Clone)]
struct SessionHandle {
    out: mpsc::UnboundedSender<Frame>,
    flow: Arc<Mutex<Flow>>,
    window_changed: Arc<Notify>,
}

impl SessionHandle {
    fn flow(&self) -> MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until up to `want` bytes may be sent on stream `id`, and takes them from the windows.
    async fn take_send_window(&self, id: u32, want: usize) -> Option<usize> {
        loop {
            let notified = self.window_changed.notified();
            {
                let mut flow = self.flow();
                if flow.closed || flow.reset.contains(&id) {
                    return None;
                }
                if !flow.enforced {
                    return Some(want);
                }
                let initial = flow.initial;
                let stream = *flow.stream_send.entry(id).or_insert(initial);
                let allowed = stream.min(flow.session_send).min(want as i64);
                if allowed > 0 {
                    flow.session_send -= allowed;
                    flow.stream_send.insert(id, stream - allowed);
                    return Some(allowed as usize);
                }
            }
            notified.await;
        }
    }
}

/// A running session: the streams the peer opens, and a way to end it.
#[derive(Debug)]
pub(crate) struct Session {
    incoming: mpsc::Receiver<IncomingStream>,
    handle: SessionHandle,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Starts serving SPDY/3.1 on `io` (the connection after the 101 answer).
    pub(crate) fn start<T>(io: T) -> Result<Session, Error>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let handle = SessionHandle {
            out: out_tx,
            flow: Arc::new(Mutex::new(Flow {
                initial: DEFAULT_WINDOW,
                session_send: DEFAULT_WINDOW,
                ..Flow::default()
            })),
            window_changed: Arc::new(Notify::new()),
        };
        let encoder = HeaderEncoder::new()?;
        let writer = tokio::spawn(write_frames(write, out_rx, encoder));
        let (incoming_tx, incoming) = mpsc::channel(16);
        let reader = tokio::spawn(read_frames(read, handle.clone(), incoming_tx));
        Ok(Session {
            incoming,
            handle,
            writer,
            reader,
        })
    }

    /// The next stream the peer opens; `None` once the connection is gone or the peer sent GOAWAY.
    pub(crate) async fn next_stream(&mut self) -> Option<IncomingStream> {
        self.incoming.recv().await
    }

    /// Sends GOAWAY, lets every queued frame out, and closes the connection.
    pub(crate) async fn close(self) {
        let _ = self.handle.out.send(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        });
        {
            let mut flow = self.handle.flow();
            flow.closed = true;
        }
        self.handle.window_changed.notify_waiters();
        self.reader.abort();
        // Pumps hold senders too; the writer stops on the GOAWAY's heels via the closed flag check below.
        drop(self.handle);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.writer).await;
    }
}

async fn write_frames<W: AsyncWrite>(
    write: W,
    mut frames: mpsc::UnboundedReceiver<Frame>,
    mut encoder: HeaderEncoder,
) {
    let mut write = std::pin::pin!(write);
    let mut buf = BytesMut::new();
    while let Some(first) = frames.recv().await {
        // Encode everything queued so far and write it in one go; nothing goes after a GOAWAY.
        let mut next = Some(first);
        let mut going_away = false;
        while let Some(frame) = next.take() {
            going_away = matches!(frame, Frame::GoAway { .. });
            if let Err(error) = frame::encode(&frame, &mut encoder, &mut buf) {
                tracing::debug!(%error, "spdy: dropping a frame that cannot be encoded");
            }
            if !going_away {
                next = frames.try_recv().ok();
            }
        }
        if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
            return;
        }
        buf.clear();
        if going_away {
            break;
        }
    }
    let _ = write.shutdown().await;
}

/// Per-stream receive state of this side.
#[derive(Debug)]
struct Inbound {
    /// Where the stream's DATA goes; `None` once the peer sent FIN.
    pipe: Option<WriteHalf<DuplexStream>>,
    /// Bytes handed to the reader since the last WINDOW_UPDATE.
    unacknowledged: i64,
}

/// Ends the stream's data for its reader. The pipe's other half (the outbound pump) lives on, so dropping this
/// half alone would not be an EOF: shut it down.
async fn close_pipe(pipe: &mut Option<WriteHalf<DuplexStream>>) {
    if let Some(mut pipe) = pipe.take() {
        let _ = pipe.shutdown().await;
    }
}

async fn read_frames<R: AsyncRead>(read: R, session: SessionHandle, incoming: mpsc::Sender<IncomingStream>) {
    let mut read = std::pin::pin!(read);
    let mut decoder = HeaderDecoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut streams: HashMap<u32, Inbound> = HashMap::new();
    let mut last_stream_id = 0u32;
    let mut session_unacknowledged = 0i64;
    let mut incoming = Some(incoming);
    loop {
        let frame = match frame::decode(&mut buf, &mut decoder) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                match read.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "spdy: protocol error, going away");
                let _ = session.out.send(Frame::GoAway {
                    last_good_stream_id: last_stream_id,
                    status: 1,
                });
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                // Client streams are odd and increasing (section 2.3.2).
                if stream_id % 2 == 0 || stream_id <= last_stream_id {
                    let _ = session.out.send(Frame::RstStream {
                        stream_id,
                        status: frame::RST_PROTOCOL_ERROR,
                    });
                    continue;
                }
                last_stream_id = stream_id;
                let Some(sender) = incoming.as_ref() else {
                    let _ = session.out.send(Frame::RstStream {
                        stream_id,
                        status: frame::RST_REFUSED_STREAM,
                    });
                    continue;
                };
                let (user, ours) = tokio::io::duplex(PIPE_CAPACITY);
                let (pump, pipe) = tokio::io::split(ours);
                let remote_fin = flags & FLAG_FIN != 0;
                streams.insert(
                    stream_id,
                    Inbound {
                        pipe: (!remote_fin).then_some(pipe),
                        unacknowledged: 0,
                    },
                );
                let stream = IncomingStream {
                    id: stream_id,
                    headers,
                    user,
                    pump,
                    local_fin: flags & FLAG_UNIDIRECTIONAL != 0,
                    session: session.clone(),
                };
                if sender.send(stream).await.is_err() {
                    incoming = None;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let len = data.len() as i64;
                if let Some(stream) = streams.get_mut(&stream_id) {
                    if let Some(pipe) = stream.pipe.as_mut()
                        && pipe.write_all(&data).await.is_err()
                    {
                        // The user stopped reading: drop what comes, keep the session.
                        stream.pipe = None;
                    }
                    if flags & FLAG_FIN != 0 {
                        close_pipe(&mut stream.pipe).await;
                    }
                    stream.unacknowledged += len;
                    if stream.unacknowledged >= DEFAULT_WINDOW / 2 && flags & FLAG_FIN == 0 {
                        let _ = session.out.send(Frame::WindowUpdate {
                            stream_id,
                            delta: stream.unacknowledged as u32,
                        });
                        stream.unacknowledged = 0;
                    }
                }
                session_unacknowledged += len;
                if session_unacknowledged >= DEFAULT_WINDOW / 2 {
                    let _ = session.out.send(Frame::WindowUpdate {
                        stream_id: 0,
                        delta: session_unacknowledged as u32,
                    });
                    session_unacknowledged = 0;
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(mut stream) = streams.remove(&stream_id) {
                    close_pipe(&mut stream.pipe).await;
                }
                session.flow().reset.insert(stream_id);
                session.window_changed.notify_waiters();
            }
            Frame::Settings { entries, .. } => {
                for (_, id, value) in entries {
                    if id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                        let mut flow = session.flow();
                        let delta = i64::from(value) - flow.initial;
                        flow.initial = i64::from(value);
                        flow.enforced = true;
                        for window in flow.stream_send.values_mut() {
                            *window += delta;
                        }
                    }
                }
                session.window_changed.notify_waiters();
            }
            Frame::WindowUpdate { stream_id, delta } => {
                {
                    let mut flow = session.flow();
                    flow.enforced = true;
                    if stream_id == 0 {
                        flow.session_send += i64::from(delta);
                    } else {
                        let initial = flow.initial;
                        *flow.stream_send.entry(stream_id).or_insert(initial) += i64::from(delta);
                    }
                }
                session.window_changed.notify_waiters();
            }
            Frame::Ping { id } => {
                // Odd ids are the client's: echo them (section 2.6.5). Even ones would answer our own.
                if id % 2 == 1 {
                    let _ = session.out.send(Frame::Ping { id });
                }
            }
            Frame::GoAway { .. } => {
                // No new streams; the ones open carry on.
                incoming = None;
            }
            Frame::Headers { stream_id, flags, .. } => {
                if flags & FLAG_FIN != 0
                    && let Some(stream) = streams.get_mut(&stream_id)
                {
                    close_pipe(&mut stream.pipe).await;
                }
            }
            Frame::SynReply { .. } | Frame::Unknown { .. } => {}
        }
    }
    // Connection gone: every reader sees EOF, every pump stops.
    for stream in streams.values_mut() {
        close_pipe(&mut stream.pipe).await;
    }
    session.flow().closed = true;
    session.window_changed.notify_waiters();
}

/// A client end of a session speaking frames, for tests here and in the protocols above.
#[cfg(test)]
pub(crate) mod testing {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The client end of a session, speaking frames.
    pub(crate) struct Peer {
        io: DuplexStream,
        encoder: HeaderEncoder,
        decoder: HeaderDecoder,
        buf: BytesMut,
    }

    impl Peer {
        pub(crate) async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            frame::encode(&frame, &mut self.encoder, &mut out).unwrap();
            self.io.write_all(&out).await.unwrap();
        }

        pub(crate) async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(frame) = frame::decode(&mut self.buf, &mut self.decoder).unwrap() {
                    return Some(frame);
                }
                if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return None;
                }
            }
        }
    }

    pub(crate) fn pair() -> (Session, Peer) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let session = Session::start(ours).unwrap();
        let peer = Peer {
            io: theirs,
            encoder: HeaderEncoder::new().unwrap(),
            decoder: HeaderDecoder::new(),
            buf: BytesMut::new(),
        };
        (session, peer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::testing::pair;
    use super::*;

    fn syn(stream_id: u32, kind: &str) -> Frame {
        Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: vec![("streamtype".into(), kind.into())],
        }
    }

    #[tokio::test]
    async fn streams_are_replied_to_and_carry_data_both_ways() {
        let (mut session, mut peer) = pair();
        peer.send(syn(1, "stdout")).await;
        let stream = session.next_stream().await.unwrap();
        assert_eq!(stream.header("StreamType"), Some("stdout"));
        let (mut io, done) = stream.accept();
        assert_eq!(
            peer.recv().await,
            Some(Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![]
            })
        );
        peer.send(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"in"),
        })
        .await;
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"in");
        io.write_all(b"out").await.unwrap();
        drop(io);
        assert_eq!(
            peer.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"out")
            })
        );
        assert_eq!(
            peer.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::new()
            })
        );
        done.await.unwrap();
    }

    #[tokio::test]
    async fn pings_from_the_client_are_echoed_and_bad_stream_ids_reset() {
        let (mut session, mut peer) = pair();
        peer.send(Frame::Ping { id: 1 }).await;
        assert_eq!(peer.recv().await, Some(Frame::Ping { id: 1 }));
        peer.send(syn(2, "data")).await;
        assert_eq!(
            peer.recv().await,
            Some(Frame::RstStream {
                stream_id: 2,
                status: frame::RST_PROTOCOL_ERROR
            })
        );
        peer.send(syn(3, "data")).await;
        let stream = session.next_stream().await.unwrap();
        stream.reject(frame::RST_REFUSED_STREAM);
        assert_eq!(
            peer.recv().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: frame::RST_REFUSED_STREAM
            })
        );
        session.close().await;
        assert!(matches!(peer.recv().await, Some(Frame::GoAway { .. })));
        assert_eq!(peer.recv().await, None);
    }

    #[tokio::test]
    async fn once_the_peer_keeps_windows_sending_waits_for_window_updates() {
        let (mut session, mut peer) = pair();
        // A 10-byte initial window turns enforcement on.
        peer.send(Frame::Settings {
            flags: 0,
            entries: vec![(0, frame::SETTINGS_INITIAL_WINDOW_SIZE, 10)],
        })
        .await;
        peer.send(syn(1, "stdout")).await;
        let (mut io, _done) = session.next_stream().await.unwrap().accept();
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { .. })));
        io.write_all(b"0123456789abcdef").await.unwrap();
        let Some(Frame::Data { data, .. }) = peer.recv().await else {
            panic!("expected data")
        };
        assert_eq!(&data[..], b"0123456789");
        // Nothing more until the window opens again.
        let more = tokio::time::timeout(std::time::Duration::from_millis(200), peer.recv()).await;
        assert!(more.is_err(), "sent past the window: {more:?}");
        peer.send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 100,
        })
        .await;
        let Some(Frame::Data { data, .. }) = peer.recv().await else {
            panic!("expected data")
        };
        assert_eq!(&data[..], b"abcdef");
    }

    #[tokio::test]
    async fn received_data_is_acknowledged_with_window_updates() {
        let (mut session, mut peer) = pair();
        peer.send(syn(1, "stdin")).await;
        let (mut io, _done) = session.next_stream().await.unwrap().accept();
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { .. })));
        let chunk = Bytes::from(vec![7u8; 16 * 1024]);
        for _ in 0..2 {
            peer.send(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: chunk.clone(),
            })
            .await;
        }
        let mut got = vec![0u8; 32 * 1024];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(
            peer.recv().await,
            Some(Frame::WindowUpdate {
                stream_id: 1,
                delta: 32 * 1024
            })
        );
        assert_eq!(
            peer.recv().await,
            Some(Frame::WindowUpdate {
                stream_id: 0,
                delta: 32 * 1024
            })
        );
    }
}
