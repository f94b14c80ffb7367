//! SPDY/3.1, hand-written: no maintained Rust crate implements it, and Kubernetes still speaks it (kubectl up to
//! 1.29 for exec and attach, every kubectl for port-forward, inside a WebSocket from 1.30 on).

mod dictionary;
pub(crate) mod frame;
pub(crate) mod session;
