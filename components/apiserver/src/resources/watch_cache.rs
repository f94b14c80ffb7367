//! The watch cache (kube-apiserver's "cacher"): one store watch per resource type, whose events are decoded once
//! and fanned out to every HTTP watcher of that type, with a window of recent events so watchers can resume from a
//! resourceVersion without a store watch of their own.
//!
//! A resource's cache starts on its first watch, from that watch's resourceVersion (replaying the store's history
//! from there if it is in the past). The window then slides: it holds the last [`WINDOW`] events, and a watch
//! from before the window gets 410 Gone, as kube-apiserver answers when a resourceVersion is older than its
//! cache; clients relist and watch again. (Replaying all retained history at start would make every older
//! resourceVersion resumable, but costs a decode of every retained event before the first live one.) Events are published under the same lock that extends the window, so a
//! new watcher's backlog and its live feed neither overlap nor leave a gap.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use embedded_store::{EventKind, Revision, Store, StoreError, WatchRequest};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::broadcast;

use super::objects;
use super::registry::ResourceType;

/// Events kept per resource type for resuming watchers.
const WINDOW: usize = 1024;
/// Events queued per watcher; one that falls further behind is closed and re-watches, as kube-apiserver does.
const FANOUT_QUEUE: usize = 1024;

/// One store event, decoded once for every watcher.
#[derive(Debug)]
pub struct CachedEvent {
    pub revision: Revision,
    /// The object after a put; `None` for a delete.
    pub object: Option<Value>,
    /// The object before the event, with the event's revision as its resourceVersion (as a DELETED event carries it).
    pub previous: Option<Value>,
    object_json: OnceLock<Bytes>,
    previous_json: OnceLock<Bytes>,
}

