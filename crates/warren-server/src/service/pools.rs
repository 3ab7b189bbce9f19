//! Warm pools: sandboxes made ahead and kept running, each waiting (unlisted) for a create
//! that asks for exactly what it is; that create takes it at once and gets it as its own:
//! the metadata, lifetime, egress and publicity it asked for, a sandbox no one has used (its
//! id, agent token and traffic token were never shown to anyone). The pool is topped up in
//! the background after every take, and by the reconciler.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use warren_api::sandbox::DEFAULT_IMAGE;
use warren_api::{CreatePool, CreateSandbox, Pool, Sandbox, SandboxState};
use warren_store::SandboxRecord;

use super::lifecycle::{expiry, DEFAULT_TIMEOUT_S};
use crate::error::ApiError;

/// Sandboxes one pool may keep.
const MAX_SIZE: u32 = 64;

/// Whether a create asking for `req` (with `user` preferred) is what `pool`'s sandboxes are.
fn matches(
    pool: &CreatePool,
    req: &CreateSandbox,
    user: Option<&str>,
    rt: warren_api::Runtime,
) -> bool {
    let p = &pool.sandbox;
    let image = |i: &Option<String>| i.clone().unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
    req.snapshot.is_none()
        && req.volumes.is_empty()
        && req.wait != Some(false)
        && image(&req.image) == image(&p.image)
        && req.runtime.unwrap_or(rt) == p.runtime.unwrap_or(rt)
        && req.cpu == p.cpu
        && req.memory_mb == p.memory_mb
        && req.disk_mb == p.disk_mb
        && req.pids == p.pids
        && req.env == p.env
        && req.cmd == p.cmd
        && req.cwd == p.cwd
        && (req.user == p.user
            || (req.user.is_none() && user.is_some() && p.user.as_deref() == user))
}

