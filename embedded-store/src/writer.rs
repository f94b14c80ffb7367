//! The one thread that changes the engine. It takes every queued transaction at once (group
//! commit), applies them in order against the latest state, commits them in one durable engine
//! batch, then publishes the new revisions to watchers and answers the callers. Between groups it
//! compacts history in bounded chunks, and on a timer it decides when to compact.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::StoreError;
use crate::embedded::{CompactionPolicy, META_COMPACT_REVISION, META_COMPACTED_THROUGH, Shared};
use crate::encoding::{VersionRecord, encode_log_entry, history_key, revision_bytes, split_history_key};
use crate::engine::{Mutation, Table};
use crate::mvcc::{self, corrupt, deleted_kv};
use crate::types::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, Revision, Txn, TxnOp, TxnOpResult, TxnResponse,
    WatchEvent,
};
use crate::watch::CommittedGroup;

/// The most transactions one group commit carries.
const MAX_GROUP: usize = 1024;
/// How many revisions of the log one compaction chunk covers.
const COMPACTION_CHUNK: i64 = 1000;

pub(crate) enum Request {
    Txn(Txn, oneshot::Sender<Result<TxnResponse, StoreError>>),
    Compact(Revision, oneshot::Sender<Result<(), StoreError>>),
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) requests: Receiver<Request>,
    pub(crate) policy: CompactionPolicy,
    /// Where physical compaction has got to: log entries below this are gone.
    pub(crate) compacted_through: Revision,
    /// Set after a failed commit: the engine's state is unknown, so nothing more is written.
    pub(crate) failed: Option<String>,
}

