//! The server's listeners: plain TCP or TLS, HTTP/1.1 and HTTP/2, upgrades, graceful stop.

use std::net::SocketAddr;

/// What a handler may know of the connection a request came on (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}
