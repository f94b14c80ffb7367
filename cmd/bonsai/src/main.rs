//! The `bonsai` binary: parse the command line, set up logging, and hand over to the components.
//! Mechanism lives in the libraries; this crate stays thin.

mod agent;
mod cli;
mod config;
mod containers;
mod controller_credentials;
mod ephemeral;
mod images;
mod kubectl;
mod logging;
mod network;
mod node_agent;
mod server;
mod snapshot;
mod token;
mod version;
mod wait_ready;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

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
    // Run through a `kubectl` link (the install script makes one when no kubectl is installed), bonsai is
    // `bonsai kubectl`.
    if std::path::Path::new(argv.first().map(|a| a.as_os_str()).unwrap_or_default())
        .file_name()
        .is_some_and(|n| n == "kubectl")
    {
        return match kubectl::run(argv[1..].to_vec()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bonsai (as kubectl): {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = match parse(argv) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("bonsai: {e:#}");
            return ExitCode::FAILURE;
        }
    };
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

/// The command line, with the config file's flags for the commands that read one. A mistake on the command line
/// itself is clap's to report (usage, exit code 2); one in the config file names the file.
fn parse(argv: Vec<std::ffi::OsString>) -> anyhow::Result<Cli> {
    let command = Cli::command();
    let merged = config::apply(&command, argv.clone())?;
    let from_file = merged.len() != argv.len();
    match command.try_get_matches_from(&merged) {
        Ok(matches) => Ok(Cli::from_arg_matches(&matches)?),
        Err(e) if from_file && command_line_parses(&argv) => {
            let added: Vec<String> = merged[1..]
                .iter()
                .filter(|a| !argv.contains(a))
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            Err(anyhow::anyhow!(
                "the config file's settings are not valid ({}): {}",
                added.join(" "),
                e.kind()
            )
            .context(e.to_string().trim().to_string()))
        }
        Err(e) => e.exit(),
    }
}

fn command_line_parses(argv: &[std::ffi::OsString]) -> bool {
    Cli::command().try_get_matches_from(argv).is_ok()
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
        Command::Certificate {
            command: cli::CertificateCommand::Rotate { data_dir, services },
        } => snapshot::rotate_certificates(&data_dir, &services),
        Command::SecretsEncrypt { kubeconfig, command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(snapshot::secrets_encrypt(&kubeconfig, command))
        }
        Command::Snapshot(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(snapshot::run(args))
        }
        Command::CheckConfig { https_listen_port } => {
            let options = hostcheck::Options {
                tcp_ports: vec![https_listen_port, kubelet::node::KUBELET_PORT as u16],
                path: std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|p| p.display().to_string())
                    .collect(),
                ..hostcheck::Options::default()
            };
            let items = hostcheck::check(&hostcheck::RootedHost::real(), &options);
            print!("{}", hostcheck::render(&items));
            if hostcheck::worst(&items) == hostcheck::Verdict::Fail {
                return Err(containers::ExitCode(1).into());
            }
            Ok(())
        }
        Command::Kubectl { args } => kubectl::run(args),
        Command::WaitReady { timeout, kubeconfig } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(wait_ready::run(kubeconfig, timeout))
        }
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
        Command::Server(mut args) => {
            let ephemeral = if args.ephemeral {
                let ephemeral = ephemeral::Ephemeral::create()?;
                args.data_dir = ephemeral.data_dir();
                if args.write_kubeconfig.is_none() {
                    args.write_kubeconfig = Some(ephemeral.root.join("kubeconfig.yaml"));
                }
                tracing::info!(dir = %ephemeral.root.display(), "ephemeral cluster: everything goes on exit");
                Some(ephemeral)
            } else {
                None
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let served = runtime.block_on(server::run(*args));
            // The ephemeral cluster goes once no task of the server runs any more (none can start a pod again).
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            let removed = ephemeral.map_or(Ok(()), ephemeral::Ephemeral::teardown);
            served.and(removed)
        }
    }
}
