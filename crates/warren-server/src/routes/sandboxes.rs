//! `/v1/sandboxes` lifecycle routes.
use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use warren_api::{
    CreateSandbox, ForkSandbox, ResumeSandbox, Sandbox, SandboxList, SandboxMetrics, SandboxState,
    SetNetwork, SetTimeout,
};

use axum::response::{IntoResponse, Response};

use super::operations::OpCall;
use super::sandbox_id;
use crate::auth::{AuditTarget, Caller};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::service::operations::Work;
use crate::AppState;

#[utoipa::path(post, path = "/sandboxes", tag = "sandboxes", params(super::doc::OperationHeaders), request_body = warren_api::CreateSandbox, responses((status = 201, description = "The sandbox, running (or failed: see its state and error)", body = warren_api::Sandbox), (status = 202, description = "`wait: false`: the sandbox as recorded, starting; `Prefer: respond-async`: the operation", body = super::doc::SandboxOrOperation), super::doc::Errors))]
pub async fn create(
    State(state): State<AppState>,
    call: OpCall,
    ApiJson(req): ApiJson<CreateSandbox>,
) -> Result<Response, ApiError> {
    let early = req.wait == Some(false);
    let work = Work::Create {
        request: Box::new(req),
        user: None,
    };
    let reply = call.run::<Sandbox>(&state, work, early).await?;
    Ok(reply.respond(|mut sandbox, early| {
        state.service.previews().add_exposed_urls(&mut sandbox);
        let status = if early {
            StatusCode::ACCEPTED
        } else {
            StatusCode::CREATED
        };
        let target = AuditTarget(sandbox.id.to_string());
        let mut resp = (status, Json(sandbox)).into_response();
        resp.extensions_mut().insert(target);
        resp
    }))
}

#[utoipa::path(get, path = "/sandboxes", tag = "sandboxes", params(("state" = Option<warren_api::SandboxState>, Query, description = "Only sandboxes in this state. `metadata.KEY=VALUE` parameters keep those whose metadata has KEY set to VALUE.")), responses((status = 200, body = warren_api::SandboxList), super::doc::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
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
        .list(&caller.team, filter_state, &metadata)
        .await?;
    Ok(Json(SandboxList {
        sandboxes: sandboxes.into_iter().map(|s| caller.shown(s)).collect(),
    }))
}

#[utoipa::path(get, path = "/sandboxes/{id}", tag = "sandboxes", params(super::doc::SandboxPath), responses((status = 200, body = warren_api::Sandbox), super::doc::Errors))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let sandbox = state.service.sandboxes().get(&sandbox_id(&id)?).await?;
    let sandbox = state.service.previews().with_ports(sandbox).await;
    Ok(Json(caller.shown(sandbox)))
}

#[utoipa::path(delete, path = "/sandboxes/{id}", tag = "sandboxes", params(super::doc::SandboxPath, super::doc::OperationHeaders), responses((status = 204, description = "Deleted"), (status = 202, description = "`Prefer: respond-async`: the operation", body = warren_api::Operation), super::doc::Errors))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: OpCall,
) -> Result<Response, ApiError> {
    let work = Work::Delete {
        id: sandbox_id(&id)?,
    };
    let reply = call.run::<()>(&state, work, false).await?;
    Ok(reply.respond(|(), _| StatusCode::NO_CONTENT.into_response()))
}

/// The sandbox a lifecycle operation answers with.
async fn sandbox_op(state: &AppState, call: OpCall, work: Work) -> Result<Response, ApiError> {
    let reply = call.run::<Sandbox>(state, work, false).await?;
    Ok(reply.respond(|s, _| Json(s).into_response()))
}

#[utoipa::path(post, path = "/sandboxes/{id}/stop", tag = "sandboxes", params(super::doc::SandboxPath, super::doc::OperationHeaders), responses((status = 200, description = "The sandbox, stopped", body = warren_api::Sandbox), (status = 202, description = "`Prefer: respond-async`: the operation", body = warren_api::Operation), super::doc::Errors))]
pub async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: OpCall,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&id)?;
    sandbox_op(&state, call, Work::Stop { id }).await
}

