//! bonsai's embedded store: the cluster state that etcd holds for Kubernetes, in-process.
//!
//! A revision layer with etcd v3's semantics (one global revision; MVCC reads at past revisions;
//! compare-and-swap transactions; ordered, resumable watches; compaction) over an ordered
//! key-value engine, redb or sled, chosen per data directory.
//!
//! **Architecture Invariant:** the store knows nothing of HTTP, Kubernetes objects or wire formats;
//! it stores bytes under keys. **Architecture Invariant:** only the writer thread changes the
//! engine, so every commit is one durable group and revisions never have gaps.

mod datadir;
mod embedded;
mod encoding;
mod engine;
mod error;
mod mvcc;
mod snapshot;
mod store;
mod types;
mod watch;
mod writer;

pub use embedded::{CompactionPolicy, EmbeddedStore, StoreOptions, validate_txn};
pub use engine::{EngineError, EngineKind};
pub use error::StoreError;
pub use snapshot::{Snapshot, SnapshotError};
pub use store::Store;
pub use types::*;
