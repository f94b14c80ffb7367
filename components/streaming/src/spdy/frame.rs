//! SPDY/3.1 frames on the wire (draft-mbelshe-httpbis-spdy-00 section 2, plus SPDY/3.1's session-level
//! WINDOW_UPDATE on stream 0) and the zlib-compressed header blocks.
//!
//! Control frame: `1 | version (15 bits) | type (16)`, `flags (8) | length (24)`, then the type's fields.
//! Data frame: `0 | stream id (31)`, `flags (8) | length (24)`, then the payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::SPDY3_DICTIONARY;
use crate::Error;

pub(crate) const VERSION: u16 = 3;
/// Both data and control frames carry a 24-bit length.
pub(crate) const MAX_FRAME_LENGTH: usize = (1 << 24) - 1;
/// A header block larger than this (after decompression) is refused instead of buffered.
const MAX_HEADER_BLOCK: usize = 1 << 20;

pub(crate) const FLAG_FIN: u8 = 0x01;
pub(crate) const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes this side sends.
pub(crate) const RST_PROTOCOL_ERROR: u32 = 1;
pub(crate) const RST_REFUSED_STREAM: u32 = 3;
pub(crate) const RST_CANCEL: u32 = 5;

/// SETTINGS_INITIAL_WINDOW_SIZE (SPDY/3 section 2.6.4).
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// One header: lowercase name, values (sent NUL-separated).
pub(crate) type Headers = Vec<(String, String)>;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this side does not know (SPDY says: ignore it).
    Unknown {
        frame_type: u16,
    },
}

/// The compression side of one direction of a connection: one zlib stream for every header block sent, each
/// block ended with a sync flush (SPDY/3 section 2.6.10).
pub(crate) struct HeaderEncoder {
    zlib: Compress,
}

impl std::fmt::Debug for HeaderEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderEncoder")
    }
}

impl HeaderEncoder {
    pub(crate) fn new() -> Result<Self, Error> {
        let mut zlib = Compress::new(Compression::best(), true);
        zlib.set_dictionary(SPDY3_DICTIONARY)
            .map_err(|e| Error::Spdy(format!("zlib dictionary: {e}")))?;
        Ok(HeaderEncoder { zlib })
    }

    /// The compressed header block for `headers`: count, then length-prefixed names and values (32-bit each).
    pub(crate) fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, Error> {
        let mut plain = BytesMut::new();
        plain.put_u32(len_u32(headers.len())?);
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            plain.put_u32(len_u32(name.len())?);
            plain.put_slice(name.as_bytes());
            plain.put_u32(len_u32(value.len())?);
            plain.put_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input: &[u8] = &plain;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Spdy(format!("header compression: {e}")))?;
            let consumed = usize::try_from(self.zlib.total_in() - before).unwrap_or(input.len());
            input = &input[consumed.min(input.len())..];
            // A sync flush is complete once all input is in and zlib left spare room in the output.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The decompression side: the peer's zlib stream, across all its header blocks.
pub(crate) struct HeaderDecoder {
    zlib: Decompress,
}

impl std::fmt::Debug for HeaderDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderDecoder")
    }
}

impl HeaderDecoder {
    pub(crate) fn new() -> Self {
        HeaderDecoder {
            zlib: Decompress::new(true),
        }
    }

    /// Decompresses one header block and parses its name/value pairs.
    pub(crate) fn decode(&mut self, block: &[u8]) -> Result<Headers, Error> {
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.len() > MAX_HEADER_BLOCK {
                return Err(Error::Spdy("header block too large".into()));
            }
            if out.capacity() - out.len() < 256 {
                out.reserve(1024);
            }
            let before = self.zlib.total_in();
            let result = self.zlib.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.zlib.total_in() - before).unwrap_or(input.len());
            input = &input[consumed.min(input.len())..];
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(SPDY3_DICTIONARY)
                        .map_err(|e| Error::Spdy(format!("zlib dictionary: {e}")))?;
                }
                Err(e) => return Err(Error::Spdy(format!("header decompression: {e}"))),
            }
        }
        parse_header_pairs(&out)
    }
}