impl Writer {
    pub(crate) fn run(mut self) {
        let mut next_tick = Instant::now() + self.policy.interval;
        let mut revision_at_last_tick = self.current();
        loop {
            let compaction_due = self.compacted_through < self.compact_revision();
            let first = if compaction_due {
                match self.requests.try_recv() {
                    Ok(request) => Some(request),
                    Err(std::sync::mpsc::TryRecvError::Empty) => None,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                }
            } else {
                let wait = next_tick.saturating_duration_since(Instant::now());
                match self.requests.recv_timeout(wait) {
                    Ok(request) => Some(request),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            match first {
                Some(first) => {
                    self.handle_group(first);
                    // One chunk per group, so that a steady stream of writes cannot starve compaction.
                    if compaction_due {
                        self.compaction_chunk();
                    }
                }
                None if compaction_due => self.compaction_chunk(),
                None => {}
            }
            if Instant::now() >= next_tick {
                self.policy_tick(revision_at_last_tick);
                revision_at_last_tick = self.current();
                next_tick = Instant::now() + self.policy.interval;
            }
        }
        self.shared.hub.close();
    }

    fn current(&self) -> Revision {
        self.shared.current.load(Ordering::SeqCst)
    }

    fn compact_revision(&self) -> Revision {
        self.shared.compact.load(Ordering::SeqCst)
    }

    /// Keeps at least one policy interval and at least `retain_revisions` of history.
    fn policy_tick(&mut self, revision_at_last_tick: Revision) {
        let target = revision_at_last_tick.min(self.current() - self.policy.retain_revisions);
        if target > self.compact_revision() && self.failed.is_none() {
            match self.begin_compaction(target) {
                Ok(()) => tracing::debug!(revision = target, "compacting store history"),
                Err(e) => tracing::warn!(error = %e, "store compaction failed"),
            }
        }
    }

    fn handle_group(&mut self, first: Request) {
        let mut txns = Vec::new();
        let mut request = Some(first);
        while let Some(r) = request.take() {
            match r {
                Request::Txn(txn, reply) => txns.push((txn, reply)),
                Request::Compact(rev, reply) => {
                    // Keep order: everything queued before the compaction commits first.
                    self.commit_txns(std::mem::take(&mut txns));
                    let _ = reply.send(self.begin_compaction(rev));
                }
            }
            if txns.len() < MAX_GROUP {
                request = self.requests.try_recv().ok();
            }
        }
        self.commit_txns(txns);
    }

    fn commit_txns(&mut self, txns: Vec<(Txn, oneshot::Sender<Result<TxnResponse, StoreError>>)>) {
        if txns.is_empty() {
            return;
        }
        if let Some(reason) = &self.failed {
            for (_, reply) in txns {
                let _ = reply.send(Err(StoreError::Failed(reason.clone())));
            }
            return;
        }
        let mut group = GroupState {
            revision: self.current(),
            latest: HashMap::new(),
            mutations: Vec::new(),
            events: Vec::new(),
        };
        let mut replies = Vec::with_capacity(txns.len());
        for (txn, reply) in txns {
            let outcome = group.apply(&self.shared, txn);
            replies.push((reply, outcome));
        }
        if !group.mutations.is_empty() {
            if let Err(e) = self.shared.engine.commit(std::mem::take(&mut group.mutations)) {
                let reason = e.to_string();
                tracing::error!(error = %reason, "store commit failed; refusing further writes");
                self.failed = Some(reason.clone());
                for (reply, _) in replies {
                    let _ = reply.send(Err(StoreError::Failed(reason.clone())));
                }
                return;
            }
            let committed = Arc::new(CommittedGroup {
                last_revision: group.revision,
                events: group.events,
            });
            self.shared.hub.publish(&self.shared.current, committed);
        }
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
    }

    /// Records the new compact revision durably; the history below it is removed in chunks later.
    fn begin_compaction(&mut self, revision: Revision) -> Result<(), StoreError> {
        if let Some(reason) = &self.failed {
            return Err(StoreError::Failed(reason.clone()));
        }
        let compact_revision = self.compact_revision();
        if revision <= compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compact_revision,
            });
        }
        let current = self.current();
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        self.shared.engine.commit(vec![Mutation::Put {
            table: Table::Meta,
            key: META_COMPACT_REVISION.to_vec(),
            value: revision_bytes(revision).to_vec(),
        }])?;
        self.shared.compact.store(revision, Ordering::SeqCst);
        Ok(())
    }

    /// Removes the history that compaction made unreachable, for one chunk of the log: every version
    /// below the compact revision except each key's newest one, and that one too if it is a deletion.
    fn compaction_chunk(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let target = self.compact_revision();
        let from = self.compacted_through;
        let to = target.min(from + COMPACTION_CHUNK);
        match self.compact_range(from, to, target) {
            Ok(()) => self.compacted_through = to,
            Err(e) => {
                // Compaction is housekeeping: stop it until the next start rather than spin.
                tracing::warn!(error = %e, "store compaction stopped");
                self.compacted_through = target;
            }
        }
    }

    fn compact_range(&self, from: Revision, to: Revision, target: Revision) -> Result<(), StoreError> {
        let engine = &*self.shared.engine;
        let entries = mvcc::log_entries(engine, from, to - 1, usize::MAX)?;
        let mut keys: HashSet<Bytes> = HashSet::new();
        let mut mutations = Vec::new();
        for (rev, changed) in entries {
            keys.extend(changed);
            mutations.push(Mutation::Delete {
                table: Table::Log,
                key: revision_bytes(rev).to_vec(),
            });
        }
        for key in keys {
            let (lo, hi) = (history_key(&key, 0), history_key(&key, target));
            let mut versions: Vec<(Vec<u8>, bool)> = Vec::new();
            let mut failure = None;
            engine.scan(
                Table::History,
                Bound::Included(&lo),
                Bound::Excluded(&hi),
                false,
                &mut |hk, v| {
                    match (split_history_key(hk), VersionRecord::decode(v)) {
                        (Ok(_), Ok(record)) => {
                            versions.push((hk.to_vec(), record == VersionRecord::Tombstone))
                        }
                        (Err(e), _) => failure = Some(corrupt(engine, e)),
                        (_, Err(e)) => failure = Some(corrupt(engine, e)),
                    }
                    failure.is_none()
                },
            )?;
            if let Some(e) = failure {
                return Err(e);
            }
            let keep_newest = matches!(versions.last(), Some((_, false)));
            let removable = versions.len() - usize::from(keep_newest);
            for (hk, _) in versions.into_iter().take(removable) {
                mutations.push(Mutation::Delete {
                    table: Table::History,
                    key: hk,
                });
            }
        }
        mutations.push(Mutation::Put {
            table: Table::Meta,
            key: META_COMPACTED_THROUGH.to_vec(),
            value: revision_bytes(to).to_vec(),
        });
        engine.commit(mutations)?;
        Ok(())
    }
}

