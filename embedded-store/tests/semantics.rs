//! Targeted behaviour of the store: bad input, errors a caller must be able to tell apart,
//! compaction, and watches at their edges. Each test runs on both engines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use bytes::Bytes;
use embedded_store::{
    DeleteOutcome, EmbeddedStore, EngineKind, EventKind, MAX_VALUE_BYTES, RangeRequest, Store, StoreError,
    Txn, TxnOp, WatchRequest, WriteOutcome,
};
use futures_util::StreamExt;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn written(store: &EmbeddedStore, key: &str, value: &str) -> i64 {
    match store.put(b(key), b(value)).await.unwrap() {
        WriteOutcome::Written { revision, .. } => revision,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_input_gets_a_named_error_and_changes_nothing() {
    for engine in common::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let s = common::open(dir.path(), engine);
        assert!(matches!(
            s.put(Bytes::new(), b("v")).await,
            Err(StoreError::EmptyKey)
        ));
        let big = Bytes::from(vec![7u8; MAX_VALUE_BYTES + 1]);
        let err = s.put(b("/big"), big).await.unwrap_err();
        assert!(matches!(err, StoreError::ValueTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("/big"), "{err}");
        assert!(matches!(
            s.put(Bytes::from(vec![b'k'; 9000]), b("v")).await,
            Err(StoreError::KeyTooLarge { .. })
        ));
        let dup = Txn {
            compares: vec![],
            success: vec![
                TxnOp::Put {
                    key: b("/a"),
                    value: b("1"),
                },
                TxnOp::Delete { key: b("/a") },
            ],
            failure: vec![],
        };
        assert!(matches!(s.txn(dup).await, Err(StoreError::DuplicateKey { .. })));
        let many = Txn {
            compares: vec![],
            success: (0..200)
                .map(|i| TxnOp::Put {
                    key: b(&format!("/k{i}")),
                    value: b("v"),
                })
                .collect(),
            failure: vec![],
        };
        assert!(matches!(
            s.txn(many).await,
            Err(StoreError::TooManyOps { len: 200, max: 128 })
        ));
        let outside = RangeRequest {
            prefix: b("/a/"),
            start: Some(b("/b")),
            limit: 0,
            revision: 0,
        };
        assert!(matches!(s.range(outside).await, Err(StoreError::InvalidRange(_))));
        assert_eq!(
            s.revision(),
            1,
            "{engine}: refused writes must not move the revision"
        );
        // The largest allowed value is stored whole.
        let max = Bytes::from(vec![9u8; MAX_VALUE_BYTES]);
        s.put(b("/max"), max.clone()).await.unwrap();
        assert_eq!(s.get(b("/max"), 0).await.unwrap().kv.unwrap().value, max);
    }
}

#[tokio::test]
async fn reads_outside_the_retained_history_are_refused() {
    for engine in common::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let s = common::open(dir.path(), engine);
        let r1 = written(&s, "/k", "1").await;
        let r2 = written(&s, "/k", "2").await;
        let r3 = written(&s, "/k", "3").await;
        let future = s.get(b("/k"), r3 + 5).await.unwrap_err();
        assert!(
            matches!(future, StoreError::FutureRevision { requested, current } if requested == r3 + 5 && current == r3)
        );
        assert_eq!(s.get(b("/k"), r1).await.unwrap().kv.unwrap().value, b("1"));
        s.compact(r2).await.unwrap();
        let old = s.get(b("/k"), r1).await.unwrap_err();
        assert!(
            matches!(old, StoreError::Compacted { requested, compact_revision } if requested == r1 && compact_revision == r2),
            "{old}"
        );
        assert_eq!(s.get(b("/k"), r2).await.unwrap().kv.unwrap().value, b("2"));
        assert!(matches!(
            s.watch(WatchRequest {
                prefix: b("/"),
                start_revision: r1
            })
            .await,
            Err(StoreError::Compacted { .. })
        ));
        assert!(
            matches!(s.compact(r2).await, Err(StoreError::Compacted { .. })),
            "compacting again is refused"
        );
        assert!(matches!(
            s.compact(r3 + 1).await,
            Err(StoreError::FutureRevision { .. })
        ));
        // The compact revision survives a restart.
        drop(s);
        let s = common::open(dir.path(), engine);
        assert!(matches!(
            s.get(b("/k"), r1).await,
            Err(StoreError::Compacted { .. })
        ));
        assert_eq!(s.compact_revision().await.unwrap(), r2);
    }
}

#[tokio::test]
async fn conditional_writes_report_conflicts_with_the_current_value() {
    for engine in common::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let s = common::open(dir.path(), engine);
        let WriteOutcome::Written {
            revision: created,
            prev: None,
        } = s.create(b("/pod"), b("v1")).await.unwrap()
        else {
            panic!("create failed")
        };
        let again = s.create(b("/pod"), b("v2")).await.unwrap();
        assert!(
            matches!(&again, WriteOutcome::Conflict { current: Some(kv) } if kv.value == b("v1")),
            "{again:?}"
        );
        let stale = s.update(b("/pod"), b("v2"), created - 1).await.unwrap();
        assert!(matches!(stale, WriteOutcome::Conflict { current: Some(_) }));
        let WriteOutcome::Written {
            revision: updated,
            prev: Some(prev),
        } = s.update(b("/pod"), b("v2"), created).await.unwrap()
        else {
            panic!("update failed")
        };
        assert_eq!((prev.value, prev.version), (b("v1"), 1));
        let kv = s.get(b("/pod"), 0).await.unwrap().kv.unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (created, updated, 2)
        );
        assert!(matches!(
            s.delete(b("/pod"), Some(created)).await.unwrap(),
            DeleteOutcome::Conflict { .. }
        ));
        assert!(matches!(
            s.delete(b("/pod"), Some(updated)).await.unwrap(),
            DeleteOutcome::Deleted { .. }
        ));
        assert_eq!(s.delete(b("/pod"), None).await.unwrap(), DeleteOutcome::NotFound);
        // A recreated key starts a new life: version 1, a new create revision.
        let WriteOutcome::Written {
            revision: recreated, ..
        } = s.create(b("/pod"), b("v3")).await.unwrap()
        else {
            panic!("recreate failed")
        };
        let kv = s.get(b("/pod"), 0).await.unwrap().kv.unwrap();
        assert_eq!((kv.create_revision, kv.version), (recreated, 1));
    }
}

