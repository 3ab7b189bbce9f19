//! `GET /v1/sandboxes/{id}/logs` (SSE resuming after `Last-Event-ID` / `?after=`, or one JSON
//! page with `?follow=false`, `?limit=`) and `GET /v1/events` (lifecycle changes of all
//! sandboxes, SSE).
use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::broadcast::error::RecvError;
use warren_api::{LogLine, LogList};

use super::sandbox_id;
use crate::error::{ApiError, ApiQuery};
use crate::AppState;

/// Lines read from the store per query.
const PAGE: u32 = 1000;
/// Lines of a `follow=false` page when the request names no `limit`.
const PAGE_LINES: u32 = 1000;
/// The most lines a `follow=false` page may ask for.
const MAX_PAGE_LINES: u32 = 10_000;
/// Text in one `follow=false` page at most (one line more than this is still answered alone).
const PAGE_BYTES: usize = 4 << 20;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Lines after this sequence number (default: from the first kept).
    after: Option<u64>,
    /// Keep the answer open and send lines as they come (server-sent events).
    follow: Option<bool>,
    /// At most this many lines in a page.
    limit: Option<u32>,
}

/// One page of lines after `after`: at most `limit` lines and [`PAGE_BYTES`] of text.
async fn page(
    store: &dyn warren_store::Store,
    id: &warren_api::SandboxId,
    after: u64,
    limit: u32,
) -> Result<LogList, ApiError> {
    let limit = limit.clamp(1, MAX_PAGE_LINES) as usize;
    let (mut lines, mut bytes, mut next) = (Vec::new(), 0usize, after);
    'page: while lines.len() < limit {
        let want = (limit - lines.len()).min(PAGE as usize);
        let chunk = store.list_logs(id, next, want as u32).await?;
        let got = chunk.len();
        for l in chunk {
            if !lines.is_empty() && bytes + l.text.len() > PAGE_BYTES {
                break 'page;
            }
            bytes += l.text.len();
            next = l.seq;
            lines.push(l);
        }
        if got < want {
            break;
        }
    }
    let more = !store.list_logs(id, next, 1).await?.is_empty();
    let dropped = store.first_log_seq(id).await?.saturating_sub(1);
    Ok(LogList {
        lines,
        next,
        more,
        dropped,
    })
}

fn line_event(l: &LogLine) -> Event {
    Event::default()
        .id(l.seq.to_string())
        .data(serde_json::to_string(l).unwrap_or_default())
}

#[utoipa::path(get, path = "/sandboxes/{id}/logs", tag = "processes", params(super::doc::SandboxPath, LogsQuery), responses((status = 200, description = "A page of lines; with `follow=true` or `Accept: text/event-stream`, events `log` (a LogLine) as lines come", content((warren_api::LogList = "application/json"), (String = "text/event-stream"))), super::doc::Errors))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&id)?;
    state.service.record(&id).await?;
    let resume = match headers.get("last-event-id").map(|v| v.to_str()) {
        Some(Ok(v)) => Some(v.trim().parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("Last-Event-ID {v:?} is not a sequence number"))
        })?),
        Some(Err(_)) => return Err(ApiError::BadRequest("Last-Event-ID is not text".into())),
        None => None,
    };
    let after = resume.or(q.after).unwrap_or(0);
    let store = state.service.store_arc();
    if q.follow == Some(false) {
        let list = page(store.as_ref(), &id, after, q.limit.unwrap_or(PAGE_LINES)).await?;
        return Ok(Json(list).into_response());
    }
    // Subscribe first, then read the backlog: a line stored meanwhile arrives live and is
    // skipped by seq if the backlog already had it. No gaps, no duplicates.
    let mut live = state.service.logs().subscribe(&id);
    let stopping = state.service.shutting_down();
    let stream = async_stream::stream! {
        tokio::pin!(stopping);
        let mut last = after;
        loop {
            let page = match store.list_logs(&id, last, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(sandbox = %id, "reading logs: {e}");
                    return;
                }
            };
            let done = page.len() < PAGE as usize;
            for l in &page {
                last = l.seq;
                yield Ok::<_, Infallible>(line_event(l));
            }
            if done {
                break;
            }
        }
        loop {
            let next = tokio::select! {
                _ = &mut stopping => return,
                next = live.recv() => next,
            };
            match next {
                Ok(l) if l.seq > last => {
                    // A gap means the channel dropped lines we never saw: fill it from the store.
                    if l.seq > last + 1 {
                        if let Ok(missed) = store.list_logs(&id, last, (l.seq - last - 1) as u32).await {
                            for m in &missed {
                                yield Ok(line_event(m));
                            }
                        }
                    }
                    last = l.seq;
                    yield Ok(line_event(&l));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    if let Ok(missed) = store.list_logs(&id, last, PAGE).await {
                        for m in &missed {
                            last = m.seq;
                            yield Ok(line_event(m));
                        }
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /v1/events`: the caller's team's sandboxes and operations as they change.
#[utoipa::path(get, path = "/events", tag = "operations", responses((status = 200, description = "Server-sent events: `sandbox` (a Sandbox) and `operation` (an Operation) of the key's team as they change; `lagged` (a count) when some were missed", content_type = "text/event-stream", body = String), super::doc::Errors))]
pub async fn events(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
) -> Response {
    let mut rx = state.service.subscribe_events();
    let stopping = state.service.shutting_down();
    let stream = async_stream::stream! {
        tokio::pin!(stopping);
        loop {
            let next = tokio::select! {
                _ = &mut stopping => return,
                next = rx.recv() => next,
            };
            match next {
                Ok(crate::service::Event::Sandbox(s)) if s.team == caller.team => {
                    let data = serde_json::to_string(&caller.shown(*s)).unwrap_or_default();
                    yield Ok::<_, Infallible>(Event::default().event("sandbox").data(data));
                }
                Ok(crate::service::Event::Operation(op)) if op.team == caller.team => {
                    let data = serde_json::to_string(&op).unwrap_or_default();
                    yield Ok::<_, Infallible>(Event::default().event("operation").data(data));
                }
                Err(RecvError::Lagged(n)) => {
                    yield Ok(Event::default().event("lagged").data(n.to_string()));
                }
                Err(RecvError::Closed) => return,
                // Another team's.
                Ok(_) => {}
            }
        }
    };
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
