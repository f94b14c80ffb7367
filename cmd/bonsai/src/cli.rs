//! The command line. Flag names, short forms and environment variables follow k3s, with bonsai's
//! own names (`BONSAI_*`, `/var/lib/bonsai`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use embedded_store::EngineKind;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/bonsai";

#[derive(Debug, Parser)]
#[command(name = "bonsai", about = "A whole Kubernetes distribution in one small binary", version = crate::version::SHORT)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "BONSAI_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Turn on debug logs (RUST_LOG, when set, takes precedence).
    #[arg(long, global = true, env = "BONSAI_DEBUG")]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a server: the cluster's control plane (and, in later versions, a node agent).
    Server(ServerArgs),
    /// Join this machine to a cluster as a node.
    Agent(AgentArgs),
    /// Print the version.
    Version,
    /// Print a shell completion script (e.g. `bonsai completion bash > /etc/bash_completion.d/bonsai`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Folder to hold state.
    #[arg(short = 'd', long, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Engine for a new embedded store; an existing store keeps the engine it was made with.
    #[arg(long, env = "BONSAI_STORE_ENGINE", value_parser = parse_engine)]
    pub store_engine: Option<EngineKind>,

    /// Page cache of the embedded store, in MiB.
    #[arg(long, env = "BONSAI_STORE_CACHE_MB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub store_cache_mb: u32,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Server to connect to, e.g. https://10.0.0.1:6443.
    #[arg(short = 's', long, env = "BONSAI_URL")]
    pub server: String,

    /// Join token (the server keeps it in <data-dir>/server/token).
    #[arg(short = 't', long, env = "BONSAI_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Folder to hold state.
    #[arg(short = 'd', long, env = "BONSAI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

fn parse_engine(s: &str) -> Result<EngineKind, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_defaults_follow_the_k3s_layout() {
        let cli = Cli::try_parse_from(["bonsai", "server"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not a server command")
        };
        assert_eq!(args.data_dir, PathBuf::from("/var/lib/bonsai"));
        assert_eq!(args.store_engine, None);
        assert_eq!(cli.log_format, LogFormat::Human);
    }

    #[test]
    fn an_unknown_engine_is_refused_by_name() {
        let err = Cli::try_parse_from(["bonsai", "server", "--store-engine", "rocksdb"]).unwrap_err();
        assert!(err.to_string().contains("rocksdb"), "{err}");
    }
}
