//! Property test: random operation sequences against the store and against a naive model of
//! etcd's semantics (a full snapshot per revision), on both engines, with reopens in between.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use embedded_store::{
    Compare, CompareOp, CompareTarget, EmbeddedStore, EngineKind, EventKind, KeyValue, RangeRequest, Store,
    StoreError, Txn, TxnOp, TxnOpResult, TxnResponse, WatchEvent, WatchRequest,
};
use futures_util::StreamExt;
use proptest::prelude::*;

const KEYS: [&[u8]; 6] = [b"a", b"ab", b"b", b"b\0", b"c/x", b"c/y"];
const PREFIXES: [&[u8]; 5] = [b"", b"a", b"b", b"c/", b"zz"];

type State = BTreeMap<Bytes, KeyValue>;

struct Model {
    states: Vec<(i64, State)>,
    events: Vec<WatchEvent>,
    compact: i64,
}

impl Model {
    fn new() -> Self {
        Model {
            states: vec![(1, State::new())],
            events: vec![],
            compact: 0,
        }
    }
    fn rev(&self) -> i64 {
        self.states.last().unwrap().0
    }
    fn at(&self, rev: i64) -> &State {
        &self.states.iter().rev().find(|(r, _)| *r <= rev).unwrap().1
    }
    fn holds(c: &Compare, kv: Option<&KeyValue>) -> bool {
        let (actual, expected): (Vec<u8>, Vec<u8>) = match &c.target {
            CompareTarget::ModRevision(r) => (num(kv.map_or(0, |k| k.mod_revision)), num(*r)),
            CompareTarget::CreateRevision(r) => (num(kv.map_or(0, |k| k.create_revision)), num(*r)),
            CompareTarget::Version(v) => (num(kv.map_or(0, |k| k.version)), num(*v)),
            CompareTarget::Value(v) => match kv {
                Some(kv) => (kv.value.to_vec(), v.to_vec()),
                None => return false,
            },
        };
        match c.op {
            CompareOp::Equal => actual == expected,
            CompareOp::NotEqual => actual != expected,
            CompareOp::Greater => actual > expected,
            CompareOp::Less => actual < expected,
        }
    }
    fn txn(&mut self, txn: &Txn) -> TxnResponse {
        let mut state = self.at(self.rev()).clone();
        let succeeded = txn.compares.iter().all(|c| Self::holds(c, state.get(&c.key)));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let rev = self.rev() + 1;
        let mut changed = false;
        let mut results = vec![];
        for op in ops {
            match op {
                TxnOp::Get { key } => results.push(TxnOpResult::Get {
                    kv: state.get(key).cloned(),
                }),
                TxnOp::Put { key, value } => {
                    let prev = state.get(key).cloned();
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                    };
                    state.insert(key.clone(), kv.clone());
                    self.events.push(WatchEvent {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: prev.clone(),
                    });
                    results.push(TxnOpResult::Put { prev });
                    changed = true;
                }
                TxnOp::Delete { key } => {
                    let prev = state.remove(key);
                    if prev.is_some() {
                        let kv = KeyValue {
                            key: key.clone(),
                            value: Bytes::new(),
                            create_revision: 0,
                            mod_revision: rev,
                            version: 0,
                        };
                        self.events.push(WatchEvent {
                            kind: EventKind::Delete,
                            kv,
                            prev_kv: prev.clone(),
                        });
                        changed = true;
                    }
                    results.push(TxnOpResult::Delete { prev });
                }
            }
        }
        if changed {
            self.states.push((rev, state));
        }
        TxnResponse {
            succeeded,
            revision: self.rev(),
            results,
        }
    }
}

