//! The cluster store on a real etcd v3 cluster (`--datastore-endpoint`), for clusters that outgrow one box.
//!
//! bonsai's `Store` trait is shaped after etcd's API, so this is a translation: a range is an etcd range over the
//! prefix, a transaction an etcd transaction, a watch an etcd watch with previous values. Revisions are etcd's own,
//! 1:1, so resourceVersions, watch resumption and `410 Gone` after compaction behave as with the embedded store.
//!
//! What etcd-client does not do is done here: its watch streams end when the connection drops, so a watch
//! remembers the last revision it delivered and re-watches from the next one; its gRPC receive limit (4 MiB) would
//! fail a large list, so unlimited ranges are read in pages at one revision.
//!
//! **Architecture Invariant:** like the embedded store, this crate knows nothing of HTTP or Kubernetes objects; it
//! stores bytes under keys.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use embedded_store::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, MAX_KEY_BYTES, RangeRequest, RangeResponse,
    Revision, Store, StoreError, Txn, TxnOp, TxnOpResult, TxnResponse, WatchEvent, WatchRequest, WatchStream,
};
use futures_util::StreamExt;

/// etcd's default `--max-request-bytes` (1.5 MiB): it refuses larger requests.
pub const ETCD_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Keys per page when a range asks for everything.
const PAGE: i64 = 1000;

/// Replies may be as large as the largest value etcd takes, times a page: raise gRPC's 4 MiB default.
const MAX_DECODING_BYTES: usize = 256 * 1024 * 1024;

/// How long a watch waits before it re-watches after its stream broke.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum EtcdConfigError {
    #[error("--datastore-endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--datastore-certfile and --datastore-keyfile go together")]
    HalfIdentity,
    #[error("cannot reach etcd at {endpoints}: {detail}")]
    Connect { endpoints: String, detail: String },
}

/// Where etcd is and how to authenticate to it, as k3s's `--datastore-*` flags give it.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    /// `http(s)://host:port` URLs, comma separated on the command line.
    pub endpoints: Vec<String>,
    /// The CA that signed etcd's serving certificates (`--datastore-cafile`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (`--datastore-certfile`, `--datastore-keyfile`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl EtcdConfig {
    /// Parses `--datastore-endpoint`: `https://h1:2379,https://h2:2379` (k3s also accepts an `etcd://` scheme,
    /// meaning plain HTTP here).
    pub fn parse_endpoints(value: &str) -> Result<Vec<String>, EtcdConfigError> {
        let bad = |why: &str| EtcdConfigError::Endpoint(value.to_string(), why.to_string());
        let mut endpoints = Vec::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (scheme, rest) = part
                .split_once("://")
                .ok_or_else(|| bad("each endpoint is a URL such as https://10.0.0.5:2379"))?;
            let scheme = match scheme {
                "http" | "etcd" => "http",
                "https" => "https",
                other => {
                    return Err(bad(&format!(
                        "scheme {other:?} is not etcd's: use http:// or https:// (other databases are not supported)"
                    )));
                }
            };
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(bad(&format!("{part:?} names no host:port")));
            }
            let authority = if authority
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                authority.to_string()
            } else {
                format!("{authority}:2379")
            };
            endpoints.push(format!("{scheme}://{authority}"));
        }
        if endpoints.is_empty() {
            return Err(bad("no endpoint given"));
        }
        Ok(endpoints)
    }

    fn read(path: &PathBuf) -> Result<Vec<u8>, EtcdConfigError> {
        std::fs::read(path).map_err(|source| EtcdConfigError::Read {
            path: path.clone(),
            source,
        })
    }

    fn connect_options(&self) -> Result<etcd_client::ConnectOptions, EtcdConfigError> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let tls_wanted = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if tls_wanted || self.ca_file.is_some() || self.cert_file.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca_file {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(Self::read(ca)?));
            }
            match (&self.cert_file, &self.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        Self::read(cert)?,
                        Self::read(key)?,
                    ));
                }
                (None, None) => {}
                _ => return Err(EtcdConfigError::HalfIdentity),
            }
            options = options.with_tls(tls);
        }
        Ok(options)
    }
}

