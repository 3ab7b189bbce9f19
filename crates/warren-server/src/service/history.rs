//! Command history: what ran in a sandbox, by the caller (`user`) or by Warren itself while
//! provisioning (`system`), kept for the configured retention.
use std::time::Duration;

use chrono::{DateTime, Utc};
use warren_api::exec::HISTORY_OUTPUT_LIMIT;
use warren_api::{ExecKind, ExecRecord, SandboxId};

use crate::error::ApiError;

/// Output kept of one stream, up to [`HISTORY_OUTPUT_LIMIT`] bytes.
#[derive(Default)]
pub struct Capped {
    bytes: Vec<u8>,
}

impl Capped {
    /// Keeps what still fits.
    pub fn push(&mut self, chunk: &[u8]) {
        let room = HISTORY_OUTPUT_LIMIT.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// The kept text (a cut UTF-8 sequence at the end becomes U+FFFD).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Human descriptions of the provisioning steps the backend reports.
fn step_label(step: &str) -> &'static str {
    match step {
        "rootfs" => "Mounting the root filesystem",
        "network" => "Setting up the network",
        "bundle" => "Writing the OCI bundle",
        "runtime" => "Starting the sandbox runtime",
        "agent" => "Waiting for the agent",
        _ => "Provisioning",
    }
}

/// Appends one history entry; history is best-effort, so a failure is logged, not returned.
pub(crate) async fn insert_history(
    store: &dyn warren_store::Store,
    id: &SandboxId,
    rec: &ExecRecord,
) {
    if let Err(e) = store.insert_exec(id, rec).await {
        tracing::warn!(sandbox = %id, "recording history: {e}");
    }
}

impl crate::service::Processes<'_> {
    /// Records one system step of provisioning; history is best-effort and never fails the
    /// operation it describes.
    pub(crate) fn record_step(
        &self,
        id: &SandboxId,
        step: &str,
        started_at: DateTime<Utc>,
        took: Duration,
        error: Option<&str>,
    ) {
        let rec = ExecRecord {
            id: super::exec::new_exec_id(),
            cmd: vec![format!("warren:{step}")],
            label: Some(step_label(step).to_owned()),
            kind: ExecKind::System,
            exit_code: Some(i32::from(error.is_some())),
            stdout: String::new(),
            stderr: error.unwrap_or_default().to_owned(),
            started_at,
            duration_ms: took.as_millis() as u64,
        };
        self.journal(super::Journal::Exec(id.clone(), Box::new(rec)));
    }

    /// Appends to the history through the journal, behind the provisioning steps queued
    /// before it (written directly, a command could land before the steps that preceded it),
    /// and waits until it is written: the exec's answer comes after its record, which any
    /// server sharing the database then reads.
    pub(crate) async fn record_exec(&self, id: &SandboxId, rec: ExecRecord) {
        self.journal(super::Journal::Exec(id.clone(), Box::new(rec)));
        self.journal_written().await;
    }

    /// Waits until everything journaled before the call is written (at most 5 s: a stuck
    /// store answers with what it has rather than holding the caller forever).
    pub(crate) async fn journal_written(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        self.journal(super::Journal::Written(done));
        let _ = tokio::time::timeout(Duration::from_secs(5), written).await;
    }

    /// The last `limit` entries of a sandbox's history, oldest first, including everything
    /// recorded before the call.
    pub async fn history(&self, id: &SandboxId, limit: u32) -> Result<Vec<ExecRecord>, ApiError> {
        self.record(id).await?;
        self.journal_written().await;
        Ok(self.inner.store.list_execs(id, limit).await?)
    }

    /// How long history is kept.
    pub fn history_retention(&self) -> Duration {
        self.inner.cfg.history_retention
    }

    /// Deletes history older than the retention.
    pub async fn prune_history(&self) -> Result<u64, ApiError> {
        let keep = chrono::Duration::from_std(self.inner.cfg.history_retention)
            .unwrap_or(chrono::Duration::days(5));
        Ok(self.inner.store.prune_execs(Utc::now() - keep).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_at_the_limit() {
        let mut c = Capped::default();
        c.push(&vec![b'a'; HISTORY_OUTPUT_LIMIT - 1]);
        c.push(b"bcd");
        assert_eq!(c.text().len(), HISTORY_OUTPUT_LIMIT);
        assert!(c.text().ends_with('b'));
    }
}
