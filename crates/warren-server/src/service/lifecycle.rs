//! Sandbox lifecycle after a create: state changes, start, stop, delete, expiry, and the checks
//! the reconciler runs.
use std::time::Duration;

use chrono::Utc;
use warren_api::{OnTimeout, Sandbox, SandboxId, SandboxState};
use warren_backend::ContainerStatus;
use warren_store::SandboxRecord;

use super::validate;
use crate::error::ApiError;

/// How long `stop` waits for the sandbox to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Lifetime of a sandbox whose request gives no `timeout_s`.
pub const DEFAULT_TIMEOUT_S: u64 = 300;

/// `expires_at` for a lifetime of `timeout_s` from now; `0` means never.
pub(super) fn expiry(timeout_s: u64) -> Option<chrono::DateTime<Utc>> {
    let secs = i64::try_from(timeout_s).ok()?;
    (secs > 0).then(|| Utc::now() + chrono::Duration::seconds(secs.min(10 * 365 * 86400)))
}

impl crate::service::Sandboxes<'_> {
    pub(super) async fn save(&self, rec: &SandboxRecord) -> Result<(), ApiError> {
        self.inner.store.update_sandbox(rec).await?;
        self.previews().refresh_route(rec);
        self.schedule_expiry(rec);
        Ok(())
    }

    /// Records a new sandbox, within its team's quotas (and puts its deadline on the timer
    /// queue).
    pub(super) async fn insert(&self, rec: &SandboxRecord) -> Result<(), ApiError> {
        let admitted = self.admit(&rec.sandbox, true).await?;
        self.inner.store.insert_sandbox(rec).await?;
        drop(admitted);
        self.schedule_expiry(rec);
        Ok(())
    }

    pub(super) async fn set_state(
        &self,
        rec: &mut SandboxRecord,
        state: SandboxState,
    ) -> Result<(), ApiError> {
        rec.sandbox.state = state;
        self.save(rec).await?;
        self.announce(rec);
        Ok(())
    }

    /// Tells the sandbox's log and `/v1/events` of its state (already set on `rec`).
    pub(super) fn announce(&self, rec: &SandboxRecord) {
        let state = rec.sandbox.state;
        let text = match (&rec.sandbox.error, state) {
            (Some(e), SandboxState::Failed) => format!("{state}: {e}"),
            _ => state.to_string(),
        };
        self.journal(super::Journal::Event(rec.sandbox.id.clone(), text));
        let _ = self
            .inner
            .events
            .send(super::Event::Sandbox(Box::new(rec.sandbox.clone())));
    }

    pub(super) fn follow_logs(&self, id: &SandboxId) {
        if self.inner.backend.streams_logs() {
            let backend = self.inner.backend.clone();
            let sid = id.to_string();
            let open: crate::logs::Opener = std::sync::Arc::new(move |since| {
                let (backend, sid) = (backend.clone(), sid.clone());
                Box::pin(async move { backend.log_lines(&sid, since).await })
            });
            self.inner.logs.start_stream_tailer(id, open);
            return;
        }
        let files = self.inner.backend.log_files(id.as_str());
        self.inner.logs.start_tailer(id, files);
    }

    pub(super) fn forget_agent(&self, id: &SandboxId) {
        self.inner
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id.as_str());
    }

    /// Releases everything the sandbox holds and records it as failed with `error`.
    pub(super) async fn fail(
        &self,
        mut rec: SandboxRecord,
        error: String,
    ) -> Result<SandboxRecord, ApiError> {
        let id = rec.sandbox.id.to_string();
        tracing::warn!(sandbox = %id, "failed: {error}");
        self.inner.logs.stop_tailer(&rec.sandbox.id).await;
        self.inner
            .backend
            .release(&id, rec.sandbox.runtime, rec.net_index)
            .await;
        self.forget_agent(&rec.sandbox.id);
        rec.net_index = None;
        rec.sandbox.ip = None;
        rec.sandbox.error = Some(error);
        self.set_state(&mut rec, SandboxState::Failed).await?;
        Ok(rec)
    }

    /// The team a sandbox belongs to and the server that runs it (`None`: no such sandbox).
    /// Read from the preview proxy's cache of routes, which every change of a sandbox here
    /// refreshes.
    pub async fn owners_of(&self, id: &SandboxId) -> Result<Option<(String, String)>, ApiError> {
        if let Some(route) = self.previews().preview_route(id).await? {
            return Ok(Some((route.team.clone(), route.server.clone())));
        }
        // Deleted ones are not cached, but still belong to their team.
        Ok(self
            .inner
            .store
            .get_sandbox(id)
            .await?
            .map(|r| (r.sandbox.team, r.sandbox.server)))
    }

    /// The team a sandbox belongs to (`None`: no such sandbox).
    pub async fn team_of(&self, id: &SandboxId) -> Result<Option<String>, ApiError> {
        Ok(self.owners_of(id).await?.map(|(team, _)| team))
    }

    /// One sandbox.
    pub async fn get(&self, id: &SandboxId) -> Result<Sandbox, ApiError> {
        Ok(self.record(id).await?.sandbox)
    }

    /// A team's sandboxes, filtered by state and metadata.
    pub async fn list(
        &self,
        team: &str,
        state: Option<SandboxState>,
        metadata: &[(String, String)],
    ) -> Result<Vec<Sandbox>, ApiError> {
        let all = self.inner.store.list_sandboxes().await?;
        Ok(all
            .into_iter()
            .map(|r| r.sandbox)
            // Waiting in a warm pool: no one's yet.
            .filter(|s| s.pool.is_none() && s.team == team)
            .filter(|s| state.is_none_or(|st| s.state == st))
            .filter(|s| metadata.iter().all(|(k, v)| s.metadata.get(k) == Some(v)))
            .collect())
    }

    /// Every sandbox that is not deleted, those waiting in warm pools too.
    pub async fn list_all(&self) -> Result<Vec<Sandbox>, ApiError> {
        let all = self.inner.store.list_sandboxes().await?;
        Ok(all
            .into_iter()
            .map(|r| r.sandbox)
            .filter(|s| s.state != SandboxState::Deleted)
            .collect())
    }

    /// Deletes a sandbox and releases everything it held.
    pub async fn delete(&self, id: &SandboxId) -> Result<(), ApiError> {
        let lock = self.lock_for(id);
        let guard = lock.lock().await;
        let mut rec = self.record(id).await?;
        self.set_state(&mut rec, SandboxState::Terminating).await?;
        self.inner.logs.stop_tailer(id).await;
        // Another server's (it stopped answering): what it held is on that host, which
        // releases it when it comes back; here only the record goes.
        if self.is_mine(&rec.sandbox.server) {
            self.inner
                .backend
                .release(id.as_str(), rec.sandbox.runtime, rec.net_index)
                .await;
            let owned = id.to_string();
            self.off_thread(move |b| b.remove_files(&owned)).await;
        }
        // net_index stays on the deleted record (deleted rows hold no lease) so leak checks
        // can still name the veth it had.
        rec.sandbox.ip = None;
        self.set_state(&mut rec, SandboxState::Deleted).await?;
        self.inner.logs.stop_tailer(id).await;
        self.journal(super::Journal::Forget(id.clone()));
        drop(guard);
        self.forget(id);
        Ok(())
    }

    /// Stops a running sandbox, keeping its files.
    pub async fn stop(&self, id: &SandboxId) -> Result<Sandbox, ApiError> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let mut rec = self.record(id).await?;
        if rec.sandbox.state != SandboxState::Running {
            return Err(ApiError::Conflict(format!(
                "sandbox {id} is {}, not running",
                rec.sandbox.state
            )));
        }
        self.set_state(&mut rec, SandboxState::Stopping).await?;
        self.inner
            .backend
            .stop(id.as_str(), rec.sandbox.runtime, STOP_GRACE)
            .await;
        self.finish_stop(rec).await
    }

    /// The end of a stop, also of one a crash interrupted: the container is killed and every
    /// host resource released but the files, and the sandbox is `stopped`, ready to start.
    async fn finish_stop(&self, mut rec: SandboxRecord) -> Result<Sandbox, ApiError> {
        let id = &rec.sandbox.id.clone();
        let rt = rec.sandbox.runtime;
        // The container has exited: read the rest of its output before its files are reused.
        self.inner.logs.stop_tailer(id).await;
        self.inner
            .backend
            .release(id.as_str(), rt, rec.net_index)
            .await;
        self.forget_agent(id);
        rec.net_index = None;
        rec.sandbox.ip = None;
        self.set_state(&mut rec, SandboxState::Stopped).await?;
        Ok(rec.sandbox)
    }

    /// Starts a stopped sandbox again, with the files it had.
    pub async fn start(&self, id: &SandboxId) -> Result<Sandbox, ApiError> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let rec = self.record(id).await?;
        if rec.sandbox.state != SandboxState::Stopped {
            return Err(ApiError::Conflict(format!(
                "sandbox {id} is {}, not stopped",
                rec.sandbox.state
            )));
        }
        let admitted = self.admit(&rec.sandbox, false).await?;
        let rec = self.provision_admitted(rec, admitted).await?;
        if rec.sandbox.state == SandboxState::Failed {
            return Err(ApiError::Internal(format!(
                "sandbox {id} failed to start: {}",
                rec.sandbox.error.unwrap_or_default()
            )));
        }
        Ok(rec.sandbox)
    }

    /// Moves a sandbox's expiry to `timeout_s` from now (`0`: never).
    pub async fn set_timeout(&self, id: &SandboxId, timeout_s: u64) -> Result<Sandbox, ApiError> {
        validate::timeout_s(timeout_s, "timeout_s")?;
        self.set_expires_at(id, expiry(timeout_s)).await
    }

    /// Sets the sandbox's expiry (`None`: never), under its lock; the timer queue follows.
    pub(super) async fn set_expires_at(
        &self,
        id: &SandboxId,
        at: Option<chrono::DateTime<Utc>>,
    ) -> Result<Sandbox, ApiError> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let mut rec = self.record(id).await?;
        rec.sandbox.expires_at = at;
        self.save(&rec).await?;
        Ok(rec.sandbox)
    }

    /// Deletes (or, with `on_timeout: stop`, stops) the sandbox if its `expires_at` has
    /// passed; whether it did.
    pub async fn reap_if_expired(&self, id: &SandboxId) -> Result<bool, ApiError> {
        // One reap at a time per sandbox: the timer queue and the reconciler's pass may both
        // find it due (at start, every sandbox that expired while the server was down).
        let Some(_reaping) = self.begin_reap(id) else {
            return Ok(false);
        };
        let rec = self.record(id).await?;
        if matches!(
            rec.sandbox.state,
            SandboxState::Paused | SandboxState::Pausing | SandboxState::Resuming
        ) {
            return Ok(false); // time does not run while it is paused
        }
        if matches!(
            rec.sandbox.state,
            SandboxState::Pending | SandboxState::Provisioning | SandboxState::Starting
        ) {
            // Nor before it runs: its deadline moves by its boot once it does (and is put on
            // the timer queue again then).
            return Ok(false);
        }
        match rec.sandbox.expires_at {
            Some(t) if t <= Utc::now() => {
                let paused = match rec.sandbox.on_timeout {
                    OnTimeout::Pause if rec.sandbox.state == SandboxState::Running => {
                        tracing::info!(sandbox = %id, "expired: pausing");
                        match self.pause(id).await {
                            Ok(_) => true,
                            Err(e) => {
                                tracing::warn!(sandbox = %id, "expired, not paused ({e}): stopping");
                                false
                            }
                        }
                    }
                    _ => false,
                };
                if paused {
                    // Its time stands still while it is paused; a resume sets it anew.
                } else if rec.sandbox.on_timeout != OnTimeout::Delete {
                    tracing::info!(sandbox = %id, "expired: stopping");
                    if rec.sandbox.state == SandboxState::Running {
                        self.stop(id).await?;
                    }
                    // Stopped for good: a later `start` sets no new expiry by itself.
                    self.set_timeout(id, 0).await?;
                } else {
                    tracing::info!(sandbox = %id, "expired: deleting");
                    self.delete(id).await?;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Brings one sandbox's record in line with the host: a sandbox whose container died
    /// (crash, OOM) or whose operation a restart interrupted is failed and released.
    pub async fn reconcile(&self, id: &SandboxId) -> Result<(), ApiError> {
        let lock = self.lock_for(id);
        let Ok(_guard) = lock.try_lock() else {
            return Ok(()); // an operation is under way; it will settle the state itself
        };
        let rec = self.record(id).await?;
        let rt = rec.sandbox.runtime;
        match rec.sandbox.state {
            SandboxState::Running | SandboxState::Starting => {
                let status = self.inner.backend.status(id.as_str(), rt).await;
                if matches!(status, ContainerStatus::Running) {
                    if rec.sandbox.state == SandboxState::Starting {
                        self.fail(rec, "interrupted while starting".into()).await?;
                    } else {
                        // After a restart: pick the log up where the last tailer stopped.
                        self.follow_logs(id);
                    }
                    return Ok(());
                }
                // A checkpoint a crash cut off that went on to completion: the sandbox is
                // paused, not lost.
                if rec.sandbox.state == SandboxState::Running
                    && self.inner.backend.pause_begun(id.as_str())
                {
                    return self.finish_exited_pause(rec).await;
                }
                let ooms = self.inner.backend.oom_kills(id.as_str());
                let why = if ooms > 0 {
                    format!(
                        "out of memory: the sandbox exceeded memory_mb={} and was OOM-killed",
                        rec.sandbox.memory_mb
                    )
                } else if let Some(why) = self.inner.backend.why_gone(id.as_str()).await {
                    why
                } else {
                    format!("the sandbox's container is gone (runtime reports {status:?})")
                };
                self.fail(rec, why).await?;
            }
            SandboxState::Stopping => {
                tracing::info!(sandbox = %id, "finishing a stop a restart interrupted");
                self.finish_stop(rec).await?;
            }
            SandboxState::Pending | SandboxState::Provisioning => {
                self.fail(rec, "interrupted by a server restart".into())
                    .await?;
            }
            SandboxState::Terminating => {
                drop(_guard);
                self.delete(id).await?;
            }
            SandboxState::Pausing | SandboxState::Resuming => {
                self.reconcile_pause(rec).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Host resources of a sandbox still present (for leak checks).
    pub async fn leftovers(&self, id: &SandboxId) -> Result<Vec<String>, ApiError> {
        let rec = self
            .inner
            .store
            .get_sandbox(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("sandbox {id} not found")))?;
        Ok(self
            .inner
            .backend
            .leftovers(id.as_str(), rec.sandbox.runtime, rec.net_index)
            .await)
    }
}
