//! Warren's wire types: what crosses the `/v1` API between the server, the CLI and any other
//! client. Plain serde types with no I/O, so every crate (and every test) agrees on one shape.
#![deny(missing_docs)]

pub mod audit;
pub mod build;
mod egress;
pub mod error;
pub mod exec;
pub mod files;
pub mod id;
pub mod image;
pub mod key;
pub mod operation;
pub mod pause;
pub mod pool;
pub mod sandbox;
pub mod volume;

pub use audit::{AuditEntry, AuditList};
pub use error::{ErrorBody, ErrorDetail};
pub use exec::{ExecExit, ExecKind, ExecList, ExecRecord, ExecRequest, ExecResult};
pub use files::{FileEntry, FileKind, FileList};
pub use id::SandboxId;
pub use image::{Image, ImageConfig, ImageList, PullEvent, PullImage, PullPolicy, TagImage};
pub use key::{
    ApiKey, ApiKeyList, CreateApiKey, CreateTeam, CreatedApiKey, Quotas, Scope, Team, TeamList,
    TeamUsage, UpdateTeam, DEFAULT_TEAM,
};
pub use operation::{Operation, OperationKind, OperationList, OperationState};
pub use pause::{CreateSnapshot, ImagePart, PauseReceipt, Snapshot, SnapshotList};
pub use pool::{CreatePool, Pool, PoolList};
pub use sandbox::{
    CreateSandbox, Egress, ForkSandbox, ListeningPort, LogLine, LogList, LogStream, OnTimeout,
    ResumeSandbox, Runtime, Sandbox, SandboxList, SandboxMetrics, SandboxState, SetNetwork,
    SetTimeout,
};
pub use volume::{CreateVolume, Volume, VolumeBackup, VolumeList, VolumeMount};
#[cfg(test)]
mod schema_tests;
