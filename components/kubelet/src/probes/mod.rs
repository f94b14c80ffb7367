//! Container probes: the kubelet's prober (`pkg/kubelet/prober` and `pkg/probe/{exec,http,tcp,grpc}` in
//! kubernetes/kubernetes).
//!
//! [`probe_once`] runs one probe of any of the four handlers and answers as the kubelet's probers do (success,
//! warning, failure with the message the kubelet puts in its events, or unknown when the probe could not be run).
//! [`ContainerProber`] runs a container's startup, readiness and liveness probes on their own schedules, as the
//! kubelet's per-probe workers (`worker.go`), and publishes what the kubelet needs: whether the container has
//! started, whether it is ready, and whether a liveness or startup probe wants it restarted.

mod exec;
mod grpc;
mod http;
mod tcp;
mod worker;

#[cfg(test)]
mod loopback_tests;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use exec::{ExecError, ExecOutput, ExecRunner};
pub use worker::{
    ContainerObservation, ContainerProbeConfig, ContainerProbeStatus, ContainerProber, ObservedState,
    ProbeEvent, ProbeKind, ProbeOutcome, RestartVerdict, probe_kill_grace_period_seconds,
};

/// The User-Agent of HTTP and gRPC probes: `kube-probe/<major>.<minor>` of the Kubernetes version bonsai
/// serves (`pkg/probe/http/request.go`).
pub const KUBE_PROBE_USER_AGENT: &str = "kube-probe/1.33";

/// What one probe run found, as `pkg/probe.Result` with its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The probe passed.
    Success,
    /// Logically a success, with something to tell (an HTTP redirect the prober did not follow).
    Warning(String),
    /// The probe failed; the message is the one the kubelet's `Unhealthy` event carries.
    Failure(String),
    /// The probe could not be run (an unknown named port, a broken exec): the kubelet retries it and then
    /// throws the result away rather than counting it.
    Unknown(String),
}

/// Where a probe goes: the pod's IP, the container (for exec probes) and what of the container's spec a probe
/// refers to (named ports, static environment values for `$(VAR)` in exec commands).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeTarget {
    pub pod_ip: String,
    pub container_id: String,
    /// The container's `ports` as (name, containerPort), in spec order (the first of a name wins).
    pub named_ports: Vec<(String, i32)>,
    /// The container's `env` entries with a literal value (`ExpandContainerCommandOnlyStatic` uses only these).
    pub static_env: Vec<(String, String)>,
}

impl ProbeTarget {
    /// The target for `container` of a pod at `pod_ip`.
    pub fn for_container(
        pod_ip: impl Into<String>,
        container_id: impl Into<String>,
        container: &Container,
    ) -> Self {
        let (named_ports, static_env) = container_refs(container);
        ProbeTarget {
            pod_ip: pod_ip.into(),
            container_id: container_id.into(),
            named_ports,
            static_env,
        }
    }
}

/// A container's ports as (name, containerPort).
pub(crate) type NamedPorts = Vec<(String, i32)>;
/// A container's environment as (name, literal value).
pub(crate) type StaticEnv = Vec<(String, String)>;

fn container_refs(container: &Container) -> (NamedPorts, StaticEnv) {
    let named_ports = container
        .ports
        .iter()
        .flatten()
        .filter_map(|port| port.name.clone().map(|name| (name, port.container_port)))
        .collect();
    // EnvVarsToMap: every entry, a missing value being "" (a valueFrom variable expands to nothing).
    let static_env = container
        .env
        .iter()
        .flatten()
        .map(|env| (env.name.clone(), env.value.clone().unwrap_or_default()))
        .collect();
    (named_ports, static_env)
}

/// Runs `probe` once against `target` (`prober.runProbe`); exec probes run through `exec`.
pub async fn probe_once(probe: &Probe, target: &ProbeTarget, exec: &impl ExecRunner) -> ProbeResult {
    let timeout = probe_timeout(probe);
    if let Some(action) = &probe.exec {
        let command = action.command.clone().unwrap_or_default();
        exec::probe(exec, target, &command, timeout).await
    } else if let Some(action) = &probe.http_get {
        http::probe(action, target, timeout).await
    } else if let Some(action) = &probe.tcp_socket {
        let port = match resolve_port(&action.port, &target.named_ports) {
            Ok(port) => port,
            Err(message) => return ProbeResult::Unknown(message),
        };
        let host = action
            .host
            .as_deref()
            .filter(|host| !host.is_empty())
            .unwrap_or(&target.pod_ip);
        tcp::probe(host, port, timeout).await
    } else if let Some(action) = &probe.grpc {
        // The gRPC probe always dials the pod IP: GRPCAction has no host.
        grpc::probe(
            &target.pod_ip,
            action.port,
            action.service.as_deref().unwrap_or(""),
            timeout,
        )
        .await
    } else {
        ProbeResult::Unknown(format!(
            "missing probe handler for container {}",
            target.container_id
        ))
    }
}

/// `timeoutSeconds`, 1 when unset (the API's default; validation keeps it at least 1).
fn probe_timeout(probe: &Probe) -> Duration {
    Duration::from_secs(
        u64::try_from(probe.timeout_seconds.unwrap_or(1))
            .unwrap_or(1)
            .max(1),
    )
}

/// `probe.ResolveContainerPort`: a number, or a container port's name, or a number written as a string.
pub(crate) fn resolve_port(port: &IntOrString, named_ports: &[(String, i32)]) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(number) => i64::from(*number),
        IntOrString::String(name) => match named_ports.iter().find(|(port_name, _)| port_name == name) {
            Some((_, number)) => i64::from(*number),
            // "Last ditch effort - maybe it was an int stored as string?"
            None => name
                .parse::<i64>()
                .map_err(|_| format!("strconv.Atoi: parsing {}: invalid syntax", go_quote(name)))?,
        },
    };
    match u16::try_from(number) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("invalid port number: {number}")),
    }
}

/// Go's `net.JoinHostPort`: IPv6 literals in brackets.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Go's `%q` of a string, for messages the kubelet formats that way.
pub(crate) fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() => quoted.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Go's `time.Duration.String()` for whole seconds: `1s`, `1m30s`, `1h0m0s`.
pub(crate) fn go_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (hours, minutes, seconds) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn ports_resolve_by_number_name_or_numeric_string() {
        let named = vec![
            ("http".to_string(), 8080),
            ("http".to_string(), 9090),
            ("grpc".to_string(), 50051),
        ];
        assert_eq!(resolve_port(&IntOrString::Int(80), &named), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &named),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("8443".into()), &named),
            Ok(8443)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("metrics".into()), &named),
            Err("strconv.Atoi: parsing \"metrics\": invalid syntax".to_string())
        );
        assert_eq!(
            resolve_port(&IntOrString::Int(0), &named),
            Err("invalid port number: 0".to_string())
        );
        assert_eq!(
            resolve_port(&IntOrString::Int(65536), &named),
            Err("invalid port number: 65536".to_string())
        );
    }

    #[test]
    fn go_formatting_helpers() {
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
        assert_eq!(go_quote("sh -c \"exit 1\"\n"), "\"sh -c \\\"exit 1\\\"\\n\"");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn target_takes_named_ports_and_static_env_from_the_container() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9000}],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
        }))
        .unwrap();
        let target = ProbeTarget::for_container("10.42.0.5", "bonsai://abc", &container);
        assert_eq!(target.named_ports, vec![("http".to_string(), 8080)]);
        assert_eq!(
            target.static_env,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), String::new())
            ]
        );
    }
}