/// The `Store` on etcd. Cheap to clone: etcd-client's client is a handle on one balanced channel.
#[derive(Clone)]
pub struct EtcdStore {
    client: etcd_client::Client,
    endpoints: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers (a status call), so that a wrong endpoint fails at start with a
    /// message naming it.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, EtcdConfigError> {
        let endpoints = config.endpoints.join(",");
        let failed = |e: etcd_client::Error| EtcdConfigError::Connect {
            endpoints: endpoints.clone(),
            detail: e.to_string(),
        };
        let options = config.connect_options()?;
        let client = tokio::time::timeout(
            Duration::from_secs(10),
            etcd_client::Client::connect(&config.endpoints, Some(options)),
        )
        .await
        .map_err(|_| EtcdConfigError::Connect {
            endpoints: endpoints.clone(),
            detail: "no answer within 10 s".into(),
        })?
        .map_err(failed)?;
        // A member that is down fails the call; the balanced channel then sends it to another.
        let status = retrying(Retry::Idempotent, || {
            let mut maintenance = client.maintenance_client();
            async move { maintenance.status().await }
        });
        tokio::time::timeout(Duration::from_secs(10), status)
            .await
            .map_err(|_| EtcdConfigError::Connect {
                endpoints: endpoints.clone(),
                detail: "status: no answer within 10 s".into(),
            })?
            .map_err(failed)?;
        Ok(EtcdStore { client, endpoints })
    }

    /// Whether a read at `revision` is still served (not compacted).
    async fn readable_at(&self, revision: Revision) -> Result<bool, StoreError> {
        let options = etcd_client::GetOptions::new()
            .with_count_only()
            .with_revision(revision);
        match retrying(Retry::Idempotent, || {
            let (mut kv, options) = (self.kv(), options.clone());
            async move { kv.get(b"\0".to_vec(), Some(options)).await }
        })
        .await
        {
            Ok(_) => Ok(true),
            Err(e) => match store_error(e, revision) {
                StoreError::Compacted { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// etcd's errors name neither its compaction point nor its revision: fill them in.
    async fn completed(&self, error: StoreError) -> StoreError {
        match error {
            StoreError::Compacted { requested, .. } => match self.compact_revision().await {
                Ok(compact_revision) => StoreError::Compacted {
                    requested,
                    compact_revision,
                },
                Err(e) => e,
            },
            StoreError::FutureRevision { requested, .. } => match self.current_revision().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(e) => e,
            },
            other => other,
        }
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_DECODING_BYTES)
    }

    /// One page of `[from, end)` at `revision` (0: now).
    async fn range_page(
        &self,
        from: Vec<u8>,
        end: Vec<u8>,
        limit: i64,
        revision: Revision,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        let mut options = etcd_client::GetOptions::new().with_range(end).with_limit(limit);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        match retrying(Retry::Idempotent, || {
            let (mut kv, from, options) = (self.kv(), from.clone(), options.clone());
            async move { kv.get(from, Some(options)).await }
        })
        .await
        {
            Ok(response) => Ok(response),
            Err(e) => Err(self.completed(store_error(e, revision)).await),
        }
    }
}

/// The first key after every key starting with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(kv.key()),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Failed("etcd's reply carries no header".into()))
}

/// etcd's refusals, told apart by their messages (etcd-client passes them as gRPC statuses). The revisions they
/// do not carry are filled in by `EtcdStore::completed`.
fn store_error(error: etcd_client::Error, requested: Revision) -> StoreError {
    let text = error.to_string();
    if text.contains("required revision has been compacted") {
        StoreError::Compacted {
            requested,
            compact_revision: 0,
        }
    } else if text.contains("required revision is a future revision") {
        StoreError::FutureRevision {
            requested,
            current: 0,
        }
    } else if unavailable(&error) {
        StoreError::Unavailable(format!("etcd: {text}"))
    } else {
        StoreError::Failed(format!("etcd: {text}"))
    }
}

/// The request never reached a member (connection refused, member gone): safe to send again, to another.
fn unreachable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && status.message().contains("connect")
        }
        _ => false,
    }
}

/// etcd could not serve the request now (no member reached, no leader, the leader changed): a 503 for the
/// client, which may try again.
fn unavailable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

/// How many times a request is sent again (the balanced channel then picks another member).
const RETRIES: u32 = 10;

