//! Terminals: receiving a container's pseudo-terminal master from libcontainer (which sends it over a "console
//! socket" once the container's side is set up), resizing it, and putting the user's terminal in raw mode while
//! it is attached to a container's.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::termios::{OptionalActions, Termios, Winsize};

use super::ContainerError;

/// Accepts libcontainer's connection on `listener` and takes the terminal master it sends.
pub fn receive_master(listener: &UnixListener) -> Result<OwnedFd, ContainerError> {
    let (stream, _) = listener
        .accept()
        .map_err(|e| ContainerError::Runtime(format!("console socket: {e}")))?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut name = [0u8; 4096];
    rustix::net::recvmsg(
        &stream,
        &mut [std::io::IoSliceMut::new(&mut name)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| ContainerError::Runtime(format!("receiving the terminal: {e}")))?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(ContainerError::Runtime(
        "the console socket carried no terminal".into(),
    ))
}

/// Sets the terminal's size (the kernel sends SIGWINCH to its foreground process group).
pub fn resize(fd: impl AsFd, rows: u16, cols: u16) -> Result<(), ContainerError> {
    rustix::termios::tcsetwinsize(
        fd,
        Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .map_err(|e| ContainerError::Runtime(format!("resizing the terminal: {e}")))
}

/// The terminal's size as (rows, columns), when `fd` is a terminal.
pub fn size(fd: impl AsFd) -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(fd).ok()?;
    Some((size.ws_row, size.ws_col))
}

pub fn is_terminal(fd: impl AsFd) -> bool {
    rustix::termios::isatty(fd)
}

/// Raw mode on this process's standard input while it lives (when that is a terminal): keystrokes such as
/// Ctrl-C go to the container's terminal instead of signalling us.
#[derive(Debug)]
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(saved) = &saved {
            let mut raw = saved.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(&stdin, OptionalActions::Now, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = rustix::termios::tcsetattr(std::io::stdin(), OptionalActions::Now, saved);
        }
    }
}
