//! The audit log's one writer: entries are appended in the order their answers were made,
//! off the request path. Each in a task of its own raced on a database with several
//! connections (PostgreSQL), and an answer made first could get the later sequence number.
use std::sync::Arc;

use tokio::sync::mpsc;
use warren_api::AuditEntry;
use warren_store::Store;

/// Queues entries for the writer task.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<AuditEntry>,
}

impl AuditLog {
    /// Starts the writer on `store` (on the current Tokio runtime).
    pub fn start(store: Arc<dyn Store>) -> AuditLog {
        let (tx, mut rx) = mpsc::unbounded_channel::<AuditEntry>();
        tokio::spawn(async move {
            while let Some(entry) = rx.recv().await {
                // The answer did not wait for the log, and no store write is awaited while a
                // handler's future could hold SQLite's writer.
                if let Err(e) = store.append_audit(&entry).await {
                    tracing::error!(path = %entry.path, "writing the audit log: {e}");
                }
            }
        });
        AuditLog { tx }
    }

    /// Queues `entry` behind those before it.
    pub fn write(&self, entry: AuditEntry) {
        if let Err(e) = self.tx.send(entry) {
            tracing::error!(path = %e.0.path, "the audit log's writer has stopped: entry lost");
        }
    }
}
