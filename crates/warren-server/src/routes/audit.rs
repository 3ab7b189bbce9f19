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
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Query {
    /// Only this team's entries (the operator's choice; admins see their own team).
    team: Option<String>,
    /// Only calls made with this key id.
    key: Option<String>,
    /// Only calls on this target (a sandbox id, a name).
    target: Option<String>,
    /// Only calls of this HTTP method.
    method: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only entries before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Only entries older than this entry id (the next page).
    before: Option<u64>,
    /// At most this many entries, newest first.
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/audit", tag = "access", params(Query), responses((status = 200, body = warren_api::AuditList), super::doc::Errors))]
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
