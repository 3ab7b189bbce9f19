//! `/v1/sandboxes/{id}/files` (GET raw bytes, PUT raw body, DELETE) and `/files/list`.
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use warren_api::FileList;

use super::sandbox_id;
use crate::error::{ApiError, ApiQuery};
use crate::AppState;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// The file's absolute path in the sandbox.
    path: String,
    /// Act as this user of the sandbox (default: its default user).
    user: Option<String>,
}

#[utoipa::path(get, path = "/sandboxes/{id}/files", tag = "processes", params(super::doc::SandboxPath, FileQuery), responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = super::doc::Binary), super::doc::Errors))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> Result<Response, ApiError> {
    let stream = state
        .service
        .files()
        .read_file(&sandbox_id(&id)?, &q.path, q.user.as_deref())
        .await?;
    let body = Body::from_stream(stream.map_err(std::io::Error::other));
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

#[utoipa::path(put, path = "/sandboxes/{id}/files", tag = "processes", params(super::doc::SandboxPath, FileQuery), request_body(content = super::doc::Binary, content_type = "application/octet-stream", description = "The file's bytes"), responses((status = 204, description = "Written (parents made as needed)"), super::doc::Errors))]
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FileQuery>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .files()
        .write_file(
            &sandbox_id(&id)?,
            &q.path,
            q.user.as_deref(),
            body.into_data_stream(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/sandboxes/{id}/files", tag = "processes", params(super::doc::SandboxPath, FileQuery), responses((status = 204, description = "Removed (a directory with what it holds)"), super::doc::Errors))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .files()
        .remove_file(&sandbox_id(&id)?, &q.path, q.user.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/sandboxes/{id}/files/list", tag = "processes", params(super::doc::SandboxPath, FileQuery), responses((status = 200, body = warren_api::FileList), super::doc::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> Result<Json<FileList>, ApiError> {
    let entries = state
        .service
        .files()
        .list_files(&sandbox_id(&id)?, &q.path, q.user.as_deref())
        .await?;
    Ok(Json(FileList { entries }))
}
