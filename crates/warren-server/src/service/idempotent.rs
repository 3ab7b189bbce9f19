//! Creates that happen once per idempotency key (E2B's `Idempotency-Key`): a client that
//! retries a create whose answer it lost gets the sandbox the first try made.
use warren_api::{CreateSandbox, Sandbox, SandboxState};

use super::Service;
use crate::error::ApiError;

impl Service {
    /// Like [`Service::create_preferring`], unless a create with `key` already made a sandbox that still
    /// lives: then that sandbox, and `false`.
    pub async fn create_once(
        &self,
        key: &str,
        req: CreateSandbox,
        user: Option<&str>,
    ) -> Result<(Sandbox, bool), ApiError> {
        // Not a sandbox id (those have no ':'), so the two never share a lock.
        let name = format!("idempotency:{key}");
        let lock = self.lock_named(&name);
        let guard = lock.lock().await;
        if let Some(id) = self.inner.store.idempotent_sandbox(key).await? {
            match self.get(&id).await {
                Ok(sandbox)
                    if !matches!(
                        sandbox.state,
                        SandboxState::Failed | SandboxState::Terminating | SandboxState::Deleted
                    ) =>
                {
                    return Ok((sandbox, false));
                }
                Ok(_) | Err(ApiError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let made = self.create_preferring(req, user).await?;
        self.inner
            .store
            .put_idempotent_sandbox(key, &made.0.id)
            .await?;
        drop(guard);
        self.inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        Ok(made)
    }
}
