//! [`SqlStore`]: the [`Store`] in SQL, one text for every database it is compiled for
//! (`super::Db`): placeholders are `$N`, which SQLite and PostgreSQL both read, and the SQL
//! keeps to what both speak.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Pool;
use warren_api::{AuditEntry, ExecRecord, Image, LogLine, SandboxId};

use crate::{
    ApiKeyRecord, AuditFilter, KeyClaim, LogSize, OperationFilter, OperationRecord, Revoked,
    SandboxRecord, SecretRecord, ServerRecord, SnapshotRecord, Store, StoreError, StoredAnswer,
    TeamDeleted, TeamRecord,
};

use super::rows::{exec_from_row, image_from_row, ts, DELETED};
use super::sandbox_rows;
use super::Db;
use super::{audit, credentials, kept, keys, logs, operations, request_keys, servers};

/// A [`Store`] in a SQL database.
#[derive(Clone)]
pub struct SqlStore {
    /// Reads, several at once.
    pub(super) pool: Pool<Db>,
    /// Writes: on SQLite one connection (it admits one writer at a time, and a writer that
    /// finds the lock taken sleeps in its busy handler, 1 ms and up: queueing here costs
    /// nothing); elsewhere the same pool as reads.
    pub(super) writer: Pool<Db>,
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    async fn lock_team(&self, team: &str) -> Result<crate::TeamLock, StoreError> {
        self.team_lock(team).await
    }

