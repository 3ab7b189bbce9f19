//! The answer of `GET /ports`: the TCP ports something listens on inside the sandbox. Plain
//! JSON, not a Connect message; the server uses it to offer previews of what a sandbox serves.

use serde::{Deserialize, Serialize};

/// One listening TCP socket. Orders by port, then address, as `/ports` lists them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ListeningPort {
    /// The port.
    pub port: u16,
    /// The local address as text: `0.0.0.0` or `::` when bound to every address.
    pub address: String,
}

/// `GET /ports` response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsResponse {
    /// Sorted by port then address, without duplicates, the agent's own port left out.
    pub ports: Vec<ListeningPort>,
}
