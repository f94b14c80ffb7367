//! The attach protocol spoken over `<state>/attach.sock` between a container's shim and the clients attached to
//! its standard streams (`bonsai attach`, and the node agent's attach/exec streams later). Each message is a
//! frame: a kind byte, a big-endian u32 payload length, the payload. The shim closes a client's connection once
//! the container has ended and all of its output has been sent; the exit status is then in `exit.json`.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

pub use shim_monitor::frame::{Decoder, Frame, MAX_PAYLOAD, ProtocolError};

use super::ContainerError;

/// The socket's file name in a container's state directory.
pub const SOCKET: &str = shim_monitor::ATTACH_SOCKET;

/// A path naming `dir/name` that fits in a unix socket address (108 bytes) however deep `dir` is: the directory
/// is reached through this process's descriptor for it, which must stay open while the path is used.
fn short_path(dir: &std::fs::File, name: &str) -> String {
    format!("/proc/self/fd/{}/{name}", dir.as_raw_fd())
}

fn open_dir(dir: &Path) -> Result<std::fs::File, ContainerError> {
    std::fs::File::open(dir).map_err(|source| ContainerError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Listens on `dir/name` (replacing a stale socket).
pub fn listen(dir: &Path, name: &str) -> Result<UnixListener, ContainerError> {
    let handle = open_dir(dir)?;
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ContainerError::Io { path, source }),
    }
    UnixListener::bind(short_path(&handle, name)).map_err(|source| ContainerError::Io { path, source })
}

/// Connects to `dir/name`.
pub fn connect(dir: &Path, name: &str) -> Result<UnixStream, std::io::Error> {
    let handle = std::fs::File::open(dir)?;
    UnixStream::connect(short_path(&handle, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_in_directories_deeper_than_a_socket_address() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let listener = listen(&deep, SOCKET).unwrap();
        let mut client = connect(&deep, SOCKET).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        use std::io::{Read, Write};
        client.write_all(b"x").unwrap();
        let mut byte = [0];
        server.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
        // A stale socket file is replaced.
        drop(listener);
        listen(&deep, SOCKET).unwrap();
    }
}
