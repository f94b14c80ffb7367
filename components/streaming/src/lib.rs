//! The streaming protocols kubectl speaks for `pods/exec`, `pods/attach` and `pods/portforward`, server side.
//!
//! The crate knows nothing of containers: it turns an upgraded HTTP connection into typed streams.
//!
//! 1. [`negotiate`] reads the request's upgrade headers (WebSocket with `Sec-WebSocket-Protocol`, or SPDY/3.1
//!    with `X-Stream-Protocol-Version`) and picks the protocol; [`Negotiated::response`] is the 101 answer.
//! 2. After the 101, the caller hands the upgraded connection ([`upgraded`] turns hyper's into tokio I/O) to
//!    [`serve_remote_command`] (exec, attach) or [`serve_port_forward`].
//! 3. A [`RemoteCommand`] has stdin, stdout and stderr as in-memory pipes, terminal resizes, and
//!    [`RemoteCommand::finish`], which sends the `metav1.Status` kube sends and closes the connection. A
//!    [`PortForward`] yields one [`ForwardedConnection`] per TCP connection kubectl forwards.
//!
//! Both transports of remote command (WebSocket channels `v5`/`v4.channel.k8s.io`, and SPDY streams for
//! `v4`..`v1`) end up behind the same [`RemoteCommand`]; port-forward runs SPDY either directly or tunnelled in
//! WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`).

mod portforward;
mod remotecommand;
mod spdy;
mod upgrade;
mod websocket;

pub use portforward::{ForwardedConnection, PortForward, serve_port_forward};
pub use remotecommand::{Failure, RemoteCommand, StreamOptions, TerminalSize, serve_remote_command};
pub use upgrade::{Negotiated, Subresource, Transport, negotiate, upgraded};

/// What can go wrong serving a streaming request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be upgraded as asked; answer it with this HTTP status (kube's words in `message`).
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// The peer broke the SPDY protocol (or header compression failed).
    #[error("SPDY: {0}")]
    Spdy(String),
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("upgrading the connection: {0}")]
    Upgrade(#[from] hyper::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The client did not open the streams it asked for in time (kube's streamCreationTimeout).
    #[error("timed out waiting for client to create streams")]
    StreamsTimedOut,
    /// The connection ended before the session was set up.
    #[error("the connection closed")]
    Closed,
}

impl Error {
    pub(crate) fn refused(status: u16, message: impl Into<String>) -> Self {
        Error::Refused {
            status,
            message: message.into(),
        }
    }
}
