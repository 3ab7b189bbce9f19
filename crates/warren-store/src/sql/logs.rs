//! Sandboxes' logs: lines by sequence number, trimmed to a budget, and the offsets
//! a tail resumes from.
use sqlx::Row;
use warren_api::{LogLine, LogStream, SandboxId};

use super::rows::{parse_ts, ts};
use super::store::SqlStore;
use crate::{LogSize, StoreError};

/// Log rows per INSERT statement (5 parameters each; SQLite allows 32766).
const LOG_ROWS_PER_INSERT: usize = 1000;

pub(super) async fn append_logs(
    s: &SqlStore,
    sandbox: &SandboxId,
    lines: &[LogLine],
    offsets: &[(&str, u64)],
) -> Result<(), StoreError> {
    let mut tx = s.writer.begin().await?;
    // Many rows per statement: one statement per line cost most of a busy sandbox's
    // share of the writer.
    for chunk in lines.chunks(LOG_ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<super::Db>::new(
            "INSERT INTO logs (sandbox_id, seq, ts, stream, text) ",
        );
        q.push_values(chunk, |mut row, l| {
            row.push_bind(sandbox.as_str())
                .push_bind(i64::try_from(l.seq).unwrap_or(i64::MAX))
                .push_bind(ts(&l.ts))
                .push_bind(l.stream.as_str())
                .push_bind(&l.text);
        });
        q.build().execute(&mut *tx).await?;
    }
    for (stream, offset) in offsets {
        sqlx::query(
            "INSERT INTO log_offsets (sandbox_id, stream, bytes_read) VALUES ($1, $2, $3)
             ON CONFLICT (sandbox_id, stream) DO UPDATE SET bytes_read = excluded.bytes_read",
        )
        .bind(sandbox.as_str())
        .bind(*stream)
        .bind(i64::try_from(*offset).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list_logs(
    s: &SqlStore,
    sandbox: &SandboxId,
    after: u64,
    limit: u32,
) -> Result<Vec<LogLine>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, ts, stream, text FROM logs WHERE sandbox_id = $1 AND seq > $2
         ORDER BY seq LIMIT $3",
    )
    .bind(sandbox.as_str())
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(&s.pool)
    .await?;
    rows.iter()
        .map(|row| {
            let seq: i64 = row.try_get("seq")?;
            let t: String = row.try_get("ts")?;
            let stream: String = row.try_get("stream")?;
            Ok(LogLine {
                seq: u64::try_from(seq).unwrap_or(0),
                ts: parse_ts(&format!("log line {seq}"), &t)?,
                stream: match stream.as_str() {
                    "stdout" => LogStream::Stdout,
                    "stderr" => LogStream::Stderr,
                    _ => LogStream::Event,
                },
                text: row.try_get("text")?,
            })
        })
        .collect()
}

pub(super) async fn last_log_seq(s: &SqlStore, sandbox: &SandboxId) -> Result<u64, StoreError> {
    let n: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM logs WHERE sandbox_id = $1")
        .bind(sandbox.as_str())
        .fetch_one(&s.pool)
        .await?;
    Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

pub(super) async fn first_log_seq(s: &SqlStore, sandbox: &SandboxId) -> Result<u64, StoreError> {
    let n: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM logs WHERE sandbox_id = $1")
        .bind(sandbox.as_str())
        .fetch_one(&s.pool)
        .await?;
    Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

pub(super) async fn log_size(s: &SqlStore, sandbox: &SandboxId) -> Result<LogSize, StoreError> {
    let row = sqlx::query(
        "SELECT MIN(seq) AS first, MAX(seq) AS last, COUNT(*) AS n,
         CAST(COALESCE(SUM(OCTET_LENGTH(text)), 0) AS BIGINT) AS bytes
         FROM logs WHERE sandbox_id = $1",
    )
    .bind(sandbox.as_str())
    .fetch_one(&s.pool)
    .await?;
    let get = |name: &str| -> Result<u64, StoreError> {
        let v: Option<i64> = row.try_get(name)?;
        Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    };
    Ok(LogSize {
        first_seq: get("first")?,
        last_seq: get("last")?,
        lines: get("n")?,
        bytes: get("bytes")?,
    })
}

pub(super) async fn trim_logs(
    s: &SqlStore,
    sandbox: &SandboxId,
    keep_lines: u64,
    keep_bytes: u64,
) -> Result<(u64, u64), StoreError> {
    let mut tx = s.writer.begin().await?;
    // Running totals from the newest line back: the newest line past either budget
    // goes, with everything older.
    let cut: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(seq) FROM (
           SELECT seq, COUNT(*) OVER w AS n, SUM(OCTET_LENGTH(text)) OVER w AS b
           FROM logs WHERE sandbox_id = $1
           WINDOW w AS (ORDER BY seq DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
         ) AS windowed WHERE n > $2 OR b > $3",
    )
    .bind(sandbox.as_str())
    .bind(i64::try_from(keep_lines).unwrap_or(i64::MAX))
    .bind(i64::try_from(keep_bytes).unwrap_or(i64::MAX))
    .fetch_one(&mut *tx)
    .await?;
    let Some(cut) = cut else {
        return Ok((0, 0));
    };
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(OCTET_LENGTH(text)), 0) AS BIGINT) AS bytes
         FROM logs WHERE sandbox_id = $1 AND seq <= $2",
    )
    .bind(sandbox.as_str())
    .bind(cut)
    .fetch_one(&mut *tx)
    .await?;
    let (n, bytes): (i64, i64) = (row.try_get("n")?, row.try_get("bytes")?);
    sqlx::query("DELETE FROM logs WHERE sandbox_id = $1 AND seq <= $2")
        .bind(sandbox.as_str())
        .bind(cut)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((
        u64::try_from(n).unwrap_or(0),
        u64::try_from(bytes).unwrap_or(0),
    ))
}

pub(super) async fn log_offsets(
    s: &SqlStore,
    sandbox: &SandboxId,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = sqlx::query("SELECT stream, bytes_read FROM log_offsets WHERE sandbox_id = $1")
        .bind(sandbox.as_str())
        .fetch_all(&s.pool)
        .await?;
    rows.iter()
        .map(|r| {
            let off: i64 = r.try_get("bytes_read")?;
            Ok((r.try_get("stream")?, u64::try_from(off).unwrap_or(0)))
        })
        .collect()
}

pub(super) async fn delete_logs(s: &SqlStore, sandbox: &SandboxId) -> Result<(), StoreError> {
    // Together: offsets without their lines (or the reverse) would resume a tail wrongly.
    let mut tx = s.writer.begin().await?;
    sqlx::query("DELETE FROM logs WHERE sandbox_id = $1")
        .bind(sandbox.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM log_offsets WHERE sandbox_id = $1")
        .bind(sandbox.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
