//! E2B's sandbox routes over the service.
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use warren_api::{CreateSandbox, PullPolicy, Sandbox, SandboxId};
use warren_store::SandboxRecord;

use super::wire::{self, Created, Detail, Metric, NetworkUpdate, NewSandbox, Timeout};
use super::E2bError;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::operations::{Submit, Work};
use crate::AppState;

/// The user E2B's SDKs act as when they name none; used when the image has it.
const E2B_USER: &str = "user";
/// Page size of `GET /v2/sandboxes` when the request gives none (E2B's default).
const DEFAULT_LIMIT: usize = 100;

pub(super) fn id(raw: &str) -> Result<SandboxId, E2bError> {
    raw.parse()
        .map_err(|_| E2bError::new(StatusCode::NOT_FOUND, format!("sandbox {raw:?} not found")))
}

/// A JSON body; an empty one is the type's default where it has one.
pub(super) fn body<T: DeserializeOwned>(
    bytes: &Result<Bytes, BytesRejection>,
    empty: Option<T>,
) -> Result<T, E2bError> {
    let bytes = bytes
        .as_ref()
        .map_err(|e| E2bError::new(e.status(), format!("reading the body: {}", e.body_text())))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if let Some(v) = empty {
            return Ok(v);
        }
    }
    serde_json::from_slice(bytes).map_err(|e| {
        E2bError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

/// The record of a sandbox E2B would show, or 404.
pub(super) async fn visible(state: &AppState, id: &SandboxId) -> Result<SandboxRecord, E2bError> {
    let rec = state.service.record(id).await?;
    if wire::state(rec.sandbox.state).is_none() {
        return Err(E2bError::new(
            StatusCode::NOT_FOUND,
            format!("sandbox {id} not found ({})", rec.sandbox.state),
        ));
    }
    Ok(rec)
}

pub(super) async fn created(state: &AppState, sandbox: &Sandbox) -> Result<Created, E2bError> {
    let token = state.service.record(&sandbox.id).await?.token;
    let domain = state.service.previews().preview_urls().host_suffix();
    Ok(Created::of(sandbox, token, domain))
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, E2bError> {
    let req: NewSandbox = body(&bytes, None)?;
    let unsupported = req.unsupported();
    if !unsupported.is_empty() {
        return Err(E2bError::new(
            StatusCode::BAD_REQUEST,
            format!("not supported by Warren: {}", unsupported.join(", ")),
        ));
    }
    let egress = req
        .egress()
        .map_err(|m| E2bError::new(StatusCode::BAD_REQUEST, m))?;
    if let Some(t) = req.timeout {
        crate::service::validate::timeout_s(t, "timeout")?;
    }
    // E2B's templates are names: a bare one is a local image, never a Docker Hub pull; a full
    // reference (`registry/repo:tag`) is pulled when missing, as on `/v1`.
    let bare = !req.template_id.contains(['/', ':', '@']);
    // `${e2b.secrets.<name>}` (the SDK's `Secret.fill`) must name a secret; the value goes
    // into the sandbox's environment when it is made, never into its record.
    let env = req.env_vars.clone().unwrap_or_default();
    for value in env.values() {
        super::secrets::check_references(&state, value, &caller.team).await?;
    }
    let mut create = CreateSandbox {
        image: Some(req.template_id.clone()),
        pull: bare.then_some(PullPolicy::Never),
        env,
        metadata: req.metadata.clone().unwrap_or_default(),
        timeout_s: req.timeout,
        on_timeout: req.on_timeout(),
        auto_resume: Some(req.auto_resume()),
        volumes: req.volume_mounts(),
        egress: Some(egress),
        public: Some(req.public()),
        request_host: req.request_host(),
        ..CreateSandbox::default()
    };
    // A template naming a snapshot (what `create_snapshot` answered) makes the sandbox from
    // it: its image, limits and command are the snapshot's.
    if bare
        && state
            .service
            .snapshots()
            .snapshot(&req.template_id, &caller.team)
            .await
            .is_ok()
    {
        create.snapshot = create.image.take();
        create.pull = None;
    }
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|k| (1..=255).contains(&k.len()))
                .map(str::to_owned)
                .ok_or_else(|| {
                    E2bError::new(
                        StatusCode::BAD_REQUEST,
                        "Idempotency-Key must be 1 to 255 characters of text",
                    )
                })
        })
        .transpose()?;
    let sandbox = match key {
        Some(key) => {
            state
                .service
                .create_once(&key, create, Some(E2B_USER), &caller.team)
                .await?
        }
        None => {
            let work = Work::Create {
                request: Box::new(create),
                user: Some(E2B_USER.to_owned()),
            };
            state
                .service
                .operations()
                .call::<Sandbox>(work, Submit::by(&caller.team), false)
                .await?
                .value
        }
    };
    let target = crate::auth::AuditTarget(sandbox.id.to_string());
    let mut resp = (StatusCode::CREATED, Json(created(&state, &sandbox).await?)).into_response();
    resp.extensions_mut().insert(target);
    Ok(resp)
}

