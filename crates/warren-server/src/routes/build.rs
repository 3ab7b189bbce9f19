//! `POST /v1/images/build`: an image from a Dockerfile and a build context, and `GET
//! /v1/images/builds/{id}` to follow a build again. Both answer with the build's events as
//! they happen, one JSON object a line (`application/x-ndjson`), ending with `done` or `error`.
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use warren_api::build::{parse_dockerfile, BuildEvent, Instruction};
use warren_backend::images::BuildFiles;

use crate::error::{ApiError, ApiQuery};
use crate::service::build::{Build, BuildPlan, PlannedStep};
use crate::service::upload_failed;
use crate::AppState;

/// The largest Dockerfile taken.
const MAX_DOCKERFILE: usize = 1 << 20;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BuildQuery {
    /// The image to record.
    name: String,
    /// Reuse nothing from earlier builds.
    #[serde(default)]
    no_cache: bool,
    /// CPUs of the RUN steps' sandboxes.
    cpu: Option<f64>,
    /// Memory of the RUN steps' sandboxes.
    memory_mb: Option<u64>,
}

fn bad(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::BadRequest(format!("reading the multipart body: {e}"))
}

/// Multipart fields `dockerfile` (its text) and, when COPY has something to copy, `context`
/// (a tar of the build context, gzipped or not).
#[utoipa::path(post, path = "/images/build", tag = "images", params(BuildQuery), request_body(content = String, content_type = "multipart/form-data", description = "Fields `dockerfile` (text) and optionally `context` (a tar of the build context)"), responses((status = 200, description = "The build's events, one BuildEvent of JSON a line; its id in `X-Warren-Build-Id`", content_type = "application/x-ndjson", body = warren_api::build::BuildEvent), super::doc::Errors))]
pub async fn build(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    ApiQuery(q): ApiQuery<BuildQuery>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    state.service.images().builds_possible()?;
    let mut form = form.map_err(|e| {
        ApiError::BadRequest(format!(
            "send multipart/form-data with the fields `dockerfile` and `context`: {}",
            e.body_text()
        ))
    })?;
    let mut dockerfile = None;
    let mut context = None;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("dockerfile") => {
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    if text.len() + chunk.len() > MAX_DOCKERFILE {
                        return Err(ApiError::TooLarge("the Dockerfile is over 1 MiB".into()));
                    }
                    text.extend_from_slice(&chunk);
                }
                dockerfile = Some(
                    String::from_utf8(text)
                        .map_err(|_| ApiError::BadRequest("the Dockerfile is not UTF-8".into()))?,
                );
            }
            Some("context") => {
                let mut incoming = state.service.layers().begin()?;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    incoming.write(&chunk).map_err(upload_failed)?;
                }
                context = Some(incoming);
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown multipart field {other:?}: send `dockerfile` and `context`"
                )))
            }
        }
    }
    let text = dockerfile.ok_or_else(|| {
        ApiError::BadRequest("send the Dockerfile as the multipart field `dockerfile`".into())
    })?;
    let mut instructions = parse_dockerfile(&text)
        .map_err(|e| ApiError::Invalid(e.to_string()))?
        .into_iter();
    let from = match instructions.next() {
        Some(Instruction::From { image }) => image,
        _ => {
            return Err(ApiError::Invalid(
                "a Dockerfile starts with FROM (after comments)".into(),
            ))
        }
    };
    let files = match context {
        Some(mut c) => {
            c.flushed().map_err(upload_failed)?;
            Some(BuildFiles::Context(std::sync::Arc::new(c)))
        }
        None => None,
    };
    let mut steps = Vec::new();
    for instruction in instructions {
        if matches!(instruction, Instruction::From { .. }) {
            return Err(ApiError::Invalid(
                "one FROM per Dockerfile: multi-stage builds are not supported".into(),
            ));
        }
        if matches!(instruction, Instruction::Copy { .. }) && files.is_none() {
            return Err(ApiError::Invalid(
                "the Dockerfile copies files: send the build context as the multipart field `context`".into(),
            ));
        }
        steps.push(PlannedStep {
            instruction,
            files: files.clone(),
            force: false,
            copy_as_current_user: false,
        });
    }
    let plan = BuildPlan {
        name: q.name,
        from,
        steps,
        no_cache: q.no_cache,
        cpu: q.cpu,
        memory_mb: q.memory_mb,
        start_cmd: None,
        ready_cmd: None,
        default_user: None,
        home_cwd: false,
        also_named: Vec::new(),
        team: caller.team,
    };
    let build = state.service.images().start_build(plan, None)?;
    Ok(ndjson(build))
}

/// `GET /v1/images/builds/{id}`: a build's events from the first, following it to its end.
#[utoipa::path(get, path = "/images/builds/{id}", tag = "images", params(("id" = String, Path, description = "The build's id")), responses((status = 200, description = "The build's events from the first, one BuildEvent of JSON a line", content_type = "application/x-ndjson", body = warren_api::build::BuildEvent), super::doc::Errors))]
pub async fn follow(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let build = state
        .service
        .images()
        .build(&id)
        .filter(|b| b.team == caller.team)
        .ok_or_else(|| ApiError::NotFound(format!("build {id:?} not found (kept for an hour)")))?;
    Ok(ndjson(build))
}

fn ndjson(build: Arc<Build>) -> Response {
    let id = HeaderValue::from_str(&build.id).ok();
    let mut resp = Body::from_stream(events(build)).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Some(id) = id {
        headers.insert("x-warren-build-id", id);
    }
    resp
}

/// Every event of the build, as lines, until its last.
fn events(build: Arc<Build>) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let rx = build.subscribe();
    futures::stream::unfold(
        (build, rx, 0usize, false),
        |(build, mut rx, mut sent, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let new = build.events_from(sent);
                if !new.is_empty() {
                    sent += new.len();
                    let last = matches!(
                        new.last(),
                        Some(BuildEvent::Done { .. } | BuildEvent::Error { .. })
                    );
                    let mut out = Vec::new();
                    for e in &new {
                        if let Ok(line) = serde_json::to_vec(e) {
                            out.extend(line);
                            out.push(b'\n');
                        }
                    }
                    return Some((Ok(Bytes::from(out)), (build, rx, sent, last)));
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    )
}
