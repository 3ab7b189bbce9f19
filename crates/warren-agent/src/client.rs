//! A typed client for one agent: unary calls and the `Start` output stream over pooled
//! keep-alive HTTP/1.1 connections.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connect::{self, path, ConnectError, EndStream};
use crate::envelope::{self, Envelope, EnvelopeDecoder};
use crate::error::AgentError;
use crate::protocol::{
    CloseStdinRequest, Empty, ListResponse, ProcessEvent, ProcessInfo, ProcessInput,
    ProcessSelector, SendInputRequest, SendSignalRequest, Signal, StartRequest, StartResponse,
};

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
}

impl AgentClient {
    /// A client for the agent listening at `addr` that authenticates with `token`.
    pub fn new(addr: SocketAddr, token: &str) -> AgentClient {
        // The agent is reached directly over the sandbox network: a proxy from the environment
        // would only add latency or break it.
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            // Only TLS set-up can fail here, and this client has no TLS.
            .or_else(|_| reqwest::Client::builder().no_proxy().build())
            .unwrap_or_default();
        AgentClient {
            http,
            base: format!("http://{addr}").into(),
            token: token.into(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
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

    /// `Start`: runs a process and returns its event stream (first `Start`, last `End`).
    /// Dropping the stream does not stop the process.
    pub async fn start(&self, req: &StartRequest) -> Result<ProcessStream, AgentError> {
        let body = envelope::encode_json(0, req)?;
        let resp = self
            .http
            .post(self.url(path::START))
            .header(reqwest::header::CONTENT_TYPE, connect::CONTENT_TYPE_STREAM)
            .header(connect::HEADER_PROTOCOL_VERSION, "1")
            .header(connect::HEADER_ACCESS_TOKEN, &*self.token)
            .body(body)
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(error_from_response(resp).await);
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with(connect::CONTENT_TYPE_STREAM) {
            return Err(AgentError::Protocol(format!(
                "Start answered with content type {content_type:?}"
            )));
        }
        Ok(ProcessStream {
            body: Box::pin(resp.bytes_stream()),
            decoder: EnvelopeDecoder::new(),
            finished: false,
        })
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
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, connect::CONTENT_TYPE_UNARY)
            .header(connect::HEADER_PROTOCOL_VERSION, "1")
            .header(connect::HEADER_ACCESS_TOKEN, &*self.token)
            .body(body)
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(error_from_response(resp).await);
        }
        let bytes = resp.bytes().await?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// Turns a non-OK response into the Connect error in its body, or one inferred from its status.
async fn error_from_response(mut resp: reqwest::Response) -> AgentError {
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ERROR_BODY => {
                body.extend_from_slice(&chunk)
            }
            Ok(Some(_)) | Ok(None) | Err(_) => break,
        }
    }
    match serde_json::from_slice::<ConnectError>(&body) {
        Ok(e) => e.into(),
        Err(_) => AgentError::Rpc {
            code: connect::code_for_http_status(status).to_owned(),
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
        },
    }
}

type BodyStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The events of one `Start` call, in order. Ends (`None`) after the end-of-stream message; an
/// error carried by that message is yielded once as `Some(Err(AgentError::Rpc { .. }))`.
pub struct ProcessStream {
    body: BodyStream,
    decoder: EnvelopeDecoder,
    finished: bool,
}

impl std::fmt::Debug for ProcessStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessStream")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ProcessStream {
    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<ProcessEvent, AgentError>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<ProcessEvent, AgentError>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            match self.decoder.next_envelope() {
                Ok(Some(env)) => {
                    if let Some(item) = self.on_envelope(env) {
                        return Poll::Ready(Some(item));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(self.fail(e.into())))),
            }
            match ready!(self.body.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => return Poll::Ready(Some(Err(self.fail(e.into())))),
                None => {
                    let e =
                        AgentError::Protocol("stream ended without end-of-stream message".into());
                    return Poll::Ready(Some(Err(self.fail(e))));
                }
            }
        }
    }

    fn fail(&mut self, e: AgentError) -> AgentError {
        self.finished = true;
        e
    }

    /// `None` when the envelope ends the stream cleanly.
    fn on_envelope(&mut self, env: Envelope) -> Option<Result<ProcessEvent, AgentError>> {
        if env.is_compressed() {
            let e = AgentError::Protocol("compressed envelope without negotiation".into());
            return Some(Err(self.fail(e)));
        }
        if env.is_end_stream() {
            self.finished = true;
            return match serde_json::from_slice::<EndStream>(&env.data) {
                Ok(EndStream { error: None }) => None,
                Ok(EndStream { error: Some(e) }) => Some(Err(e.into())),
                Err(e) => Some(Err(e.into())),
            };
        }
        match serde_json::from_slice::<StartResponse>(&env.data) {
            Ok(resp) => Some(Ok(resp.event)),
            Err(e) => Some(Err(self.fail(e.into()))),
        }
    }
}

impl Stream for ProcessStream {
    type Item = Result<ProcessEvent, AgentError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}
