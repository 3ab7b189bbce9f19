//! Forks: `POST /v1/sandboxes/{id}/fork` makes a new sandbox from a running or paused
//! sandbox, with a copy of its files and its processes with their memory, at its own address.
//! The source is paused for the copy (and resumed after, if it was running); the fork is made
//! paused from the copied image and resumed like any paused sandbox, its image checked against
//! the copied receipt. Its agent is the source's, restored; the fork gets a token of its own
//! (in its bundle's token file), which the agent takes on the first request that brings it,
//! and the source's token stops working on the fork.
use chrono::Utc;
use warren_api::{ForkSandbox, Sandbox, SandboxId, SandboxState};
use warren_backend::ForkFrom;
use warren_store::SandboxRecord;

use super::lifecycle::{expiry, DEFAULT_TIMEOUT_S};
use super::provision::token;
use crate::error::ApiError;

/// A new sandbox like `template`: its own id and traffic token, nothing of its life yet.
pub(super) fn copy_of(
    template: &Sandbox,
    metadata: Option<std::collections::BTreeMap<String, String>>,
    timeout_s: Option<u64>,
) -> Sandbox {
    let mut sandbox = template.clone();
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
    sandbox.expires_at = expiry(timeout_s.unwrap_or(DEFAULT_TIMEOUT_S));
    if let Some(m) = metadata {
        sandbox.metadata = m;
    }
    sandbox
}

impl crate::service::Sandboxes<'_> {
    /// Forks sandbox `id`; the new sandbox, running.
    pub async fn fork(&self, id: &SandboxId, req: ForkSandbox) -> Result<Sandbox, ApiError> {
        if let Some(t) = req.timeout_s {
            super::validate::timeout_s(t, "timeout_s")?;
        }
        let svc = self.0.clone();
        let id = id.clone();
        tokio::spawn(async move { svc.sandboxes().fork_now(&id, req).await })
            .await
            .map_err(|e| ApiError::Internal(format!("fork task: {e}")))?
    }

    async fn fork_now(&self, id: &SandboxId, req: ForkSandbox) -> Result<Sandbox, ApiError> {
        let lock = self.lock_for(id);
        let guard = lock.lock().await;
        let source = self.record(id).await?;
        let was_running = self.hold_paused(&source, "forked").await?;
        let made = self
            .make_fork(
                &source.sandbox,
                ForkFrom::Sandbox(id.as_str()),
                req.metadata.clone(),
                req.timeout_s,
            )
            .await;
        // The source goes on as it was, whatever became of the fork.
        self.unhold(id, was_running).await;
        drop(guard);
        let fork = made?;
        self.resume(&fork, req.timeout_s).await
    }

    /// Records a new sandbox like `template` and makes it, paused, from `from`'s state (its
    /// agent the template's, restored, until it takes the new sandbox's own token).
    pub(super) async fn make_fork(
        &self,
        template: &Sandbox,
        from: ForkFrom<'_>,
        metadata: Option<std::collections::BTreeMap<String, String>>,
        timeout_s: Option<u64>,
    ) -> Result<SandboxId, ApiError> {
        let mut sandbox = copy_of(template, metadata, timeout_s);
        sandbox.server = self.server_name().to_owned();
        let mut rec = SandboxRecord {
            sandbox,
            token: token(),
            net_index: None,
        };
        let fork_id = rec.sandbox.id.clone();
        {
            let _no_gc = self.inner.volumes_gc.read().await;
            self.insert(&rec).await?;
        }
        let lock = self.lock_for(&fork_id);
        let _guard = lock.lock().await;
        self.claim_lease(&mut rec).await?;
        let spec = match self.spec_for(&rec).await {
            Ok(spec) => spec,
            Err(e) => {
                self.fail(rec, e.clone()).await?;
                return Err(ApiError::Internal(format!("forking {from:?}: {e}")));
            }
        };
        match self.inner.backend.prepare_fork(&spec, from).await {
            Ok(receipt) => {
                rec.sandbox.ip = Some(self.address_of(spec.net_index).to_string());
                rec.sandbox.pause = Some(receipt);
                self.set_state(&mut rec, SandboxState::Paused).await?;
                Ok(fork_id)
            }
            Err(e) => {
                let msg = format!("forking {from:?}: {e}");
                self.fail(rec, msg.clone()).await?;
                Err(ApiError::Internal(msg))
            }
        }
    }
}
