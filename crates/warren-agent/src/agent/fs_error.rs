//! How a failed filesystem call is reported: the Connect code of its errno, so a failure the
//! request caused (a read-only mount, a name too long, a file where a directory should be, a
//! full disk) reaches the caller as its own 4xx and never as the agent's 5xx; the `/files`
//! status of each code; and paths cut short in messages, since a path is the caller's text and
//! may be kilobytes long.

use std::io::ErrorKind;
use std::path::Path;

use nix::errno::Errno;

use warren_agent::connect::{code, ConnectError};

/// `path` for a message: whole when short, else its start and its length.
pub fn shown(path: &Path) -> String {
    shown_text(&path.to_string_lossy())
}

pub use warren_agent::error::shown_text;

/// The Connect code of a failed filesystem call.
pub fn code_for(e: &std::io::Error) -> &'static str {
    if let Some(raw) = e.raw_os_error() {
        return match Errno::from_raw(raw) {
            Errno::ENOENT => code::NOT_FOUND,
            Errno::EACCES | Errno::EPERM | Errno::EROFS => code::PERMISSION_DENIED,
            Errno::EEXIST => code::ALREADY_EXISTS,
            Errno::ENOTDIR
            | Errno::EISDIR
            | Errno::ENAMETOOLONG
            | Errno::ELOOP
            | Errno::EINVAL
            | Errno::ENXIO
            | Errno::ENODEV => code::INVALID_ARGUMENT,
            // The path is fine but the state of things is not: a directory not empty, a file
            // busy or being executed, a rename across filesystems.
            Errno::ENOTEMPTY | Errno::EBUSY | Errno::ETXTBSY | Errno::EXDEV => {
                code::FAILED_PRECONDITION
            }
            Errno::ENOSPC | Errno::EDQUOT => code::RESOURCE_EXHAUSTED,
            Errno::EFBIG => code::OUT_OF_RANGE,
            _ => code::INTERNAL,
        };
    }
    match e.kind() {
        ErrorKind::NotFound => code::NOT_FOUND,
        ErrorKind::PermissionDenied => code::PERMISSION_DENIED,
        ErrorKind::AlreadyExists => code::ALREADY_EXISTS,
        ErrorKind::InvalidInput | ErrorKind::InvalidData => code::INVALID_ARGUMENT,
        _ => code::INTERNAL,
    }
}

/// The Connect error for a failed filesystem call on `path`.
pub fn io_error(e: &std::io::Error, what: &str, path: &Path) -> ConnectError {
    ConnectError::new(code_for(e), format!("{what} {}: {e}", shown(path)))
}

/// The HTTP status a `/files` error with this Connect code answers with. These are envd's REST
/// statuses, which E2B's SDKs turn into their own exceptions (400 bad input, 404 missing, 507
/// disk full); Warren's client maps each back to the code.
pub fn rest_status(code: &str) -> u16 {
    match code {
        code::INVALID_ARGUMENT => 400,
        code::PERMISSION_DENIED => 403,
        code::NOT_FOUND => 404,
        code::ALREADY_EXISTS | code::FAILED_PRECONDITION => 409,
        code::OUT_OF_RANGE => 413,
        code::RESOURCE_EXHAUSTED => 507,
        code::UNAVAILABLE => 503,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(errno: Errno) -> &'static str {
        code_for(&std::io::Error::from_raw_os_error(errno as i32))
    }

    #[test]
    fn failures_the_request_caused_are_not_the_agents() {
        assert_eq!(code_of(Errno::EROFS), code::PERMISSION_DENIED);
        assert_eq!(code_of(Errno::ENAMETOOLONG), code::INVALID_ARGUMENT);
        assert_eq!(code_of(Errno::ENOTDIR), code::INVALID_ARGUMENT);
        assert_eq!(code_of(Errno::EISDIR), code::INVALID_ARGUMENT);
        assert_eq!(code_of(Errno::ELOOP), code::INVALID_ARGUMENT);
        assert_eq!(code_of(Errno::EEXIST), code::ALREADY_EXISTS);
        assert_eq!(code_of(Errno::ENOTEMPTY), code::FAILED_PRECONDITION);
        assert_eq!(code_of(Errno::ENOSPC), code::RESOURCE_EXHAUSTED);
        assert_eq!(code_of(Errno::EDQUOT), code::RESOURCE_EXHAUSTED);
        assert_eq!(code_of(Errno::EFBIG), code::OUT_OF_RANGE);
        assert_eq!(code_of(Errno::EIO), code::INTERNAL);
        for errno in [
            Errno::EROFS,
            Errno::ENAMETOOLONG,
            Errno::EEXIST,
            Errno::ENOSPC,
        ] {
            let status = rest_status(code_of(errno));
            assert!(status < 500 || status == 507, "{errno}: {status}");
        }
    }

    #[test]
    fn long_paths_are_cut_in_messages() {
        let long = format!("/{}", "é".repeat(3000));
        let text = shown_text(&long);
        assert!(text.chars().count() < 200, "{text}");
        assert!(text.ends_with(&format!("({} bytes)", long.len())), "{text}");
        assert_eq!(shown_text("/tmp/x"), "/tmp/x");
    }
}
