//! An in-memory copy of the objects under one store prefix, listed once and then kept current from a store
//! watch (relisting when the watch breaks), as the informers kube-apiserver's authorizers read from. What is kept
//! of each object is the owner's choice (`Mirrored::apply`).

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use embedded_store::{EventKind, RangeRequest, Store, StoreError, WatchRequest};
use futures_util::StreamExt;

/// What a mirror keeps: told of every put (`Some(value)`) and delete (`None`) under the prefix.
pub trait Mirrored: Default + Send + Sync + 'static {
    fn apply(&mut self, key: &str, value: Option<&[u8]>);
}

#[derive(Debug, Default)]
pub struct Mirror<T> {
    state: RwLock<T>,
}

impl<T: Mirrored> Mirror<T> {
    /// Lists `prefix` now (so the first request already sees the current objects), then follows it.
    pub async fn start(store: Arc<dyn Store>, prefix: &'static str) -> Result<Arc<Mirror<T>>, StoreError> {
        let mirror = Arc::new(Mirror {
            state: RwLock::new(T::default()),
        });
        let revision = mirror.load(&*store, prefix).await?;
        tokio::spawn(follow(store, prefix, Arc::downgrade(&mirror), revision));
        Ok(mirror)
    }

    /// A mirror of fixed contents (tests).
    pub fn of(state: T) -> Mirror<T> {
        Mirror {
            state: RwLock::new(state),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    async fn load(&self, store: &dyn Store, prefix: &str) -> Result<i64, StoreError> {
        let response = store
            .range(RangeRequest {
                prefix: Bytes::copy_from_slice(prefix.as_bytes()),
                start: None,
                limit: 0,
                revision: 0,
            })
            .await?;
        let mut state = T::default();
        for kv in &response.kvs {
            if let Ok(key) = std::str::from_utf8(&kv.key) {
                state.apply(key, Some(&kv.value));
            }
        }
        *self.write() = state;
        Ok(response.revision)
    }
}

async fn follow<T: Mirrored>(
    store: Arc<dyn Store>,
    prefix: &'static str,
    mirror: Weak<Mirror<T>>,
    mut revision: i64,
) {
    loop {
        let stream = store
            .watch(WatchRequest {
                prefix: Bytes::from_static(prefix.as_bytes()),
                start_revision: revision + 1,
            })
            .await;
        if let Ok(mut stream) = stream {
            while let Some(Ok(event)) = stream.next().await {
                let Some(mirror) = mirror.upgrade() else { return };
                revision = event.kv.mod_revision;
                let value = (event.kind == EventKind::Put).then_some(&event.kv.value[..]);
                if let Ok(key) = std::str::from_utf8(&event.kv.key) {
                    mirror.write().apply(key, value);
                }
            }
        }
        if store.current_revision().await.is_err() {
            // The store is closed: the server is stopping.
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(current) = mirror.upgrade() else { return };
        match current.load(&*store, prefix).await {
            Ok(r) => revision = r,
            Err(e) => tracing::warn!(prefix, error = %e, "cannot relist a mirrored prefix"),
        }
    }
}
