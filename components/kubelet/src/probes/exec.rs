//! Exec probes (`pkg/probe/exec`): the command runs in the container through the kubelet's [`ExecRunner`]; exit
//! code 0 passes, any other fails with the command's output, a timeout fails with the CRI's message.

use std::future::Future;
use std::time::Duration;

use super::{ProbeResult, ProbeTarget, go_quote};

/// The most of an exec probe's output the kubelet keeps (`maxReadLength`, 10 KiB).
const MAX_OUTPUT_BYTES: usize = 10 * 1024;

/// Runs a command in a running container, as the kubelet's `CommandRunner.RunInContainer` (the CRI's
/// `ExecSync`): the kubelet implements it over its runtime; tests use a fake.
pub trait ExecRunner: Send + Sync {
    /// Runs `command` in the container `container_id`, stopping it after `timeout`, and returns its exit code and
    /// its standard output followed by its standard error.
    fn run_in_container(
        &self,
        container_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, ExecError>> + Send;
}

/// A finished exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// Standard output then standard error.
    pub output: Vec<u8>,
}

/// Why an exec did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The command ran past its timeout (the CRI's DeadlineExceeded): the probe fails.
    #[error("timed out")]
    TimedOut,
    /// The command could not be run at all (no such container, the runtime failed): the probe's result is
    /// unknown.
    #[error("{0}")]
    Failed(String),
}

pub(super) async fn probe(
    runner: &impl ExecRunner,
    target: &ProbeTarget,
    command: &[String],
    timeout: Duration,
) -> ProbeResult {
    let command: Vec<String> = command
        .iter()
        .map(|argument| expand(argument, &target.static_env))
        .collect();
    // The runner is asked to stop at the timeout; the probe does not wait longer even if it does not.
    let ran = tokio::time::timeout(
        timeout,
        runner.run_in_container(&target.container_id, &command, timeout),
    )
    .await;
    match ran {
        // remote_runtime.go's ExecSync: `exec.NewTimeoutError(fmt.Errorf("command %q timed out", ...))`, which the
        // exec prober turns into a failure with that message (ExecProbeTimeout, GA).
        Err(_) | Ok(Err(ExecError::TimedOut)) => {
            ProbeResult::Failure(format!("command {} timed out", go_quote(&command.join(" "))))
        }
        Ok(Err(ExecError::Failed(message))) => ProbeResult::Unknown(message),
        Ok(Ok(finished)) => {
            let output = &finished.output[..finished.output.len().min(MAX_OUTPUT_BYTES)];
            if finished.exit_code == 0 {
                ProbeResult::Success
            } else {
                ProbeResult::Failure(String::from_utf8_lossy(output).into_owned())
            }
        }
    }
}

/// Kubernetes' `expansion.Expand` with only the container's static environment
/// (`ExpandContainerCommandOnlyStatic`): `$(VAR)` becomes the value when VAR is defined and stays as written
/// otherwise, `$$` is a literal `$`, and any other `$` is kept.
pub(crate) fn expand(input: &str, env: &[(String, String)]) -> String {
    let bytes = input.as_bytes();
    let mut expanded = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            expanded.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    expanded.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match env.iter().find(|(key, _)| key == name) {
                            Some((_, value)) => expanded.push_str(value),
                            None => {
                                expanded.push_str("$(");
                                expanded.push_str(name);
                                expanded.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        expanded.push_str("$(");
                        1
                    }
                },
                _ => {
                    // An operator that begins no expression: keep it and the next character.
                    let next = rest.chars().next().map_or(1, char::len_utf8);
                    expanded.push('$');
                    expanded.push_str(&rest[..next]);
                    next
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < input.len() {
        expanded.push_str(&input[checkpoint..]);
    }
    expanded
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![("PORT".into(), "8080".into()), ("EMPTY".into(), String::new())]
    }

    #[test]
    fn expansion_matches_kubernetes() {
        assert_eq!(
            expand("curl localhost:$(PORT)/healthz", &env()),
            "curl localhost:8080/healthz"
        );
        assert_eq!(expand("$(MISSING)", &env()), "$(MISSING)");
        assert_eq!(expand("a$(EMPTY)b", &env()), "ab");
        assert_eq!(expand("$$(PORT)", &env()), "$(PORT)");
        assert_eq!(expand("cost: $5", &env()), "cost: $5");
        assert_eq!(expand("trailing $", &env()), "trailing $");
        assert_eq!(expand("open $(PORT", &env()), "open $(PORT");
        assert_eq!(expand("é$é", &env()), "é$é");
    }
}
