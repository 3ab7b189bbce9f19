//! HTTP routes: thin handlers that parse, call the service and map errors.
mod audit;
mod build;
mod exec;
mod files;
mod images;
mod keys;
mod logs;
pub(crate) mod operations;
mod pools;
mod pty;
mod sandboxes;
mod snapshots;
mod teams;
mod text;
mod volumes;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use warren_api::SandboxId;

use crate::error::{self, ApiError};
use crate::AppState;

/// Parses a path id; an id that cannot exist is simply not found.
fn sandbox_id(raw: &str) -> Result<SandboxId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("sandbox {raw:?} not found")))
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/sandboxes", post(sandboxes::create).get(sandboxes::list))
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get).delete(sandboxes::delete),
        )
        .route("/sandboxes/{id}/stop", post(sandboxes::stop))
        .route("/sandboxes/{id}/start", post(sandboxes::start))
        .route("/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/sandboxes/{id}/fork", post(sandboxes::fork))
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/snapshots", get(snapshots::list))
        .route("/pools", post(pools::create).get(pools::list))
        .route("/pools/{name}", axum::routing::delete(pools::delete))
        .route(
            "/snapshots/{name}",
            get(snapshots::get).delete(snapshots::delete),
        )
        .route("/sandboxes/{id}/timeout", post(sandboxes::timeout))
        .route("/sandboxes/{id}/network", put(sandboxes::network))
        .route("/sandboxes/{id}/metrics", get(sandboxes::metrics))
        .route("/sandboxes/{id}/exec", post(exec::exec))
        .route("/sandboxes/{id}/execs", get(exec::history))
        .route("/sandboxes/{id}/logs", get(logs::logs))
        .route(
            "/sandboxes/{id}/files",
            get(files::get).put(files::put).delete(files::delete),
        )
        .route("/sandboxes/{id}/files/list", get(files::list))
        .route("/sandboxes/{id}/pty", get(pty::pty))
        .route("/events", get(logs::events))
        .route("/operations", get(operations::list))
        .route("/operations/{id}", get(operations::get))
        .route("/keys", post(keys::create).get(keys::list))
        .route("/keys/{id}", axum::routing::delete(keys::delete))
        .route("/teams", post(teams::create).get(teams::list))
        .route(
            "/teams/{name}",
            get(teams::get).patch(teams::update).delete(teams::delete),
        )
        .route("/audit", get(audit::list))
        .route("/volumes", post(volumes::create).get(volumes::list))
        .route("/volumes/{name}", get(volumes::get).delete(volumes::delete))
        .route("/volumes/{name}/backup", post(volumes::backup))
        .route("/images", get(images::list))
        .route("/images/pull", post(images::pull))
        .route("/images/prune", post(images::prune))
        .route(
            "/images/build",
            post(build::build).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/images/builds/{id}", get(build::follow))
        .route(
            "/images/{*name}",
            put(images::import).delete(images::delete),
        )
        .fallback(error::not_found)
        // Inside the key check: a call that is refused claims no key.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::layer,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_key,
        ));
    let metrics =
        Router::new()
            .route("/metrics", get(metrics))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                crate::auth::require_key,
            ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(metrics)
        .route("/readyz", get(readyz))
        .nest("/v1", v1)
        .merge(crate::e2b::router(state.clone()))
        // Outside the key check: the URL's token is the credential.
        .route(
            "/e2b-template-files/{token}",
            axum::routing::put(crate::e2b::templates::upload)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .fallback(error::not_found)
        .method_not_allowed_fallback(|| async {
            ApiError::BadRequest("method not allowed on this route".into())
        })
        .layer(CatchPanicLayer::custom(panic_response))
        // Every request gets an id (or keeps the client's `X-Request-Id`), answered in the
        // same header and named by every log line written while it is served.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        id = %id,
                        method = %req.method(),
                        path = %req.uri().path()
                    )
                })
                .on_request(())
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG),
                )
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
        .with_state(state)
}

/// Request ids: 16 hex digits.
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = hex::encode(rand::random::<[u8; 8]>());
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(RequestId::new)
    }
}

/// A panic is a bug, but the client still gets the one error shape, not a dropped connection.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError::Internal("internal error (a bug: see the server log)".into()).into_response()
}

/// `GET /metrics` (with an API key): Prometheus' text format.
async fn metrics(State(state): State<AppState>) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let text = state
        .service
        .telemetry()
        .scrape(state.service.store(), &state.data_dir)
        .await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, &'static str), ApiError> {
    state
        .service
        .store()
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("store: {e}")))?;
    Ok((StatusCode::OK, "ready"))
}
