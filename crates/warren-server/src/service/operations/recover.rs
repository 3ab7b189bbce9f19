//! After a crash: what a restart does with operations left queued or running. Queued ones
//! never began, and pulls, stops and deletes are safe to run again, so those are resumed;
//! the rest are settled by what the reconciler made of their target (a create whose sandbox
//! was cut off mid-provisioning has been failed and released: rolled back).
use chrono::Utc;
use serde_json::Value;
use warren_api::{ErrorDetail, Operation, OperationState, SandboxState};

use super::Work;
use crate::error::ApiError;

/// How a settled operation ended.
enum Settled {
    Done(Value),
    RolledBack(String),
}

impl crate::service::Operations<'_> {
    /// Resumes or settles every operation a crash left unfinished; how many there were.
    /// Call after the reconciler's first pass, so sandboxes' states are settled.
    pub async fn recover(&self) -> Result<usize, ApiError> {
        let left = self
            .inner
            .store
            .unfinished_operations(self.server_name())
            .await?;
        let n = left.len();
        for rec in left {
            let op = rec.op;
            let work: Work = match serde_json::from_str(&rec.request) {
                Ok(w) => w,
                Err(e) => {
                    self.finish(
                        op,
                        Settled::RolledBack(format!("its request no longer reads ({e})")),
                    )
                    .await;
                    continue;
                }
            };
            // A stop or delete the reconciler has finished (it finishes both) is done.
            if op.state == OperationState::Running {
                if let Some(done) = self.already_done(&work).await {
                    self.finish(op, done).await;
                    continue;
                }
            }
            let resumable = op.state == OperationState::Queued
                || matches!(
                    work,
                    Work::Pull { .. } | Work::Stop { .. } | Work::Delete { .. }
                );
            if resumable {
                tracing::info!(operation = %op.id, kind = %op.kind, "resuming after a restart");
                drop(self.enqueue(op, work, None));
                continue;
            }
            let settled = self.settle(&op, &work).await;
            self.finish(op, settled).await;
        }
        Ok(n)
    }

    /// The answer of a stop or delete whose sandbox is already where it would leave it.
    async fn already_done(&self, work: &Work) -> Option<Settled> {
        match work {
            Work::Stop { id } => match self.sandboxes().get(id).await {
                Ok(s) if s.state == SandboxState::Stopped => {
                    serde_json::to_value(&s).ok().map(Settled::Done)
                }
                _ => None,
            },
            Work::Delete { id } => match self.sandboxes().get(id).await {
                Err(ApiError::NotFound(_)) => Some(Settled::Done(Value::Null)),
                Ok(s) if s.state == SandboxState::Deleted => Some(Settled::Done(Value::Null)),
                _ => None,
            },
            _ => None,
        }
    }

    /// What became of a running operation's target.
    async fn settle(&self, op: &Operation, work: &Work) -> Settled {
        let sandbox = |want: SandboxState| async move {
            let Ok(id) = op.target.parse() else {
                return Settled::RolledBack(
                    "it had not recorded a sandbox; nothing was made".into(),
                );
            };
            match self.sandboxes().get(&id).await {
                Ok(s) if s.state == want => match serde_json::to_value(&s) {
                    Ok(v) => Settled::Done(v),
                    Err(e) => Settled::RolledBack(format!("encoding the sandbox: {e}")),
                },
                Ok(s) => Settled::RolledBack(format!(
                    "sandbox {id} was left {}{}",
                    s.state,
                    s.error.map(|e| format!(": {e}")).unwrap_or_default()
                )),
                Err(e) => Settled::RolledBack(e.to_string()),
            }
        };
        match work {
            Work::Create { .. } | Work::Start { .. } | Work::Resume { .. } => {
                sandbox(SandboxState::Running).await
            }
            Work::Pause { .. } => sandbox(SandboxState::Paused).await,
            Work::Snapshot { request, .. } => {
                match self.snapshots().snapshot(&request.name, &op.team).await {
                    Ok(s) => serde_json::to_value(&s)
                        .map(Settled::Done)
                        .unwrap_or_else(|e| Settled::RolledBack(e.to_string())),
                    Err(_) => {
                        Settled::RolledBack(format!("snapshot {} was not taken", request.name))
                    }
                }
            }
            Work::Fork { .. } => Settled::RolledBack(
                "the fork was cut off (its sandbox, if recorded, is failed and released)".into(),
            ),
            Work::Pull { .. } | Work::Stop { .. } | Work::Delete { .. } => {
                Settled::RolledBack("not resumed".into())
            }
        }
    }

    async fn finish(&self, mut op: Operation, how: Settled) {
        match how {
            Settled::Done(v) => {
                tracing::info!(operation = %op.id, "found done after a restart");
                op.state = OperationState::Succeeded;
                op.result = Some(v);
            }
            Settled::RolledBack(why) => {
                tracing::warn!(operation = %op.id, "rolled back after a restart: {why}");
                op.state = OperationState::Failed;
                op.error = Some(ErrorDetail {
                    code: "interrupted".into(),
                    message: format!(
                        "{} {} was interrupted by a restart of the server and rolled back: {why}",
                        op.kind, op.target
                    ),
                });
            }
        }
        op.ended_at = Some(Utc::now());
        self.save(&op).await;
    }
}