#[utoipa::path(post, path = "/sandboxes/{id}/start", tag = "sandboxes", params(super::doc::SandboxPath, super::doc::OperationHeaders), responses((status = 200, description = "The sandbox, running", body = warren_api::Sandbox), (status = 202, description = "`Prefer: respond-async`: the operation", body = warren_api::Operation), super::doc::Errors))]
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: OpCall,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&id)?;
    sandbox_op(&state, call, Work::Start { id }).await
}

#[utoipa::path(post, path = "/sandboxes/{id}/pause", tag = "sandboxes", params(super::doc::SandboxPath, super::doc::OperationHeaders), responses((status = 200, description = "The sandbox, paused", body = warren_api::Sandbox), (status = 202, description = "`Prefer: respond-async`: the operation", body = warren_api::Operation), super::doc::Errors))]
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: OpCall,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&id)?;
    sandbox_op(&state, call, Work::Pause { id }).await
}

/// `POST /v1/sandboxes/{id}/resume`, with an optional body `{"timeout_s": N}`.
#[utoipa::path(post, path = "/sandboxes/{id}/resume", tag = "sandboxes", params(super::doc::SandboxPath, super::doc::OperationHeaders), request_body(content = Option<warren_api::ResumeSandbox>, description = "Optional"), responses((status = 200, description = "The sandbox, running again", body = warren_api::Sandbox), (status = 202, description = "`Prefer: respond-async`: the operation", body = warren_api::Operation), super::doc::Errors))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: OpCall,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: ResumeSandbox = crate::error::optional_json(&body)?;
    if let Some(t) = req.timeout_s {
        crate::service::validate::timeout_s(t, "timeout_s")?;
    }
    let id = sandbox_id(&id)?;
    let work = Work::Resume {
        id,
        timeout_s: req.timeout_s,
    };
    sandbox_op(&state, call, work).await
}

/// `POST /v1/sandboxes/{id}/fork`, with an optional body `{"metadata", "timeout_s"}`.
#[utoipa::path(post, path = "/sandboxes/{id}/fork", tag = "sandboxes", params(super::doc::SandboxPath, super::doc::OperationHeaders), request_body(content = Option<warren_api::ForkSandbox>, description = "Optional"), responses((status = 201, description = "The new sandbox, running", body = warren_api::Sandbox), (status = 202, description = "`Prefer: respond-async`: the operation", body = warren_api::Operation), super::doc::Errors))]
pub async fn fork(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: OpCall,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: ForkSandbox = crate::error::optional_json(&body)?;
    let work = Work::Fork {
        id: sandbox_id(&id)?,
        request: req,
    };
    let reply = call.run::<Sandbox>(&state, work, false).await?;
    Ok(reply.respond(|s, _| (StatusCode::CREATED, Json(s)).into_response()))
}

#[utoipa::path(post, path = "/sandboxes/{id}/timeout", tag = "sandboxes", params(super::doc::SandboxPath), request_body = warren_api::SetTimeout, responses((status = 200, body = warren_api::Sandbox), super::doc::Errors))]
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

#[utoipa::path(put, path = "/sandboxes/{id}/network", tag = "sandboxes", params(super::doc::SandboxPath), request_body = warren_api::SetNetwork, responses((status = 200, body = warren_api::Sandbox), super::doc::Errors))]
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

#[utoipa::path(get, path = "/sandboxes/{id}/metrics", tag = "sandboxes", params(super::doc::SandboxPath), responses((status = 200, body = warren_api::SandboxMetrics), super::doc::Errors))]
pub async fn metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxMetrics>, ApiError> {
    Ok(Json(state.service.metrics().now(&sandbox_id(&id)?).await?))
}
