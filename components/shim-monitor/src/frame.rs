//! The attach protocol spoken over a container's `attach.sock` between its monitor and the clients attached to
//! its standard streams (`bonsai attach`, the node agent's attach and exec streams). Each message is a frame: a
//! kind byte, a big-endian u32 payload length, the payload.

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
}
