//! Containers' lifecycle hooks (`postStart`, `preStop`) and termination messages, as the kubelet's
//! `pkg/kubelet/lifecycle/handlers.go` and `kuberuntime_container.go` run and read them.
//!
//! A hook's handler is an exec in the container, an HTTP GET to it, or a sleep. As in Kubernetes, an HTTP hook
//! fails only when no response comes (its status code is not looked at), and an exec hook fails when the command
//! exits non-zero.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};

use crate::probes::{ExecRunner, ProbeResult, ProbeTarget};

/// The most a termination message file gives (`maxTerminationMessageLength`, 4 KiB ...).
const MAX_MESSAGE_BYTES: usize = 4096;
/// ... and the most a message taken from the log does (`kubecontainer.MaxContainerTerminationMessageLogLength`
/// and `...LogLines`).
const MAX_LOG_MESSAGE_BYTES: usize = 2048;
const MAX_LOG_MESSAGE_LINES: usize = 80;

/// A pod as the kubelet's messages name it (`format.Pod`): `name_namespace(uid)`.
pub(crate) fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Runs a hook's handler against a running container; `Err` carries the kubelet's message (`FailedPostStartHook`
/// / `FailedPreStopHook` events). `timeout` bounds exec and HTTP handlers and cuts a sleep short.
pub async fn run_hook(
    pod: &Pod,
    container: &Container,
    container_id: &str,
    handler: &LifecycleHandler,
    exec: &impl ExecRunner,
    timeout: Duration,
) -> Result<(), String> {
    let name = &container.name;
    if let Some(action) = &handler.exec {
        let command = action.command.clone().unwrap_or_default();
        let (error, output) = match exec.run_in_container(container_id, &command, timeout).await {
            Ok(out) if out.exit_code == 0 => return Ok(()),
            Ok(out) => (
                format!("command '{}' exited with {}: ", command.join(" "), out.exit_code),
                String::from_utf8_lossy(&out.output).into_owned(),
            ),
            Err(e) => (e.to_string(), String::new()),
        };
        return Err(format!(
            "Exec lifecycle hook ({command:?}) for Container {name:?} in Pod {:?} failed - error: {error}, message: \
             {output:?}",
            format_pod(pod)
        ));
    }
    if let Some(action) = &handler.http_get {
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let probe = Probe {
            http_get: Some(action.clone()),
            timeout_seconds: Some(i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX).max(1)),
            ..Probe::default()
        };
        let target = ProbeTarget::for_container(pod_ip, container_id, container);
        return match crate::probes::probe_once(&probe, &target, exec).await {
            ProbeResult::Success | ProbeResult::Warning(_) => Ok(()),
            // A response is a success whatever its status (handlers.go discards the response).
            ProbeResult::Failure(message) if message.starts_with("HTTP probe failed with statuscode") => {
                Ok(())
            }
            ProbeResult::Failure(error) | ProbeResult::Unknown(error) => Err(format!(
                "HTTP lifecycle hook ({}) for Container {name:?} in Pod {:?} failed - error: {error}",
                action.path.as_deref().unwrap_or_default(),
                format_pod(pod)
            )),
        };
    }
    if let Some(action) = &handler.sleep {
        let seconds = u64::try_from(action.seconds).unwrap_or(0);
        let wanted = Duration::from_secs(seconds);
        tokio::time::sleep(wanted.min(timeout)).await;
        return if wanted > timeout {
            Err(format!(
                "Sleep lifecycle hook ({seconds}) for Container {name:?} in Pod {:?} failed - error: container \
                 terminated before sleep hook finished",
                format_pod(pod)
            ))
        } else {
            Ok(())
        };
    }
    Err(format!(
        "Cannot run handler: invalid handler for Container {name:?} in Pod {:?}",
        format_pod(pod)
    ))
}

