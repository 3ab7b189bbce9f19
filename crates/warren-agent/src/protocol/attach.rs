//! The `process.Process` messages for working with a process already running: attaching to its
//! output (`Connect`), streaming input to it (`StreamInput`) and resizing its terminal (`Update`).

use serde::{Deserialize, Serialize};

use crate::protocol::{Empty, ProcessEvent, ProcessInput, ProcessSelector, Pty};

/// `process.Process/Connect` request (also `CloseStdinRequest`'s shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// The process to attach to.
    pub process: ProcessSelector,
}

/// One message of the `Connect` stream: `ConnectResponse`, the same shape as `StartResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectResponse {
    /// The event.
    pub event: ProcessEvent,
}

/// `process.Process/Update` request: resize a process's pseudo-terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// The target.
    pub process: ProcessSelector,
    /// The new terminal size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<Pty>,
}

/// One message of the `StreamInput` request stream: the `event` oneof of `StreamInputRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "InputEventWire", try_from = "InputEventWire")]
pub enum StreamInputRequest {
    /// First message: which process the input is for.
    Start {
        /// The target.
        process: ProcessSelector,
    },
    /// Input bytes.
    Data {
        /// Stdin or terminal bytes.
        input: ProcessInput,
    },
    /// Nothing; keeps the request open.
    Keepalive,
}

#[derive(Serialize, Deserialize)]
struct StartWire {
    process: ProcessSelector,
}

#[derive(Serialize, Deserialize)]
struct DataWire {
    input: ProcessInput,
}

#[derive(Default, Serialize, Deserialize)]
struct InputEventWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<StartWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<DataWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keepalive: Option<Empty>,
}

impl From<StreamInputRequest> for InputEventWire {
    fn from(req: StreamInputRequest) -> InputEventWire {
        let mut wire = InputEventWire::default();
        match req {
            StreamInputRequest::Start { process } => wire.start = Some(StartWire { process }),
            StreamInputRequest::Data { input } => wire.data = Some(DataWire { input }),
            StreamInputRequest::Keepalive => wire.keepalive = Some(Empty {}),
        }
        wire
    }
}

impl TryFrom<InputEventWire> for StreamInputRequest {
    type Error = &'static str;

    fn try_from(wire: InputEventWire) -> Result<StreamInputRequest, &'static str> {
        match (wire.start, wire.data, wire.keepalive) {
            (Some(s), _, _) => Ok(StreamInputRequest::Start { process: s.process }),
            (_, Some(d), _) => Ok(StreamInputRequest::Data { input: d.input }),
            (_, _, Some(_)) => Ok(StreamInputRequest::Keepalive),
            _ => Err("stream input message has none of start, data, keepalive"),
        }
    }
}
