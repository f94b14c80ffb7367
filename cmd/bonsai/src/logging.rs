use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Logs go to standard error, human-readable by default, one JSON object a line with
/// `--log-format json`.
pub fn init(format: LogFormat, debug: bool) {
    // youki's crates report every cgroup v1 controller this kernel lacks: noise unless debugging.
    let default = if debug {
        "debug"
    } else {
        "info,libcgroups=error,libcontainer=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal, never into log files or pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}
