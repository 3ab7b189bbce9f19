//! E2B's `/volumes`: a volume's id is its Warren name. E2B's volume content routes
//! (`/volumecontent/...`, reading and writing a volume's files without a sandbox) are not
//! served: mount the volume into a sandbox instead. Its `token`, which only those routes take,
//! is therefore empty.
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use warren_api::{CreateVolume, Volume};

use super::E2bError;
use crate::auth::Caller;
use crate::AppState;

/// `POST /volumes`.
#[derive(Debug, Deserialize)]
pub struct NewVolume {
    pub name: String,
}

/// E2B's `Volume` (listing) and `VolumeAndToken` (create, get).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct E2bVolume {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn shown(v: Volume, with_token: bool) -> E2bVolume {
    E2bVolume {
        volume_id: v.name.clone(),
        name: v.name,
        token: with_token.then(String::new),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<E2bVolume>), E2bError> {
    let req: NewVolume = super::sandboxes::body(&bytes, None)?;
    let v = state
        .service
        .volumes()
        .create_volume(
            CreateVolume {
                name: req.name,
                size_mb: None,
            },
            &caller.team,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(shown(v, true))))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<E2bVolume>>, E2bError> {
    let all = state.service.volumes().list(&caller.team).await?;
    Ok(Json(all.into_iter().map(|v| shown(v, false)).collect()))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<E2bVolume>, E2bError> {
    Ok(Json(shown(
        state.service.volumes().volume(&id, &caller.team).await?,
        true,
    )))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, E2bError> {
    state
        .service
        .volumes()
        .delete_volume(&id, &caller.team)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
