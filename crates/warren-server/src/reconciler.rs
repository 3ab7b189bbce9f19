//! The reconciler: compares what the store says with what the host has, at start (so a
//! restarted server picks up the sandboxes that outlived it) and every few seconds (so a
//! sandbox that died, e.g. OOM-killed under gVisor, is reported failed and released), and
//! deletes sandboxes whose `expires_at` has passed (stored, so expiry survives restarts).
use std::time::Duration;

use warren_api::SandboxState;

use crate::service::Service;

/// How often the periodic pass runs.
pub const INTERVAL: Duration = Duration::from_secs(3);

/// One pass over every sandbox of this server's not at rest.
pub async fn pass(service: &Service) {
    let records = match service.own_sandboxes().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("reconciler: listing sandboxes: {e}");
            return;
        }
    };
    let now = chrono::Utc::now();
    for rec in records {
        // The listing already says when each sandbox expires: only those due are looked at again.
        if rec.sandbox.expires_at.is_some_and(|t| t <= now) {
            match service.sandboxes().reap_if_expired(&rec.sandbox.id).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(sandbox = %rec.sandbox.id, "reconciler: expiry: {e}"),
            }
        }
        if matches!(
            rec.sandbox.state,
            SandboxState::Stopped
                | SandboxState::Failed
                | SandboxState::Deleted
                | SandboxState::Paused
        ) {
            continue;
        }
        if let Err(e) = service.sandboxes().reconcile(&rec.sandbox.id).await {
            tracing::warn!(sandbox = %rec.sandbox.id, "reconciler: {e}");
        }
    }
    service.pools().fill_pools();
}

/// How often command history past its retention is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often the domain names in egress policies are resolved again (their records may move).
const NAMES_EVERY: Duration = Duration::from_secs(30);

/// Resolves the domain names in egress policies again every [`NAMES_EVERY`], forever: a task
/// of its own, so slow name servers never hold up the reconciler (firewall checks, expiry).
pub async fn keep_names_fresh(service: Service) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + NAMES_EVERY, NAMES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if service.is_shutting_down() {
            return;
        }
        service.refresh_egress_names().await;
    }
}

/// Notes this server alive (and takes over servers that stopped) every [`INTERVAL`], until
/// the server stops.
pub async fn keep_alive(service: Service) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if service.is_shutting_down() {
            return;
        }
        service.heartbeat().await;
    }
}

/// Runs [`pass`] forever, and prunes old command history now and then.
pub async fn run(service: Service) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        if service.is_shutting_down() {
            return;
        }
        service.check_firewall().await;
        pass(&service).await;
        let every = PRUNE_EVERY.min(service.processes().history_retention());
        if last_prune.is_none_or(|t| t.elapsed() >= every) {
            last_prune = Some(std::time::Instant::now());
            match service.processes().prune_history().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("pruned {n} command history entries past retention"),
                Err(e) => tracing::warn!("pruning history: {e}"),
            }
            let before = chrono::Utc::now() - crate::idempotency::KEY_LIFE;
            match service.store().prune_request_keys(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("forgot {n} idempotency keys older than a day"),
                Err(e) => tracing::warn!("pruning idempotency keys: {e}"),
            }
            match service.operations().prune().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("pruned {n} ended operations past retention"),
                Err(e) => tracing::warn!("pruning operations: {e}"),
            }
            let keep = chrono::Duration::from_std(service.audit_retention())
                .unwrap_or(chrono::Duration::days(90));
            match service.store().prune_audit(chrono::Utc::now() - keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("pruned {n} audit log entries past retention"),
                Err(e) => tracing::warn!("pruning the audit log: {e}"),
            }
        }
    }
}
