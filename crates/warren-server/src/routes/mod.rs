//! HTTP routes: thin handlers that parse, call the service and map errors.
mod audit;
mod build;
mod doc;
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
use axum::routing::{get, put};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
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
    // Every `/v1` route is registered from its handler's `#[utoipa::path]`, so the document
    // at `/openapi.json` describes exactly what is served.
    let (v1, api) = OpenApiRouter::default()
        .routes(routes!(sandboxes::create, sandboxes::list))
        .routes(routes!(sandboxes::get, sandboxes::delete))
        .routes(routes!(sandboxes::stop))
        .routes(routes!(sandboxes::start))
        .routes(routes!(sandboxes::pause))
        .routes(routes!(sandboxes::resume))
        .routes(routes!(sandboxes::fork))
        .routes(routes!(snapshots::create))
        .routes(routes!(snapshots::list))
        .routes(routes!(pools::create, pools::list))
        .routes(routes!(pools::delete))
        .routes(routes!(snapshots::get, snapshots::delete))
        .routes(routes!(sandboxes::timeout))
        .routes(routes!(sandboxes::network))
        .routes(routes!(sandboxes::metrics))
        .routes(routes!(exec::exec))
        .routes(routes!(exec::history))
        .routes(routes!(logs::logs))
        .routes(routes!(files::get, files::put, files::delete))
        .routes(routes!(files::list))
        .routes(routes!(pty::pty))
        .routes(routes!(logs::events))
        .routes(routes!(operations::list))
        .routes(routes!(operations::get))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::delete))
        .routes(routes!(teams::create, teams::list))
        .routes(routes!(teams::get, teams::update, teams::delete))
        .routes(routes!(audit::list))
        .routes(routes!(volumes::create, volumes::list))
        .routes(routes!(volumes::get, volumes::delete))
        .routes(routes!(volumes::backup))
        .routes(routes!(images::list))
        .routes(routes!(images::pull))
        .routes(routes!(images::tag))
        .routes(routes!(images::prune))
        .routes(routes!(build::build).layer(axum::extract::DefaultBodyLimit::disable()))
        .routes(routes!(build::follow))
        .split_for_parts();
    // An image's name holds slashes: a wildcard route, which OpenAPI cannot say, so it is
    // described by hand (`doc::ApiDoc`'s paths) as `/v1/images/{name}`.
    let v1 = v1
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
    let api = doc::document(api);
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // The document and a page to read it by: public, like the routes it describes.
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", api))
        .merge(metrics)
        .route("/readyz", get(readyz))
        .nest("/v1", v1)
        .merge(crate::e2b::router(state.clone()))
        // The web console: public files; what it shows comes from `/v1` with the user's key.
        .merge(crate::console::router())
        // Outside the key check: the URL's token is the credential.
        .route(
            "/e2b-template-files/{token}",
            axum::routing::put(crate::e2b::templates::upload)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .fallback(error::not_found)
        // axum adds the route's methods in `Allow`.
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(warren_api::ErrorBody::new(
                    "method_not_allowed",
                    "this route does not take this method (its methods are in Allow)",
                )),
            )
        });
    // MCP (streamable HTTP) for agents: each tool call is a call of these same routes, in
    // process, with the caller's own key; the key is checked here first as for `/v1`.
    let in_process = routes
        .clone()
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state.clone());
    let mcp = Router::new()
        .route_service(
            "/mcp",
            warren_mcp::http_service(warren_mcp::Api::in_process(in_process)),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_key,
        ));
    routes
        .merge(mcp)
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
