//! TCP probes (`pkg/probe/tcp`): the probe passes when a connection opens within the timeout. The dialer is
//! shared with HTTP probes, and its errors read as Go's `net.Dial` errors, which is what the kubelet's events
//! show.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use super::{ProbeResult, join_host_port};

pub(super) async fn probe(host: &str, port: u16, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, dial(host, port)).await {
        Ok(Ok(_stream)) => ProbeResult::Success,
        Ok(Err(message)) => ProbeResult::Failure(message),
        Err(_) => ProbeResult::Failure(format!("dial tcp {}: i/o timeout", join_host_port(host, port))),
    }
}

/// Opens a TCP connection to `host:port` (an IP literal, or a name resolved by the system), with errors worded
/// as Go's (`dial tcp 10.42.0.7:8080: connect: connection refused`).
pub(super) async fn dial(host: &str, port: u16) -> Result<TcpStream, String> {
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match tokio::net::lookup_host((host, port)).await {
            Ok(found) => found.collect(),
            Err(error) => return Err(format!("dial tcp: lookup {host}: {}", os_message(&error))),
        },
    };
    let mut last_error = format!("dial tcp: lookup {host}: no such host");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = format!("dial tcp {address}: connect: {}", os_message(&error)),
        }
    }
    Err(last_error)
}

/// An OS error as Go prints it: the C library's text in lower case, without Rust's `(os error N)`.
pub(super) fn os_message(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.find(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut characters = text.chars();
    match characters.next() {
        Some(first) => first.to_lowercase().chain(characters).collect(),
        None => String::new(),
    }
}
