//! The few kernel settings a node's pod network needs, written for the calling thread's network namespace.

use std::path::Path;

use crate::NetworkError;

/// Sets `/proc/sys/<key>` (dots as slashes) to `value` unless it already has it. `optional` settings (the
/// bridge ones exist only with `br_netfilter`) are skipped when absent.
pub fn set(key: &str, value: &str, optional: bool) -> Result<(), NetworkError> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    match std::fs::read_to_string(&path) {
        Ok(current) if current.trim() == value => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional => return Ok(()),
        _ => {}
    }
    std::fs::write(&path, value).map_err(|source| NetworkError::Io {
        what: format!("setting {key} = {value}"),
        source,
    })
}
