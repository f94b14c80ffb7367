//! API server benchmark client, run by `tests/bench/apiserver.sh` inside the server's network
//! namespace: creates, gets, lists and watch fan-out over HTTPS with the admin certificate.
//! Prints one Markdown table. A benchmark, not a test: it checks nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

const ADDR: &str = "127.0.0.1:6443";

fn tls(tls_dir: &str) -> tokio_rustls::TlsConnector {
    let read = |f: &str| std::fs::read(format!("{tls_dir}/{f}")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("server-ca.crt")) {
        roots.add(c.unwrap()).unwrap();
    }
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&read("client-admin.crt"))
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&read("client-admin.key")).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect(tls: &tokio_rustls::TlsConnector) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(ADDR).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = tls
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn call(
    s: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (u16, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", ADDR)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    s.ready().await.unwrap();
    let resp = s.send_request(req).await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.into_body().collect().await.unwrap().to_bytes())
}

fn cm(ns: &str, name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","namespace":"{ns}","labels":{{"app":"bench"}}}},"data":{{"key":"{}"}}}}"#,
        "v".repeat(200)
    )
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Creates `count` configmaps with `writers` connections; returns (per second, p50 ms, p99 ms).
async fn create_many(
    tls: &tokio_rustls::TlsConnector,
    ns: &str,
    from: usize,
    count: usize,
    writers: usize,
) -> (f64, f64, f64) {
    let started = Instant::now();
    let mut tasks = vec![];
    for w in 0..writers {
        let tls = tls.clone();
        let ns = ns.to_string();
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&tls).await;
            let mut lat = vec![];
            for i in (from + w..from + count).step_by(writers) {
                let t = Instant::now();
                let (code, body) = call(
                    &mut s,
                    "POST",
                    &format!("/api/v1/namespaces/{ns}/configmaps"),
                    Some(cm(&ns, &format!("cm-{i:06}"))),
                )
                .await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    (rate, pct(&mut lat, 0.5), pct(&mut lat, 0.99))
}

async fn list_ms(s: &mut SendRequest<Full<Bytes>>, ns: &str, expect: usize) -> f64 {
    let mut times = vec![];
    for _ in 0..10 {
        let t = Instant::now();
        let (code, body) = call(s, "GET", &format!("/api/v1/namespaces/{ns}/configmaps"), None).await;
        // The server's latency: until the whole body has arrived, not the client's own JSON parse.
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(code, 200);
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // Every namespace also holds the published `kube-root-ca.crt`.
        let own = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["metadata"]["name"] != "kube-root-ca.crt")
            .count();
        assert_eq!(own, expect);
    }
    pct(&mut times, 0.5)
}

#[tokio::main]
async fn main() {
    let tls_dir = std::env::args()
        .nth(1)
        .expect("usage: apiserver-bench <data-dir>/server/tls");
    let tls = tls(&tls_dir);
    let mut s = connect(&tls).await;
    for ns in ["bench", "watch"] {
        let body = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{ns}"}}}}"#);
        call(&mut s, "POST", "/api/v1/namespaces", Some(body)).await;
    }
    let mut rows = vec![];
    let (rate, p50, p99) = create_many(&tls, "bench", 0, 1000, 8).await;
    rows.push(format!(
        "| create, 8 connections (first 1,000) | {rate:.0}/s | {p50:.2} | {p99:.2} |"
    ));
    let mut gets = vec![];
    let t = Instant::now();
    for i in 0..2000 {
        let t = Instant::now();
        let (code, _) = call(
            &mut s,
            "GET",
            &format!("/api/v1/namespaces/bench/configmaps/cm-{:06}", (i * 7) % 1000),
            None,
        )
        .await;
        assert_eq!(code, 200);
        gets.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let rate = 2000.0 / t.elapsed().as_secs_f64();
    rows.push(format!(
        "| get, 1 connection | {rate:.0}/s | {:.2} | {:.2} |",
        pct(&mut gets, 0.5),
        pct(&mut gets, 0.99)
    ));
    rows.push(format!(
        "| list 1,000 configmaps | - | {:.1} | - |",
        list_ms(&mut s, "bench", 1000).await
    ));
    let (rate, p50, p99) = create_many(&tls, "bench", 1000, 9000, 8).await;
    rows.push(format!(
        "| create, 8 connections (to 10,000) | {rate:.0}/s | {p50:.2} | {p99:.2} |"
    ));
    // A fresh connection: the server drops one that sent no request for 30 s (its header read timeout), and the
    // creates may take longer than that.
    let mut s = connect(&tls).await;
    rows.push(format!(
        "| list 10,000 configmaps | - | {:.1} | - |",
        list_ms(&mut s, "bench", 10000).await
    ));

    // Watch fan-out: 100 watchers, 200 creates; latency from a create being sent to each watcher
    // seeing it.
    let base = Instant::now();
    let sent: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..200).map(|_| Default::default()).collect());
    let mut watchers = vec![];
    for _ in 0..100 {
        let tls = tls.clone();
        let sent = sent.clone();
        let mut w = connect(&tls).await;
        let req = Request::builder()
            .uri("/api/v1/namespaces/watch/configmaps?watch=true&timeoutSeconds=60")
            .header("host", ADDR)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = w.send_request(req).await.unwrap();
        watchers.push(tokio::spawn(async move {
            let mut body = resp.into_body();
            let mut lat = vec![];
            let mut buf = Vec::new();
            while lat.len() < 200 {
                let Some(Ok(frame)) = body.frame().await else {
                    break;
                };
                let Ok(data) = frame.into_data() else { continue };
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let now = base.elapsed().as_nanos() as u64;
                    let event: serde_json::Value = serde_json::from_slice(&line).unwrap();
                    let name = event["object"]["metadata"]["name"].as_str().unwrap_or("w-0");
                    let i: usize = name.trim_start_matches("w-").parse().unwrap_or(0);
                    let at = sent[i].load(std::sync::atomic::Ordering::SeqCst);
                    lat.push(now.saturating_sub(at) as f64 / 1e6);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The creates' own round trips (a durable commit each), to tell a slow disk from slow fan-out.
    let mut commits = vec![];
    for i in 0..200 {
        let started = Instant::now();
        sent[i].store(
            base.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
        let (code, _) = call(
            &mut s,
            "POST",
            "/api/v1/namespaces/watch/configmaps",
            Some(cm("watch", &format!("w-{i}"))),
        )
        .await;
        assert_eq!(code, 201);
        commits.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let mut lat = vec![];
    for w in watchers {
        lat.extend(
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    rows.push(format!(
        "| watch fan-out to 100 watchers ({} events) | - | {:.2} | {:.2} |",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    ));
    rows.push(format!(
        "| (the 200 creates themselves, one connection) | - | {:.2} | {:.2} (max {:.2}) |",
        pct(&mut commits, 0.5),
        pct(&mut commits, 0.99),
        commits.iter().cloned().fold(0.0, f64::max)
    ));
    println!("| operation | rate | p50 (ms) | p99 (ms) |\n|---|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}
