//! Request limits, as kube-apiserver's `--max-requests-inflight`, `--max-mutating-requests-inflight` and
//! `--request-timeout` set them: at most so many read-only and so many mutating requests are served at once (one
//! more gets `429 TooManyRequests` with `Retry-After: 1`, which client-go waits for and retries), and a request
//! that is not long-running is cut off with `504 Timeout` after the timeout. Long-running requests (watches,
//! proxies, exec/attach/port-forward, logs) are not counted and not timed, as in kube-apiserver's
//! `BasicLongRunningRequestCheck`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Semaphore;

use crate::request_info::RequestInfo;
use crate::status;

/// The limits; kube-apiserver's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Read-only requests served at once (0: no limit).
    pub max_in_flight: usize,
    /// Mutating requests served at once (0: no limit).
    pub max_mutating_in_flight: usize,
    /// How long a request that is not long-running may take.
    pub request_timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_in_flight: 400,
            max_mutating_in_flight: 200,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// The limits' state, shared by every connection.
#[derive(Debug)]
pub(crate) struct Limiter {
    read_only: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
    timeout: Duration,
}

impl Limiter {
    pub(crate) fn new(limits: RequestLimits) -> Limiter {
        let semaphore = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Limiter {
            read_only: semaphore(limits.max_in_flight),
            mutating: semaphore(limits.max_mutating_in_flight),
            timeout: limits.request_timeout,
        }
    }
}

/// Long-running requests, as kube-apiserver's `BasicLongRunningRequestCheck(watch, proxy; attach, exec, proxy,
/// log, portforward)` tells them, plus the `?watch=true` and `follow` forms.
pub(crate) fn is_long_running(info: &RequestInfo, query: Option<&str>) -> bool {
    matches!(info.verb.as_str(), "watch" | "proxy")
        || matches!(
            info.subresource.as_str(),
            "attach" | "exec" | "proxy" | "log" | "portforward"
        )
        || query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub(crate) async fn limit(State(limiter): State<Arc<Limiter>>, request: Request, next: Next) -> Response {
    let info = RequestInfo::of(request.method(), request.uri().path(), request.uri().query());
    if is_long_running(&info, request.uri().query()) {
        return next.run(request).await;
    }
    let semaphore = if is_mutating(request.method()) {
        &limiter.mutating
    } else {
        &limiter.read_only
    };
    let _permit = match semaphore {
        Some(semaphore) => match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                discard_body(request).await;
                return too_many_requests();
            }
        },
        None => None,
    };
    match tokio::time::timeout(limiter.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => status::failure(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            "request did not complete within the allotted timeout",
        ),
    }
}

/// How much of a refused request's body is read, and for how long, before it is answered: Go's net/http (and so
/// kube-apiserver) reads up to 256 KiB of a body its handler left unread.
const DISCARD_LIMIT: usize = 256 << 10;
const DISCARD_TIME: Duration = Duration::from_secs(1);

/// Reads and drops what the client is still sending. Without this the connection is closed with its body unread,
/// the kernel answers the unread bytes with a reset, and the reset can destroy the 429 before the client reads it.
async fn discard_body(request: Request) {
    let body = request.into_body();
    let _ = tokio::time::timeout(DISCARD_TIME, axum::body::to_bytes(body, DISCARD_LIMIT)).await;
}

/// kube-apiserver's answer when its in-flight limit is reached.
fn too_many_requests() -> Response {
    let mut response = status::failure(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Too many requests, please try again later.",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str, query: Option<&str>) -> (RequestInfo, Option<String>) {
        (RequestInfo::of(&method, path, query), query.map(String::from))
    }

    #[test]
    fn long_running_requests_are_kubes() {
        for (method, path, query, long) in [
            (Method::GET, "/api/v1/pods", Some("watch=true"), true),
            (Method::GET, "/api/v1/watch/pods", None, true),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p/log",
                Some("follow=true"),
                true,
            ),
            (Method::POST, "/api/v1/namespaces/d/pods/p/exec", None, true),
            (Method::GET, "/api/v1/namespaces/d/pods/p/portforward", None, true),
            (Method::GET, "/api/v1/pods", None, false),
            (Method::POST, "/api/v1/namespaces/d/configmaps", None, false),
            (Method::GET, "/healthz", None, false),
        ] {
            let (i, q) = info(method.clone(), path, query);
            assert_eq!(
                is_long_running(&i, q.as_deref()),
                long,
                "{method} {path} {query:?}"
            );
        }
    }

    #[test]
    fn the_limit_answers_429_with_retry_after() {
        let response = too_many_requests();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