fn parse_header_pairs(mut plain: &[u8]) -> Result<Headers, Error> {
    let short = || Error::Spdy("truncated header block".into());
    if plain.len() < 4 {
        return Err(short());
    }
    let count = plain.get_u32() as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = take_string(&mut plain).ok_or_else(short)?;
        let value = take_string(&mut plain).ok_or_else(short)?;
        if name.is_empty() {
            return Err(Error::Spdy("empty header name".into()));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

fn take_string(plain: &mut &[u8]) -> Option<String> {
    if plain.len() < 4 {
        return None;
    }
    let len = plain.get_u32() as usize;
    if plain.len() < len {
        return None;
    }
    let text = String::from_utf8_lossy(&plain[..len]).into_owned();
    plain.advance(len);
    Some(text)
}

fn len_u32(len: usize) -> Result<u32, Error> {
    u32::try_from(len).map_err(|_| Error::Spdy("header too long".into()))
}

/// Appends `frame` to `out`, compressing its header block with `encoder`.
pub(crate) fn encode(frame: &Frame, encoder: &mut HeaderEncoder, out: &mut BytesMut) -> Result<(), Error> {
    match frame {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            if data.len() > MAX_FRAME_LENGTH {
                return Err(Error::Spdy("data frame too long".into()));
            }
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
            out.put_slice(data);
        }
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            flags,
            headers,
        } => {
            let block = encoder.encode(headers)?;
            let mut body = BytesMut::with_capacity(10 + block.len());
            body.put_u32(stream_id & 0x7fff_ffff);
            body.put_u32(associated_to & 0x7fff_ffff);
            body.put_u8((priority & 0x07) << 5);
            body.put_u8(0); // credential slot
            body.put_slice(&block);
            control(out, TYPE_SYN_STREAM, *flags, &body)?;
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            let block = encoder.encode(headers)?;
            let mut body = BytesMut::with_capacity(4 + block.len());
            body.put_u32(stream_id & 0x7fff_ffff);
            body.put_slice(&block);
            control(out, TYPE_SYN_REPLY, *flags, &body)?;
        }
        Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let block = encoder.encode(headers)?;
            let mut body = BytesMut::with_capacity(4 + block.len());
            body.put_u32(stream_id & 0x7fff_ffff);
            body.put_slice(&block);
            control(out, TYPE_HEADERS, *flags, &body)?;
        }
        Frame::RstStream { stream_id, status } => {
            let mut body = BytesMut::with_capacity(8);
            body.put_u32(stream_id & 0x7fff_ffff);
            body.put_u32(*status);
            control(out, TYPE_RST_STREAM, 0, &body)?;
        }
        Frame::Settings { flags, entries } => {
            let mut body = BytesMut::with_capacity(4 + 8 * entries.len());
            body.put_u32(len_u32(entries.len())?);
            for (flag, id, value) in entries {
                body.put_u32((u32::from(*flag) << 24) | (id & 0x00ff_ffff));
                body.put_u32(*value);
            }
            control(out, TYPE_SETTINGS, *flags, &body)?;
        }
        Frame::Ping { id } => control(out, TYPE_PING, 0, &id.to_be_bytes())?,
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            let mut body = BytesMut::with_capacity(8);
            body.put_u32(last_good_stream_id & 0x7fff_ffff);
            body.put_u32(*status);
            control(out, TYPE_GOAWAY, 0, &body)?;
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut body = BytesMut::with_capacity(8);
            body.put_u32(stream_id & 0x7fff_ffff);
            body.put_u32(delta & 0x7fff_ffff);
            control(out, TYPE_WINDOW_UPDATE, 0, &body)?;
        }
        Frame::Unknown { .. } => return Err(Error::Spdy("cannot encode an unknown frame".into())),
    }
    Ok(())
}

