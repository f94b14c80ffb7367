//! `/livez`, `/readyz`, `/healthz`, in kube-apiserver's shape: `ok`, or with `?verbose` one
//! `[+]name ok` line per check; a failing check answers 500 with `[-]name failed`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::server::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Livez,
    Readyz,
    Healthz,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
            Endpoint::Healthz => "healthz",
        }
    }
}

/// Runs the checks; `(name, passed)` in order.
async fn run_checks(state: &AppState) -> Vec<(&'static str, bool)> {
    // "etcd" is the check's name in kube-apiserver (and in k3s, which runs kine); monitors look
    // for it. Here it asks the cluster store for its revision.
    let store_ok = state.store.current_revision().await.is_ok();
    vec![("ping", true), ("log", true), ("etcd", store_ok)]
}

fn verbose(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p == "verbose" || p.starts_with("verbose=")))
}

pub async fn all(endpoint: Endpoint, state: Arc<AppState>, query: Option<String>) -> Response {
    let checks = run_checks(&state).await;
    let passed = checks.iter().all(|(_, ok)| *ok);
    let code = if passed {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    if !verbose(query.as_deref()) && passed {
        return (code, "ok").into_response();
    }
    let mut body = String::new();
    for (name, ok) in &checks {
        body.push_str(&if *ok {
            format!("[+]{name} ok\n")
        } else {
            format!("[-]{name} failed: reason withheld\n")
        });
    }
    body.push_str(&format!(
        "{} check {}\n",
        endpoint.name(),
        if passed { "passed" } else { "failed" }
    ));
    (code, body).into_response()
}

pub async fn one(endpoint: Endpoint, state: Arc<AppState>, check: String) -> Response {
    match run_checks(&state)
        .await
        .into_iter()
        .find(|(name, _)| *name == check)
    {
        Some((_, true)) => (StatusCode::OK, "ok").into_response(),
        Some((name, false)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "[-]{name} failed: reason withheld\n{} check failed\n",
                endpoint.name()
            ),
        )
            .into_response(),
        None => crate::status::not_found(),
    }
}

pub fn routes(router: axum::Router<Arc<AppState>>) -> axum::Router<Arc<AppState>> {
    let mut router = router;
    for endpoint in [Endpoint::Livez, Endpoint::Readyz, Endpoint::Healthz] {
        let base = format!("/{}", endpoint.name());
        router = router
            .route(
                &base,
                axum::routing::get(move |State(s): State<Arc<AppState>>, RawQuery(q): RawQuery| {
                    all(endpoint, s, q)
                }),
            )
            .route(
                &format!("{base}/{{check}}"),
                axum::routing::get(move |State(s): State<Arc<AppState>>, Path(check): Path<String>| {
                    one(endpoint, s, check)
                }),
            );
    }
    router
}