/// The message of a terminated container: its termination message file (at most 4 KiB), or with
/// `FallbackToLogsOnError` and a failed exit and no file contents, the end of its log (at most 80 lines and
/// 2 KiB), as `kuberuntime`'s `getTerminationMessage` and `readLastStringFromContainerLogs`.
pub fn termination_message(
    file: Option<&Path>,
    policy: Option<&str>,
    exit_code: i32,
    log: &Path,
) -> Option<String> {
    if let Some(file) = file {
        use std::io::Read;
        let mut contents = Vec::new();
        if let Ok(f) = std::fs::File::open(file) {
            let _ = f.take(MAX_MESSAGE_BYTES as u64).read_to_end(&mut contents);
        }
        if !contents.is_empty() {
            return Some(String::from_utf8_lossy(&contents).into_owned());
        }
    }
    if policy != Some("FallbackToLogsOnError") || exit_code == 0 {
        return None;
    }
    let log = log_tail(log)?;
    let messages: Vec<&str> = log.lines().filter_map(cri_log_message).collect();
    let start = messages.len().saturating_sub(MAX_LOG_MESSAGE_LINES);
    let mut tail = String::new();
    for message in &messages[start..] {
        tail.push_str(message);
        tail.push('\n');
    }
    if tail.len() > MAX_LOG_MESSAGE_BYTES {
        let mut cut = tail.len() - MAX_LOG_MESSAGE_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    (!tail.is_empty()).then_some(tail)
}

/// The end of a log file, whole lines only: enough for 80 lines and 2 KiB of text (a status is built every pass,
/// and a crash-looping container's log may be large).
fn log_tail(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL_BYTES: u64 = 16 * 1024;
    let mut file = std::fs::File::open(path).ok()?;
    let length = file.metadata().ok()?.len();
    let start = length.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start == 0 {
        return Some(text);
    }
    // The first line was cut by the seek.
    text.split_once('\n').map(|(_, rest)| rest.to_string())
}

/// The text of a CRI log line (`<time> <stream> <F|P> <text>`).
fn cri_log_message(line: &str) -> Option<&str> {
    let mut fields = line.splitn(4, ' ');
    let (_time, _stream, _tag) = (fields.next()?, fields.next()?, fields.next()?);
    Some(fields.next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::{ExecError, ExecOutput};
    use serde_json::json;

    struct Exits(i32);

    impl ExecRunner for Exits {
        async fn run_in_container(
            &self,
            _container_id: &str,
            _command: &[String],
            _timeout: Duration,
        ) -> Result<ExecOutput, ExecError> {
            Ok(ExecOutput {
                exit_code: self.0,
                output: b"oops".to_vec(),
            })
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "status": {"podIP": "127.0.0.1"}}))
        .unwrap()
    }

    fn handler(value: serde_json::Value) -> LifecycleHandler {
        serde_json::from_value(value).unwrap()
    }

    #[tokio::test]
    async fn exec_hooks_fail_on_a_non_zero_exit_with_the_kubelets_message() {
        let container: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let exec = handler(json!({"exec": {"command": ["sh", "-c", "exit 2"]}}));
        let ok = run_hook(&pod(), &container, "id", &exec, &Exits(0), Duration::from_secs(1)).await;
        assert_eq!(ok, Ok(()));
        let failed = run_hook(&pod(), &container, "id", &exec, &Exits(2), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(
            failed,
            "Exec lifecycle hook ([\"sh\", \"-c\", \"exit 2\"]) for Container \"c\" in Pod \"p_ns(u1)\" failed - \
             error: command 'sh -c exit 2' exited with 2: , message: \"oops\""
        );
    }

    #[tokio::test]
    async fn http_hooks_succeed_on_any_response_and_fail_without_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let container: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let answered = handler(json!({"httpGet": {"path": "/stop", "port": port}}));
        let result = run_hook(
            &pod(),
            &container,
            "id",
            &answered,
            &Exits(0),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(result, Ok(()));
        // Nothing listens on port 1.
        let unanswered = handler(json!({"httpGet": {"path": "/stop", "port": 1}}));
        let failed = run_hook(
            &pod(),
            &container,
            "id",
            &unanswered,
            &Exits(0),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(
            failed.starts_with("HTTP lifecycle hook (/stop) for Container \"c\""),
            "{failed}"
        );
    }

    #[tokio::test]
    async fn sleep_hooks_are_cut_short_by_the_timeout() {
        let container: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let sleep = handler(json!({"sleep": {"seconds": 5}}));
        let cut = run_hook(
            &pod(),
            &container,
            "id",
            &sleep,
            &Exits(0),
            Duration::from_millis(10),
        )
        .await;
        assert!(cut.unwrap_err().contains("terminated before sleep hook finished"));
    }

    #[test]
    fn termination_messages_come_from_the_file_or_the_logs_tail() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("termination-log");
        let log = dir.path().join("0.log");
        std::fs::write(&file, "").unwrap();
        let lines: String = (0..100)
            .map(|i| format!("2026-12-01T00:00:00.000000000Z stderr F line {i}\n"))
            .collect();
        std::fs::write(&log, lines).unwrap();
        // No message in the file: only FallbackToLogsOnError and a failure take the log's last 80 lines.
        assert_eq!(termination_message(Some(&file), Some("File"), 1, &log), None);
        assert_eq!(
            termination_message(Some(&file), Some("FallbackToLogsOnError"), 0, &log),
            None
        );
        let tail = termination_message(Some(&file), Some("FallbackToLogsOnError"), 1, &log).unwrap();
        assert!(
            tail.starts_with("line 20\n") && tail.ends_with("line 99\n"),
            "{tail}"
        );
        std::fs::write(&file, "x".repeat(5000)).unwrap();
        assert_eq!(
            termination_message(Some(&file), Some("FallbackToLogsOnError"), 1, &log).map(|m| m.len()),
            Some(4096)
        );
    }
}
