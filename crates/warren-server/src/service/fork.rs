//! Forks: `POST /v1/sandboxes/{id}/fork` makes a new sandbox from a running or paused gVisor
//! sandbox, with a copy of its files and its processes with their memory, at its own address.
//! The source is paused for the copy (and resumed after, if it was running); the fork is made
//! paused from the copied image and resumed like any paused sandbox, its image checked against
//! the copied receipt. Its agent is the source's, restored: it keeps the source's token.
use chrono::Utc;
use warren_api::{ForkSandbox, Sandbox, SandboxId, SandboxState};
use warren_store::SandboxRecord;

use super::lifecycle::{expiry, token, DEFAULT_TIMEOUT_S};
use super::Service;
use crate::error::ApiError;

impl Service {
    /// Forks sandbox `id`; the new sandbox, running.
    pub async fn fork(&self, id: &SandboxId, req: ForkSandbox) -> Result<Sandbox, ApiError> {
        if let Some(t) = req.timeout_s {
            super::validate::timeout_s(t, "timeout_s")?;
        }
        let svc = self.clone();
        let id = id.clone();
        tokio::spawn(async move { svc.fork_now(&id, req).await })
            .await
            .map_err(|e| ApiError::Internal(format!("fork task: {e}")))?
    }

    async fn fork_now(&self, id: &SandboxId, req: ForkSandbox) -> Result<Sandbox, ApiError> {
        let lock = self.lock_for(id);
        let guard = lock.lock().await;
        let source = self.record(id).await?;
        if source.sandbox.runtime != warren_api::Runtime::Gvisor {
            return Err(ApiError::Conflict(format!(
                "sandbox {id} runs under {}: only gVisor sandboxes can be forked with their memory",
                source.sandbox.runtime
            )));
        }
        let was_running = match source.sandbox.state {
            SandboxState::Running => {
                self.pause_locked(source.clone()).await?;
                true
            }
            SandboxState::Paused => false,
            state => {
                return Err(ApiError::Conflict(format!(
                    "sandbox {id} is {state}: fork a running or paused one"
                )))
            }
        };
        let made = self.make_fork(&source, &req).await;
        // The source goes on as it was, whatever became of the fork.
        if was_running {
            let rec = self.record(id).await?;
            if let Err(e) = self.resume_locked(rec, None).await {
                tracing::warn!(sandbox = %id, "resuming after a fork: {e}");
            }
        }
        drop(guard);
        let fork = made?;
        self.resume(&fork, req.timeout_s).await
    }

    /// Records the fork and makes it, paused, from the source's pause image.
    async fn make_fork(
        &self,
        source: &SandboxRecord,
        req: &ForkSandbox,
    ) -> Result<SandboxId, ApiError> {
        let mut sandbox = source.sandbox.clone();
        sandbox.id = SandboxId::generate();
        sandbox.state = SandboxState::Pending;
        sandbox.traffic_token = Some(token());
        sandbox.ip = None;
        sandbox.created_at = Utc::now();
        sandbox.started_at = None;
        sandbox.error = None;
        sandbox.urls = Default::default();
        sandbox.ports = Vec::new();
        sandbox.pause = None;
        sandbox.expires_at = expiry(req.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S));
        if let Some(m) = &req.metadata {
            sandbox.metadata = m.clone();
        }
        let mut rec = SandboxRecord {
            sandbox,
            // Its agent is the source's, restored with what it holds in memory.
            token: source.token.clone(),
            net_index: None,
        };
        let fork_id = rec.sandbox.id.clone();
        {
            let _no_gc = self.inner.volumes_gc.read().await;
            self.inner.store.insert_sandbox(&rec).await?;
        }
        let lock = self.lock_for(&fork_id);
        let _guard = lock.lock().await;
        {
            let _alloc = self.inner.net_alloc.lock().await;
            let used = self.inner.store.used_net_indexes().await?;
            let index = self.inner.backend.claim_net_index(&used).ok_or_else(|| {
                ApiError::Unavailable("the sandbox address range is exhausted".into())
            })?;
            rec.net_index = Some(index);
            self.set_state(&mut rec, SandboxState::Provisioning).await?;
        }
        let spec = match self.spec_for(&rec).await {
            Ok(spec) => spec,
            Err(e) => {
                self.fail(rec, e.clone()).await?;
                return Err(ApiError::Internal(format!(
                    "forking sandbox {}: {e}",
                    source.sandbox.id
                )));
            }
        };
        match self
            .inner
            .backend
            .prepare_fork(&spec, source.sandbox.id.as_str())
            .await
        {
            Ok(receipt) => {
                rec.sandbox.ip = Some(self.inner.backend.net_ip(spec.net_index).to_string());
                rec.sandbox.pause = Some(receipt);
                self.set_state(&mut rec, SandboxState::Paused).await?;
                Ok(fork_id)
            }
            Err(e) => {
                let msg = format!("forking sandbox {}: {e}", source.sandbox.id);
                self.fail(rec, msg.clone()).await?;
                Err(ApiError::Internal(msg))
            }
        }
    }
}
