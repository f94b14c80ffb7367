//! The monitor's standard-stream loop: one thread, one `poll`, no async runtime. It reads the container's output
//! (two pipes, or one terminal master), writes it to the CRI log a line at a time, copies it to every attached
//! client, and feeds clients' input and terminal resizes back to the container. It ends when the container's
//! output has ended, after flushing what the clients have not yet read.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};

use crate::frame::{Decoder, Frame};
use crate::log::{MAX_LINE, log_lines};
/// A client that falls this far behind is disconnected rather than allowed to stall the container's output.
const MAX_CLIENT_BACKLOG: usize = 4 << 20;
/// Input waiting for the container beyond this stops reading from clients until the container catches up.
const MAX_PENDING_STDIN: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn frame(self, data: &[u8]) -> Frame {
        match self {
            Stream::Stdout => Frame::Stdout(data.to_vec()),
            Stream::Stderr => Frame::Stderr(data.to_vec()),
        }
    }
}

#[derive(Debug)]
struct Output {
    source: File,
    stream: Stream,
    partial: Vec<u8>,
    open: bool,
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    decoder: Decoder,
    backlog: Vec<u8>,
    input_open: bool,
}

/// What the container's standard streams are connected to, on the shim's side.
#[derive(Debug)]
pub struct Streams {
    /// The container's output: stdout and stderr pipes, or the terminal master (all output is stdout then).
    pub outputs: Vec<(OwnedFd, Stream)>,
    /// Where clients' input goes: the stdin pipe's write end or the terminal master; none without stdin.
    pub stdin: Option<OwnedFd>,
    /// Close the container's input when the first client that sent input detaches (Kubernetes' `stdinOnce`).
    pub stdin_once: bool,
    /// The terminal master, for resizes.
    pub terminal: Option<OwnedFd>,
}

#[derive(Debug)]
pub struct StdioLoop {
    outputs: Vec<Output>,
    stdin: Option<File>,
    pending_stdin: Vec<u8>,
    stdin_once: bool,
    terminal: Option<OwnedFd>,
    listener: UnixListener,
    clients: Vec<Client>,
    log: File,
}

fn is_closed(flags: PollFlags) -> bool {
    flags.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL)
}

impl StdioLoop {
    pub fn new(
        streams: Streams,
        listener: UnixListener,
        log: File,
        first_client: Option<UnixStream>,
    ) -> StdioLoop {
        let _ = listener.set_nonblocking(true);
        let terminal = streams.terminal;
        // Writes to the container's input must never block the loop (it polls for room instead).
        if let Some(stdin) = &streams.stdin {
            let _ = rustix::io::ioctl_fionbio(stdin, true);
        }
        StdioLoop {
            outputs: streams
                .outputs
                .into_iter()
                .map(|(fd, stream)| Output {
                    source: File::from(fd),
                    stream,
                    partial: Vec::new(),
                    open: true,
                })
                .collect(),
            stdin: streams.stdin.map(File::from),
            pending_stdin: Vec::new(),
            stdin_once: streams.stdin_once && terminal.is_none(),
            terminal,
            listener,
            clients: Vec::new(),
            log,
        }
        .with_clients(first_client)
    }

    /// Adds clients accepted before the loop began (the one a container waited for before it started).
    fn with_clients(mut self, clients: impl IntoIterator<Item = UnixStream>) -> StdioLoop {
        for stream in clients {
            self.add_client(stream);
        }
        self
    }

    fn add_client(&mut self, stream: UnixStream) {
        let _ = stream.set_nonblocking(true);
        self.clients.push(Client {
            stream,
            decoder: Decoder::default(),
            backlog: Vec::new(),
            input_open: true,
        });
    }

