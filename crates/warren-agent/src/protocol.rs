//! The `process.Process` messages in their proto3 JSON form (lowerCamelCase names, `bytes` as
//! base64, enums by name, a `oneof` as whichever single field is set). Parsing is lenient the way
//! proto3 JSON parsers are: integers may be strings, enums may be numbers, `null` is the default.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::proto_json::{null_default, num, Num, B64};

pub mod attach;
pub mod filesystem;
pub mod ports;

pub use attach::{ConnectRequest, ConnectResponse, StreamInputRequest, UpdateRequest};
pub use filesystem::{
    CreateWatcherResponse, EntryInfo, EntryResponse, EventType, FileType, FilesystemEvent,
    GetWatcherEventsResponse, ListDirRequest, ListDirResponse, MoveRequest, PathRequest,
    WatchEvent, WatchRequest, WatcherRequest,
};
pub use ports::{ListeningPort, PortsResponse};

/// A message with no fields (requests and responses such as `ListRequest`, `SendInputResponse`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// What to run: `ProcessConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    /// The executable; looked up in `PATH` when it has no slash.
    #[serde(default, deserialize_with = "null_default")]
    pub cmd: String,
    /// Arguments after the executable name.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<String>,
    /// Environment variables set on top of the agent's defaults.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub envs: BTreeMap<String, String>,
    /// Working directory; the agent's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// Terminal size of a pseudo-terminal: `PTY.Size`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    /// Columns.
    #[serde(default, deserialize_with = "num")]
    pub cols: u32,
    /// Rows.
    #[serde(default, deserialize_with = "num")]
    pub rows: u32,
}

/// Run under a pseudo-terminal: `PTY`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pty {
    /// Initial terminal size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<PtySize>,
}

/// `process.Process/Start` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// What to run.
    #[serde(default, deserialize_with = "null_default")]
    pub process: ProcessConfig,
    /// Run under a pseudo-terminal; output then arrives as `data.pty` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<Pty>,
    /// A name to find the process by later (`List`, selectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `false`: stdin is `/dev/null`; absent or `true`: a pipe fed by `SendInput`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
}

/// One message of the `Start` response stream: `StartResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartResponse {
    /// The event.
    pub event: ProcessEvent,
}

/// Output of a process: the `data` oneof of `ProcessEvent.DataEvent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessData {
    /// Bytes written to stdout.
    Stdout(Bytes),
    /// Bytes written to stderr.
    Stderr(Bytes),
    /// Bytes written to the pseudo-terminal.
    Pty(Bytes),
}

/// What happened to a process: the `event` oneof of `ProcessEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "EventWire", try_from = "EventWire")]
pub enum ProcessEvent {
    /// The process started; always the first event.
    Start {
        /// Its process id inside the sandbox.
        pid: u32,
    },
    /// A chunk of output.
    Data(ProcessData),
    /// The process ended; always the last event. Fields follow Go's `os.ProcessState`.
    End {
        /// Exit code, or -1 when killed by a signal.
        exit_code: i32,
        /// Whether it exited by itself (false when killed by a signal).
        exited: bool,
        /// `exit status N` or `signal: killed` and the like.
        status: String,
        /// Set when it did not exit with 0 (holds the status again) or could not be waited for.
        error: Option<String>,
    },
    /// Nothing happened; sent to keep idle connections open.
    Keepalive,
}

#[derive(Serialize, Deserialize)]
struct StartWire {
    #[serde(default, deserialize_with = "num")]
    pid: u32,
}

#[derive(Default, Serialize, Deserialize)]
struct DataWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stdout: Option<B64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stderr: Option<B64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pty: Option<B64>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndWire {
    #[serde(default, deserialize_with = "num", alias = "exit_code")]
    exit_code: i32,
    #[serde(default, deserialize_with = "null_default")]
    exited: bool,
    #[serde(default, deserialize_with = "null_default")]
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct EventWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<StartWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<DataWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<EndWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keepalive: Option<Empty>,
}

impl From<ProcessEvent> for EventWire {
    fn from(event: ProcessEvent) -> EventWire {
        let mut wire = EventWire::default();
        match event {
            ProcessEvent::Start { pid } => wire.start = Some(StartWire { pid }),
            ProcessEvent::Data(data) => {
                let mut d = DataWire::default();
                match data {
                    ProcessData::Stdout(b) => d.stdout = Some(B64(b)),
                    ProcessData::Stderr(b) => d.stderr = Some(B64(b)),
                    ProcessData::Pty(b) => d.pty = Some(B64(b)),
                }
                wire.data = Some(d);
            }
            ProcessEvent::End {
                exit_code,
                exited,
                status,
                error,
            } => {
                wire.end = Some(EndWire {
                    exit_code,
                    exited,
                    status,
                    error,
                })
            }
            ProcessEvent::Keepalive => wire.keepalive = Some(Empty {}),
        }
        wire
    }
}

impl TryFrom<EventWire> for ProcessEvent {
    type Error = String;

    fn try_from(wire: EventWire) -> Result<ProcessEvent, String> {
        if let Some(start) = wire.start {
            return Ok(ProcessEvent::Start { pid: start.pid });
        }
        if let Some(data) = wire.data {
            return match (data.stdout, data.stderr, data.pty) {
                (Some(B64(b)), _, _) => Ok(ProcessEvent::Data(ProcessData::Stdout(b))),
                (_, Some(B64(b)), _) => Ok(ProcessEvent::Data(ProcessData::Stderr(b))),
                (_, _, Some(B64(b))) => Ok(ProcessEvent::Data(ProcessData::Pty(b))),
                // proto3 JSON omits a oneof field holding empty bytes entirely.
                (None, None, None) => Ok(ProcessEvent::Data(ProcessData::Stdout(Bytes::new()))),
            };
        }
        if let Some(end) = wire.end {
            return Ok(ProcessEvent::End {
                exit_code: end.exit_code,
                exited: end.exited,
                status: end.status,
                error: end.error,
            });
        }
        if wire.keepalive.is_some() {
            return Ok(ProcessEvent::Keepalive);
        }
        Err("process event has none of start, data, end, keepalive".to_owned())
    }
}

