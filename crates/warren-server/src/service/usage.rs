//! What a running sandbox uses, read from its cgroup (`GET /v1/sandboxes/{id}/metrics` and
//! E2B's metrics route).
use std::time::{Duration, Instant};

use chrono::Utc;
use warren_api::{SandboxId, SandboxMetrics, SandboxState};

use super::Service;
use crate::error::ApiError;

/// The window CPU use is measured over: long enough to see a busy core, short enough for a
/// request to wait on.
const CPU_WINDOW: Duration = Duration::from_millis(100);

const MIB: u64 = 1024 * 1024;

impl Service {
    /// The sandbox's CPU, memory and disk use now. 409 unless it is running.
    pub async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics, ApiError> {
        let sandbox = self.get(id).await?;
        if sandbox.state != SandboxState::Running {
            return Err(ApiError::Conflict(format!(
                "sandbox {id} is {}, not running",
                sandbox.state
            )));
        }
        let gone = || ApiError::Conflict(format!("sandbox {id} has no cgroup (not running)"));
        let backend = &self.inner.backend;
        let first = backend.usage(id.as_str()).ok_or_else(gone)?;
        let started = Instant::now();
        tokio::time::sleep(CPU_WINDOW).await;
        let now = backend.usage(id.as_str()).ok_or_else(gone)?;
        let elapsed_ns = started.elapsed().as_nanos() as f64;
        let used_ns = now.cpu_ns.saturating_sub(first.cpu_ns) as f64;
        let cpu_used_pct = (100.0 * used_ns / (elapsed_ns * sandbox.cpu)).clamp(0.0, 100.0);
        let id = id.as_str().to_owned();
        let svc = self.clone();
        let disk_used = tokio::task::spawn_blocking(move || svc.inner.backend.disk_used(&id))
            .await
            .map_err(|e| ApiError::Internal(format!("measuring disk use: {e}")))?;
        Ok(SandboxMetrics {
            timestamp: Utc::now(),
            cpu_count: sandbox.cpu,
            cpu_used_pct: (cpu_used_pct * 100.0).round() / 100.0,
            mem_used: now.memory_bytes,
            mem_cache: now.cache_bytes,
            mem_total: sandbox.memory_mb * MIB,
            disk_used,
            disk_total: sandbox.disk_mb * MIB,
        })
    }
}
