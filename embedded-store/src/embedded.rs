//! `EmbeddedStore`: the `Store` on a local engine.

use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::StoreError;
use crate::datadir;
use crate::encoding::decode_revision;
use crate::engine::{Engine, EngineKind, EngineTuning, Mutation, Table};
use crate::mvcc::{self, corrupt};
use crate::store::Store;
use crate::types::{
    GetResponse, INITIAL_REVISION, MAX_KEY_BYTES, MAX_TXN_OPS, MAX_VALUE_BYTES, RangeRequest, RangeResponse,
    Revision, Txn, TxnOp, TxnResponse, WatchRequest, WatchStream,
};
use crate::watch::{self, WatchHub};
use crate::writer::{Request, Writer};

pub(crate) const META_FORMAT: &[u8] = b"format";
pub(crate) const META_COMPACT_REVISION: &[u8] = b"compact_revision";
pub(crate) const META_COMPACTED_THROUGH: &[u8] = b"compacted_through";
pub(crate) const FORMAT_VERSION: &[u8] = b"1";

/// When history is compacted. Like k3s (which keeps 5 minutes and 1,000 revisions), every
/// `interval` the store compacts to the revision it had one interval earlier, but never closer than
/// `retain_revisions` to the current one: clients that re-watch within an interval, or within that
/// many revisions, can resume without a relist.
#[derive(Clone, Copy, Debug)]
pub struct CompactionPolicy {
    pub interval: Duration,
    pub retain_revisions: i64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            interval: Duration::from_secs(300),
            retain_revisions: 1000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The engine for a new store. An existing store opens with the engine it was made with; asking
    /// for another is an error.
    pub engine: Option<EngineKind>,
    /// The engine's page cache.
    pub cache_bytes: usize,
    pub compaction: CompactionPolicy,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            engine: None,
            cache_bytes: 32 * 1024 * 1024,
            compaction: CompactionPolicy::default(),
        }
    }
}

/// What readers, watchers and the writer share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) engine: Box<dyn Engine>,
    /// The newest committed (durable) revision. Moves only under the watch hub's lock.
    pub(crate) current: AtomicI64,
    /// Reads and watches below this revision fail with `Compacted`.
    pub(crate) compact: AtomicI64,
    pub(crate) hub: WatchHub,
}

/// The embedded store. Open it once per data directory; a second open, from this process or
/// another, fails with `StoreError::InUse`.
#[derive(Debug)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
    _lock: File,
}

impl EmbeddedStore {
    /// Opens the store in `dir`, creating it if the directory is empty or absent. Blocking.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<EmbeddedStore, StoreError> {
        let dir = dir.as_ref();
        let tuning = EngineTuning {
            cache_bytes: options.cache_bytes,
        };
        let opened = datadir::open(dir, options.engine, tuning)?;
        let engine = opened.engine;
        if opened.fresh {
            engine.commit(vec![Mutation::Put {
                table: Table::Meta,
                key: META_FORMAT.to_vec(),
                value: FORMAT_VERSION.to_vec(),
            }])?;
        }
        match engine.get(Table::Meta, META_FORMAT)? {
            Some(v) if v == FORMAT_VERSION => {}
            other => {
                return Err(StoreError::Corrupt {
                    path: dir.to_path_buf(),
                    detail: format!(
                        "unknown store format {:?}",
                        other.map(|v| String::from_utf8_lossy(&v).into_owned())
                    ),
                });
            }
        }
        let read_rev = |key: &[u8]| -> Result<Revision, StoreError> {
            match engine.get(Table::Meta, key)? {
                Some(v) => decode_revision(&v).map_err(|e| corrupt(&*engine, e)),
                None => Ok(0),
            }
        };
        let compact = read_rev(META_COMPACT_REVISION)?;
        let compacted_through = read_rev(META_COMPACTED_THROUGH)?;
        let mut current = INITIAL_REVISION;
        let mut failure = None;
        engine.scan(
            Table::Log,
            Bound::Unbounded,
            Bound::Unbounded,
            true,
            &mut |k, _| {
                match decode_revision(k) {
                    Ok(rev) => current = rev,
                    Err(e) => failure = Some(e),
                }
                false
            },
        )?;
        if let Some(e) = failure {
            return Err(corrupt(&*engine, e));
        }
        if compact > current.max(INITIAL_REVISION) {
            return Err(StoreError::Corrupt {
                path: dir.to_path_buf(),
                detail: format!("compacted to revision {compact}, past the newest revision {current}"),
            });
        }
        tracing::debug!(path = %dir.display(), engine = %engine.kind(), revision = current, compact, "store opened");
        let shared = Arc::new(Shared {
            engine,
            current: AtomicI64::new(current),
            compact: AtomicI64::new(compact),
            hub: WatchHub::default(),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            requests: rx,
            policy: options.compaction,
            compacted_through,
            failed: None,
        };
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        Ok(EmbeddedStore {
            shared,
            requests: Mutex::new(Some(tx)),
            writer: Some(handle),
            path: dir.to_path_buf(),
            _lock: opened.lock,
        })
    }

