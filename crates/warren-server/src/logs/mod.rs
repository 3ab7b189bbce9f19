//! Sandbox logs: the main command's output and lifecycle events as one numbered sequence per
//! sandbox. A tailer per running sandbox reads the runtime's output files, stores complete
//! lines together with how far it has read (one transaction, so a restart neither loses nor
//! repeats a line) and broadcasts them to live followers.
//!
//! What one sandbox's output may cost is bounded ([`LogLimits`]):
//! - rate: a token bucket per sandbox on bytes read and lines stored. Lines over it are
//!   dropped, and output left unread piles up in the file until it is skipped (below); an
//!   `event` line says how much was dropped, at most every [`DROP_REPORT`].
//! - total: past `keep_lines` lines or `keep_bytes` bytes of text, the oldest lines go (down
//!   to 90 %, so trimming is rare); the first `seq` stored says how many went.
//! - host files: output already stored is punched out of the files (`FALLOC_FL_PUNCH_HOLE`:
//!   the runtime appends to them, so offsets stay valid and no write can be lost, and the
//!   blocks go back to the filesystem), and unread output past `file_bytes` is skipped,
//!   oldest first. On disk a file holds at most `file_bytes` plus what arrives between two
//!   looks (10 ms apart while it is far behind, 100 ms otherwise).
//! - line length: a line longer than [`MAX_LINE`] bytes is cut into several lines.
use crate::lock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};
use tokio::sync::{broadcast, watch};
use warren_api::{LogLine, LogStream, SandboxId};
use warren_store::{Store, StoreError};

mod follow;
mod stream;
use follow::{Budget, Dropped, Follow};
pub use stream::Opener;

/// How often tailers look for new output while there is some.
const POLL: Duration = Duration::from_millis(100);
/// A tailer that found nothing looks again twice as late each time, up to `POLL << IDLE_STEPS`
/// (0.8 s): a thousand quiet sandboxes cost about a thousand polls a second, not ten thousand.
const IDLE_STEPS: u32 = 3;
/// A line longer than this is cut into several: the log is for reading, not for blobs.
pub const MAX_LINE: usize = 16 * 1024;
/// Read at most this much per file per poll, whatever the rate allows.
const MAX_READ: u64 = 1024 * 1024;
/// The rate limits allow bursts of this many seconds' worth.
const BURST_S: f64 = 10.0;
/// Dropped output is reported in an event at most this often (and when the tailer stops).
pub const DROP_REPORT: Duration = Duration::from_secs(10);
/// Holes are punched in whole filesystem blocks (4 KiB on every common one).
const BLOCK: u64 = 4096;

/// Bounds on what a sandbox's main command may write to its log (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Lines kept per sandbox; the oldest go first.
    pub keep_lines: u64,
    /// Bytes of text kept per sandbox; the oldest lines go first.
    pub keep_bytes: u64,
    /// Lines of output stored per second per sandbox (bursts of 10 s' worth).
    pub rate_lines: u64,
    /// Bytes of output read per second per sandbox (bursts of 10 s' worth).
    pub rate_bytes: u64,
    /// Unread output a host-side log file may hold before the oldest is skipped.
    pub file_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            keep_lines: 100_000,
            keep_bytes: 32 << 20,
            rate_lines: 2_000,
            rate_bytes: 1 << 20,
            file_bytes: 8 << 20,
        }
    }
}

impl LogLimits {
    /// The limits with each raised to the least that works (a line must fit, a poll must
    /// be able to read something).
    fn sane(self) -> LogLimits {
        LogLimits {
            keep_lines: self.keep_lines.max(1),
            keep_bytes: self.keep_bytes.max(MAX_LINE as u64),
            rate_lines: self.rate_lines.max(1),
            rate_bytes: self.rate_bytes.max(1),
            file_bytes: self.file_bytes.max(2 * BLOCK),
        }
    }
}

struct Tailer {
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

/// What the hub knows of one sandbox's stored log; appends hold it.
#[derive(Default)]
struct Stored {
    /// Read from the store yet?
    loaded: bool,
    last_seq: u64,
    lines: u64,
    bytes: u64,
}

/// Numbering, storage, live fan-out and tailers of every sandbox's log.
#[derive(Clone)]
pub struct LogHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    runtime: tokio::runtime::Handle,
    store: Arc<dyn Store>,
    limits: LogLimits,
    stored: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Stored>>>>,
    channels: Mutex<HashMap<String, broadcast::Sender<LogLine>>>,
    tailers: Mutex<HashMap<String, Tailer>>,
}

