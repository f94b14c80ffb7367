//! The `bonsai` binary: parse the command line, set up logging, and hand over to the components.
//! Mechanism lives in the libraries; this crate stays thin.

mod agent;
mod cli;
mod containers;
mod images;
mod logging;
mod network;
mod node_agent;
mod server;
mod token;
mod version;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    // The shim (one per container, long-lived) skips the CLI parser and the log subscriber: it should touch as
    // little of the binary as it can, to stay small.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() == 3 {
        let dir = std::path::Path::new(&argv[2]);
        let ran = if argv[1] == "shim" {
            Some(runtime::container::shim::run(dir))
        } else if argv[1] == runtime::container::shim::MONITOR_COMMAND {
            Some(runtime::container::shim::run_monitor(dir))
        } else {
            None
        };
        match ran {
            Some(Ok(())) => return ExitCode::SUCCESS,
            Some(Err(e)) => {
                eprintln!("bonsai shim: {e}");
                return ExitCode::FAILURE;
            }
            None => {}
        }
    }
    let cli = Cli::parse();
    let format = cli.log_format;
    logging::init(format, cli.debug);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<containers::ExitCode>().is_some() => {
            let code = e.downcast_ref::<containers::ExitCode>().map_or(1, |c| c.0);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            // A person reads one plain line; a log collector gets one structured event.
            match format {
                LogFormat::Human => eprintln!("bonsai: {e:#}"),
                LogFormat::Json => tracing::error!(error = %format!("{e:#}"), "bonsai failed"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version => {
            print!("{}", version::long());
            Ok(())
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "bonsai", &mut std::io::stdout());
            Ok(())
        }
        Command::Agent(args) => agent::run(args),
        Command::Token(args) => token::run(args),
        Command::Containers(args) => containers::run(args),
        Command::Network(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(network::run(args))
        }
        Command::Logs { data_dir, id } => containers::logs(&data_dir, &id),
        Command::Exec {
            data_dir,
            env,
            tty,
            resize_fifo,
            terminal_size,
            id,
            command,
        } => {
            // The command's own exit code, as `kubectl exec` and `crictl exec` pass it on.
            containers::exit_with(containers::exec(
                &data_dir,
                &id,
                command,
                env,
                tty,
                resize_fifo.as_deref(),
                terminal_size,
            )?)
        }
        Command::Attach {
            data_dir,
            stdin,
            resize_fifo,
            terminal_size,
            id,
        } => containers::exit_with(containers::attach(
            &data_dir,
            &id,
            stdin,
            containers::Resizes {
                fifo: resize_fifo,
                first: terminal_size,
            },
        )?),
        Command::Shim { dir } => Ok(runtime::container::shim::run(&dir)?),
        Command::Images(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(images::run(args))
        }
        Command::Server(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(server::run(*args))
        }
    }
}