    pub fn engine_kind(&self) -> EngineKind {
        self.shared.engine.kind()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the engine's files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.engine.disk_bytes()
    }

    /// The revision now, without a round trip (the trait's `current_revision` is async for etcd).
    pub fn revision(&self) -> Revision {
        self.shared.current.load(Ordering::SeqCst)
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        let guard = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let sender = guard.as_ref().ok_or(StoreError::Closed)?;
        sender.send(request).map_err(|_| StoreError::Closed)
    }

    /// The revision a read at `requested` (0: now) is served at, or why it cannot be.
    fn read_revision(&self, requested: Revision) -> Result<Revision, StoreError> {
        let current = self.shared.current.load(Ordering::SeqCst);
        if requested <= 0 {
            return Ok(current);
        }
        if requested > current {
            return Err(StoreError::FutureRevision { requested, current });
        }
        self.check_not_compacted(requested)?;
        Ok(requested)
    }

    fn check_not_compacted(&self, revision: Revision) -> Result<(), StoreError> {
        let compact_revision = self.shared.compact.load(Ordering::SeqCst);
        if revision < compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compact_revision,
            });
        }
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| StoreError::Failed(format!("store read task failed: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and stop; watchers then end.
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
        self.shared.hub.close();
    }
}

fn validate_key(key: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

/// Refuses what etcd would refuse, before the transaction reaches the writer.
pub fn validate_txn(txn: &Txn) -> Result<(), StoreError> {
    for ops in [&txn.success, &txn.failure] {
        if ops.len() > MAX_TXN_OPS {
            return Err(StoreError::TooManyOps {
                len: ops.len(),
                max: MAX_TXN_OPS,
            });
        }
        let mut written = std::collections::HashSet::new();
        for op in ops.iter() {
            match op {
                TxnOp::Put { key, value } => {
                    validate_key(key)?;
                    if value.len() > MAX_VALUE_BYTES {
                        return Err(StoreError::ValueTooLarge {
                            key: StoreError::key_name(key),
                            len: value.len(),
                            max: MAX_VALUE_BYTES,
                        });
                    }
                    if !written.insert(key) {
                        return Err(StoreError::DuplicateKey {
                            key: StoreError::key_name(key),
                        });
                    }
                }
                TxnOp::Delete { key } => {
                    validate_key(key)?;
                    if !written.insert(key) {
                        return Err(StoreError::DuplicateKey {
                            key: StoreError::key_name(key),
                        });
                    }
                }
                TxnOp::Get { key } => validate_key(key)?,
            }
        }
    }
    if txn.compares.len() > MAX_TXN_OPS {
        return Err(StoreError::TooManyOps {
            len: txn.compares.len(),
            max: MAX_TXN_OPS,
        });
    }
    txn.compares.iter().try_for_each(|c| validate_key(&c.key))
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.revision())
    }

    async fn compact_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.compact.load(Ordering::SeqCst))
    }

    async fn get(&self, key: Bytes, revision: Revision) -> Result<GetResponse, StoreError> {
        validate_key(&key)?;
        let at = self.read_revision(revision)?;
        let kv = self.blocking(move |s| mvcc::key_at(&*s.engine, &key, at)).await?;
        self.check_not_compacted(at)?;
        Ok(GetResponse { kv, revision: at })
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        if let Some(start) = &request.start
            && !start.starts_with(&request.prefix)
        {
            return Err(StoreError::InvalidRange(format!(
                "start key {:?} is outside prefix {:?}",
                StoreError::key_name(start),
                StoreError::key_name(&request.prefix)
            )));
        }
        let at = self.read_revision(request.revision)?;
        let scan = self
            .blocking(move |s| {
                mvcc::range_at(
                    &*s.engine,
                    &request.prefix,
                    request.start.as_deref(),
                    request.limit,
                    at,
                )
            })
            .await?;
        self.check_not_compacted(at)?;
        Ok(RangeResponse {
            kvs: scan.kvs,
            more: scan.more,
            count: scan.count,
            revision: at,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        validate_txn(&txn)?;
        let (tx, rx) = oneshot::channel();
        self.send(Request::Txn(txn, tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream, StoreError> {
        let next = if request.start_revision <= 0 {
            self.revision() + 1
        } else {
            request.start_revision
        };
        self.check_not_compacted(next)?;
        Ok(watch::stream(self.shared.clone(), request.prefix, next))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Compact(revision, tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;
    use crate::types::EventKind;

    fn options(engine: EngineKind, compaction: CompactionPolicy) -> StoreOptions {
        StoreOptions {
            engine: Some(engine),
            cache_bytes: 1 << 20,
            compaction,
        }
    }

    fn manual() -> CompactionPolicy {
        CompactionPolicy {
            interval: Duration::from_secs(3600),
            retain_revisions: 1000,
        }
    }

    fn entries(store: &EmbeddedStore, table: Table) -> usize {
        let mut n = 0;
        store
            .shared
            .engine
            .scan(table, Bound::Unbounded, Bound::Unbounded, false, &mut |_, _| {
                n += 1;
                true
            })
            .unwrap();
        n
    }

    async fn churn(store: &EmbeddedStore, keys: usize, rounds: usize) {
        for r in 0..rounds {
            for k in 0..keys {
                store
                    .put(Bytes::from(format!("/k/{k}")), Bytes::from(format!("{r}")))
                    .await
                    .unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_replays_instead_of_blocking_writers() {
        for engine in [EngineKind::Redb, EngineKind::Sled] {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path(), options(engine, manual())).unwrap();
            let mut w = store
                .watch(WatchRequest {
                    prefix: Bytes::from_static(b"/k/"),
                    start_revision: 0,
                })
                .await
                .unwrap();
            // Drive the watcher to the live state, then stop reading.
            assert!(
                tokio::time::timeout(Duration::from_millis(50), w.next())
                    .await
                    .is_err()
            );
            assert_eq!(store.shared.hub.live_watchers(), 1);
            // More groups than its queue holds: writers must not wait for it.
            churn(&store, 1, 300).await;
            assert_eq!(
                store.shared.hub.live_watchers(),
                0,
                "{engine}: the stalled watcher was not dropped from the hub"
            );
            let mut revisions = vec![];
            while revisions.len() < 300 {
                let e = tokio::time::timeout(Duration::from_secs(5), w.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                assert_eq!(e.kind, EventKind::Put);
                revisions.push(e.kv.mod_revision);
            }
            assert_eq!(revisions, (2..302).collect::<Vec<_>>(), "{engine}");
            // Caught up, it goes live again.
            store
                .put(Bytes::from_static(b"/k/x"), Bytes::from_static(b"x"))
                .await
                .unwrap();
            let e = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(e.kv.mod_revision, 302);
            // The next poll finds nothing newer and subscribes.
            assert!(
                tokio::time::timeout(Duration::from_millis(50), w.next())
                    .await
                    .is_err()
            );
            assert_eq!(store.shared.hub.live_watchers(), 1, "{engine}");
        }
    }

    #[tokio::test]
    async fn compaction_removes_unreachable_history_and_keeps_the_rest_readable() {
        for engine in [EngineKind::Redb, EngineKind::Sled] {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path(), options(engine, manual())).unwrap();
            churn(&store, 10, 150).await; // 1,500 revisions
            store.delete(Bytes::from_static(b"/k/0"), None).await.unwrap();
            store
                .put(Bytes::from_static(b"/k/1"), Bytes::from_static(b"149"))
                .await
                .unwrap();
            assert_eq!(entries(&store, Table::History), 1502);
            let current = store.revision();
            store.compact(current).await.unwrap();
            // What must stay: for each key, its newest version below the compact revision (reads at
            // that revision need it, and so does the prev_kv of an event at it), unless that is a
            // deletion, plus any version at or above it. Here: /k/2../k/9 one each, /k/1 two, and
            // nothing of the deleted /k/0. The log keeps only the compact revision.
            let expected = 8 + 2;
            for _ in 0..100 {
                if entries(&store, Table::History) == expected && entries(&store, Table::Log) == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(entries(&store, Table::History), expected, "{engine}");
            assert_eq!(entries(&store, Table::Log), 1, "{engine}");
            let all = store
                .range(RangeRequest {
                    prefix: Bytes::from_static(b"/k/"),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(all.kvs.len(), 9);
            assert!(all.kvs.iter().all(|kv| kv.value == Bytes::from_static(b"149")));
            let at_compaction = store
                .get(Bytes::from_static(b"/k/1"), current)
                .await
                .unwrap()
                .kv
                .unwrap();
            assert_eq!(at_compaction.version, 151);
            // History survives a restart, and so does the revision.
            drop(store);
            let store = EmbeddedStore::open(dir.path(), options(engine, manual())).unwrap();
            assert_eq!(store.revision(), current);
            assert_eq!(store.shared.compact.load(Ordering::SeqCst), current);
        }
    }

    #[tokio::test]
    async fn an_interrupted_compaction_resumes_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), options(EngineKind::Redb, manual())).unwrap();
        churn(&store, 2, 50).await;
        let current = store.revision();
        // Record the compaction as the writer does, without doing the physical part: a crash at
        // that point.
        store
            .shared
            .engine
            .commit(vec![Mutation::Put {
                table: Table::Meta,
                key: META_COMPACT_REVISION.to_vec(),
                value: crate::encoding::revision_bytes(current).to_vec(),
            }])
            .unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path(), options(EngineKind::Redb, manual())).unwrap();
        // 100 versions before; after: /k/0's newest, and /k/1's newest below and at the compact
        // revision.
        for _ in 0..100 {
            if entries(&store, Table::History) == 3 && entries(&store, Table::Log) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(entries(&store, Table::History), 3);
        assert_eq!(entries(&store, Table::Log), 1);
    }

    #[tokio::test]
    async fn the_policy_compacts_on_its_own_and_keeps_the_promised_history() {
        let dir = tempfile::tempdir().unwrap();
        let policy = CompactionPolicy {
            interval: Duration::from_millis(100),
            retain_revisions: 20,
        };
        let store = EmbeddedStore::open(dir.path(), options(EngineKind::Redb, policy)).unwrap();
        churn(&store, 1, 100).await;
        let written = store.revision();
        // Two ticks: the first records the revision, the second compacts up to it.
        let mut compacted = 0;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            compacted = store.shared.compact.load(Ordering::SeqCst);
            if compacted > 0 {
                break;
            }
        }
        assert!(compacted > 0, "the policy never compacted");
        assert!(
            compacted <= written - 20,
            "compacted to {compacted}, inside the {written} - 20 retained revisions"
        );
    }
}
