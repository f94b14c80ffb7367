//! The store's vocabulary, shaped after etcd v3 so that an etcd backend maps onto it 1:1.

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::StoreError;

/// A revision of the whole store. Revisions only grow; an empty store is at revision 1 and its
/// first write makes revision 2, as in etcd.
pub type Revision = i64;

/// The revision of a store that has never been written.
pub const INITIAL_REVISION: Revision = 1;

/// Values above this size are refused, as Kubernetes refuses request bodies over 3 MiB.
pub const MAX_VALUE_BYTES: usize = 3 * 1024 * 1024;

/// Keys above this size are refused. Kubernetes keys (`/registry/<resource>/<ns>/<name>`) stay far
/// below it.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

/// The most operations one transaction may carry (etcd's `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// The revision that created this incarnation of the key.
    pub create_revision: Revision,
    /// The revision of the last change to the key.
    pub mod_revision: Revision,
    /// Changes since creation: 1 after the create, reset by a delete.
    pub version: i64,
}

/// What a comparison looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's mod revision; 0 when the key does not exist.
    ModRevision(Revision),
    /// The key's create revision; 0 when the key does not exist.
    CreateRevision(Revision),
    /// The key's version; 0 when the key does not exist.
    Version(i64),
    /// The key's value; empty when the key does not exist.
    Value(Bytes),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One guard of a transaction, as in etcd: `key.target <op> value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    /// True when `key` exists at all.
    pub fn exists(key: impl Into<Bytes>) -> Self {
        Compare {
            key: key.into(),
            op: CompareOp::Greater,
            target: CompareTarget::ModRevision(0),
        }
    }

    /// True when `key` does not exist.
    pub fn absent(key: impl Into<Bytes>) -> Self {
        Compare::mod_revision_is(key, 0)
    }

    /// True when `key` was last changed at `revision` (0: does not exist).
    pub fn mod_revision_is(key: impl Into<Bytes>, revision: Revision) -> Self {
        Compare {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(revision),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
    Get { key: Bytes },
}

/// If every compare holds, run `success`, else run `failure`; atomically, at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResult {
    /// `prev` is the key as it was before the put.
    Put {
        prev: Option<KeyValue>,
    },
    /// `prev` is the deleted key, or `None` if there was nothing to delete.
    Delete {
        prev: Option<KeyValue>,
    },
    Get {
        kv: Option<KeyValue>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The store's revision once the transaction applied (unchanged if it changed nothing).
    pub revision: Revision,
    /// One result per operation of the branch that ran.
    pub results: Vec<TxnOpResult>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    pub kv: Option<KeyValue>,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// Keys starting with `prefix`, from `start` (inclusive) on, at `revision`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub prefix: Bytes,
    /// Where to continue a paged read (inclusive); must start with `prefix`.
    pub start: Option<Bytes>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// 0 reads at the current revision; otherwise a past revision that is not compacted.
    pub revision: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// True when keys past the last returned one remain.
    pub more: bool,
    /// How many keys the range holds from `start` on, regardless of `limit`.
    pub count: i64,
    pub revision: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountResponse {
    pub count: i64,
    pub revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// For a put, the new key-value. For a delete, the key with empty value, zero create revision
    /// and version, and the deleting revision as `mod_revision` (as etcd reports it).
    pub kv: KeyValue,
    /// The key as it was before this event, if it existed.
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub prefix: Bytes,
    /// Deliver events from this revision on; 0 means "from the next change".
    pub start_revision: Revision,
}

/// Events in revision order (and, within a revision, in operation order). An `Err` item ends the
/// stream: `StoreError::Compacted` when the watcher fell behind compaction.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// The result of a conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Written {
        revision: Revision,
        prev: Option<KeyValue>,
    },
    /// The condition did not hold; `current` is the key as it is now.
    Conflict { current: Option<KeyValue> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted {
        revision: Revision,
        prev: KeyValue,
    },
    NotFound,
    /// The key exists but at another mod revision than expected.
    Conflict {
        current: KeyValue,
    },
}
