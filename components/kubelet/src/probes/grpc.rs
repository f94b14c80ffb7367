//! gRPC probes (`pkg/probe/grpc`): the standard `grpc.health.v1.Health/Check` over plaintext HTTP/2, through
//! tonic (already in the tree through etcd-client). The two messages are written out by hand with prost's derive
//! (no generated code, no protoc): `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }`.

use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout_at};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;

use super::{KUBE_PROBE_USER_AGENT, ProbeResult, go_duration, go_quote, join_host_port};

pub(crate) const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; `status` is the `ServingStatus` enum's number.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
pub(crate) const SERVING: i32 = 1;

/// The `ServingStatus` name Go prints.
fn serving_status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => other.to_string(),
    }
}

pub(super) async fn probe(host: &str, port: i32, service: &str, timeout: Duration) -> ProbeResult {
    let deadline = Instant::now() + timeout;
    let address = match u16::try_from(port) {
        Ok(port) => join_host_port(host, port),
        Err(_) => format!("{host}:{port}"),
    };
    let endpoint = match Endpoint::from_shared(format!("http://{address}"))
        .and_then(|endpoint| endpoint.user_agent(KUBE_PROBE_USER_AGENT))
    {
        Ok(endpoint) => endpoint,
        Err(error) => {
            return ProbeResult::Failure(format!(
                "error: failed to connect service at {}: {error}",
                go_quote(&address)
            ));
        }
    };

    // grpc.DialContext with WithBlock: keep dialling (grpc-go's backoff: 1 s, times 1.6) until the deadline, so a
    // closed port reads as a connect timeout, as the kubelet reports it.
    let connect_timeout = || {
        ProbeResult::Failure(format!(
            "timeout: failed to connect service {} within {}: context deadline exceeded",
            go_quote(&address),
            go_duration(timeout)
        ))
    };
    let mut backoff = Duration::from_secs(1);
    let channel = loop {
        match timeout_at(deadline, endpoint.connect()).await {
            Ok(Ok(channel)) => break channel,
            Ok(Err(error)) => {
                tracing::debug!(%address, %error, "gRPC probe dial failed, retrying");
                let retry_at = Instant::now() + backoff;
                if retry_at >= deadline {
                    sleep_until(deadline).await;
                    return connect_timeout();
                }
                sleep_until(retry_at).await;
                backoff = backoff.mul_f64(1.6);
            }
            Err(_) => return connect_timeout(),
        }
    };

    let mut client = tonic::client::Grpc::new(channel);
    let call = async {
        client
            .ready()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: service.to_string(),
        });
        // grpc-timeout, as grpc-go sends the context's deadline.
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        client
            .unary(request, PathAndQuery::from_static(HEALTH_CHECK_PATH), codec)
            .await
    };
    let timed_out = || {
        ProbeResult::Failure(format!(
            "timeout: health rpc did not complete within {}",
            go_duration(timeout)
        ))
    };
    match timeout_at(deadline, call).await {
        Err(_) => timed_out(),
        Ok(Err(status)) => match status.code() {
            Code::Unimplemented => ProbeResult::Failure(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                status.message()
            )),
            Code::DeadlineExceeded => timed_out(),
            code => ProbeResult::Failure(format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {}",
                go_code_name(code),
                status.message()
            )),
        },
        Ok(Ok(response)) => {
            let status = response.into_inner().status;
            if status == SERVING {
                ProbeResult::Success
            } else {
                ProbeResult::Failure(format!(
                    "service unhealthy (responded with {})",
                    go_quote(&serving_status_name(status))
                ))
            }
        }
    }
}

/// grpc-go's `codes.Code.String()`.
fn go_code_name(code: Code) -> String {
    match code {
        Code::Ok => "OK".into(),
        Code::Cancelled => "Canceled".into(),
        other => format!("{other:?}"),
    }
}
