use std::path::PathBuf;

use crate::engine::{EngineError, EngineKind};
use crate::types::Revision;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("empty key")]
    EmptyKey,
    #[error("key of {len} bytes is over the {max}-byte limit")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value of {len} bytes for key {key:?} is over the {max}-byte limit")]
    ValueTooLarge { key: String, len: usize, max: usize },
    #[error("transaction has {len} operations, over the limit of {max}")]
    TooManyOps { len: usize, max: usize },
    #[error("key {key:?} is written more than once in one transaction")]
    DuplicateKey { key: String },
    #[error("invalid range: {0}")]
    InvalidRange(String),
    /// The revision asked for has been compacted away (the API server answers 410 Gone).
    #[error("revision {requested} has been compacted; the oldest available is {compact_revision}")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    #[error("revision {requested} is in the future; the store is at {current}")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("store at {path} is in use by another process")]
    InUse { path: PathBuf },
    #[error("{path} is not a bonsai store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error("store at {path} holds {found} data, but the {requested} engine was asked for")]
    EngineMismatch {
        path: PathBuf,
        found: EngineKind,
        requested: EngineKind,
    },
    #[error("store at {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot use store directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A commit failed, so the store no longer knows what is on disk; it refuses writes until it is
    /// reopened, rather than risk acknowledging a write that may be lost.
    #[error("store stopped accepting writes after a failed commit: {0}")]
    Failed(String),
    #[error("store is closed")]
    Closed,
    /// An external datastore did not answer (the API server answers 503; the client may retry).
    #[error("the datastore is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub(crate) fn key_name(key: &[u8]) -> String {
        let shown = &key[..key.len().min(200)];
        String::from_utf8_lossy(shown).into_owned()
    }
}
