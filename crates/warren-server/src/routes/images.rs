//! `/v1/images`: import a root-filesystem tar, pull from a registry, list, delete, prune.
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use warren_api::image::PruneResult;
use warren_api::{Image, ImageList, PullEvent, PullImage};

use crate::error::{ApiError, ApiJson};
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
        .images()
        .import_image(&name, body.into_data_stream())
        .await?;
    Ok((StatusCode::CREATED, Json(image)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<ImageList>, ApiError> {
    Ok(Json(ImageList {
        images: state.service.images().list_images().await?,
    }))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.images().delete_image(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/images/pull {"ref": …}`: the image once pulled, or with `Accept:
/// text/event-stream` its progress as SSE events `resolved`, `layer`, then `done` or `error`
/// (each `data:` one [`PullEvent`] as JSON).
pub async fn pull(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PullImage>,
) -> Result<Response, ApiError> {
    if !super::exec::wants_sse(&headers) {
        let image = state
            .service
            .images()
            .pull_image(&req.reference, None)
            .await?;
        return Ok(Json(image).into_response());
    }
    if req.reference.trim().is_empty() {
        return Err(ApiError::Invalid("ref must not be empty".into()));
    }
    let events = state.service.images().pull_image_events(req.reference);
    let sse = UnboundedReceiverStream::new(events).map(|event| {
        let name = match &event {
            PullEvent::Resolved { .. } => "resolved",
            PullEvent::Layer(_) => "layer",
            PullEvent::Done { .. } => "done",
            PullEvent::Error { .. } => "error",
        };
        let data = serde_json::to_string(&event).unwrap_or_default();
        Ok::<_, Infallible>(Event::default().event(name).data(data))
    });
    Ok(Sse::new(sse)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `POST /v1/images/prune`: removes the layers no image or sandbox uses.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneQuery {
    /// Forget the build cache (and uploaded build files) first, so its layers go too.
    #[serde(default)]
    build_cache: bool,
}

/// `POST /v1/images/prune[?build_cache=true]`.
pub async fn prune(
    State(state): State<AppState>,
    crate::error::ApiQuery(q): crate::error::ApiQuery<PruneQuery>,
) -> Result<Json<PruneResult>, ApiError> {
    let cleared = if q.build_cache {
        state.service.images().clear_build_cache().await?
    } else {
        0
    };
    let mut result = state.service.images().prune_images().await?;
    result.build_cache_cleared = cleared;
    Ok(Json(result))
}
