//! Operations: creates, starts, stops, deletes, pauses, resumes, forks, snapshots and pulls
//! the API was asked for, recorded in the store before they begin and carried out by the
//! server's workers, so a client that goes away (or a request that times out) cancels
//! nothing. Each has an id, a state and, at its end, a result or an error; a retried call
//! with the same idempotency key is the same operation. Workers take the highest priority
//! first (what frees the host before what fills it); a pull that fails on its registry is
//! tried again with backoff. After a crash, [`Operations::recover`] resumes or rolls back
//! what was left.
mod queue;
mod recover;
mod ticket;
mod work;

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use warren_api::{Operation, OperationState, PullEvent};
use warren_store::{OperationFilter, OperationRecord, StoreError};

pub(crate) use queue::OpQueue;
use ticket::Progress;
pub use ticket::Ticket;
use work::Hooks;
pub use work::Work;

use crate::error::ApiError;

/// Longest idempotency key accepted.
const MAX_KEY: usize = 255;
/// Tries of a retryable operation (the first and the retries).
const TRIES: usize = 4;
/// The first retry's wait; each next one doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// How a call is submitted.
pub struct Submit {
    /// The team asking (the operation, and a sandbox it makes, are that team's).
    pub team: String,
    /// The client's `Idempotency-Key`.
    pub key: Option<String>,
    /// Where a pull's progress goes.
    pub events: Option<UnboundedSender<PullEvent>>,
}

impl Submit {
    /// A plain call of `team`'s: no key, no progress.
    pub fn by(team: &str) -> Submit {
        Submit {
            team: team.to_owned(),
            key: None,
            events: None,
        }
    }
}

/// A call's answer.
pub struct Called<T> {
    /// The operation's id.
    pub id: String,
    /// What the call answers.
    pub value: T,
    /// Given before the operation ended (a create's sandbox, recorded, not yet running).
    pub early: bool,
}

fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..20)
        .map(|_| char::from(ALPHABET[rand::random::<usize>() % ALPHABET.len()]))
        .collect();
    format!("op-{tail}")
}

/// Checks a client's `Idempotency-Key`.
pub(crate) fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1-{MAX_KEY} printable ASCII characters"
        )));
    }
    Ok(())
}

