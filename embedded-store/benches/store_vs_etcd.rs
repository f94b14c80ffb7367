//! Benchmark: the embedded store on each engine against a real etcd (Debian's `etcd-server`,
//! started here on 127.0.0.1 with its own temporary data directory), doing the same work:
//! durable creates/s with 1, 8 and 64 concurrent writers, a range over 10,000 keys, and watch
//! delivery latency to 100 watchers.
//!
//! Run: `cargo bench -p embedded-store --bench store_vs_etcd` (or `tests/bench/store.sh`).
//! Options: `--quick` (shorter runs), `--targets redb,sled,etcd`.
//!
//! A benchmark, not a test: it reports figures and checks nothing. SPECIFICATION.md holds the
//! promises these figures are compared with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use embedded_store::{
    CompactionPolicy, EmbeddedStore, EngineKind, RangeRequest, Store, StoreOptions, Txn, TxnOp, WatchRequest,
};
use futures_util::StreamExt;

const VALUE_BYTES: usize = 512;
const RANGE_KEYS: usize = 10_000;
const WATCHERS: usize = 100;
const RANGE_PAGE: usize = 5_000;

#[derive(Clone)]
enum Target {
    Embedded(Arc<EmbeddedStore>),
    Etcd(Vec<etcd_client::Client>),
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Embedded(s) => format!("bonsai/{}", s.engine_kind()),
            Target::Etcd(_) => "etcd".to_string(),
        }
    }

    /// A durable create, as the API server does it: only if the key does not exist.
    async fn create(&self, writer: usize, key: Vec<u8>, value: Vec<u8>) {
        match self {
            Target::Embedded(s) => {
                s.create(Bytes::from(key), Bytes::from(value)).await.unwrap();
            }
            Target::Etcd(clients) => {
                use etcd_client::{Compare, CompareOp, Txn, TxnOp};
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value, None)]);
                let mut kv = clients[writer % clients.len()].kv_client();
                kv.txn(txn).await.unwrap();
            }
        }
    }

    async fn load(&self, prefix: &str, n: usize) {
        // Batches of 100 puts per transaction, to fill quickly.
        for chunk in 0..n.div_ceil(100) {
            let keys: Vec<Vec<u8>> = (chunk * 100..((chunk + 1) * 100).min(n))
                .map(|i| format!("{prefix}{i:06}").into_bytes())
                .collect();
            match self {
                Target::Embedded(s) => {
                    let success = keys
                        .into_iter()
                        .map(|k| TxnOp::Put {
                            key: k.into(),
                            value: value().into(),
                        })
                        .collect();
                    s.txn(Txn {
                        compares: vec![],
                        success,
                        failure: vec![],
                    })
                    .await
                    .unwrap();
                }
                Target::Etcd(clients) => {
                    let ops: Vec<etcd_client::TxnOp> = keys
                        .into_iter()
                        .map(|k| etcd_client::TxnOp::put(k, value(), None))
                        .collect();
                    clients[0]
                        .kv_client()
                        .txn(etcd_client::Txn::new().and_then(ops))
                        .await
                        .unwrap();
                }
            }
        }
    }

    /// Reads every key under `prefix`, in pages of `RANGE_PAGE` (etcd-client 0.21 cannot raise
    /// gRPC's 4 MiB receive limit, and Kubernetes pages its lists too).
    async fn range_count(&self, prefix: &str) -> usize {
        let mut count = 0;
        let mut start: Option<Vec<u8>> = None;
        loop {
            let (keys, more) = match self {
                Target::Embedded(s) => {
                    let r = s
                        .range(RangeRequest {
                            prefix: Bytes::copy_from_slice(prefix.as_bytes()),
                            start: start.clone().map(Bytes::from),
                            limit: RANGE_PAGE,
                            revision: 0,
                        })
                        .await
                        .unwrap();
                    (r.kvs.iter().map(|kv| kv.key.to_vec()).collect::<Vec<_>>(), r.more)
                }
                Target::Etcd(clients) => {
                    let mut end = prefix.as_bytes().to_vec();
                    *end.last_mut().unwrap() += 1;
                    let from = start.clone().unwrap_or_else(|| prefix.as_bytes().to_vec());
                    let opts = etcd_client::GetOptions::new()
                        .with_range(end)
                        .with_limit(RANGE_PAGE as i64);
                    let r = clients[0].kv_client().get(from, Some(opts)).await.unwrap();
                    (
                        r.kvs().iter().map(|kv| kv.key().to_vec()).collect::<Vec<_>>(),
                        r.more(),
                    )
                }
            };
            count += keys.len();
            if !more {
                return count;
            }
            let mut next = keys.last().unwrap().clone();
            next.push(0);
            start = Some(next);
        }
    }

    /// A watcher that calls `seen(seq)` for every key `<prefix><seq>` it receives.
    async fn spawn_watcher(
        &self,
        prefix: &'static str,
        seen: impl Fn(usize) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let parse = move |key: &[u8]| {
            std::str::from_utf8(&key[prefix.len()..])
                .unwrap()
                .parse::<usize>()
                .unwrap()
        };
        match self {
            Target::Embedded(s) => {
                let mut w = s
                    .watch(WatchRequest {
                        prefix: Bytes::from_static(prefix.as_bytes()),
                        start_revision: 0,
                    })
                    .await
                    .unwrap();
                tokio::spawn(async move {
                    while let Some(Ok(e)) = w.next().await {
                        seen(parse(&e.kv.key));
                    }
                })
            }
            Target::Etcd(clients) => {
                let mut client = clients[0].clone();
                let mut w = client
                    .watch(prefix, Some(etcd_client::WatchOptions::new().with_prefix()))
                    .await
                    .unwrap();
                // The first message confirms the watch is registered.
                w.message().await.unwrap();
                tokio::spawn(async move {
                    while let Ok(Some(resp)) = w.message().await {
                        for e in resp.events() {
                            if let Some(kv) = e.kv() {
                                seen(parse(kv.key()));
                            }
                        }
                    }
                })
            }
        }
    }
}