pub async fn get(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Detail>, E2bError> {
    let rec = visible(&state, &id(&raw)?).await?;
    let mut detail =
        Detail::of(&rec.sandbox).ok_or_else(|| E2bError::new(StatusCode::NOT_FOUND, "gone"))?;
    // The record already holds the agent's token: no second read.
    detail.envd_access_token = Some(rec.token);
    detail.domain = Some(state.service.previews().preview_urls().host_suffix());
    Ok(Json(detail))
}

pub async fn kill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<StatusCode, E2bError> {
    let id = id(&raw)?;
    visible(&state, &id).await?;
    let work = Work::Delete { id };
    state
        .service
        .operations()
        .call::<()>(work, Submit::by(&caller.team), false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn connect(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Created>), E2bError> {
    let id = id(&raw)?;
    let req: Timeout = body(&bytes, Some(Timeout::default()))?;
    visible(&state, &id).await?;
    let (sandbox, started) = state.service.sandboxes().connect(&id, req.timeout).await?;
    let status = if started {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(created(&state, &sandbox).await?)))
}

pub async fn timeout(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, E2bError> {
    let id = id(&raw)?;
    let req: Timeout = body(&bytes, None)?;
    let timeout = req
        .timeout
        .ok_or_else(|| E2bError::new(StatusCode::BAD_REQUEST, "timeout is required"))?;
    crate::service::validate::timeout_s(timeout, "timeout")?;
    visible(&state, &id).await?;
    // E2B's 0 is "now" (Warren's own API takes 0 as "never").
    if timeout == 0 {
        state.service.sandboxes().expire_now(&id).await?;
    } else {
        state.service.sandboxes().set_timeout(&id, timeout).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn network(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, E2bError> {
    let id = id(&raw)?;
    let req: NetworkUpdate = body(&bytes, None)?;
    let egress = req
        .egress()
        .map_err(|m| E2bError::new(StatusCode::BAD_REQUEST, m))?;
    visible(&state, &id).await?;
    state.service.set_network(&id, egress).await?;
    if let Some(public) = req.allow_public_traffic {
        state.service.previews().set_public(&id, public).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/pause`: with its memory (E2B's `mode="full"`, the default), or, with
/// `{"memory": false}` (`mode="filesystem"`), its files only: a stop, which `connect` boots
/// again from disk. 409 when it is paused (or stopped) already, as E2B answers.
pub async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, E2bError> {
    let id = id(&raw)?;
    let req: wire::PauseRequest = body(&bytes, Some(wire::PauseRequest::default()))?;
    visible(&state, &id).await?;
    let work = if req.memory == Some(false) {
        Work::Stop { id }
    } else {
        Work::Pause { id }
    };
    state
        .service
        .operations()
        .call::<Sandbox>(work, Submit::by(&caller.team), false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /sandboxes/{id}/metrics?start=&end=` (Unix seconds): the samples taken in that window
/// (by default since the start), or, before the first one, a sample taken now.
pub async fn metrics(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<Metric>>, E2bError> {
    let id = id(&raw)?;
    let (mut start, mut end) = (None, None);
    for (k, v) in query_pairs(query.as_deref()) {
        let slot = match k.as_str() {
            "start" => &mut start,
            "end" => &mut end,
            _ => continue,
        };
        let at = v
            .parse::<i64>()
            .ok()
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
            .ok_or_else(|| bad(format!("{k} {v:?} is not a Unix time in seconds")))?;
        *slot = Some(at);
    }
    visible(&state, &id).await?;
    let series = state.service.metrics().metrics_series(&id, start, end);
    let now = Utc::now();
    let window_has_now = start.is_none_or(|t| t <= now) && end.is_none_or(|t| t >= now);
    if !series.is_empty() || !window_has_now {
        return Ok(Json(series.into_iter().map(Metric::from).collect()));
    }
    match state.service.metrics().now(&id).await {
        Ok(m) => Ok(Json(vec![m.into()])),
        // Not running and never sampled: nothing to show.
        Err(ApiError::Conflict(_)) => Ok(Json(Vec::new())),
        Err(e) => Err(e.into()),
    }
}

/// The query of a list: repeated keys kept, values decoded.
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// E2B's `metadata` filter: `k=v&k2=v2`, each part percent-encoded once more by the SDK.
fn metadata_filter(raw: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (decode(&k), decode(&v)))
        .collect()
}

fn bad(message: String) -> E2bError {
    E2bError::new(StatusCode::BAD_REQUEST, message)
}

/// Where a page starts: after the sandbox started at `.0` with id `.1`.
type Cursor = (DateTime<Utc>, String);

fn encode_cursor(sandbox: &Sandbox) -> String {
    let at = sandbox.started_at.unwrap_or(sandbox.created_at);
    hex::encode(format!("{}|{}", at.to_rfc3339(), sandbox.id))
}

fn decode_cursor(token: &str) -> Option<Cursor> {
    let text = String::from_utf8(hex::decode(token).ok()?).ok()?;
    let (at, id) = text.split_once('|')?;
    Some((DateTime::parse_from_rfc3339(at).ok()?.into(), id.to_owned()))
}

fn sort_key(s: &Sandbox) -> Cursor {
    (s.started_at.unwrap_or(s.created_at), s.id.to_string())
}

/// `GET /v2/sandboxes`: filtered by `state` (default running and paused), `metadata`,
/// `template` and `startedAfter`, ordered by start (`order`, newest first by default), in
/// pages of `limit` with the next page's token in `x-next-token`.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, E2bError> {
    let mut states: Vec<String> = Vec::new();
    let (mut metadata, mut template, mut after) = (Vec::new(), None, None);
    let (mut limit, mut cursor, mut ascending) = (DEFAULT_LIMIT, None, false);
    for (k, v) in query_pairs(raw.as_deref()) {
        match k.as_str() {
            "state" => states.extend(v.split(',').map(str::trim).map(str::to_owned)),
            "metadata" => metadata.extend(metadata_filter(&v)),
            "template" => template = Some(v),
            "startedAfter" => {
                let at = DateTime::parse_from_rfc3339(&v)
                    .map_err(|e| bad(format!("startedAfter {v:?}: {e}")))?;
                after = Some(DateTime::<Utc>::from(at));
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(format!("limit {v:?} is not a positive number")))?;
            }
            "nextToken" => {
                cursor = Some(
                    decode_cursor(&v)
                        .ok_or_else(|| bad(format!("nextToken {v:?} is not one Warren gave"))),
                )
                .transpose()?;
            }
            "order" => {
                ascending = match v.as_str() {
                    "asc" => true,
                    "desc" => false,
                    _ => return Err(bad(format!("order {v:?}: expected asc or desc"))),
                }
            }
            _ => {}
        }
    }
    if states.is_empty() {
        states = vec!["running".into(), "paused".into()];
    }
    if let Some(s) = states
        .iter()
        .find(|s| !matches!(s.as_str(), "running" | "paused"))
    {
        return Err(bad(format!("state {s:?}: expected running or paused")));
    }
    let mut found: Vec<Sandbox> = state
        .service
        .sandboxes()
        .list(&caller.team, None, &metadata)
        .await?
        .into_iter()
        .filter(|s| wire::state(s.state).is_some_and(|st| states.iter().any(|x| x == st)))
        .filter(|s| template.as_ref().is_none_or(|t| &s.image == t))
        .filter(|s| after.is_none_or(|a| s.started_at.unwrap_or(s.created_at) > a))
        .collect();
    found.sort_by_key(sort_key);
    if !ascending {
        found.reverse();
    }
    if let Some(c) = cursor {
        found.retain(|s| {
            if ascending {
                sort_key(s) > c
            } else {
                sort_key(s) < c
            }
        });
    }
    let more = found.len() > limit;
    found.truncate(limit);
    let page: Vec<Detail> = found.iter().filter_map(Detail::of).collect();
    let mut resp = Json(page).into_response();
    if more {
        if let Some(v) = found
            .last()
            .map(encode_cursor)
            .and_then(|t| HeaderValue::from_str(&t).ok())
        {
            resp.headers_mut().insert("x-next-token", v);
        }
    }
    Ok(resp)
}

/// `GET /sandboxes` (E2B's first list): the running ones, filtered by `metadata`.
pub async fn list_v1(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Detail>>, E2bError> {
    let metadata: Vec<(String, String)> = query_pairs(raw.as_deref())
        .into_iter()
        .filter(|(k, _)| k == "metadata")
        .flat_map(|(_, v)| metadata_filter(&v))
        .collect();
    let running = state
        .service
        .sandboxes()
        .list(&caller.team, None, &metadata)
        .await?
        .iter()
        .filter(|s| wire::state(s.state) == Some("running"))
        .filter_map(Detail::of)
        .collect();
    Ok(Json(running))
}
