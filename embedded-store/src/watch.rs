//! Watches: a hub that fans committed revisions out to live watchers, and a stream per watcher
//! that replays history from the log until it has caught up, then goes live.
//!
//! A watcher never slows a writer: the hub only `try_send`s into a bounded queue. A watcher whose
//! queue is full is dropped from the hub, drains what it has, and falls back to replaying from the
//! log at the revision it needs next, so it still sees every event exactly once and in order.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::StoreError;
use crate::embedded::Shared;
use crate::mvcc;
use crate::types::{Revision, WatchEvent, WatchStream};

/// How many committed groups a live watcher may have queued before it falls back to replay.
const LIVE_QUEUE: usize = 256;
/// How many events one replay step reads from the log.
const REPLAY_BATCH: usize = 1000;

/// The events of one group commit, shared by every watcher.
#[derive(Debug)]
pub(crate) struct CommittedGroup {
    pub(crate) last_revision: Revision,
    pub(crate) events: Vec<WatchEvent>,
}

#[derive(Debug)]
struct Subscriber {
    prefix: Bytes,
    tx: mpsc::Sender<Arc<CommittedGroup>>,
}

#[derive(Debug, Default)]
struct HubState {
    subscribers: Vec<Subscriber>,
    closed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct WatchHub {
    state: Mutex<HubState>,
}

enum Subscription {
    Live(mpsc::Receiver<Arc<CommittedGroup>>),
    Behind,
    Closed,
}

impl WatchHub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Nothing panics while holding the lock; recover the state rather than propagate poison.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `group` the current revision and hands it to every live watcher it concerns. The
    /// revision moves under the hub's lock, so a watcher that subscribes sees either the old
    /// revision and this group, or the new revision and not this group.
    pub(crate) fn publish(&self, shared_current: &std::sync::atomic::AtomicI64, group: Arc<CommittedGroup>) {
        let mut state = self.lock();
        shared_current.store(group.last_revision, Ordering::SeqCst);
        state.subscribers.retain(|s| {
            if !group.events.iter().any(|e| e.kv.key.starts_with(&s.prefix)) {
                return !s.tx.is_closed();
            }
            // Full: the watcher falls back to replay once it drains. Closed: it is gone.
            s.tx.try_send(group.clone()).is_ok()
        });
    }

    /// Subscribes a watcher that has read everything before `next`, if nothing newer is committed.
    fn subscribe(
        &self,
        shared_current: &std::sync::atomic::AtomicI64,
        prefix: &Bytes,
        next: Revision,
    ) -> Subscription {
        let mut state = self.lock();
        if state.closed {
            return Subscription::Closed;
        }
        if shared_current.load(Ordering::SeqCst) >= next {
            return Subscription::Behind;
        }
        let (tx, rx) = mpsc::channel(LIVE_QUEUE);
        state.subscribers.push(Subscriber {
            prefix: prefix.clone(),
            tx,
        });
        Subscription::Live(rx)
    }

    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.subscribers.clear();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    #[cfg(test)]
    pub(crate) fn live_watchers(&self) -> usize {
        self.lock().subscribers.len()
    }
}

struct Watcher {
    /// Weak, so that a watch stream nobody drops does not keep a closed store's engine open.
    shared: Weak<Shared>,
    prefix: Bytes,
    /// The next revision this watcher must deliver.
    next: Revision,
    pending: VecDeque<WatchEvent>,
    live: Option<mpsc::Receiver<Arc<CommittedGroup>>>,
    done: bool,
}

pub(crate) fn stream(shared: Arc<Shared>, prefix: Bytes, next: Revision) -> WatchStream {
    let watcher = Watcher {
        shared: Arc::downgrade(&shared),
        prefix,
        next,
        pending: VecDeque::new(),
        live: None,
        done: false,
    };
    futures_util::stream::unfold(watcher, |mut w| async move {
        let item = w.next_event().await?;
        Some((item, w))
    })
    .boxed()
}

impl Watcher {
    async fn next_event(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            // What was read is delivered even when the store has closed since.
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if let Some(live) = &mut self.live {
                match live.recv().await {
                    Some(group) => self.take_group(&group),
                    None => {
                        // Dropped by the hub: closed, or this watcher fell behind. Replay.
                        self.live = None;
                        if self.shared.upgrade().is_none_or(|s| s.hub.is_closed()) {
                            self.done = true;
                        }
                    }
                }
                continue;
            }
            if let Err(e) = self.replay_step().await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    fn take_group(&mut self, group: &CommittedGroup) {
        let (next, prefix) = (self.next, &self.prefix);
        self.pending.extend(
            group
                .events
                .iter()
                .filter(|e| e.revision() >= next && e.kv.key.starts_with(prefix))
                .cloned(),
        );
        self.next = self.next.max(group.last_revision + 1);
    }

    async fn replay_step(&mut self) -> Result<(), StoreError> {
        let Some(shared) = self.shared.upgrade() else {
            // The store is closed.
            self.done = true;
            return Ok(());
        };
        let current = shared.current.load(Ordering::SeqCst);
        if self.next > current {
            match shared.hub.subscribe(&shared.current, &self.prefix, self.next) {
                Subscription::Live(rx) => self.live = Some(rx),
                Subscription::Behind => {}
                Subscription::Closed => self.done = true,
            }
            return Ok(());
        }
        self.check_compaction(&shared)?;
        let (prefix, from) = (self.prefix.clone(), self.next);
        let (events, last) = tokio::task::spawn_blocking(move || {
            mvcc::events_between(&*shared.engine, &prefix, from, current, REPLAY_BATCH)
        })
        .await
        .map_err(|e| StoreError::Failed(format!("watch replay task failed: {e}")))??;
        // Compaction may have removed part of what was just read.
        match self.shared.upgrade() {
            Some(shared) => self.check_compaction(&shared)?,
            None => self.done = true,
        }
        self.pending.extend(events);
        self.next = last + 1;
        Ok(())
    }

    fn check_compaction(&self, shared: &Shared) -> Result<(), StoreError> {
        let compact_revision = shared.compact.load(Ordering::SeqCst);
        if self.next < compact_revision {
            return Err(StoreError::Compacted {
                requested: self.next,
                compact_revision,
            });
        }
        Ok(())
    }
}
