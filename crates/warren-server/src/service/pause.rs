//! Pause and resume: a running sandbox's processes and memory written to disk, nothing of it
//! left running but its network (same address, same preview URLs); and back, as it was, from
//! an image checked against its receipt. Each runs in a task of its own, so a client that
//! goes away does not cut it off halfway; a crash in between is settled by
//! [`Service::reconcile_pause`] on the next start.
use chrono::Utc;
use warren_api::{Sandbox, SandboxId, SandboxState};
use warren_backend::BackendError;
use warren_backend::ContainerStatus;
use warren_store::SandboxRecord;

use crate::error::ApiError;

/// How long a sandbox may go on running after its checkpoint's files last changed and still
/// be taken for one about to exit from a finished checkpoint (seen: about 2 s).
const CHECKPOINT_EXIT: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a request to an `auto_resume` sandbox waits for a pause or resume under way.
const AUTO_RESUME_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn pause_error(id: &SandboxId, what: &str, e: BackendError) -> ApiError {
    match e {
        BackendError::Unsupported(m) => {
            ApiError::Conflict(format!("sandbox {id} cannot be {what}: {m}"))
        }
        BackendError::PauseImage(m) => ApiError::Conflict(format!(
            "sandbox {id} cannot be {what}: {m}; it stays paused with its data"
        )),
        e => ApiError::Internal(format!("{what} sandbox {id}: {e}")),
    }
}

