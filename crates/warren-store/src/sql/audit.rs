//! The audit log: one row per recorded call, newest read first.
use super::DbRow;
use chrono::{DateTime, Utc};
use sqlx::Row;
use warren_api::AuditEntry;

use super::rows::{parse_ts, ts};
use super::store::SqlStore;
use crate::{AuditFilter, StoreError};

const COLUMNS: &str =
    "seq, at, key_id, team, method, path, route, target, status, client, request_id";

fn from_row(row: &DbRow) -> Result<AuditEntry, StoreError> {
    let seq: i64 = row.try_get("seq")?;
    Ok(AuditEntry {
        seq: u64::try_from(seq).unwrap_or(0),
        at: parse_ts(
            &format!("audit entry {seq}"),
            &row.try_get::<String, _>("at")?,
        )?,
        key_id: row.try_get("key_id")?,
        team: row.try_get("team")?,
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        route: row.try_get("route")?,
        target: row.try_get("target")?,
        status: u16::try_from(row.try_get::<i64, _>("status")?).unwrap_or(0),
        client: row.try_get("client")?,
        request_id: row.try_get("request_id")?,
    })
}

pub(super) async fn append(s: &SqlStore, e: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at, key_id, team, method, path, route, target, status, client,
         request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(ts(&e.at))
    .bind(&e.key_id)
    .bind(&e.team)
    .bind(&e.method)
    .bind(&e.path)
    .bind(&e.route)
    .bind(&e.target)
    .bind(i64::from(e.status))
    .bind(&e.client)
    .bind(&e.request_id)
    .execute(&s.writer)
    .await?;
    Ok(())
}

pub(super) async fn list(s: &SqlStore, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
    // Each condition is fixed text; only values are bound, in the order pushed.
    let mut sql = format!("SELECT {COLUMNS} FROM audit WHERE 1 = 1");
    let mut binds: Vec<Bind> = Vec::new();
    let mut cond = |sql: &mut String, text: &str, v: Bind| {
        binds.push(v);
        sql.push_str(&format!(" AND {text} ${}", binds.len()));
    };
    if let Some(v) = &f.team {
        cond(&mut sql, "team =", Bind::Text(v.clone()));
    }
    if let Some(v) = &f.key_id {
        cond(&mut sql, "key_id =", Bind::Text(v.clone()));
    }
    if let Some(v) = &f.target {
        cond(&mut sql, "target =", Bind::Text(v.clone()));
    }
    if let Some(v) = &f.method {
        cond(&mut sql, "method =", Bind::Text(v.clone()));
    }
    if let Some(v) = f.since {
        cond(&mut sql, "at >=", Bind::Text(ts(&v)));
    }
    if let Some(v) = f.until {
        cond(&mut sql, "at <", Bind::Text(ts(&v)));
    }
    if let Some(v) = f.before {
        cond(
            &mut sql,
            "seq <",
            Bind::Int(i64::try_from(v).unwrap_or(i64::MAX)),
        );
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", binds.len() + 1));
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = match b {
            Bind::Text(t) => q.bind(t),
            Bind::Int(i) => q.bind(i),
        };
    }
    q.bind(i64::from(f.limit))
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

enum Bind {
    Text(String),
    Int(i64),
}

pub(super) async fn prune(s: &SqlStore, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM audit WHERE at < $1")
        .bind(ts(&before))
        .execute(&s.writer)
        .await?;
    Ok(done.rows_affected())
}
