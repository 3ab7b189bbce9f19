//! The boundary between Warren's service and the systems under it. [`Backend`] runs
//! sandboxes; [`LayerStore`] holds images' layers. Both speak only the types here and
//! `warren-api`'s, and fail with a [`BackendError`] the service maps to API errors in one
//! place. The local backend (`warren-local`) implements both; a Kubernetes one fills the
//! same traits.
mod backend;
mod egress;
mod error;
pub mod images;
mod layers;
mod sandbox;

pub use backend::Backend;

/// One line of a sandbox's output and when it was written (nanoseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedLine {
    /// When the runtime took it.
    pub at_ns: i64,
    /// The line, without its newline (cut at the backend's line cap).
    pub text: String,
}

/// A followed stream of a sandbox's output ([`Backend::log_lines`]).
pub type LogLines = futures::stream::BoxStream<'static, std::io::Result<TimedLine>>;
pub use egress::{EgressPolicy, EgressRules};
pub use error::BackendError;
pub use layers::LayerStore;
pub use sandbox::{
    ContainerStatus, ForkFrom, Provisioned, SandboxSpec, SpecVolume, Usage, VolumeBackup,
    AGENT_PORT,
};
