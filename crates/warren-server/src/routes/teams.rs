//! `/v1/teams`: the operator makes, changes and deletes teams; every key reads its own team
//! (with what it holds against its quotas), the operator every team.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use warren_api::{CreateTeam, Team, TeamList, UpdateTeam, DEFAULT_TEAM};
use warren_store::{TeamDeleted, TeamRecord};

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson};
use crate::AppState;

/// Team names double as Kubernetes namespaces' suffixes and path segments: DNS-label text.
fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "team name {name:?}: 1 to 63 lower-case letters, digits and '-', not starting or \
             ending with '-'"
        )))
    }
}

fn valid_limits(q: &warren_api::Quotas, rate: Option<u32>) -> Result<(), ApiError> {
    if q.cpu.is_some_and(|c| !c.is_finite() || c < 0.0) {
        return Err(ApiError::Invalid(
            "quotas.cpu must be a number of cores, 0 or more".into(),
        ));
    }
    if rate == Some(0) {
        return Err(ApiError::Invalid(
            "rate_limit must be at least 1 request per second (leave it out for none)".into(),
        ));
    }
    Ok(())
}

async fn view(state: &AppState, t: TeamRecord) -> Result<Team, ApiError> {
    let usage = state.service.sandboxes().usage(&t.name, None).await?;
    Ok(Team {
        name: t.name,
        quotas: t.quotas,
        rate_limit: t.rate_limit,
        usage,
        created_at: t.created_at,
    })
}

#[utoipa::path(post, path = "/teams", tag = "access", request_body = warren_api::CreateTeam, responses((status = 201, body = warren_api::Team), super::doc::Errors))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateTeam>,
) -> Result<(StatusCode, Json<Team>), ApiError> {
    valid_name(&req.name)?;
    valid_limits(&req.quotas, req.rate_limit)?;
    let rec = TeamRecord {
        name: req.name,
        quotas: req.quotas,
        rate_limit: req.rate_limit,
        created_at: Utc::now(),
    };
    state.service.store().insert_team(&rec).await?;
    let stored = state
        .service
        .store()
        .get_team(&rec.name)
        .await?
        .unwrap_or(rec);
    Ok((StatusCode::CREATED, Json(view(&state, stored).await?)))
}

#[utoipa::path(get, path = "/teams", tag = "access", responses((status = 200, body = warren_api::TeamList), super::doc::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<TeamList>, ApiError> {
    let mut teams = Vec::new();
    for t in state.service.store().list_teams().await? {
        if caller.operator() || t.name == caller.team {
            teams.push(view(&state, t).await?);
        }
    }
    Ok(Json(TeamList { teams }))
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("team {name:?} not found"))
}

#[utoipa::path(get, path = "/teams/{name}", tag = "access", params(super::doc::NamePath), responses((status = 200, body = warren_api::Team), super::doc::Errors))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Team>, ApiError> {
    if !caller.operator() && name != caller.team {
        return Err(not_found(&name));
    }
    let t = state
        .service
        .store()
        .get_team(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(view(&state, t).await?))
}

#[utoipa::path(patch, path = "/teams/{name}", tag = "access", params(super::doc::NamePath), request_body = warren_api::UpdateTeam, responses((status = 200, body = warren_api::Team), super::doc::Errors))]
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateTeam>,
) -> Result<Json<Team>, ApiError> {
    let store = state.service.store();
    let mut t = store
        .get_team(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    if let Some(q) = req.quotas {
        t.quotas = q;
    }
    match req.rate_limit {
        Some(0) => t.rate_limit = None,
        Some(n) => t.rate_limit = Some(n),
        None => {}
    }
    valid_limits(&t.quotas, t.rate_limit)?;
    if !store.update_team(&t).await? {
        return Err(not_found(&name));
    }
    // Its keys' limiters are made again with the new rate on their next request.
    state.known_keys.forget(|c| c.team == name).await;
    Ok(Json(view(&state, t).await?))
}

/// Deletes a team that holds nothing (sandboxes, volumes, secrets, images, snapshots),
/// revoking its keys at once.
#[utoipa::path(delete, path = "/teams/{name}", tag = "access", params(super::doc::NamePath), responses((status = 204, description = "Deleted, its keys revoked"), super::doc::Errors))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if name == DEFAULT_TEAM {
        return Err(ApiError::Conflict(format!(
            "team {DEFAULT_TEAM:?} is the operator's and cannot be deleted"
        )));
    }
    let snapshots = state.service.snapshots().list(&name).await?.len();
    if snapshots > 0 {
        return Err(ApiError::Conflict(format!(
            "team {name:?} still holds {snapshots} snapshots: delete them first"
        )));
    }
    let done = state
        .known_keys
        .changing(state.service.store().delete_team(&name), |c| c.team == name)
        .await?;
    match done {
        TeamDeleted::Done => Ok(StatusCode::NO_CONTENT),
        TeamDeleted::NotFound => Err(not_found(&name)),
        TeamDeleted::Holds(held) => {
            let what: Vec<String> = held.iter().map(|(w, n)| format!("{n} {w}")).collect();
            Err(ApiError::Conflict(format!(
                "team {name:?} still holds {}: delete them first",
                what.join(", ")
            )))
        }
    }
}
