//! The Connect-protocol constants and error shapes the agent and its clients share: paths,
//! headers, content types, error codes with their HTTP statuses, and the end-of-stream message.

use serde::{Deserialize, Serialize};

/// Content type of unary requests and responses (Connect, JSON codec).
pub const CONTENT_TYPE_UNARY: &str = "application/json";
/// Content type of streaming requests and responses (Connect, JSON codec).
pub const CONTENT_TYPE_STREAM: &str = "application/connect+json";
/// Header carrying the Connect protocol version (always `1`).
pub const HEADER_PROTOCOL_VERSION: &str = "connect-protocol-version";
/// Header carrying the per-sandbox access token.
pub const HEADER_ACCESS_TOKEN: &str = "x-access-token";
/// Header asking for `keepalive` events on a stream every so many seconds.
pub const HEADER_KEEPALIVE_INTERVAL: &str = "keepalive-ping-interval";
/// Header carrying the Connect deadline in milliseconds; a `Start` process is killed at it.
pub const HEADER_TIMEOUT_MS: &str = "connect-timeout-ms";

/// Request paths the agent serves.
pub mod path {
    /// `GET`: readiness probe, answers 204.
    pub const HEALTH: &str = "/health";
    /// Server stream: start a process and follow its output.
    pub const START: &str = "/process.Process/Start";
    /// Unary: running processes.
    pub const LIST: &str = "/process.Process/List";
    /// Unary: write to a process's stdin.
    pub const SEND_INPUT: &str = "/process.Process/SendInput";
    /// Unary: close a process's stdin.
    pub const CLOSE_STDIN: &str = "/process.Process/CloseStdin";
    /// Unary: signal a process's group.
    pub const SEND_SIGNAL: &str = "/process.Process/SendSignal";
    /// Server stream: follow a running process's output from now on.
    pub const CONNECT: &str = "/process.Process/Connect";
    /// Client stream: feed a running process's input.
    pub const STREAM_INPUT: &str = "/process.Process/StreamInput";
    /// Unary: resize a process's pseudo-terminal.
    pub const UPDATE: &str = "/process.Process/Update";
    /// Unary: describe one entry.
    pub const STAT: &str = "/filesystem.Filesystem/Stat";
    /// Unary: create a directory and its parents.
    pub const MAKE_DIR: &str = "/filesystem.Filesystem/MakeDir";
    /// Unary: rename an entry.
    pub const MOVE: &str = "/filesystem.Filesystem/Move";
    /// Unary: list a directory to some depth.
    pub const LIST_DIR: &str = "/filesystem.Filesystem/ListDir";
    /// Unary: delete an entry (directories recursively).
    pub const REMOVE: &str = "/filesystem.Filesystem/Remove";
    /// Server stream: changes under a directory.
    pub const WATCH_DIR: &str = "/filesystem.Filesystem/WatchDir";
    /// Unary: start a polled watcher.
    pub const CREATE_WATCHER: &str = "/filesystem.Filesystem/CreateWatcher";
    /// Unary: take a polled watcher's buffered events.
    pub const GET_WATCHER_EVENTS: &str = "/filesystem.Filesystem/GetWatcherEvents";
    /// Unary: stop a polled watcher.
    pub const REMOVE_WATCHER: &str = "/filesystem.Filesystem/RemoveWatcher";
    /// `GET` downloads a file, `POST` uploads one (plain HTTP, not Connect).
    pub const FILES: &str = "/files";
    /// `GET`: the TCP ports listened on in the sandbox, the agent's own excepted (plain JSON).
    pub const PORTS: &str = "/ports";
}

/// Header naming the Unix user to act as: `Basic base64("<user>:")`.
pub const HEADER_AUTHORIZATION: &str = "authorization";

