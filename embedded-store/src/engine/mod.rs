//! The engine seam: the few things the revision layer needs from an ordered key-value engine.
//!
//! An engine knows nothing of revisions, watches or Kubernetes. It offers ordered keys in three
//! tables, reads, and one atomic batch that is durable when `commit` returns.

use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::str::FromStr;

mod redb_engine;
mod sled_engine;

pub(crate) use redb_engine::RedbEngine;
pub(crate) use sled_engine::SledEngine;

/// The tables of the revision layer. Engines keep them apart (separate redb tables, a prefix byte
/// in sled's one tree) and commit mutations to several of them atomically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Table {
    /// Every retained version of every key: `escaped(key) ++ TERM ++ revision` → version record.
    History,
    /// The keys each revision changed, in order: `revision` → log entry.
    Log,
    /// Store-wide facts (format, compaction progress).
    Meta,
}

impl Table {
    pub(crate) const ALL: [Table; 3] = [Table::History, Table::Log, Table::Meta];
}

#[derive(Debug)]
pub(crate) enum Mutation {
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: Vec<u8>,
    },
}

/// Which engine holds a store's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineKind {
    Redb,
    Sled,
}

impl EngineKind {
    /// The engine a new store gets when none is asked for. See ARCHITECTURE.md for the
    /// measurements behind this choice.
    pub const DEFAULT: EngineKind = EngineKind::Redb;

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Redb => "redb",
            EngineKind::Sled => "sled",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "redb" => Ok(EngineKind::Redb),
            "sled" => Ok(EngineKind::Sled),
            other => Err(format!(
                "unknown store engine {other:?}: expected \"redb\" or \"sled\""
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's files are damaged or are not the engine's files at all.
    #[error("{engine} data is corrupt or foreign: {detail}")]
    Corrupt { engine: EngineKind, detail: String },
    /// Anything else the engine reports: I/O errors first of all.
    #[error("{engine} engine failed: {detail}")]
    Failed { engine: EngineKind, detail: String },
}

/// Cache and tuning knobs shared by both engines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EngineTuning {
    pub(crate) cache_bytes: usize,
}

pub(crate) type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> bool;

pub(crate) trait Engine: Send + Sync + fmt::Debug {
    fn kind(&self) -> EngineKind;

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Calls `visit` with each entry in `(start, end)`, in key order or in reverse, until it
    /// returns false.
    fn scan(
        &self,
        table: Table,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> Result<(), EngineError>;

    /// Applies every mutation or none, and returns only once they are on disk.
    fn commit(&self, mutations: Vec<Mutation>) -> Result<(), EngineError>;

    /// Bytes the engine's files take on disk.
    fn disk_bytes(&self) -> u64;
}

/// Creates a new, empty engine in `dir` (which exists and is empty).
pub(crate) fn create(
    kind: EngineKind,
    dir: &Path,
    tuning: EngineTuning,
) -> Result<Box<dyn Engine>, EngineError> {
    Ok(match kind {
        EngineKind::Redb => Box::new(RedbEngine::open(dir, tuning, true)?),
        EngineKind::Sled => Box::new(SledEngine::open(dir, tuning)?),
    })
}

/// Opens an engine that `create` made in `dir`.
pub(crate) fn open(
    kind: EngineKind,
    dir: &Path,
    tuning: EngineTuning,
) -> Result<Box<dyn Engine>, EngineError> {
    Ok(match kind {
        EngineKind::Redb => Box::new(RedbEngine::open(dir, tuning, false)?),
        EngineKind::Sled => Box::new(SledEngine::open(dir, tuning)?),
    })
}

/// Engines panic on a range whose start lies past its end; callers get an empty answer instead.
pub(crate) fn is_inverted(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => s >= e,
        _ => false,
    }
}

/// Sums the sizes of the regular files below `path`.
pub(crate) fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries.flatten().map(|e| tree_bytes(&e.path())).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engines(dir: &Path) -> Vec<Box<dyn Engine>> {
        let tuning = EngineTuning { cache_bytes: 1 << 20 };
        [EngineKind::Redb, EngineKind::Sled]
            .into_iter()
            .map(|kind| {
                let sub = dir.join(kind.name());
                std::fs::create_dir_all(&sub).unwrap();
                create(kind, &sub, tuning).unwrap()
            })
            .collect()
    }

    fn collect(
        e: &dyn Engine,
        table: Table,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        rev: bool,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        e.scan(table, start, end, rev, &mut |k, _| {
            out.push(k.to_vec());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn tables_are_separate_ordered_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        for e in engines(dir.path()) {
            let mut batch = Vec::new();
            for k in [b"b".as_slice(), b"a", b"c", b"\x00", b"\xff"] {
                batch.push(Mutation::Put {
                    table: Table::History,
                    key: k.to_vec(),
                    value: k.to_vec(),
                });
            }
            batch.push(Mutation::Put {
                table: Table::Log,
                key: b"a".to_vec(),
                value: b"log".to_vec(),
            });
            e.commit(batch).unwrap();
            let all = collect(&*e, Table::History, Bound::Unbounded, Bound::Unbounded, false);
            assert_eq!(
                all,
                vec![
                    b"\x00".to_vec(),
                    b"a".to_vec(),
                    b"b".to_vec(),
                    b"c".to_vec(),
                    b"\xff".to_vec()
                ]
            );
            let back = collect(
                &*e,
                Table::History,
                Bound::Included(b"a"),
                Bound::Excluded(b"c"),
                true,
            );
            assert_eq!(back, vec![b"b".to_vec(), b"a".to_vec()], "{:?}", e.kind());
            assert_eq!(e.get(Table::Log, b"a").unwrap(), Some(b"log".to_vec()));
            assert_eq!(e.get(Table::Meta, b"a").unwrap(), None);
            assert_eq!(
                collect(&*e, Table::Meta, Bound::Unbounded, Bound::Unbounded, false).len(),
                0
            );
            e.commit(vec![Mutation::Delete {
                table: Table::History,
                key: b"a".to_vec(),
            }])
            .unwrap();
            assert_eq!(e.get(Table::History, b"a").unwrap(), None);
            // Early stop.
            let mut seen = 0;
            e.scan(
                Table::History,
                Bound::Unbounded,
                Bound::Unbounded,
                false,
                &mut |_, _| {
                    seen += 1;
                    seen < 2
                },
            )
            .unwrap();
            assert_eq!(seen, 2);
        }
    }

    #[test]
    fn engine_kind_parses_and_refuses_unknown_names() {
        assert_eq!("redb".parse::<EngineKind>(), Ok(EngineKind::Redb));
        assert_eq!("sled".parse::<EngineKind>(), Ok(EngineKind::Sled));
        assert!("rocksdb".parse::<EngineKind>().unwrap_err().contains("rocksdb"));
    }
}
