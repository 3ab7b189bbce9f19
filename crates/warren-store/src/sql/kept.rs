//! What outlives sandboxes in the store: volumes, snapshots, warm pools.
use chrono::{DateTime, Utc};

use super::rows::{parse_ts, snapshot_from_doc, ts, volume_from_row};
use super::store::SqlStore;
use crate::{SnapshotRecord, StoreError};

/// The tables of things kept by name.
#[derive(Clone, Copy)]
enum Kept {
    Volume,
    Snapshot,
    Pool,
}

/// Removes the row named `name`; whether there was one.
async fn delete_named(s: &SqlStore, what: Kept, name: &str) -> Result<bool, StoreError> {
    // A fixed statement per table: table names cannot be bound parameters.
    let sql = match what {
        Kept::Volume => "DELETE FROM volumes WHERE name = $1",
        Kept::Snapshot => "DELETE FROM snapshots WHERE name = $1",
        Kept::Pool => "DELETE FROM pools WHERE name = $1",
    };
    let done = sqlx::query(sql).bind(name).execute(&s.writer).await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn insert_volume(
    s: &SqlStore,
    name: &str,
    size_mb: u64,
    at: DateTime<Utc>,
    team: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO volumes (name, size_mb, created_at, team) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(i64::try_from(size_mb).unwrap_or(i64::MAX))
    .bind(ts(&at))
    .bind(team)
    .execute(&s.writer)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn get_volume(
    s: &SqlStore,
    name: &str,
) -> Result<Option<(u64, DateTime<Utc>, String)>, StoreError> {
    let row = sqlx::query("SELECT name, size_mb, created_at, team FROM volumes WHERE name = $1")
        .bind(name)
        .fetch_optional(&s.pool)
        .await?;
    row.map(|r| volume_from_row(&r).map(|(_, size, at, team)| (size, at, team)))
        .transpose()
}

pub(super) async fn list_volumes(
    s: &SqlStore,
) -> Result<Vec<(String, u64, DateTime<Utc>, String)>, StoreError> {
    sqlx::query("SELECT name, size_mb, created_at, team FROM volumes ORDER BY name")
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(volume_from_row)
        .collect()
}

pub(super) async fn delete_volume(s: &SqlStore, name: &str) -> Result<bool, StoreError> {
    delete_named(s, Kept::Volume, name).await
}

pub(super) async fn insert_snapshot(
    s: &SqlStore,
    rec: &SnapshotRecord,
) -> Result<bool, StoreError> {
    let doc = serde_json::to_string(rec).map_err(|source| StoreError::Corrupt {
        what: format!("snapshot {}", rec.snapshot.name),
        source,
    })?;
    let done = sqlx::query(
        "INSERT INTO snapshots (name, image_digest, created_at, doc) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&rec.snapshot.name)
    .bind(&rec.sandbox.image_digest)
    .bind(ts(&rec.snapshot.created_at))
    .bind(doc)
    .execute(&s.writer)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn get_snapshot(
    s: &SqlStore,
    name: &str,
) -> Result<Option<SnapshotRecord>, StoreError> {
    let doc: Option<String> = sqlx::query_scalar("SELECT doc FROM snapshots WHERE name = $1")
        .bind(name)
        .fetch_optional(&s.pool)
        .await?;
    doc.map(|d| snapshot_from_doc(name, &d)).transpose()
}

pub(super) async fn list_snapshots(s: &SqlStore) -> Result<Vec<SnapshotRecord>, StoreError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, doc FROM snapshots ORDER BY name")
            .fetch_all(&s.pool)
            .await?;
    rows.iter()
        .map(|(name, doc)| snapshot_from_doc(name, doc))
        .collect()
}

pub(super) async fn delete_snapshot(s: &SqlStore, name: &str) -> Result<bool, StoreError> {
    delete_named(s, Kept::Snapshot, name).await
}

pub(super) async fn insert_pool(
    s: &SqlStore,
    pool: &warren_api::CreatePool,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let doc = serde_json::to_string(pool).map_err(|source| StoreError::Corrupt {
        what: format!("pool {}", pool.name),
        source,
    })?;
    let done = sqlx::query(
        "INSERT INTO pools (name, created_at, doc) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&pool.name)
    .bind(ts(&at))
    .bind(doc)
    .execute(&s.writer)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn list_pools(
    s: &SqlStore,
) -> Result<Vec<(warren_api::CreatePool, DateTime<Utc>)>, StoreError> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT name, created_at, doc FROM pools ORDER BY name")
            .fetch_all(&s.pool)
            .await?;
    rows.iter()
        .map(|(name, at, doc)| {
            let pool = serde_json::from_str(doc).map_err(|source| StoreError::Corrupt {
                what: format!("pool {name}"),
                source,
            })?;
            Ok((pool, parse_ts(&format!("pool {name}"), at)?))
        })
        .collect()
}

pub(super) async fn delete_pool(s: &SqlStore, name: &str) -> Result<bool, StoreError> {
    delete_named(s, Kept::Pool, name).await
}