#[tokio::test]
async fn paged_ranges_walk_the_whole_prefix_at_one_revision() {
    for engine in common::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let s = common::open(dir.path(), engine);
        for i in 0..25 {
            written(&s, &format!("/registry/pods/ns/p{i:02}"), "x").await;
        }
        written(&s, "/registry/podsecurity", "other prefix").await;
        let first = s
            .range(RangeRequest {
                prefix: b("/registry/pods/"),
                start: None,
                limit: 10,
                revision: 0,
            })
            .await
            .unwrap();
        let at = first.revision;
        // Writes after the first page must not show in later pages read at the same revision.
        written(&s, "/registry/pods/ns/p00a", "late").await;
        let mut keys: Vec<Bytes> = first.kvs.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!((first.count, first.more), (25, true));
        let mut more = first.more;
        while more {
            let mut start = keys.last().unwrap().to_vec();
            start.push(0);
            let page = s
                .range(RangeRequest {
                    prefix: b("/registry/pods/"),
                    start: Some(start.into()),
                    limit: 10,
                    revision: at,
                })
                .await
                .unwrap();
            keys.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            more = page.more;
        }
        let expected: Vec<Bytes> = (0..25)
            .map(|i| b(&format!("/registry/pods/ns/p{i:02}")))
            .collect();
        assert_eq!(keys, expected, "{engine}");
        assert_eq!(s.count(b("/registry/pods/")).await.unwrap().count, 26);
    }
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    for engine in common::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let s = common::open(dir.path(), engine);
        let err = EmbeddedStore::open(dir.path(), common::options(engine)).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(s);
        common::open(dir.path(), engine);
    }
}

#[test]
fn corrupt_engine_files_are_reported_not_panicked_on() {
    // redb: garbage in place of the database file.
    let dir = tempfile::tempdir().unwrap();
    drop(common::open(dir.path(), EngineKind::Redb));
    std::fs::write(dir.path().join("redb/state.redb"), vec![0x5a; 64 * 1024]).unwrap();
    let err = EmbeddedStore::open(dir.path(), common::options(EngineKind::Redb)).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Engine(_)),
        "{err}"
    );

    // A valid redb file that some other program made is not a store either.
    let dir = tempfile::tempdir().unwrap();
    drop(common::open(dir.path(), EngineKind::Redb));
    let path = dir.path().join("redb/state.redb");
    std::fs::remove_file(&path).unwrap();
    drop(redb::Database::create(&path).unwrap());
    let err = EmbeddedStore::open(dir.path(), common::options(EngineKind::Redb)).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

    // sled: a truncated log file.
    let dir = tempfile::tempdir().unwrap();
    drop(common::open(dir.path(), EngineKind::Sled));
    std::fs::write(dir.path().join("sled/db/conf"), b"not a sled config").unwrap();
    let err = EmbeddedStore::open(dir.path(), common::options(EngineKind::Sled)).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Engine(_)),
        "{err}"
    );
}

