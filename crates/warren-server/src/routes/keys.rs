//! `/v1/keys`: more API keys beside the admin key, each in both spellings (`wk_…` and E2B's
//! `e2b_…`), listed without their secrets and revoked by id.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use warren_api::{ApiKey, ApiKeyList, CreateApiKey, CreatedApiKey};

use crate::auth;
use crate::error::{parse_json, ApiError};
use crate::AppState;

const MAX_NAME: usize = 64;

pub async fn create(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    // No body is a key with the default name.
    let req: CreateApiKey = if body.iter().all(u8::is_ascii_whitespace) {
        CreateApiKey::default()
    } else {
        parse_json(&body)?
    };
    let name = req.name.unwrap_or_else(|| "key".to_owned());
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(format!(
            "key name must be 1 to {MAX_NAME} printable characters"
        )));
    }
    let secret = auth::generate_key();
    let e2b_secret = auth::e2b_spelling(&secret)
        .ok_or_else(|| ApiError::Internal("a new key has no E2B spelling".into()))?;
    let id = auth::key_id(&secret);
    let created_at = state
        .service
        .store()
        .insert_api_key(&id, &name, &auth::hash_key(&secret))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: ApiKey {
                id,
                name,
                created_at,
            },
            secret,
            e2b_secret,
        }),
    ))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<ApiKeyList>, ApiError> {
    let keys = state.service.store().list_api_keys().await?;
    Ok(Json(ApiKeyList {
        keys: keys
            .into_iter()
            .map(|k| ApiKey {
                id: k.id,
                name: k.name,
                created_at: k.created_at,
            })
            .collect(),
    }))
}

/// Revokes a key at once (the cache of keys seen is dropped with it). The last key cannot go:
/// nothing could then use the API to make another.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.service.store();
    let keys = store.list_api_keys().await?;
    if !keys.iter().any(|k| k.id == id) {
        return Err(ApiError::NotFound(format!("API key {id:?} not found")));
    }
    // Under the lock key checks take to remember a key, so none remembers this one after.
    let mut known = state.known_keys.write().await;
    // The store deletes it only if another key remains (one statement: two revocations at
    // once cannot leave none).
    if !store.delete_api_key(&id).await? {
        return Err(ApiError::Conflict(format!(
            "API key {id} is the server's last key: create another before revoking it"
        )));
    }
    known.retain(|hash| !hash.starts_with(&id));
    Ok(StatusCode::NO_CONTENT)
}
