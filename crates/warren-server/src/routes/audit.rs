//! `GET /v1/audit`: the audit log, newest first. An admin key reads its team's entries; the
//! operator's, every team's.
use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use warren_api::AuditList;
use warren_store::AuditFilter;

use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};
use crate::AppState;

/// Most entries one answer holds.
const MAX_LIST: u32 = 1000;

/// `?team=&key=&target=&method=&since=&until=&before=&limit=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    team: Option<String>,
    key: Option<String>,
    target: Option<String>,
    method: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    before: Option<u64>,
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<Query>,
) -> Result<Json<AuditList>, ApiError> {
    let filter = AuditFilter {
        team: caller.team_to_list(q.team.as_deref())?,
        key_id: q.key,
        target: q.target,
        method: q.method.map(|m| m.to_ascii_uppercase()),
        since: q.since,
        until: q.until,
        before: q.before,
        limit: q.limit.unwrap_or(100).clamp(1, MAX_LIST),
    };
    let entries = state.service.store().list_audit(&filter).await?;
    Ok(Json(AuditList { entries }))
}
