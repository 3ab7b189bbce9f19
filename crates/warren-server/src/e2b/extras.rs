//! E2B routes beyond a single sandbox's life: keep-alive refreshes, metrics of many sandboxes,
//! template lookups and deletes over Warren's images and snapshots, and a clear refusal for
//! every route of E2B's API that Warren does not serve.
use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::sandboxes::{body, id, visible};
use super::wire::Metric;
use super::E2bError;
use crate::error::ApiError;
use crate::AppState;

/// `POST /sandboxes/{id}/refreshes`: `{"duration": s}`.
#[derive(Debug, Default, Deserialize)]
pub struct Refresh {
    duration: Option<u64>,
}

/// How long a refresh without a duration keeps a sandbox (E2B's default).
const REFRESH_DEFAULT_S: u64 = 60;

/// Keeps the sandbox alive at least `duration` seconds from now (a longer life, or none, is
/// kept: a refresh only ever extends, as E2B's).
pub async fn refresh(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, E2bError> {
    let id = id(&raw)?;
    let req: Refresh = body(&bytes, Some(Refresh::default()))?;
    let secs = req.duration.unwrap_or(REFRESH_DEFAULT_S);
    crate::service::validate::timeout_s(secs, "duration")?;
    visible(&state, &id).await?;
    state
        .service
        .sandboxes()
        .extend_timeout(&id, secs.max(1))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub struct ManyMetrics {
    sandboxes: BTreeMap<String, Metric>,
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`: each running sandbox's latest sample.
pub async fn many_metrics(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<ManyMetrics>, E2bError> {
    let ids: Vec<String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "sandbox_ids")
        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() || ids.len() > 100 {
        return Err(E2bError::new(
            StatusCode::BAD_REQUEST,
            "sandbox_ids must name 1 to 100 sandboxes",
        ));
    }
    let mut sandboxes = BTreeMap::new();
    for raw in ids {
        let Ok(id) = raw.parse() else { continue };
        // Another team's sandboxes are left out as if gone.
        if state.service.sandboxes().team_of(&id).await? != Some(caller.team.clone()) {
            continue;
        }
        match state.service.metrics().now(&id).await {
            Ok(m) => {
                sandboxes.insert(raw, Metric::from(m));
            }
            // Gone or not running: left out, as E2B leaves them.
            Err(ApiError::NotFound(_) | ApiError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(ManyMetrics { sandboxes }))
}

#[derive(Debug, Serialize)]
pub struct Alias {
    #[serde(rename = "templateID")]
    template_id: String,
    public: bool,
}

/// `GET /templates/aliases/{alias}`: a template is an image or a snapshot of that name.
pub async fn alias(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path(name): Path<String>,
) -> Result<Json<Alias>, E2bError> {
    let images = state.service.images().list_images(&caller.team).await?;
    let found = images.iter().any(|i| i.name == name)
        || state
            .service
            .snapshots()
            .snapshot(&name, &caller.team)
            .await
            .is_ok();
    if !found {
        return Err(E2bError::new(
            StatusCode::NOT_FOUND,
            format!("template {name:?} not found"),
        ));
    }
    Ok(Json(Alias {
        template_id: name,
        public: false,
    }))
}

/// `DELETE /templates/{id}`: a snapshot (what `Sandbox.delete_snapshot` names) or an image.
pub async fn delete_template(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, E2bError> {
    let snapshots = state.service.snapshots();
    if snapshots.snapshot(&name, &caller.team).await.is_ok() {
        snapshots.delete_snapshot(&name, &caller.team).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    match state
        .service
        .images()
        .delete_image(&name, &caller.team)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(ApiError::NotFound(_)) => Err(E2bError::new(
            StatusCode::NOT_FOUND,
            format!("template {name:?} not found"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Every other route of E2B's API that its SDKs call: 501 in E2B's shape, naming it. The
/// body is read (and dropped) first: hyper closes a connection whose request body was not
/// read to its end when the answer went out, and a client (httpx writes a request's head and
/// body apart) that already sent its next request on it sees it cut. Seen once in CI.
pub async fn unsupported(
    method: Method,
    OriginalUri(uri): OriginalUri,
    _body: axum::body::Bytes,
) -> E2bError {
    let path = uri.path();
    let what = if path.contains("/tags") {
        "template tags"
    } else if path.starts_with("/templates")
        || path.starts_with("/v2/templates")
        || path.starts_with("/v3/templates")
        || path == "/default-templates"
    {
        "listing templates and reading a build's logs through this route (`warren image ls` lists templates; a build's status route carries its log)"
    } else {
        "this route"
    };
    E2bError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!("not supported by Warren: {what} ({method} {path})"),
    )
}
