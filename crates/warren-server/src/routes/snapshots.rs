//! `/v1/snapshots` and `POST /v1/sandboxes/{id}/snapshots`.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use warren_api::{CreateSnapshot, Snapshot, SnapshotList};

use axum::response::{IntoResponse, Response};

use super::operations::OpCall;
use super::sandbox_id;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson};
use crate::service::operations::Work;
use crate::AppState;

#[utoipa::path(post, path = "/sandboxes/{id}/snapshots", tag = "storage", params(super::doc::SandboxPath, super::doc::OperationHeaders), request_body = warren_api::CreateSnapshot, responses((status = 201, body = warren_api::Snapshot), (status = 202, description = "`Prefer: respond-async`: the operation", body = warren_api::Operation), super::doc::Errors))]
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: OpCall,
    ApiJson(req): ApiJson<CreateSnapshot>,
) -> Result<Response, ApiError> {
    crate::service::validate_snapshot_name(&req.name)?;
    let work = Work::Snapshot {
        id: sandbox_id(&id)?,
        request: req,
    };
    let reply = call.run::<Snapshot>(&state, work, false).await?;
    Ok(reply.respond(|snap, _| (StatusCode::CREATED, Json(snap)).into_response()))
}

#[utoipa::path(get, path = "/snapshots", tag = "storage", responses((status = 200, body = warren_api::SnapshotList), super::doc::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<SnapshotList>, ApiError> {
    Ok(Json(SnapshotList {
        snapshots: state.service.snapshots().list(&caller.team).await?,
    }))
}

#[utoipa::path(get, path = "/snapshots/{name}", tag = "storage", params(super::doc::NamePath), responses((status = 200, body = warren_api::Snapshot), super::doc::Errors))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(
        state
            .service
            .snapshots()
            .snapshot(&name, &caller.team)
            .await?,
    ))
}

#[utoipa::path(delete, path = "/snapshots/{name}", tag = "storage", params(super::doc::NamePath), responses((status = 204, description = "Deleted"), super::doc::Errors))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .snapshots()
        .delete_snapshot(&name, &caller.team)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
