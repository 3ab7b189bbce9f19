//! `/v1/sandboxes` lifecycle routes.
use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use warren_api::{
    CreateSandbox, ForkSandbox, ResumeSandbox, Sandbox, SandboxList, SandboxMetrics, SandboxState,
    SetNetwork, SetTimeout,
};

use super::sandbox_id;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::AppState;

pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateSandbox>,
) -> Result<(StatusCode, Json<Sandbox>), ApiError> {
    let (mut sandbox, waited) = state.service.create(req).await?;
    state.service.previews().add_exposed_urls(&mut sandbox);
    let status = if waited {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(sandbox)))
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HashMap<String, String>>,
) -> Result<Json<SandboxList>, ApiError> {
    let mut filter_state = None;
    let mut metadata = Vec::new();
    for (k, v) in query {
        if k == "state" {
            filter_state = Some(v.parse::<SandboxState>().map_err(ApiError::BadRequest)?);
        } else if let Some(key) = k.strip_prefix("metadata.") {
            metadata.push((key.to_owned(), v));
        } else {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {k:?} (expected state or metadata.KEY)"
            )));
        }
    }
    let sandboxes = state
        .service
        .sandboxes()
        .list(filter_state, &metadata)
        .await?;
    Ok(Json(SandboxList { sandboxes }))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let sandbox = state.service.sandboxes().get(&sandbox_id(&id)?).await?;
    Ok(Json(state.service.previews().with_ports(sandbox).await))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.sandboxes().delete(&sandbox_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    Ok(Json(
        state.service.sandboxes().stop(&sandbox_id(&id)?).await?,
    ))
}

pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    Ok(Json(
        state.service.sandboxes().start(&sandbox_id(&id)?).await?,
    ))
}

pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    Ok(Json(
        state.service.sandboxes().pause(&sandbox_id(&id)?).await?,
    ))
}

/// `POST /v1/sandboxes/{id}/resume`, with an optional body `{"timeout_s": N}`.
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Sandbox>, ApiError> {
    let req: ResumeSandbox = if body.iter().all(u8::is_ascii_whitespace) {
        ResumeSandbox::default()
    } else {
        crate::error::parse_json(&body)?
    };
    Ok(Json(
        state
            .service
            .sandboxes()
            .resume(&sandbox_id(&id)?, req.timeout_s)
            .await?,
    ))
}

/// `POST /v1/sandboxes/{id}/fork`, with an optional body `{"metadata", "timeout_s"}`.
pub async fn fork(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Sandbox>), ApiError> {
    let req: ForkSandbox = if body.iter().all(u8::is_ascii_whitespace) {
        ForkSandbox::default()
    } else {
        crate::error::parse_json(&body)?
    };
    let fork = state
        .service
        .sandboxes()
        .fork(&sandbox_id(&id)?, req)
        .await?;
    Ok((StatusCode::CREATED, Json(fork)))
}

pub async fn timeout(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetTimeout>,
) -> Result<Json<Sandbox>, ApiError> {
    Ok(Json(
        state
            .service
            .sandboxes()
            .set_timeout(&sandbox_id(&id)?, req.timeout_s)
            .await?,
    ))
}

pub async fn network(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetNetwork>,
) -> Result<Json<Sandbox>, ApiError> {
    Ok(Json(
        state
            .service
            .set_network(&sandbox_id(&id)?, req.egress)
            .await?,
    ))
}

pub async fn metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxMetrics>, ApiError> {
    Ok(Json(state.service.metrics().now(&sandbox_id(&id)?).await?))
}
