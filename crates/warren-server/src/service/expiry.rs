//! Sandbox deadlines kept to the moment: every `expires_at` the service stores is also put on a
//! timer queue, and a sandbox is reaped when its own timer fires, not at the reconciler's next
//! pass (which stays as the net for anything missed, e.g. a store changed by another server).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::time::{delay_queue, DelayQueue};
use warren_api::{SandboxId, SandboxState};
use warren_store::SandboxRecord;

use super::Service;
use crate::error::ApiError;

/// A deadline set (`Some`) or cleared (`None`) for a sandbox.
pub(super) type Change = (SandboxId, Option<DateTime<Utc>>);

pub(super) fn channel() -> (UnboundedSender<Change>, UnboundedReceiver<Change>) {
    tokio::sync::mpsc::unbounded_channel()
}

fn delay_until(at: DateTime<Utc>) -> Duration {
    (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

/// Held while a sandbox is being reaped; dropping it lets the next reap in.
pub(super) struct Reaping {
    service: Service,
    id: SandboxId,
}

impl Drop for Reaping {
    fn drop(&mut self) {
        self.service
            .inner
            .reaping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Service {
    /// Marks the sandbox as being reaped; `None` if a reap of it is already under way.
    pub(super) fn begin_reap(&self, id: &SandboxId) -> Option<Reaping> {
        let fresh = self
            .inner
            .reaping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone());
        fresh.then(|| Reaping {
            service: self.clone(),
            id: id.clone(),
        })
    }

    /// Puts the sandbox's deadline on the timer queue, or takes it off while its time does not
    /// run (paused) or it is on its way out (a reap in progress must not fire again).
    pub(super) fn schedule_expiry(&self, rec: &SandboxRecord) {
        use SandboxState::*;
        // Another server's sandbox is reaped by its server (or, gone, by a delete here).
        let at = rec.sandbox.expires_at.filter(|_| {
            self.is_mine(&rec.sandbox.server)
                && !matches!(
                    rec.sandbox.state,
                    Pausing | Paused | Resuming | Stopping | Terminating | Deleted
                )
        });
        // The queue lives as long as the service; a send fails only once it is gone.
        let _ = self.inner.expiries.send((rec.sandbox.id.clone(), at));
    }

    /// Runs the timer queue until the service goes: loads every stored deadline, then reaps
    /// each sandbox as its deadline passes (in a task of its own, so a slow stop delays no
    /// other).
    pub async fn keep_deadlines(self) {
        let taken = self
            .inner
            .expiry_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut changes) = taken else {
            return; // already running
        };
        match self.own_sandboxes().await {
            Ok(records) => {
                for rec in records {
                    self.schedule_expiry(&rec);
                }
            }
            Err(e) => tracing::warn!("deadlines: listing sandboxes: {e}"),
        }
        let mut queue: DelayQueue<SandboxId> = DelayQueue::new();
        let mut keys: HashMap<SandboxId, delay_queue::Key> = HashMap::new();
        loop {
            tokio::select! {
                change = changes.recv() => {
                    let Some((id, at)) = change else { return };
                    match (keys.get(&id), at) {
                        (Some(key), Some(at)) => queue.reset(key, delay_until(at)),
                        (None, Some(at)) => {
                            let key = queue.insert(id.clone(), delay_until(at));
                            keys.insert(id, key);
                        }
                        (Some(_), None) => {
                            if let Some(key) = keys.remove(&id) {
                                queue.remove(&key);
                            }
                        }
                        (None, None) => {}
                    }
                }
                Some(due) = queue.next(), if !queue.is_empty() => {
                    let id = due.into_inner();
                    keys.remove(&id);
                    let service = self.clone();
                    tokio::spawn(async move {
                        match service.sandboxes().reap_if_expired(&id).await {
                            Ok(_) | Err(ApiError::NotFound(_)) => {}
                            Err(e) => tracing::warn!(sandbox = %id, "deadline: {e}"),
                        }
                    });
                }
            }
        }
    }
}
