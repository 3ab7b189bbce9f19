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
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};
use tokio::sync::{broadcast, watch};
use warren_api::{LogLine, LogStream, SandboxId};
use warren_store::{Store, StoreError};

/// How often tailers look for new output.
const POLL: Duration = Duration::from_millis(100);
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        loop {
            // Far behind, the writer is outrunning the log: look again soon, so the file holds
            // little more than its cap on disk (a skip costs a stat, a punch and an offset).
            let wait = if hurry { POLL / 10 } else { POLL };
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
            if !lines.is_empty() || follows.iter().any(|f| f.consumed != f.stored) {
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

/// What the rate limits still allow (a token bucket per sandbox, both streams together).
#[derive(Clone, Copy)]
struct Budget {
    lines: f64,
    bytes: f64,
    at: Instant,
}

impl Budget {
    fn full(l: &LogLimits) -> Budget {
        Budget {
            lines: l.rate_lines as f64 * BURST_S,
            bytes: l.rate_bytes as f64 * BURST_S,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, l: &LogLimits) {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.lines = (self.lines + dt * l.rate_lines as f64).min(l.rate_lines as f64 * BURST_S);
        self.bytes = (self.bytes + dt * l.rate_bytes as f64).min(l.rate_bytes as f64 * BURST_S);
    }
}

/// Output dropped since the last report.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Dropped {
    /// Lines read but not stored (over the line rate).
    lines: u64,
    /// Bytes never read (skipped past a file's cap), with the cut lines around them.
    bytes: u64,
}

impl Dropped {
    fn any(&self) -> bool {
        self.lines > 0 || self.bytes > 0
    }

    fn describe(&self, l: &LogLimits) -> String {
        format!(
            "log: dropped {} lines and {} unread bytes of output, over the log's rate limit \
             ({} lines/s, {} bytes/s per sandbox)",
            self.lines, self.bytes, l.rate_lines, l.rate_bytes
        )
    }
}

/// One output file being followed.
struct Follow {
    name: &'static str,
    stream: LogStream,
    path: PathBuf,
    // Bytes of the file dealt with (stored as lines, dropped or skipped); `partial` follows.
    consumed: u64,
    // `consumed` as last stored with the lines: what a restart resumes from.
    stored: u64,
    // The file's blocks below this are holes.
    punched: u64,
    partial: Vec<u8>,
    // After a skip: drop up to the next newline (the rest of a line cut by the skip).
    resync: bool,
    punch_failed: bool,
}

impl Follow {
    /// One poll (blocking I/O): punch what is stored, skip what is past the cap, read what
    /// the budget allows and split it into lines. Whether it is far behind: it skipped, or
    /// more than half the cap is left unread.
    fn poll(
        &mut self,
        lines: &mut Vec<(LogStream, String)>,
        budget: &mut Budget,
        dropped: &mut Dropped,
        limits: &LogLimits,
        last: bool,
    ) -> bool {
        let Ok(file) = File::options().read(true).write(true).open(&self.path) else {
            return false; // not written yet
        };
        self.punch(&file);
        let Ok(size) = file.metadata().map(|m| m.len()) else {
            return false;
        };
        let mut pos = self.consumed + self.partial.len() as u64;
        if size < pos {
            // Shorter than what was read: a new file. Start over.
            tracing::warn!(file = %self.path.display(), "log file shrank; reading it from the start");
            self.consumed = 0;
            // Nothing of the new file is stored yet: nothing of it may be punched.
            self.stored = 0;
            self.punched = 0;
            self.partial.clear();
            self.resync = false;
            pos = 0;
        }
        let skipped = size - pos > limits.file_bytes;
        if skipped {
            // Too far behind: skip the oldest unread output, keeping half the cap.
            let to = size - limits.file_bytes / 2;
            dropped.bytes += to - self.consumed;
            self.consumed = to;
            self.partial.clear();
            self.resync = true;
            pos = to;
        }
        let want = (size - pos).min(MAX_READ).min(budget.bytes.max(0.0) as u64);
        if want > 0 {
            let have = self.partial.len();
            self.partial.resize(have + want as usize, 0);
            match file.read_exact_at(&mut self.partial[have..], pos) {
                Ok(()) => budget.bytes -= want as f64,
                Err(e) => {
                    tracing::warn!(file = %self.path.display(), "reading: {e}");
                    self.partial.truncate(have);
                    return false;
                }
            }
        }
        let at_end = pos + want == size;
        let behind = skipped || size - (pos + want) > limits.file_bytes / 2;
        let mut start = 0;
        while let Some(nl) = self.partial[start..].iter().position(|&b| b == b'\n') {
            self.emit(lines, budget, dropped, start, start + nl, start + nl + 1);
            start += nl + 1;
        }
        while self.partial.len() - start >= MAX_LINE {
            self.emit(
                lines,
                budget,
                dropped,
                start,
                start + MAX_LINE,
                start + MAX_LINE,
            );
            start += MAX_LINE;
        }
        if last && at_end && start < self.partial.len() {
            let end = self.partial.len();
            self.emit(lines, budget, dropped, start, end, end);
            self.resync = false;
            start = end;
        }
        self.partial.drain(..start);
        behind
    }

    /// Deals with `partial[start..end]` (`..next` with its newline): a line to store, or
    /// dropped.
    fn emit(
        &mut self,
        lines: &mut Vec<(LogStream, String)>,
        budget: &mut Budget,
        dropped: &mut Dropped,
        start: usize,
        end: usize,
        next: usize,
    ) {
        self.consumed += (next - start) as u64;
        if self.resync {
            dropped.bytes += (next - start) as u64;
            self.resync = next == end; // a newline ends the cut line
            return;
        }
        if budget.lines < 1.0 {
            dropped.lines += 1;
            return;
        }
        budget.lines -= 1.0;
        let text = String::from_utf8_lossy(&self.partial[start..end]);
        lines.push((self.stream, text.trim_end_matches('\r').to_owned()));
    }

    /// Gives back the disk blocks of output already stored. The runtime appends (O_APPEND)
    /// beyond them, so the offsets stay valid and no write races the punch.
    fn punch(&mut self, file: &File) {
        use nix::fcntl::{fallocate, FallocateFlags};
        use std::os::fd::AsRawFd;
        let upto = self.stored / BLOCK * BLOCK;
        if upto <= self.punched || self.punch_failed {
            return;
        }
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        let (off, len) = (self.punched as i64, (upto - self.punched) as i64);
        match fallocate(file.as_raw_fd(), mode, off, len) {
            Ok(()) => self.punched = upto,
            Err(e) => {
                // Once per tailer: the filesystem cannot (tmpfs before 3.5, some FUSE).
                tracing::warn!(
                    file = %self.path.display(),
                    "cannot free the log file's read part ({e}): it grows with the output"
                );
                self.punch_failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    fn follow(path: PathBuf) -> Follow {
        Follow {
            name: "stdout",
            stream: LogStream::Stdout,
            path,
            consumed: 0,
            stored: 0,
            punched: 0,
            partial: Vec::new(),
            resync: false,
            punch_failed: false,
        }
    }

    fn limits() -> LogLimits {
        LogLimits {
            keep_lines: 1000,
            keep_bytes: 1 << 20,
            rate_lines: 100,
            rate_bytes: 10_000,
            file_bytes: 64 * 1024,
        }
    }

    #[test]
    fn lines_over_the_rate_are_dropped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout.log");
        let mut w = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        for i in 0..2000 {
            writeln!(w, "l{i}").expect("write");
        }
        let l = limits();
        let (mut f, mut budget, mut dropped) = (follow(path), Budget::full(&l), Dropped::default());
        let mut lines = Vec::new();
        f.poll(&mut lines, &mut budget, &mut dropped, &l, false);
        // 10 s of 100 lines/s stored, the rest of what 10 s of 10 kB/s read dropped.
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999].1, "l999");
        // Every complete line read is stored or counted as dropped.
        let dealt: u64 = (0..1000 + dropped.lines)
            .map(|i| format!("l{i}\n").len() as u64)
            .sum();
        assert_eq!(f.consumed, dealt);
        assert!(dropped.lines > 0 && f.consumed <= 100_000, "{dropped:?}");
        assert_eq!(dropped.bytes, 0);
    }

    #[test]
    fn a_file_far_behind_is_skipped_and_punched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout.log");
        let mut w = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        let line = [b'x'; 99];
        for _ in 0..10_000 {
            w.write_all(&line).expect("write");
            w.write_all(b"\n").expect("write");
        }
        let l = limits();
        let (mut f, mut budget, mut dropped) =
            (follow(path.clone()), Budget::full(&l), Dropped::default());
        let mut lines = Vec::new();
        f.poll(&mut lines, &mut budget, &mut dropped, &l, false);
        // 1 MB written, 64 KiB cap: all but 32 KiB skipped, the cut line dropped too.
        assert!(dropped.bytes >= 1_000_000 - 32 * 1024, "{dropped:?}");
        assert!(
            lines.iter().all(|(_, t)| t.len() == 99),
            "a cut line was stored"
        );
        assert!(!lines.is_empty());
        f.stored = f.consumed;
        f.poll(&mut lines, &mut budget, &mut dropped, &l, false);
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(meta.len(), 1_000_000, "the file keeps its length");
        assert!(
            meta.blocks() * 512 <= 64 * 1024,
            "{} bytes on disk",
            meta.blocks() * 512
        );
        // Appends go on after the hole, and are read.
        writeln!(w, "after").expect("write");
        let mut more = Vec::new();
        let mut budget = Budget::full(&l);
        for _ in 0..100 {
            f.poll(&mut more, &mut budget, &mut dropped, &l, false);
            budget = Budget::full(&l);
        }
        assert_eq!(more.last().map(|l| l.1.as_str()), Some("after"));
    }
}
