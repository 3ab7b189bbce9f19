//! The crate's one error type, for everything a caller of the agent can run into.

use crate::connect::ConnectError;
use crate::envelope::EnvelopeError;

/// What went wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The HTTP exchange itself failed (connect, timeout, reset).
    #[cfg(feature = "client")]
    #[error("request to the agent failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The agent answered with a Connect error.
    #[error("agent error {code}: {message}")]
    Rpc {
        /// Connect error code (see [`crate::connect::code`]).
        code: String,
        /// The agent's message.
        message: String,
    },
    /// The agent's answer does not follow the protocol.
    #[error("agent protocol violation: {0}")]
    Protocol(String),
    /// A stream's framing is broken.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A message is not the JSON it should be.
    #[error("invalid JSON message: {0}")]
    Json(#[from] serde_json::Error),
}

impl AgentError {
    /// The Connect code when the agent answered with an error.
    pub fn rpc_code(&self) -> Option<&str> {
        match self {
            AgentError::Rpc { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<ConnectError> for AgentError {
    fn from(e: ConnectError) -> AgentError {
        AgentError::Rpc {
            code: e.code,
            message: e.message,
        }
    }
}

/// Characters of a path kept in a message: a path is the caller's text, possibly kilobytes.
const SHOWN_PATH_CHARS: usize = 120;

/// `text` (a path from a request) for a message or a log line: whole when short, else its
/// start and its length. The agent and the server cut paths alike.
pub fn shown_text(text: &str) -> String {
    match text.char_indices().nth(SHOWN_PATH_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!(
            "{}... ({} bytes)",
            text.get(..cut).unwrap_or_default(),
            text.len()
        ),
    }
}