impl crate::service::Pools<'_> {
    fn claims(&self, name: &str) -> u64 {
        self.inner
            .pool_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Makes a pool and starts filling it.
    pub async fn create_pool(&self, req: CreatePool) -> Result<Pool, ApiError> {
        super::volumes::valid_name(&req.name)?;
        if !(1..=MAX_SIZE).contains(&req.size) {
            return Err(ApiError::Invalid(format!(
                "size {}: from 1 to {MAX_SIZE}",
                req.size
            )));
        }
        let s = &req.sandbox;
        let theirs = [
            ("metadata", !s.metadata.is_empty()),
            ("timeout_s", s.timeout_s.is_some()),
            ("on_timeout", s.on_timeout.is_some()),
            ("auto_resume", s.auto_resume.is_some()),
            ("egress", s.egress.is_some()),
            ("public", s.public.is_some()),
            ("wait", s.wait.is_some()),
            ("volumes", !s.volumes.is_empty()),
            ("snapshot", s.snapshot.is_some()),
        ];
        if let Some((field, _)) = theirs.iter().find(|(_, set)| *set) {
            return Err(ApiError::Invalid(format!(
                "{field}: a pool's sandboxes take it from the create that takes them (volumes \
                 and snapshots are not pooled)"
            )));
        }
        super::validate::create(s, &self.inner.cfg)?;
        // The image must be here now (pulled first when the pool says so), not found missing
        // at the first fill.
        self.images()
            .image_for_create(
                s.image.as_deref(),
                s.pull.unwrap_or(warren_api::PullPolicy::Never),
                // Pools are the operator's: they take the images its team sees.
                warren_api::DEFAULT_TEAM,
            )
            .await?;
        let at = Utc::now();
        if !self.inner.store.insert_pool(&req, at).await? {
            return Err(ApiError::Conflict(format!("pool {} exists", req.name)));
        }
        self.fill_pools();
        Ok(Pool {
            name: req.name,
            size: req.size,
            sandbox: req.sandbox,
            created_at: at,
            ready: 0,
            claimed: 0,
        })
    }

    /// Every pool, with how many sandboxes are ready in each.
    pub async fn list(&self) -> Result<Vec<Pool>, ApiError> {
        let sandboxes = self.inner.store.list_sandboxes().await?;
        Ok(self
            .inner
            .store
            .list_pools()
            .await?
            .into_iter()
            .map(|(p, at)| {
                let ready = sandboxes
                    .iter()
                    .filter(|r| {
                        r.sandbox.pool.as_deref() == Some(p.name.as_str())
                            && r.sandbox.state == SandboxState::Running
                    })
                    .count();
                Pool {
                    ready: u32::try_from(ready).unwrap_or(u32::MAX),
                    claimed: self.claims(&p.name),
                    name: p.name,
                    size: p.size,
                    sandbox: p.sandbox,
                    created_at: at,
                }
            })
            .collect())
    }

    /// Removes a pool and the sandboxes waiting in it.
    pub async fn delete_pool(&self, name: &str) -> Result<(), ApiError> {
        if !self.inner.store.delete_pool(name).await? {
            return Err(ApiError::NotFound(format!(
                "pool {} not found",
                warren_agent::error::shown_text(name)
            )));
        }
        let _fill = self
            .lock_named(&format!("pool-fill:{name}"))
            .lock_owned()
            .await;
        for rec in self.waiting_in(name).await? {
            self.sandboxes().delete(&rec.sandbox.id).await?;
        }
        Ok(())
    }

    async fn waiting_in(&self, name: &str) -> Result<Vec<SandboxRecord>, ApiError> {
        // Each server keeps its own pools' sandboxes, on its host.
        let mut all: Vec<SandboxRecord> = self
            .own_sandboxes()
            .await?
            .into_iter()
            .filter(|r| r.sandbox.pool.as_deref() == Some(name))
            .filter(|r| r.sandbox.state != SandboxState::Deleted)
            .collect();
        all.sort_by_key(|r| r.sandbox.created_at);
        Ok(all)
    }

    /// A create that a pool's sandboxes match takes one of them, ready; `None` when none
    /// matches or none is ready.
    pub(super) async fn claim_from_pool(
        &self,
        req: &CreateSandbox,
        user: Option<&str>,
        team: &str,
    ) -> Result<Option<Sandbox>, ApiError> {
        let rt = self.inner.cfg.default_runtime;
        let pools = self.inner.store.list_pools().await?;
        let Some((pool, _)) = pools.iter().find(|(p, _)| matches(p, req, user, rt)) else {
            return Ok(None);
        };
        if let Some(t) = req.timeout_s {
            super::validate::timeout_s(t, "timeout_s")?;
        }
        let egress = req
            .egress
            .as_ref()
            .map(super::validate::egress)
            .transpose()?;
        if let Some(h) = &req.request_host {
            super::validate::request_host(h)?;
        }
        let taken = {
            let claim = self.lock_named(&format!("pool:{}", pool.name));
            let _claim = claim.lock().await;
            let mut taken = None;
            for rec in self.waiting_in(&pool.name).await? {
                let lock = self.lock_for(&rec.sandbox.id);
                let _guard = lock.lock().await;
                let mut rec = self.record(&rec.sandbox.id).await?;
                if rec.sandbox.state != SandboxState::Running || rec.sandbox.pool.is_none() {
                    continue;
                }
                rec.sandbox.pool = None;
                rec.sandbox.team = team.to_owned();
                // Its traffic token is the taker's alone from now.
                rec.sandbox.traffic_token = Some(super::provision::token());
                let admitted = self.sandboxes().admit(&rec.sandbox, true).await?;
                rec.sandbox.created_at = Utc::now();
                rec.sandbox.metadata = req.metadata.clone();
                rec.sandbox.expires_at = expiry(req.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S));
                rec.sandbox.on_timeout = req.on_timeout.unwrap_or_default();
                rec.sandbox.auto_resume = req.auto_resume.unwrap_or(false);
                rec.sandbox.public = req.public.unwrap_or(false);
                rec.sandbox.request_host = req.request_host.clone();
                self.sandboxes().save(&rec).await?;
                drop(admitted);
                self.journal(super::Journal::Event(
                    rec.sandbox.id.clone(),
                    format!("taken from warm pool {}", pool.name),
                ));
                taken = Some(rec.sandbox);
                break;
            }
            taken
        };
        self.fill_pools();
        let Some(sandbox) = taken else {
            return Ok(None);
        };
        self.inner
            .pool_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(pool.name.clone())
            .or_insert_with(|| std::sync::Arc::new(AtomicU64::new(0)))
            .fetch_add(1, Ordering::Relaxed);
        // Made with the default policy; another one is put in force now.
        match (egress, &req.egress) {
            (Some(policy), Some(e)) if policy != warren_backend::EgressPolicy::Allow => {
                Ok(Some(self.set_network(&sandbox.id, e.clone()).await?))
            }
            _ => Ok(Some(sandbox)),
        }
    }

    /// Tops every pool up, in the background (one filler per pool at a time).
    pub fn fill_pools(&self) {
        let svc = self.0.clone();
        self.spawn_background(async move {
            let pools = match svc.inner.store.list_pools().await {
                Ok(p) => p,
                Err(e) => return tracing::warn!("warm pools: {e}"),
            };
            for (pool, _) in pools {
                let svc = svc.clone();
                tokio::spawn(async move { svc.pools().fill_pool(pool).await });
            }
        });
    }

    async fn fill_pool(&self, pool: CreatePool) {
        let Ok(_filling) = self
            .lock_named(&format!("pool-fill:{}", pool.name))
            .try_lock_owned()
        else {
            return; // another filler is at it
        };
        let mut failures = 0;
        loop {
            let waiting = match self.waiting_in(&pool.name).await {
                Ok(w) => w,
                Err(e) => return tracing::warn!(pool = pool.name, "warm pool: {e}"),
            };
            // A pool sandbox that failed is no use to anyone.
            for rec in waiting
                .iter()
                .filter(|r| r.sandbox.state == SandboxState::Failed)
            {
                if let Err(e) = self.sandboxes().delete(&rec.sandbox.id).await {
                    tracing::warn!(pool = pool.name, "removing a failed pool sandbox: {e}");
                }
            }
            let live = waiting
                .iter()
                .filter(|r| r.sandbox.state != SandboxState::Failed)
                .count();
            let still_there = self
                .inner
                .store
                .list_pools()
                .await
                .is_ok_and(|p| p.iter().any(|(x, _)| x.name == pool.name));
            if live >= pool.size as usize || !still_there || self.is_shutting_down() {
                return;
            }
            let mut spec = pool.sandbox.clone();
            spec.timeout_s = Some(0); // it waits as long as it must
            match self
                .create_with(
                    spec,
                    None,
                    super::quotas::NO_TEAM,
                    Some(pool.name.clone()),
                    None,
                )
                .await
            {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(pool = pool.name, "filling the warm pool: {e}");
                    if failures >= 3 {
                        return; // the reconciler tries again later
                    }
                    tokio::time::sleep(Duration::from_secs(failures)).await;
                }
            }
        }
    }
}
