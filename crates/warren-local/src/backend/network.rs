//! The local backend's sandbox networks over time: the firewall table at start, the warm
//! leases made ahead of creates (with the default policy's rules already in place), and
//! egress policies changed on running sandboxes.
use super::{step, LocalBackend, LocalError};
use crate::firewall::EgressPolicy;

impl LocalBackend {
    /// At start: makes the firewall's table, drops the rules of leases no sandbox holds (a
    /// pooled lease must not keep a departed sandbox's policy), then adopts or releases
    /// leftover leases.
    pub async fn setup_network(&self, used: &[u32]) -> Result<(), LocalError> {
        // Rules prepared on warm leases may be gone (a flushed ruleset): a create applies its own.
        self.allow_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.firewall
            .setup()
            .await
            .map_err(|e| LocalError::Setup(e.to_string()))?;
        for i in self.firewall.lease_chains().await {
            if !used.contains(&i) {
                if let Err(e) = self.firewall.remove(&self.net.lease(i)).await {
                    tracing::warn!("removing stale rules of lease {i}: {e}");
                }
            }
        }
        self.pool.sweep(used).await;
        Ok(())
    }

    pub(super) fn take_allow_ready(&self, index: u32) -> bool {
        self.allow_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&index)
    }

    /// Makes a reserved warm lease with the default policy's rules in place, and only then
    /// offers it: a create claiming it must never race the rules being written. A lease made
    /// while the server stops is released again.
    pub async fn fill_warm_lease(&self, index: u32) {
        let lease = self.net.lease(index);
        let made = self.pool.make(index).await;
        if made {
            match self.firewall.apply(&lease, &EgressPolicy::Allow).await {
                Ok(()) => {
                    self.allow_ready
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(index);
                }
                Err(e) => tracing::warn!("warm lease {index}: firewall rules: {e}"),
            }
        }
        if !self.pool.offer(index, made) {
            self.take_allow_ready(index);
            if let Err(e) = self.firewall.remove(&lease).await {
                tracing::warn!("removing the rules of warm lease {index}: {e}");
            }
            lease.release().await;
            self.pool.abandon(index);
        }
    }

    /// Releases the warm leases and their rules (on a graceful stop).
    pub async fn drain_warm(&self) {
        for i in self.pool.drain().await {
            self.take_allow_ready(i);
            if let Err(e) = self.firewall.remove(&self.net.lease(i)).await {
                tracing::warn!("removing the rules of warm lease {i}: {e}");
            }
        }
    }

    /// Replaces the egress policy of the sandbox on lease `index`.
    pub async fn set_egress(&self, index: u32, policy: &EgressPolicy) -> Result<(), LocalError> {
        self.firewall
            .apply(&self.net.lease(index), policy)
            .await
            .map_err(|e| step("network")(e.to_string()))
    }
}