/// Which process a request is about: the `ProcessSelector` oneof.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "SelectorWire", try_from = "SelectorWire")]
pub enum ProcessSelector {
    /// By process id.
    Pid(u32),
    /// By the tag given at `Start`.
    Tag(String),
}

#[derive(Default, Serialize, Deserialize)]
struct SelectorWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<Num<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
}

impl From<ProcessSelector> for SelectorWire {
    fn from(selector: ProcessSelector) -> SelectorWire {
        match selector {
            ProcessSelector::Pid(pid) => SelectorWire {
                pid: Some(Num(pid)),
                tag: None,
            },
            ProcessSelector::Tag(tag) => SelectorWire {
                pid: None,
                tag: Some(tag),
            },
        }
    }
}

impl TryFrom<SelectorWire> for ProcessSelector {
    type Error = &'static str;

    fn try_from(wire: SelectorWire) -> Result<ProcessSelector, &'static str> {
        match (wire.pid, wire.tag) {
            (Some(Num(pid)), _) => Ok(ProcessSelector::Pid(pid)),
            (None, Some(tag)) => Ok(ProcessSelector::Tag(tag)),
            (None, None) => Err("process selector has neither pid nor tag"),
        }
    }
}

/// Input for a process: the `ProcessInput` oneof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "InputWire", try_from = "InputWire")]
pub enum ProcessInput {
    /// Bytes for its stdin pipe.
    Stdin(Bytes),
    /// Bytes for its pseudo-terminal.
    Pty(Bytes),
}

#[derive(Default, Serialize, Deserialize)]
struct InputWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stdin: Option<B64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pty: Option<B64>,
}

impl From<ProcessInput> for InputWire {
    fn from(input: ProcessInput) -> InputWire {
        match input {
            ProcessInput::Stdin(b) => InputWire {
                stdin: Some(B64(b)),
                pty: None,
            },
            ProcessInput::Pty(b) => InputWire {
                stdin: None,
                pty: Some(B64(b)),
            },
        }
    }
}

impl TryFrom<InputWire> for ProcessInput {
    type Error = &'static str;

    fn try_from(wire: InputWire) -> Result<ProcessInput, &'static str> {
        match (wire.stdin, wire.pty) {
            (Some(B64(b)), _) => Ok(ProcessInput::Stdin(b)),
            (None, Some(B64(b))) => Ok(ProcessInput::Pty(b)),
            // An empty `bytes` oneof member is omitted in proto3 JSON: nothing to write.
            (None, None) => Ok(ProcessInput::Stdin(Bytes::new())),
        }
    }
}

/// `process.Process/SendInput` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendInputRequest {
    /// The target.
    pub process: ProcessSelector,
    /// What to write.
    pub input: ProcessInput,
}

/// `process.Process/CloseStdin` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseStdinRequest {
    /// The target.
    pub process: ProcessSelector,
}

/// The `Signal` enum of `SendSignalRequest`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `SIGNAL_UNSPECIFIED` (0): rejected by the agent.
    #[default]
    Unspecified,
    /// `SIGNAL_SIGKILL` (9).
    Sigkill,
    /// `SIGNAL_SIGTERM` (15).
    Sigterm,
}

impl Signal {
    /// The proto enum value name, such as `SIGNAL_SIGKILL`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Unspecified => "SIGNAL_UNSPECIFIED",
            Signal::Sigkill => "SIGNAL_SIGKILL",
            Signal::Sigterm => "SIGNAL_SIGTERM",
        }
    }

    /// The proto enum number, which is also the Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Unspecified => 0,
            Signal::Sigkill => 9,
            Signal::Sigterm => 15,
        }
    }

    fn from_number(n: i64) -> Option<Signal> {
        match n {
            0 => Some(Signal::Unspecified),
            9 => Some(Signal::Sigkill),
            15 => Some(Signal::Sigterm),
            _ => None,
        }
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SignalVisitor;
        impl Visitor<'_> for SignalVisitor {
            type Value = Signal;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Signal enum name or number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Signal, E> {
                [Signal::Unspecified, Signal::Sigkill, Signal::Sigterm]
                    .into_iter()
                    .find(|s| s.name() == v)
                    .ok_or_else(|| E::custom(format!("unknown signal {v:?}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Signal, E> {
                Signal::from_number(v).ok_or_else(|| E::custom(format!("unknown signal {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Signal, E> {
                let n = i64::try_from(v).map_err(|_| E::custom(format!("unknown signal {v}")))?;
                self.visit_i64(n)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Signal, E> {
                Ok(Signal::Unspecified)
            }
        }
        deserializer.deserialize_any(SignalVisitor)
    }
}

/// `process.Process/SendSignal` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendSignalRequest {
    /// The target; the signal goes to its whole process group.
    pub process: ProcessSelector,
    /// Which signal.
    #[serde(default)]
    pub signal: Signal,
}

/// A running process as `List` reports it: `ProcessInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// What it runs.
    #[serde(default, deserialize_with = "null_default")]
    pub config: ProcessConfig,
    /// Its process id.
    #[serde(default, deserialize_with = "num")]
    pub pid: u32,
    /// Its tag, if it was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `process.Process/List` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// Processes started through the agent that are still running.
    #[serde(default, deserialize_with = "null_default")]
    pub processes: Vec<ProcessInfo>,
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
