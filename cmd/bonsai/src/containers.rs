//! `bonsai containers …` and `bonsai logs`: the runtime's containers from the command line.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use runtime::container::{ContainerConfig, Runtime, State};
use runtime::store::ContentStore;

use crate::cli::{ContainersArgs, ContainersCommand};

fn open(data_dir: &Path) -> anyhow::Result<Runtime> {
    let store = Arc::new(ContentStore::open(crate::images::store_dir(data_dir))?);
    let shim = std::env::current_exe().context("cannot find the bonsai binary to run shims")?;
    Ok(Runtime::new(data_dir.join("agent/containers"), store, shim)?)
}

/// The text of a CRI log, without the timestamps and stream tags.
fn log_text(path: &Path) -> anyhow::Result<String> {
    let raw = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = String::new();
    for line in raw.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag, text) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next().unwrap_or(""),
        );
        out.push_str(text);
        if tag == Some("F") {
            out.push('\n');
        }
    }
    Ok(out)
}

/// A command's exit code, passed on as bonsai's own.
#[derive(Debug)]
pub struct ExitCode(pub i32);

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitCode {}

pub fn exec(data_dir: &Path, id: &str, command: Vec<String>, env: Vec<String>) -> anyhow::Result<i32> {
    let mut pairs = Vec::new();
    for pair in env {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair}: expected NAME=value"))?;
        pairs.push((k.to_string(), v.to_string()));
    }
    Ok(open(data_dir)?.exec(id, command, pairs)?)
}

pub fn logs(data_dir: &Path, id: &str) -> anyhow::Result<()> {
    let info = open(data_dir)?.status(id)?;
    print!("{}", log_text(&info.log_path)?);
    Ok(())
}

pub fn run(args: ContainersArgs) -> anyhow::Result<()> {
    let runtime = open(&args.data_dir)?;
    match args.command {
        ContainersCommand::Run {
            name,
            memory_limit,
            pids_limit,
            env,
            detach,
            image,
            command,
        } => {
            let id = name.unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                format!("c{:x}{:x}", nanos.as_secs(), nanos.subsec_nanos())
            });
            let mut config = ContainerConfig::new(&id, &image);
            if !command.is_empty() {
                config.command = Some(command);
            }
            config.resources.memory_limit = memory_limit;
            config.resources.pids_limit = pids_limit;
            for pair in env {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--env {pair}: expected NAME=value"))?;
                config.env.push((k.to_string(), v.to_string()));
            }
            runtime
                .run(config)
                .with_context(|| format!("cannot run {image}"))?;
            if detach {
                println!("{id}");
                return Ok(());
            }
            let info = loop {
                let info = runtime.status(&id)?;
                if matches!(info.state, State::Exited(..)) {
                    break info;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            print!("{}", log_text(&info.log_path).unwrap_or_default());
            if let State::Exited(_, exited) = info.state {
                eprintln!(
                    "container {id} exited with {} ({})",
                    exited.exit_code, exited.reason
                );
                if exited.exit_code != 0 {
                    anyhow::bail!(
                        "container {id} exited with {} ({}) {}",
                        exited.exit_code,
                        exited.reason,
                        exited.message
                    );
                }
            }
        }
        ContainersCommand::Ls => {
            println!(
                "{:<24} {:<44} {:<10} {:>5} {:>8}",
                "CONTAINER", "IMAGE", "STATE", "EXIT", "PID"
            );
            for info in runtime.list()? {
                let (state, exit, pid) = match &info.state {
                    State::Created => ("Created".to_string(), String::new(), String::new()),
                    State::Running(s) => ("Running".to_string(), String::new(), s.pid.to_string()),
                    State::Exited(_, e) => (e.reason.clone(), e.exit_code.to_string(), String::new()),
                };
                println!(
                    "{:<24} {:<44} {:<10} {:>5} {:>8}",
                    info.config.id, info.config.image, state, exit, pid
                );
            }
        }
        ContainersCommand::Stop { id, grace_seconds } => {
            runtime.stop(&id, Duration::from_secs(grace_seconds))?;
            println!("{id}");
        }
        ContainersCommand::Rm { ids } => {
            for id in ids {
                runtime.remove(&id)?;
                println!("{id}");
            }
        }
    }
    Ok(())
}
