//! API keys (by the hash of their secret) and the teams they belong to.
use super::DbRow;
use chrono::{DateTime, Utc};
use sqlx::Row;
use warren_api::{ApiKey, Quotas, DEFAULT_TEAM};

use super::rows::{parse_ts, ts};
use super::store::SqlStore;
use crate::{Revoked, StoreError, TeamDeleted, TeamRecord};

const KEY_COLUMNS: &str =
    "id, name, team, scope, created_at, expires_at, revoked_at, last_used_at, rate_limit";

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        source: serde::de::Error::custom(e),
    }
}

fn opt_u32(row: &DbRow, col: &str) -> Result<Option<u32>, StoreError> {
    Ok(row
        .try_get::<Option<i64>, _>(col)?
        .and_then(|v| u32::try_from(v).ok()))
}

fn opt_u64(row: &DbRow, col: &str) -> Result<Option<u64>, StoreError> {
    Ok(row
        .try_get::<Option<i64>, _>(col)?
        .and_then(|v| u64::try_from(v).ok()))
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn key_from_row(row: &DbRow) -> Result<ApiKey, StoreError> {
    let id: String = row.try_get("id")?;
    let what = format!("api key {id}");
    let opt_ts = |col: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.try_get::<Option<String>, _>(col)?
            .map(|s| parse_ts(&what, &s))
            .transpose()
    };
    let scope: String = row.try_get("scope")?;
    Ok(ApiKey {
        name: row.try_get("name")?,
        team: row.try_get("team")?,
        scope: scope.parse().map_err(|e| corrupt(&what, e))?,
        created_at: parse_ts(&what, &row.try_get::<String, _>("created_at")?)?,
        expires_at: opt_ts("expires_at")?,
        revoked_at: opt_ts("revoked_at")?,
        last_used_at: opt_ts("last_used_at")?,
        rate_limit: opt_u32(row, "rate_limit")?,
        id,
    })
}

pub(super) async fn insert_api_key(
    s: &SqlStore,
    key: &ApiKey,
    hash: &str,
) -> Result<DateTime<Utc>, StoreError> {
    // As stored (to the microsecond), so the answer matches what a listing shows later.
    let stored = ts(&key.created_at);
    sqlx::query(
        "INSERT INTO api_keys (id, hash, name, team, scope, created_at, expires_at, rate_limit)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.id)
    .bind(hash)
    .bind(&key.name)
    .bind(&key.team)
    .bind(key.scope.to_string())
    .bind(&stored)
    .bind(key.expires_at.as_ref().map(ts))
    .bind(key.rate_limit.map(i64::from))
    .execute(&s.writer)
    .await?;
    parse_ts(&format!("api key {}", key.id), &stored)
}

pub(super) async fn api_key_by_hash(
    s: &SqlStore,
    hash: &str,
) -> Result<Option<ApiKey>, StoreError> {
    sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = $1"
    ))
    .bind(hash)
    .fetch_optional(&s.pool)
    .await?
    .as_ref()
    .map(key_from_row)
    .transpose()
}

pub(super) async fn count_api_keys(s: &SqlStore) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
        .fetch_one(&s.pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn list_api_keys(
    s: &SqlStore,
    team: Option<&str>,
) -> Result<Vec<ApiKey>, StoreError> {
    let rows = match team {
        Some(team) => {
            sqlx::query(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE team = $1 ORDER BY created_at, id"
            ))
            .bind(team)
            .fetch_all(&s.pool)
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
            ))
            .fetch_all(&s.pool)
            .await?
        }
    };
    rows.iter().map(key_from_row).collect()
}

/// Runs `body` in a transaction that is serializable where the database has a choice, trying
/// again when PostgreSQL refuses to serialize it: two revocations at once must not both see
/// the other's key and leave none.
macro_rules! serializable {
    ($s:expr, |$tx:ident| $body:expr) => {{
        let mut tries = 0;
        loop {
            let attempt = async {
                let mut $tx = $s.writer.begin().await?;
                if let Some(serializable) = super::SERIALIZABLE {
                    sqlx::query(serializable).execute(&mut *$tx).await?;
                }
                let out = $body;
                $tx.commit().await?;
                Ok::<_, sqlx::Error>(out)
            }
            .await;
            match attempt {
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("40001") && tries < 5 =>
                {
                    tries += 1;
                }
                other => break other,
            }
        }
    }};
}

/// The condition on `api_keys` that makes a key the operator's, in use, and in use for good
/// (an expiring one cannot be the operator's last: once it expired nothing could manage
/// the server).
const LASTING_OPERATOR: &str =
    "team = 'default' AND scope = 'admin' AND revoked_at IS NULL AND expires_at IS NULL";

