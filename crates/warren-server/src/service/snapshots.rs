//! Snapshots: a sandbox's files and, by default, its processes with their memory, kept
//! under a name; `"snapshot": NAME` at create makes new sandboxes from one (with memory: its
//! processes already running, at the new sandbox's address; without: booted afresh on a copy
//! of its files). The source is paused for the copy, and resumed if it was running.
use chrono::Utc;
use warren_api::{CreateSandbox, CreateSnapshot, Sandbox, SandboxId, Snapshot};
use warren_backend::ForkFrom;
use warren_store::{SandboxRecord, SnapshotRecord};

use crate::error::ApiError;

impl crate::service::Snapshots<'_> {
    /// Takes snapshot `req.name` of sandbox `id`.
    pub async fn create_snapshot(
        &self,
        id: &SandboxId,
        req: CreateSnapshot,
    ) -> Result<Snapshot, ApiError> {
        super::volumes::valid_name(&req.name)?;
        let svc = self.0.clone();
        let id = id.clone();
        tokio::spawn(async move { svc.snapshots().snapshot_now(&id, req).await })
            .await
            .map_err(|e| ApiError::Internal(format!("snapshot task: {e}")))?
    }

    async fn snapshot_now(
        &self,
        id: &SandboxId,
        req: CreateSnapshot,
    ) -> Result<Snapshot, ApiError> {
        if self.inner.store.get_snapshot(&req.name).await?.is_some() {
            return Err(ApiError::Conflict(format!("snapshot {} exists", req.name)));
        }
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let source = self.record(id).await?;
        let was_running = self.sandboxes().hold_paused(&source, "snapshotted").await?;
        let memory = req.memory.unwrap_or(true);
        let saved = self
            .inner
            .backend
            .save_snapshot(id.as_str(), &req.name, memory)
            .await;
        self.sandboxes().unhold(id, was_running).await;
        let receipt = saved.map_err(|e| ApiError::Internal(format!("snapshot of {id}: {e}")))?;
        let rec = SnapshotRecord {
            snapshot: Snapshot {
                name: req.name.clone(),
                source: id.to_string(),
                created_at: Utc::now(),
                memory,
                image: source.sandbox.image.clone(),
                runtime: source.sandbox.runtime,
                receipt,
            },
            sandbox: source.sandbox,
            token: source.token,
        };
        if !self.inner.store.insert_snapshot(&rec).await? {
            return Err(ApiError::Conflict(format!("snapshot {} exists", req.name)));
        }
        Ok(rec.snapshot)
    }

    /// Every snapshot of `team`'s (a snapshot is its source sandbox's team's).
    pub async fn list(&self, team: &str) -> Result<Vec<Snapshot>, ApiError> {
        Ok(self
            .inner
            .store
            .list_snapshots()
            .await?
            .into_iter()
            .filter(|r| r.sandbox.team == team)
            .map(|r| r.snapshot)
            .collect())
    }

    async fn snapshot_record(&self, name: &str, team: &str) -> Result<SnapshotRecord, ApiError> {
        let found = self.inner.store.get_snapshot(name).await?;
        found.filter(|r| r.sandbox.team == team).ok_or_else(|| {
            ApiError::NotFound(format!(
                "snapshot {} not found",
                warren_agent::error::shown_text(name)
            ))
        })
    }

    /// One of `team`'s snapshots (another team's is not found).
    pub async fn snapshot(&self, name: &str, team: &str) -> Result<Snapshot, ApiError> {
        Ok(self.snapshot_record(name, team).await?.snapshot)
    }

    /// Removes a snapshot and its files (sandboxes made from it have copies of their own).
    pub async fn delete_snapshot(&self, name: &str, team: &str) -> Result<(), ApiError> {
        self.snapshot_record(name, team).await?;
        let backend = self.inner.backend.clone();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || backend.remove_snapshot(&owned))
            .await
            .map_err(|e| ApiError::Internal(format!("snapshot task: {e}")))?
            .map_err(|e| ApiError::Internal(format!("removing snapshot {name}: {e}")))?;
        self.inner.store.delete_snapshot(name).await?;
        Ok(())
    }

    /// A create naming a snapshot: the sandbox is the snapshot's sandbox again (only its
    /// metadata, lifetime and network settings may be set), running.
    pub(super) async fn create_from_snapshot(
        &self,
        name: &str,
        req: CreateSandbox,
        team: &str,
    ) -> Result<(Sandbox, bool), ApiError> {
        let set = [
            ("image", req.image.is_some()),
            ("runtime", req.runtime.is_some()),
            ("cpu", req.cpu.is_some()),
            ("memory_mb", req.memory_mb.is_some()),
            ("disk_mb", req.disk_mb.is_some()),
            ("pids", req.pids.is_some()),
            ("env", !req.env.is_empty()),
            ("cmd", !req.cmd.is_empty()),
            ("cwd", req.cwd.is_some()),
            ("user", req.user.is_some()),
            ("volumes", !req.volumes.is_empty()),
        ];
        if let Some((field, _)) = set.iter().find(|(_, s)| *s) {
            return Err(ApiError::Invalid(format!(
                "{field} comes from snapshot {name}: a create from a snapshot may set only \
                 metadata, timeout_s, on_timeout, auto_resume, egress, public and request_host"
            )));
        }
        let snap = match self.inner.store.get_snapshot(name).await? {
            // Another team's snapshot does not exist, as far as this create can tell.
            Some(s) if s.sandbox.team == team => s,
            _ => {
                return Err(ApiError::Invalid(format!(
                    "snapshot {} does not exist",
                    warren_agent::error::shown_text(name)
                )))
            }
        };
        let mut template = snap.sandbox.clone();
        template.team = team.to_owned();
        template.server = self.server_name().to_owned();
        template.on_timeout = req.on_timeout.unwrap_or_default();
        template.auto_resume = req.auto_resume.unwrap_or(false);
        if let Some(e) = req.egress.clone() {
            super::validate::egress(&e)?;
            template.egress = e;
        }
        if let Some(p) = req.public {
            template.public = p;
        }
        if let Some(h) = &req.request_host {
            super::validate::request_host(h)?;
            template.request_host = Some(h.clone());
        }
        let metadata = Some(req.metadata.clone());
        if snap.snapshot.memory {
            let id = self
                .sandboxes()
                .make_fork(&template, ForkFrom::Snapshot(name), metadata, req.timeout_s)
                .await?;
            return Ok((self.sandboxes().resume(&id, req.timeout_s).await?, true));
        }
        // Files only: a fresh boot on a copy of the snapshot's disk.
        let rec = SandboxRecord {
            sandbox: super::fork::copy_of(&template, metadata, req.timeout_s),
            token: super::provision::token(),
            net_index: None,
        };
        let id = rec.sandbox.id.clone();
        {
            let _no_gc = self.inner.volumes_gc.read().await;
            self.sandboxes().insert(&rec).await?;
        }
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        if let Err(e) = self.inner.backend.seed_disk(id.as_str(), name).await {
            let msg = format!("from snapshot {name}: {e}");
            self.sandboxes().fail(rec, msg.clone()).await?;
            return Err(ApiError::Internal(msg));
        }
        self.provision_started(rec).await
    }
}