fn value() -> Vec<u8> {
    vec![b'v'; VALUE_BYTES]
}

async fn creates_per_second(target: &Target, writers: usize, run_for: Duration, tag: &str) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (target, stop, done) = (target.clone(), stop.clone(), done.clone());
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    target
                        .create(w, format!("/bench/{tag}/{w}/{i}").into_bytes(), value())
                        .await;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Figures {
    name: String,
    creates: Vec<(usize, f64)>,
    range_ms: f64,
    /// From the write being issued to the event arriving: (p50, p99) in ms.
    watch_issued: (f64, f64),
    /// From the write being acknowledged to the event arriving (0 when the event came first).
    watch_acked: (f64, f64),
    disk_mb: Option<f64>,
    /// Peak resident memory of the process that holds the store (for bonsai, the whole benchmark
    /// process, so run one engine per process to compare).
    peak_rss_mb: Option<f64>,
}

/// VmHWM (peak RSS) of a process, in MB.
fn peak_rss_mb(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn measure(target: Target, quick: bool, pid: String) -> Figures {
    let run_for = Duration::from_millis(if quick { 1000 } else { 4000 });
    let mut creates = vec![];
    for writers in [1, 8, 64] {
        let rate = creates_per_second(&target, writers, run_for, &format!("c{writers}")).await;
        eprintln!("  {}: {writers:>2} writers: {rate:.0} creates/s", target.name());
        creates.push((writers, rate));
    }

    target.load("/range/", RANGE_KEYS).await;
    let mut times = vec![];
    for _ in 0..if quick { 5 } else { 20 } {
        let t = Instant::now();
        assert_eq!(target.range_count("/range/").await, RANGE_KEYS);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let range_ms = percentile(&times, 0.5);

    let writes = if quick { 300 } else { 1000 };
    let base = Instant::now();
    let issued: Arc<Vec<AtomicU64>> = Arc::new((0..writes).map(|_| AtomicU64::new(0)).collect());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..writes).map(|_| AtomicU64::new(0)).collect());
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..writes * WATCHERS).map(|_| AtomicU64::new(0)).collect());
    let mut watchers = vec![];
    for w in 0..WATCHERS {
        let received = received.clone();
        watchers.push(
            target
                .spawn_watcher("/watch/", move |seq| {
                    received[seq * WATCHERS + w].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                })
                .await,
        );
    }
    for seq in 0..writes {
        issued[seq].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        target
            .create(0, format!("/watch/{seq}").into_bytes(), value())
            .await;
        acked[seq].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    // Let the last events arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.iter().any(|r| r.load(Ordering::Relaxed) == 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let missing = received.iter().filter(|r| r.load(Ordering::Relaxed) == 0).count();
    if missing > 0 {
        eprintln!("  {}: {missing} watch events never arrived", target.name());
    }
    let mut from_issue = vec![];
    let mut from_ack = vec![];
    for seq in 0..writes {
        for w in 0..WATCHERS {
            let r = received[seq * WATCHERS + w].load(Ordering::Relaxed);
            if r == 0 {
                continue;
            }
            from_issue.push((r.saturating_sub(issued[seq].load(Ordering::Relaxed))) as f64 / 1e6);
            from_ack.push((r.saturating_sub(acked[seq].load(Ordering::Relaxed))) as f64 / 1e6);
        }
    }
    for w in watchers {
        w.abort();
    }
    from_issue.sort_by(f64::total_cmp);
    from_ack.sort_by(f64::total_cmp);
    let disk_mb = match &target {
        Target::Embedded(s) => Some(s.disk_bytes() as f64 / 1e6),
        Target::Etcd(_) => None,
    };
    Figures {
        name: target.name(),
        creates,
        range_ms,
        watch_issued: (percentile(&from_issue, 0.5), percentile(&from_issue, 0.99)),
        watch_acked: (percentile(&from_ack, 0.5), percentile(&from_ack, 0.99)),
        disk_mb,
        peak_rss_mb: peak_rss_mb(&pid),
    }
}