    /// Runs until the container's output ends.
    pub fn run(mut self) {
        let mut buffer = vec![0u8; MAX_LINE];
        while self.outputs.iter().any(|o| o.open) {
            let read_clients = self.pending_stdin.len() < MAX_PENDING_STDIN;
            let (listener_ready, output_ready, client_ready, stdin_ready) = {
                let mut fds = vec![PollFd::new(&self.listener, PollFlags::IN)];
                for output in &self.outputs {
                    let flags = if output.open {
                        PollFlags::IN
                    } else {
                        PollFlags::empty()
                    };
                    fds.push(PollFd::new(&output.source, flags));
                }
                for client in &self.clients {
                    let mut flags = PollFlags::empty();
                    if read_clients {
                        flags |= PollFlags::IN;
                    }
                    if !client.backlog.is_empty() {
                        flags |= PollFlags::OUT;
                    }
                    fds.push(PollFd::new(&client.stream, flags));
                }
                let stdin_index = fds.len();
                if let Some(stdin) = &self.stdin
                    && !self.pending_stdin.is_empty()
                {
                    fds.push(PollFd::new(stdin, PollFlags::OUT));
                }
                match rustix::event::poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => return,
                }
                let outputs = 1..1 + self.outputs.len();
                let clients = outputs.end..outputs.end + self.clients.len();
                (
                    !fds[0].revents().is_empty(),
                    fds[outputs].iter().map(|f| f.revents()).collect::<Vec<_>>(),
                    fds[clients].iter().map(|f| f.revents()).collect::<Vec<_>>(),
                    fds.get(stdin_index)
                        .map(|f| f.revents())
                        .unwrap_or(PollFlags::empty()),
                )
            };
            for (index, flags) in output_ready.into_iter().enumerate() {
                if !flags.is_empty() {
                    self.read_output(index, &mut buffer);
                }
            }
            if !stdin_ready.is_empty() {
                self.write_stdin();
            }
            // Clients, last to first so that removing one keeps the others' indices.
            for (index, flags) in client_ready.into_iter().enumerate().rev() {
                if flags.contains(PollFlags::OUT) || is_closed(flags) {
                    self.write_client(index);
                }
                if index < self.clients.len() && (flags.contains(PollFlags::IN) || is_closed(flags)) {
                    self.read_client(index, &mut buffer);
                }
            }
            if listener_ready {
                self.accept();
            }
        }
        self.finish();
    }

    fn read_output(&mut self, index: usize, buffer: &mut [u8]) {
        let output = &mut self.outputs[index];
        let (data, eof) = match output.source.read(buffer) {
            Ok(0) => (&buffer[..0], true),
            Ok(n) => (&buffer[..n], false),
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => return,
            // A terminal master reads EIO once the container's side is closed: that is its end.
            Err(_) => (&buffer[..0], true),
        };
        let lines = log_lines(output.stream.name(), &mut output.partial, data, eof);
        let _ = self.log.write_all(&lines);
        if eof {
            output.open = false;
            return;
        }
        let frame = output.stream.frame(data).encode();
        self.clients.retain_mut(|client| {
            client.backlog.extend_from_slice(&frame);
            client.backlog.len() <= MAX_CLIENT_BACKLOG
        });
    }

    fn write_stdin(&mut self) {
        let Some(stdin) = &mut self.stdin else {
            self.pending_stdin.clear();
            return;
        };
        match stdin.write(&self.pending_stdin) {
            Ok(n) => {
                self.pending_stdin.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {}
            // The container closed its input: nothing more can go there.
            Err(_) => {
                self.stdin = None;
                self.pending_stdin.clear();
            }
        }
    }

    fn write_client(&mut self, index: usize) {
        let client = &mut self.clients[index];
        match client.stream.write(&client.backlog) {
            Ok(n) => {
                client.backlog.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => self.detach(index),
        }
    }

    fn read_client(&mut self, index: usize, buffer: &mut [u8]) {
        let client = &mut self.clients[index];
        match client.stream.read(buffer) {
            Ok(0) => return self.detach(index),
            Ok(n) => client.decoder.push(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => return self.detach(index),
        }
        loop {
            match self.clients[index].decoder.next_frame() {
                Ok(None) => return,
                Ok(Some(Frame::Stdin(data))) => {
                    if self.stdin.is_some() && self.clients[index].input_open {
                        self.pending_stdin.extend_from_slice(&data);
                        self.write_stdin();
                    }
                }
                Ok(Some(Frame::CloseStdin)) => {
                    self.clients[index].input_open = false;
                    self.input_ended();
                }
                Ok(Some(Frame::Resize { rows, cols })) => {
                    if let Some(terminal) = &self.terminal {
                        // The kernel sends SIGWINCH to the terminal's foreground process group.
                        let _ = rustix::termios::tcsetwinsize(
                            terminal.as_fd(),
                            rustix::termios::Winsize {
                                ws_row: rows,
                                ws_col: cols,
                                ws_xpixel: 0,
                                ws_ypixel: 0,
                            },
                        );
                    }
                }
                // Output frames from a client, or garbage: a broken client.
                Ok(Some(Frame::Stdout(_) | Frame::Stderr(_))) | Err(_) => return self.detach(index),
            }
        }
    }

    /// A client's input ended: with `stdinOnce`, so does the container's once what it sent is delivered.
    fn input_ended(&mut self) {
        if self.stdin_once && self.stdin.is_some() {
            if let Some(stdin) = &mut self.stdin {
                let _ = write_all_blocking(stdin, &self.pending_stdin);
            }
            self.pending_stdin.clear();
            self.stdin = None;
        }
    }

    fn detach(&mut self, index: usize) {
        let client = self.clients.remove(index);
        if client.input_open {
            self.input_ended();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.add_client(stream),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// The container's output has ended: hand clients what they have not read (briefly), then close them.
    fn finish(&mut self) {
        for client in &mut self.clients {
            let _ = client.stream.set_nonblocking(false);
            let _ = client.stream.set_write_timeout(Some(Duration::from_secs(5)));
            let _ = client.stream.write_all(&client.backlog);
        }
        self.clients.clear();
    }
}

/// Writes everything, waiting for a non-blocking descriptor to take it.
fn write_all_blocking(file: &mut File, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match file.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(file, PollFlags::OUT)];
                let _ = rustix::event::poll(&mut fds, None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn output_reaches_the_log_and_the_first_client_and_input_reaches_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("attach.sock")).unwrap();
        let log_path = dir.path().join("container.log");
        let log = File::create(&log_path).unwrap();
        let (out_read, mut out_write) = std::io::pipe().unwrap();
        let (err_read, err_write) = std::io::pipe().unwrap();
        let (mut stdin_read, stdin_write) = std::io::pipe().unwrap();
        let (mut client, first) = UnixStream::pair().unwrap();
        let streams = Streams {
            outputs: vec![
                (out_read.into(), Stream::Stdout),
                (err_read.into(), Stream::Stderr),
            ],
            stdin: Some(stdin_write.into()),
            stdin_once: true,
            terminal: None,
        };
        let io = std::thread::spawn(move || StdioLoop::new(streams, listener, log, Some(first)).run());
        // The client's input, then its end (stdinOnce closes the container's input).
        client
            .write_all(&Frame::Stdin(b"in\n".to_vec()).encode())
            .unwrap();
        client.write_all(&Frame::CloseStdin.encode()).unwrap();
        let mut input = Vec::new();
        stdin_read.read_to_end(&mut input).unwrap();
        assert_eq!(input, b"in\n");
        out_write.write_all(b"hello\nwor").unwrap();
        drop(out_write);
        drop(err_write);
        io.join().unwrap();
        // The loop ended with the output and closed the client after sending it everything.
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        let mut decoder = Decoder::default();
        decoder.push(&received);
        let mut out = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            match frame {
                Frame::Stdout(data) => out.extend(data),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(out, b"hello\nwor");
        let log = std::fs::read_to_string(&log_path).unwrap();
        let texts: Vec<&str> = log.lines().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(texts, ["stdout F hello", "stdout F wor"]);
    }
}
