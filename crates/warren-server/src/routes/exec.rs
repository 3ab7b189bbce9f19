//! `POST /v1/sandboxes/{id}/exec`: JSON, or SSE events `stdout`, `stderr`, `exit` when the
//! client accepts `text/event-stream`.
use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use warren_api::{ErrorBody, ExecList, ExecRequest};

use super::sandbox_id;
use super::text::{sse_safe, Utf8Chunker};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::service::ExecEvent;
use crate::AppState;

pub(super) fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

#[utoipa::path(post, path = "/sandboxes/{id}/exec", tag = "processes", params(super::doc::SandboxPath), request_body = warren_api::ExecRequest, responses((status = 200, description = "The command ran to its end (or its timeout). With `Accept: text/event-stream`, its output as it comes: events `stdout`, `stderr` (text), then `exit` (an ExecExit) or `error` (an ErrorBody)", content((warren_api::ExecResult = "application/json"), (String = "text/event-stream"))), super::doc::Errors))]
pub async fn exec(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&id)?;
    crate::service::validate::exec(&req)?;
    if !wants_sse(&headers) {
        return Ok(json_streamed(
            state.service.processes().exec(&id, req).await?,
        ));
    }
    let mut events = state.service.processes().exec_stream(&id, req).await?;
    let sse = async_stream::stream! {
        let (mut out, mut err) = (Utf8Chunker::default(), Utf8Chunker::default());
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ExecEvent::Stdout(b)) => {
                    let text = out.push(&b);
                    if !text.is_empty() {
                        yield Ok::<_, Infallible>(Event::default().event("stdout").data(sse_safe(text)));
                    }
                }
                Ok(ExecEvent::Stderr(b)) => {
                    let text = err.push(&b);
                    if !text.is_empty() {
                        yield Ok(Event::default().event("stderr").data(sse_safe(text)));
                    }
                }
                Ok(ExecEvent::Exit(exit)) => {
                    for (name, rest) in [("stdout", out.finish()), ("stderr", err.finish())] {
                        if !rest.is_empty() {
                            yield Ok(Event::default().event(name).data(sse_safe(rest)));
                        }
                    }
                    let data = serde_json::to_string(&exit).unwrap_or_default();
                    yield Ok(Event::default().event("exit").data(data));
                    break;
                }
                Err(e) => {
                    let body = ErrorBody::new("internal", e.to_string());
                    let data = serde_json::to_string(&body).unwrap_or_default();
                    yield Ok(Event::default().event("error").data(data));
                    break;
                }
            }
        }
    };
    Ok(Sse::new(sse)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// JSON written out as it is encoded, 64 KiB at a time: an exec answer may hold 10 MiB of
/// output per stream, which is up to six times that as JSON (`\u0000`), and a whole encoded
/// copy of it would be the server's biggest allocation by far.
fn json_streamed<T: serde::Serialize + Send + 'static>(v: T) -> Response {
    const CHUNK: usize = 64 * 1024;
    struct Chunks {
        buf: Vec<u8>,
        tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    }
    impl Chunks {
        fn send(&mut self) -> std::io::Result<()> {
            let chunk =
                bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
            self.tx
                .blocking_send(Ok(chunk))
                .map_err(|_| std::io::Error::other("the client went away"))
        }
    }
    impl std::io::Write for Chunks {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.buf.extend_from_slice(b);
            if self.buf.len() >= CHUNK {
                self.send()?;
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            if !self.buf.is_empty() {
                self.send()?;
            }
            Ok(())
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = Chunks {
            buf: Vec::with_capacity(CHUNK),
            tx,
        };
        // Encoding a plain struct of strings and numbers cannot fail; a send can (client gone).
        let _ = serde_json::to_writer(&mut out, &v)
            .map_err(std::io::Error::from)
            .and_then(|()| std::io::Write::flush(&mut out));
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The latest this many entries (1 to 10000, default 100).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/sandboxes/{id}/execs", tag = "processes", params(super::doc::SandboxPath, HistoryQuery), responses((status = 200, body = warren_api::ExecList), super::doc::Errors))]
pub async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<ExecList>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let execs = state
        .service
        .processes()
        .history(&sandbox_id(&id)?, limit)
        .await?;
    Ok(Json(ExecList { execs }))
}
