//! `/v1/volumes`: the caller's team's volumes.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use warren_api::{CreateVolume, Volume, VolumeBackup, VolumeList};

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson};
use crate::AppState;

#[utoipa::path(post, path = "/volumes", tag = "storage", request_body = warren_api::CreateVolume, responses((status = 201, body = warren_api::Volume), super::doc::Errors))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateVolume>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let made = state
        .service
        .volumes()
        .create_volume(req, &caller.team)
        .await?;
    Ok((StatusCode::CREATED, Json(made)))
}

#[utoipa::path(get, path = "/volumes", tag = "storage", responses((status = 200, body = warren_api::VolumeList), super::doc::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<VolumeList>, ApiError> {
    Ok(Json(VolumeList {
        volumes: state.service.volumes().list(&caller.team).await?,
    }))
}

#[utoipa::path(get, path = "/volumes/{name}", tag = "storage", params(super::doc::NamePath), responses((status = 200, body = warren_api::Volume), super::doc::Errors))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Volume>, ApiError> {
    Ok(Json(
        state.service.volumes().volume(&name, &caller.team).await?,
    ))
}

#[utoipa::path(delete, path = "/volumes/{name}", tag = "storage", params(super::doc::NamePath), responses((status = 204, description = "Deleted"), super::doc::Errors))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .volumes()
        .delete_volume(&name, &caller.team)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/volumes/{name}/backup", tag = "storage", params(super::doc::NamePath), responses((status = 200, body = warren_api::VolumeBackup), super::doc::Errors))]
pub async fn backup(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<VolumeBackup>, ApiError> {
    Ok(Json(
        state
            .service
            .volumes()
            .backup_volume(&name, &caller.team)
            .await?,
    ))
}
