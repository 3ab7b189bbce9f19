//! E2B's template build API, on Warren's image builder: `POST /v3/templates` names a template
//! (a Warren image of that name) and hands out a build id; COPY steps' files are uploaded by
//! their hash (`GET /templates/{id}/files/{hash}` answers whether they are here and where to
//! PUT them); `POST /v2/templates/{id}/builds/{build}` starts the steps; the status route
//! reports the build's log from an offset, at most 100 entries a call, as the SDKs poll it.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use warren_api::build::{BuildEvent, Instruction, LogLevel};
use warren_backend::images::BuildFiles;

use super::{E2bError, E2bJson};
use crate::service::build::{build_id, BuildPlan, Outcome, PlannedStep};
use crate::AppState;

/// How long an upload URL stays good.
const UPLOAD_URL_LIFE: Duration = Duration::from_secs(3600);
/// Most log entries one status call answers with (E2B's own limit).
const MAX_ENTRIES: usize = 100;

/// Builds asked for and not started yet, and the upload URLs handed out.
#[derive(Debug, Default)]
pub struct Requests {
    builds: Mutex<HashMap<String, Requested>>,
    uploads: Mutex<HashMap<String, (String, Instant)>>,
}

#[derive(Debug, Clone)]
struct Requested {
    /// The template's id: its name without a tag.
    template: String,
    /// The image the build records: the name as given (`name` or `name:tag`).
    image: String,
    /// The image's other names: `template:tag` for each tag asked for.
    tags: Vec<String>,
    cpu: Option<f64>,
    memory_mb: Option<u64>,
    /// When it was asked for: builds not started within [`UPLOAD_URL_LIFE`] are forgotten.
    at: Instant,
}

/// `name:tag` as (`name`, `tag`); a name without a tag is its own template.
pub(super) fn split_tag(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once(':') {
        Some((n, t)) if !n.is_empty() && !t.is_empty() && !t.contains('/') => (n, Some(t)),
        _ => (name, None),
    }
}

/// The image name of tag `tag` (`v1`, or `name:v1` naming the template itself) of `template`.
pub(super) fn tagged(template: &str, tag: &str) -> Result<String, E2bError> {
    let tag = match tag.split_once(':') {
        Some((name, t)) if name == template && !t.is_empty() => t,
        Some(_) => {
            return Err(E2bError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid tag {tag:?}: give `tag` or `{template}:tag`"),
            ))
        }
        None => tag,
    };
    let name = format!("{template}:{tag}");
    check_template_name(&name)?;
    Ok(name)
}

/// Whether `name` may name a template (and so an image).
pub(super) fn check_template_name(name: &str) -> Result<(), E2bError> {
    let parts_ok = name.split(':').all(|p| !p.is_empty()) && name.matches(':').count() <= 1;
    if parts_ok && warren_api::image::valid_image_name(name) {
        Ok(())
    } else {
        Err(E2bError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{name:?} is not a valid template name (a-z 0-9 . _ / -, with at most one `:tag`)"
            ),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewTemplate {
    name: Option<String>,
    alias: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    cpu_count: Option<f64>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<u64>,
}

/// `POST /v3/templates` (and `/v2/templates`): a build id for the template `name`.
pub async fn request(
    State(state): State<AppState>,
    E2bJson(req): E2bJson<NewTemplate>,
) -> Result<(StatusCode, Json<Value>), E2bError> {
    let name = req
        .name
        .or(req.alias)
        .ok_or_else(|| E2bError::new(StatusCode::BAD_REQUEST, "a template needs a name"))?;
    check_template_name(&name)?;
    let (template, tag) = split_tag(&name);
    let tags = req
        .tags
        .iter()
        .map(|t| tagged(template, t))
        .collect::<Result<Vec<_>, _>>()?;
    // Bad input is said first (400); a good request on a server that cannot build, then.
    state.service.images().builds_possible()?;
    let id = build_id();
    let mut builds = crate::lock(&state.e2b_templates.builds);
    builds.retain(|_, r| r.at.elapsed() < UPLOAD_URL_LIFE);
    builds.insert(
        id.clone(),
        Requested {
            template: template.to_owned(),
            image: name.clone(),
            tags,
            cpu: req.cpu_count,
            memory_mb: req.memory_mb,
            at: Instant::now(),
        },
    );
    drop(builds);
    let all_tags: Vec<&str> = tag
        .into_iter()
        .chain(req.tags.iter().map(String::as_str))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "templateID": template,
            "buildID": id,
            "public": false,
            "names": [name],
            "tags": all_tags,
            "aliases": [template],
        })),
    ))
}

