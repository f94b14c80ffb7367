//! The attach protocol spoken over `<state>/attach.sock` between a container's shim and the clients attached to
//! its standard streams (`bonsai attach`, and the node agent's attach/exec streams later). Each message is a
//! frame: a kind byte, a big-endian u32 payload length, the payload. The shim closes a client's connection once
//! the container has ended and all of its output has been sent; the exit status is then in `exit.json`.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::ContainerError;

/// The socket's file name in a container's state directory.
pub const SOCKET: &str = "attach.sock";

/// Largest payload accepted; the shim sends at most 16 KiB at a time.
pub const MAX_PAYLOAD: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Client to shim: bytes for the container's standard input (or its terminal).
    Stdin(Vec<u8>),
    /// Client to shim: the client's input has ended.
    CloseStdin,
    /// Client to shim: the client's terminal size.
    Resize { rows: u16, cols: u16 },
    /// Shim to client: the container's standard output (all of its output when it has a terminal).
    Stdout(Vec<u8>),
    /// Shim to client: the container's standard error.
    Stderr(Vec<u8>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("unknown attach frame kind {0}")]
    UnknownKind(u8),
    #[error("attach frame of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("malformed attach frame: {0}")]
    Malformed(&'static str),
}

const STDIN: u8 = 0;
const CLOSE_STDIN: u8 = 1;
const RESIZE: u8 = 2;
const STDOUT: u8 = 3;
const STDERR: u8 = 4;

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let resize;
        let (kind, payload): (u8, &[u8]) = match self {
            Frame::Stdin(data) => (STDIN, data),
            Frame::CloseStdin => (CLOSE_STDIN, &[]),
            Frame::Resize { rows, cols } => {
                let [r0, r1] = rows.to_be_bytes();
                let [c0, c1] = cols.to_be_bytes();
                resize = [r0, r1, c0, c1];
                (RESIZE, &resize)
            }
            Frame::Stdout(data) => (STDOUT, data),
            Frame::Stderr(data) => (STDERR, data),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let Some(header) = self.buffer.get(..5) else {
            return Ok(None);
        };
        let kind = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(len));
        }
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        let payload: Vec<u8> = self.buffer.drain(..5 + len).skip(5).collect();
        let frame = match kind {
            STDIN => Frame::Stdin(payload),
            CLOSE_STDIN => Frame::CloseStdin,
            RESIZE => match payload[..] {
                [r0, r1, c0, c1] => Frame::Resize {
                    rows: u16::from_be_bytes([r0, r1]),
                    cols: u16::from_be_bytes([c0, c1]),
                },
                _ => return Err(ProtocolError::Malformed("a resize carries 4 bytes")),
            },
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            other => return Err(ProtocolError::UnknownKind(other)),
        };
        Ok(Some(frame))
    }
}

/// A path naming `dir/name` that fits in a unix socket address (108 bytes) however deep `dir` is: the directory
/// is reached through this process's descriptor for it, which must stay open while the path is used.
fn short_path(dir: &std::fs::File, name: &str) -> String {
    format!("/proc/self/fd/{}/{name}", dir.as_raw_fd())
}

fn open_dir(dir: &Path) -> Result<std::fs::File, ContainerError> {
    std::fs::File::open(dir).map_err(|source| ContainerError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Listens on `dir/name` (replacing a stale socket).
pub fn listen(dir: &Path, name: &str) -> Result<UnixListener, ContainerError> {
    let handle = open_dir(dir)?;
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ContainerError::Io { path, source }),
    }
    UnixListener::bind(short_path(&handle, name)).map_err(|source| ContainerError::Io { path, source })
}

/// Connects to `dir/name`.
pub fn connect(dir: &Path, name: &str) -> Result<UnixStream, std::io::Error> {
    let handle = std::fs::File::open(dir)?;
    UnixStream::connect(short_path(&handle, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whole_and_split() {
        let frames = [
            Frame::Stdin(b"echo hi\n".to_vec()),
            Frame::CloseStdin,
            Frame::Resize { rows: 40, cols: 132 },
            Frame::Stdout(vec![0; 70_000]),
            Frame::Stderr(Vec::new()),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        // Fed one byte at a time, the decoder yields exactly the frames, in order.
        let mut decoder = Decoder::default();
        let mut decoded = Vec::new();
        for byte in &bytes {
            decoder.push(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
        assert_eq!(decoder.next_frame(), Ok(None));
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut decoder = Decoder::default();
        decoder.push(&[9, 0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Err(ProtocolError::UnknownKind(9)));
        let mut decoder = Decoder::default();
        decoder.push(&[STDIN, 0xff, 0, 0, 0]);
        assert!(matches!(decoder.next_frame(), Err(ProtocolError::TooLarge(_))));
        let mut decoder = Decoder::default();
        decoder.push(&[RESIZE, 0, 0, 0, 1, 7]);
        assert!(matches!(decoder.next_frame(), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn sockets_in_directories_deeper_than_a_socket_address() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let listener = listen(&deep, SOCKET).unwrap();
        let mut client = connect(&deep, SOCKET).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        use std::io::{Read, Write};
        client.write_all(b"x").unwrap();
        let mut byte = [0];
        server.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
        // A stale socket file is replaced.
        drop(listener);
        listen(&deep, SOCKET).unwrap();
    }
}