    async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        hash: &str,
    ) -> Result<DateTime<Utc>, StoreError> {
        keys::insert_api_key(self, key, hash).await
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        keys::api_key_by_hash(self, hash).await
    }

    async fn count_api_keys(&self) -> Result<u64, StoreError> {
        keys::count_api_keys(self).await
    }

    async fn list_api_keys(&self, team: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        keys::list_api_keys(self, team).await
    }

    async fn revoke_api_key(&self, id: &str) -> Result<Revoked, StoreError> {
        keys::revoke_api_key(self, id).await
    }

    async fn touch_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        keys::touch_api_key(self, id, at).await
    }

    async fn insert_team(&self, team: &TeamRecord) -> Result<(), StoreError> {
        keys::insert_team(self, team).await
    }

    async fn get_team(&self, name: &str) -> Result<Option<TeamRecord>, StoreError> {
        keys::get_team(self, name).await
    }

    async fn list_teams(&self) -> Result<Vec<TeamRecord>, StoreError> {
        keys::list_teams(self).await
    }

    async fn update_team(&self, team: &TeamRecord) -> Result<bool, StoreError> {
        keys::update_team(self, team).await
    }

    async fn delete_team(&self, name: &str) -> Result<TeamDeleted, StoreError> {
        keys::delete_team(self, name).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        audit::append(self, entry).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        audit::list(self, filter).await
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        audit::prune(self, before).await
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
            sqlx::query_scalar("SELECT sandbox_id FROM idempotency_keys WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(id.and_then(|id| id.parse().ok()))
    }

    async fn put_idempotent_sandbox(&self, key: &str, id: &SandboxId) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO idempotency_keys (key, sandbox_id, created_at) VALUES ($1, $2, $3) \
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
        team: &str,
    ) -> Result<bool, StoreError> {
        kept::insert_volume(self, name, size_mb, at, team).await
    }

    async fn get_volume(
        &self,
        name: &str,
    ) -> Result<Option<(u64, DateTime<Utc>, String)>, StoreError> {
        kept::get_volume(self, name).await
    }

    async fn list_volumes(&self) -> Result<Vec<(String, u64, DateTime<Utc>, String)>, StoreError> {
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
        sqlx::query(
            "INSERT INTO manifests (digest, layers) VALUES ($1, $2)
             ON CONFLICT (digest) DO UPDATE SET layers = excluded.layers",
        )
        .bind(&image.digest)
        .bind(&layers)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO images (name, digest, size, created_at, source, layers, config, team)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, size = excluded.size,
             created_at = excluded.created_at, source = excluded.source,
             layers = excluded.layers, config = excluded.config, team = excluded.team",
        )
        .bind(&image.name)
        .bind(&image.digest)
        .bind(i64::try_from(image.size).unwrap_or(i64::MAX))
        .bind(ts(&image.created_at))
        .bind(&image.source)
        .bind(&layers)
        .bind(&config)
        .bind(&image.team)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn manifest_layers(&self, digest: &str) -> Result<Option<Vec<String>>, StoreError> {
        let layers: Option<String> =
            sqlx::query_scalar("SELECT layers FROM manifests WHERE digest = $1")
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
             AND digest NOT IN (SELECT image_digest FROM sandboxes WHERE state != 'deleted')
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
        let row = sqlx::query("SELECT * FROM images WHERE name = $1")
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
        let done = sqlx::query("DELETE FROM images WHERE name = $1")
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError> {
        let s = &rec.sandbox;
        let res = sandbox_rows::bind(&sandbox_rows::INSERT, rec)?
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
        sandbox_rows::bind(&sandbox_rows::UPDATE, rec)?
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError> {
        let row = sqlx::query(&format!("{} WHERE id = $1", *sandbox_rows::SELECT))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sandbox_rows::from_row).transpose()
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{} WHERE state != $1 ORDER BY created_at DESC",
            *sandbox_rows::SELECT
        ))
        .bind(DELETED)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sandbox_rows::from_row).collect()
    }

    async fn count_sandboxes_using_image(&self, image: &str) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sandboxes WHERE image = $1 AND state != $2")
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
             started_at, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
            "SELECT * FROM (SELECT * FROM execs WHERE sandbox_id = $1 ORDER BY seq DESC LIMIT $2) AS newest
             ORDER BY seq ASC",
        )
        .bind(sandbox.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(exec_from_row).collect()
    }

    async fn prune_execs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM execs WHERE started_at < $1")
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
        logs::append_logs(self, sandbox, lines, offsets).await
    }

    async fn list_logs(
        &self,
        sandbox: &SandboxId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogLine>, StoreError> {
        logs::list_logs(self, sandbox, after, limit).await
    }

    async fn last_log_seq(&self, sandbox: &SandboxId) -> Result<u64, StoreError> {
        logs::last_log_seq(self, sandbox).await
    }

    async fn first_log_seq(&self, sandbox: &SandboxId) -> Result<u64, StoreError> {
        logs::first_log_seq(self, sandbox).await
    }

    async fn log_size(&self, sandbox: &SandboxId) -> Result<LogSize, StoreError> {
        logs::log_size(self, sandbox).await
    }

    async fn trim_logs(
        &self,
        sandbox: &SandboxId,
        keep_lines: u64,
        keep_bytes: u64,
    ) -> Result<(u64, u64), StoreError> {
        logs::trim_logs(self, sandbox, keep_lines, keep_bytes).await
    }

    async fn log_offsets(&self, sandbox: &SandboxId) -> Result<Vec<(String, u64)>, StoreError> {
        logs::log_offsets(self, sandbox).await
    }

    async fn delete_logs(&self, sandbox: &SandboxId) -> Result<(), StoreError> {
        logs::delete_logs(self, sandbox).await
    }

    async fn used_net_indexes(&self, host: &str) -> Result<Vec<u32>, StoreError> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT net_index FROM sandboxes
             WHERE net_index IS NOT NULL AND state != $1 AND host = $2",
        )
        .bind(DELETED)
        .bind(host)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|i| u32::try_from(i).ok())
            .collect())
    }

    async fn adopt_hostless(&self, host: &str) -> Result<u64, StoreError> {
        servers::adopt_hostless(self, host).await
    }

    async fn heartbeat(&self, name: &str, url: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        servers::heartbeat(self, name, url, at).await
    }

    async fn list_servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        servers::list(self).await
    }

    async fn take_over(
        &self,
        dead: &str,
        me: &str,
        stale: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        servers::take_over(self, dead, me, stale, now).await
    }

    async fn settle_takeover(
        &self,
        dead: &str,
        me: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::Settled>, StoreError> {
        servers::settle_takeover(self, dead, me, why, now).await
    }

    async fn forget_server(&self, name: &str) -> Result<(), StoreError> {
        servers::forget(self, name).await
    }

    async fn insert_operation(&self, rec: &OperationRecord) -> Result<(), StoreError> {
        operations::insert(self, rec).await
    }

    async fn update_operation(&self, op: &warren_api::Operation) -> Result<(), StoreError> {
        operations::update(self, op).await
    }

    async fn set_operation_target(&self, id: &str, target: &str) -> Result<(), StoreError> {
        operations::set_target(self, id, target).await
    }

    async fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError> {
        operations::get(self, id).await
    }

    async fn operation_by_key(&self, key: &str) -> Result<Option<OperationRecord>, StoreError> {
        operations::by_key(self, key).await
    }

    async fn list_operations(
        &self,
        filter: &OperationFilter,
    ) -> Result<Vec<warren_api::Operation>, StoreError> {
        operations::list(self, filter).await
    }

    async fn unfinished_operations(&self, host: &str) -> Result<Vec<OperationRecord>, StoreError> {
        operations::unfinished(self, host).await
    }

    async fn prune_operations(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        operations::prune(self, before).await
    }

    async fn claim_request_key(
        &self,
        key: &str,
        fingerprint: &str,
        host: &str,
        at: DateTime<Utc>,
    ) -> Result<KeyClaim, StoreError> {
        request_keys::claim(self, key, fingerprint, host, at).await
    }

    async fn finish_request_key(&self, key: &str, answer: &StoredAnswer) -> Result<(), StoreError> {
        request_keys::finish(self, key, answer).await
    }

    async fn release_request_key(&self, key: &str) -> Result<(), StoreError> {
        request_keys::release(self, key).await
    }

    async fn prune_request_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        request_keys::prune(self, before).await
    }

    async fn drop_running_request_keys(&self, host: &str) -> Result<u64, StoreError> {
        request_keys::drop_running(self, host).await
    }

    async fn count_sandboxes(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT state, runtime, COUNT(*) FROM sandboxes WHERE state != $1
             GROUP BY state, runtime ORDER BY state, runtime",
        )
        .bind(DELETED)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(s, r, n)| (s, r, u64::try_from(n).unwrap_or(0)))
            .collect())
    }
}