/// Connect error codes, as they appear in the JSON `code` field.
pub mod code {
    /// The operation was cancelled.
    pub const CANCELED: &str = "canceled";
    /// An error with no better code.
    pub const UNKNOWN: &str = "unknown";
    /// The request is malformed or names something unusable.
    pub const INVALID_ARGUMENT: &str = "invalid_argument";
    /// The deadline passed first.
    pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
    /// The named process (or path) does not exist.
    pub const NOT_FOUND: &str = "not_found";
    /// The thing to create exists already.
    pub const ALREADY_EXISTS: &str = "already_exists";
    /// The caller may not do this.
    pub const PERMISSION_DENIED: &str = "permission_denied";
    /// A quota or limit was hit.
    pub const RESOURCE_EXHAUSTED: &str = "resource_exhausted";
    /// The system is not in a state that allows this.
    pub const FAILED_PRECONDITION: &str = "failed_precondition";
    /// The operation was aborted.
    pub const ABORTED: &str = "aborted";
    /// A value is out of range.
    pub const OUT_OF_RANGE: &str = "out_of_range";
    /// The method or route is not implemented.
    pub const UNIMPLEMENTED: &str = "unimplemented";
    /// The agent failed.
    pub const INTERNAL: &str = "internal";
    /// The agent cannot serve right now.
    pub const UNAVAILABLE: &str = "unavailable";
    /// Data was lost.
    pub const DATA_LOSS: &str = "data_loss";
    /// The access token is missing or wrong.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
}

/// The HTTP status of a unary error with this Connect code (the Connect specification's table;
/// unknown codes map like `unknown`).
pub fn http_status_for_code(code: &str) -> u16 {
    match code {
        code::CANCELED => 499,
        code::INVALID_ARGUMENT | code::FAILED_PRECONDITION | code::OUT_OF_RANGE => 400,
        code::DEADLINE_EXCEEDED => 504,
        code::NOT_FOUND => 404,
        code::ALREADY_EXISTS | code::ABORTED => 409,
        code::PERMISSION_DENIED => 403,
        code::RESOURCE_EXHAUSTED => 429,
        code::UNIMPLEMENTED => 501,
        code::UNAVAILABLE => 503,
        code::UNAUTHENTICATED => 401,
        _ => 500,
    }
}

/// The Connect code a client infers from an HTTP status when the body holds no Connect error
/// (a proxy's error page, say).
pub fn code_for_http_status(status: u16) -> &'static str {
    match status {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502..=504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// A Connect error: the body of a failed unary call, or the `error` of an end-of-stream message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectError {
    /// One of the [`code`] constants.
    pub code: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
}

impl ConnectError {
    /// An error with this code and message.
    pub fn new(code: &str, message: impl Into<String>) -> ConnectError {
        ConnectError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The HTTP status this error carries when it ends a unary call.
    pub fn http_status(&self) -> u16 {
        http_status_for_code(&self.code)
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ConnectError {}

/// The JSON inside the end-of-stream envelope (flags `0x02`) that closes every response stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndStream {
    /// Set when the stream failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ConnectError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_stream_shapes() {
        let ok = serde_json::to_string(&EndStream::default()).ok();
        assert_eq!(ok.as_deref(), Some("{}"));
        let failed = EndStream {
            error: Some(ConnectError::new(code::NOT_FOUND, "gone")),
        };
        let json = serde_json::to_string(&failed).ok();
        assert_eq!(
            json.as_deref(),
            Some(r#"{"error":{"code":"not_found","message":"gone"}}"#)
        );
        let parsed: Result<EndStream, _> =
            serde_json::from_str(r#"{"error":{"code":"internal","details":[]},"metadata":{}}"#);
        assert_eq!(
            parsed.ok().and_then(|e| e.error).map(|e| e.code),
            Some("internal".to_owned())
        );
    }

    #[test]
    fn status_table() {
        assert_eq!(http_status_for_code(code::UNAUTHENTICATED), 401);
        assert_eq!(http_status_for_code(code::NOT_FOUND), 404);
        assert_eq!(http_status_for_code(code::INVALID_ARGUMENT), 400);
        assert_eq!(http_status_for_code("bogus"), 500);
    }
}
