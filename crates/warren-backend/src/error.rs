//! [`BackendError`]: what a backend or layer store answers when it fails, typed by what the
//! service should make of it, never by which part of which backend failed.

/// Why a backend or layer store call failed. The service maps each kind to one API status;
/// the message is for people and names no host paths the client has no business with.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The input is refused: a hostile or malformed tar or layer, a reference that does not
    /// parse, an image this backend cannot run, a COPY asking the impossible.
    #[error("{0}")]
    Invalid(String),
    /// The thing asked for does not exist (a registry's repository, tag or digest).
    #[error("{0}")]
    NotFound(String),
    /// A registry refused the server's credentials (or their absence).
    #[error("{0}")]
    Denied(String),
    /// An upstream (a registry) could not be reached or answered wrongly.
    #[error("{0}")]
    Upstream(String),
    /// This backend cannot do this here (a runtime without checkpoints, no object store).
    #[error("{0}")]
    Unsupported(String),
    /// A pause image is missing, incomplete or does not match its receipt.
    #[error("{0}")]
    PauseImage(String),
    /// A provisioning step failed.
    #[error("{step}: {message}")]
    Step {
        /// Which step (`rootfs`, `network`, `bundle`, `runtime`, …).
        step: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The host lacks something the backend needs.
    #[error("host setup: {0}")]
    Setup(String),
    /// Anything else: the backend's own fault (an I/O error, a broken invariant).
    #[error("{0}")]
    Internal(String),
}

impl BackendError {
    /// A [`BackendError::Step`] maker, for `map_err`.
    pub fn step(step: &'static str) -> impl FnOnce(String) -> BackendError {
        move |message| BackendError::Step { step, message }
    }

    /// An I/O failure while doing `what`.
    pub fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> BackendError {
        move |e| BackendError::Internal(format!("{what}: {e}"))
    }
}
