//! The `Store` trait: what the API server may ask of cluster storage, embedded or etcd.

use async_trait::async_trait;
use bytes::Bytes;

use crate::StoreError;
use crate::types::{
    Compare, CountResponse, DeleteOutcome, GetResponse, RangeRequest, RangeResponse, Revision, Txn, TxnOp,
    TxnOpResult, TxnResponse, WatchRequest, WatchStream, WriteOutcome,
};

/// An etcd-v3-like store: one global revision, MVCC reads, transactions, watches, compaction.
///
/// Everything but `txn`, `range`, `watch` and `compact` is derived, so a backend implements only
/// what etcd's API offers natively.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The oldest revision still readable and watchable.
    async fn compact_revision(&self) -> Result<Revision, StoreError>;

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError>;

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream, StoreError>;

    /// Drops history older than `revision`. Reads and watches below it then fail with
    /// `StoreError::Compacted`.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// `key` at `revision` (0: now).
    async fn get(&self, key: Bytes, revision: Revision) -> Result<GetResponse, StoreError> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let response = self
            .range(RangeRequest {
                prefix: key.clone(),
                start: None,
                limit: 0,
                revision,
            })
            .await?;
        let kv = response.kvs.into_iter().find(|kv| kv.key == key);
        Ok(GetResponse {
            kv,
            revision: response.revision,
        })
    }

    /// How many keys start with `prefix`.
    async fn count(&self, prefix: Bytes) -> Result<CountResponse, StoreError> {
        let response = self
            .range(RangeRequest {
                prefix,
                start: None,
                limit: 1,
                revision: 0,
            })
            .await?;
        Ok(CountResponse {
            count: response.count,
            revision: response.revision,
        })
    }

    /// Writes `key` only if it does not exist.
    async fn create(&self, key: Bytes, value: Bytes) -> Result<WriteOutcome, StoreError> {
        self.put_if(Compare::absent(key.clone()), key, value).await
    }

    /// Writes `key` only if it was last changed at `expected` (optimistic concurrency).
    async fn update(&self, key: Bytes, value: Bytes, expected: Revision) -> Result<WriteOutcome, StoreError> {
        self.put_if(Compare::mod_revision_is(key.clone(), expected), key, value)
            .await
    }

    /// Writes `key` whatever it holds.
    async fn put(&self, key: Bytes, value: Bytes) -> Result<WriteOutcome, StoreError> {
        let response = self
            .txn(Txn {
                compares: vec![],
                success: vec![TxnOp::Put { key, value }],
                failure: vec![],
            })
            .await?;
        written(response)
    }

    /// Deletes `key`; with `expected`, only if it was last changed at that revision.
    async fn delete(&self, key: Bytes, expected: Option<Revision>) -> Result<DeleteOutcome, StoreError> {
        let compares = match expected {
            Some(revision) => vec![Compare::mod_revision_is(key.clone(), revision)],
            None => vec![],
        };
        let txn = Txn {
            compares,
            success: vec![TxnOp::Delete { key: key.clone() }],
            failure: vec![TxnOp::Get { key }],
        };
        let response = self.txn(txn).await?;
        match (response.succeeded, response.results.into_iter().next()) {
            (true, Some(TxnOpResult::Delete { prev: Some(prev) })) => Ok(DeleteOutcome::Deleted {
                revision: response.revision,
                prev,
            }),
            (true, Some(TxnOpResult::Delete { prev: None })) => Ok(DeleteOutcome::NotFound),
            (false, Some(TxnOpResult::Get { kv: Some(current) })) => Ok(DeleteOutcome::Conflict { current }),
            (false, Some(TxnOpResult::Get { kv: None })) => Ok(DeleteOutcome::NotFound),
            (_, other) => Err(StoreError::Failed(format!(
                "delete got an unexpected result: {other:?}"
            ))),
        }
    }

    #[doc(hidden)]
    async fn put_if(&self, compare: Compare, key: Bytes, value: Bytes) -> Result<WriteOutcome, StoreError> {
        let txn = Txn {
            compares: vec![compare],
            success: vec![TxnOp::Put {
                key: key.clone(),
                value,
            }],
            failure: vec![TxnOp::Get { key }],
        };
        written(self.txn(txn).await?)
    }
}

fn written(response: TxnResponse) -> Result<WriteOutcome, StoreError> {
    match (response.succeeded, response.results.into_iter().next()) {
        (true, Some(TxnOpResult::Put { prev })) => Ok(WriteOutcome::Written {
            revision: response.revision,
            prev,
        }),
        (false, Some(TxnOpResult::Get { kv })) => Ok(WriteOutcome::Conflict { current: kv }),
        (_, other) => Err(StoreError::Failed(format!(
            "write got an unexpected result: {other:?}"
        ))),
    }
}
