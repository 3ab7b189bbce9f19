//! `/v1/keys`: API keys, each in one team with one scope, in both spellings (`wk_…` and
//! E2B's `e2b_…`), listed without their secrets and revoked by id. An admin key manages its
//! own team's keys; the operator's, any team's.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use serde::Deserialize;
use warren_api::{ApiKey, ApiKeyList, CreateApiKey, CreatedApiKey, Scope};
use warren_store::Revoked;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiQuery};
use crate::AppState;

const MAX_NAME: usize = 64;

#[utoipa::path(post, path = "/keys", tag = "access", request_body(content = Option<warren_api::CreateApiKey>, description = "Optional: no body is a key named `key` of the caller's team"), responses((status = 201, description = "The key, with its secret (shown once)", body = warren_api::CreatedApiKey), super::doc::Errors))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    // No body is a key with the default name.
    let req: CreateApiKey = crate::error::optional_json(&body)?;
    let name = req.name.unwrap_or_else(|| "key".to_owned());
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(format!(
            "key name must be 1 to {MAX_NAME} printable characters"
        )));
    }
    let team = match req.team {
        Some(t) if t != caller.team && !caller.operator() => {
            return Err(ApiError::Forbidden(
                "only the operator makes keys for another team".into(),
            ))
        }
        Some(t) => t,
        None => caller.team.clone(),
    };
    if state.service.store().get_team(&team).await?.is_none() {
        return Err(ApiError::NotFound(format!("team {team:?} not found")));
    }
    // A hundred years at most: the store keeps four-digit years.
    let latest = Utc::now() + chrono::Duration::days(36_500);
    if req
        .expires_at
        .is_some_and(|t| t <= Utc::now() || t > latest)
    {
        return Err(ApiError::Invalid(
            "expires_at must be in the future, and within a hundred years".into(),
        ));
    }
    if req.rate_limit == Some(0) {
        return Err(ApiError::Invalid(
            "rate_limit must be at least 1 request per second (leave it out for the team's)".into(),
        ));
    }
    let secret = auth::generate_key();
    let e2b_secret = auth::e2b_spelling(&secret)
        .ok_or_else(|| ApiError::Internal("a new key has no E2B spelling".into()))?;
    let mut key = ApiKey {
        id: auth::key_id(&secret),
        name,
        team,
        scope: req.scope.unwrap_or(Scope::Sandboxes),
        created_at: Utc::now(),
        expires_at: req.expires_at,
        revoked_at: None,
        last_used_at: None,
        rate_limit: req.rate_limit,
    };
    key.created_at = state
        .service
        .store()
        .insert_api_key(&key, &auth::hash_key(&secret))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key,
            secret,
            e2b_secret,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this team's (the operator's choice; others see their own).
    team: Option<String>,
}

#[utoipa::path(get, path = "/keys", tag = "access", params(ListQuery), responses((status = 200, body = warren_api::ApiKeyList), super::doc::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let team = caller.team_to_list(q.team.as_deref())?;
    let keys = state.service.store().list_api_keys(team.as_deref()).await?;
    Ok(Json(ApiKeyList { keys }))
}

/// Revokes a key at once: the server forgets it as it is revoked, and it is kept, marked, so
/// the audit log can still name it. The operator's last key cannot go: nothing could then
/// make another.
#[utoipa::path(delete, path = "/keys/{id}", tag = "access", params(("id" = String, Path, description = "The key's id")), responses((status = 204, description = "Revoked (still listed, with revoked_at)"), super::doc::Errors))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.service.store();
    let not_found = || ApiError::NotFound(format!("API key {id:?} not found"));
    // Another team's key is not there, as far as a team admin can tell.
    let visible = store
        .list_api_keys(caller.team_to_list(None)?.as_deref())
        .await?
        .into_iter()
        .any(|k| k.id == id);
    if !visible {
        return Err(not_found());
    }
    let revoked = state
        .known_keys
        .changing(store.revoke_api_key(&id), |c| c.key_id == id)
        .await?;
    match revoked {
        Revoked::Done | Revoked::Already => Ok(StatusCode::NO_CONTENT),
        Revoked::NotFound => Err(not_found()),
        Revoked::LastOperatorKey => Err(ApiError::Conflict(format!(
            "API key {id} is the operator's last admin key that never expires: create another \
             before revoking it"
        ))),
    }
}
