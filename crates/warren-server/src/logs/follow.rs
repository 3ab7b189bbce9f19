//! Following one output file of a sandbox: what each poll reads, stores, drops, skips and
//! punches out (the host-file and rate bounds of [`super::LogLimits`]).
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use warren_api::LogStream;

use super::{LogLimits, BLOCK, BURST_S, MAX_LINE, MAX_READ};

/// What the rate limits still allow (a token bucket per sandbox, both streams together).
#[derive(Clone, Copy)]
pub(super) struct Budget {
    lines: f64,
    bytes: f64,
    at: Instant,
}

impl Budget {
    pub(super) fn full(l: &LogLimits) -> Budget {
        Budget {
            lines: l.rate_lines as f64 * BURST_S,
            bytes: l.rate_bytes as f64 * BURST_S,
            at: Instant::now(),
        }
    }

    /// Takes a line of `bytes` from the budget, if it has room.
    pub(super) fn take(&mut self, bytes: usize) -> bool {
        if self.lines < 1.0 || self.bytes < bytes as f64 {
            return false;
        }
        self.lines -= 1.0;
        self.bytes -= bytes as f64;
        true
    }

    pub(super) fn refill(&mut self, l: &LogLimits) {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.lines = (self.lines + dt * l.rate_lines as f64).min(l.rate_lines as f64 * BURST_S);
        self.bytes = (self.bytes + dt * l.rate_bytes as f64).min(l.rate_bytes as f64 * BURST_S);
    }
}

/// Output dropped since the last report.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Dropped {
    /// Lines read but not stored (over the line rate).
    lines: u64,
    /// Bytes never read (skipped past a file's cap), with the cut lines around them.
    bytes: u64,
}

impl Dropped {
    /// One line not stored.
    pub(super) fn drop_line(&mut self) {
        self.lines += 1;
    }

    pub(super) fn any(&self) -> bool {
        self.lines > 0 || self.bytes > 0
    }

    pub(super) fn describe(&self, l: &LogLimits) -> String {
        format!(
            "log: dropped {} lines and {} unread bytes of output, over the log's rate limit \
             ({} lines/s, {} bytes/s per sandbox)",
            self.lines, self.bytes, l.rate_lines, l.rate_bytes
        )
    }
}

/// One output file being followed.
pub(super) struct Follow {
    pub(super) name: &'static str,
    pub(super) stream: LogStream,
    pub(super) path: PathBuf,
    // Bytes of the file dealt with (stored as lines, dropped or skipped); `partial` follows.
    pub(super) consumed: u64,
    // `consumed` as last stored with the lines: what a restart resumes from.
    pub(super) stored: u64,
    // The file's blocks below this are holes.
    pub(super) punched: u64,
    pub(super) partial: Vec<u8>,
    // After a skip: drop up to the next newline (the rest of a line cut by the skip).
    pub(super) resync: bool,
    pub(super) punch_failed: bool,
}

impl Follow {
    /// One poll (blocking I/O): punch what is stored, skip what is past the cap, read what
    /// the budget allows and split it into lines. Whether it is far behind: it skipped, or
    /// more than half the cap is left unread.
    pub(super) fn poll(
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
    pub(super) fn emit(
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
    pub(super) fn punch(&mut self, file: &File) {
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
