//! Byte layouts of the three tables.
//!
//! History keys must sort by user key first and revision second, and every key that starts with a
//! user-key prefix must sort inside one contiguous run. An order-preserving escape does both:
//! `0x00` becomes `0x00 0xFF`, and the key ends with the terminator `0x00 0x01`, which sorts before
//! any continuation of the key. The revision follows as 8 big-endian bytes.

use bytes::Bytes;

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: [u8; 2] = [0x00, 0x01];
const REVISION_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub(crate) struct DecodeError {
    pub(crate) what: &'static str,
    pub(crate) detail: String,
}

fn decode_error(what: &'static str, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        what,
        detail: detail.into(),
    }
}

/// The escaped form of `prefix`: every history key of a user key that starts with `prefix`
/// starts with it.
pub(crate) fn escaped_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 4);
    escape_into(&mut out, prefix);
    out
}

fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
}

/// `escaped(key) ++ TERM`: the common start of every version of exactly `key`.
pub(crate) fn key_versions_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + REVISION_BYTES);
    escape_into(&mut out, key);
    out.extend_from_slice(&TERMINATOR);
    out
}

pub(crate) fn history_key(key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = key_versions_prefix(key);
    out.extend_from_slice(&revision_bytes(revision));
    out
}

pub(crate) fn revision_bytes(revision: i64) -> [u8; REVISION_BYTES] {
    // Revisions are never negative, so the signed value sorts like the unsigned one.
    (revision.max(0) as u64).to_be_bytes()
}

pub(crate) fn decode_revision(bytes: &[u8]) -> Result<i64, DecodeError> {
    let arr: [u8; REVISION_BYTES] = bytes
        .try_into()
        .map_err(|_| decode_error("revision", format!("{} bytes", bytes.len())))?;
    i64::try_from(u64::from_be_bytes(arr)).map_err(|_| decode_error("revision", "out of range"))
}

/// Splits a history key into its per-key part (`escaped(key) ++ TERM`) and its revision.
pub(crate) fn split_history_key(hk: &[u8]) -> Result<(&[u8], i64), DecodeError> {
    if hk.len() < TERMINATOR.len() + REVISION_BYTES {
        return Err(decode_error("history key", "too short"));
    }
    let (key_part, rev) = hk.split_at(hk.len() - REVISION_BYTES);
    if !key_part.ends_with(&TERMINATOR) {
        return Err(decode_error("history key", "no terminator"));
    }
    Ok((key_part, decode_revision(rev)?))
}

/// Recovers the user key from `escaped(key) ++ TERM`.
pub(crate) fn unescape_key(key_part: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let body = key_part
        .strip_suffix(&TERMINATOR)
        .ok_or_else(|| decode_error("history key", "no terminator"))?;
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        out.push(b);
        if b == ESCAPE {
            if body.get(i + 1) != Some(&ESCAPED_ZERO) {
                return Err(decode_error("history key", "bad escape"));
            }
            i += 1;
        }
        i += 1;
    }
    Ok(out)
}

/// One version of a key, as the history table stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum VersionRecord {
    Live {
        create_revision: i64,
        version: i64,
        value: Bytes,
    },
    Tombstone,
}

const LIVE: u8 = 1;
const TOMBSTONE: u8 = 2;

impl VersionRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            VersionRecord::Live {
                create_revision,
                version,
                value,
            } => {
                let mut out = Vec::with_capacity(17 + value.len());
                out.push(LIVE);
                out.extend_from_slice(&revision_bytes(*create_revision));
                out.extend_from_slice(&revision_bytes(*version));
                out.extend_from_slice(value);
                out
            }
            VersionRecord::Tombstone => vec![TOMBSTONE],
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.first() {
            Some(&LIVE) if bytes.len() >= 17 => Ok(VersionRecord::Live {
                create_revision: decode_revision(&bytes[1..9])?,
                version: decode_revision(&bytes[9..17])?,
                value: Bytes::copy_from_slice(&bytes[17..]),
            }),
            Some(&TOMBSTONE) if bytes.len() == 1 => Ok(VersionRecord::Tombstone),
            _ => Err(decode_error("version record", format!("{} bytes", bytes.len()))),
        }
    }
}

/// The keys one revision changed, in the order the transaction changed them.
pub(crate) fn encode_log_entry(keys: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + keys.iter().map(|k| k.len() + 4).sum::<usize>());
    out.extend_from_slice(&(keys.len() as u32).to_be_bytes());
    for k in keys {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
    }
    out
}

pub(crate) fn decode_log_entry(bytes: &[u8]) -> Result<Vec<Bytes>, DecodeError> {
    fn take_u32(bytes: &[u8], at: &mut usize) -> Result<usize, DecodeError> {
        let end = *at + 4;
        let arr: [u8; 4] = bytes
            .get(*at..end)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| decode_error("log entry", "truncated"))?;
        *at = end;
        Ok(u32::from_be_bytes(arr) as usize)
    }
    let mut at = 0;
    let n = take_u32(bytes, &mut at)?;
    let mut keys = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let len = take_u32(bytes, &mut at)?;
        let key = bytes
            .get(at..at + len)
            .ok_or_else(|| decode_error("log entry", "truncated key"))?;
        keys.push(Bytes::copy_from_slice(key));
        at += len;
    }
    if at != bytes.len() {
        return Err(decode_error("log entry", "trailing bytes"));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn record_and_log_round_trip() {
        let live = VersionRecord::Live {
            create_revision: 7,
            version: 3,
            value: Bytes::from_static(b"v"),
        };
        assert_eq!(VersionRecord::decode(&live.encode()).unwrap(), live);
        assert_eq!(
            VersionRecord::decode(&VersionRecord::Tombstone.encode()).unwrap(),
            VersionRecord::Tombstone
        );
        assert!(VersionRecord::decode(b"").is_err());
        assert!(VersionRecord::decode(&[LIVE, 1, 2]).is_err());
        let keys = vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b""),
            Bytes::from_static(b"\0x"),
        ];
        assert_eq!(decode_log_entry(&encode_log_entry(&keys)).unwrap(), keys);
        assert!(decode_log_entry(&[0, 0, 0, 1, 0, 0, 0, 9, 1]).is_err());
    }

    proptest! {
        #[test]
        fn history_keys_sort_by_key_then_revision(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), any::<u8>()], 0..6),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), any::<u8>()], 0..6),
            ra in 0i64..1000, rb in 0i64..1000,
        ) {
            let ha = history_key(&a, ra);
            let hb = history_key(&b, rb);
            prop_assert_eq!(ha.cmp(&hb), (&a, ra).cmp(&(&b, rb)));
            let (part, rev) = split_history_key(&ha).unwrap();
            prop_assert_eq!(rev, ra);
            prop_assert_eq!(unescape_key(part).unwrap(), a.clone());
            // Prefix runs are contiguous: b starts with a exactly when b's history key starts with
            // a's escaped prefix.
            prop_assert_eq!(hb.starts_with(&escaped_prefix(&a)), b.starts_with(&a));
        }
    }
}
