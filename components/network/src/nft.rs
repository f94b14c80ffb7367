//! nftables: bonsai programs only its own table (`ip bonsai`), each part of it only its own chains and maps,
//! and always as one `nft -f` transaction (the kernel applies all of it or none of it). Scripts are in nft's
//! own documented language, fed on standard input; nothing else's rules are read or flushed.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::NetworkError;

pub const TABLE: &str = "bonsai";

/// Runs `nft -f -` with `script`; the error carries nft's own message.
pub fn apply(script: &str) -> Result<(), NetworkError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetworkError::Io {
            what: "running nft (install the nftables package)".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|source| NetworkError::Io {
                what: "writing to nft".into(),
                source,
            })?;
    }
    let output = child.wait_with_output().map_err(|source| NetworkError::Io {
        what: "waiting for nft".into(),
        source,
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Nft(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}

/// Removes bonsai's table and everything in it (shutdown with `--cleanup`, uninstall). Absent is fine.
pub fn delete_table() -> Result<(), NetworkError> {
    // Declaring the table first makes the delete succeed when it does not exist, in the same transaction.
    apply(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"))
}

/// The rules of bonsai's table, as `nft list table` prints them (for diagnostics and tests).
pub fn list_table() -> Result<Option<String>, NetworkError> {
    let output = Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .output()
        .map_err(|source| NetworkError::Io {
            what: "running nft".into(),
            source,
        })?;
    Ok(output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned()))
}
