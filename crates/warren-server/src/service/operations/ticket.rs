//! [`Ticket`]: what a caller waits on for its operation's answer.
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use warren_api::{ErrorDetail, Operation, OperationState};
use warren_store::Store;

use crate::error::ApiError;

/// How often a waiter re-reads an operation this server is not running (another server's,
/// or one a restart has not picked up yet).
const POLL: Duration = Duration::from_millis(200);
/// How long a waiter re-reads one before it answers 409 and leaves it to `GET
/// /v1/operations/{id}`.
const POLL_FOR: Duration = Duration::from_secs(60);

/// What a live operation has told so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    /// A create's sandbox, recorded and not yet provisioned.
    pub early: Option<Value>,
    /// The answer.
    pub done: Option<Result<Value, ErrorDetail>>,
}

enum Source {
    Live(watch::Receiver<Progress>),
    Stored(Operation, Arc<dyn Store>),
}

/// An operation's id, and the way to its answer.
pub struct Ticket {
    /// The operation's id.
    pub id: String,
    source: Source,
}

/// An operation's answer: its value, and whether it came before the end (a create's sandbox
/// recorded but not yet running).
pub struct Answer {
    /// The operation's id.
    pub id: String,
    /// What the call answers.
    pub value: Value,
    /// Given before the operation ended.
    pub early: bool,
}

impl Ticket {
    pub(super) fn live(id: String, rx: watch::Receiver<Progress>) -> Ticket {
        Ticket {
            id,
            source: Source::Live(rx),
        }
    }

    pub(super) fn stored(op: Operation, store: Arc<dyn Store>) -> Ticket {
        Ticket {
            id: op.id.clone(),
            source: Source::Stored(op, store),
        }
    }

    /// Waits for the answer; with `early`, a create's recorded sandbox will do.
    pub async fn answer(self, early: bool) -> Result<Answer, ApiError> {
        let id = self.id;
        let done = |r: &Result<Value, ErrorDetail>, id: &str| match r {
            Ok(v) => Ok(Answer {
                id: id.to_owned(),
                value: v.clone(),
                early: false,
            }),
            Err(e) => Err(ApiError::from_detail(e)),
        };
        match self.source {
            Source::Live(mut rx) => loop {
                {
                    let p = rx.borrow_and_update();
                    if let Some(r) = &p.done {
                        return done(r, &id);
                    }
                    if let (true, Some(v)) = (early, &p.early) {
                        return Ok(Answer {
                            id,
                            value: v.clone(),
                            early: true,
                        });
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(ApiError::Internal(format!(
                        "operation {id} ended without an answer (the server is stopping?)"
                    )));
                }
            },
            Source::Stored(mut op, store) => {
                let deadline = tokio::time::Instant::now() + POLL_FOR;
                loop {
                    match op.state {
                        OperationState::Succeeded => {
                            return done(&Ok(op.result.clone().unwrap_or(Value::Null)), &id)
                        }
                        OperationState::Failed => {
                            let e = op.error.clone().unwrap_or_else(|| ErrorDetail {
                                code: "internal".into(),
                                message: format!("operation {id} failed"),
                            });
                            return done(&Err(e), &id);
                        }
                        OperationState::Queued | OperationState::Running => {
                            if tokio::time::Instant::now() > deadline {
                                return Err(ApiError::Conflict(format!(
                                    "operation {id} is still {}: follow it at /v1/operations/{id}",
                                    op.state
                                )));
                            }
                            tokio::time::sleep(POLL).await;
                            op = store
                                .get_operation(&id)
                                .await?
                                .ok_or_else(|| {
                                    ApiError::NotFound(format!("operation {id} is gone"))
                                })?
                                .op;
                        }
                    }
                }
            }
        }
    }
}
