//! Connecting to a sandbox (E2B's connect): a running one is used as it is, a stopped one is
//! started again with its files, a paused one resumed with its processes; either way its
//! lifetime is at least the one asked for.
use warren_api::{Sandbox, SandboxId, SandboxState};

/// How long a connect waits for a sandbox between states to settle.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
use crate::error::ApiError;

impl crate::service::Sandboxes<'_> {
    /// Makes sure the sandbox runs and lives at least `timeout_s` more seconds (a longer
    /// lifetime it already has is kept). Returns it and whether it had to be started.
    pub async fn connect(
        &self,
        id: &SandboxId,
        timeout_s: Option<u64>,
    ) -> Result<(Sandbox, bool), ApiError> {
        // Checked before a stopped sandbox is started for it.
        if let Some(t) = timeout_s {
            super::validate::timeout_s(t, "timeout")?;
        }
        let sandbox = self.settled(id).await?;
        let started = match sandbox.state {
            SandboxState::Pending
            | SandboxState::Provisioning
            | SandboxState::Starting
            | SandboxState::Running => false,
            SandboxState::Stopped => match self.start(id).await {
                Ok(_) => true,
                // Another connect started it first: running is what this one wanted too.
                Err(ApiError::Conflict(_))
                    if self.get(id).await?.state == SandboxState::Running =>
                {
                    false
                }
                Err(e) => return Err(e),
            },
            SandboxState::Paused => match self.resume(id, timeout_s).await {
                Ok(_) => true,
                Err(ApiError::Conflict(_))
                    if self.get(id).await?.state == SandboxState::Running =>
                {
                    false
                }
                Err(e) => return Err(e),
            },
            SandboxState::Stopping | SandboxState::Pausing | SandboxState::Resuming => {
                return Err(ApiError::Conflict(format!(
                    "sandbox {id} is still {} after {}s: try again in a moment",
                    sandbox.state,
                    SETTLE_WAIT.as_secs()
                )))
            }
            state => return Err(ApiError::NotFound(format!("sandbox {id} is {state}"))),
        };
        let sandbox = match (timeout_s, started) {
            // A stopped sandbox has no expiry left: it gets the one asked for (or the default).
            (t, true) => {
                self.set_timeout(id, t.unwrap_or(super::lifecycle::DEFAULT_TIMEOUT_S))
                    .await?
            }
            (Some(t), false) => self.extend_timeout(id, t).await?,
            (None, false) => self.get(id).await?,
        };
        Ok((sandbox, started))
    }

    /// The sandbox once it is not between states (stopping, pausing, resuming): a connect
    /// that comes while its timeout pauses it waits for the pause and then resumes it, as on
    /// E2B. Gives up after [`SETTLE_WAIT`], answering it as it is then.
    async fn settled(&self, id: &SandboxId) -> Result<Sandbox, ApiError> {
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            let sandbox = self.get(id).await?;
            let moving = matches!(
                sandbox.state,
                SandboxState::Stopping | SandboxState::Pausing | SandboxState::Resuming
            );
            if !moving || tokio::time::Instant::now() >= deadline {
                return Ok(sandbox);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Ends the sandbox's time now: E2B's timeout of 0 (the timer queue reaps it at once,
    /// as its `on_timeout` says).
    pub async fn expire_now(&self, id: &SandboxId) -> Result<Sandbox, ApiError> {
        self.set_expires_at(id, Some(chrono::Utc::now())).await
    }

    /// Moves the sandbox's expiry to `timeout_s` from now unless it already lasts longer.
    pub async fn extend_timeout(
        &self,
        id: &SandboxId,
        timeout_s: u64,
    ) -> Result<Sandbox, ApiError> {
        let sandbox = self.get(id).await?;
        match (sandbox.expires_at, super::lifecycle::expiry(timeout_s)) {
            // `None` wanted: no limit, which outlasts any expiry.
            (Some(at), Some(wanted)) if at >= wanted => Ok(sandbox),
            (Some(_), _) => self.set_timeout(id, timeout_s).await,
            (None, _) => Ok(sandbox),
        }
    }
}
