//! Warren's in-sandbox agent, library half: the wire protocol it speaks (the `process.Process`
//! Connect service of E2B's envd, JSON codec) as serde types, the Connect envelope framing, and,
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
pub use client::{AgentClient, ProcessStream};
pub use connect::{ConnectError, EndStream};
pub use envelope::{Envelope, EnvelopeDecoder, EnvelopeError};
pub use error::AgentError;
pub use protocol::{
    CloseStdinRequest, Empty, ListResponse, ProcessConfig, ProcessData, ProcessEvent, ProcessInfo,
    ProcessInput, ProcessSelector, Pty, PtySize, SendInputRequest, SendSignalRequest, Signal,
    StartRequest, StartResponse,
};
