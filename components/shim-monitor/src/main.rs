//! `bonsai-shim-monitor DIR`: a container's monitor, executed by its shim with the hand-off on standard input
//! (see the library). Its standard error is the shim's log.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let [_, dir] = &args[..] else {
        eprintln!(
            "usage: bonsai-shim-monitor DIR (started by a container's shim, with its hand-off on standard input)"
        );
        return ExitCode::from(2);
    };
    match shim_monitor::run(std::path::Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bonsai-shim-monitor: {e}");
            ExitCode::FAILURE
        }
    }
}
