//! Watches over HTTP: a chunked stream of `{"type","object"}` lines, from a resourceVersion or
//! from the current state (synthetic ADDED events), with label and field selectors applied as
//! transitions (an object that stops matching is DELETED for this watcher), bookmarks,
//! `sendInitialEvents`, `timeoutSeconds`, and an ERROR event with 410 Expired for a resourceVersion
//! older than the watch cache's window or the store's compaction. Events come from the watch cache,
//! never from a store watch of this request's own.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use embedded_store::Store;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::handlers::{Query, Target, list_items};
use super::selectors::{FieldSelector, LabelSelector};
use super::watch_cache::{WatchCacheError, WatchCaches};

/// Default watch length when the client names none (kube-apiserver picks 30-60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// An object's JSON as a one-row Table, for watches from `kubectl get -w`.
fn as_table(t: &Target, version: &str, json: &[u8], include_object: Option<&str>) -> Option<Vec<u8>> {
    let object: Value = serde_json::from_slice(json).ok()?;
    let rv = object
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(Value::Null);
    let table = super::tables::table(
        t.resource,
        version,
        &[object],
        json!({"resourceVersion": rv}),
        include_object,
    );
    serde_json::to_vec(&table).ok()
}

/// `{"type":…,"object":…}` around an object already serialised (once, by the watch cache).
fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark(t: &Target, revision: i64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": t.resource.kind, "apiVersion": t.resource.api_version(), "metadata": metadata})
}

pub async fn serve(
    store: Arc<dyn Store>,
    watches: Arc<WatchCaches>,
    t: Target,
    q: Query,
    table_version: Option<&'static str>,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(ApiError::BadRequest)?;
    let fields = FieldSelector::parse_for(t.resource, q.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::BadRequest)?;
    let matches = move |o: &Value| labels.matches(o) && fields.matches(o);
    let send_initial = q.flag("sendInitialEvents");
    let bookmarks = q.flag("allowWatchBookmarks");
    if send_initial && (!bookmarks || q.get("resourceVersionMatch") != Some("NotOlderThan")) {
        return Err(ApiError::BadRequest(
            "sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan"
                .into(),
        ));
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let rv = q.get("resourceVersion").filter(|r| !r.is_empty() && *r != "0");
    let from: Option<i64> = match rv {
        Some(r) => Some(
            r.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {r:?}")))?,
        ),
        None => None,
    };

    // The state to start from: synthetic ADDED events for what exists now, unless resuming.
    let mut initial = Vec::new();
    let start = match from {
        Some(rv) if !send_initial => rv + 1,
        _ => {
            let (items, (revision, _)) = list_items(&*store, &t, &Query::default(), 0, None).await?;
            initial = items
                .into_iter()
                .filter(|o| matches(&o.selectable))
                .map(|o| o.json)
                .collect();
            revision + 1
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let feed = match watches.subscribe(t.resource, start - 1).await {
        Ok(feed) => Some(feed),
        Err(WatchCacheError::TooOld { requested, oldest }) => {
            let expired = ApiError::Gone(format!("too old resource version: {requested} ({oldest})"));
            let _ = tx.send(line("ERROR", &expired.status())).await;
            None
        }
        Err(WatchCacheError::Store(e)) => return Err(e.into()),
    };
    let namespace = t.namespace.clone().filter(|_| t.resource.namespaced);
    let include_object = q.get("includeObject").map(String::from);
    // Custom resources are shown in the version watched (and with their defaults), whatever version stored them.
    let served = super::custom::served(t.resource);
    tokio::spawn(async move {
        for object in &initial {
            if tx.send(event_line("ADDED", object)).await.is_err() {
                return;
            }
        }
        if send_initial
            && tx
                .send(line("BOOKMARK", &bookmark(&t, start - 1, true)))
                .await
                .is_err()
        {
            return;
        }
        let Some(mut feed) = feed else { return };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
        loop {
            let event = tokio::select! {
                e = feed.next() => e,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tokio::time::sleep_until(next_bookmark), if bookmarks => {
                    next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
                    let at = feed.last_revision();
                    if tx.send(line("BOOKMARK", &bookmark(&t, at, false))).await.is_err() { return }
                    continue;
                }
                _ = tx.closed() => return,
            };
            // The cache closed (shutdown) or this watcher fell behind: end the stream; clients re-watch.
            let Ok(event) = event else { return };
            let in_scope = |o: &Value| {
                namespace
                    .as_deref()
                    .is_none_or(|ns| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
                    && matches(o)
            };
            let now_in = event.object.as_ref().is_some_and(in_scope);
            let before_in = event.previous.as_ref().is_some_and(in_scope);
            // A change that moves an object out of this watcher's selection is a DELETED for it.
            let out = match (now_in, before_in) {
                (true, true) => Some(("MODIFIED", event.json(false))),
                (true, false) => Some(("ADDED", event.json(false))),
                (false, true) if event.object.is_some() => Some(("DELETED", event.json(false))),
                (false, true) => Some(("DELETED", event.json(true))),
                (false, false) => None,
            };
            let out = match (out, &served) {
                (Some((kind, Some(object))), Some(served)) => Some((
                    kind,
                    Some(Bytes::from(super::custom::on_read_json(served, &object))),
                )),
                (out, _) => out,
            };
            let out = match (out, table_version) {
                (Some((kind, Some(object))), Some(version)) => {
                    as_table(&t, version, &object, include_object.as_deref())
                        .map(|table| (kind, Some(Bytes::from(table))))
                }
                (out, _) => out,
            };
            if let Some((kind, Some(object))) = out
                && tx.send(event_line(kind, &object)).await.is_err()
            {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
