//! `/v1/snapshots` and `POST /v1/sandboxes/{id}/snapshots`.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use warren_api::{CreateSnapshot, Snapshot, SnapshotList};

use super::sandbox_id;
use crate::error::{ApiError, ApiJson};
use crate::AppState;

pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CreateSnapshot>,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    let snap = state
        .service
        .snapshots()
        .create_snapshot(&sandbox_id(&id)?, req)
        .await?;
    Ok((StatusCode::CREATED, Json(snap)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<SnapshotList>, ApiError> {
    Ok(Json(SnapshotList {
        snapshots: state.service.snapshots().list().await?,
    }))
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(state.service.snapshots().snapshot(&name).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.snapshots().delete_snapshot(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