/// `GET /templates/{id}/files/{hash}`: whether the files are here, and where to PUT them.
pub async fn files(
    State(state): State<AppState>,
    Path((_template, hash)): Path<(String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<(StatusCode, Json<Value>), E2bError> {
    if !warren_backend::images::valid_key(&hash) {
        return Err(E2bError::new(
            StatusCode::BAD_REQUEST,
            format!("{hash:?} is not a files hash"),
        ));
    }
    state.service.images().builds_possible()?;
    let present = state.service.layers().has_files(&hash);
    let token = hex::encode(rand::random::<[u8; 24]>());
    {
        let mut uploads = crate::lock(&state.e2b_templates.uploads);
        uploads.retain(|_, (_, at)| at.elapsed() < UPLOAD_URL_LIFE);
        uploads.insert(token.clone(), (hash, Instant::now()));
    }
    // HTTP/2 carries the host as the URI's authority, HTTP/1.1 as the Host header.
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let scheme = state.service.previews().preview_urls().scheme;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "present": present,
            "url": format!("{scheme}://{host}/e2b-template-files/{token}"),
        })),
    ))
}

/// `PUT /e2b-template-files/{token}`: the files of an upload URL (no API key: the token in
/// the URL is the credential, as in a signed object-store URL). A token is good once; files
/// already here under that hash are kept, never replaced.
pub async fn upload(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Body,
) -> Result<StatusCode, E2bError> {
    let hash = {
        let mut uploads = crate::lock(&state.e2b_templates.uploads);
        match uploads.remove(&token) {
            Some((hash, at)) if at.elapsed() < UPLOAD_URL_LIFE => hash,
            _ => {
                return Err(E2bError::new(
                    StatusCode::FORBIDDEN,
                    "this upload URL is unknown or expired",
                ))
            }
        }
    };
    let internal =
        |e: &dyn std::fmt::Display| E2bError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let store = state.service.layers();
    if store.has_files(&hash) {
        return Ok(StatusCode::OK);
    }
    let mut incoming = store.begin().map_err(|e| internal(&e))?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            E2bError::new(StatusCode::BAD_REQUEST, format!("reading the upload: {e}"))
        })?;
        incoming.write(&chunk).map_err(|e| internal(&e))?;
    }
    store
        .keep_files(incoming, &hash)
        .map_err(|e| internal(&e))?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartBuild {
    from_image: Option<String>,
    from_template: Option<String>,
    from_image_registry: Option<Value>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    steps: Vec<Step>,
    start_cmd: Option<String>,
    ready_cmd: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Step {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    args: Vec<String>,
    files_hash: Option<String>,
    #[serde(default)]
    force: bool,
}

fn bad(msg: impl Into<String>) -> E2bError {
    E2bError::new(StatusCode::BAD_REQUEST, msg)
}

/// E2B's default base image is Warren's `base`.
fn base_name(image: &str) -> &str {
    match image {
        "e2bdev/base" | "e2bdev/base:latest" | "docker.io/e2bdev/base:latest" => "base",
        other => other,
    }
}

fn instruction(step: &Step, index: usize) -> Result<Instruction, E2bError> {
    let arg = |i: usize| step.args.get(i).cloned().unwrap_or_default();
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let need = |n: usize| {
        if step.args.len() < n {
            Err(bad(format!(
                "step {index} ({}) needs {n} argument(s)",
                step.kind
            )))
        } else {
            Ok(())
        }
    };
    Ok(match step.kind.as_str() {
        "RUN" => {
            need(1)?;
            Instruction::Run {
                command: arg(0),
                user: nonempty(arg(1)),
            }
        }
        "COPY" => {
            need(2)?;
            let mode = match nonempty(arg(3)) {
                Some(m) => Some(u32::from_str_radix(&m, 8).map_err(|_| {
                    bad(format!("step {index}: mode {m:?} is not an octal number"))
                })?),
                None => None,
            };
            Instruction::Copy {
                sources: vec![arg(0)],
                dest: arg(1),
                chown: nonempty(arg(2)),
                mode,
            }
        }
        "ENV" => {
            if !step.args.len().is_multiple_of(2) {
                return Err(bad(format!("step {index}: ENV takes key, value pairs")));
            }
            Instruction::Env {
                vars: step
                    .args
                    .chunks(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect(),
            }
        }
        "WORKDIR" => {
            need(1)?;
            Instruction::Workdir { path: arg(0) }
        }
        "USER" => {
            need(1)?;
            Instruction::User { user: arg(0) }
        }
        other => {
            return Err(E2bError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("not supported by Warren: template step type {other:?} (step {index})"),
            ))
        }
    })
}

/// `POST /v2/templates/{id}/builds/{build}`: starts the build asked for.
pub async fn start(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path((template, build)): Path<(String, String)>,
    E2bJson(req): E2bJson<StartBuild>,
) -> Result<StatusCode, E2bError> {
    // Taken out at once, so two starts of one build never both run it; put back when this
    // one is refused, so the client may correct it and try again.
    let requested = {
        let mut builds = crate::lock(&state.e2b_templates.builds);
        match builds.get(&build) {
            Some(r) if r.template == template => builds.remove(&build),
            _ => None,
        }
    }
    .ok_or_else(|| {
        E2bError::new(
            StatusCode::NOT_FOUND,
            format!("build {build:?} of template {template:?} not found"),
        )
    })?;
    let result = start_requested(&state, &build, requested.clone(), req, &caller.team);
    if result.is_err() {
        crate::lock(&state.e2b_templates.builds).insert(build, requested);
    }
    result
}

fn start_requested(
    state: &AppState,
    build: &str,
    requested: Requested,
    req: StartBuild,
    team: &str,
) -> Result<StatusCode, E2bError> {
    if req.from_image_registry.is_some() {
        return Err(E2bError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not supported by Warren: registry credentials in a template (give them to the server with --registry-auth)",
        ));
    }
    let from = match (req.from_image, req.from_template) {
        (Some(i), None) => base_name(&i).to_owned(),
        (None, Some(t)) => t,
        _ => return Err(bad("a build starts from fromImage or fromTemplate")),
    };
    let store = state.service.layers();
    let mut steps = Vec::new();
    for (i, s) in req.steps.iter().enumerate() {
        let instruction = instruction(s, i + 1)?;
        let files = match (&instruction, &s.files_hash) {
            (Instruction::Copy { .. }, Some(hash)) => {
                if !store.has_files(hash) {
                    return Err(bad(format!(
                        "step {}: files {hash:?} were not uploaded",
                        i + 1
                    )));
                }
                Some(BuildFiles::Uploaded(hash.clone()))
            }
            (Instruction::Copy { .. }, None) => {
                return Err(bad(format!("step {}: COPY needs its filesHash", i + 1)))
            }
            _ => None,
        };
        steps.push(PlannedStep {
            instruction,
            files,
            force: s.force,
            copy_as_current_user: true,
        });
    }
    let plan = BuildPlan {
        name: requested.image,
        also_named: requested.tags,
        from,
        steps,
        no_cache: req.force,
        cpu: requested.cpu,
        memory_mb: requested.memory_mb,
        start_cmd: req.start_cmd,
        ready_cmd: req.ready_cmd,
        default_user: Some("user".into()),
        home_cwd: true,
        team: team.to_owned(),
    };
    state
        .service
        .images()
        .start_build(plan, Some(build.to_owned()))?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusQuery {
    #[serde(default)]
    logs_offset: usize,
    limit: Option<usize>,
    level: Option<LogLevel>,
}

#[derive(Debug, Serialize)]
struct Entry {
    timestamp: chrono::DateTime<chrono::Utc>,
    level: LogLevel,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<String>,
}

/// A build's events as E2B's log entries (one an event, but the last: the outcome is the
/// status).
fn entries(events: &[BuildEvent], created: chrono::DateTime<chrono::Utc>) -> Vec<Entry> {
    let mut at = created;
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Step {
                index,
                total,
                text,
                cached,
            } => Some(Entry {
                timestamp: at,
                level: LogLevel::Info,
                message: format!(
                    "[{index}/{total}] {text}{}",
                    if *cached { " (cached)" } else { "" }
                ),
                step: Some(index.to_string()),
            }),
            BuildEvent::Log {
                at: t,
                level,
                message,
            } => {
                at = *t;
                Some(Entry {
                    timestamp: *t,
                    level: *level,
                    message: message.clone(),
                    step: None,
                })
            }
            BuildEvent::Done { .. } | BuildEvent::Error { .. } => None,
        })
        .collect()
}

