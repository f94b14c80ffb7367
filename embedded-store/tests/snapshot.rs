//! Snapshots on both engines: taken while the store serves, restored into a fresh store with every key at its
//! revisions and the store at the snapshot's revision; damaged files and non-fresh targets refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use bytes::Bytes;
use embedded_store::{
    EmbeddedStore, RangeRequest, Snapshot, SnapshotError, Store, WatchRequest, WriteOutcome,
};
use futures_util::StreamExt;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn everything(store: &dyn Store) -> Vec<embedded_store::KeyValue> {
    store
        .range(RangeRequest {
            prefix: b("/"),
            start: None,
            limit: 0,
            revision: 0,
        })
        .await
        .unwrap()
        .kvs
}

#[tokio::test]
async fn a_restored_store_holds_every_key_at_its_revisions() {
    for engine in common::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let store = common::open(&dir.path().join("a"), engine);
        // More keys than a page, some updated, some deleted.
        for chunk in 0..12 {
            let txn = embedded_store::Txn {
                compares: vec![],
                success: (0..100)
                    .map(|i| embedded_store::TxnOp::Put {
                        key: b(&format!("/registry/k/{:05}", chunk * 100 + i)),
                        value: b("v1"),
                    })
                    .collect(),
                failure: vec![],
            };
            store.txn(txn).await.unwrap();
        }
        for i in (0..1200).step_by(7) {
            store
                .put(b(&format!("/registry/k/{i:05}")), b("v2"))
                .await
                .unwrap();
        }
        for i in (0..1200).step_by(11) {
            store
                .delete(b(&format!("/registry/k/{i:05}")), None)
                .await
                .unwrap();
        }
        store.put(b("/bootstrap/x"), b("sealed")).await.unwrap();
        let before = everything(&store).await;
        let mut snapshot = Snapshot::take(&store).await.unwrap();
        assert_eq!(snapshot.revision, store.revision());
        assert_eq!(snapshot.kvs, before);
        snapshot.files.push(("tls/server-ca.crt".into(), b("PEM")));
        // Writes after the snapshot are not in it.
        store.put(b("/registry/k/later"), b("x")).await.unwrap();

        let bytes = snapshot.encode();
        let decoded = Snapshot::decode(&bytes).unwrap();
        assert_eq!(decoded, snapshot, "{engine}");

        let target = dir.path().join("restored");
        EmbeddedStore::restore(&target, common::options(engine), &decoded).unwrap();
        let restored = common::open(&target, engine);
        assert_eq!(restored.revision(), snapshot.revision, "{engine}");
        assert_eq!(everything(&restored).await, before, "{engine}");
        // The next write continues the revisions; optimistic concurrency on a restored key works.
        let key = b("/registry/k/00001");
        let kv = restored.get(key.clone(), 0).await.unwrap().kv.unwrap();
        match restored
            .update(key.clone(), b("v3"), kv.mod_revision)
            .await
            .unwrap()
        {
            WriteOutcome::Written { revision, .. } => assert_eq!(revision, snapshot.revision + 1),
            other => panic!("{other:?}"),
        }
        // A watch from the snapshot's revision starts there; older history is compacted.
        let mut watch = restored
            .watch(WatchRequest {
                prefix: b("/registry/"),
                start_revision: snapshot.revision + 1,
            })
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(event.kv.key, key);
        assert!(restored.get(key, snapshot.revision - 10).await.is_err());

        // A store is never restored over.
        drop(restored);
        assert!(matches!(
            EmbeddedStore::restore(&target, common::options(engine), &decoded),
            Err(SnapshotError::NotFresh(_))
        ));
    }
}

#[test]
fn damaged_snapshots_are_refused() {
    let snapshot = Snapshot {
        revision: 3,
        kvs: vec![embedded_store::KeyValue {
            key: b("/a"),
            value: b("v"),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
        }],
        files: vec![],
    };
    let good = snapshot.encode();
    assert_eq!(Snapshot::decode(&good).unwrap(), snapshot);
    assert!(matches!(
        Snapshot::decode(b"hello"),
        Err(SnapshotError::NotASnapshot)
    ));
    let truncated = &good[..good.len() - 5];
    assert!(matches!(
        Snapshot::decode(truncated),
        Err(SnapshotError::Damaged(_))
    ));
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    let error = Snapshot::decode(&flipped).unwrap_err().to_string();
    assert!(error.contains("checksum"), "{error}");
}
