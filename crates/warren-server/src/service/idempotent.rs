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
    ) -> Result<Sandbox, ApiError> {
        // Not a sandbox id (those have no ':'), so the two never share a lock.
        let name = format!("idempotency:{key}");
        let lock = self.lock_named(&name);
        let result = {
            let _guard = lock.lock().await;
            self.create_once_locked(key, req, user).await
        };
        // Dropped from the map only when no other request waits on it, so two requests with
        // one key never hold two different locks.
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.get(&name).is_some_and(|held| {
            std::sync::Arc::ptr_eq(held, &lock) && std::sync::Arc::strong_count(held) == 2
        }) {
            locks.remove(&name);
        }
        result
    }

    async fn create_once_locked(
        &self,
        key: &str,
        req: CreateSandbox,
        user: Option<&str>,
    ) -> Result<Sandbox, ApiError> {
        if let Some(id) = self.inner.store.idempotent_sandbox(key).await? {
            match self.get(&id).await {
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
        let (sandbox, _) = self.create_preferring(req, user).await?;
        self.inner
            .store
            .put_idempotent_sandbox(key, &sandbox.id)
            .await?;
        Ok(sandbox)
    }
}