/// `GET /templates/{id}/builds/{build}/status?logsOffset=N`.
pub async fn status(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path((template, build)): Path<(String, String)>,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Json<Value>, E2bError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let Some(b) = state
        .service
        .images()
        .build(&build)
        .filter(|b| split_tag(&b.name).0 == template && b.team == caller.team)
    else {
        let waiting = crate::lock(&state.e2b_templates.builds)
            .get(&build)
            .is_some_and(|r| r.template == template);
        if waiting {
            return Ok(Json(json!({
                "templateID": template, "buildID": build, "status": "waiting",
                "logs": [], "logEntries": [],
            })));
        }
        return Err(E2bError::new(
            StatusCode::NOT_FOUND,
            format!("build {build:?} of template {template:?} not found"),
        ));
    };
    let outcome = b.outcome();
    let all = entries(&b.events_from(0), b.created_at);
    let wanted: Vec<&Entry> = all
        .iter()
        .skip(q.logs_offset)
        .filter(|e| q.level.is_none_or(|l| e.level == l))
        .take(q.limit.unwrap_or(MAX_ENTRIES).min(MAX_ENTRIES))
        .collect();
    let logs: Vec<String> = wanted.iter().map(|e| e.message.clone()).collect();
    let mut body = json!({
        "templateID": template,
        "buildID": build,
        "logs": logs,
        "logEntries": wanted,
    });
    body["status"] = json!(match &outcome {
        Outcome::Running => "building",
        Outcome::Done(_) => "ready",
        Outcome::Failed { .. } => "error",
    });
    if let Outcome::Failed { step, message } = outcome {
        body["reason"] = json!({ "message": message });
        if let Some(s) = step {
            body["reason"]["step"] = json!(s.to_string());
        }
    }
    Ok(Json(body))
}
