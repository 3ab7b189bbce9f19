//! What an operation does ([`Work`]), stored with it so a restart can carry it on, and the
//! one place each kind is carried out.
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use warren_api::{
    CreateSandbox, CreateSnapshot, ForkSandbox, OperationKind, PullEvent, Sandbox, SandboxId,
};

use crate::error::ApiError;
use crate::service::Service;

/// An operation's request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// `POST /v1/sandboxes` (and E2B's create); `user` is the default user to prefer.
    Create {
        /// The request.
        request: Box<CreateSandbox>,
        /// E2B's default user, when the image has it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// Starts a stopped sandbox.
    Start {
        /// Which.
        id: SandboxId,
    },
    /// Stops a running sandbox.
    Stop {
        /// Which.
        id: SandboxId,
    },
    /// Deletes a sandbox.
    Delete {
        /// Which.
        id: SandboxId,
    },
    /// Pauses a sandbox.
    Pause {
        /// Which.
        id: SandboxId,
    },
    /// Resumes a paused sandbox.
    Resume {
        /// Which.
        id: SandboxId,
        /// How long it lives after.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_s: Option<u64>,
    },
    /// Forks a paused sandbox.
    Fork {
        /// The source.
        id: SandboxId,
        /// The request.
        request: ForkSandbox,
    },
    /// Snapshots a sandbox.
    Snapshot {
        /// Which.
        id: SandboxId,
        /// The request.
        request: CreateSnapshot,
    },
    /// Pulls an image.
    Pull {
        /// As given.
        reference: String,
    },
}

impl Work {
    /// Its kind.
    pub fn kind(&self) -> OperationKind {
        match self {
            Work::Create { .. } => OperationKind::Create,
            Work::Start { .. } => OperationKind::Start,
            Work::Stop { .. } => OperationKind::Stop,
            Work::Delete { .. } => OperationKind::Delete,
            Work::Pause { .. } => OperationKind::Pause,
            Work::Resume { .. } => OperationKind::Resume,
            Work::Fork { .. } => OperationKind::Fork,
            Work::Snapshot { .. } => OperationKind::Snapshot,
            Work::Pull { .. } => OperationKind::Pull,
        }
    }

    /// What it acts on, when that is known before it runs.
    pub fn target(&self) -> String {
        match self {
            Work::Create { .. } => String::new(),
            Work::Start { id }
            | Work::Stop { id }
            | Work::Delete { id }
            | Work::Pause { id }
            | Work::Resume { id, .. }
            | Work::Fork { id, .. }
            | Work::Snapshot { id, .. } => id.to_string(),
            Work::Pull { reference } => reference.clone(),
        }
    }

    /// Higher runs first when workers are short: what frees the host before what fills it.
    pub fn priority(&self) -> u8 {
        match self {
            Work::Delete { .. } | Work::Stop { .. } => 3,
            Work::Pause { .. }
            | Work::Resume { .. }
            | Work::Start { .. }
            | Work::Create { .. }
            | Work::Fork { .. } => 2,
            Work::Snapshot { .. } | Work::Pull { .. } => 1,
        }
    }

    /// Whether a failure of this kind may pass if tried again (a registry that did not
    /// answer); everything else fails at once.
    pub fn retryable(&self, e: &ApiError) -> bool {
        matches!(self, Work::Pull { .. })
            && matches!(e, ApiError::BadGateway(_) | ApiError::Unavailable(_))
    }
}

/// What a running operation may tell its waiter before it ends.
pub struct Hooks {
    /// Gets the sandbox a create recorded, before it is provisioned (a create that asked not
    /// to wait answers with it).
    pub early: Box<dyn Fn(&Sandbox) + Send + Sync>,
    /// A pull's progress.
    pub events: Option<UnboundedSender<PullEvent>>,
}

fn json<T: Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")))
}

/// Carries `work` out; what the call answers.
pub async fn perform(
    svc: &Service,
    work: &Work,
    team: &str,
    hooks: &Hooks,
) -> Result<Value, ApiError> {
    match work.clone() {
        Work::Create { request, user } => {
            let (sandbox, _) = svc
                .create_preferring(*request, user.as_deref(), team, Some(&*hooks.early))
                .await?;
            json(&sandbox)
        }
        Work::Start { id } => json(&svc.sandboxes().start(&id).await?),
        Work::Stop { id } => json(&svc.sandboxes().stop(&id).await?),
        Work::Delete { id } => {
            svc.sandboxes().delete(&id).await?;
            Ok(Value::Null)
        }
        Work::Pause { id } => json(&svc.sandboxes().pause(&id).await?),
        Work::Resume { id, timeout_s } => json(&svc.sandboxes().resume(&id, timeout_s).await?),
        Work::Fork { id, request } => json(&svc.sandboxes().fork(&id, request).await?),
        Work::Snapshot { id, request } => {
            json(&svc.snapshots().create_snapshot(&id, request).await?)
        }
        Work::Pull { reference } => json(
            &svc.images()
                .pull_image(&reference, hooks.events.clone())
                .await?,
        ),
    }
}