#[tokio::test]
async fn watches_resume_from_history_then_follow_live_writes() {
    for engine in common::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let s = common::open(dir.path(), engine);
        let r1 = written(&s, "/a/1", "one").await;
        written(&s, "/b/1", "other prefix").await;
        s.delete(b("/a/1"), None).await.unwrap();
        let mut w = s
            .watch(WatchRequest {
                prefix: b("/a/"),
                start_revision: r1,
            })
            .await
            .unwrap();
        let e1 = w.next().await.unwrap().unwrap();
        assert_eq!(
            (e1.kind, e1.kv.value.clone(), e1.prev_kv.clone()),
            (EventKind::Put, b("one"), None)
        );
        let e2 = w.next().await.unwrap().unwrap();
        assert_eq!(e2.kind, EventKind::Delete);
        assert_eq!(e2.prev_kv.unwrap().value, b("one"));
        let r4 = written(&s, "/a/2", "live").await;
        let e3 = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((e3.kv.mod_revision, e3.kv.value), (r4, b("live")));
        // A watch from "now" sees only later writes; one from the future waits for its revision.
        let mut now = s
            .watch(WatchRequest {
                prefix: b("/a/"),
                start_revision: 0,
            })
            .await
            .unwrap();
        let mut later = s
            .watch(WatchRequest {
                prefix: b("/a/"),
                start_revision: r4 + 2,
            })
            .await
            .unwrap();
        let r5 = written(&s, "/a/3", "x").await;
        let r6 = written(&s, "/a/4", "y").await;
        assert_eq!(now.next().await.unwrap().unwrap().kv.mod_revision, r5);
        assert_eq!(later.next().await.unwrap().unwrap().kv.mod_revision, r6);
        // Closing the store ends its watches. What a watch still delivers on the way is in order and
        // without gaps (a consumer resumes from the last revision it saw, as with etcd).
        drop(s);
        let mut rest = vec![];
        while let Some(event) = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .unwrap()
        {
            rest.push(event.unwrap().kv.mod_revision);
        }
        assert!([r5, r6].starts_with(&rest), "{rest:?}");
    }
}

#[tokio::test]
async fn transactions_are_one_revision_and_one_event_batch() {
    for engine in common::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let s = common::open(dir.path(), engine);
        let mut w = s
            .watch(WatchRequest {
                prefix: Bytes::new(),
                start_revision: 0,
            })
            .await
            .unwrap();
        let txn = Txn {
            compares: vec![],
            success: vec![
                TxnOp::Put {
                    key: b("/x"),
                    value: b("1"),
                },
                TxnOp::Put {
                    key: b("/y"),
                    value: b("2"),
                },
            ],
            failure: vec![],
        };
        let resp = s.txn(txn).await.unwrap();
        assert_eq!(resp.revision, 2);
        let a = w.next().await.unwrap().unwrap();
        let c = w.next().await.unwrap().unwrap();
        assert_eq!(
            (a.kv.key, a.kv.mod_revision, c.kv.key, c.kv.mod_revision),
            (b("/x"), 2, b("/y"), 2)
        );
        // A transaction that changes nothing does not move the revision.
        let noop = Txn {
            compares: vec![],
            success: vec![TxnOp::Delete { key: b("/absent") }],
            failure: vec![],
        };
        assert_eq!(s.txn(noop).await.unwrap().revision, 2);
    }
}

#[tokio::test]
async fn a_forgotten_watch_stream_does_not_keep_the_store_open() {
    for engine in common::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let s = common::open(dir.path(), engine);
        written(&s, "/a", "1").await;
        let mut w = s
            .watch(WatchRequest {
                prefix: b("/"),
                start_revision: 2,
            })
            .await
            .unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().kv.value, b("1"));
        drop(s);
        // The stream is still alive, yet the directory opens again at once.
        let again = common::open(dir.path(), engine);
        assert_eq!(again.revision(), 2);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .unwrap()
                .is_none()
        );
    }
}
