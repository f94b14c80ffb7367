//! `EtcdStore` against a real etcd (Debian's `etcd-server`) on loopback: the `Store` trait's promises, as the
//! embedded store keeps them, hold on etcd too: revisions, conditional writes, paged and past reads, compaction's
//! `Compacted` with the right revision, and watches that replay, carry previous values and survive an etcd
//! restart without a gap or a repeat.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use embedded_store::{
    DeleteOutcome, EventKind, RangeRequest, Store, StoreError, Txn, TxnOp, WatchRequest, WriteOutcome,
};
use etcd_store::{EtcdConfig, EtcdStore};
use futures_util::StreamExt;

/// A one-member etcd on two loopback ports, killed on drop (its data goes with the temp dir).
struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file());
            found.expect("etcd is missing: apt-get install etcd-server (tests/run.sh does)")
        })
}

impl Etcd {
    fn start() -> Etcd {
        let mut etcd = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        etcd.launch();
        etcd
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// An etcd that serves clients over TLS only and asks them for a certificate signed by `tls.ca`.
    fn start_tls(tls: &Tls) -> Etcd {
        let mut etcd = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        etcd.launch_with(
            "https",
            &[
                "--client-cert-auth".into(),
                "--trusted-ca-file".into(),
                tls.path("ca.crt"),
                "--cert-file".into(),
                tls.path("server.crt"),
                "--key-file".into(),
                tls.path("server.key"),
            ],
        );
        etcd
    }

    fn launch(&mut self) {
        self.launch_with("http", &[]);
    }

    fn launch_with(&mut self, scheme: &str, extra: &[String]) {
        let url = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(etcd_bin())
            .args(extra)
            .args(["--name", "e0", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("e0={peer}"), "--log-level", "error"])
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn store(&self) -> EtcdStore {
        self.store_with(EtcdConfig {
            endpoints: vec![self.url()],
            ..EtcdConfig::default()
        })
        .await
    }

    async fn store_with(&self, config: EtcdConfig) -> EtcdStore {
        for _ in 0..100 {
            if let Ok(store) = EtcdStore::connect(&config).await {
                return store;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd did not start at {}", self.url());
    }
}

/// A CA, etcd's serving certificate for 127.0.0.1, and a client certificate, as PEM files in a temp dir.
struct Tls {
    dir: tempfile::TempDir,
}

impl Tls {
    fn new() -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        let mut ca = CertificateParams::new(vec![]).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        write("ca.crt", ca.self_signed(&ca_key).unwrap().pem());
        let issuer = Issuer::new(ca, ca_key);
        for (name, purpose) in [
            ("server", ExtendedKeyUsagePurpose::ServerAuth),
            ("client", ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let mut leaf =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
            leaf.extended_key_usages = vec![purpose];
            let key = KeyPair::generate().unwrap();
            write(
                &format!("{name}.crt"),
                leaf.signed_by(&key, &issuer).unwrap().pem(),
            );
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Tls { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn written(store: &EtcdStore, key: &str, value: &str) -> i64 {
    match store.put(b(key), b(value)).await.unwrap() {
        WriteOutcome::Written { revision, .. } => revision,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn revisions_and_conditional_writes_are_etcds() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let start = store.current_revision().await.unwrap();
    assert_eq!(start, 1, "a new etcd is at revision 1, as the embedded store");
    let r1 = match store.create(b("/registry/a"), b("1")).await.unwrap() {
        WriteOutcome::Written { revision, prev } => {
            assert_eq!(prev, None);
            revision
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(r1, 2);
    // A second create conflicts and shows what is there.
    match store.create(b("/registry/a"), b("2")).await.unwrap() {
        WriteOutcome::Conflict { current: Some(kv) } => {
            assert_eq!(kv.value, b("1"));
            assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
        }
        other => panic!("{other:?}"),
    }
    // Optimistic concurrency: the right revision wins, a stale one conflicts.
    let r2 = match store.update(b("/registry/a"), b("2"), r1).await.unwrap() {
        WriteOutcome::Written { revision, prev } => {
            assert_eq!(prev.unwrap().value, b("1"));
            revision
        }
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        store.update(b("/registry/a"), b("3"), r1).await.unwrap(),
        WriteOutcome::Conflict { current: Some(_) }
    ));
    let got = store.get(b("/registry/a"), 0).await.unwrap();
    let kv = got.kv.unwrap();
    assert_eq!((kv.mod_revision, kv.version, got.revision), (r2, 2, r2));
    // A past read sees the old value.
    assert_eq!(
        store.get(b("/registry/a"), r1).await.unwrap().kv.unwrap().value,
        b("1")
    );
    // Deletes: conditional, then plain, then of nothing.
    assert!(matches!(
        store.delete(b("/registry/a"), Some(r1)).await.unwrap(),
        DeleteOutcome::Conflict { .. }
    ));
    match store.delete(b("/registry/a"), Some(r2)).await.unwrap() {
        DeleteOutcome::Deleted { revision, prev } => {
            assert_eq!(revision, r2 + 1);
            assert_eq!(prev.value, b("2"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.delete(b("/registry/a"), None).await.unwrap(),
        DeleteOutcome::NotFound
    );
    // One transaction, one revision; the failure branch runs when a compare fails.
    let txn = Txn {
        compares: vec![embedded_store::Compare::absent(b("/registry/b"))],
        success: vec![
            TxnOp::Put {
                key: b("/registry/b"),
                value: b("x"),
            },
            TxnOp::Put {
                key: b("/registry/c"),
                value: b("y"),
            },
        ],
        failure: vec![TxnOp::Get {
            key: b("/registry/b"),
        }],
    };
    let first = store.txn(txn.clone()).await.unwrap();
    assert!(first.succeeded);
    let b_kv = store.get(b("/registry/b"), 0).await.unwrap().kv.unwrap();
    let c_kv = store.get(b("/registry/c"), 0).await.unwrap().kv.unwrap();
    assert_eq!(b_kv.mod_revision, c_kv.mod_revision);
    assert_eq!(b_kv.mod_revision, first.revision);
    let second = store.txn(txn).await.unwrap();
    assert!(!second.succeeded);
    assert_eq!(
        second.revision, first.revision,
        "a failed transaction writes nothing"
    );
    assert!(matches!(
        &second.results[..],
        [embedded_store::TxnOpResult::Get { kv: Some(kv) }] if kv.value == b("x")
    ));
}

#[tokio::test]
async fn bad_input_gets_the_same_errors_as_the_embedded_store() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    assert!(matches!(
        store.put(Bytes::new(), b("v")).await,
        Err(StoreError::EmptyKey)
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
    assert!(matches!(
        store.txn(dup).await,
        Err(StoreError::DuplicateKey { .. })
    ));
    // etcd takes 1.5 MiB requests by default: a larger value is refused by name, before it is sent.
    let big = Bytes::from(vec![b'x'; 2 * 1024 * 1024]);
    let error = store.put(b("/registry/big"), big).await.unwrap_err();
    assert!(matches!(error, StoreError::ValueTooLarge { .. }), "{error}");
    assert!(error.to_string().contains("/registry/big"), "{error}");
    let error = store
        .range(RangeRequest {
            prefix: b("/registry/"),
            start: Some(b("/other")),
            limit: 0,
            revision: 0,
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidRange(_)), "{error}");
    let future = store.current_revision().await.unwrap() + 100;
    match store.get(b("/registry/x"), future).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!(requested, future);
            assert_eq!(current, future - 100);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn ranges_page_and_read_everything_at_one_revision() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    // More keys than one internal page, in transactions of 100.
    for chunk in 0..25 {
        let txn = Txn {
            compares: vec![],
            success: (0..100)
                .map(|i| TxnOp::Put {
                    key: b(&format!("/registry/pods/p{:05}", chunk * 100 + i)),
                    value: b("v"),
                })
                .collect(),
            failure: vec![],
        };
        store.txn(txn).await.unwrap();
    }
    written(&store, "/registry/podsx", "outside the prefix").await;
    let all = store
        .range(RangeRequest {
            prefix: b("/registry/pods/"),
            start: None,
            limit: 0,
            revision: 0,
        })
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), 2500);
    assert_eq!(all.count, 2500);
    assert!(!all.more);
    assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key));
    // A page and its continuation, as the API server pages lists.
    let page = store
        .range(RangeRequest {
            prefix: b("/registry/pods/"),
            start: None,
            limit: 10,
            revision: 0,
        })
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), 10);
    assert!(page.more);
    assert_eq!(page.count, 2500);
    let mut next = page.kvs.last().unwrap().key.to_vec();
    next.push(0);
    let rest = store
        .range(RangeRequest {
            prefix: b("/registry/pods/"),
            start: Some(Bytes::from(next)),
            limit: 10,
            revision: page.revision,
        })
        .await
        .unwrap();
    assert_eq!(rest.kvs[0].key, b("/registry/pods/p00010"));
    assert_eq!(rest.count, 2490);
    assert_eq!(rest.revision, page.revision);
    assert_eq!(store.count(b("/registry/pods/")).await.unwrap().count, 2500);
}

#[tokio::test]
async fn compaction_reports_the_oldest_revision_left() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let mut revisions = vec![];
    for i in 0..20 {
        revisions.push(written(&store, "/registry/k", &i.to_string()).await);
    }
    assert_eq!(store.compact_revision().await.unwrap(), 1);
    store.compact(revisions[10]).await.unwrap();
    assert_eq!(store.compact_revision().await.unwrap(), revisions[10]);
    // Compacting to an older revision again is no error (another server may have compacted further).
    store.compact(revisions[5]).await.unwrap();
    match store.get(b("/registry/k"), revisions[3]).await {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => assert_eq!((requested, compact_revision), (revisions[3], revisions[10])),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .get(b("/registry/k"), revisions[10])
            .await
            .unwrap()
            .kv
            .unwrap()
            .value,
        b("10")
    );
    // A watch from before the compaction ends with `Compacted`.
    let mut watch = store
        .watch(WatchRequest {
            prefix: b("/registry/"),
            start_revision: revisions[2],
        })
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap();
    match ended {
        Some(Err(StoreError::Compacted { compact_revision, .. })) => {
            assert_eq!(compact_revision, revisions[10])
        }
        other => panic!("{other:?}"),
    }
    assert!(watch.next().await.is_none());
}

async fn next_event(watch: &mut embedded_store::WatchStream) -> embedded_store::WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("no watch event within 20 s")
        .expect("the watch ended")
        .unwrap()
}

#[tokio::test]
async fn watches_replay_carry_previous_values_and_survive_an_etcd_restart() {
    let mut etcd = Etcd::start();
    let store = etcd.store().await;
    let r1 = written(&store, "/registry/cm/a", "1").await;
    let r2 = written(&store, "/registry/cm/a", "2").await;
    written(&store, "/registry/other", "not watched").await;
    // Replay from r1, then live events.
    let mut watch = store
        .watch(WatchRequest {
            prefix: b("/registry/cm/"),
            start_revision: r1,
        })
        .await
        .unwrap();
    let first = next_event(&mut watch).await;
    assert_eq!(
        (first.kind, first.kv.mod_revision, first.prev_kv.clone()),
        (EventKind::Put, r1, None)
    );
    let second = next_event(&mut watch).await;
    assert_eq!(second.kv.mod_revision, r2);
    assert_eq!(second.prev_kv.unwrap().value, b("1"));
    let deleted = match store.delete(b("/registry/cm/a"), None).await.unwrap() {
        DeleteOutcome::Deleted { revision, .. } => revision,
        other => panic!("{other:?}"),
    };
    let third = next_event(&mut watch).await;
    assert_eq!(third.kind, EventKind::Delete);
    assert_eq!(third.kv.mod_revision, deleted);
    assert_eq!(third.prev_kv.unwrap().value, b("2"));

    // A watch "from the next change" sees only what comes after it.
    let mut live = store
        .watch(WatchRequest {
            prefix: b("/registry/cm/"),
            start_revision: 0,
        })
        .await
        .unwrap();

    // etcd goes away and comes back: the watches resume after the last event each delivered.
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.launch();
    let restarted = etcd.store().await;
    let r4 = written(&restarted, "/registry/cm/b", "after restart").await;
    let fourth = next_event(&mut watch).await;
    assert_eq!(
        (fourth.kv.mod_revision, fourth.kv.key.clone()),
        (r4, b("/registry/cm/b"))
    );
    let live_first = next_event(&mut live).await;
    assert_eq!(live_first.kv.mod_revision, r4);
    // Nothing repeated, nothing else pending.
    let quiet = tokio::time::timeout(Duration::from_millis(500), watch.next()).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");
}

#[tokio::test]
async fn tls_with_a_client_certificate_as_the_datastore_flags_give_it() {
    let tls = Tls::new();
    let etcd = Etcd::start_tls(&tls);
    let endpoint = format!("https://127.0.0.1:{}", etcd.client_port);
    let config = EtcdConfig {
        endpoints: EtcdConfig::parse_endpoints(&endpoint).unwrap(),
        ca_file: Some(tls.path("ca.crt").into()),
        cert_file: Some(tls.path("client.crt").into()),
        key_file: Some(tls.path("client.key").into()),
    };
    let store = etcd.store_with(config.clone()).await;
    let revision = written(&store, "/registry/over-tls", "v").await;
    assert_eq!(
        store
            .get(b("/registry/over-tls"), 0)
            .await
            .unwrap()
            .kv
            .unwrap()
            .mod_revision,
        revision
    );
    // Without the client certificate etcd turns the connection away, and the error says where it went.
    let anonymous = EtcdConfig {
        cert_file: None,
        key_file: None,
        ..config
    };
    let error = EtcdStore::connect(&anonymous).await.unwrap_err().to_string();
    assert!(error.contains(&endpoint), "{error}");
}
