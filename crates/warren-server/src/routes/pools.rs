//! `/v1/pools`.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use warren_api::{CreatePool, Pool, PoolList};

use crate::error::{ApiError, ApiJson};
use crate::AppState;

#[utoipa::path(post, path = "/pools", tag = "pools", request_body = warren_api::CreatePool, responses((status = 201, body = warren_api::Pool), super::doc::Errors))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreatePool>,
) -> Result<(StatusCode, Json<Pool>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.pools().create_pool(req).await?),
    ))
}

#[utoipa::path(get, path = "/pools", tag = "pools", responses((status = 200, body = warren_api::PoolList), super::doc::Errors))]
pub async fn list(State(state): State<AppState>) -> Result<Json<PoolList>, ApiError> {
    Ok(Json(PoolList {
        pools: state.service.pools().list().await?,
    }))
}

#[utoipa::path(delete, path = "/pools/{name}", tag = "pools", params(super::doc::NamePath), responses((status = 204, description = "Deleted, with its ready sandboxes"), super::doc::Errors))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.pools().delete_pool(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