/// A real etcd on loopback, stopped (and its data removed) on drop.
struct EtcdProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_etcd() -> Option<PathBuf> {
    std::env::var_os("ETCD_BIN").map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| PathBuf::from(d).join("etcd"))
            .find(|p| p.is_file())
    })
}

async fn start_etcd() -> Option<EtcdProcess> {
    let Some(bin) = find_etcd() else {
        eprintln!("etcd not found (install Debian's etcd-server, or set ETCD_BIN); skipping etcd");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(bin)
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.path())
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args([
            "--initial-cluster",
            &format!("bench={peer_url}"),
            "--log-level",
            "error",
        ])
        .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let etcd = EtcdProcess {
        child,
        url,
        _dir: dir,
    };
    for _ in 0..100 {
        if let Ok(mut c) = etcd_client::Client::connect([&etcd.url], None).await
            && c.status().await.is_ok()
        {
            return Some(etcd);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcd did not start at {}", etcd.url);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let targets: Vec<String> = args
        .iter()
        .position(|a| a == "--targets")
        .and_then(|i| args.get(i + 1))
        .map_or("redb,sled,etcd", String::as_str)
        .split(',')
        .map(str::to_string)
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut results = vec![];
        for t in &targets {
            eprintln!("measuring {t} ...");
            let dir = tempfile::tempdir().unwrap();
            let mut etcd = None;
            let target = match t.as_str() {
                "etcd" => {
                    etcd = start_etcd().await;
                    let Some(e) = &etcd else { continue };
                    let mut clients = vec![];
                    for _ in 0..8 {
                        clients.push(etcd_client::Client::connect([&e.url], None).await.unwrap());
                    }
                    Target::Etcd(clients)
                }
                engine => {
                    let engine: EngineKind = engine.parse().unwrap();
                    let options = StoreOptions {
                        engine: Some(engine),
                        compaction: CompactionPolicy {
                            interval: Duration::from_secs(3600),
                            retain_revisions: 1000,
                        },
                        ..StoreOptions::default()
                    };
                    Target::Embedded(Arc::new(EmbeddedStore::open(dir.path(), options).unwrap()))
                }
            };
            let pid = etcd
                .as_ref()
                .map_or_else(|| "self".to_string(), |e| e.child.id().to_string());
            results.push(measure(target, quick, pid).await);
            drop(etcd);
        }
        print_report(&results);
    });
}

fn print_report(results: &[Figures]) {
    println!();
    println!(
        "| store | creates/s, 1 writer | 8 writers | 64 writers | range 10k keys, 2 pages (ms, p50) | watch p50 / p99 from write issued (ms) | from write acked (ms) | disk (MB) | peak RSS (MB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in results {
        let c: Vec<String> = f.creates.iter().map(|(_, r)| format!("{r:.0}")).collect();
        println!(
            "| {} | {} | {:.1} | {:.2} / {:.2} | {:.2} / {:.2} | {} | {} |",
            f.name,
            c.join(" | "),
            f.range_ms,
            f.watch_issued.0,
            f.watch_issued.1,
            f.watch_acked.0,
            f.watch_acked.1,
            f.disk_mb.map_or("-".into(), |d| format!("{d:.1}")),
            f.peak_rss_mb.map_or("-".into(), |m| format!("{m:.0}")),
        );
    }
    print_ratios(results);
}

fn print_ratios(results: &[Figures]) {
    if let Some(etcd) = results.iter().find(|f| f.name == "etcd") {
        let etcd64 = etcd.creates.last().map_or(f64::NAN, |c| c.1);
        for f in results.iter().filter(|f| f.name != "etcd") {
            let ours = f.creates.last().map_or(f64::NAN, |c| c.1);
            println!(
                "{}: {:.2}x etcd's durable creates/s at 64 writers",
                f.name,
                ours / etcd64
            );
        }
    }
}
