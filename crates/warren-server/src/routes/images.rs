//! `/v1/images`: import a root-filesystem tar, list, delete.
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use warren_api::{Image, ImageList};

use crate::error::ApiError;
use crate::AppState;

pub async fn import(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Image>), ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/x-tar") && !ctype.starts_with("application/octet-stream") {
        return Err(ApiError::BadRequest(format!(
            "expected Content-Type: application/x-tar, got {ctype:?}"
        )));
    }
    let image = state
        .service
        .import_image(&name, body.into_data_stream())
        .await?;
    Ok((StatusCode::CREATED, Json(image)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<ImageList>, ApiError> {
    Ok(Json(ImageList {
        images: state.service.list_images().await?,
    }))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.delete_image(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