fn num(n: i64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

#[derive(Clone, Debug)]
enum Op {
    Put(usize, u8),
    Create(usize, u8),
    /// Update with the current mod revision (`true`) or a stale one.
    Update(usize, u8, bool),
    Delete(usize, Option<bool>),
    PairTxn {
        guard: usize,
        guard_by_value: bool,
        a: usize,
        b: usize,
        v: u8,
    },
    Range {
        prefix: usize,
        start: Option<usize>,
        limit: usize,
        back: i64,
    },
    Get(usize, i64),
    Compact(i64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let k = || 0..KEYS.len();
    prop_oneof![
        4 => (k(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (k(), any::<u8>()).prop_map(|(k, v)| Op::Create(k, v)),
        3 => (k(), any::<u8>(), any::<bool>()).prop_map(|(k, v, c)| Op::Update(k, v, c)),
        2 => (k(), proptest::option::of(any::<bool>())).prop_map(|(k, c)| Op::Delete(k, c)),
        2 => (k(), any::<bool>(), k(), k(), any::<u8>()).prop_map(|(guard, guard_by_value, a, b, v)| Op::PairTxn { guard, guard_by_value, a, b, v }),
        3 => (0..PREFIXES.len(), proptest::option::of(k()), 0usize..4, 0i64..6).prop_map(|(prefix, start, limit, back)| Op::Range { prefix, start, limit, back }),
        2 => (k(), 0i64..6).prop_map(|(k, back)| Op::Get(k, back)),
        1 => (0i64..8).prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

fn key(i: usize) -> Bytes {
    Bytes::from_static(KEYS[i])
}

fn val(v: u8) -> Bytes {
    Bytes::from(vec![v; 1 + v as usize % 5])
}

async fn check_read_error(err: StoreError, model: &Model, at: i64) {
    match err {
        StoreError::Compacted { compact_revision, .. } => {
            assert!(
                at < model.compact,
                "unexpected Compacted at {at} (compact {})",
                model.compact
            );
            assert_eq!(compact_revision, model.compact);
        }
        other => panic!("unexpected read error at {at}: {other}"),
    }
}

async fn run(engine: EngineKind, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Some(common::open(dir.path(), engine));
    let mut model = Model::new();
    for op in ops {
        let s: &EmbeddedStore = store.as_ref().unwrap();
        let txn = match &op {
            Op::Put(k, v) => Some(Txn {
                compares: vec![],
                success: vec![TxnOp::Put {
                    key: key(*k),
                    value: val(*v),
                }],
                failure: vec![],
            }),
            Op::Create(k, v) => Some(Txn {
                compares: vec![Compare::absent(key(*k))],
                success: vec![TxnOp::Put {
                    key: key(*k),
                    value: val(*v),
                }],
                failure: vec![TxnOp::Get { key: key(*k) }],
            }),
            Op::Update(k, v, current) => {
                let m = model
                    .at(model.rev())
                    .get(&key(*k))
                    .map_or(0, |kv| kv.mod_revision);
                let expected = if *current { m } else { m + 1 };
                Some(Txn {
                    compares: vec![Compare::mod_revision_is(key(*k), expected)],
                    success: vec![TxnOp::Put {
                        key: key(*k),
                        value: val(*v),
                    }],
                    failure: vec![TxnOp::Get { key: key(*k) }],
                })
            }
            Op::Delete(k, cond) => {
                let m = model
                    .at(model.rev())
                    .get(&key(*k))
                    .map_or(0, |kv| kv.mod_revision);
                let compares = match cond {
                    None => vec![],
                    Some(current) => vec![Compare::mod_revision_is(
                        key(*k),
                        if *current { m } else { m + 3 },
                    )],
                };
                Some(Txn {
                    compares,
                    success: vec![TxnOp::Delete { key: key(*k) }],
                    failure: vec![TxnOp::Get { key: key(*k) }],
                })
            }
            Op::PairTxn {
                guard,
                guard_by_value,
                a,
                b,
                v,
            } => {
                let compare = if *guard_by_value {
                    Compare {
                        key: key(*guard),
                        op: CompareOp::Greater,
                        target: CompareTarget::Value(val(*v)),
                    }
                } else {
                    Compare {
                        key: key(*guard),
                        op: CompareOp::Less,
                        target: CompareTarget::Version(2),
                    }
                };
                let mut success = vec![TxnOp::Put {
                    key: key(*a),
                    value: val(*v),
                }];
                if a != b {
                    success.push(TxnOp::Delete { key: key(*b) });
                }
                success.push(TxnOp::Get { key: key(*guard) });
                Some(Txn {
                    compares: vec![compare],
                    success,
                    failure: vec![TxnOp::Get { key: key(*a) }],
                })
            }
            _ => None,
        };
        if let Some(txn) = txn {
            let expected = model.txn(&txn);
            let got = s.txn(txn.clone()).await.unwrap();
            assert_eq!(got, expected, "txn {txn:?}");
            continue;
        }
        match op {
            Op::Range {
                prefix,
                start,
                limit,
                back,
            } => {
                let at = (model.rev() - back).max(1);
                let prefix = Bytes::from_static(PREFIXES[prefix]);
                let start = start.map(key).filter(|s| s.starts_with(&prefix));
                let req = RangeRequest {
                    prefix: prefix.clone(),
                    start: start.clone(),
                    limit,
                    revision: at,
                };
                match s.range(req).await {
                    Ok(got) => {
                        let all: Vec<KeyValue> = model
                            .at(at)
                            .values()
                            .filter(|kv| {
                                kv.key.starts_with(&prefix) && start.as_ref().is_none_or(|s| kv.key >= *s)
                            })
                            .cloned()
                            .collect();
                        let shown = if limit == 0 {
                            all.len()
                        } else {
                            limit.min(all.len())
                        };
                        assert_eq!(got.kvs, all[..shown].to_vec(), "range at {at}");
                        assert_eq!(got.count, all.len() as i64);
                        assert_eq!(got.more, shown < all.len());
                        assert_eq!(got.revision, at);
                    }
                    Err(e) => check_read_error(e, &model, at).await,
                }
            }
            Op::Get(k, back) => {
                let at = (model.rev() - back).max(1);
                match s.get(key(k), at).await {
                    Ok(got) => assert_eq!(got.kv.as_ref(), model.at(at).get(&key(k)), "get {k} at {at}"),
                    Err(e) => check_read_error(e, &model, at).await,
                }
            }
            Op::Compact(back) => {
                let target = model.rev() - back;
                let result = s.compact(target).await;
                if target <= model.compact {
                    assert!(matches!(result, Err(StoreError::Compacted { .. })), "{result:?}");
                } else {
                    result.unwrap();
                    model.compact = target;
                }
            }
            Op::Reopen => {
                drop(store.take());
                store = Some(common::open(dir.path(), engine));
                assert_eq!(store.as_ref().unwrap().revision(), model.rev());
            }
            _ => unreachable!(),
        }
    }
    // Every event since the compact revision, replayed by a watch, in order, with previous values.
    let s = store.as_ref().unwrap();
    let from = model.compact.max(2);
    let expected: Vec<WatchEvent> = model
        .events
        .iter()
        .filter(|e| e.revision() >= from)
        .cloned()
        .collect();
    if !expected.is_empty() {
        let mut watch = s
            .watch(WatchRequest {
                prefix: Bytes::new(),
                start_revision: from,
            })
            .await
            .unwrap();
        let mut got = vec![];
        while got.len() < expected.len() {
            let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .expect("watch stalled");
            got.push(next.unwrap().unwrap());
        }
        assert_eq!(got, expected);
    }
    // A final reopen keeps everything.
    drop(store);
    let s = common::open(dir.path(), engine);
    let all = s.range(RangeRequest::default()).await.unwrap();
    assert_eq!(
        all.kvs,
        model.at(model.rev()).values().cloned().collect::<Vec<_>>()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn redb_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        common::runtime().block_on(run(EngineKind::Redb, ops));
    }

    #[test]
    fn sled_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        common::runtime().block_on(run(EngineKind::Sled, ops));
    }
}
