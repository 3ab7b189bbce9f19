//! E2B's snapshots and forks over Warren's: `POST /sandboxes/{id}/snapshots` (a snapshot's id
//! is its Warren name; `templateID` naming it at create makes a sandbox from it),
//! `GET /snapshots`, and `POST /sandboxes/{id}/fork` (`count` forks, each its own result).
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use warren_api::{CreateSnapshot, ForkSandbox};

use super::sandboxes::{body, created, id, visible};
use super::wire::Created;
use super::E2bError;
use crate::auth::Caller;
use crate::service::operations::{Submit, Work};
use crate::AppState;

/// `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Default, Deserialize)]
pub struct SnapshotRequest {
    pub name: Option<String>,
    pub memory: Option<bool>,
}

/// E2B's `SnapshotInfo`.
#[derive(Debug, Serialize)]
pub struct SnapshotInfo {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}

/// `GET /snapshots`'s filters.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: Option<String>,
    pub name: Option<String>,
}

/// `POST /sandboxes/{id}/fork`.
#[derive(Debug, Default, Deserialize)]
pub struct ForkRequest {
    pub timeout: Option<u64>,
    pub count: Option<u32>,
}

/// One fork's outcome.
#[derive(Debug, Serialize)]
pub struct ForkResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Created>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ForkError>,
}

/// E2B's `Error` inside a fork result.
#[derive(Debug, Serialize)]
pub struct ForkError {
    pub code: u16,
    pub message: String,
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SnapshotInfo>), E2bError> {
    let id = id(&raw)?;
    let req: SnapshotRequest = body(&bytes, Some(SnapshotRequest::default()))?;
    visible(&state, &id).await?;
    let name = req.name.unwrap_or_else(|| {
        let suffix: [u8; 6] = rand::random();
        format!("snap-{}", hex::encode(suffix))
    });
    let request = CreateSnapshot {
        name,
        memory: req.memory,
    };
    crate::service::validate_snapshot_name(&request.name)?;
    let snap = state
        .service
        .operations()
        .call::<warren_api::Snapshot>(
            Work::Snapshot { id, request },
            Submit::by(&caller.team),
            false,
        )
        .await?
        .value;
    Ok((
        StatusCode::CREATED,
        Json(SnapshotInfo {
            snapshot_id: snap.name.clone(),
            names: vec![snap.name],
        }),
    ))
}

/// `GET /snapshots?sandboxID=&name=`: all of them in one page (no `x-next-token`).
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<SnapshotInfo>>, E2bError> {
    let all = state.service.snapshots().list(&caller.team).await?;
    // E2B's names may carry a namespace and a tag (`team/name:tag`): the name is the middle.
    let wanted = q.name.as_deref().map(|n| {
        let n = n.rsplit('/').next().unwrap_or(n);
        n.split(':').next().unwrap_or(n).to_owned()
    });
    Ok(Json(
        all.into_iter()
            .filter(|s| q.sandbox_id.as_ref().is_none_or(|id| *id == s.source))
            .filter(|s| wanted.as_ref().is_none_or(|n| *n == s.name))
            .map(|s| SnapshotInfo {
                snapshot_id: s.name.clone(),
                names: vec![s.name],
            })
            .collect(),
    ))
}

pub async fn fork(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Vec<ForkResult>>), E2bError> {
    let id = id(&raw)?;
    let req: ForkRequest = body(&bytes, Some(ForkRequest::default()))?;
    let count = req.count.unwrap_or(1);
    if !(1..=20).contains(&count) {
        return Err(E2bError::new(
            StatusCode::BAD_REQUEST,
            format!("count {count}: from 1 to 20"),
        ));
    }
    visible(&state, &id).await?;
    let mut results = Vec::new();
    for _ in 0..count {
        let made = state
            .service
            .sandboxes()
            .fork(
                &id,
                ForkSandbox {
                    metadata: None,
                    timeout_s: Some(req.timeout.unwrap_or(15)),
                },
            )
            .await;
        results.push(match made {
            Ok(sb) => ForkResult {
                sandbox: Some(created(&state, &sb).await?),
                error: None,
            },
            // The first fork's failure is the request's (the source is at fault); later
            // ones are reported in their entries.
            Err(e) if results.is_empty() => return Err(e.into()),
            Err(e) => ForkResult {
                sandbox: None,
                error: Some(ForkError {
                    code: e.status().as_u16(),
                    message: e.to_string(),
                }),
            },
        });
    }
    Ok((StatusCode::CREATED, Json(results)))
}
