//! Operations in SQLite: one row each, the request that resumes it beside it.
use super::DbRow;
use chrono::{DateTime, Utc};
use sqlx::Row;
use warren_api::{ErrorDetail, Operation};

use super::rows::{parse_ts, ts};
use super::store::SqlStore;
use crate::{OperationFilter, OperationRecord, StoreError};

const COLUMNS: &str = "id, kind, target, state, priority, attempts, error_code, error_message, \
                       result, request, idempotency_key, created_at, started_at, ended_at, team, host";

fn corrupt(id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: format!("operation {id}"),
        source: serde::de::Error::custom(e),
    }
}

fn from_row(row: &DbRow) -> Result<OperationRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let what = format!("operation {id}");
    let opt_ts = |col: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.try_get::<Option<String>, _>(col)?
            .map(|s| parse_ts(&what, &s))
            .transpose()
    };
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let code: Option<String> = row.try_get("error_code")?;
    let message: Option<String> = row.try_get("error_message")?;
    let result: Option<String> = row.try_get("result")?;
    let op = Operation {
        kind: kind.parse().map_err(|e| corrupt(&id, e))?,
        state: state.parse().map_err(|e| corrupt(&id, e))?,
        target: row.try_get("target")?,
        priority: u8::try_from(row.try_get::<i64, _>("priority")?).unwrap_or(0),
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
        error: code.map(|code| ErrorDetail {
            code,
            message: message.unwrap_or_default(),
        }),
        result: result
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| corrupt(&id, e))?,
        created_at: parse_ts(&what, &row.try_get::<String, _>("created_at")?)?,
        started_at: opt_ts("started_at")?,
        ended_at: opt_ts("ended_at")?,
        team: row.try_get("team")?,
        id,
    };
    Ok(OperationRecord {
        op,
        request: row.try_get("request")?,
        key: row.try_get("idempotency_key")?,
        host: row.try_get("host")?,
    })
}

fn result_text(op: &Operation) -> Option<String> {
    op.result.as_ref().map(|v| v.to_string())
}

pub(super) async fn insert(s: &SqlStore, rec: &OperationRecord) -> Result<(), StoreError> {
    let op = &rec.op;
    let done = sqlx::query(&format!(
        "INSERT INTO operations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT DO NOTHING"
    ))
    .bind(&op.id)
    .bind(op.kind.as_str())
    .bind(&op.target)
    .bind(op.state.as_str())
    .bind(i64::from(op.priority))
    .bind(i64::from(op.attempts))
    .bind(op.error.as_ref().map(|e| e.code.as_str()))
    .bind(op.error.as_ref().map(|e| e.message.as_str()))
    .bind(result_text(op))
    .bind(&rec.request)
    .bind(rec.key.as_deref())
    .bind(ts(&op.created_at))
    .bind(op.started_at.as_ref().map(ts))
    .bind(op.ended_at.as_ref().map(ts))
    .bind(&op.team)
    .bind(&rec.host)
    .execute(&s.writer)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Exists(match &rec.key {
            Some(key) => format!("an operation with idempotency key {key:?}"),
            None => format!("operation {}", op.id),
        }));
    }
    Ok(())
}

pub(super) async fn update(s: &SqlStore, op: &Operation) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE operations SET target = $1, state = $2, attempts = $3, error_code = $4,
         error_message = $5, result = $6, started_at = $7, ended_at = $8 WHERE id = $9",
    )
    .bind(&op.target)
    .bind(op.state.as_str())
    .bind(i64::from(op.attempts))
    .bind(op.error.as_ref().map(|e| e.code.as_str()))
    .bind(op.error.as_ref().map(|e| e.message.as_str()))
    .bind(result_text(op))
    .bind(op.started_at.as_ref().map(ts))
    .bind(op.ended_at.as_ref().map(ts))
    .bind(&op.id)
    .execute(&s.writer)
    .await?;
    Ok(())
}

pub(super) async fn set_target(s: &SqlStore, id: &str, target: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE operations SET target = $1 WHERE id = $2")
        .bind(target)
        .bind(id)
        .execute(&s.writer)
        .await?;
    Ok(())
}

pub(super) async fn get(s: &SqlStore, id: &str) -> Result<Option<OperationRecord>, StoreError> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM operations WHERE id = $1"))
        .bind(id)
        .fetch_optional(&s.pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub(super) async fn by_key(s: &SqlStore, key: &str) -> Result<Option<OperationRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM operations WHERE idempotency_key = $1"
    ))
    .bind(key)
    .fetch_optional(&s.pool)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

pub(super) async fn list(s: &SqlStore, f: &OperationFilter) -> Result<Vec<Operation>, StoreError> {
    // Each condition is fixed text; only values are bound.
    let mut sql = format!("SELECT {COLUMNS} FROM operations WHERE 1 = 1");
    let mut n = 0;
    let mut cond = |sql: &mut String, col: &str| {
        n += 1;
        sql.push_str(&format!(" AND {col} = ${n}"));
        n
    };
    if f.target.is_some() {
        cond(&mut sql, "target");
    }
    if f.kind.is_some() {
        cond(&mut sql, "kind");
    }
    if f.state.is_some() {
        cond(&mut sql, "state");
    }
    if f.team.is_some() {
        cond(&mut sql, "team");
    }
    let limit = n + 1;
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ${limit}"
    ));
    let mut q = sqlx::query(&sql);
    if let Some(t) = &f.target {
        q = q.bind(t);
    }
    if let Some(k) = f.kind {
        q = q.bind(k.as_str());
    }
    if let Some(st) = f.state {
        q = q.bind(st.as_str());
    }
    if let Some(t) = &f.team {
        q = q.bind(t);
    }
    q.bind(i64::from(f.limit))
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(|r| from_row(r).map(|rec| rec.op))
        .collect()
}

pub(super) async fn unfinished(
    s: &SqlStore,
    host: &str,
) -> Result<Vec<OperationRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM operations WHERE state IN ('queued', 'running') AND host = $1
         ORDER BY created_at"
    ))
    .bind(host)
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub(super) async fn prune(s: &SqlStore, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM operations WHERE state IN ('succeeded', 'failed') AND ended_at < $1",
    )
    .bind(ts(&before))
    .execute(&s.writer)
    .await?;
    Ok(done.rows_affected())
}
