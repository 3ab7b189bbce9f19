//! `/v1/volumes`.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use warren_api::{CreateVolume, Volume, VolumeBackup, VolumeList};

use crate::error::{ApiError, ApiJson};
use crate::AppState;

pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateVolume>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.volumes().create_volume(req).await?),
    ))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<VolumeList>, ApiError> {
    Ok(Json(VolumeList {
        volumes: state.service.volumes().list().await?,
    }))
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Volume>, ApiError> {
    Ok(Json(state.service.volumes().volume(&name).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.volumes().delete_volume(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn backup(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<VolumeBackup>, ApiError> {
    Ok(Json(state.service.volumes().backup_volume(&name).await?))
}
