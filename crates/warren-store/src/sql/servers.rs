//! Servers sharing the database: who is alive, and which one takes over a server that stopped
//! answering (a lease in its row, so exactly one does).
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::rows::{parse_ts, ts};
use super::store::SqlStore;
use crate::{ServerRecord, Settled, StoreError};

pub(super) async fn adopt_hostless(s: &SqlStore, host: &str) -> Result<u64, StoreError> {
    let mut tx = s.writer.begin().await?;
    let done = sqlx::query("UPDATE sandboxes SET host = $1 WHERE host = ''")
        .bind(host)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE operations SET host = $1 WHERE host = ''")
        .bind(host)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

pub(super) async fn heartbeat(
    s: &SqlStore,
    name: &str,
    url: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = ts(&at);
    sqlx::query(
        "INSERT INTO servers (name, url, started_at, seen_at) VALUES ($1, $2, $3, $3)
         ON CONFLICT (name) DO UPDATE SET url = excluded.url, seen_at = excluded.seen_at,
         reaper = NULL, reaped_at = NULL",
    )
    .bind(name)
    .bind(url)
    .bind(&at)
    .execute(&s.writer)
    .await?;
    Ok(())
}

pub(super) async fn list(s: &SqlStore) -> Result<Vec<ServerRecord>, StoreError> {
    sqlx::query("SELECT name, url, seen_at FROM servers ORDER BY name")
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(|row| {
            let name: String = row.try_get("name")?;
            let seen: String = row.try_get("seen_at")?;
            Ok(ServerRecord {
                seen_at: parse_ts(&format!("server {name}"), &seen)?,
                url: row.try_get("url")?,
                name,
            })
        })
        .collect()
}

pub(super) async fn take_over(
    s: &SqlStore,
    dead: &str,
    me: &str,
    stale: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    // One statement: of servers racing for the same dead one, the database lets one win.
    let stale = ts(&stale);
    let done = sqlx::query(
        "UPDATE servers SET reaper = $1, reaped_at = $2
         WHERE name = $3 AND seen_at < $4 AND (reaper IS NULL OR reaped_at < $4)",
    )
    .bind(me)
    .bind(ts(&now))
    .bind(dead)
    .bind(&stale)
    .execute(&s.writer)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn forget(s: &SqlStore, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM servers WHERE name = $1")
        .bind(name)
        .execute(&s.writer)
        .await?;
    Ok(())
}

/// Sandbox states a server's stop leaves nothing of: their processes were on its host.
const LOST_STATES: &str =
    "('pending', 'provisioning', 'starting', 'running', 'stopping', 'pausing', 'resuming', \
     'terminating')";

pub(super) async fn settle_takeover(
    s: &SqlStore,
    dead: &str,
    me: &str,
    why: &str,
    now: DateTime<Utc>,
) -> Result<Option<Settled>, StoreError> {
    let mut tx = s.writer.begin().await?;
    // Holds the lease's row to the end: a heartbeat of `dead` (which clears the lease) waits
    // for this transaction, or came first and nothing here is written.
    let held = sqlx::query("UPDATE servers SET reaped_at = $1 WHERE name = $2 AND reaper = $3")
        .bind(ts(&now))
        .bind(dead)
        .bind(me)
        .execute(&mut *tx)
        .await?;
    if held.rows_affected() != 1 {
        return Ok(None);
    }
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "UPDATE sandboxes SET state = 'failed', error = $1, ip = NULL, net_index = NULL
         WHERE host = $2 AND state IN {LOST_STATES} RETURNING id"
    ))
    .bind(why)
    .bind(dead)
    .fetch_all(&mut *tx)
    .await?;
    let ops = sqlx::query(
        "UPDATE operations SET state = 'failed', ended_at = $1, error_code = 'interrupted',
         error_message = $2 WHERE host = $3 AND state IN ('queued', 'running')",
    )
    .bind(ts(&now))
    .bind(why)
    .bind(dead)
    .execute(&mut *tx)
    .await?;
    let keys = sqlx::query("DELETE FROM request_keys WHERE host = $1 AND state = 'running'")
        .bind(dead)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM servers WHERE name = $1")
        .bind(dead)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(Settled {
        // Every id was written from a `SandboxId`.
        sandboxes: ids.iter().filter_map(|id| id.parse().ok()).collect(),
        operations: ops.rows_affected(),
        keys: keys.rows_affected(),
    }))
}
