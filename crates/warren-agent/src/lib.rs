//! Warren's in-sandbox agent, library half: the wire protocol it speaks (the `process.Process`
//! and `filesystem.Filesystem` Connect services of E2B's envd, JSON codec) as serde types, the Connect envelope framing, and,
//! behind feature `client`, a typed async client that Warren's server uses to reach an agent.
//!
//! The agent binary itself (PID 1 duties, HTTP server, process supervision) lives in
//! `src/main.rs` and `src/agent/`; the protocol is described in the project's AGENT_PROTOCOL.md.
#![deny(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
pub mod connect;
pub mod envelope;
pub mod error;
mod proto_json;
pub mod protocol;

#[cfg(feature = "client")]
pub use client::{AgentClient, ProcessStream, WatchStream};
pub use connect::{ConnectError, EndStream};
pub use envelope::{Envelope, EnvelopeDecoder, EnvelopeError};
pub use error::AgentError;
pub use protocol::{
    CloseStdinRequest, ConnectRequest, ConnectResponse, CreateWatcherResponse, Empty, EntryInfo,
    EntryResponse, EventType, FileType, FilesystemEvent, GetWatcherEventsResponse, ListDirRequest,
    ListDirResponse, ListResponse, ListeningPort, MoveRequest, PathRequest, PortsResponse,
    ProcessConfig, ProcessData, ProcessEvent, ProcessInfo, ProcessInput, ProcessSelector, Pty,
    PtySize, SendInputRequest, SendSignalRequest, Signal, StartRequest, StartResponse,
    StreamInputRequest, UpdateRequest, WatchEvent, WatchRequest, WatcherRequest,
};

/// The envd protocol version this agent implements, as the control plane reports it in
/// `envdVersion`; E2B's SDKs switch features on it. 0.6.4 is the highest threshold the SDKs
/// (e2b 2.63) know, and every feature up to it is here: recursive watch (0.1.4),
/// `stdin: false` (0.3.0), default user (0.4.0), CloseStdin (0.5.2), octet-stream and gzip
/// uploads (0.5.7), file metadata as `user.e2b.*` xattrs (0.6.2), entries in watch events
/// (0.6.3), watching network mounts only when asked (0.6.4).
pub const ENVD_VERSION: &str = "0.6.4";
