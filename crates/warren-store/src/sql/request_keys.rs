//! Idempotency keys of plain mutating calls: claimed before the call runs, holding its answer
//! after.
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::rows::ts;
use super::store::SqlStore;
use crate::{KeyClaim, StoreError, StoredAnswer};

pub(super) async fn claim(
    s: &SqlStore,
    key: &str,
    fingerprint: &str,
    host: &str,
    at: DateTime<Utc>,
) -> Result<KeyClaim, StoreError> {
    let done = sqlx::query(
        "INSERT INTO request_keys (key, fingerprint, state, created_at, host)
         VALUES ($1, $2, 'running', $3, $4) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(fingerprint)
    .bind(ts(&at))
    .bind(host)
    .execute(&s.writer)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(KeyClaim::Claimed);
    }
    let Some(row) = sqlx::query(
        "SELECT fingerprint, state, status, content_type, body FROM request_keys WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(&s.writer)
    .await?
    else {
        // Released between the two statements: the caller may try again.
        return Ok(KeyClaim::Running {
            fingerprint: fingerprint.to_owned(),
        });
    };
    let fingerprint: String = row.try_get("fingerprint")?;
    let state: String = row.try_get("state")?;
    if state != "done" {
        return Ok(KeyClaim::Running { fingerprint });
    }
    let status: Option<i64> = row.try_get("status")?;
    Ok(KeyClaim::Done {
        fingerprint,
        answer: StoredAnswer {
            status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(500),
            content_type: row.try_get("content_type")?,
            body: row.try_get("body")?,
        },
    })
}

pub(super) async fn finish(
    s: &SqlStore,
    key: &str,
    answer: &StoredAnswer,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE request_keys SET state = 'done', status = $2, content_type = $3, body = $4
         WHERE key = $1",
    )
    .bind(key)
    .bind(i64::from(answer.status))
    .bind(answer.content_type.as_deref())
    .bind(answer.body.as_deref())
    .execute(&s.writer)
    .await?;
    Ok(())
}

pub(super) async fn release(s: &SqlStore, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM request_keys WHERE key = $1 AND state = 'running'")
        .bind(key)
        .execute(&s.writer)
        .await?;
    Ok(())
}

pub(super) async fn prune(s: &SqlStore, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM request_keys WHERE created_at < $1")
        .bind(ts(&before))
        .execute(&s.writer)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn drop_running(s: &SqlStore, host: &str) -> Result<u64, StoreError> {
    // Keys of no server are from before servers were named: no other server claimed them.
    let done = sqlx::query("DELETE FROM request_keys WHERE state = 'running' AND host IN ($1, '')")
        .bind(host)
        .execute(&s.writer)
        .await?;
    Ok(done.rows_affected())
}
