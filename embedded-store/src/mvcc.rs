//! Reads of the revision layer: a key or a prefix at a revision, and the events of a run of
//! revisions. Pure functions of the engine's contents; the writer is the only one to change them.

use std::ops::Bound;

use bytes::Bytes;

use crate::StoreError;
use crate::encoding::{
    VersionRecord, decode_log_entry, decode_revision, escaped_prefix, history_key, key_versions_prefix,
    revision_bytes, split_history_key, unescape_key,
};
use crate::engine::{Engine, Table};
use crate::types::{EventKind, KeyValue, Revision, WatchEvent};

pub(crate) fn corrupt(engine: &dyn Engine, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(crate::engine::EngineError::Corrupt {
        engine: engine.kind(),
        detail: detail.to_string(),
    })
}

pub(crate) fn to_kv(key: Bytes, mod_revision: Revision, record: VersionRecord) -> Option<KeyValue> {
    match record {
        VersionRecord::Live {
            create_revision,
            version,
            value,
        } => Some(KeyValue {
            key,
            value,
            create_revision,
            mod_revision,
            version,
        }),
        VersionRecord::Tombstone => None,
    }
}

/// `key` as of `at`: its newest version at or below `at`, unless that is a deletion.
pub(crate) fn key_at(engine: &dyn Engine, key: &Bytes, at: Revision) -> Result<Option<KeyValue>, StoreError> {
    let lowest = history_key(key, 0);
    let highest = history_key(key, at);
    let mut found: Option<Result<(Revision, VersionRecord), StoreError>> = None;
    engine.scan(
        Table::History,
        Bound::Included(&lowest),
        Bound::Included(&highest),
        true,
        &mut |hk, v| {
            found = Some(
                split_history_key(hk)
                    .and_then(|(_, rev)| Ok((rev, VersionRecord::decode(v)?)))
                    .map_err(|e| corrupt(engine, e)),
            );
            false
        },
    )?;
    match found {
        None => Ok(None),
        Some(Err(e)) => Err(e),
        Some(Ok((rev, record))) => Ok(to_kv(key.clone(), rev, record)),
    }
}

pub(crate) struct RangeScan {
    pub(crate) kvs: Vec<KeyValue>,
    pub(crate) more: bool,
    pub(crate) count: i64,
}

/// Keys with `prefix`, from `start` on, as of `at`; at most `limit` of them (0: all), but all
/// counted.
pub(crate) fn range_at(
    engine: &dyn Engine,
    prefix: &[u8],
    start: Option<&[u8]>,
    limit: usize,
    at: Revision,
) -> Result<RangeScan, StoreError> {
    let run = escaped_prefix(prefix);
    let from = match start {
        Some(s) => key_versions_prefix(s),
        None => run.clone(),
    };
    let mut out = RangeScan {
        kvs: Vec::new(),
        more: false,
        count: 0,
    };
    // The versions of one key are adjacent and ascending; keep the newest one at or below `at`.
    let mut key_part: Vec<u8> = Vec::new();
    let mut newest: Option<(Revision, Vec<u8>)> = None;
    let mut failure: Option<StoreError> = None;

    let settle = |key_part: &[u8],
                  newest: Option<(Revision, Vec<u8>)>,
                  out: &mut RangeScan|
     -> Result<(), StoreError> {
        let Some((rev, raw)) = newest else { return Ok(()) };
        match VersionRecord::decode(&raw).map_err(|e| corrupt(engine, e))? {
            VersionRecord::Tombstone => {}
            record => {
                out.count += 1;
                if limit == 0 || out.kvs.len() < limit {
                    let key = Bytes::from(unescape_key(key_part).map_err(|e| corrupt(engine, e))?);
                    out.kvs.extend(to_kv(key, rev, record));
                } else {
                    out.more = true;
                }
            }
        }
        Ok(())
    };

    engine.scan(
        Table::History,
        Bound::Included(&from),
        Bound::Unbounded,
        false,
        &mut |hk, v| {
            if !hk.starts_with(&run) {
                return false;
            }
            let (part, rev) = match split_history_key(hk) {
                Ok(split) => split,
                Err(e) => {
                    failure = Some(corrupt(engine, e));
                    return false;
                }
            };
            if part != key_part.as_slice() {
                if let Err(e) = settle(&key_part, newest.take(), &mut out) {
                    failure = Some(e);
                    return false;
                }
                key_part.clear();
                key_part.extend_from_slice(part);
            }
            if rev <= at {
                newest = Some((rev, v.to_vec()));
            }
            true
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    settle(&key_part, newest.take(), &mut out)?;
    Ok(out)
}

/// The keys each revision in `[from, to]` changed, at most `max_revisions` of them.
pub(crate) fn log_entries(
    engine: &dyn Engine,
    from: Revision,
    to: Revision,
    max_revisions: usize,
) -> Result<Vec<(Revision, Vec<Bytes>)>, StoreError> {
    let mut entries = Vec::new();
    let mut failure = None;
    let (lo, hi) = (revision_bytes(from), revision_bytes(to));
    engine.scan(
        Table::Log,
        Bound::Included(&lo),
        Bound::Included(&hi),
        false,
        &mut |k, v| {
            match decode_revision(k).and_then(|rev| Ok((rev, decode_log_entry(v)?))) {
                Ok(entry) => entries.push(entry),
                Err(e) => failure = Some(corrupt(engine, e)),
            }
            failure.is_none() && entries.len() < max_revisions
        },
    )?;
    match failure {
        Some(e) => Err(e),
        None => Ok(entries),
    }
}

/// The events under `prefix` of the revisions in `[from, to]`. Stops after the revision that
/// brings the count to `max_events`; returns the events and the last revision fully read.
pub(crate) fn events_between(
    engine: &dyn Engine,
    prefix: &[u8],
    from: Revision,
    to: Revision,
    max_events: usize,
) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
    let mut events = Vec::new();
    let mut last = from - 1;
    let entries = log_entries(engine, from, to, max_events.max(1))?;
    let scanned_all = entries.len() < max_events.max(1);
    for (rev, keys) in entries {
        for key in keys.into_iter().filter(|k| k.starts_with(prefix)) {
            events.push(event_at(engine, key, rev)?);
        }
        last = rev;
        if events.len() >= max_events {
            return Ok((events, last));
        }
    }
    if scanned_all {
        last = to;
    }
    Ok((events, last))
}

/// The event `key` went through at `rev`, with the key as it was just before.
fn event_at(engine: &dyn Engine, key: Bytes, rev: Revision) -> Result<WatchEvent, StoreError> {
    let raw = engine
        .get(Table::History, &history_key(&key, rev))?
        .ok_or_else(|| {
            corrupt(
                engine,
                format!("log names revision {rev} of a key that has no such version"),
            )
        })?;
    let record = VersionRecord::decode(&raw).map_err(|e| corrupt(engine, e))?;
    let prev_kv = key_at(engine, &key, rev - 1)?;
    Ok(match to_kv(key.clone(), rev, record) {
        Some(kv) => WatchEvent {
            kind: EventKind::Put,
            kv,
            prev_kv,
        },
        None => WatchEvent {
            kind: EventKind::Delete,
            kv: deleted_kv(key, rev),
            prev_kv,
        },
    })
}

/// How etcd reports a deleted key in a delete event.
pub(crate) fn deleted_kv(key: Bytes, rev: Revision) -> KeyValue {
    KeyValue {
        key,
        value: Bytes::new(),
        create_revision: 0,
        mod_revision: rev,
        version: 0,
    }
}
