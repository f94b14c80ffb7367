//! sled 0.34: one tree, a prefix byte per table so that one `apply_batch` is atomic across tables.
//! sled persists only on `flush`; its own background flusher is switched off so that a commit is
//! exactly "apply the batch, flush, fdatasync", and nothing is acknowledged before that returns.
//!
//! The fdatasync is ours: on Linux sled's flush ends in `sync_file_range`, which writes neither the
//! file's metadata nor the device's write cache, so sled's own flush survives a process kill but not
//! a power cut.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::{Engine, EngineError, EngineKind, EngineTuning, Mutation, Table, Visit};

const LOCK_RETRIES: u32 = 250;
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

pub(crate) struct SledEngine {
    db: sled::Db,
    /// sled's log file, opened again only to fdatasync it after each flush.
    log_file: std::fs::File,
    path: PathBuf,
}

impl std::fmt::Debug for SledEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledEngine").field("path", &self.path).finish()
    }
}

fn failure(err: sled::Error) -> EngineError {
    let detail = err.to_string();
    match err {
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => EngineError::Corrupt {
            engine: EngineKind::Sled,
            detail,
        },
        _ => EngineError::Failed {
            engine: EngineKind::Sled,
            detail,
        },
    }
}

fn table_byte(table: Table) -> u8 {
    match table {
        Table::History => b'h',
        Table::Log => b'l',
        Table::Meta => b'm',
    }
}

fn prefixed(table: Table, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(table_byte(table));
    out.extend_from_slice(key);
    out
}

fn prefixed_bound(table: Table, bound: Bound<&[u8]>, is_end: bool) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(k) => Bound::Included(prefixed(table, k)),
        Bound::Excluded(k) => Bound::Excluded(prefixed(table, k)),
        // The table's keys all lie within [byte, byte + 1).
        Bound::Unbounded if is_end => Bound::Excluded(vec![table_byte(table) + 1]),
        Bound::Unbounded => Bound::Included(vec![table_byte(table)]),
    }
}

impl SledEngine {
    pub(crate) fn open(dir: &Path, tuning: EngineTuning) -> Result<Self, EngineError> {
        let path = dir.join("db");
        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(tuning.cache_bytes as u64)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput);
        // sled's background threads hold its file lock for a moment after a `Db` is dropped. The
        // store's own LOCK file already keeps other processes out, so a conflict here can only be
        // this process's previous instance winding down: wait for it, briefly.
        let mut attempts = 0;
        loop {
            match config.open() {
                Ok(db) => {
                    let log_path = path.join("db");
                    let log_file = std::fs::File::open(&log_path).map_err(|e| EngineError::Failed {
                        engine: EngineKind::Sled,
                        detail: format!("cannot open {} to sync it: {e}", log_path.display()),
                    })?;
                    return Ok(SledEngine { db, log_file, path });
                }
                // sled reports the lock conflict only in the error's text (kind `Other`).
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && attempts < LOCK_RETRIES =>
                {
                    attempts += 1;
                    std::thread::sleep(LOCK_RETRY_PAUSE);
                }
                Err(e) => return Err(failure(e)),
            }
        }
    }
}

impl Engine for SledEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Sled
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self
            .db
            .get(prefixed(table, key))
            .map_err(failure)?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> Result<(), EngineError> {
        let range = (
            prefixed_bound(table, start, false),
            prefixed_bound(table, end, true),
        );
        if super::is_inverted(start, end) {
            return Ok(());
        }
        let mut iter = self.db.range(range);
        loop {
            let item = if reverse { iter.next_back() } else { iter.next() };
            let Some(item) = item else { return Ok(()) };
            let (k, v) = item.map_err(failure)?;
            if !visit(&k[1..], &v) {
                return Ok(());
            }
        }
    }

    fn commit(&self, mutations: Vec<Mutation>) -> Result<(), EngineError> {
        let mut batch = sled::Batch::default();
        for m in mutations {
            match m {
                Mutation::Put { table, key, value } => batch.insert(prefixed(table, &key), value),
                Mutation::Delete { table, key } => batch.remove(prefixed(table, &key)),
            }
        }
        self.db.apply_batch(batch).map_err(failure)?;
        self.db.flush().map_err(failure)?;
        self.log_file.sync_data().map_err(|e| EngineError::Failed {
            engine: EngineKind::Sled,
            detail: format!("fdatasync: {e}"),
        })
    }

    fn disk_bytes(&self) -> u64 {
        super::tree_bytes(&self.path)
    }
}
