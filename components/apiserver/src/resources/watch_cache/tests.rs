//! The watch cache over a real embedded store, wrapped only to count the store watches it opens.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use embedded_store::{
    EmbeddedStore, RangeRequest, RangeResponse, Revision, Store, StoreError, StoreOptions, Txn, TxnResponse,
    WatchRequest, WatchStream,
};
use serde_json::json;

use super::{FeedEnd, WINDOW, WatchCacheError, WatchCaches};
use crate::resources::registry;

#[derive(Debug)]
struct CountingStore {
    inner: EmbeddedStore,
    watches: AtomicUsize,
}

#[async_trait]
impl Store for CountingStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
    async fn compact_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compact_revision().await
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.inner.range(request).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.inner.txn(txn).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream, StoreError> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.inner.watch(request).await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

fn setup() -> (tempfile::TempDir, Arc<CountingStore>, WatchCaches) {
    let dir = tempfile::tempdir().unwrap();
    let inner = EmbeddedStore::open(dir.path().join("db"), StoreOptions::default()).unwrap();
    let store = Arc::new(CountingStore {
        inner,
        watches: AtomicUsize::new(0),
    });
    let caches = WatchCaches::new(store.clone());
    (dir, store, caches)
}

fn configmaps() -> &'static registry::ResourceType {
    registry::find("", "v1", "configmaps").unwrap()
}

async fn put(store: &CountingStore, name: &str, n: u64) -> Revision {
    let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"n": n.to_string()}});
    let key = Bytes::from(format!("/registry/core/configmaps/default/{name}"));
    match store.put(key, Bytes::from(object.to_string())).await.unwrap() {
        embedded_store::WriteOutcome::Written { revision, .. } => revision,
        other => panic!("{other:?}"),
    }
}

async fn next(sub: &mut super::CacheSubscription) -> Arc<super::CachedEvent> {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_hundred_watchers_share_one_store_watch_and_one_decode() {
    let (_dir, store, caches) = setup();
    let start = store.current_revision().await.unwrap();
    let mut subs = Vec::new();
    for _ in 0..100 {
        subs.push(caches.subscribe(configmaps(), start).await.unwrap());
    }
    let rev = put(&store, "a", 1).await;
    let first = next(&mut subs[0]).await;
    assert_eq!(first.revision, rev);
    assert_eq!(
        first.object.as_ref().unwrap()["metadata"]["resourceVersion"],
        rev.to_string()
    );
    for sub in &mut subs[1..] {
        let event = next(sub).await;
        assert!(
            Arc::ptr_eq(&event, &first),
            "every watcher gets the same decoded event"
        );
    }
    assert_eq!(store.watches.load(Ordering::SeqCst), 1);
    // Serialised once too.
    let json = first.json(false).unwrap();
    assert_eq!(json.as_ptr(), first.json(false).unwrap().as_ptr());
}

#[tokio::test]
async fn resuming_replays_the_window_then_goes_live_without_gaps_or_repeats() {
    let (_dir, store, caches) = setup();
    let before = store.current_revision().await.unwrap();
    let mut revisions = Vec::new();
    for n in 0..5 {
        revisions.push(put(&store, "a", n).await);
    }
    // The first watcher starts the cache after the writes: history comes from the store.
    let mut from_start = caches.subscribe(configmaps(), before).await.unwrap();
    let mut from_middle = caches.subscribe(configmaps(), revisions[2]).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            for n in 5..50 {
                out.push(put(&store, "a", n).await);
            }
            out
        })
    };
    let mut more = caches.subscribe(configmaps(), revisions[4]).await.unwrap();
    revisions.extend(writer.await.unwrap());
    // Older than where the cache started: kube-apiserver's answer, 410, and the client relists.
    assert!(matches!(
        caches.subscribe(configmaps(), before - 1).await,
        Err(WatchCacheError::TooOld { .. })
    ));
    for (sub, skip) in [(&mut from_start, 0), (&mut from_middle, 3), (&mut more, 5)] {
        for want in &revisions[skip..] {
            assert_eq!(next(sub).await.revision, *want);
        }
    }
    let previous = next(&mut caches.subscribe(configmaps(), revisions[10]).await.unwrap()).await;
    assert_eq!(previous.previous.as_ref().unwrap()["data"]["n"], "10");
    assert_eq!(store.watches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_resource_version_before_the_window_or_compaction_is_too_old() {
    let (_dir, store, caches) = setup();
    let first = put(&store, "a", 0).await;
    caches.subscribe(configmaps(), first).await.unwrap();
    let mut last = first;
    for n in 0..(WINDOW as u64 + 10) {
        last = put(&store, "a", n).await;
    }
    // Wait until the cache has seen the last write.
    let mut live = caches.subscribe(configmaps(), last - 1).await.unwrap();
    assert_eq!(next(&mut live).await.revision, last);
    match caches.subscribe(configmaps(), first).await {
        Err(WatchCacheError::TooOld { requested, oldest }) => {
            assert_eq!(requested, first);
            assert!(oldest > first);
        }
        other => panic!("{other:?}"),
    }
    caches.subscribe(configmaps(), last - 5).await.unwrap();

    store.compact(last).await.unwrap();
    assert!(matches!(
        caches.subscribe(configmaps(), last - 5).await,
        Err(WatchCacheError::TooOld { .. })
    ));
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_cut_off_not_the_others() {
    let (_dir, store, caches) = setup();
    let start = store.current_revision().await.unwrap();
    let mut slow = caches.subscribe(configmaps(), start).await.unwrap();
    let mut fast = caches.subscribe(configmaps(), start).await.unwrap();
    let total = super::FANOUT_QUEUE + 20;
    let mut seen = 0;
    for n in 0..total {
        let rev = put(&store, &format!("c{}", n % 7), n as u64).await;
        assert_eq!(next(&mut fast).await.revision, rev);
        seen += 1;
    }
    assert_eq!(seen, total);
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next())
            .await
            .unwrap()
        {
            Ok(_) => continue,
            Err(end) => break end,
        }
    };
    assert_eq!(end, FeedEnd::Lagged);
}

#[tokio::test]
async fn closing_ends_every_feed_and_refuses_new_ones() {
    let (_dir, store, caches) = setup();
    let start = put(&store, "a", 1).await;
    let mut sub = caches.subscribe(configmaps(), start).await.unwrap();
    put(&store, "a", 2).await;
    assert!(next(&mut sub).await.object.is_some());
    caches.close();
    let ended = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap();
    assert_eq!(ended.unwrap_err(), FeedEnd::Closed);
    assert!(matches!(
        caches.subscribe(configmaps(), start).await,
        Err(WatchCacheError::Store(StoreError::Closed))
    ));
}
