//! Sealed secrets in the store (API keys are in `keys`).
use super::DbRow;

use sqlx::Row;

use super::rows::{parse_ts, ts};
use super::store::SqlStore;
use crate::{SecretRecord, StoreError};

fn secret_from_row(row: &DbRow) -> Result<SecretRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let what = format!("secret {id}");
    let metadata: String = row.try_get("metadata")?;
    let created: String = row.try_get("created_at")?;
    let updated: String = row.try_get("updated_at")?;
    let version: i64 = row.try_get("version")?;
    Ok(SecretRecord {
        metadata: serde_json::from_str(&metadata).map_err(|source| StoreError::Corrupt {
            what: what.clone(),
            source,
        })?,
        name: row.try_get("name")?,
        version: u64::try_from(version).unwrap_or(0),
        sealed: row.try_get("sealed")?,
        created_at: parse_ts(&what, &created)?,
        updated_at: parse_ts(&what, &updated)?,
        team: row.try_get("team")?,
        id,
    })
}

fn metadata_json(rec: &SecretRecord) -> Result<String, StoreError> {
    serde_json::to_string(&rec.metadata).map_err(|source| StoreError::Corrupt {
        what: format!("secret {}", rec.id),
        source,
    })
}

pub(super) async fn insert_secret(s: &SqlStore, rec: &SecretRecord) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO secrets (id, name, version, metadata, sealed, created_at, updated_at, team)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(&rec.id)
    .bind(&rec.name)
    .bind(i64::try_from(rec.version).unwrap_or(i64::MAX))
    .bind(metadata_json(rec)?)
    .bind(&rec.sealed)
    .bind(ts(&rec.created_at))
    .bind(ts(&rec.updated_at))
    .bind(&rec.team)
    .execute(&s.writer)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn get_secret(
    s: &SqlStore,
    id_or_name: &str,
) -> Result<Option<SecretRecord>, StoreError> {
    // An id first: a name that looks like another secret's id does not shadow it.
    let row = sqlx::query(
        "SELECT * FROM secrets WHERE id = $1 OR name = $1 ORDER BY (id = $1) DESC LIMIT 1",
    )
    .bind(id_or_name)
    .fetch_optional(&s.pool)
    .await?;
    row.as_ref().map(secret_from_row).transpose()
}

pub(super) async fn list_secrets(s: &SqlStore) -> Result<Vec<SecretRecord>, StoreError> {
    sqlx::query("SELECT * FROM secrets ORDER BY name")
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(secret_from_row)
        .collect()
}

pub(super) async fn update_secret(s: &SqlStore, rec: &SecretRecord) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE secrets SET version = $1, metadata = $2, sealed = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(i64::try_from(rec.version).unwrap_or(i64::MAX))
    .bind(metadata_json(rec)?)
    .bind(&rec.sealed)
    .bind(ts(&rec.updated_at))
    .bind(&rec.id)
    .execute(&s.writer)
    .await?;
    Ok(())
}

pub(super) async fn delete_secret(s: &SqlStore, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM secrets WHERE id = $1")
        .bind(id)
        .execute(&s.writer)
        .await?;
    Ok(done.rows_affected() == 1)
}
