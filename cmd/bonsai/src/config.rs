//! The configuration file on the command line: `bonsai server` reads `--config` (`-c`, `BONSAI_CONFIG_FILE`,
//! default /etc/bonsai/config.yaml) and its drop-ins (components/configfile) and turns each key into the long flag
//! of the same name. A flag given on the command line or through its environment variable wins over the file
//! (for repeatable flags, the command line's values replace the file's list, as in k3s).

use std::ffi::OsString;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches};

/// The subcommands that read a config file: those whose arguments have a `config` flag.
const READS_CONFIG: [&str; 2] = ["server", "agent"];

/// `argv` with the config file's flags inserted after the subcommand, or `argv` as it is when the command reads
/// no config file (or the command line does not parse: clap then reports it as usual).
pub fn apply(command: &clap::Command, argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    // Leniently: flags the file is to supply (an agent's --server and --token) may be missing from the command line.
    let Ok(matches) = command.clone().ignore_errors(true).try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let Some((name, sub_matches)) = matches.subcommand() else {
        return Ok(argv);
    };
    if !READS_CONFIG.contains(&name) {
        return Ok(argv);
    }
    let Some(sub) = command.find_subcommand(name) else {
        return Ok(argv);
    };
    if !sub.get_arguments().any(|a| a.get_id() == "config") {
        return Ok(argv);
    }
    let Some(path) = sub_matches.get_one::<std::path::PathBuf>("config") else {
        return Ok(argv);
    };
    let required = sub_matches.value_source("config") != Some(ValueSource::DefaultValue);
    let settings = configfile::load(path, required)?;
    let extra = flags(sub, sub_matches, &settings)?;
    if extra.is_empty() {
        return Ok(argv);
    }
    // Right after the subcommand's name, so that the flags belong to it.
    let at = argv
        .iter()
        .skip(1)
        .position(|a| a == name)
        .map(|i| i + 2)
        .context("cannot find the subcommand on the command line")?;
    let mut merged = argv[..at].to_vec();
    merged.extend(extra);
    merged.extend_from_slice(&argv[at..]);
    Ok(merged)
}

/// The flags the settings stand for, leaving out those the command line or the environment set.
fn flags(
    sub: &clap::Command,
    matches: &ArgMatches,
    settings: &[configfile::Setting],
) -> anyhow::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for setting in settings {
        let key = &setting.key;
        let file = setting.file.display();
        let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !a.is_hide_set())
        else {
            bail!(
                "unknown key {key:?} in {file}: `bonsai {}` has no flag --{key} (see `bonsai {} --help`)",
                sub.get_name(),
                sub.get_name()
            );
        };
        if arg.get_id() == "config" {
            bail!("key {key:?} in {file}: a config file cannot name another config file");
        }
        if matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        match arg.get_action() {
            ArgAction::SetTrue => match setting.values.as_slice() {
                [v] if v == "true" => out.push(format!("--{key}").into()),
                [v] if v == "false" => {}
                _ => bail!("key {key:?} in {file}: --{key} is a switch: give true or false"),
            },
            ArgAction::Append => {
                for value in &setting.values {
                    out.push(format!("--{key}={value}").into());
                }
            }
            _ => match setting.values.as_slice() {
                [value] if !setting.list => out.push(format!("--{key}={value}").into()),
                _ => bail!("key {key:?} in {file}: --{key} takes one value, not a list"),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use clap::{CommandFactory, FromArgMatches};

    use crate::cli::{Cli, Command};

    fn parse(dir: &std::path::Path, file: &str, argv: &[&str]) -> anyhow::Result<crate::cli::ServerArgs> {
        let path = dir.join("config.yaml");
        std::fs::write(&path, file).unwrap();
        let mut full: Vec<std::ffi::OsString> =
            vec!["bonsai".into(), "server".into(), "-c".into(), path.into()];
        full.extend(argv.iter().map(|a| a.into()));
        let command = Cli::command();
        let merged = super::apply(&command, full)?;
        let cli = Cli::from_arg_matches(&command.try_get_matches_from(merged)?)?;
        let Command::Server(args) = cli.command else {
            panic!("not a server")
        };
        Ok(*args)
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = "https-listen-port: 7443\nnode-label: [a=1, b=2]\ndisable-agent: true\ndisable: [servicelb]\n\
                    cluster-domain: file.local\n";
        let args = parse(dir.path(), file, &[]).unwrap();
        assert_eq!(args.https_listen_port, 7443);
        assert!(args.disable_agent);
        assert_eq!(args.disable, ["servicelb"]);
        assert_eq!(args.node_labels.len(), 2);
        assert_eq!(args.cluster_domain, "file.local");
        // A flag beats the file; for a repeatable flag, the command line's values replace the file's.
        let args = parse(
            dir.path(),
            file,
            &["--https-listen-port", "9443", "--node-label", "c=3"],
        )
        .unwrap();
        assert_eq!(args.https_listen_port, 9443);
        assert_eq!(args.node_labels, [("c".to_string(), "3".to_string())]);
    }

    #[test]
    fn the_file_can_supply_a_required_flag() {
        use clap::{Arg, Command as App};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "token: from-file\nserver: https://10.0.0.1:6443\n").unwrap();
        let app = App::new("bonsai").subcommand(
            App::new("agent")
                .arg(
                    Arg::new("config")
                        .long("config")
                        .value_parser(clap::value_parser!(std::path::PathBuf)),
                )
                .arg(Arg::new("server").long("server").required(true))
                .arg(Arg::new("token").long("token").required(true)),
        );
        let argv = [
            "bonsai",
            "agent",
            "--config",
            path.to_str().unwrap(),
            "--server",
            "https://flag:6443",
        ];
        let merged = super::apply(&app, argv.iter().map(Into::into).collect()).unwrap();
        let matches = app.try_get_matches_from(merged).unwrap();
        let agent = matches.subcommand_matches("agent").unwrap();
        assert_eq!(agent.get_one::<String>("token").unwrap(), "from-file");
        assert_eq!(agent.get_one::<String>("server").unwrap(), "https://flag:6443");
    }

    #[test]
    fn unknown_keys_and_wrong_shapes_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse(dir.path(), "no-such-flag: 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"no-such-flag\"") && err.contains("config.yaml"),
            "{err}"
        );
        let err = parse(dir.path(), "https-listen-port: [1, 2]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("takes one value"), "{err}");
        let err = parse(dir.path(), "disable-agent: maybe\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("true or false"), "{err}");
        let err = parse(dir.path(), "https-listen-port: lots\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lots"), "{err}");
    }
}