/// The state of one group commit in progress: the revision reached so far and the latest state
/// of every key the group touched, so that later transactions see earlier ones.
struct GroupState {
    revision: Revision,
    latest: HashMap<Bytes, Option<KeyValue>>,
    mutations: Vec<Mutation>,
    events: Vec<WatchEvent>,
}

impl GroupState {
    fn load(&mut self, shared: &Shared, key: &Bytes) -> Result<(), StoreError> {
        if !self.latest.contains_key(key) {
            let kv = mvcc::key_at(&*shared.engine, key, Revision::MAX)?;
            self.latest.insert(key.clone(), kv);
        }
        Ok(())
    }

    fn get(&self, key: &Bytes) -> Option<KeyValue> {
        self.latest.get(key).cloned().flatten()
    }

    fn apply(&mut self, shared: &Shared, txn: Txn) -> Result<TxnResponse, StoreError> {
        // Read everything first, so that a failed read leaves the group untouched.
        for key in txn
            .compares
            .iter()
            .map(|c| &c.key)
            .chain(txn.success.iter().chain(&txn.failure).map(op_key))
        {
            self.load(shared, key)?;
        }
        let succeeded = txn
            .compares
            .iter()
            .all(|c| compare_holds(c, self.get(&c.key).as_ref()));
        let ops = if succeeded { txn.success } else { txn.failure };
        let revision = self.revision + 1;
        let mut changed: Vec<Bytes> = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                TxnOp::Get { key } => results.push(TxnOpResult::Get { kv: self.get(&key) }),
                TxnOp::Put { key, value } => {
                    let prev = self.get(&key);
                    let (create_revision, version) = match &prev {
                        Some(p) => (p.create_revision, p.version + 1),
                        None => (revision, 1),
                    };
                    let record = VersionRecord::Live {
                        create_revision,
                        version,
                        value: value.clone(),
                    };
                    self.mutations.push(Mutation::Put {
                        table: Table::History,
                        key: history_key(&key, revision),
                        value: record.encode(),
                    });
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: revision,
                        version,
                    };
                    self.events.push(WatchEvent {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                        prev_kv: prev.clone(),
                    });
                    self.latest.insert(key.clone(), Some(kv));
                    changed.push(key);
                    results.push(TxnOpResult::Put { prev });
                }
                TxnOp::Delete { key } => {
                    let prev = self.get(&key);
                    if prev.is_some() {
                        self.mutations.push(Mutation::Put {
                            table: Table::History,
                            key: history_key(&key, revision),
                            value: VersionRecord::Tombstone.encode(),
                        });
                        self.events.push(WatchEvent {
                            kind: EventKind::Delete,
                            kv: deleted_kv(key.clone(), revision),
                            prev_kv: prev.clone(),
                        });
                        self.latest.insert(key.clone(), None);
                        changed.push(key);
                    }
                    results.push(TxnOpResult::Delete { prev });
                }
            }
        }
        if !changed.is_empty() {
            self.mutations.push(Mutation::Put {
                table: Table::Log,
                key: revision_bytes(revision).to_vec(),
                value: encode_log_entry(&changed),
            });
            self.revision = revision;
        }
        Ok(TxnResponse {
            succeeded,
            revision: self.revision,
            results,
        })
    }
}

fn op_key(op: &TxnOp) -> &Bytes {
    match op {
        TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
    }
}

/// etcd's comparison rules: a missing key has zero revisions and version; a value comparison
/// against a missing key is false whatever the operator.
pub(crate) fn compare_holds(compare: &Compare, kv: Option<&KeyValue>) -> bool {
    use std::cmp::Ordering as O;
    let ordering = match &compare.target {
        CompareTarget::ModRevision(r) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
        CompareTarget::CreateRevision(r) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
        CompareTarget::Version(v) => kv.map_or(0, |kv| kv.version).cmp(v),
        CompareTarget::Value(v) => match kv {
            Some(kv) => kv.value.as_ref().cmp(v.as_ref()),
            None => return false,
        },
    };
    match compare.op {
        CompareOp::Equal => ordering == O::Equal,
        CompareOp::NotEqual => ordering != O::Equal,
        CompareOp::Greater => ordering == O::Greater,
        CompareOp::Less => ordering == O::Less,
    }
}
