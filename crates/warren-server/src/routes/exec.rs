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

pub async fn exec(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&id)?;
    crate::service::validate::exec(&req)?;
    if !wants_sse(&headers) {
        return Ok(Json(state.service.exec(&id, req).await?).into_response());
    }
    let mut events = state.service.exec_stream(&id, req).await?;
    let sse = async_stream::stream! {
        let (mut out, mut err) = (Utf8Chunker::default(), Utf8Chunker::default());
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ExecEvent::Stdout(b)) => {
                    let text = out.push(&b);
                    if !text.is_empty() {
                        yield Ok::<_, Infallible>(Event::default().event("stdout").data(sse_safe(&text)));
                    }
                }
                Ok(ExecEvent::Stderr(b)) => {
                    let text = err.push(&b);
                    if !text.is_empty() {
                        yield Ok(Event::default().event("stderr").data(sse_safe(&text)));
                    }
                }
                Ok(ExecEvent::Exit(exit)) => {
                    for (name, rest) in [("stdout", out.finish()), ("stderr", err.finish())] {
                        if !rest.is_empty() {
                            yield Ok(Event::default().event(name).data(sse_safe(&rest)));
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<u32>,
}

pub async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<ExecList>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let execs = state.service.history(&sandbox_id(&id)?, limit).await?;
    Ok(Json(ExecList { execs }))
}
