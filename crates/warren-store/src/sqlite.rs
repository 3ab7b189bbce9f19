//! The SQLite store: one file, WAL, migrations embedded in the binary.
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use warren_api::{ExecRecord, Image, LogLine, LogStream, SandboxId};

use crate::{
    ApiKeyRecord, LogSize, SandboxRecord, SecretRecord, SnapshotRecord, Store, StoreError,
};

mod credentials;
mod kept;
mod rows;
use rows::{doc, exec_from_row, image_from_row, parse_ts, record_from_row, ts, DELETED};

/// Log rows per INSERT statement (5 parameters each; SQLite allows 32766).
const LOG_ROWS_PER_INSERT: usize = 1000;

/// A [`Store`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    /// Reads, several at once.
    pool: SqlitePool,
    /// Writes, one connection: SQLite admits one writer at a time, and a writer that finds
    /// the lock taken sleeps in its busy handler (1 ms and up); queueing here costs nothing.
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        // Read-only, so a write that strays onto it fails instead of racing the writer.
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore { pool, writer })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    async fn insert_api_key(
        &self,
        id: &str,
        name: &str,
        hash: &str,
    ) -> Result<DateTime<Utc>, StoreError> {
        credentials::insert_api_key(self, id, name, hash).await
    }

    async fn api_key_exists(&self, hash: &str) -> Result<bool, StoreError> {
        credentials::api_key_exists(self, hash).await
    }

    async fn count_api_keys(&self) -> Result<u64, StoreError> {
        credentials::count_api_keys(self).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        credentials::list_api_keys(self).await
    }

    async fn delete_api_key(&self, id: &str) -> Result<bool, StoreError> {
        credentials::delete_api_key(self, id).await
    }

    async fn insert_secret(&self, rec: &SecretRecord) -> Result<bool, StoreError> {
        credentials::insert_secret(self, rec).await
    }

    async fn get_secret(&self, id_or_name: &str) -> Result<Option<SecretRecord>, StoreError> {
        credentials::get_secret(self, id_or_name).await
    }

    async fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        credentials::list_secrets(self).await
    }

    async fn update_secret(&self, rec: &SecretRecord) -> Result<(), StoreError> {
        credentials::update_secret(self, rec).await
    }

    async fn delete_secret(&self, id: &str) -> Result<bool, StoreError> {
        credentials::delete_secret(self, id).await
    }

    async fn idempotent_sandbox(&self, key: &str) -> Result<Option<SandboxId>, StoreError> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT sandbox_id FROM idempotency_keys WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(id.and_then(|id| id.parse().ok()))
    }

    async fn put_idempotent_sandbox(&self, key: &str, id: &SandboxId) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO idempotency_keys (key, sandbox_id, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET sandbox_id = excluded.sandbox_id, \
             created_at = excluded.created_at",
        )
        .bind(key)
        .bind(id.as_str())
        .bind(ts(&Utc::now()))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn insert_volume(
        &self,
        name: &str,
        size_mb: u64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        kept::insert_volume(self, name, size_mb, at).await
    }

    async fn get_volume(&self, name: &str) -> Result<Option<(u64, DateTime<Utc>)>, StoreError> {
        kept::get_volume(self, name).await
    }

    async fn list_volumes(&self) -> Result<Vec<(String, u64, DateTime<Utc>)>, StoreError> {
        kept::list_volumes(self).await
    }

    async fn delete_volume(&self, name: &str) -> Result<bool, StoreError> {
        kept::delete_volume(self, name).await
    }

    async fn insert_snapshot(&self, rec: &SnapshotRecord) -> Result<bool, StoreError> {
        kept::insert_snapshot(self, rec).await
    }

    async fn get_snapshot(&self, name: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        kept::get_snapshot(self, name).await
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        kept::list_snapshots(self).await
    }

    async fn delete_snapshot(&self, name: &str) -> Result<bool, StoreError> {
        kept::delete_snapshot(self, name).await
    }

    async fn insert_pool(
        &self,
        pool: &warren_api::CreatePool,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        kept::insert_pool(self, pool, at).await
    }

    async fn list_pools(&self) -> Result<Vec<(warren_api::CreatePool, DateTime<Utc>)>, StoreError> {
        kept::list_pools(self).await
    }

    async fn delete_pool(&self, name: &str) -> Result<bool, StoreError> {
        kept::delete_pool(self, name).await
    }

    async fn put_image(&self, image: &Image) -> Result<(), StoreError> {
        let layers =
            serde_json::to_string(&image.layers).map_err(|source| StoreError::Corrupt {
                what: format!("image {}", image.name),
                source,
            })?;
        let config =
            serde_json::to_string(&image.config).map_err(|source| StoreError::Corrupt {
                what: format!("image {}", image.name),
                source,
            })?;
        let mut tx = self.writer.begin().await?;
        sqlx::query("INSERT OR REPLACE INTO manifests (digest, layers) VALUES (?, ?)")
            .bind(&image.digest)
            .bind(&layers)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO images (name, digest, size, created_at, source, layers, config)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, size = excluded.size,
             created_at = excluded.created_at, source = excluded.source,
             layers = excluded.layers, config = excluded.config",
        )
        .bind(&image.name)
        .bind(&image.digest)
        .bind(i64::try_from(image.size).unwrap_or(i64::MAX))
        .bind(ts(&image.created_at))
        .bind(&image.source)
        .bind(&layers)
        .bind(&config)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn manifest_layers(&self, digest: &str) -> Result<Option<Vec<String>>, StoreError> {
        let layers: Option<String> =
            sqlx::query_scalar("SELECT layers FROM manifests WHERE digest = ?")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?;
        layers
            .map(|l| {
                serde_json::from_str(&l).map_err(|source| StoreError::Corrupt {
                    what: format!("manifest {digest}"),
                    source,
                })
            })
            .transpose()
    }

    async fn live_layers(&self) -> Result<Vec<String>, StoreError> {
        let mut tx = self.writer.begin().await?;
        // Manifests nothing refers to any more go first, in the same transaction, so a
        // sandbox or image recorded meanwhile cannot lose its layers to this sweep.
        sqlx::query(
            "DELETE FROM manifests WHERE digest NOT IN (SELECT digest FROM images)
             AND digest NOT IN (SELECT json_extract(doc, '$.image_digest') FROM sandboxes
                                WHERE state != 'deleted')
             AND digest NOT IN (SELECT image_digest FROM snapshots)",
        )
        .execute(&mut *tx)
        .await?;
        let rows: Vec<String> = sqlx::query_scalar("SELECT layers FROM manifests")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut live = Vec::new();
        for row in rows {
            let layers: Vec<String> =
                serde_json::from_str(&row).map_err(|source| StoreError::Corrupt {
                    what: "manifest layers".into(),
                    source,
                })?;
            live.extend(layers);
        }
        live.sort();
        live.dedup();
        Ok(live)
    }

    async fn get_image(&self, name: &str) -> Result<Option<Image>, StoreError> {
        let row = sqlx::query("SELECT * FROM images WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(image_from_row).transpose()
    }

    async fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        let rows = sqlx::query("SELECT * FROM images ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(image_from_row).collect()
    }

    async fn delete_image(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM images WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError> {
        let s = &rec.sandbox;
        let res = sqlx::query(
            "INSERT INTO sandboxes (id, state, image, net_index, token, created_at, doc)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.as_str())
        .bind(s.state.as_str())
        .bind(&s.image)
        .bind(rec.net_index.map(i64::from))
        .bind(&rec.token)
        .bind(ts(&s.created_at))
        .bind(doc(rec)?)
        .execute(&self.writer)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Exists(format!("sandbox {}", s.id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn update_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError> {
        let s = &rec.sandbox;
        sqlx::query("UPDATE sandboxes SET state = ?, net_index = ?, doc = ? WHERE id = ?")
            .bind(s.state.as_str())
            .bind(rec.net_index.map(i64::from))
            .bind(doc(rec)?)
            .bind(s.id.as_str())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM sandboxes WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM sandboxes WHERE state != ? ORDER BY created_at DESC")
            .bind(DELETED)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn count_sandboxes_using_image(&self, image: &str) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sandboxes WHERE image = ? AND state != ?")
                .bind(image)
                .bind(DELETED)
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn insert_exec(&self, sandbox: &SandboxId, rec: &ExecRecord) -> Result<(), StoreError> {
        let cmd = serde_json::to_string(&rec.cmd).map_err(|source| StoreError::Corrupt {
            what: format!("exec {}", rec.id),
            source,
        })?;
        sqlx::query(
            "INSERT INTO execs (id, sandbox_id, cmd, label, kind, exit_code, stdout, stderr,
             started_at, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&rec.id)
        .bind(sandbox.as_str())
        .bind(cmd)
        .bind(&rec.label)
        .bind(rec.kind.as_str())
        .bind(rec.exit_code.map(i64::from))
        .bind(&rec.stdout)
        .bind(&rec.stderr)
        .bind(ts(&rec.started_at))
        .bind(i64::try_from(rec.duration_ms).unwrap_or(i64::MAX))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_execs(
        &self,
        sandbox: &SandboxId,
        limit: u32,
    ) -> Result<Vec<ExecRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT * FROM execs WHERE sandbox_id = ? ORDER BY seq DESC LIMIT ?)
             ORDER BY seq ASC",
        )
        .bind(sandbox.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(exec_from_row).collect()
    }

    async fn prune_execs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM execs WHERE started_at < ?")
            .bind(ts(&before))
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn append_logs(
        &self,
        sandbox: &SandboxId,
        lines: &[LogLine],
        offsets: &[(&str, u64)],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        // Many rows per statement: one statement per line cost most of a busy sandbox's
        // share of the writer.
        for chunk in lines.chunks(LOG_ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
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
                "INSERT INTO log_offsets (sandbox_id, stream, offset) VALUES (?, ?, ?)
                 ON CONFLICT (sandbox_id, stream) DO UPDATE SET offset = excluded.offset",
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

    async fn list_logs(
        &self,
        sandbox: &SandboxId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, ts, stream, text FROM logs WHERE sandbox_id = ? AND seq > ?
             ORDER BY seq LIMIT ?",
        )
        .bind(sandbox.as_str())
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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

    async fn last_log_seq(&self, sandbox: &SandboxId) -> Result<u64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM logs WHERE sandbox_id = ?")
            .bind(sandbox.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    async fn first_log_seq(&self, sandbox: &SandboxId) -> Result<u64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM logs WHERE sandbox_id = ?")
            .bind(sandbox.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    async fn log_size(&self, sandbox: &SandboxId) -> Result<LogSize, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(seq) AS first, MAX(seq) AS last, COUNT(*) AS n,
             COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0) AS bytes
             FROM logs WHERE sandbox_id = ?",
        )
        .bind(sandbox.as_str())
        .fetch_one(&self.pool)
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

    async fn trim_logs(
        &self,
        sandbox: &SandboxId,
        keep_lines: u64,
        keep_bytes: u64,
    ) -> Result<(u64, u64), StoreError> {
        let mut tx = self.writer.begin().await?;
        // Running totals from the newest line back: the newest line past either budget
        // goes, with everything older.
        let cut: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(seq) FROM (
               SELECT seq, COUNT(*) OVER w AS n, SUM(LENGTH(CAST(text AS BLOB))) OVER w AS b
               FROM logs WHERE sandbox_id = ?
               WINDOW w AS (ORDER BY seq DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
             ) WHERE n > ? OR b > ?",
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
            "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0) AS bytes
             FROM logs WHERE sandbox_id = ? AND seq <= ?",
        )
        .bind(sandbox.as_str())
        .bind(cut)
        .fetch_one(&mut *tx)
        .await?;
        let (n, bytes): (i64, i64) = (row.try_get("n")?, row.try_get("bytes")?);
        sqlx::query("DELETE FROM logs WHERE sandbox_id = ? AND seq <= ?")
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

    async fn log_offsets(&self, sandbox: &SandboxId) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT stream, offset FROM log_offsets WHERE sandbox_id = ?")
            .bind(sandbox.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let off: i64 = r.try_get("offset")?;
                Ok((r.try_get("stream")?, u64::try_from(off).unwrap_or(0)))
            })
            .collect()
    }

    async fn delete_logs(&self, sandbox: &SandboxId) -> Result<(), StoreError> {
        // Together: offsets without their lines (or the reverse) would resume a tail wrongly.
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM logs WHERE sandbox_id = ?")
            .bind(sandbox.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM log_offsets WHERE sandbox_id = ?")
            .bind(sandbox.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn used_net_indexes(&self) -> Result<Vec<u32>, StoreError> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT net_index FROM sandboxes WHERE net_index IS NOT NULL AND state != ?",
        )
        .bind(DELETED)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|i| u32::try_from(i).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests;