impl crate::service::Operations<'_> {
    /// Records `work` as an operation and queues it; the ticket answers when it ends. With a
    /// key already used, the operation that key made (the same request, or 422).
    pub async fn submit(&self, work: Work, opts: Submit) -> Result<Ticket, ApiError> {
        // In a task of its own: a caller that goes away between recording the operation and
        // queueing it must not leave it recorded and never run.
        let svc = self.0.clone();
        let record = async move { svc.operations().record_and_queue(work, opts).await };
        // Under the caller's span, so the operation's log lines name its request.
        tokio::spawn(tracing::Instrument::in_current_span(record))
            .await
            .map_err(|e| ApiError::Internal(format!("recording an operation: {e}")))?
    }

    async fn record_and_queue(&self, work: Work, opts: Submit) -> Result<Ticket, ApiError> {
        if let Some(key) = &opts.key {
            if let Some(rec) = self.inner.store.operation_by_key(key).await? {
                return self.existing(rec, &work);
            }
        }
        let request = serde_json::to_string(&work)
            .map_err(|e| ApiError::Internal(format!("encoding the request: {e}")))?;
        let op = Operation {
            id: new_id(),
            kind: work.kind(),
            target: work.target(),
            state: OperationState::Queued,
            priority: work.priority(),
            attempts: 0,
            error: None,
            result: None,
            created_at: Utc::now(),
            started_at: None,
            ended_at: None,
            team: opts.team.clone(),
        };
        let rec = OperationRecord {
            host: self.server_name().to_owned(),
            op,
            request,
            key: opts.key.clone(),
        };
        match self.inner.store.insert_operation(&rec).await {
            Ok(()) => {}
            // Two calls with one key at once: the one recorded first wins, the other waits
            // for it.
            Err(StoreError::Exists(_)) if opts.key.is_some() => {
                let key = opts.key.as_deref().unwrap_or_default();
                if let Some(first) = self.inner.store.operation_by_key(key).await? {
                    return self.existing(first, &work);
                }
                return Err(ApiError::Conflict(format!(
                    "an operation with Idempotency-Key {key:?} was just recorded and is gone"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(self.enqueue(rec.op, work, opts.events))
    }

    /// The ticket of an operation a key already made, if the request is the same.
    fn existing(&self, rec: OperationRecord, work: &Work) -> Result<Ticket, ApiError> {
        let same =
            serde_json::from_str::<Value>(&rec.request).ok() == serde_json::to_value(work).ok();
        if !same {
            return Err(ApiError::Invalid(format!(
                "this Idempotency-Key was used for another request (operation {}, {} {}); use a new key",
                rec.op.id, rec.op.kind, rec.op.target
            )));
        }
        if let Some(rx) = self.inner.ops.watch(&rec.op.id) {
            return Ok(Ticket::live(rec.op.id, rx));
        }
        Ok(Ticket::stored(rec.op, self.inner.store.clone()))
    }

    /// Queues a recorded operation.
    pub(super) fn enqueue(
        &self,
        op: Operation,
        work: Work,
        events: Option<UnboundedSender<PullEvent>>,
    ) -> Ticket {
        let (tx, rx) = watch::channel(Progress::default());
        let id = op.id.clone();
        let priority = op.priority;
        let before = self.inner.ops.track(&id, &op.target, rx.clone());
        self.announce_op(&op);
        let svc = self.0.clone();
        // Its log lines name the operation, and the request that asked for it.
        let span = tracing::info_span!("operation", id = %op.id, kind = %op.kind);
        let job = tracing::Instrument::instrument(
            async move {
                svc.operations().execute(op, work, events, tx).await;
            },
            span,
        );
        match before {
            None => self.inner.ops.push(priority, job),
            // Operations on one target run in the order they were asked for, whatever their
            // priority: it waits for the one before it without holding a worker.
            Some(mut before) => {
                let svc = self.0.clone();
                tokio::spawn(async move {
                    while before.borrow_and_update().done.is_none() {
                        if before.changed().await.is_err() {
                            break;
                        }
                    }
                    svc.inner.ops.push(priority, job);
                });
            }
        }
        Ticket::live(id, rx)
    }

    /// Runs a queued operation to its end, recording each step.
    async fn execute(
        &self,
        mut op: Operation,
        work: Work,
        events: Option<UnboundedSender<PullEvent>>,
        tx: watch::Sender<Progress>,
    ) {
        let early_tx = tx.clone();
        let (store, op_id) = (self.inner.store.clone(), op.id.clone());
        let hooks = Hooks {
            early: Box::new(move |sandbox| {
                // A sandbox already running (from a pool or a snapshot) is the final answer,
                // not an early one.
                if sandbox.state != warren_api::SandboxState::Running {
                    if let Ok(v) = serde_json::to_value(sandbox) {
                        early_tx.send_modify(|p| p.early = Some(v));
                    }
                }
                // A create's sandbox is its target from the moment it is recorded: a restart
                // in between must find it to settle the operation. Written beside the work
                // (which may hold the store's writer meanwhile), and only the target, so it
                // never undoes a later update.
                let (store, op_id, target) = (store.clone(), op_id.clone(), sandbox.id.to_string());
                tokio::spawn(async move {
                    if let Err(e) = store.set_operation_target(&op_id, &target).await {
                        tracing::warn!(operation = %op_id, "recording its target: {e}");
                    }
                });
            }),
            events,
        };
        let mut wait = FIRST_BACKOFF;
        let result = loop {
            op.state = OperationState::Running;
            op.attempts += 1;
            op.started_at = Some(Utc::now());
            self.save(&op).await;
            // A bug that panics fails its operation, not the worker.
            let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
                work::perform(self, &work, &op.team, &hooks),
            ))
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::Internal(format!(
                    "operation {} hit a bug (see the server log)",
                    op.id
                )))
            });
            if op.target.is_empty() {
                if let Some(id) = tx.borrow().early.as_ref().and_then(|s| s.get("id")) {
                    op.target = id.as_str().unwrap_or_default().to_owned();
                }
            }
            match result {
                Err(e) if work.retryable(&e) && (op.attempts as usize) < TRIES => {
                    tracing::warn!(operation = %op.id, "attempt {} failed, retrying in {wait:?}: {e}", op.attempts);
                    op.error = Some(e.body().error);
                    self.save(&op).await;
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => break other,
            }
        };
        match &result {
            Ok(value) => {
                if op.target.is_empty() {
                    if let Some(id) = value.get("id").and_then(Value::as_str) {
                        op.target = id.to_owned();
                    }
                }
                op.state = OperationState::Succeeded;
                op.error = None;
                op.result = Some(value.clone());
            }
            Err(e) => {
                op.state = OperationState::Failed;
                op.error = Some(e.body().error);
            }
        }
        let ended = Utc::now();
        op.ended_at = Some(ended);
        self.inner.telemetry.operation_ended(
            op.kind.as_str(),
            op.state == OperationState::Succeeded,
            (ended - op.created_at).to_std().unwrap_or_default(),
        );
        self.save(&op).await;
        tx.send_modify(|p| p.done = Some(result.map_err(|e| e.body().error)));
        self.inner.ops.forget(&op.id, &op.target);
    }

    /// Records an operation's progress and tells `/v1/events`. A store that fails here is
    /// logged: the work itself is done or not regardless, and a restart settles the record.
    async fn save(&self, op: &Operation) {
        if let Err(e) = self.inner.store.update_operation(op).await {
            tracing::error!(operation = %op.id, "recording its progress: {e}");
        }
        self.announce_op(op);
    }

    fn announce_op(&self, op: &Operation) {
        let _ = self
            .inner
            .events
            .send(crate::service::Event::Operation(op.clone()));
    }

    /// Submits `work` and waits for its answer (with `early`, a create's recorded sandbox
    /// will do), decoded as the call's type.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        work: Work,
        opts: Submit,
        early: bool,
    ) -> Result<Called<T>, ApiError> {
        let answer = self.submit(work, opts).await?.answer(early).await?;
        let value = serde_json::from_value(answer.value).map_err(|e| {
            ApiError::Internal(format!("operation {}: decoding its answer: {e}", answer.id))
        })?;
        Ok(Called {
            id: answer.id,
            value,
            early: answer.early,
        })
    }

    /// Forgets operations that ended longer ago than the history is kept; how many.
    pub async fn prune(&self) -> Result<u64, ApiError> {
        let keep = chrono::Duration::from_std(self.inner.cfg.history_retention)
            .unwrap_or(chrono::Duration::days(5));
        Ok(self.inner.store.prune_operations(Utc::now() - keep).await?)
    }

    /// An operation by id.
    pub async fn get(&self, id: &str) -> Result<Operation, ApiError> {
        self.inner
            .store
            .get_operation(id)
            .await?
            .map(|r| r.op)
            .ok_or_else(|| ApiError::NotFound(format!("operation {id} not found")))
    }

    /// Operations matching `filter`, newest first.
    pub async fn list(&self, filter: &OperationFilter) -> Result<Vec<Operation>, ApiError> {
        Ok(self.inner.store.list_operations(filter).await?)
    }
}
