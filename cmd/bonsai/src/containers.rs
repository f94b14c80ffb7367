//! `bonsai containers …` and `bonsai logs`: the runtime's containers from the command line.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use runtime::container::attach::{Decoder, Frame};
use runtime::container::seccomp::Seccomp;
use runtime::container::terminal::{self, RawMode};
use runtime::container::{ContainerConfig, ExecRequest, Runtime, State};
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

/// Ends bonsai with `code` (a container's or command's) when it is not 0.
pub fn exit_with(code: i32) -> anyhow::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(anyhow::Error::new(ExitCode(code)))
    }
}

fn env_pairs(env: Vec<String>) -> anyhow::Result<Vec<(String, String)>> {
    env.into_iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--env {pair}: expected NAME=value"))
        })
        .collect()
}

/// Watches this process's terminal size and hands each new size to `apply` (and the first one at once).
fn follow_terminal_size(mut apply: impl FnMut(u16, u16) -> bool + Send + 'static) {
    std::thread::spawn(move || {
        let mut last = None;
        loop {
            let size = terminal::size(std::io::stdin()).or_else(|| terminal::size(std::io::stdout()));
            if size.is_some() && size != last {
                last = size;
                if let Some((rows, cols)) = size
                    && !apply(rows, cols)
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// Reads `ROWS COLS` lines from `fifo` and hands each size to `apply`, until the writer goes away.
fn follow_resize_fifo(fifo: std::path::PathBuf, mut apply: impl FnMut(u16, u16) -> bool + Send + 'static) {
    std::thread::spawn(move || {
        let Ok(file) = std::fs::File::open(&fifo) else {
            return;
        };
        for line in std::io::BufRead::lines(std::io::BufReader::new(file)).map_while(Result::ok) {
            let mut numbers = line.split_whitespace().map(str::parse::<u16>);
            if let (Some(Ok(rows)), Some(Ok(cols))) = (numbers.next(), numbers.next())
                && !apply(rows, cols)
            {
                return;
            }
        }
    });
}

pub fn exec(
    data_dir: &Path,
    id: &str,
    command: Vec<String>,
    env: Vec<String>,
    tty: bool,
    resize_fifo: Option<&Path>,
    terminal_size: Option<(u16, u16)>,
) -> anyhow::Result<i32> {
    let request = ExecRequest {
        args: command,
        env: env_pairs(env)?,
        tty,
        terminal_size: terminal_size
            .or_else(|| terminal::size(std::io::stdin()))
            .or_else(|| terminal::size(std::io::stdout())),
    };
    // No threads before this call: it forks.
    let process = open(data_dir)?.exec(id, request)?;
    let Some(master) = process.terminal.as_ref() else {
        return Ok(process.wait()?);
    };
    let _raw = terminal::is_terminal(std::io::stdin()).then(RawMode::enter);
    let mut input = std::fs::File::from(master.try_clone()?);
    let mut output = std::fs::File::from(master.try_clone()?);
    let resized = master.try_clone()?;
    let apply = move |rows, cols| terminal::resize(&resized, rows, cols).is_ok();
    match resize_fifo {
        Some(fifo) => follow_resize_fifo(fifo.to_path_buf(), apply),
        None => follow_terminal_size(apply),
    }
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut input);
    });
    let (done, output_done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout();
        let mut buffer = [0u8; 16 * 1024];
        // The master reads EIO once the command's side of the terminal is closed.
        while let Ok(n @ 1..) = output.read(&mut buffer) {
            if stdout
                .write_all(&buffer[..n])
                .and_then(|()| stdout.flush())
                .is_err()
            {
                break;
            }
        }
        let _ = done.send(());
    });
    let code = process.wait()?;
    // What the command wrote just before it ended is still in the terminal; processes it left behind may hold
    // the terminal open, so do not wait for its end for long.
    let _ = output_done.recv_timeout(Duration::from_secs(1));
    Ok(code)
}

/// Where an attached terminal's sizes come from: by default this process's terminal; for the node agent's
/// helper, a first size and a FIFO of the client's resizes.
#[derive(Debug, Default)]
pub struct Resizes {
    pub fifo: Option<std::path::PathBuf>,
    pub first: Option<(u16, u16)>,
}

/// Copies an attach stream's output to this process's stdout and stderr, and (with `input`) this process's
/// input to the container, until the container ends; then its exit code.
fn stream_attached(
    runtime: &Runtime,
    id: &str,
    stream: UnixStream,
    input: bool,
    tty: bool,
    resizes: Resizes,
) -> anyhow::Result<i32> {
    let _raw = (tty && input && terminal::is_terminal(std::io::stdin())).then(RawMode::enter);
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    let send = move |writer: &Arc<Mutex<UnixStream>>, frame: Frame| {
        let mut stream = writer.lock().unwrap_or_else(|p| p.into_inner());
        stream.write_all(&frame.encode()).is_ok()
    };
    if tty {
        let writer = writer.clone();
        if let Some((rows, cols)) = resizes.first {
            send(&writer, Frame::Resize { rows, cols });
        }
        let apply = move |rows, cols| send(&writer, Frame::Resize { rows, cols });
        match resizes.fifo {
            Some(fifo) => follow_resize_fifo(fifo, apply),
            None => follow_terminal_size(apply),
        }
    }
    if input {
        let writer = writer.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = stdin.read(&mut buffer) {
                if !send(&writer, Frame::Stdin(buffer[..n].to_vec())) {
                    return;
                }
            }
            send(&writer, Frame::CloseStdin);
        });
    }
    let mut reader = stream;
    let mut decoder = Decoder::default();
    let mut buffer = vec![0u8; 64 * 1024];
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The shim ended without closing the stream in order (a container that could not start): how it
            // ended is in its status, below.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).context("reading from the container"),
        };
        decoder.push(&buffer[..n]);
        while let Some(frame) = decoder.next_frame()? {
            match frame {
                Frame::Stdout(data) => {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                Frame::Stderr(data) => {
                    stderr.write_all(&data)?;
                }
                _ => {}
            }
        }
    }
    // The shim closes the stream once the container has ended and it is about to record how.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match runtime.status(id)?.state {
            State::Exited(_, exited) => return Ok(exited.exit_code),
            _ if Instant::now() > deadline => {
                anyhow::bail!("container {id} is still running, but its shim hung up")
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

pub fn attach(data_dir: &Path, id: &str, input: bool, resizes: Resizes) -> anyhow::Result<i32> {
    let runtime = open(data_dir)?;
    let info = runtime.status(id)?;
    if input && !info.config.stdin {
        anyhow::bail!("container {id} was not run with --interactive: it has no standard input to attach to");
    }
    let stream = runtime.attach(id)?;
    stream_attached(&runtime, id, stream, input, info.config.tty, resizes)
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
            cgroup_parent,
            log_path,
            seccomp,
            interactive,
            tty,
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
            config.env = env_pairs(env)?;
            config.cgroup_parent = cgroup_parent;
            config.log_path = log_path;
            config.seccomp = match seccomp.as_str() {
                "unconfined" => Seccomp::Unconfined,
                "runtime-default" => Seccomp::RuntimeDefault,
                path => Seccomp::Localhost(path.into()),
            };
            config.stdin = interactive;
            // Like `kubectl run -i`: the container's input ends with the input of the one who started it.
            config.stdin_once = interactive && !detach;
            config.tty = tty;
            if detach {
                runtime
                    .run(config)
                    .with_context(|| format!("cannot run {image}"))?;
                println!("{id}");
                return Ok(());
            }
            let (_, stream) = runtime
                .run_attached(config)
                .with_context(|| format!("cannot run {image}"))?;
            let code = stream_attached(&runtime, &id, stream, interactive, tty, Resizes::default())?;
            if let State::Exited(_, exited) = runtime.status(&id)?.state
                && exited.exit_code != 0
            {
                eprintln!(
                    "container {id} exited with {} ({}) {}",
                    exited.exit_code, exited.reason, exited.message
                );
            }
            return exit_with(code);
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
        ContainersCommand::Stats { ids, json } => {
            let running: Vec<String> = runtime
                .list()?
                .into_iter()
                .filter(|i| matches!(i.state, State::Running(_)))
                .map(|i| i.config.id)
                .filter(|id| ids.is_empty() || ids.contains(id))
                .collect();
            if let Some(missing) = ids.iter().find(|id| !running.contains(id)) {
                anyhow::bail!("no running container {missing}");
            }
            if !json {
                println!(
                    "{:<24} {:>12} {:>14} {:>14} {:>6}",
                    "CONTAINER", "CPU SECONDS", "MEMORY", "WORKING SET", "PIDS"
                );
            }
            for id in running {
                let usage = runtime.usage(&id)?;
                if json {
                    println!("{}", serde_json::json!({"id": id, "usage": usage}));
                } else {
                    println!(
                        "{:<24} {:>12.3} {:>14} {:>14} {:>6}",
                        id,
                        usage.cpu_usage_nanoseconds as f64 / 1e9,
                        usage.memory_usage_bytes,
                        usage.memory_working_set_bytes,
                        usage.processes
                    );
                }
            }
        }
        ContainersCommand::Stop { id, grace_seconds } => {
            runtime.stop(&id, Duration::from_secs(grace_seconds))?;
            println!("{id}");
        }
        ContainersCommand::Rm { force, ids } => {
            for id in ids {
                if force {
                    runtime.stop(&id, Duration::ZERO)?;
                }
                runtime.remove(&id)?;
                println!("{id}");
            }
        }
    }
    Ok(())
}