fn control(out: &mut BytesMut, frame_type: u16, flags: u8, body: &[u8]) -> Result<(), Error> {
    if body.len() > MAX_FRAME_LENGTH {
        return Err(Error::Spdy("control frame too long".into()));
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(frame_type);
    out.put_u32((u32::from(flags) << 24) | body.len() as u32);
    out.put_slice(body);
    Ok(())
}

/// Takes one whole frame off the front of `buf`, or `None` if it is not all there yet.
pub(crate) fn decode(buf: &mut BytesMut, decoder: &mut HeaderDecoder) -> Result<Option<Frame>, Error> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    let length = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
    if buf.len() < 8 + length {
        return Ok(None);
    }
    buf.advance(8);
    let mut body = buf.split_to(length).freeze();
    if first & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data {
            stream_id: first & 0x7fff_ffff,
            flags,
            data: body,
        }));
    }
    let version = ((first >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(Error::Spdy(format!("unsupported SPDY version {version}")));
    }
    let frame_type = (first & 0xffff) as u16;
    let need = |body: &Bytes, n: usize| {
        if body.len() < n {
            Err(Error::Spdy(format!("control frame type {frame_type} too short")))
        } else {
            Ok(())
        }
    };
    let frame = match frame_type {
        TYPE_SYN_STREAM => {
            need(&body, 10)?;
            let stream_id = body.get_u32() & 0x7fff_ffff;
            let associated_to = body.get_u32() & 0x7fff_ffff;
            let priority = body.get_u8() >> 5;
            body.advance(1);
            let headers = decoder.decode(&body)?;
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            }
        }
        TYPE_SYN_REPLY => {
            need(&body, 4)?;
            let stream_id = body.get_u32() & 0x7fff_ffff;
            let headers = decoder.decode(&body)?;
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
        }
        TYPE_HEADERS => {
            need(&body, 4)?;
            let stream_id = body.get_u32() & 0x7fff_ffff;
            let headers = decoder.decode(&body)?;
            Frame::Headers {
                stream_id,
                flags,
                headers,
            }
        }
        TYPE_RST_STREAM => {
            need(&body, 8)?;
            Frame::RstStream {
                stream_id: body.get_u32() & 0x7fff_ffff,
                status: body.get_u32(),
            }
        }
        TYPE_SETTINGS => {
            need(&body, 4)?;
            let count = body.get_u32() as usize;
            need(&body, count.saturating_mul(8))?;
            let entries = (0..count)
                .map(|_| {
                    let flag_id = body.get_u32();
                    ((flag_id >> 24) as u8, flag_id & 0x00ff_ffff, body.get_u32())
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            need(&body, 4)?;
            Frame::Ping { id: body.get_u32() }
        }
        TYPE_GOAWAY => {
            need(&body, 4)?;
            let last_good_stream_id = body.get_u32() & 0x7fff_ffff;
            // SPDY/3 added the status; tolerate its absence.
            let status = if body.len() >= 4 { body.get_u32() } else { 0 };
            Frame::GoAway {
                last_good_stream_id,
                status,
            }
        }
        TYPE_WINDOW_UPDATE => {
            need(&body, 8)?;
            Frame::WindowUpdate {
                stream_id: body.get_u32() & 0x7fff_ffff,
                delta: body.get_u32() & 0x7fff_ffff,
            }
        }
        other => Frame::Unknown { frame_type: other },
    };
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let mut encoder = HeaderEncoder::new().unwrap();
        let mut decoder = HeaderDecoder::new();
        let mut wire = BytesMut::new();
        for frame in frames {
            encode(frame, &mut encoder, &mut wire).unwrap();
        }
        let mut out = Vec::new();
        while let Some(frame) = decode(&mut wire, &mut decoder).unwrap() {
            out.push(frame);
        }
        assert!(wire.is_empty());
        out
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_frame_type_round_trips_through_one_compression_context() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: h(&[("x", "a\0b")]),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 5,
                flags: 0,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20), (1, 4, 100)],
            },
            Frame::Ping { id: 0xffff_fffe },
            Frame::GoAway {
                last_good_stream_id: 7,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 0x7fff_ffff,
            },
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn control_frame_header_layout_matches_the_spec() {
        let mut encoder = HeaderEncoder::new().unwrap();
        let mut wire = BytesMut::new();
        encode(&Frame::Ping { id: 1 }, &mut encoder, &mut wire).unwrap();
        // control bit + version 3, type 6, flags 0, length 4, id.
        assert_eq!(
            &wire[..],
            &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]
        );
        wire.clear();
        encode(
            &Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"ab"),
            },
            &mut encoder,
            &mut wire,
        )
        .unwrap();
        assert_eq!(&wire[..], &[0, 0, 0, 5, 0x01, 0, 0, 2, b'a', b'b']);
        wire.clear();
        encode(
            &Frame::WindowUpdate {
                stream_id: 3,
                delta: 65536,
            },
            &mut encoder,
            &mut wire,
        )
        .unwrap();
        assert_eq!(
            &wire[..],
            &[0x80, 0x03, 0x00, 0x09, 0, 0, 0, 8, 0, 0, 0, 3, 0, 1, 0, 0]
        );
    }

    #[test]
    fn the_header_block_starts_a_zlib_stream_naming_the_spdy_dictionary() {
        let mut encoder = HeaderEncoder::new().unwrap();
        let block = encoder.encode(&h(&[("a", "b")])).unwrap();
        // CMF 0x78 (deflate, 32K window), FDICT set in FLG, then the dictionary's Adler-32.
        assert_eq!(block[0], 0x78);
        assert_ne!(block[1] & 0x20, 0);
        assert_eq!(&block[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
        // A sync flush ends every block with an empty stored block.
        assert_eq!(&block[block.len() - 4..], &[0x00, 0x00, 0xff, 0xff]);
    }

    /// Two consecutive SYN_STREAM header blocks as C zlib (level 9, the SPDY dictionary, sync flush after each)
    /// writes them: what kubectl's port-forward sends for one connection (the second block reuses the window).
    #[test]
    fn decodes_header_blocks_from_another_zlib_implementation() {
        let first = [
            0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x48, 0xf9, 0x5b, 0x04, 0x4e, 0xea, 0x16,
            0x06, 0x16, 0x06, 0x40, 0x9a, 0xb3, 0x08, 0x12, 0x5f, 0x99, 0xa0, 0x74, 0xcc, 0x68, 0x00, 0x4e,
            0x89, 0x25, 0x45, 0xa9, 0x89, 0xb9, 0xd0, 0xc2, 0x86, 0x35, 0x15, 0x14, 0x15, 0x00, 0x00, 0x00,
            0x00, 0xff, 0xff,
        ];
        let second = [
            0x22, 0x53, 0x33, 0xa8, 0xa4, 0x4a, 0x04, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let mut decoder = HeaderDecoder::new();
        assert_eq!(
            decoder.decode(&first).unwrap(),
            h(&[("port", "8080"), ("requestid", "0"), ("streamtype", "error")])
        );
        assert_eq!(
            decoder.decode(&second).unwrap(),
            h(&[("port", "8080"), ("requestid", "0"), ("streamtype", "data")])
        );
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let mut encoder = HeaderEncoder::new().unwrap();
        let mut decoder = HeaderDecoder::new();
        let mut wire = BytesMut::new();
        let frame = Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: h(&[("streamtype", "stdout")]),
        };
        encode(&frame, &mut encoder, &mut wire).unwrap();
        let mut partial = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            partial.put_u8(*byte);
            let decoded = decode(&mut partial, &mut decoder).unwrap();
            if i + 1 < wire.len() {
                assert_eq!(decoded, None);
            } else {
                assert_eq!(decoded, Some(frame.clone()));
            }
        }
    }

    #[test]
    fn unknown_control_frames_are_skipped_and_bad_versions_refused() {
        let mut decoder = HeaderDecoder::new();
        let mut wire = BytesMut::from(&[0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 2, 1, 2][..]);
        assert_eq!(
            decode(&mut wire, &mut decoder).unwrap(),
            Some(Frame::Unknown { frame_type: 10 })
        );
        let mut wire = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(decode(&mut wire, &mut decoder).is_err());
    }
}