pub(super) async fn revoke_api_key(s: &SqlStore, id: &str) -> Result<Revoked, StoreError> {
    let now = ts(&Utc::now());
    let out = serializable!(s, |tx| {
        let row =
            sqlx::query("SELECT team, scope, revoked_at, expires_at FROM api_keys WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        match row {
            None => Revoked::NotFound,
            Some(row) if row.try_get::<Option<String>, _>("revoked_at")?.is_some() => {
                Revoked::Already
            }
            Some(row) => {
                let lasting = row.try_get::<String, _>("team")? == DEFAULT_TEAM
                    && row.try_get::<String, _>("scope")? == "admin"
                    && row.try_get::<Option<String>, _>("expires_at")?.is_none();
                let others: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM api_keys WHERE {LASTING_OPERATOR} AND id <> $1"
                ))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                if lasting && others == 0 {
                    Revoked::LastOperatorKey
                } else {
                    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
                        .bind(&now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    Revoked::Done
                }
            }
        }
    })?;
    Ok(out)
}

pub(super) async fn touch_api_key(
    s: &SqlStore,
    id: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(ts(&at))
        .bind(id)
        .execute(&s.writer)
        .await?;
    Ok(())
}

const TEAM_COLUMNS: &str =
    "name, max_sandboxes, max_cpu, max_memory_mb, max_disk_mb, rate_limit, created_at";

fn team_from_row(row: &DbRow) -> Result<TeamRecord, StoreError> {
    let name: String = row.try_get("name")?;
    let what = format!("team {name}");
    Ok(TeamRecord {
        quotas: Quotas {
            sandboxes: opt_u64(row, "max_sandboxes")?,
            cpu: row.try_get("max_cpu")?,
            memory_mb: opt_u64(row, "max_memory_mb")?,
            disk_mb: opt_u64(row, "max_disk_mb")?,
        },
        rate_limit: opt_u32(row, "rate_limit")?,
        created_at: parse_ts(&what, &row.try_get::<String, _>("created_at")?)?,
        name,
    })
}

pub(super) async fn insert_team(s: &SqlStore, team: &TeamRecord) -> Result<(), StoreError> {
    let done = sqlx::query(&format!(
        "INSERT INTO teams ({TEAM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT DO NOTHING"
    ))
    .bind(&team.name)
    .bind(team.quotas.sandboxes.map(int))
    .bind(team.quotas.cpu)
    .bind(team.quotas.memory_mb.map(int))
    .bind(team.quotas.disk_mb.map(int))
    .bind(team.rate_limit.map(i64::from))
    .bind(ts(&team.created_at))
    .execute(&s.writer)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Exists(format!("team {}", team.name)));
    }
    Ok(())
}

pub(super) async fn get_team(s: &SqlStore, name: &str) -> Result<Option<TeamRecord>, StoreError> {
    sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE name = $1"))
        .bind(name)
        .fetch_optional(&s.pool)
        .await?
        .as_ref()
        .map(team_from_row)
        .transpose()
}

pub(super) async fn list_teams(s: &SqlStore) -> Result<Vec<TeamRecord>, StoreError> {
    sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY name"))
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(team_from_row)
        .collect()
}

pub(super) async fn update_team(s: &SqlStore, team: &TeamRecord) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE teams SET max_sandboxes = $2, max_cpu = $3, max_memory_mb = $4,
         max_disk_mb = $5, rate_limit = $6 WHERE name = $1",
    )
    .bind(&team.name)
    .bind(team.quotas.sandboxes.map(int))
    .bind(team.quotas.cpu)
    .bind(team.quotas.memory_mb.map(int))
    .bind(team.quotas.disk_mb.map(int))
    .bind(team.rate_limit.map(i64::from))
    .execute(&s.writer)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a team holds that keeps it from being deleted, counted in one statement each.
const HELD: [(&str, &str); 4] = [
    (
        "sandboxes",
        "SELECT COUNT(*) FROM sandboxes WHERE team = $1 AND state <> 'deleted'",
    ),
    ("volumes", "SELECT COUNT(*) FROM volumes WHERE team = $1"),
    ("secrets", "SELECT COUNT(*) FROM secrets WHERE team = $1"),
    ("images", "SELECT COUNT(*) FROM images WHERE team = $1"),
];

/// Deletes a team that holds nothing (no sandboxes but deleted ones, no volumes, secrets or
/// images) and revokes its keys, at once.
pub(super) async fn delete_team(s: &SqlStore, name: &str) -> Result<TeamDeleted, StoreError> {
    let now = ts(&Utc::now());
    let out = serializable!(s, |tx| {
        let mut held = Vec::new();
        for (what, sql) in HELD {
            let n: i64 = sqlx::query_scalar(sql)
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
            if n > 0 {
                held.push((what, u64::try_from(n).unwrap_or(0)));
            }
        }
        if !held.is_empty() {
            TeamDeleted::Holds(held)
        } else {
            let gone = sqlx::query("DELETE FROM teams WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE team = $2 AND revoked_at IS NULL",
            )
            .bind(&now)
            .bind(name)
            .execute(&mut *tx)
            .await?;
            if gone.rows_affected() == 0 {
                TeamDeleted::NotFound
            } else {
                TeamDeleted::Done
            }
        }
    })?;
    Ok(out)
}
