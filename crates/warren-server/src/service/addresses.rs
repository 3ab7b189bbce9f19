//! Sandbox addresses, allocated in one place: a sandbox's address slot (its network lease
//! index) is chosen here, under one lock, against the slots the store says are held, and the
//! backend's warm leases are reserved the same way. Nothing else picks a slot.
use warren_api::SandboxState;
use warren_backend::EgressPolicy;
use warren_store::SandboxRecord;

use super::{validate, Service};
use crate::error::ApiError;

impl Service {
    /// Gives the sandbox a network lease index (a warm one when there is one) and records it
    /// `provisioning`.
    pub(super) async fn claim_lease(&self, rec: &mut SandboxRecord) -> Result<(), ApiError> {
        let _alloc = self.inner.net_alloc.lock().await;
        rec.net_index = Some(self.free_index().await?);
        self.sandboxes()
            .set_state(rec, SandboxState::Provisioning)
            .await
    }

    /// The indexes of this host's range that this server's sandboxes hold.
    async fn used_indexes(&self) -> Result<Vec<u32>, ApiError> {
        Ok(self
            .inner
            .store
            .used_net_indexes(self.server_name())
            .await?)
    }

    /// An index of this host's range no sandbox of this server's holds; the caller holds
    /// `net_alloc` until the sandbox holding it is recorded.
    async fn free_index(&self) -> Result<u32, ApiError> {
        let used = self.used_indexes().await?;
        self.inner
            .backend
            .claim_net_index(&used)
            .ok_or_else(|| ApiError::Unavailable("the sandbox address range is exhausted".into()))
    }

    /// Makes another server's sandbox (paused there) this server's, with a network lease of
    /// this host's: claimed and recorded under the allocation lock, so no other claim here
    /// takes the same index.
    pub(super) async fn adopt_lease(&self, rec: &mut SandboxRecord) -> Result<(), ApiError> {
        let _alloc = self.inner.net_alloc.lock().await;
        rec.net_index = Some(self.free_index().await?);
        rec.sandbox.server = self.server_name().to_owned();
        self.sandboxes().save(rec).await
    }

    /// Tops up the warm network leases in the background (one refill task at a time).
    pub fn refill_warm_leases(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let svc = self.clone();
        self.spawn_background(async move {
            loop {
                // A stopping server makes no more: its pool is drained and its shared rules
                // removed next, which a lease made after would bring back.
                if svc.is_shutting_down() {
                    break;
                }
                let index = {
                    let _alloc = svc.inner.net_alloc.lock().await;
                    match svc.inner.store.used_net_indexes(svc.server_name()).await {
                        Ok(used) => svc.inner.backend.reserve_warm_lease(&used),
                        Err(e) => {
                            tracing::warn!("warm leases: {e}");
                            None
                        }
                    }
                };
                let Some(index) = index else { break };
                svc.inner.backend.fill_warm_lease(index).await;
            }
            svc.inner.refilling.store(false, Ordering::Release);
        });
    }

    /// Waits (up to 5 s) for a refill of the warm leases under way to end: at a stop, before
    /// the pool is drained.
    pub async fn refills_done(&self) {
        use std::sync::atomic::Ordering;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.inner.refilling.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// At start: readies the firewall, puts every running sandbox's policy back in force
    /// (the kernel's ruleset may have been flushed meanwhile), adopts or releases leftover
    /// leases, then fills the pool.
    pub async fn prepare_network(&self) -> Result<(), ApiError> {
        {
            let _alloc = self.inner.net_alloc.lock().await;
            let used = self.used_indexes().await?;
            self.inner
                .backend
                .setup_network(&used)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        }
        for rec in self.own_sandboxes().await? {
            let (Some(index), true) = (rec.net_index, rec.sandbox.state.holds_network()) else {
                continue;
            };
            let policy = validate::egress(&rec.sandbox.egress).unwrap_or(EgressPolicy::Deny);
            if let Err(e) = self.inner.backend.set_egress(index, &policy).await {
                tracing::warn!(sandbox = %rec.sandbox.id, "restoring its network policy: {e}");
            }
        }
        self.refill_warm_leases();
        Ok(())
    }

    /// The address of the sandbox holding slot `index`.
    pub(super) fn address_of(&self, index: u32) -> std::net::Ipv4Addr {
        self.inner.backend.net_ip(index)
    }
}
