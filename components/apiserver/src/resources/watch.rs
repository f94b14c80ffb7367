//! Watches over HTTP: a chunked stream of `{"type","object"}` lines, from a resourceVersion or
//! from the current state (synthetic ADDED events), with label and field selectors applied as
//! transitions (an object that stops matching is DELETED for this watcher), bookmarks,
//! `sendInitialEvents`, `timeoutSeconds`, and an ERROR event with 410 Expired for a compacted
//! resourceVersion.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use embedded_store::{EventKind, Store, StoreError, WatchRequest};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::handlers::{Query, Target, list_items};
use super::objects;
use super::selectors::{FieldSelector, LabelSelector};

/// Default watch length when the client names none (kube-apiserver picks 30-60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn bookmark(t: &Target, revision: i64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": t.resource.kind, "apiVersion": t.resource.api_version(), "metadata": metadata})
}

pub async fn serve(store: Arc<dyn Store>, t: Target, q: Query) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(ApiError::BadRequest)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or("")).map_err(ApiError::BadRequest)?;
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
            initial = items.into_iter().filter(|o| matches(o)).collect();
            revision + 1
        }
    };
    let prefix = objects::prefix(t.resource, t.namespace.as_deref());
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let stream = match store
        .watch(WatchRequest {
            prefix: Bytes::from(prefix),
            start_revision: start,
        })
        .await
    {
        Ok(stream) => Some(stream),
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => {
            let expired = ApiError::Gone(format!(
                "too old resource version: {} ({compact_revision})",
                requested - 1
            ));
            let _ = tx.send(line("ERROR", &expired.status())).await;
            None
        }
        Err(e) => return Err(e.into()),
    };
    tokio::spawn(async move {
        for object in &initial {
            if tx.send(line("ADDED", object)).await.is_err() {
                return;
            }
        }
        let mut last = start - 1;
        if send_initial
            && tx
                .send(line("BOOKMARK", &bookmark(&t, last, true)))
                .await
                .is_err()
        {
            return;
        }
        let Some(mut stream) = stream else { return };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tokio::time::sleep_until(next_bookmark), if bookmarks => {
                    next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
                    if tx.send(line("BOOKMARK", &bookmark(&t, last, false))).await.is_err() { return }
                    continue;
                }
                _ = tx.closed() => return,
            };
            let event = match event {
                Some(Ok(e)) => e,
                Some(Err(StoreError::Compacted {
                    requested,
                    compact_revision,
                })) => {
                    let expired = ApiError::Gone(format!(
                        "too old resource version: {requested} ({compact_revision})"
                    ));
                    let _ = tx.send(line("ERROR", &expired.status())).await;
                    return;
                }
                Some(Err(_)) | None => return,
            };
            last = event.kv.mod_revision;
            let revision = event.kv.mod_revision;
            let decode = |bytes: &[u8]| objects::decode(bytes, revision);
            let now = match event.kind {
                EventKind::Put => decode(&event.kv.value),
                EventKind::Delete => None,
            };
            let before = event.prev_kv.as_ref().and_then(|p| decode(&p.value));
            let (now_in, before_in) = (
                now.as_ref().is_some_and(&matches),
                before.as_ref().is_some_and(&matches),
            );
            let out = match (now, before) {
                (Some(o), _) if now_in && before_in => Some(("MODIFIED", o)),
                (Some(o), _) if now_in => Some(("ADDED", o)),
                (Some(o), Some(_)) if before_in => Some(("DELETED", o)),
                (None, Some(b)) if before_in => Some(("DELETED", b)),
                _ => None,
            };
            if let Some((kind, object)) = out
                && tx.send(line(kind, &object)).await.is_err()
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
