//! Creates that happen once per idempotency key (E2B's `Idempotency-Key`): a client that
//! retries a create whose answer it lost gets the sandbox the first try made.
use warren_api::{CreateSandbox, Sandbox, SandboxState};

use super::Service;
use crate::error::ApiError;

impl Service {
    /// Like [`Service::create_preferring`], unless a create with `key` already made a sandbox
    /// that still lives: then that sandbox.
    pub async fn create_once(
        &self,
        key: &str,
        req: CreateSandbox,
        user: Option<&str>,
        team: &str,
    ) -> Result<Sandbox, ApiError> {
        // One team's keys never meet another's.
        let key = &format!("{team}/{key}");
        // Not a sandbox id (those have no ':'), so the two never share a lock.
        let name = format!("idempotency:{key}");
        // Declared before the guard, so it drops (and tidies the map) after the lock is free,
        // also when the request is cancelled midway.
        let lock = KeyLock {
            lock: self.lock_named(&name),
            name,
            svc: self,
        };
        let _guard = lock.lock.lock().await;
        self.create_once_locked(key, req, user, team).await
    }

    async fn create_once_locked(
        &self,
        key: &str,
        req: CreateSandbox,
        user: Option<&str>,
        team: &str,
    ) -> Result<Sandbox, ApiError> {
        let replaced = self.inner.store.idempotent_sandbox(key).await?;
        if let Some(id) = &replaced {
            match self.sandboxes().get(id).await {
                Ok(sandbox)
                    if !matches!(
                        sandbox.state,
                        SandboxState::Failed | SandboxState::Terminating | SandboxState::Deleted
                    ) =>
                {
                    return Ok(sandbox);
                }
                Ok(_) | Err(ApiError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Carried out as an operation, so a client that goes away cancels nothing.
        let work = super::operations::Work::Create {
            request: Box::new(req),
            user: user.map(str::to_owned),
        };
        // The operation's own key names the sandbox it replaces: a retry of a call whose
        // client gave up (the mapping below never written) finds the same operation, not a
        // second sandbox.
        // A failed one is not the answer for ever: the next try gets a key of its own.
        let mut op_key = format!(
            "e2b-create:{}:{key}",
            replaced.as_ref().map(|id| id.as_str()).unwrap_or("-")
        );
        while let Some(rec) = self.inner.store.operation_by_key(&op_key).await? {
            if rec.op.state != warren_api::OperationState::Failed {
                break;
            }
            op_key = format!("{op_key}:{}", rec.op.id);
        }
        let submit = super::operations::Submit {
            team: team.to_owned(),
            key: Some(op_key),
            events: None,
        };
        let sandbox = self
            .operations()
            .call::<Sandbox>(work, submit, false)
            .await?
            .value;
        self.inner
            .store
            .put_idempotent_sandbox(key, &sandbox.id)
            .await?;
        Ok(sandbox)
    }
}

/// A key's lock, dropped from the lock map when the last request holding it is done, so two
/// requests with one key never hold two different locks.
struct KeyLock<'a> {
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    name: String,
    svc: &'a Service,
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        let mut locks = self
            .svc
            .inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let only_us = locks.get(&self.name).is_some_and(|held| {
            std::sync::Arc::ptr_eq(held, &self.lock) && std::sync::Arc::strong_count(held) == 2
        });
        if only_us {
            locks.remove(&self.name);
        }
    }
}