impl crate::service::Sandboxes<'_> {
    /// Pauses a running sandbox: its processes, memory and files to disk, its CPU and memory
    /// given back. Its expiry does not run while it is paused.
    pub async fn pause(&self, id: &SandboxId) -> Result<Sandbox, ApiError> {
        let svc = self.0.clone();
        let id = id.clone();
        tokio::spawn(async move { svc.sandboxes().pause_now(&id).await })
            .await
            .map_err(|e| ApiError::Internal(format!("pause task: {e}")))?
    }

    async fn pause_now(&self, id: &SandboxId) -> Result<Sandbox, ApiError> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let rec = self.record(id).await?;
        self.pause_locked(rec, true).await
    }

    /// [`Service::pause`] of a sandbox whose lock the caller holds.
    /// `offsite`: send the image to the object store (a pause that only holds the sandbox for
    /// a copy does not).
    pub(super) async fn pause_locked(
        &self,
        mut rec: SandboxRecord,
        offsite: bool,
    ) -> Result<Sandbox, ApiError> {
        let id = &rec.sandbox.id.clone();
        if rec.sandbox.state != SandboxState::Running {
            return Err(ApiError::Conflict(format!(
                "sandbox {id} is {}, not running",
                rec.sandbox.state
            )));
        }
        let rt = rec.sandbox.runtime;
        self.set_state(&mut rec, SandboxState::Pausing).await?;
        match self
            .inner
            .backend
            .pause(id.as_str(), rt, rec.net_index, offsite)
            .await
        {
            Ok(receipt) => {
                let stored = receipt.stored.is_some();
                rec.sandbox.pause = Some(receipt);
                if stored {
                    self.volumes().backup_volumes_of(&rec).await;
                }
                self.settle_paused(rec).await
            }
            Err(e) => {
                // The checkpoint failed: the sandbox runs on as it was, unless it died.
                let status = self.inner.backend.status(id.as_str(), rt).await;
                if status == ContainerStatus::Running {
                    self.set_state(&mut rec, SandboxState::Running).await?;
                } else {
                    self.fail(rec, format!("pausing: {e}")).await?;
                }
                Err(pause_error(id, "paused", e))
            }
        }
    }

    /// Records a sandbox whose pause image is complete as paused.
    async fn settle_paused(&self, mut rec: SandboxRecord) -> Result<Sandbox, ApiError> {
        let id = rec.sandbox.id.clone();
        // Its container has exited: read the rest of its output.
        self.inner.logs.stop_tailer(&id).await;
        self.forget_agent(&id);
        rec.sandbox.ports.clear();
        self.set_state(&mut rec, SandboxState::Paused).await?;
        Ok(rec.sandbox)
    }

    /// Resumes a paused sandbox from its pause image, verified against its receipt first (a
    /// corrupt image is refused and kept). It lives `timeout_s` more seconds (`0`: no
    /// limit); without one, the default if it had an expiry, else none.
    pub async fn resume(
        &self,
        id: &SandboxId,
        timeout_s: Option<u64>,
    ) -> Result<Sandbox, ApiError> {
        if let Some(t) = timeout_s {
            super::validate::timeout_s(t, "timeout_s")?;
        }
        let svc = self.0.clone();
        let id = id.clone();
        tokio::spawn(async move { svc.sandboxes().resume_now(&id, timeout_s).await })
            .await
            .map_err(|e| ApiError::Internal(format!("resume task: {e}")))?
    }

    async fn resume_now(
        &self,
        id: &SandboxId,
        timeout_s: Option<u64>,
    ) -> Result<Sandbox, ApiError> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let rec = self.record(id).await?;
        self.resume_locked(rec, timeout_s, false).await
    }

    /// [`Service::resume`] of a sandbox whose lock the caller holds.
    /// `held`: it was paused only while a copy of it was made, and takes no new place in its
    /// team's quotas.
    pub(super) async fn resume_locked(
        &self,
        mut rec: SandboxRecord,
        timeout_s: Option<u64>,
        held: bool,
    ) -> Result<Sandbox, ApiError> {
        let id = &rec.sandbox.id.clone();
        if rec.sandbox.state != SandboxState::Paused {
            return Err(ApiError::Conflict(format!(
                "sandbox {id} is {}, not paused",
                rec.sandbox.state
            )));
        }
        // Paused by another server (a shared database and object store): it takes an address
        // of this host's range, and is this server's from now on.
        if !self.is_mine(&rec.sandbox.server) {
            let stored = rec
                .sandbox
                .pause
                .as_ref()
                .is_some_and(|p| p.stored.is_some());
            if !stored {
                return Err(ApiError::Unavailable(format!(
                    "sandbox {id} was paused on server {}, which is not answering, and its \
                     pause image is not in an object store: it resumes when that server is back",
                    rec.sandbox.server
                )));
            }
            self.adopt_lease(&mut rec).await?;
        }
        let spec = self
            .spec_for(&rec)
            .await
            .map_err(|e| ApiError::Conflict(format!("sandbox {id} cannot be resumed: {e}")))?;
        let admitted = if held {
            None
        } else {
            self.admit(&rec.sandbox, false).await?
        };
        self.set_state(&mut rec, SandboxState::Resuming).await?;
        drop(admitted);
        let t0 = Utc::now();
        match self.inner.backend.resume(&spec).await {
            Ok(p) => {
                // Another server's sandbox (a shared database and object store) resumes at
                // an address of this one's.
                let ip = p.ip.to_string();
                if rec.sandbox.ip.as_deref() != Some(ip.as_str()) {
                    rec.sandbox.ip = Some(ip);
                    self.previews().forget_route(id);
                }
                let mut at = t0;
                for (step, took) in &p.steps {
                    self.processes().record_step(id, step, at, *took, None);
                    at += chrono::Duration::from_std(*took).unwrap_or_default();
                }
            }
            Err(e) => {
                let took = (Utc::now() - t0).to_std().unwrap_or_default();
                self.processes()
                    .record_step(id, "resume", t0, took, Some(&e.to_string()));
                self.set_state(&mut rec, SandboxState::Paused).await?;
                return Err(pause_error(id, "resumed", e));
            }
        }
        let wanted = match timeout_s {
            Some(t) => Some(t),
            None if rec.sandbox.expires_at.is_some() => Some(super::lifecycle::DEFAULT_TIMEOUT_S),
            None => None,
        };
        self.settle_resumed(rec, wanted).await
    }

    /// After the runtime restored the sandbox: waits for its agent, then records it running
    /// and drops the pause image. An agent that never answers fails the sandbox.
    async fn settle_resumed(
        &self,
        mut rec: SandboxRecord,
        timeout_s: Option<u64>,
    ) -> Result<Sandbox, ApiError> {
        let id = rec.sandbox.id.clone();
        self.forget_agent(&id);
        if let Err(msg) = self.await_agent(&rec).await? {
            let msg = format!("resumed, but {msg}");
            self.fail(rec, msg.clone()).await?;
            return Err(ApiError::Internal(format!("sandbox {id}: {msg}")));
        }
        if let Some(t) = timeout_s {
            rec.sandbox.expires_at = super::lifecycle::expiry(t);
        }
        rec.sandbox.pause = None;
        self.set_state(&mut rec, SandboxState::Running).await?;
        let owned = id.to_string();
        self.off_thread(move |b| b.discard_pause(&owned)).await;
        self.follow_logs(&id);
        Ok(rec.sandbox)
    }

    /// Holds a sandbox still for a copy of its state (`what`: "forked",
    /// "snapshotted"): pauses it if it runs. Whether it ran (so [`Service::unhold`] resumes
    /// it). The caller holds its lock.
    pub(super) async fn hold_paused(
        &self,
        source: &SandboxRecord,
        what: &str,
    ) -> Result<bool, ApiError> {
        let id = &source.sandbox.id;
        match source.sandbox.state {
            SandboxState::Running => {
                self.pause_locked(source.clone(), false).await?;
                Ok(true)
            }
            SandboxState::Paused => Ok(false),
            state => Err(ApiError::Conflict(format!(
                "sandbox {id} is {state}: only a running or paused one can be {what}"
            ))),
        }
    }

    /// Resumes a sandbox [`Service::hold_paused`] paused (`ran`), whatever became of the copy.
    pub(super) async fn unhold(&self, id: &SandboxId, ran: bool) {
        if !ran {
            return;
        }
        match self.record(id).await {
            Ok(rec) => {
                // Paused only for the copy: its place was its own all along.
                if let Err(e) = self.resume_locked(rec, None, true).await {
                    tracing::warn!(sandbox = %id, "resuming after a copy of it: {e}");
                }
            }
            Err(e) => tracing::warn!(sandbox = %id, "resuming after a copy of it: {e}"),
        }
    }

    /// For a request reaching a sandbox with `auto_resume`: resumes it if it is paused, waits
    /// while it is being paused or resumed, and returns its record as it then is (running,
    /// or whatever else it became, for the caller to refuse).
    pub(crate) async fn resume_for_request(
        &self,
        mut rec: SandboxRecord,
    ) -> Result<SandboxRecord, ApiError> {
        let id = rec.sandbox.id.clone();
        let deadline = std::time::Instant::now() + AUTO_RESUME_WAIT;
        loop {
            match rec.sandbox.state {
                SandboxState::Paused => match self.resume(&id, None).await {
                    Ok(_) => {}
                    // Another request resumed it first.
                    Err(ApiError::Conflict(_))
                        if self.record(&id).await?.sandbox.state != SandboxState::Paused => {}
                    Err(e) => return Err(e),
                },
                SandboxState::Pausing | SandboxState::Resuming
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                _ => return Ok(rec),
            }
            rec = self.record(&id).await?;
        }
    }

    /// Settles a pause or resume a crash cut off, so the sandbox ends running or paused (once
    /// no checkpoint or restore of it runs any more: one the dead server began goes on):
    /// - `pausing`, container still running (no checkpoint at work, none written in the last
    ///   [`CHECKPOINT_EXIT`]): the checkpoint never took; what it left is dropped, running
    ///   again.
    /// - `pausing`, container gone: the checkpoint was written; the pause is finished.
    /// - `resuming`, container running: the restore took; running once its agent answers.
    /// - `resuming`, container gone or half made: removed again; paused, image kept.
    pub(super) async fn reconcile_pause(&self, mut rec: SandboxRecord) -> Result<(), ApiError> {
        let id = rec.sandbox.id.clone();
        let rt = rec.sandbox.runtime;
        if self.inner.backend.pause_busy(id.as_str(), rt) {
            // The runtime is still at it: settled on a later pass, once it is done.
            return Ok(());
        }
        let status = self.inner.backend.status(id.as_str(), rt).await;
        match (rec.sandbox.state, status) {
            (SandboxState::Pausing, ContainerStatus::Running)
                if self
                    .inner
                    .backend
                    .pause_begun_ago(id.as_str())
                    .is_some_and(|ago| ago < CHECKPOINT_EXIT) =>
            {
                // A checkpoint was written just now: once it is whole the sandbox exits,
                // which takes a moment after the last byte. A later pass finishes it.
            }
            (SandboxState::Pausing, ContainerStatus::Running) => {
                tracing::info!(sandbox = %id, "an interrupted pause never took: running");
                // What it wrote is no image: were the sandbox to exit later, it must not be
                // taken for one.
                let owned = id.to_string();
                self.off_thread(move |b| b.discard_unfinished_pause(&owned))
                    .await;
                self.renew_network(&rec, false).await;
                self.set_state(&mut rec, SandboxState::Running).await?;
                self.follow_logs(&id);
            }
            (SandboxState::Pausing, _) => {
                self.finish_exited_pause(rec).await?;
            }
            (SandboxState::Resuming, ContainerStatus::Running) => {
                tracing::info!(sandbox = %id, "an interrupted resume took: running");
                self.renew_network(&rec, true).await;
                self.settle_resumed(rec, None).await?;
            }
            (SandboxState::Resuming, _) => {
                tracing::info!(sandbox = %id, "an interrupted resume did not take: paused");
                self.inner.backend.undo_restore(id.as_str(), rt).await;
                self.set_state(&mut rec, SandboxState::Paused).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// [`Backend::renew_network`](warren_backend::Backend::renew_network), a failure logged:
    /// the agent's answer (or not) decides what becomes of the sandbox.
    async fn renew_network(&self, rec: &SandboxRecord, restored: bool) {
        let (id, rt) = (rec.sandbox.id.as_str(), rec.sandbox.runtime);
        let renewed = self
            .inner
            .backend
            .renew_network(id, rt, rec.net_index, restored)
            .await;
        if let Err(e) = renewed {
            tracing::warn!(sandbox = id, "its network after an interrupted pause: {e}");
        }
    }

    /// A sandbox whose container exited after a checkpoint was begun: the pause is finished
    /// from what was written, or, when there is nothing to restore, the sandbox fails.
    pub(super) async fn finish_exited_pause(&self, mut rec: SandboxRecord) -> Result<(), ApiError> {
        let id = rec.sandbox.id.clone();
        let rt = rec.sandbox.runtime;
        let backend = &self.inner.backend;
        let receipt = if backend.pause_begun(id.as_str()) {
            backend.finish_pause(id.as_str(), rt).await
        } else {
            // The image was complete before the crash; only the record lagged.
            backend.pause_receipt(id.as_str())
        };
        match receipt {
            Ok(receipt) => {
                tracing::info!(sandbox = %id, "an interrupted pause was written: paused");
                rec.sandbox.pause = Some(receipt);
                self.settle_paused(rec).await?;
            }
            Err(e) => {
                self.fail(
                    rec,
                    format!("interrupted while pausing, nothing to restore: {e}"),
                )
                .await?;
            }
        }
        Ok(())
    }
}
