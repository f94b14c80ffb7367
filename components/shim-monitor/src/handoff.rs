//! The hand-off from the set-up shim to the monitor across `execve`: a few `key=value` lines on a socket that
//! becomes the monitor's standard input, with the descriptors beside them as `SCM_RIGHTS`, in this order: the
//! log, the attach listener, each output, the stdin writer, the terminal master, the first client.

use std::collections::VecDeque;
use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};

use crate::MonitorError;
use crate::stdio::{Stream, Streams};

/// The most descriptors a hand-off carries (log, listener, two outputs, stdin, terminal, first client).
pub const MAX_FDS: usize = 7;
/// The longest hand-off text accepted.
const MAX_TEXT: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    /// The container's init.
    pub pid: i32,
    /// Its cgroup, relative to the cgroup root (`/bonsai/pod-<uid>/<id>`).
    pub cgroups_path: String,
    /// One per output descriptor: true for stderr.
    pub outputs: Vec<bool>,
    pub stdin: bool,
    pub terminal: bool,
    pub stdin_once: bool,
    /// A client attached before the container started (it waited for one), to be served from the start.
    pub client: bool,
}

/// What the descriptors of a hand-off become.
#[derive(Debug)]
pub struct Received {
    pub handoff: Handoff,
    pub log: File,
    pub listener: UnixListener,
    pub streams: Streams,
    pub client: Option<UnixStream>,
}

fn flag(value: bool) -> &'static str {
    if value { "1" } else { "0" }
}

impl Handoff {
    pub fn encode(&self) -> Result<String, MonitorError> {
        if self.cgroups_path.contains('\n') {
            return Err(MonitorError::Handoff("the cgroups path holds a newline".into()));
        }
        let outputs: Vec<&str> = self
            .outputs
            .iter()
            .map(|stderr| if *stderr { "stderr" } else { "stdout" })
            .collect();
        Ok(format!(
            "pid={}\ncgroups_path={}\noutputs={}\nstdin={}\nterminal={}\nstdin_once={}\nclient={}\n",
            self.pid,
            self.cgroups_path,
            outputs.join(","),
            flag(self.stdin),
            flag(self.terminal),
            flag(self.stdin_once),
            flag(self.client)
        ))
    }

