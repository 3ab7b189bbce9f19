//! What a running sandbox uses, read from its cgroup: now (`GET /v1/sandboxes/{id}/metrics`),
//! and as a series sampled every few seconds on a task of its own (E2B's metrics, a series
//! since the start).
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use warren_api::{SandboxId, SandboxMetrics, SandboxState};

use crate::error::ApiError;

/// The window CPU use is measured over: long enough to see a busy core, short enough for a
/// request to wait on.
const CPU_WINDOW: Duration = Duration::from_millis(100);

const MIB: u64 = 1024 * 1024;

/// How often running sandboxes are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(3);

/// How long samples are kept.
const KEEP_FOR: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Samples kept per sandbox at most: an hour at [`SAMPLE_EVERY`].
const KEEP: usize = 1200;

/// How often a sample walks the sandbox's layer for its disk use (the walk costs more than
/// the cgroup reads).
const DISK_EVERY: Duration = Duration::from_secs(30);

/// One sandbox's recent samples.
#[derive(Default)]
pub(crate) struct Series {
    /// The last CPU reading: when, and the cgroup's total then.
    cpu: Option<(Instant, u64)>,
    /// The last disk walk: when, and what it found.
    disk: Option<(Instant, u64)>,
    points: VecDeque<SandboxMetrics>,
}

/// A sample of `sandbox` at `usage`, its CPU use from `cpu`: nanoseconds used over a span.
fn point(
    sandbox: &warren_api::Sandbox,
    usage: warren_backend::Usage,
    cpu: (u64, Duration),
    disk_used: u64,
) -> SandboxMetrics {
    let (used_ns, span) = cpu;
    let pct =
        (100.0 * used_ns as f64 / (span.as_nanos().max(1) as f64 * sandbox.cpu)).clamp(0.0, 100.0);
    SandboxMetrics {
        timestamp: Utc::now(),
        cpu_count: sandbox.cpu,
        cpu_used_pct: (pct * 100.0).round() / 100.0,
        mem_used: usage.memory_bytes,
        mem_cache: usage.cache_bytes,
        mem_total: sandbox.memory_mb * MIB,
        disk_used,
        disk_total: sandbox.disk_mb * MIB,
    }
}

impl crate::service::Metrics<'_> {
    /// The sandbox's CPU, memory and disk use now. 409 unless it is running.
    pub async fn now(&self, id: &SandboxId) -> Result<SandboxMetrics, ApiError> {
        let sandbox = self.sandboxes().get(id).await?;
        if sandbox.state != SandboxState::Running {
            return Err(ApiError::Conflict(format!(
                "sandbox {id} is {}, not running",
                sandbox.state
            )));
        }
        let backend = &self.inner.backend;
        if let Some(why) = backend.usage_unmeasured() {
            return Err(ApiError::Conflict(why.into()));
        }
        let gone = || ApiError::Conflict(format!("sandbox {id} has no cgroup (not running)"));
        let first = backend.usage(id.as_str()).ok_or_else(gone)?;
        let started = Instant::now();
        tokio::time::sleep(CPU_WINDOW).await;
        let now = backend.usage(id.as_str()).ok_or_else(gone)?;
        let cpu_ns = (now.cpu_ns.saturating_sub(first.cpu_ns), started.elapsed());
        let id = id.as_str().to_owned();
        let svc = self.0.clone();
        let disk_used = tokio::task::spawn_blocking(move || svc.inner.backend.disk_used(&id))
            .await
            .map_err(|e| ApiError::Internal(format!("measuring disk use: {e}")))?;
        Ok(point(&sandbox, now, cpu_ns, disk_used))
    }

    /// Samples every running sandbox every few seconds, on a task of its own: a slow disk walk
    /// delays only the next sample, never the reconciler.
    pub async fn sample_forever(&self) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample_running().await;
        }
    }

    /// Takes one sample of every running sandbox, and drops samples older than an hour and
    /// those of sandboxes that are gone.
    pub async fn sample_running(&self) {
        let Ok(records) = self.own_sandboxes().await else {
            return;
        };
        let live: std::collections::HashSet<String> = records
            .iter()
            .filter(|r| r.sandbox.state != SandboxState::Deleted)
            .map(|r| r.sandbox.id.to_string())
            .collect();
        {
            let cutoff = Utc::now() - KEEP_FOR;
            let mut all = self.inner.samples.lock().unwrap_or_else(|p| p.into_inner());
            all.retain(|id, _| live.contains(id));
            for series in all.values_mut() {
                while series.points.front().is_some_and(|p| p.timestamp < cutoff) {
                    series.points.pop_front();
                }
            }
        }
        for rec in records {
            let sandbox = rec.sandbox;
            if sandbox.state != SandboxState::Running {
                continue;
            }
            let id = sandbox.id.as_str().to_owned();
            let Some(now) = self.inner.backend.usage(&id) else {
                continue;
            };
            let at = Instant::now();
            let disk_due = self
                .series(&id, |s| s.disk)
                .is_none_or(|(when, _)| at.duration_since(when) >= DISK_EVERY);
            let disk = if disk_due {
                let svc = self.0.clone();
                let walk_id = id.clone();
                let bytes =
                    tokio::task::spawn_blocking(move || svc.inner.backend.disk_used(&walk_id))
                        .await
                        .unwrap_or(0);
                Some((at, bytes))
            } else {
                None
            };
            let mut all = self.inner.samples.lock().unwrap_or_else(|p| p.into_inner());
            let series = all.entry(id).or_default();
            if let Some(d) = disk {
                series.disk = Some(d);
            }
            let previous = series.cpu.replace((at, now.cpu_ns));
            // The first reading (or one after a restart, whose cgroup counts from zero again)
            // only sets the baseline.
            let Some((then, cpu_then)) = previous.filter(|(_, ns)| *ns <= now.cpu_ns) else {
                continue;
            };
            let cpu = (now.cpu_ns - cpu_then, at.duration_since(then));
            let disk_used = series.disk.map_or(0, |(_, b)| b);
            if series.points.len() == KEEP {
                series.points.pop_front();
            }
            series
                .points
                .push_back(point(&sandbox, now, cpu, disk_used));
        }
    }

    /// The samples taken between `start` and `end` (either open; whole seconds, both
    /// included), oldest first.
    pub fn metrics_series(
        &self,
        id: &SandboxId,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Vec<SandboxMetrics> {
        let all = self.inner.samples.lock().unwrap_or_else(|p| p.into_inner());
        all.get(id.as_str())
            .map(|s| {
                s.points
                    .iter()
                    .filter(|m| start.is_none_or(|t| m.timestamp.timestamp() >= t.timestamp()))
                    .filter(|m| end.is_none_or(|t| m.timestamp.timestamp() <= t.timestamp()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn series<T>(&self, id: &str, f: impl FnOnce(&Series) -> Option<T>) -> Option<T> {
        let all = self.inner.samples.lock().unwrap_or_else(|p| p.into_inner());
        all.get(id).and_then(f)
    }

    pub(super) fn forget_samples(&self, id: &SandboxId) {
        self.inner
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id.as_str());
    }
}
