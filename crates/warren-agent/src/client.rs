//! A typed client for one agent: unary calls, the process and watch streams, and file transfers
//! over pooled keep-alive HTTP/1.1 connections. Every call can act as a given Unix user
//! ([`AgentClient::with_user`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connect::{self, path, ConnectError};
use crate::envelope;
use crate::error::AgentError;
use crate::protocol::{
    CloseStdinRequest, ConnectRequest, Empty, ListResponse, ListeningPort, PortsResponse,
    ProcessInfo, ProcessInput, ProcessSelector, Pty, PtySize, SendInputRequest, SendSignalRequest,
    Signal, StartRequest, UpdateRequest,
};

mod files;
mod stream;

pub use stream::{ProcessStream, WatchStream};

const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Error bodies are small; a misbehaving peer must not make us buffer much.
const MAX_ERROR_BODY: usize = 64 << 10;

/// A handle on one agent. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct AgentClient {
    http: reqwest::Client,
    base: Arc<str>,
    token: Arc<str>,
    /// The `Authorization` header value naming the user to act as; the agent's default user
    /// when `None`.
    user: Option<Arc<str>>,
}

impl AgentClient {
    /// POSTs a Connect request body; a non-200 answer is the error it carries.
    async fn post_connect(
        &self,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, AgentError> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(connect::HEADER_PROTOCOL_VERSION, "1")
            .body(body)
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(error_from_response(resp).await);
        }
        Ok(resp)
    }

    /// A client for the agent listening at `addr` that authenticates with `token`.
    pub fn new(addr: SocketAddr, token: &str) -> AgentClient {
        // One HTTP client for every agent (its pool keeps connections per address): building
        // one costs milliseconds when the binary has TLS compiled in (root certificates are
        // parsed), which a sandbox create would otherwise pay.
        static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
        let http = HTTP
            .get_or_init(|| {
                // The agent is reached directly over the sandbox network: a proxy from the
                // environment would only add latency or break it.
                reqwest::Client::builder()
                    .no_proxy()
                    .tcp_nodelay(true)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .build()
                    .or_else(|_| reqwest::Client::builder().no_proxy().build())
                    .unwrap_or_default()
            })
            .clone();
        AgentClient {
            http,
            base: format!("http://{addr}").into(),
            token: token.into(),
            user: None,
        }
    }

    /// The same agent, acting as Unix user `user` (`Authorization: Basic base64("<user>:")`):
    /// processes run as that user and files are created for it.
    pub fn with_user(&self, user: &str) -> AgentClient {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
        AgentClient {
            user: Some(format!("Basic {encoded}").into()),
            ..self.clone()
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the token and user headers.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self
            .http
            .request(method, self.url(path))
            .header(connect::HEADER_ACCESS_TOKEN, &*self.token);
        if let Some(user) = &self.user {
            builder = builder.header(connect::HEADER_AUTHORIZATION, &**user);
        }
        builder
    }

    /// `GET /health`: succeeds once the agent answers 2xx, within about a second.
    pub async fn health(&self) -> Result<(), AgentError> {
        let resp = self
            .http
            .get(self.url(path::HEALTH))
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(error_from_response(resp).await)
        }
    }

    /// `GET /ports`: the TCP ports something listens on in the sandbox right now (the agent's
    /// own excepted), sorted by port.
    pub async fn ports(&self) -> Result<Vec<ListeningPort>, AgentError> {
        let resp = self
            .request(reqwest::Method::GET, path::PORTS)
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(error_from_response(resp).await);
        }
        let resp: PortsResponse = serde_json::from_slice(&resp.bytes().await?)?;
        Ok(resp.ports)
    }

    /// Opens a server stream: one request message, the response body for a stream decoder.
    async fn open_stream<Req: Serialize>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<reqwest::Response, AgentError> {
        let body = envelope::encode_json(0, req)?;
        let resp = self
            .post_connect(path, connect::CONTENT_TYPE_STREAM, body.to_vec())
            .await?;
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with(connect::CONTENT_TYPE_STREAM) {
            return Err(AgentError::Protocol(format!(
                "{path} answered with content type {content_type:?}"
            )));
        }
        Ok(resp)
    }

    /// `Start`: runs a process and returns its event stream (first `Start`, last `End`).
    /// Dropping the stream does not stop the process.
    pub async fn start(&self, req: &StartRequest) -> Result<ProcessStream, AgentError> {
        Ok(ProcessStream::new(
            self.open_stream(path::START, req).await?,
        ))
    }

    /// `Connect`: attaches to a running process. Its events from now on (no replay), after a
    /// `Start` event naming it; ends with its `End`. Several may be attached at once.
    pub async fn connect(&self, selector: ProcessSelector) -> Result<ProcessStream, AgentError> {
        let req = ConnectRequest { process: selector };
        Ok(ProcessStream::new(
            self.open_stream(path::CONNECT, &req).await?,
        ))
    }

    /// `List`: processes started through the agent that are still running.
    pub async fn list(&self) -> Result<Vec<ProcessInfo>, AgentError> {
        let resp: ListResponse = self.unary(path::LIST, &Empty {}).await?;
        Ok(resp.processes)
    }

    /// `SendInput`: writes `data` to the stdin of process `pid`.
    pub async fn send_input(&self, pid: u32, data: &[u8]) -> Result<(), AgentError> {
        let req = SendInputRequest {
            process: ProcessSelector::Pid(pid),
            input: ProcessInput::Stdin(Bytes::copy_from_slice(data)),
        };
        let _: Empty = self.unary(path::SEND_INPUT, &req).await?;
        Ok(())
    }

    /// `SendInput`: writes `data` to the terminal of process `pid` (started with a pty).
    pub async fn send_pty_input(&self, pid: u32, data: &[u8]) -> Result<(), AgentError> {
        let req = SendInputRequest {
            process: ProcessSelector::Pid(pid),
            input: ProcessInput::Pty(Bytes::copy_from_slice(data)),
        };
        let _: Empty = self.unary(path::SEND_INPUT, &req).await?;
        Ok(())
    }

    /// `Update`: resizes the terminal of process `pid`.
    pub async fn resize_pty(&self, pid: u32, cols: u32, rows: u32) -> Result<(), AgentError> {
        let req = UpdateRequest {
            process: ProcessSelector::Pid(pid),
            pty: Some(Pty {
                size: Some(PtySize { cols, rows }),
            }),
        };
        let _: Empty = self.unary(path::UPDATE, &req).await?;
        Ok(())
    }

    /// `CloseStdin`: closes the stdin of process `pid` so it reads end-of-file.
    pub async fn close_stdin(&self, pid: u32) -> Result<(), AgentError> {
        let req = CloseStdinRequest {
            process: ProcessSelector::Pid(pid),
        };
        let _: Empty = self.unary(path::CLOSE_STDIN, &req).await?;
        Ok(())
    }

    /// `SendSignal`: signals the process group of process `pid`.
    pub async fn send_signal(&self, pid: u32, signal: Signal) -> Result<(), AgentError> {
        let req = SendSignalRequest {
            process: ProcessSelector::Pid(pid),
            signal,
        };
        let _: Empty = self.unary(path::SEND_SIGNAL, &req).await?;
        Ok(())
    }

    async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, AgentError> {
        let body = serde_json::to_vec(req)?;
        let resp = self
            .post_connect(path, connect::CONTENT_TYPE_UNARY, body)
            .await?;
        let bytes = resp.bytes().await?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

async fn read_error_body(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ERROR_BODY => {
                body.extend_from_slice(&chunk)
            }
            Ok(Some(_)) | Ok(None) | Err(_) => break,
        }
    }
    body
}

/// Turns a non-OK response into the Connect error in its body, or one inferred from its status.
async fn error_from_response(resp: reqwest::Response) -> AgentError {
    let status = resp.status().as_u16();
    let body = read_error_body(resp).await;
    match serde_json::from_slice::<ConnectError>(&body) {
        Ok(e) => e.into(),
        Err(_) => AgentError::Rpc {
            code: connect::code_for_http_status(status).to_owned(),
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
        },
    }
}
