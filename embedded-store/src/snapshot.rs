//! Snapshots: every key of a store at one revision, written to a file and restored into a fresh store with the
//! same revisions (as `etcdctl snapshot save|restore` keeps them), so that resourceVersions, uids and everything
//! else a client holds stay valid across a restore.
//!
//! The file: `BONSAI-SNAPSHOT 1\n`, the revision (i64 BE), the number of files then of keys (u64 BE each), each
//! file as name and content and each key as key, value, create revision, mod revision and version (byte strings
//! as u32 BE length + bytes), then the SHA-256 of everything before it, so that a truncated or damaged file is
//! refused rather than restored in part.

use std::io::{Read, Write};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::datadir;
use crate::embedded::{
    EmbeddedStore, META_COMPACT_REVISION, META_COMPACTED_THROUGH, META_FORMAT, StoreOptions,
};
use crate::encoding::{VersionRecord, encode_log_entry, history_key, revision_bytes};
use crate::engine::{EngineTuning, Mutation, Table};
use crate::types::{KeyValue, RangeRequest, Revision};
use crate::{Store, StoreError};

const MAGIC: &[u8] = b"BONSAI-SNAPSHOT 1\n";
/// Keys read per range while taking a snapshot.
const PAGE: usize = 1000;
/// Mutations per engine commit while restoring.
const RESTORE_BATCH: usize = 5000;