impl CachedEvent {
    /// The JSON of the object (`previous = false`) or of the previous object, serialised once for all watchers.
    pub fn json(&self, previous: bool) -> Option<Bytes> {
        let (value, cell) = if previous {
            (self.previous.as_ref()?, &self.previous_json)
        } else {
            (self.object.as_ref()?, &self.object_json)
        };
        Some(cell.get_or_init(|| Bytes::from(value.to_string())).clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchCacheError {
    /// The resourceVersion is older than what the cache (or the store) still has.
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld { requested: Revision, oldest: Revision },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
struct Window {
    /// Every event after this revision is in `events` or still to come.
    start: Revision,
    events: VecDeque<Arc<CachedEvent>>,
    /// The newest revision seen, for bookmarks.
    last: Revision,
    /// Dropped when the store watch ends, which ends every watcher's feed.
    sender: Option<broadcast::Sender<Arc<CachedEvent>>>,
}

#[derive(Debug)]
struct ResourceCache {
    window: Mutex<Window>,
}

impl ResourceCache {
    fn lock(&self) -> MutexGuard<'_, Window> {
        // Nothing panics under the lock; a poisoned window is still consistent.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, event: CachedEvent) {
        let event = Arc::new(event);
        let mut w = self.lock();
        w.last = event.revision;
        if w.events.len() == WINDOW
            && let Some(oldest) = w.events.pop_front()
        {
            w.start = oldest.revision;
        }
        w.events.push_back(event.clone());
        if let Some(sender) = &w.sender {
            let _ = sender.send(event); // no receivers is fine
        }
    }

    fn is_live(&self) -> bool {
        self.lock().sender.is_some()
    }
}

/// A watcher's feed: the buffered events after its resourceVersion, then live ones.
#[derive(Debug)]
pub struct CacheSubscription {
    after: Revision,
    backlog: VecDeque<Arc<CachedEvent>>,
    live: broadcast::Receiver<Arc<CachedEvent>>,
    cache: Arc<ResourceCache>,
}

/// Why a feed ended.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedEnd {
    /// The cache's store watch ended (server shutdown, or the store failed); the client should re-watch.
    Closed,
    /// This watcher fell more than [`FANOUT_QUEUE`] events behind.
    Lagged,
}

impl CacheSubscription {
    pub async fn next(&mut self) -> Result<Arc<CachedEvent>, FeedEnd> {
        if let Some(event) = self.backlog.pop_front() {
            return Ok(event);
        }
        loop {
            match self.live.recv().await {
                Ok(event) if event.revision > self.after => return Ok(event),
                Ok(_) => continue, // published before this watcher's resourceVersion
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(FeedEnd::Lagged),
                Err(broadcast::error::RecvError::Closed) => return Err(FeedEnd::Closed),
            }
        }
    }

    /// The newest revision the cache has seen for this resource (a safe bookmark).
    pub fn last_revision(&self) -> Revision {
        self.cache.lock().last.max(self.after)
    }
}

/// The watch caches of every resource type, started on demand.
#[derive(Debug)]
pub struct WatchCaches {
    store: Arc<dyn Store>,
    caches: Mutex<HashMap<String, Arc<ResourceCache>>>,
    /// Set at shutdown: no cache starts again, so that no watch holds the server open.
    closed: std::sync::atomic::AtomicBool,
}

impl WatchCaches {
    pub fn new(store: Arc<dyn Store>) -> WatchCaches {
        WatchCaches {
            store,
            caches: Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ends every watcher's feed, and refuses new ones: at shutdown, watches end at once (their clients re-watch
    /// elsewhere or after the restart), as kube-apiserver ends them, instead of holding the graceful shutdown
    /// for its whole grace period.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        for cache in self.caches().values() {
            cache.lock().sender = None;
        }
    }

    fn caches(&self) -> MutexGuard<'_, HashMap<String, Arc<ResourceCache>>> {
        self.caches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to every event of `resource` after revision `after` (any namespace; the caller filters).
    pub async fn subscribe(
        &self,
        resource: &'static ResourceType,
        after: Revision,
    ) -> Result<CacheSubscription, WatchCacheError> {
        let compacted = self.store.compact_revision().await?;
        if after < compacted {
            return Err(WatchCacheError::TooOld {
                requested: after,
                oldest: compacted,
            });
        }
        let cache = self.cache_for(resource, after).await?;
        let w = cache.lock();
        if after < w.start {
            return Err(WatchCacheError::TooOld {
                requested: after,
                oldest: w.start,
            });
        }
        let Some(sender) = &w.sender else {
            return Err(WatchCacheError::Store(StoreError::Closed));
        };
        let backlog = w.events.iter().filter(|e| e.revision > after).cloned().collect();
        let live = sender.subscribe();
        drop(w);
        Ok(CacheSubscription {
            after,
            backlog,
            live,
            cache,
        })
    }

    /// Starts the cache of every served resource at the store's current revision (a resource whose store watch
    /// cannot start now is started by its first watcher instead).
    pub async fn start_all(&self) {
        let Ok(now) = self.store.current_revision().await else {
            return;
        };
        for resource in super::registry::RESOURCES {
            if let Err(e) = self.cache_for(resource, now).await {
                tracing::warn!(resource = %resource.plural, error = %e, "watch cache not started");
            }
        }
    }

    /// The resource's cache, started (for a watcher of events after `after`) if it is not running.
    async fn cache_for(
        &self,
        resource: &'static ResourceType,
        after: Revision,
    ) -> Result<Arc<ResourceCache>, WatchCacheError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(WatchCacheError::Store(StoreError::Closed));
        }
        let key = resource.qualified_plural();
        if let Some(cache) = self.caches().get(&key).filter(|c| c.is_live()) {
            return Ok(cache.clone());
        }
        let prefix = Bytes::from(objects::prefix(resource, None));
        let stream = self
            .store
            .watch(WatchRequest {
                prefix,
                start_revision: after + 1,
            })
            .await?;
        let mut caches = self.caches();
        // Another watcher may have started it meanwhile; keep theirs.
        if let Some(cache) = caches.get(&key).filter(|c| c.is_live()) {
            return Ok(cache.clone());
        }
        let (sender, _) = broadcast::channel(FANOUT_QUEUE);
        let cache = Arc::new(ResourceCache {
            window: Mutex::new(Window {
                start: after,
                events: VecDeque::new(),
                last: after,
                sender: Some(sender),
            }),
        });
        caches.insert(key, cache.clone());
        tokio::spawn(feed(stream, Arc::downgrade(&cache)));
        Ok(cache)
    }
}

/// Moves store events into the cache until the store watch ends or nobody holds the cache any more.
async fn feed(mut stream: embedded_store::WatchStream, cache: std::sync::Weak<ResourceCache>) {
    while let Some(item) = stream.next().await {
        let Some(cache) = cache.upgrade() else { return };
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "a watch cache lost its store watch; watchers will re-watch");
                break;
            }
        };
        let revision = event.kv.mod_revision;
        let object = match event.kind {
            EventKind::Put => objects::decode(&event.kv.value, revision),
            EventKind::Delete => None,
        };
        let previous = event
            .prev_kv
            .as_ref()
            .and_then(|p| objects::decode(&p.value, revision));
        cache.publish(CachedEvent {
            revision,
            object,
            previous,
            object_json: OnceLock::new(),
            previous_json: OnceLock::new(),
        });
    }
    if let Some(cache) = cache.upgrade() {
        cache.lock().sender = None;
    }
}

#[cfg(test)]
mod tests;
