//! `GET /sandboxes/{id}/logs` and `/v2/sandboxes/{id}/logs`: a sandbox's log as E2B answers
//! it, from Warren's (the main command's output and the sandbox's lifecycle events). E2B's
//! levels map from the stream: stdout and events `info`, stderr `error`; each entry's `fields`
//! name its stream and position (`seq`).
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use warren_api::{LogLine, LogStream};

use super::sandboxes::{id, visible};
use super::E2bError;
use crate::AppState;

/// E2B's default and largest page.
const MAX_LIMIT: usize = 1000;
/// Lines read from the store per query.
const READ: u32 = 1000;
/// Lines looked at, at most, for one answer (a log is capped well below this anyway).
const SCAN: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Forward,
    Backward,
}

/// `?start=` (ms) `&limit=`.
#[derive(Debug, Deserialize)]
pub struct V1Query {
    start: Option<i64>,
    limit: Option<usize>,
}

/// `?cursor=` (ms) `&limit=&direction=&level=&search=`.
#[derive(Debug, Deserialize)]
pub struct V2Query {
    cursor: Option<i64>,
    limit: Option<usize>,
    direction: Option<Direction>,
    level: Option<Level>,
    search: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Entry {
    timestamp: DateTime<Utc>,
    level: Level,
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct Line {
    timestamp: DateTime<Utc>,
    line: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct V1Logs {
    logs: Vec<Line>,
    log_entries: Vec<Entry>,
}

#[derive(Debug, Serialize)]
pub struct V2Logs {
    logs: Vec<Entry>,
}

fn bad_query(e: QueryRejection) -> E2bError {
    E2bError::new(StatusCode::BAD_REQUEST, e.body_text())
}

fn level(stream: LogStream) -> Level {
    match stream {
        LogStream::Stderr => Level::Error,
        LogStream::Stdout | LogStream::Event => Level::Info,
    }
}

fn entry(l: LogLine) -> Entry {
    let mut fields = serde_json::Map::new();
    fields.insert("stream".into(), l.stream.as_str().into());
    fields.insert("seq".into(), l.seq.to_string().into());
    Entry {
        timestamp: l.ts,
        level: level(l.stream),
        message: l.text,
        fields,
    }
}

fn millis(ms: i64, what: &str) -> Result<DateTime<Utc>, E2bError> {
    Utc.timestamp_millis_opt(ms).single().ok_or_else(|| {
        E2bError::new(
            StatusCode::BAD_REQUEST,
            format!("{what} {ms} is not a time in milliseconds"),
        )
    })
}

fn limit(asked: Option<usize>) -> Result<usize, E2bError> {
    match asked.unwrap_or(MAX_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(E2bError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {MAX_LIMIT}, got {n}"),
        )),
    }
}

/// The sandbox's stored lines that `keep` picks, oldest first.
async fn lines(
    state: &AppState,
    raw: &str,
    keep: impl Fn(&LogLine) -> bool,
) -> Result<Vec<LogLine>, E2bError> {
    let id = id(raw)?;
    visible(state, &id).await?;
    let store = state.service.store();
    let (mut out, mut after, mut seen) = (Vec::new(), 0, 0);
    while seen < SCAN {
        let page = store
            .list_logs(&id, after, READ)
            .await
            .map_err(crate::error::ApiError::from)?;
        let got = page.len();
        seen += got;
        for l in page {
            after = l.seq;
            if keep(&l) {
                out.push(l);
            }
        }
        if got < READ as usize {
            break;
        }
    }
    Ok(out)
}

pub async fn v1(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    q: Result<Query<V1Query>, QueryRejection>,
) -> Result<Json<V1Logs>, E2bError> {
    let Query(q) = q.map_err(bad_query)?;
    let limit = limit(q.limit)?;
    let start = q.start.map(|ms| millis(ms, "start")).transpose()?;
    let mut all = lines(&state, &raw, |l| start.is_none_or(|s| l.ts >= s)).await?;
    all.truncate(limit);
    let logs = all
        .iter()
        .map(|l| Line {
            timestamp: l.ts,
            line: l.text.clone(),
        })
        .collect();
    Ok(Json(V1Logs {
        logs,
        log_entries: all.into_iter().map(entry).collect(),
    }))
}

pub async fn v2(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    q: Result<Query<V2Query>, QueryRejection>,
) -> Result<Json<V2Logs>, E2bError> {
    let Query(q) = q.map_err(bad_query)?;
    let limit = limit(q.limit)?;
    let direction = q.direction.unwrap_or_default();
    let cursor = q.cursor.map(|ms| millis(ms, "cursor")).transpose()?;
    let search = q.search.unwrap_or_default();
    let min_level = q.level.unwrap_or(Level::Debug);
    let mut picked = lines(&state, &raw, |l| {
        let in_window = match (cursor, direction) {
            (None, _) => true,
            (Some(c), Direction::Forward) => l.ts >= c,
            (Some(c), Direction::Backward) => l.ts <= c,
        };
        in_window && level(l.stream) >= min_level && l.text.contains(search.as_str())
    })
    .await?;
    if direction == Direction::Backward {
        picked.reverse();
    }
    picked.truncate(limit);
    Ok(Json(V2Logs {
        logs: picked.into_iter().map(entry).collect(),
    }))
}