/// Whether a request may be sent again after etcd failed it.
#[derive(Clone, Copy)]
enum Retry {
    /// Reads, watches and compaction: whenever etcd was unavailable.
    Idempotent,
    /// Writes: only when no member was reached, since after "leader changed" the first attempt may have been
    /// applied (etcd's own client retries writes only then, too).
    Unsent,
}

/// Sends `call` until etcd serves it, at most `RETRIES` more times.
async fn retrying<T, F, Fut>(retry: Retry, mut call: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e)
                if attempt < RETRIES
                    && match retry {
                        Retry::Idempotent => unavailable(&e),
                        Retry::Unsent => unreachable(&e),
                    } =>
            {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "etcd did not serve a request; sending it again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

fn compare(c: &Compare) -> etcd_client::Compare {
    let op = match c.op {
        CompareOp::Equal => etcd_client::CompareOp::Equal,
        CompareOp::NotEqual => etcd_client::CompareOp::NotEqual,
        CompareOp::Greater => etcd_client::CompareOp::Greater,
        CompareOp::Less => etcd_client::CompareOp::Less,
    };
    let key = c.key.to_vec();
    match &c.target {
        CompareTarget::ModRevision(r) => etcd_client::Compare::mod_revision(key, op, *r),
        CompareTarget::CreateRevision(r) => etcd_client::Compare::create_revision(key, op, *r),
        CompareTarget::Version(v) => etcd_client::Compare::version(key, op, *v),
        CompareTarget::Value(v) => etcd_client::Compare::value(key, op, v.to_vec()),
    }
}

fn txn_op(op: &TxnOp) -> etcd_client::TxnOp {
    match op {
        TxnOp::Put { key, value } => etcd_client::TxnOp::put(
            key.to_vec(),
            value.to_vec(),
            Some(etcd_client::PutOptions::new().with_prev_key()),
        ),
        TxnOp::Delete { key } => etcd_client::TxnOp::delete(
            key.to_vec(),
            Some(etcd_client::DeleteOptions::new().with_prev_key()),
        ),
        TxnOp::Get { key } => etcd_client::TxnOp::get(key.to_vec(), None),
    }
}

fn op_result(op: &TxnOp, response: &etcd_client::TxnOpResponse) -> Result<TxnOpResult, StoreError> {
    use etcd_client::TxnOpResponse as R;
    match (op, response) {
        (TxnOp::Put { .. }, R::Put(put)) => Ok(TxnOpResult::Put {
            prev: put.prev_key().map(key_value),
        }),
        (TxnOp::Delete { .. }, R::Delete(delete)) => Ok(TxnOpResult::Delete {
            prev: delete.prev_kvs().first().map(key_value),
        }),
        (TxnOp::Get { key }, R::Get(get)) => Ok(TxnOpResult::Get {
            kv: get
                .kvs()
                .iter()
                .find(|kv| kv.key() == key.as_ref())
                .map(key_value),
        }),
        (op, other) => Err(StoreError::Failed(format!("etcd answered {other:?} to {op:?}"))),
    }
}

/// etcd refuses requests over `--max-request-bytes` with a terse message: name the key instead.
fn check_request_size(txn: &Txn) -> Result<(), StoreError> {
    for op in txn.success.iter().chain(&txn.failure) {
        if let TxnOp::Put { key, value } = op
            && key.len() + value.len() > ETCD_MAX_REQUEST_BYTES
        {
            return Err(StoreError::ValueTooLarge {
                key: String::from_utf8_lossy(&key[..key.len().min(200)]).into_owned(),
                len: value.len(),
                max: ETCD_MAX_REQUEST_BYTES,
            });
        }
    }
    Ok(())
}

#[async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let options = etcd_client::GetOptions::new().with_count_only();
        let response = retrying(Retry::Idempotent, || {
            let (mut kv, options) = (self.kv(), options.clone());
            async move { kv.get(b"\0".to_vec(), Some(options)).await }
        })
        .await
        .map_err(|e| store_error(e, 0))?;
        header_revision(response.header())
    }

    /// etcd keeps its compaction point to itself: find the oldest revision a read still gets (reads below the
    /// compaction point fail), by bisection with count-only reads (a few dozen round trips at most).
    async fn compact_revision(&self) -> Result<Revision, StoreError> {
        let current = self.current_revision().await?;
        let (mut readable, mut gone) = (current, 0);
        while readable - gone > 1 {
            let middle = gone + (readable - gone) / 2;
            if self.readable_at(middle).await? {
                readable = middle;
            } else {
                gone = middle;
            }
        }
        Ok(readable.max(1))
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        if request.prefix.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        if request.prefix.len() > MAX_KEY_BYTES {
            return Err(StoreError::KeyTooLarge {
                len: request.prefix.len(),
                max: MAX_KEY_BYTES,
            });
        }
        let from = match &request.start {
            Some(start) if !start.starts_with(&request.prefix) => {
                return Err(StoreError::InvalidRange(format!(
                    "start {:?} is outside prefix {:?}",
                    String::from_utf8_lossy(start),
                    String::from_utf8_lossy(&request.prefix)
                )));
            }
            Some(start) => start.to_vec(),
            None => request.prefix.to_vec(),
        };
        let end = prefix_end(&request.prefix);
        if request.limit > 0 {
            let response = self
                .range_page(from, end, request.limit as i64, request.revision)
                .await?;
            return Ok(RangeResponse {
                kvs: response.kvs().iter().map(key_value).collect(),
                more: response.more(),
                count: response.count(),
                revision: header_revision(response.header())?,
            });
        }
        // Everything: pages, all at the revision of the first one.
        let first = self.range_page(from, end.clone(), PAGE, request.revision).await?;
        let revision = match request.revision {
            0 => header_revision(first.header())?,
            r => r,
        };
        let count = first.count();
        let mut kvs: Vec<KeyValue> = first.kvs().iter().map(key_value).collect();
        let mut more = first.more();
        while more {
            let Some(last) = kvs.last() else { break };
            let mut next = last.key.to_vec();
            next.push(0);
            let page = self.range_page(next, end.clone(), PAGE, revision).await?;
            more = page.more();
            kvs.extend(page.kvs().iter().map(key_value));
        }
        Ok(RangeResponse {
            kvs,
            more: false,
            count,
            revision,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        embedded_store::validate_txn(&txn)?;
        check_request_size(&txn)?;
        let request = etcd_client::Txn::new()
            .when(txn.compares.iter().map(compare).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(txn_op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(txn_op).collect::<Vec<_>>());
        let response = retrying(Retry::Unsent, || {
            let (mut kv, request) = (self.kv(), request.clone());
            async move { kv.txn(request).await }
        })
        .await
        .map_err(|e| store_error(e, 0))?;
        let branch = if response.succeeded() {
            &txn.success
        } else {
            &txn.failure
        };
        let results = branch
            .iter()
            .zip(response.op_responses().iter())
            .map(|(op, r)| op_result(op, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TxnResponse {
            succeeded: response.succeeded(),
            revision: header_revision(response.header())?,
            results,
        })
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream, StoreError> {
        if request.prefix.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        // Where the stream continues from: the revision after the last event delivered. For "from the next
        // change", that is the revision after the current one.
        let next = match request.start_revision {
            0 => self.current_revision().await? + 1,
            r => r,
        };
        let first = open_watch(&self.client, &request.prefix, next).await?;
        let state = WatchState {
            client: self.client.clone(),
            prefix: request.prefix,
            next,
            stream: Some(first),
            pending: std::collections::VecDeque::new(),
            done: false,
        };
        Ok(futures_util::stream::unfold(state, next_event).boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match retrying(Retry::Idempotent, || {
            let mut kv = self.kv();
            async move { kv.compact(revision, None).await }
        })
        .await
        {
            Ok(_) => Ok(()),
            // Another server compacted further already: the history is as short as asked.
            Err(e) if e.to_string().contains("required revision has been compacted") => Ok(()),
            Err(e) => Err(store_error(e, revision)),
        }
    }
}

impl EtcdStore {
    /// Compacts etcd's history every `interval`, keeping the last `retain` revisions, as kube-apiserver's
    /// `--etcd-compaction-interval` does. Every server may run one: compacting to a revision etcd has already
    /// compacted past is a no-op.
    pub async fn compact_periodically(self, interval: Duration, retain: Revision) {
        if interval.is_zero() {
            return;
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let target = match self.current_revision().await {
                Ok(current) => current - retain,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd compaction: cannot read the revision");
                    continue;
                }
            };
            if target > 1 {
                match self.compact(target).await {
                    Ok(()) => tracing::debug!(revision = target, "etcd compacted"),
                    Err(e) => tracing::warn!(error = %e, "etcd compaction failed"),
                }
            }
        }
    }
}

async fn open_watch(
    client: &etcd_client::Client,
    prefix: &Bytes,
    from: Revision,
) -> Result<etcd_client::WatchStream, StoreError> {
    let options = etcd_client::WatchOptions::new()
        .with_range(prefix_end(prefix))
        .with_start_revision(from)
        .with_prev_key();
    retrying(Retry::Idempotent, || {
        let (mut watch, options) = (client.watch_client(), options.clone());
        async move { watch.watch(prefix.to_vec(), Some(options)).await }
    })
    .await
    .map_err(|e| store_error(e, from))
}

struct WatchState {
    client: etcd_client::Client,
    prefix: Bytes,
    /// The first revision not delivered yet.
    next: Revision,
    stream: Option<etcd_client::WatchStream>,
    pending: std::collections::VecDeque<WatchEvent>,
    done: bool,
}

fn watch_event(event: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = event.kv()?;
    let kind = match event.event_type() {
        etcd_client::EventType::Put => EventKind::Put,
        etcd_client::EventType::Delete => EventKind::Delete,
    };
    Some(WatchEvent {
        kind,
        kv: key_value(kv),
        prev_kv: event.prev_kv().map(key_value),
    })
}

async fn next_event(mut state: WatchState) -> Option<(Result<WatchEvent, StoreError>, WatchState)> {
    loop {
        if let Some(event) = state.pending.pop_front() {
            state.next = event.revision() + 1;
            return Some((Ok(event), state));
        }
        if state.done {
            return None;
        }
        let Some(stream) = state.stream.as_mut() else {
            // The stream broke: re-watch from the first revision not delivered, after a pause.
            tokio::time::sleep(REWATCH_DELAY).await;
            match open_watch(&state.client, &state.prefix, state.next).await {
                Ok(stream) => state.stream = Some(stream),
                Err(e) => tracing::debug!(error = %e, "etcd watch: re-watch failed; retrying"),
            }
            continue;
        };
        match stream.message().await {
            Ok(Some(response)) => {
                if response.compact_revision() > 0 {
                    state.done = true;
                    let error = StoreError::Compacted {
                        requested: state.next,
                        compact_revision: response.compact_revision(),
                    };
                    return Some((Err(error), state));
                }
                if response.canceled() {
                    tracing::debug!(
                        reason = response.cancel_reason(),
                        "etcd cancelled a watch; re-watching"
                    );
                    state.stream = None;
                    continue;
                }
                state
                    .pending
                    .extend(response.events().iter().filter_map(watch_event));
            }
            Ok(None) => state.stream = None,
            Err(e) => {
                tracing::debug!(error = %e, "etcd watch stream broke; re-watching");
                state.stream = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn endpoints_parse_as_k3s_takes_them() {
        assert_eq!(
            EtcdConfig::parse_endpoints("https://10.0.0.5:2379, https://10.0.0.6").unwrap(),
            ["https://10.0.0.5:2379", "https://10.0.0.6:2379"]
        );
        assert_eq!(
            EtcdConfig::parse_endpoints("http://127.0.0.1:2379/").unwrap(),
            ["http://127.0.0.1:2379"]
        );
        for bad in [
            "",
            "10.0.0.5:2379",
            "mysql://root@tcp(db)/k3s",
            "https://",
            "https://h/x",
        ] {
            let error = EtcdConfig::parse_endpoints(bad).unwrap_err().to_string();
            assert!(error.starts_with("--datastore-endpoint"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let config = EtcdConfig {
            endpoints: vec!["https://127.0.0.1:2379".into()],
            cert_file: Some("/dev/null".into()),
            ..EtcdConfig::default()
        };
        assert!(matches!(
            config.connect_options(),
            Err(EtcdConfigError::HalfIdentity)
        ));
    }
}
