//! The workers' queue: jobs by priority (then age), and the live operations a waiter can
//! watch.
use std::cmp::Reverse;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

use super::ticket::Progress;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Higher first; among equals, the earlier.
type Priority = (u8, Reverse<u64>);

/// Operations waiting for a worker or running.
pub(crate) struct OpQueue {
    tx: async_priority_channel::Sender<Job, Priority>,
    rx: async_priority_channel::Receiver<Job, Priority>,
    seq: AtomicU64,
    live: Mutex<HashMap<String, watch::Receiver<Progress>>>,
    // The last operation queued on each target (its id and progress), while it lives.
    last_on: Mutex<HashMap<String, (String, watch::Receiver<Progress>)>>,
}

impl OpQueue {
    pub(crate) fn new() -> Self {
        let (tx, rx) = async_priority_channel::unbounded();
        OpQueue {
            tx,
            rx,
            seq: AtomicU64::new(0),
            live: Mutex::default(),
            last_on: Mutex::default(),
        }
    }

    /// Starts `n` workers on the current runtime.
    pub(crate) fn start_workers(&self, n: usize) {
        for _ in 0..n.max(1) {
            let rx = self.rx.clone();
            tokio::spawn(async move {
                while let Ok((job, _)) = rx.recv().await {
                    // Its own task: whatever happens in it, the worker goes on.
                    if let Err(e) = tokio::spawn(job).await {
                        tracing::error!("an operation's task ended abnormally: {e}");
                    }
                }
            });
        }
    }

    pub(super) fn push(&self, priority: u8, job: impl Future<Output = ()> + Send + 'static) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // Unbounded: never full; closed only if every worker's receiver is gone, which the
        // queue's own receiver prevents.
        if self
            .tx
            .try_send(Box::pin(job), (priority, Reverse(seq)))
            .is_err()
        {
            tracing::error!("the operations queue is closed");
        }
    }

    /// Watches a new operation on `target`; the one queued on it before, if it still runs.
    pub(super) fn track(
        &self,
        id: &str,
        target: &str,
        rx: watch::Receiver<Progress>,
    ) -> Option<watch::Receiver<Progress>> {
        crate::lock(&self.live).insert(id.to_owned(), rx.clone());
        if target.is_empty() {
            return None;
        }
        crate::lock(&self.last_on)
            .insert(target.to_owned(), (id.to_owned(), rx))
            .map(|(_, before)| before)
    }

    pub(super) fn watch(&self, id: &str) -> Option<watch::Receiver<Progress>> {
        crate::lock(&self.live).get(id).cloned()
    }

    pub(super) fn forget(&self, id: &str, target: &str) {
        crate::lock(&self.live).remove(id);
        let mut last = crate::lock(&self.last_on);
        if last.get(target).is_some_and(|(last_id, _)| last_id == id) {
            last.remove(target);
        }
    }
}