    pub fn decode(text: &str) -> Result<Handoff, MonitorError> {
        let bad = |what: &str| MonitorError::Handoff(what.to_string());
        let (mut pid, mut cgroups_path, mut outputs) = (None, None, None);
        let (mut stdin, mut terminal, mut stdin_once, mut client) = (None, None, None, None);
        let parse_flag = |value: &str| match value {
            "1" => Ok(true),
            "0" => Ok(false),
            other => Err(MonitorError::Handoff(format!(
                "flag {other:?} is neither 0 nor 1"
            ))),
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once('=').ok_or_else(|| bad("a line without '='"))?;
            match key {
                "pid" => pid = Some(value.parse::<i32>().map_err(|_| bad("pid is not a number"))?),
                "cgroups_path" => cgroups_path = Some(value.to_string()),
                "outputs" => {
                    outputs = Some(
                        value
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(|s| match s {
                                "stdout" => Ok(false),
                                "stderr" => Ok(true),
                                other => Err(MonitorError::Handoff(format!("unknown output {other:?}"))),
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    )
                }
                "stdin" => stdin = Some(parse_flag(value)?),
                "terminal" => terminal = Some(parse_flag(value)?),
                "stdin_once" => stdin_once = Some(parse_flag(value)?),
                "client" => client = Some(parse_flag(value)?),
                other => return Err(MonitorError::Handoff(format!("unknown key {other:?}"))),
            }
        }
        let pid = pid.filter(|p| *p > 0).ok_or_else(|| bad("no pid"))?;
        let handoff = Handoff {
            pid,
            cgroups_path: cgroups_path.ok_or_else(|| bad("no cgroups_path"))?,
            outputs: outputs.ok_or_else(|| bad("no outputs"))?,
            stdin: stdin.ok_or_else(|| bad("no stdin"))?,
            terminal: terminal.ok_or_else(|| bad("no terminal"))?,
            stdin_once: stdin_once.ok_or_else(|| bad("no stdin_once"))?,
            client: client.ok_or_else(|| bad("no client"))?,
        };
        if handoff.fd_count() > MAX_FDS {
            return Err(bad("too many descriptors"));
        }
        Ok(handoff)
    }

    /// How many descriptors travel with it.
    pub fn fd_count(&self) -> usize {
        2 + self.outputs.len()
            + usize::from(self.stdin)
            + usize::from(self.terminal)
            + usize::from(self.client)
    }
}

/// Sends the hand-off and its descriptors (in the order the module's header gives) on `socket`. The queued
/// message, and the descriptors in flight with it, outlive the sending end.
pub fn send(socket: impl AsFd, handoff: &Handoff, fds: &[BorrowedFd<'_>]) -> Result<(), MonitorError> {
    if fds.len() != handoff.fd_count() {
        return Err(MonitorError::Handoff(format!(
            "{} descriptors for a hand-off of {}",
            fds.len(),
            handoff.fd_count()
        )));
    }
    let text = handoff.encode()?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(MonitorError::Handoff("too many descriptors".into()));
    }
    rustix::net::sendmsg(
        socket,
        &[std::io::IoSlice::new(text.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|source| MonitorError::Os {
        what: "sending the hand-off",
        source,
    })?;
    Ok(())
}

/// Receives a hand-off on `socket` (the monitor's standard input).
pub fn receive(socket: impl AsFd) -> Result<Received, MonitorError> {
    let mut text = vec![0u8; MAX_TEXT];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        socket,
        &mut [std::io::IoSliceMut::new(&mut text)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|source| MonitorError::Os {
        what: "receiving the hand-off",
        source,
    })?;
    let mut fds: VecDeque<OwnedFd> = control
        .drain()
        .flat_map(|message| match message {
            RecvAncillaryMessage::ScmRights(fds) => fds.collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    let text = std::str::from_utf8(text.get(..received.bytes).unwrap_or_default())
        .map_err(|_| MonitorError::Handoff("the hand-off is not UTF-8".into()))?;
    let handoff = Handoff::decode(text)?;
    if fds.len() != handoff.fd_count() {
        return Err(MonitorError::Handoff(format!(
            "{} descriptors came with a hand-off of {}",
            fds.len(),
            handoff.fd_count()
        )));
    }
    let mut next = || {
        fds.pop_front()
            .ok_or_else(|| MonitorError::Handoff("a descriptor is missing".into()))
    };
    let log = File::from(next()?);
    let listener = UnixListener::from(next()?);
    let mut outputs = Vec::new();
    for stderr in &handoff.outputs {
        outputs.push((next()?, if *stderr { Stream::Stderr } else { Stream::Stdout }));
    }
    let stdin = if handoff.stdin { Some(next()?) } else { None };
    let terminal = if handoff.terminal { Some(next()?) } else { None };
    let client = if handoff.client {
        Some(UnixStream::from(next()?))
    } else {
        None
    };
    let streams = Streams {
        outputs,
        stdin,
        stdin_once: handoff.stdin_once,
        terminal,
    };
    Ok(Received {
        handoff,
        log,
        listener,
        streams,
        client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn sample() -> Handoff {
        Handoff {
            pid: 4242,
            cgroups_path: "/bonsai/pod-1/web".into(),
            outputs: vec![false, true],
            stdin: true,
            terminal: false,
            stdin_once: true,
            client: false,
        }
    }

    #[test]
    fn text_round_trip_and_bad_input() {
        let handoff = sample();
        assert_eq!(Handoff::decode(&handoff.encode().unwrap()).unwrap(), handoff);
        let text = handoff.encode().unwrap();
        for bad in [
            text.replace("pid=4242", "pid=x"),
            text.replace("pid=4242", "pid=0"),
            text.replace("stdin=1", "stdin=yes"),
            text.replace("outputs=stdout,stderr", "outputs=stdweird"),
            text.replace("terminal=0\n", ""),
            format!("{text}extra=1\n"),
            "garbage".into(),
        ] {
            assert!(Handoff::decode(&bad).is_err(), "{bad}");
        }
        let mut newline = sample();
        newline.cgroups_path.push('\n');
        assert!(newline.encode().is_err());
    }

    #[test]
    fn descriptors_travel_with_the_text() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = File::create(dir.path().join("log")).unwrap();
        let listener = UnixListener::bind(dir.path().join("sock")).unwrap();
        let (out_read, mut out_write) = std::io::pipe().unwrap();
        let (err_read, _err_write) = std::io::pipe().unwrap();
        let (mut stdin_read, stdin_write) = std::io::pipe().unwrap();
        let handoff = sample();
        send(
            &ours,
            &handoff,
            &[
                log.as_fd(),
                listener.as_fd(),
                out_read.as_fd(),
                err_read.as_fd(),
                stdin_write.as_fd(),
            ],
        )
        .unwrap();
        // Wrong counts are refused before anything is sent.
        assert!(send(&ours, &handoff, &[log.as_fd()]).is_err());
        drop((out_read, stdin_write));
        let received = receive(&theirs).unwrap();
        assert_eq!(received.handoff, handoff);
        // The received descriptors are the same pipes.
        out_write.write_all(b"out").unwrap();
        let mut buf = [0u8; 3];
        File::from(received.streams.outputs[0].0.try_clone().unwrap())
            .read_exact(&mut buf)
            .unwrap();
        assert_eq!(&buf, b"out");
        File::from(received.streams.stdin.unwrap())
            .write_all(b"in")
            .unwrap();
        let mut buf = [0u8; 2];
        stdin_read.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"in");
        assert_eq!(received.streams.outputs[1].1, Stream::Stderr);
    }
}
