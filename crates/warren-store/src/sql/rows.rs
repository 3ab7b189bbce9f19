//! Rows to the store's types and back: timestamps, sandbox documents, images, execs.
use chrono::{DateTime, Utc};
use sqlx::Row;
use warren_api::{ExecKind, ExecRecord, Image};

use crate::{SnapshotRecord, StoreError};

pub(super) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) fn parse_ts(what: &str, s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            what: what.to_owned(),
            source: serde::de::Error::custom(e),
        })
}

pub(super) fn image_from_row(row: &super::DbRow) -> Result<Image, StoreError> {
    let name: String = row.try_get("name")?;
    let created: String = row.try_get("created_at")?;
    let size: i64 = row.try_get("size")?;
    let layers: String = row.try_get("layers")?;
    let config: String = row.try_get("config")?;
    let corrupt = |source| StoreError::Corrupt {
        what: format!("image {name}"),
        source,
    };
    Ok(Image {
        created_at: parse_ts(&format!("image {name}"), &created)?,
        digest: row.try_get("digest")?,
        size: u64::try_from(size).unwrap_or(0),
        source: row.try_get("source")?,
        layers: serde_json::from_str(&layers).map_err(corrupt)?,
        config: serde_json::from_str(&config).map_err(corrupt)?,
        team: row.try_get("team")?,
        name,
    })
}

pub(super) const DELETED: &str = "deleted";

pub(super) fn exec_from_row(row: &super::DbRow) -> Result<ExecRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let cmd: String = row.try_get("cmd")?;
    let kind: String = row.try_get("kind")?;
    let started: String = row.try_get("started_at")?;
    let exit_code: Option<i64> = row.try_get("exit_code")?;
    let duration: i64 = row.try_get("duration_ms")?;
    Ok(ExecRecord {
        cmd: serde_json::from_str(&cmd).map_err(|source| StoreError::Corrupt {
            what: format!("exec {id}"),
            source,
        })?,
        label: row.try_get("label")?,
        kind: if kind == "system" {
            ExecKind::System
        } else {
            ExecKind::User
        },
        exit_code: exit_code.and_then(|c| i32::try_from(c).ok()),
        stdout: row.try_get("stdout")?,
        stderr: row.try_get("stderr")?,
        started_at: parse_ts(&format!("exec {id}"), &started)?,
        duration_ms: u64::try_from(duration).unwrap_or(0),
        id,
    })
}

pub(super) fn volume_from_row(
    row: &super::DbRow,
) -> Result<(String, u64, DateTime<Utc>, String), StoreError> {
    let name: String = row.try_get("name")?;
    let size: i64 = row.try_get("size_mb")?;
    let at: String = row.try_get("created_at")?;
    let at = parse_ts(&format!("volume {name}"), &at)?;
    let team: String = row.try_get("team")?;
    Ok((name, u64::try_from(size).unwrap_or(0), at, team))
}

pub(super) fn snapshot_from_doc(name: &str, doc: &str) -> Result<SnapshotRecord, StoreError> {
    serde_json::from_str(doc).map_err(|source| StoreError::Corrupt {
        what: format!("snapshot {name}"),
        source,
    })
}
