//! A small pool of network leases made ahead of time, so creating a sandbox does not wait for
//! its namespace and veth (two `ip` processes, several milliseconds). Pool leases are the
//! server's, not any sandbox's: a sandbox's own lease is still released with it.
use std::collections::HashSet;
use std::sync::Mutex;

use crate::net::NetPlan;

#[derive(Default)]
struct PoolState {
    ready: Vec<u32>,
    // Reserved for a lease being made, so no one else takes the index meanwhile.
    pending: HashSet<u32>,
    // Drained (the server is stopping): nothing more is made or offered.
    closed: bool,
}

/// Warm leases of one server.
pub struct NetPool {
    plan: NetPlan,
    target: usize,
    state: Mutex<PoolState>,
}

impl NetPool {
    /// A pool keeping `target` leases ready.
    pub fn new(plan: NetPlan, target: usize) -> Self {
        NetPool {
            plan,
            target,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn taken(&self, used: &[u32], st: &PoolState) -> Vec<u32> {
        let mut v = used.to_vec();
        v.extend(st.ready.iter().copied());
        v.extend(st.pending.iter().copied());
        v
    }

    /// An index for a new sandbox, with whether its lease is already made. `used` are the
    /// indexes sandboxes hold; the caller serialises calls.
    pub fn claim(&self, used: &[u32]) -> Option<(u32, bool)> {
        let mut st = self.state();
        while let Some(i) = st.ready.pop() {
            if self.plan.lease(i).exists() {
                return Some((i, true));
            }
        }
        let taken = self.taken(used, &st);
        self.plan.free_index(&taken).map(|i| (i, false))
    }

    /// Reserves an index to make a warm lease for, if the pool is short of its target.
    pub fn reserve(&self, used: &[u32]) -> Option<u32> {
        let mut st = self.state();
        if st.closed || st.ready.len() + st.pending.len() >= self.target {
            return None;
        }
        let taken = self.taken(used, &st);
        let i = self.plan.free_index(&taken)?;
        st.pending.insert(i);
        Some(i)
    }

    /// Makes the lease of a reserved index (still reserved, not yet in the pool); whether it
    /// was made.
    pub async fn make(&self, index: u32) -> bool {
        match self.plan.lease(index).create().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("warm network lease {index}: {e}");
                false
            }
        }
    }

    /// Ends the reservation of `index`: into the pool when `ready`, else given up. Refused
    /// (false, the index still reserved) once the pool is drained: the caller then releases
    /// what it made and calls [`abandon`](Self::abandon).
    pub fn offer(&self, index: u32, ready: bool) -> bool {
        let mut st = self.state();
        if st.closed {
            return false;
        }
        st.pending.remove(&index);
        if ready {
            st.ready.push(index);
        }
        true
    }

    /// Ends a reservation [`offer`](Self::offer) refused, once its lease is released.
    pub fn abandon(&self, index: u32) {
        self.state().pending.remove(&index);
    }

    /// At start: leases on the host that no sandbox holds are adopted into the pool (up to
    /// its target) or released, so a crash leaks nothing for long.
    pub async fn sweep(&self, used: &[u32]) {
        let mut orphans = Vec::new();
        {
            let mut st = self.state();
            for i in self.plan.present_indexes() {
                if used.contains(&i) || st.ready.contains(&i) || st.pending.contains(&i) {
                    continue;
                }
                if st.ready.len() < self.target && self.plan.lease(i).exists() {
                    st.ready.push(i);
                } else {
                    orphans.push(i);
                }
            }
        }
        for i in orphans {
            self.plan.lease(i).release().await;
        }
    }

    /// Releases every pooled lease (on a graceful stop) and waits (up to 10 s) for leases
    /// still being made, which then release themselves; returns the released indexes.
    pub async fn drain(&self) -> Vec<u32> {
        let ready = {
            let mut st = self.state();
            st.closed = true;
            std::mem::take(&mut st.ready)
        };
        for &i in &ready {
            self.plan.lease(i).release().await;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.state().pending.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        ready
    }
}
