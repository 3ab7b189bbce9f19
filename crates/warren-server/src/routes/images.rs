//! `/v1/images`: import a root-filesystem tar, pull from a registry, tag, list, delete, prune.
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use warren_api::image::PruneResult;
use warren_api::{Image, ImageList, PullEvent, PullImage, TagImage};

use super::operations::OpCall;
use crate::error::{ApiError, ApiJson};
use crate::service::operations::{Submit, Work};
use crate::AppState;

#[utoipa::path(put, path = "/v1/images/{name}", tag = "images", params(("name" = String, Path, description = "The image's name (it may hold slashes)"), ("Content-Type" = Option<String>, Header, description = "application/x-tar (an OCI image layout or docker save archive)")), request_body(content = super::doc::Binary, content_type = "application/x-tar"), responses((status = 201, body = warren_api::Image), super::doc::Errors))]
pub async fn import(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
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
        .import_image(&name, body.into_data_stream(), &caller.team)
        .await?;
    Ok((StatusCode::CREATED, Json(image)))
}

/// `POST /v1/images/tag {"source", "name"}`: the image again under another name (a pulled
/// image keeps its registry source, so backends whose nodes pull images run it by the new
/// name too: E2B's `base` template on Kubernetes).
#[utoipa::path(post, path = "/images/tag", tag = "images", request_body = warren_api::TagImage, responses((status = 201, body = warren_api::Image), super::doc::Errors))]
pub async fn tag(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    ApiJson(req): ApiJson<TagImage>,
) -> Result<(StatusCode, Json<Image>), ApiError> {
    let image = state
        .service
        .images()
        .tag_image(req.source.trim(), req.name.trim(), &caller.team)
        .await?;
    Ok((StatusCode::CREATED, Json(image)))
}

#[utoipa::path(get, path = "/images", tag = "images", responses((status = 200, body = warren_api::ImageList), super::doc::Errors))]
pub async fn list(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
) -> Result<Json<ImageList>, ApiError> {
    Ok(Json(ImageList {
        images: state.service.images().list_images(&caller.team).await?,
    }))
}

#[utoipa::path(delete, path = "/v1/images/{name}", tag = "images", params(("name" = String, Path, description = "The image's name (it may hold slashes)")), responses((status = 204, description = "Removed (its layers stay until a prune)"), super::doc::Errors))]
pub async fn delete(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .images()
        .delete_image(&name, &caller.team)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/images/pull {"ref": …}`: the image once pulled, or with `Accept:
/// text/event-stream` its progress as SSE events `resolved`, `layer`, then `done` or `error`
/// (each `data:` one [`PullEvent`] as JSON).
#[utoipa::path(post, path = "/images/pull", tag = "images", params(super::doc::OperationHeaders), request_body = warren_api::PullImage, responses((status = 200, description = "The image, pulled. With `Accept: text/event-stream`, its progress: events `resolved`, `layer`, then `done` or `error`, each a PullEvent", content((warren_api::Image = "application/json"), (warren_api::PullEvent = "text/event-stream"))), (status = 202, description = "`Prefer: respond-async`: the operation", body = warren_api::Operation), super::doc::Errors))]
pub async fn pull(
    State(state): State<AppState>,
    headers: HeaderMap,
    call: OpCall,
    ApiJson(req): ApiJson<PullImage>,
) -> Result<Response, ApiError> {
    if req.reference.trim().is_empty() {
        return Err(ApiError::Invalid("ref must not be empty".into()));
    }
    let work = Work::Pull {
        reference: req.reference,
    };
    if !super::exec::wants_sse(&headers) || call.respond_async {
        let reply = call.run::<Image>(&state, work, false).await?;
        return Ok(reply.respond(|image, _| Json(image).into_response()));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let submit = Submit {
        team: call.team,
        key: call.key,
        events: Some(tx),
    };
    let ticket = state.service.operations().submit(work, submit).await?;
    let id = ticket.id.clone();
    // The pull runs to its end whether or not anyone still listens; its end comes from the
    // operation (a retried pull reports its progress again from the start).
    let end = async move {
        match ticket.answer(false).await.and_then(|a| {
            serde_json::from_value::<Image>(a.value)
                .map_err(|e| ApiError::Internal(format!("decoding the image: {e}")))
        }) {
            Ok(image) => PullEvent::Done {
                image: Box::new(image),
            },
            Err(e) => PullEvent::Error {
                error: e.body().error,
            },
        }
    };
    let events = async_stream::stream! {
        tokio::pin!(end);
        loop {
            tokio::select! {
                biased;
                Some(event) = rx.recv() => yield event,
                last = &mut end => {
                    while let Ok(event) = rx.try_recv() {
                        yield event;
                    }
                    yield last;
                    break;
                }
            }
        }
    };
    let sse = events.map(|event| {
        let name = match &event {
            PullEvent::Resolved { .. } => "resolved",
            PullEvent::Layer(_) => "layer",
            PullEvent::Done { .. } => "done",
            PullEvent::Error { .. } => "error",
        };
        let data = serde_json::to_string(&event).unwrap_or_default();
        Ok::<_, Infallible>(Event::default().event(name).data(data))
    });
    let response = Sse::new(sse)
        .keep_alive(KeepAlive::default())
        .into_response();
    Ok(super::operations::with_operation(response, &id))
}

/// `POST /v1/images/prune`: removes the layers no image or sandbox uses.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PruneQuery {
    /// Forget the build cache (and uploaded build files) first, so its layers go too.
    #[serde(default)]
    build_cache: bool,
}

/// `POST /v1/images/prune[?build_cache=true]`.
#[utoipa::path(post, path = "/images/prune", tag = "images", params(PruneQuery), responses((status = 200, body = warren_api::image::PruneResult), super::doc::Errors))]
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
