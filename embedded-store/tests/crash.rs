//! Crash test: a child process writes as fast as it can and reports every acknowledged write; the
//! test kills it with SIGKILL at random moments, many times, reopens the store and checks that
//! every acknowledged write is there, that no transaction is half applied, and that revisions are
//! gap-free and ordered.
//!
//! The child is this test binary itself, re-executed to run `crash_writer_child` only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use embedded_store::{EngineKind, RangeRequest, Store, Txn, TxnOp, WatchRequest};
use futures_util::StreamExt;
use rand::Rng;

const CHILD_ENV: &str = "BONSAI_STORE_CRASH_CHILD";
const ROUNDS: usize = 12;
const WRITERS: usize = 8;

fn pair_keys(round: usize, i: u64) -> (Bytes, Bytes) {
    (
        Bytes::from(format!("/crash/{round:03}/{i:08}/a")),
        Bytes::from(format!("/crash/{round:03}/{i:08}/b")),
    )
}

fn value(round: usize, i: u64) -> Bytes {
    Bytes::from(format!(
        "round {round} write {i} {}",
        "x".repeat((i % 200) as usize)
    ))
}

#[test]
#[ignore = "the crash test's child process; runs only when re-executed by it"]
fn crash_writer_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let engine: EngineKind = parts.next().unwrap().parse().unwrap();
    let round: usize = parts.next().unwrap().parse().unwrap();
    let dir = parts.next().unwrap().to_string();
    common::runtime().block_on(async move {
        let store = Arc::new(common::open(dir.as_ref(), engine));
        println!("READY");
        let counter = Arc::new(AtomicU64::new(0));
        for _ in 0..WRITERS {
            let (store, counter) = (store.clone(), counter.clone());
            tokio::spawn(async move {
                loop {
                    let i = counter.fetch_add(1, Ordering::SeqCst);
                    let (a, b) = pair_keys(round, i);
                    let v = value(round, i);
                    let txn = Txn {
                        compares: vec![],
                        success: vec![
                            TxnOp::Put {
                                key: a,
                                value: v.clone(),
                            },
                            TxnOp::Put { key: b, value: v },
                        ],
                        failure: vec![],
                    };
                    let revision = store.txn(txn).await.unwrap().revision;
                    // Only now is the write acknowledged.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {i} {revision}").unwrap();
                }
            });
        }
        // Write until killed.
        futures_util::future::pending::<()>().await;
    });
}

fn run_child_and_kill(
    engine: EngineKind,
    round: usize,
    dir: &std::path::Path,
    kill_after: Duration,
) -> Vec<(u64, i64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_writer_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{engine}:{round}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait until the store is open, so the kill lands while writes are in flight (libtest prints
    // "test crash_writer_child ... " before the child's own output, on the same line).
    for line in lines.by_ref() {
        if line.unwrap().ends_with("READY") {
            break;
        }
    }
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What the child printed before it died is still in the pipe.
    lines
        .map_while(Result::ok)
        .filter_map(|l| {
            let mut f = l.strip_prefix("ACK ")?.split(' ');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

async fn verify(
    engine: EngineKind,
    dir: &std::path::Path,
    acked: &BTreeMap<(usize, u64), i64>,
    round_after: usize,
) {
    let store = common::open(dir, engine);
    let current = store.revision();
    // Every acknowledged write is there, at the revision it was acknowledged with.
    for (&(round, i), &revision) in acked {
        let (a, b) = pair_keys(round, i);
        for key in [a, b] {
            let kv = store.get(key.clone(), 0).await.unwrap().kv.unwrap_or_else(|| {
                panic!("{engine}: acknowledged write {key:?} (revision {revision}) was lost")
            });
            assert_eq!(kv.mod_revision, revision, "{engine}: {key:?}");
            assert_eq!(kv.value, value(round, i));
        }
    }
    // No half-applied transaction: keys come in pairs written at one revision.
    let all = store
        .range(RangeRequest {
            prefix: Bytes::from_static(b"/crash/"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut pairs: BTreeMap<Vec<u8>, Vec<i64>> = BTreeMap::new();
    for kv in &all.kvs {
        pairs
            .entry(kv.key[..kv.key.len() - 1].to_vec())
            .or_default()
            .push(kv.mod_revision);
    }
    for (stem, revs) in &pairs {
        assert!(
            revs.len() == 2 && revs[0] == revs[1],
            "{engine}: half-applied {}: {revs:?}",
            String::from_utf8_lossy(stem)
        );
    }
    // Revisions are gap-free and ordered: replaying the whole history sees 2, 3, ..., current in
    // order, each with the two events of its transaction.
    let mut watch = store
        .watch(WatchRequest {
            prefix: Bytes::new(),
            start_revision: 2,
        })
        .await
        .unwrap();
    let expected_events = 2 * (current - 1) as usize;
    let mut seen: Vec<i64> = Vec::with_capacity(expected_events);
    while seen.len() < expected_events {
        let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{engine}: history replay stalled after {} of {expected_events} events",
                    seen.len()
                )
            })
            .unwrap()
            .unwrap();
        seen.push(event.kv.mod_revision);
    }
    let mut expected_revisions: Vec<i64> = (2..=current).flat_map(|r| [r, r]).collect();
    expected_revisions.truncate(expected_events);
    assert_eq!(
        seen, expected_revisions,
        "{engine}: revisions have gaps or are out of order"
    );
    // The store takes writes again (one more pair, checked for atomicity by the next round).
    let (a, b) = pair_keys(round_after, u64::from(u32::MAX));
    let v = value(round_after, 0);
    let txn = Txn {
        compares: vec![],
        success: vec![
            TxnOp::Put {
                key: a,
                value: v.clone(),
            },
            TxnOp::Put { key: b, value: v },
        ],
        failure: vec![],
    };
    assert_eq!(store.txn(txn).await.unwrap().revision, current + 1);
}

fn crash_repeatedly(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<(usize, u64), i64> = BTreeMap::new();
    let mut rng = rand::rng();
    let mut total = 0;
    for round in 0..ROUNDS {
        let kill_after = Duration::from_millis(rng.random_range(5..400));
        let acks = run_child_and_kill(engine, round, dir.path(), kill_after);
        total += acks.len();
        acked.extend(acks.into_iter().map(|(i, rev)| ((round, i), rev)));
        common::runtime().block_on(verify(engine, dir.path(), &acked, round));
    }
    assert!(
        total > ROUNDS * 10,
        "{engine}: the child acknowledged only {total} writes; the test proved nothing"
    );
    eprintln!("{engine}: {ROUNDS} kills, {total} acknowledged transactions, none lost");
}

#[test]
fn redb_loses_no_acknowledged_write_when_killed() {
    crash_repeatedly(EngineKind::Redb);
}

#[test]
fn sled_loses_no_acknowledged_write_when_killed() {
    crash_repeatedly(EngineKind::Sled);
}
