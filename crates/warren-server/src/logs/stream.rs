//! Following a sandbox's output through its backend's log API ([`Backend::log_lines`]: a
//! Kubernetes Pod's log) rather than files: the same numbering, store, rate bound and drop
//! reports as the file tailer; the offset stored with the lines is the last line's time, so
//! a restart (or a new Pod after a start) asks only for what came after it.
//!
//! [`Backend::log_lines`]: warren_backend::Backend::log_lines
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::watch;
use warren_api::{LogStream, SandboxId};
use warren_backend::{BackendError, LogLines};
use warren_store::StoreError;

use super::follow::{Budget, Dropped};
use super::{LogHub, DROP_REPORT};

/// Opens the sandbox's output after a time (ns since the epoch).
pub type Opener =
    Arc<dyn Fn(Option<i64>) -> BoxFuture<'static, Result<LogLines, BackendError>> + Send + Sync>;

/// The offset's name: the time of the last line stored.
const OFFSET: &str = "log-time";
/// Lines stored in one go at most.
const BATCH: usize = 256;
/// Longest wait before opening the log again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl LogHub {
    /// Starts following a sandbox's output through `open`, from where the last tailer stopped.
    pub fn start_stream_tailer(&self, id: &SandboxId, open: Opener) {
        self.spawn_tailer(id, move |hub, sid, stopped| async move {
            hub.tail_stream(&sid, open, stopped).await
        });
    }

    async fn tail_stream(
        &self,
        id: &SandboxId,
        open: Opener,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let offsets = self.inner.store.log_offsets(id).await?;
        let mut since = offsets
            .into_iter()
            .find(|(name, _)| name == OFFSET)
            .map(|(_, at)| at as i64);
        let limits = self.inner.limits;
        let mut budget = Budget::full(&limits);
        let mut dropped = Dropped::default();
        let mut reported = Instant::now();
        let mut backoff = Duration::from_millis(250);
        loop {
            let opened = tokio::select! {
                o = open(since) => o,
                _ = stopped.changed() => return Ok(()),
            };
            match opened {
                Ok(lines) => {
                    backoff = Duration::from_millis(250);
                    // What an earlier open stored. Only those are skipped: the two streams'
                    // lines are timed as they are read, so the log's order is not quite the
                    // times' (a line may come after one timed later than it).
                    let floor = since;
                    let mut chunks = lines.ready_chunks(BATCH);
                    loop {
                        let chunk = tokio::select! {
                            c = chunks.next() => c,
                            _ = stopped.changed() => return Ok(()),
                        };
                        let Some(chunk) = chunk else { break };
                        budget.refill(&limits);
                        let mut keep = Vec::new();
                        for line in chunk {
                            let line = match line {
                                Ok(l) => l,
                                Err(e) => {
                                    tracing::debug!(sandbox = %id, "its log: {e}");
                                    break;
                                }
                            };
                            // A reopened log starts at the last stored line's time.
                            if floor.is_some_and(|f| line.at_ns <= f) {
                                continue;
                            }
                            since = since.max(Some(line.at_ns));
                            if budget.take(line.text.len()) {
                                keep.push((LogStream::Stdout, line.text));
                            } else {
                                dropped.drop_line();
                            }
                        }
                        if !keep.is_empty() {
                            let at = since.unwrap_or_default().max(0) as u64;
                            self.append(id, keep, &[(OFFSET, at)]).await?;
                        }
                        if dropped.any() && reported.elapsed() >= DROP_REPORT {
                            self.event(id, dropped.describe(&limits)).await;
                            dropped = Dropped::default();
                            reported = Instant::now();
                        }
                    }
                }
                Err(e) => tracing::debug!(sandbox = %id, "opening its log: {e}"),
            }
            // The log ended (its Pod stopped, or the API let go) or would not open: again,
            // after a breath, until the tailer is stopped.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped.changed() => return Ok(()),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
