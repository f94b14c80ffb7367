//! Concurrent watchers under concurrent writers: every watcher sees exactly the events it should,
//! each once, in revision order, with correct previous values; including watchers that start in
//! the past and watchers too slow to keep up (they fall back to replaying the log).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use embedded_store::{
    EmbeddedStore, EngineKind, EventKind, Store, Txn, TxnOp, TxnOpResult, WatchEvent, WatchRequest,
};
use futures_util::StreamExt;
use rand::Rng;

const WRITERS: usize = 6;
const WRITES_PER_WRITER: usize = 400;

/// (revision, key, kind) of one acknowledged change.
type Change = (i64, Bytes, EventKind);

async fn writer(store: Arc<EmbeddedStore>, id: usize) -> Vec<Change> {
    let mut changes = vec![];
    for n in 0..WRITES_PER_WRITER {
        let (key, delete) = {
            let mut rng = rand::rng();
            (
                Bytes::from(format!("/w/{id}/{}", rng.random_range(0..40))),
                rng.random_bool(0.25),
            )
        };
        let op = if delete {
            TxnOp::Delete { key: key.clone() }
        } else {
            TxnOp::Put {
                key: key.clone(),
                value: Bytes::from(format!("{id}-{n}")),
            }
        };
        let response = store
            .txn(Txn {
                compares: vec![],
                success: vec![op],
                failure: vec![],
            })
            .await
            .unwrap();
        match response.results.first() {
            Some(TxnOpResult::Delete { prev: None }) => {} // nothing deleted, no revision
            Some(TxnOpResult::Delete { .. }) => changes.push((response.revision, key, EventKind::Delete)),
            _ => changes.push((response.revision, key, EventKind::Put)),
        }
    }
    changes
}

async fn collect(
    mut stream: embedded_store::WatchStream,
    until: Arc<tokio::sync::watch::Receiver<i64>>,
    slow: bool,
) -> Vec<WatchEvent> {
    let mut got = vec![];
    loop {
        let target = *until.borrow();
        if target > 0 && got.last().is_some_and(|e: &WatchEvent| e.revision() >= target) {
            return got;
        }
        if slow {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Ok(Some(event)) => got.push(event.unwrap()),
            Ok(None) => panic!("watch ended early"),
            Err(_) if target > 0 => return got, // nothing more is coming for this prefix
            Err(_) => {}
        }
    }
}

async fn scenario(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(common::open(dir.path(), engine));
    // History before any watcher exists, for the watchers that start in the past.
    for i in 0..50 {
        store
            .put(Bytes::from(format!("/w/0/{i}")), Bytes::from_static(b"seed"))
            .await
            .unwrap();
    }
    let seed_changes: Vec<Change> = (0..50)
        .map(|i| (2 + i as i64, Bytes::from(format!("/w/0/{i}")), EventKind::Put))
        .collect();

    let (done_tx, done_rx) = tokio::sync::watch::channel(0i64);
    let done_rx = Arc::new(done_rx);
    // (prefix, start revision, slow)
    let mut specs: Vec<(&str, i64, bool)> = vec![];
    specs.extend((0..12).map(|_| ("", 0, false)));
    specs.extend((0..4).map(|_| ("/w/1/", 0, false)));
    specs.extend((0..4).map(|i| ("", 2 + i * 10, false)));
    specs.extend((0..2).map(|_| ("", 0, true)));
    specs.push(("/w/2/", 20, true));
    let mut watchers = vec![];
    for &(prefix, start, slow) in &specs {
        let stream = store
            .watch(WatchRequest {
                prefix: Bytes::from(prefix),
                start_revision: start,
            })
            .await
            .unwrap();
        let start = if start == 0 { store.revision() + 1 } else { start };
        watchers.push((
            prefix,
            start,
            tokio::spawn(collect(stream, done_rx.clone(), slow)),
        ));
    }

    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(store.clone(), id)))
        .collect();
    let mut changes = seed_changes;
    for w in writers {
        changes.extend(w.await.unwrap());
    }
    changes.sort_by_key(|c| c.0);
    let last = changes.last().unwrap().0;
    // Writes are single-key transactions: one change per revision, no gaps.
    assert_eq!(
        changes.iter().map(|c| c.0).collect::<Vec<_>>(),
        (2..=last).collect::<Vec<_>>(),
        "{engine}"
    );
    done_tx.send(last).unwrap();

    // Each key's previous change, to check prev_kv.
    let mut prev_of: HashMap<i64, Option<i64>> = HashMap::new();
    let mut latest: HashMap<Bytes, (i64, EventKind)> = HashMap::new();
    for (rev, key, kind) in &changes {
        let prev = latest
            .get(key)
            .filter(|(_, k)| *k == EventKind::Put)
            .map(|(r, _)| *r);
        prev_of.insert(*rev, prev);
        latest.insert(key.clone(), (*rev, *kind));
    }

    for (prefix, start, handle) in watchers {
        let got = handle.await.unwrap();
        let expected: Vec<&Change> = changes
            .iter()
            .filter(|c| c.0 >= start && c.1.starts_with(prefix.as_bytes()))
            .collect();
        let got_triples: Vec<Change> = got
            .iter()
            .map(|e| (e.revision(), e.kv.key.clone(), e.kind))
            .collect();
        assert_eq!(
            got_triples.len(),
            expected.len(),
            "{engine}: watcher {prefix:?} from {start}: count"
        );
        for (g, e) in got_triples.iter().zip(&expected) {
            assert_eq!(g, *e, "{engine}: watcher {prefix:?} from {start}");
        }
        for event in &got {
            assert_eq!(
                event.prev_kv.as_ref().map(|p| p.mod_revision),
                prev_of[&event.revision()],
                "{engine}: prev_kv of {}",
                event.revision()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_watchers_see_every_event_once_in_order() {
    scenario(EngineKind::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_watchers_see_every_event_once_in_order() {
    scenario(EngineKind::Sled).await;
}