impl LogHub {
    /// A hub over `store`, bounding each sandbox's log by `limits`.
    pub fn new(store: Arc<dyn Store>, limits: LogLimits) -> Self {
        LogHub {
            inner: Arc::new(HubInner {
                runtime: tokio::runtime::Handle::current(),
                store,
                limits: limits.sane(),
                stored: Mutex::default(),
                channels: Mutex::default(),
                tailers: Mutex::default(),
            }),
        }
    }

    fn channel(&self, id: &SandboxId) -> broadcast::Sender<LogLine> {
        lock(&self.inner.channels)
            .entry(id.to_string())
            .or_insert_with(|| broadcast::channel(1024).0)
            .clone()
    }

    /// Live lines of a sandbox from now on. Subscribe before reading the stored backlog, then
    /// skip lines at or below the last one read: nothing falls in between.
    pub fn subscribe(&self, id: &SandboxId) -> broadcast::Receiver<LogLine> {
        self.channel(id).subscribe()
    }

    /// Numbers, stores and broadcasts `lines`, recording `offsets` in the same transaction;
    /// then drops the oldest lines if the log is over its caps.
    pub async fn append(
        &self,
        id: &SandboxId,
        lines: Vec<(LogStream, String)>,
        offsets: &[(&str, u64)],
    ) -> Result<(), StoreError> {
        let stored = lock(&self.inner.stored)
            .entry(id.to_string())
            .or_default()
            .clone();
        let mut st = stored.lock().await;
        if !st.loaded {
            let size = self.inner.store.log_size(id).await?;
            *st = Stored {
                loaded: true,
                last_seq: size.last_seq,
                lines: size.lines,
                bytes: size.bytes,
            };
        }
        let mut next = st.last_seq;
        // Stored timestamps keep microseconds; live copies must be the very same values.
        let t = Utc::now();
        let now = t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t);
        let numbered: Vec<LogLine> = lines
            .into_iter()
            .map(|(stream, text)| {
                next += 1;
                LogLine {
                    seq: next,
                    ts: now,
                    stream,
                    text,
                }
            })
            .collect();
        self.inner.store.append_logs(id, &numbered, offsets).await?;
        st.last_seq = next;
        st.lines += numbered.len() as u64;
        st.bytes += numbered.iter().map(|l| l.text.len() as u64).sum::<u64>();
        let limits = self.inner.limits;
        if st.lines > limits.keep_lines || st.bytes > limits.keep_bytes {
            // Down to 90 %, so the (whole-log) trim runs once per tenth of the cap.
            let keep_lines = (limits.keep_lines * 9 / 10).max(1);
            let keep_bytes = (limits.keep_bytes * 9 / 10).max(MAX_LINE as u64);
            match self.inner.store.trim_logs(id, keep_lines, keep_bytes).await {
                Ok((n, b)) => {
                    st.lines = st.lines.saturating_sub(n);
                    st.bytes = st.bytes.saturating_sub(b);
                }
                Err(e) => tracing::warn!(sandbox = %id, "trimming the log: {e}"),
            }
        }
        drop(st);
        let tx = self.channel(id);
        for l in numbered {
            let _ = tx.send(l);
        }
        Ok(())
    }

    /// Appends one lifecycle event; logs rather than fails (the event describes, it decides nothing).
    pub async fn event(&self, id: &SandboxId, text: String) {
        if let Err(e) = self.append(id, vec![(LogStream::Event, text)], &[]).await {
            tracing::warn!(sandbox = %id, "logging event: {e}");
        }
    }

    /// Starts following a sandbox's output files, from where the last tailer stopped.
    pub fn start_tailer(&self, id: &SandboxId, files: Vec<(&'static str, PathBuf)>) {
        self.spawn_tailer(id, move |hub, sid, stopped| async move {
            hub.tail(&sid, files, stopped).await
        });
    }

    /// Runs `tail` as the sandbox's tailer, unless one runs.
    fn spawn_tailer<F, Fut>(&self, id: &SandboxId, tail: F)
    where
        F: FnOnce(LogHub, SandboxId, watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        let mut tailers = lock(&self.inner.tailers);
        if tailers
            .get(id.as_str())
            .is_some_and(|t| !t.done.is_finished())
        {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let sid = id.clone();
        let work = tail(self.clone(), id.clone(), stopped);
        // On the runtime the hub was made on (the main one): a tailer outlives any request.
        let done = self.inner.runtime.spawn(async move {
            if let Err(e) = work.await {
                tracing::warn!(sandbox = %sid, "log tailer: {e}");
            }
        });
        tailers.insert(id.to_string(), Tailer { stop, done });
    }

    /// Reads what is left of the output (as far as the rate allows), then stops following it.
    pub async fn stop_tailer(&self, id: &SandboxId) {
        let tailer = lock(&self.inner.tailers).remove(id.as_str());
        if let Some(t) = tailer {
            let _ = t.stop.send(true);
            let _ = t.done.await;
        }
    }

    /// Forgets a deleted sandbox's log.
    pub async fn forget(&self, id: &SandboxId) {
        self.stop_tailer(id).await;
        lock(&self.inner.stored).remove(id.as_str());
        lock(&self.inner.channels).remove(id.as_str());
        if let Err(e) = self.inner.store.delete_logs(id).await {
            tracing::warn!(sandbox = %id, "deleting logs: {e}");
        }
    }

    async fn tail(
        &self,
        id: &SandboxId,
        files: Vec<(&'static str, PathBuf)>,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let stored: HashMap<String, u64> = self
            .inner
            .store
            .log_offsets(id)
            .await?
            .into_iter()
            .collect();
        let limits = self.inner.limits;
        let mut follows: Vec<Follow> = files
            .into_iter()
            .map(|(name, path)| {
                let consumed = stored.get(name).copied().unwrap_or(0);
                Follow {
                    stream: if name == "stdout" {
                        LogStream::Stdout
                    } else {
                        LogStream::Stderr
                    },
                    name,
                    path,
                    consumed,
                    stored: consumed,
                    punched: 0,
                    partial: Vec::new(),
                    resync: false,
                    punch_failed: false,
                }
            })
            .collect();
        let mut budget = Budget::full(&limits);
        let mut dropped = Dropped::default();
        let mut reported = Instant::now();
        let mut hurry = false;
        let mut idle = 0;
        loop {
            // Far behind, the writer is outrunning the log: look again soon, so the file holds
            // little more than its cap on disk (a skip costs a stat, a punch and an offset).
            let wait = if hurry { POLL / 10 } else { POLL * (1 << idle) };
            let last = tokio::select! {
                _ = tokio::time::sleep(wait) => *stopped.borrow(),
                _ = stopped.changed() => true,
            };
            budget.refill(&limits);
            // The file work (and the splitting) off the async threads, in one hop per poll.
            let polled = tokio::task::spawn_blocking(move || {
                let mut lines = Vec::new();
                let mut behind = false;
                for f in &mut follows {
                    behind |= f.poll(&mut lines, &mut budget, &mut dropped, &limits, last);
                }
                (follows, budget, dropped, lines, behind)
            })
            .await;
            let lines;
            (follows, budget, dropped, lines, hurry) = match polled {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(sandbox = %id, "log tailer: {e}");
                    return Ok(());
                }
            };
            let quiet = lines.is_empty() && follows.iter().all(|f| f.consumed == f.stored);
            idle = if quiet { (idle + 1).min(IDLE_STEPS) } else { 0 };
            if !quiet {
                let offsets: Vec<(&str, u64)> =
                    follows.iter().map(|f| (f.name, f.consumed)).collect();
                self.append(id, lines, &offsets).await?;
                // Stored: the next poll may punch it out of the file.
                for f in &mut follows {
                    f.stored = f.consumed;
                }
            }
            if dropped.any() && (last || reported.elapsed() >= DROP_REPORT) {
                self.event(id, dropped.describe(&limits)).await;
                dropped = Dropped::default();
                reported = Instant::now();
            }
            if last {
                return Ok(());
            }
        }
    }
}
