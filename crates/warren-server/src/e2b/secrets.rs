//! E2B's `/secrets`: named values, write-only (no route returns one), sealed at rest. A
//! sandbox gets one where a create's `envVars` holds `${e2b.secrets.<name>}` (the SDK's
//! `Secret.fill(name)`): the record keeps the reference, and the value is put in the sandbox's
//! environment when it is made or started. E2B's other use, header rules its egress proxy
//! applies (`network.rules`), Warren refuses.
use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use warren_store::SecretRecord;

use super::sandboxes::body;
use super::E2bError;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// Largest value (E2B's limit is of this order; a value is one environment variable).
const MAX_VALUE: usize = 64 << 10;
/// Page size when the request names none.
const DEFAULT_LIMIT: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    name: String,
    value: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretUpdate {
    value: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    #[serde(rename = "secretID")]
    secret_id: String,
    name: String,
    current_version: u64,
    metadata: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&SecretRecord> for Secret {
    fn from(r: &SecretRecord) -> Self {
        Secret {
            secret_id: r.id.clone(),
            name: r.name.clone(),
            current_version: r.version,
            metadata: r.metadata.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    limit: Option<usize>,
    next_token: Option<String>,
}

fn bad(message: impl Into<String>) -> E2bError {
    E2bError::new(StatusCode::BAD_REQUEST, message)
}

/// `team`'s secret `which` names (its id or its name), or 404 (another team's too).
async fn find(state: &AppState, which: &str, team: &str) -> Result<SecretRecord, E2bError> {
    state
        .service
        .store()
        .get_secret(which)
        .await
        .map_err(store_err)?
        .filter(|r| r.team == team)
        .ok_or_else(|| E2bError::new(StatusCode::NOT_FOUND, format!("secret {which:?} not found")))
}

/// E2B's rule: a name is interpolated into `${e2b.secrets.<name>}`, so no braces or control
/// characters.
fn check_name(name: &str) -> Result<(), E2bError> {
    if name.is_empty()
        || name.len() > 255
        || name.chars().any(|c| c == '{' || c == '}' || c.is_control())
    {
        return Err(bad(format!(
            "secret name {name:?} must be 1 to 255 characters without '{{', '}}' or control characters"
        )));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), E2bError> {
    if value.len() > MAX_VALUE {
        return Err(bad(format!("a secret value is at most {MAX_VALUE} bytes")));
    }
    Ok(())
}

fn store_err(e: warren_store::StoreError) -> E2bError {
    ApiError::from(e).into()
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Secret>), E2bError> {
    let req: NewSecret = body(&bytes, None)?;
    check_name(&req.name)?;
    check_value(&req.value)?;
    let id = format!("sec_{}", hex::encode(rand::random::<[u8; 10]>()));
    let now = Utc::now();
    let rec = SecretRecord {
        sealed: state.sealer.seal(&id, 1, &req.value),
        id,
        name: req.name,
        version: 1,
        metadata: req.metadata.unwrap_or_default(),
        created_at: now,
        updated_at: now,
        team: caller.team,
    };
    if !state
        .service
        .store()
        .insert_secret(&rec)
        .await
        .map_err(store_err)?
    {
        return Err(E2bError::new(
            StatusCode::CONFLICT,
            // Names are the server's: another team's may hold it.
            format!("a secret named {:?} exists", rec.name),
        ));
    }
    Ok((StatusCode::CREATED, Json(Secret::from(&rec))))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(which): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Secret>, E2bError> {
    let req: SecretUpdate = body(&bytes, None)?;
    check_value(&req.value)?;
    let mut rec = find(&state, &which, &caller.team).await?;
    rec.version += 1;
    rec.sealed = state.sealer.seal(&rec.id, rec.version, &req.value);
    if let Some(md) = req.metadata {
        rec.metadata = md;
    }
    rec.updated_at = Utc::now();
    state
        .service
        .store()
        .update_secret(&rec)
        .await
        .map_err(store_err)?;
    Ok(Json(Secret::from(&rec)))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(which): Path<String>,
) -> Result<Json<Secret>, E2bError> {
    Ok(Json(Secret::from(
        &find(&state, &which, &caller.team).await?,
    )))
}

/// Pages by name: `nextToken` is the last name of the page before (base64url, so any name
/// fits a header), `x-next-token` the answer's when more follow.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, E2bError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, 1000);
    let all = state
        .service
        .store()
        .list_secrets()
        .await
        .map_err(store_err)?;
    let after: Vec<&SecretRecord> = all
        .iter()
        .filter(|r| r.team == caller.team)
        .filter(|r| q.next_token.as_deref().is_none_or(|t| r.name.as_str() > t))
        .collect();
    let page: Vec<Secret> = after.iter().take(limit).map(|r| Secret::from(*r)).collect();
    let mut headers = HeaderMap::new();
    if after.len() > limit {
        if let Some(v) = page
            .last()
            .and_then(|s| HeaderValue::from_str(&s.name).ok())
        {
            headers.insert("x-next-token", v);
        }
    }
    Ok((headers, Json(page)).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(which): Path<String>,
) -> Result<StatusCode, E2bError> {
    let rec = find(&state, &which, &caller.team).await?;
    state
        .service
        .store()
        .delete_secret(&rec.id)
        .await
        .map_err(store_err)?;
    Ok(StatusCode::NO_CONTENT)
}

/// 400 naming the first `${e2b.secrets.<name>}` in `text` that names no secret (the value is
/// filled in only when the sandbox is made, never stored in its record).
pub async fn check_references(state: &AppState, text: &str, team: &str) -> Result<(), E2bError> {
    for name in crate::secrets::referenced(text) {
        let known = crate::secrets::by_name(state.service.store(), name, team)
            .await
            .map_err(store_err)?;
        if known.is_none() {
            return Err(bad(format!(
                "secret {name:?} (in ${{e2b.secrets.{name}}}) not found"
            )));
        }
    }
    Ok(())
}
