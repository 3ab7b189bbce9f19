//! Sandbox logs: the main command's output and lifecycle events as one numbered sequence per
//! sandbox. A tailer per running sandbox reads the runtime's output files, stores complete
//! lines together with how far it has read (one transaction, so a restart neither loses nor
//! repeats a line) and broadcasts them to live followers.
use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Timelike, Utc};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{broadcast, watch};
use warren_api::{LogLine, LogStream, SandboxId};
use warren_store::{Store, StoreError};

/// How often tailers look for new output.
const POLL: Duration = Duration::from_millis(100);
/// A line longer than this is cut into several: the log is for reading, not for blobs.
const MAX_LINE: usize = 16 * 1024;
/// Read at most this much per file per poll, so one chatty sandbox cannot hog the tailer.
const MAX_READ: usize = 1024 * 1024;

struct Tailer {
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

/// Numbering, storage, live fan-out and tailers of every sandbox's log.
#[derive(Clone)]
pub struct LogHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    runtime: tokio::runtime::Handle,
    store: Arc<dyn Store>,
    // Last seq handed out per sandbox (None until read from the store); appends hold it.
    seqs: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<u64>>>>>,
    channels: Mutex<HashMap<String, broadcast::Sender<LogLine>>>,
    tailers: Mutex<HashMap<String, Tailer>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogHub {
    /// A hub over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        LogHub {
            inner: Arc::new(HubInner {
                runtime: tokio::runtime::Handle::current(),
                store,
                seqs: Mutex::default(),
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

    /// Numbers, stores and broadcasts `lines`, recording `offsets` in the same transaction.
    pub async fn append(
        &self,
        id: &SandboxId,
        lines: Vec<(LogStream, String)>,
        offsets: &[(&str, u64)],
    ) -> Result<(), StoreError> {
        let seq = lock(&self.inner.seqs)
            .entry(id.to_string())
            .or_default()
            .clone();
        let mut last = seq.lock().await;
        let mut next = match *last {
            Some(n) => n,
            None => self.inner.store.last_log_seq(id).await?,
        };
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
        *last = Some(next);
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
        let mut tailers = lock(&self.inner.tailers);
        if tailers
            .get(id.as_str())
            .is_some_and(|t| !t.done.is_finished())
        {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let hub = self.clone();
        let sid = id.clone();
        // On the runtime the hub was made on (the main one): a tailer outlives any request.
        let done = self.inner.runtime.spawn(async move {
            if let Err(e) = hub.tail(&sid, files, stopped).await {
                tracing::warn!(sandbox = %sid, "log tailer: {e}");
            }
        });
        tailers.insert(id.to_string(), Tailer { stop, done });
    }

    /// Reads what is left of the output, then stops following it.
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
        lock(&self.inner.seqs).remove(id.as_str());
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
        let mut follows: Vec<Follow> = files
            .into_iter()
            .map(|(name, path)| Follow {
                stream: if name == "stdout" {
                    LogStream::Stdout
                } else {
                    LogStream::Stderr
                },
                name,
                path,
                consumed: stored.get(name).copied().unwrap_or(0),
                partial: Vec::new(),
            })
            .collect();
        loop {
            let last = tokio::select! {
                _ = tokio::time::sleep(POLL) => *stopped.borrow(),
                _ = stopped.changed() => true,
            };
            let mut lines = Vec::new();
            for f in &mut follows {
                f.read(&mut lines, last).await;
            }
            if !lines.is_empty() {
                let offsets: Vec<(&str, u64)> =
                    follows.iter().map(|f| (f.name, f.consumed)).collect();
                self.append(id, lines, &offsets).await?;
            }
            if last {
                return Ok(());
            }
        }
    }
}

/// One output file being followed.
struct Follow {
    name: &'static str,
    stream: LogStream,
    path: PathBuf,
    // Bytes already turned into stored lines; `partial` follows them.
    consumed: u64,
    partial: Vec<u8>,
}

impl Follow {
    async fn read(&mut self, lines: &mut Vec<(LogStream, String)>, last: bool) {
        let Ok(mut file) = tokio::fs::File::open(&self.path).await else {
            return; // not written yet
        };
        let from = self.consumed + self.partial.len() as u64;
        if file.seek(SeekFrom::Start(from)).await.is_err() {
            return;
        }
        let mut buf = Vec::new();
        if file
            .take(MAX_READ as u64)
            .read_to_end(&mut buf)
            .await
            .is_err()
        {
            return;
        }
        self.partial.extend_from_slice(&buf);
        let mut start = 0;
        while let Some(nl) = self.partial[start..].iter().position(|&b| b == b'\n') {
            self.emit(lines, start, start + nl, start + nl + 1);
            start += nl + 1;
        }
        while self.partial.len() - start >= MAX_LINE {
            self.emit(lines, start, start + MAX_LINE, start + MAX_LINE);
            start += MAX_LINE;
        }
        if last && start < self.partial.len() {
            let end = self.partial.len();
            self.emit(lines, start, end, end);
            start = end;
        }
        self.partial.drain(..start);
    }

    fn emit(
        &mut self,
        lines: &mut Vec<(LogStream, String)>,
        start: usize,
        end: usize,
        next: usize,
    ) {
        let text = String::from_utf8_lossy(&self.partial[start..end]);
        lines.push((self.stream, text.trim_end_matches('\r').to_owned()));
        self.consumed += (next - start) as u64;
    }
}
