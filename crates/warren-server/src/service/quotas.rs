//! Teams' quotas: what a team holds now, and the check every sandbox passes before it starts
//! to hold more (a create, a start, a resume, a fork, a warm pool's sandbox taken).
use tokio::sync::OwnedMutexGuard;
use warren_api::{Quotas, Sandbox, SandboxState, TeamUsage};

use crate::error::ApiError;

/// The team of sandboxes the server makes for itself (a warm pool's until one is taken, an
/// image build's steps): no key's, so no key sees them, and no team's quota counts them.
pub const NO_TEAM: &str = "";

/// Whether a sandbox in this state holds CPU and memory (or is about to).
fn runs(state: SandboxState) -> bool {
    !matches!(
        state,
        SandboxState::Stopped
            | SandboxState::Paused
            | SandboxState::Failed
            | SandboxState::Terminating
            | SandboxState::Deleted
    )
}

/// Whether a sandbox in this state keeps its disk.
fn keeps_disk(state: SandboxState) -> bool {
    !matches!(
        state,
        SandboxState::Failed | SandboxState::Terminating | SandboxState::Deleted
    )
}

/// Adds `s` to `usage` as its state counts.
fn count(usage: &mut TeamUsage, s: &Sandbox) {
    if runs(s.state) {
        usage.sandboxes += 1;
        usage.cpu += s.cpu;
        usage.memory_mb += s.memory_mb;
    }
    if keeps_disk(s.state) {
        usage.disk_mb += s.disk_mb;
    }
}

/// The first quota that `usage` plus `s` (about to run) would break, in words.
fn broken(
    team: &str,
    q: &Quotas,
    usage: &TeamUsage,
    s: &Sandbox,
    disk_too: bool,
) -> Option<String> {
    let over = |what: String| {
        Some(format!(
            "team {team:?} has reached its quota of {what}; stop or delete some of its \
             sandboxes, or ask the operator for more"
        ))
    };
    if let Some(max) = q.sandboxes.filter(|&m| usage.sandboxes + 1 > m) {
        return over(format!(
            "{max} sandboxes running at once ({} running)",
            usage.sandboxes
        ));
    }
    if let Some(max) = q.cpu.filter(|&m| usage.cpu + s.cpu > m + 1e-9) {
        return over(format!(
            "{max} CPUs ({} in use, {} asked)",
            usage.cpu, s.cpu
        ));
    }
    if let Some(max) = q.memory_mb.filter(|&m| usage.memory_mb + s.memory_mb > m) {
        return over(format!(
            "{max} MiB of memory ({} MiB in use, {} MiB asked)",
            usage.memory_mb, s.memory_mb
        ));
    }
    if let Some(max) = q
        .disk_mb
        .filter(|&m| disk_too && usage.disk_mb + s.disk_mb > m)
    {
        return over(format!(
            "{max} MiB of disk ({} MiB kept, {} MiB asked)",
            usage.disk_mb, s.disk_mb
        ));
    }
    None
}

/// A team's quota check passed: its other checks, on this server and on any sharing the
/// database, wait until this is dropped (once the admitted change is recorded).
pub struct Admitted {
    _local: OwnedMutexGuard<()>,
    _shared: warren_store::TeamLock,
}

impl crate::service::Sandboxes<'_> {
    /// What `team`'s sandboxes hold now (warm pools' sandboxes are no team's yet), leaving
    /// out `except`.
    pub async fn usage(
        &self,
        team: &str,
        except: Option<&warren_api::SandboxId>,
    ) -> Result<TeamUsage, ApiError> {
        let mut usage = TeamUsage::default();
        for rec in self.inner.store.list_sandboxes().await? {
            let s = &rec.sandbox;
            if s.team == team && s.pool.is_none() && Some(&s.id) != except {
                count(&mut usage, s);
            }
        }
        Ok(usage)
    }

    /// Checks that `s` may start to run (and, when `new`, keep its disk) within its team's
    /// quotas: 429 naming the quota when not. The guard holds off the team's other checks
    /// until the caller has recorded the change, so two creates at once cannot both take
    /// the last place.
    pub(super) async fn admit(&self, s: &Sandbox, new: bool) -> Result<Option<Admitted>, ApiError> {
        // A warm pool's sandboxes count once a team takes one.
        if s.pool.is_some() || s.team == NO_TEAM {
            return Ok(None);
        }
        let Some(team) = self.inner.store.get_team(&s.team).await? else {
            return Err(ApiError::Forbidden(format!(
                "team {:?} no longer exists",
                s.team
            )));
        };
        if team.quotas == Quotas::default() {
            return Ok(None);
        }
        let local = self
            .lock_named(&format!("quota:{}", s.team))
            .lock_owned()
            .await;
        // Then the servers sharing the database (PostgreSQL), one at a time.
        let shared = self.inner.store.lock_team(&s.team).await?;
        let usage = self.usage(&s.team, Some(&s.id)).await?;
        match broken(&s.team, &team.quotas, &usage, s, new) {
            Some(why) => Err(ApiError::QuotaExceeded(why)),
            None => Ok(Some(Admitted {
                _local: local,
                _shared: shared,
            })),
        }
    }
}
