//! E2B's template tags, as image names: tag `v1` of template `app` is the image `app:v1` (the
//! same layers and config under another name), so `Sandbox.create("app:v1")` starts it.
//! A tag's `buildID` is derived from its image's digest: tags of the same content share it.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use warren_api::Image;

use super::templates::{split_tag, tagged};
use super::{E2bError, E2bJson};
use crate::AppState;

/// A UUID's spelling of an image digest's first 128 bits.
fn build_id_of(image: &Image) -> String {
    let hex = image
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&image.digest);
    let h = format!("{hex:0<32}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[derive(Debug, Deserialize)]
pub struct Assign {
    target: String,
    tags: Vec<String>,
}

/// `POST /templates/tags {"target": "name[:tag]", "tags": [...]}`.
pub async fn assign(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    E2bJson(req): E2bJson<Assign>,
) -> Result<(StatusCode, Json<Value>), E2bError> {
    let (template, _) = split_tag(&req.target);
    let mut image = None;
    let names = req
        .tags
        .iter()
        .map(|t| tagged(template, t))
        .collect::<Result<Vec<_>, _>>()?;
    for name in &names {
        image = Some(
            state
                .service
                .images()
                .tag_image(&req.target, name, &caller.team)
                .await?,
        );
    }
    let image = image.ok_or_else(|| E2bError::new(StatusCode::BAD_REQUEST, "no tags given"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"tags": req.tags, "buildID": build_id_of(&image)})),
    ))
}

#[derive(Debug, Deserialize)]
pub struct Remove {
    name: String,
    tags: Vec<String>,
}

/// `DELETE /templates/tags {"name", "tags"}`: the tags' images go (404 when none existed).
pub async fn remove(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    E2bJson(req): E2bJson<Remove>,
) -> Result<StatusCode, E2bError> {
    let (template, _) = split_tag(&req.name);
    let mut removed = 0;
    for tag in &req.tags {
        match state
            .service
            .images()
            .delete_image(&format!("{template}:{tag}"), &caller.team)
            .await
        {
            Ok(()) => removed += 1,
            Err(crate::error::ApiError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if removed == 0 {
        return Err(E2bError::new(
            StatusCode::NOT_FOUND,
            format!("template {template:?} has none of the tags {:?}", req.tags),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /templates/{id}/tags`.
pub async fn list(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path(template): Path<String>,
) -> Result<Json<Value>, E2bError> {
    let images = state.service.images().list_images(&caller.team).await?;
    if !images.iter().any(|i| split_tag(&i.name).0 == template) {
        return Err(E2bError::new(
            StatusCode::NOT_FOUND,
            format!("template {template:?} not found"),
        ));
    }
    let tags: Vec<Value> = images
        .iter()
        .filter_map(|i| match split_tag(&i.name) {
            (t, Some(tag)) if t == template => Some(json!({
                "tag": tag,
                "buildID": build_id_of(i),
                "createdAt": i.created_at,
            })),
            _ => None,
        })
        .collect();
    Ok(Json(Value::Array(tags)))
}
