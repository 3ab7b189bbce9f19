//! E2B's control plane (`/sandboxes`, `/v2/sandboxes`, … with `X-API-KEY`), so E2B's own SDKs
//! work against Warren unchanged: a thin facade over the same [`crate::service::Service`] as
//! `/v1`, speaking E2B's shapes and status codes (the SDKs parse only the codes they list).
mod extras;
mod logs;
mod sandboxes;
mod secrets;
mod snapshots;
mod tags;
pub mod templates;
mod volumes;
mod wire;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use axum::{Json, Router};

use crate::error::ApiError;
use crate::AppState;

/// The routes, each behind E2B's API-key check.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/sandboxes",
            post(sandboxes::create).get(sandboxes::list_v1),
        )
        .route(
            "/v2/sandboxes",
            post(sandboxes::create).get(sandboxes::list),
        )
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get).delete(sandboxes::kill),
        )
        .route("/sandboxes/{id}/connect", post(sandboxes::connect))
        .route("/v2/sandboxes/{id}/connect", post(sandboxes::connect))
        .route("/sandboxes/{id}/resume", post(sandboxes::connect))
        .route("/sandboxes/{id}/timeout", post(sandboxes::timeout))
        .route("/sandboxes/{id}/network", put(sandboxes::network))
        .route("/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/sandboxes/{id}/metrics", get(sandboxes::metrics))
        .route("/sandboxes/{id}/logs", get(logs::v1))
        .route("/v2/sandboxes/{id}/logs", get(logs::v2))
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/sandboxes/{id}/fork", post(snapshots::fork))
        .route("/snapshots", get(snapshots::list))
        .route("/sandboxes/{id}/refreshes", post(extras::refresh))
        .route("/sandboxes/metrics", get(extras::many_metrics))
        .route("/templates/aliases/{alias}", get(extras::alias))
        .route(
            "/templates/{id}",
            delete(extras::delete_template)
                .get(extras::unsupported)
                .post(extras::unsupported)
                .patch(extras::unsupported),
        )
        .route("/templates", any(extras::unsupported))
        .route("/v2/templates", post(templates::request))
        .route("/v3/templates", post(templates::request))
        .route("/templates/{id}/files/{hash}", get(templates::files))
        .route("/v2/templates/{id}/builds/{build}", post(templates::start))
        .route(
            "/templates/{id}/builds/{build}/status",
            get(templates::status),
        )
        .route("/default-templates", any(extras::unsupported))
        .route("/templates/tags", post(tags::assign).delete(tags::remove))
        .route("/templates/{id}/tags", get(tags::list))
        .route("/templates/{id}/{*rest}", any(extras::unsupported))
        .route("/v2/templates/{id}", any(extras::unsupported))
        .route("/v2/templates/{id}/{*rest}", any(extras::unsupported))
        .route("/secrets", post(secrets::create).get(secrets::list))
        .route(
            "/secrets/{id}",
            get(secrets::get)
                .post(secrets::update)
                .delete(secrets::delete),
        )
        .route("/volumes", post(volumes::create).get(volumes::list))
        .route("/volumes/{id}", get(volumes::get).delete(volumes::delete))
        .route_layer(middleware::from_fn_with_state(state, require_api_key))
}

/// A JSON body, refused in E2B's shape (400 naming what is wrong) when it does not parse.
pub struct E2bJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for E2bJson<T> {
    type Rejection = E2bError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await;
        sandboxes::body(&bytes, None).map(E2bJson)
    }
}

/// An error in E2B's shape: `{"code": <status>, "message"}`.
#[derive(Debug)]
pub struct E2bError(StatusCode, String);

impl From<ApiError> for E2bError {
    fn from(e: ApiError) -> Self {
        let status = match &e {
            // E2B's SDKs know 400 for bad values, not 422.
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            other => other.status(),
        };
        E2bError(status, e.to_string())
    }
}

impl E2bError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        E2bError(status, message.into())
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        let E2bError(status, message) = self;
        if status.is_server_error() {
            tracing::error!("e2b: {message}");
        }
        let body = serde_json::json!({"code": status.as_u16(), "message": message});
        let mut resp = (status, Json(body)).into_response();
        // The SDKs retry 502/503/504 unless told not to; Warren's are not transient.
        resp.headers_mut()
            .insert("should-retry", HeaderValue::from_static("false"));
        resp
    }
}

/// E2B sends its key as `X-API-KEY`; a bearer is accepted too, as on `/v1`. The gate is
/// `/v1`'s ([`crate::auth::require_key`]), answering in E2B's shape.
async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| crate::auth::bearer(headers))
        .map(str::to_owned);
    crate::auth::guard_e2b(&state, req, next, key, |e| {
        let headers = e.headers();
        let unauthorized = matches!(e, ApiError::Unauthorized);
        let resp = if unauthorized {
            E2bError::new(
                StatusCode::UNAUTHORIZED,
                "missing or invalid API key (X-API-KEY)",
            )
        } else {
            E2bError::from(e)
        }
        .into_response();
        (headers, resp).into_response()
    })
    .await
}