/// Every key of a store at `revision`, and files kept beside it (the cluster's CA and keys, which a restored
/// cluster needs for its existing credentials to stay valid).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: Revision,
    pub kvs: Vec<KeyValue>,
    pub files: Vec<(String, Bytes)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a bonsai snapshot (it does not start with {:?})", String::from_utf8_lossy(MAGIC).trim())]
    NotASnapshot,
    #[error("the snapshot is damaged or truncated: {0}")]
    Damaged(String),
    #[error("cannot {action} the snapshot: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds a store already: restore into a fresh data directory")]
    NotFresh(std::path::PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Snapshot {
    /// Reads every key under `/` at one revision, in pages, while the store goes on serving. A compaction that
    /// overtakes the read makes it start again at a newer revision.
    pub async fn take(store: &dyn Store) -> Result<Snapshot, StoreError> {
        'again: loop {
            let mut kvs = Vec::new();
            let mut start: Option<Bytes> = None;
            let mut revision = 0;
            loop {
                let page = store
                    .range(RangeRequest {
                        prefix: Bytes::from_static(b"/"),
                        start: start.clone(),
                        limit: PAGE,
                        revision,
                    })
                    .await;
                let page = match page {
                    Ok(page) => page,
                    Err(StoreError::Compacted { .. }) if revision != 0 => continue 'again,
                    Err(e) => return Err(e),
                };
                revision = page.revision;
                let more = page.more;
                if let Some(last) = page.kvs.last() {
                    let mut next = last.key.to_vec();
                    next.push(0);
                    start = Some(Bytes::from(next));
                }
                kvs.extend(page.kvs);
                if !more {
                    return Ok(Snapshot {
                        revision,
                        kvs,
                        files: Vec::new(),
                    });
                }
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self
                .kvs
                .iter()
                .map(|kv| kv.key.len() + kv.value.len() + 32)
                .sum::<usize>(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.revision.to_be_bytes());
        out.extend_from_slice(&(self.files.len() as u64).to_be_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_be_bytes());
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        };
        for (name, content) in &self.files {
            bytes(&mut out, name.as_bytes());
            bytes(&mut out, content);
        }
        for kv in &self.kvs {
            bytes(&mut out, &kv.key);
            bytes(&mut out, &kv.value);
            for n in [kv.create_revision, kv.mod_revision, kv.version] {
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    pub fn write_to(&self, mut out: impl Write) -> Result<(), SnapshotError> {
        let io = |source| SnapshotError::Io {
            action: "write",
            source,
        };
        out.write_all(&self.encode()).map_err(io)?;
        out.flush().map_err(io)
    }

    pub fn read_from(mut input: impl Read) -> Result<Snapshot, SnapshotError> {
        let mut all = Vec::new();
        input.read_to_end(&mut all).map_err(|source| SnapshotError::Io {
            action: "read",
            source,
        })?;
        Snapshot::decode(&all)
    }

    pub fn decode(all: &[u8]) -> Result<Snapshot, SnapshotError> {
        if !all.starts_with(MAGIC) {
            return Err(SnapshotError::NotASnapshot);
        }
        let damaged = |what: &str| SnapshotError::Damaged(what.to_string());
        if all.len() < MAGIC.len() + 24 + 32 {
            return Err(damaged("too short"));
        }
        let (body, digest) = all.split_at(all.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(damaged("its checksum does not match its contents"));
        }
        let mut reader = Reader {
            data: &body[MAGIC.len()..],
        };
        let revision = reader.i64()?;
        let files = reader.u64()?;
        let keys = reader.u64()?;
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for _ in 0..files {
            let name = String::from_utf8(reader.bytes()?.to_vec())
                .map_err(|_| damaged("a file name is not UTF-8"))?;
            snapshot
                .files
                .push((name, Bytes::copy_from_slice(reader.bytes()?)));
        }
        for _ in 0..keys {
            let key = Bytes::copy_from_slice(reader.bytes()?);
            let value = Bytes::copy_from_slice(reader.bytes()?);
            let (create_revision, mod_revision, version) = (reader.i64()?, reader.i64()?, reader.i64()?);
            if mod_revision > revision || create_revision > mod_revision || version < 1 || key.is_empty() {
                return Err(damaged("a key's revisions are inconsistent"));
            }
            snapshot.kvs.push(KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
                version,
            });
        }
        if !reader.data.is_empty() {
            return Err(damaged("bytes after the last key"));
        }
        Ok(snapshot)
    }
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.data.len() < n {
            return Err(SnapshotError::Damaged("it ends in the middle of a record".into()));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(b))
    }

    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        self.take(u32::from_be_bytes(b) as usize)
    }
}

impl EmbeddedStore {
    /// Makes a new store in `dir` holding exactly `snapshot`'s keys at their revisions, at the snapshot's
    /// revision, compacted to it (history before a snapshot is not in it). `dir` must hold no store. Blocking.
    pub fn restore(
        dir: &std::path::Path,
        options: StoreOptions,
        snapshot: &Snapshot,
    ) -> Result<(), SnapshotError> {
        let tuning = EngineTuning {
            cache_bytes: options.cache_bytes,
        };
        let opened = datadir::open(dir, options.engine, tuning)?;
        if !opened.fresh {
            return Err(SnapshotError::NotFresh(dir.to_path_buf()));
        }
        let engine = opened.engine;
        let mut batch = Vec::with_capacity(RESTORE_BATCH);
        let mut changed_last = Vec::new();
        for kv in &snapshot.kvs {
            let record = VersionRecord::Live {
                create_revision: kv.create_revision,
                version: kv.version,
                value: kv.value.clone(),
            };
            batch.push(Mutation::Put {
                table: Table::History,
                key: history_key(&kv.key, kv.mod_revision),
                value: record.encode(),
            });
            if kv.mod_revision == snapshot.revision {
                changed_last.push(kv.key.clone());
            }
            if batch.len() >= RESTORE_BATCH {
                engine
                    .commit(std::mem::take(&mut batch))
                    .map_err(StoreError::from)?;
            }
        }
        // The log's newest entry is the store's revision; older entries are compacted away in any store.
        let revision = snapshot.revision.max(crate::INITIAL_REVISION);
        batch.push(Mutation::Put {
            table: Table::Log,
            key: revision_bytes(revision).to_vec(),
            value: encode_log_entry(&changed_last),
        });
        for meta in [META_COMPACT_REVISION, META_COMPACTED_THROUGH] {
            batch.push(Mutation::Put {
                table: Table::Meta,
                key: meta.to_vec(),
                value: revision_bytes(revision).to_vec(),
            });
        }
        // The format marker last: a restore cut short leaves no store that opens.
        batch.push(Mutation::Put {
            table: Table::Meta,
            key: META_FORMAT.to_vec(),
            value: crate::embedded::FORMAT_VERSION.to_vec(),
        });
        engine.commit(batch).map_err(StoreError::from)?;
        drop(engine);
        drop(opened.lock);
        // Opening checks what was written, as any later start will.
        let store = EmbeddedStore::open(dir, options)?;
        let current = store.revision();
        if current != revision {
            return Err(SnapshotError::Damaged(format!(
                "the restored store is at revision {current}, not {revision}"
            )));
        }
        Ok(())
    }
}
