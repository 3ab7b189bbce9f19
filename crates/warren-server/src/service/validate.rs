//! Checks of create requests: every value a user can get wrong gets a 422 naming it.
use warren_api::CreateSandbox;

use super::ServiceConfig;
use crate::error::ApiError;

/// Defaults for what a request leaves out.
pub const DEFAULT_CPU: f64 = 1.0;
/// Default memory, MiB.
pub const DEFAULT_MEMORY_MB: u64 = 512;
/// Default disk budget, MiB.
pub const DEFAULT_DISK_MB: u64 = 2048;
/// Default process limit.
pub const DEFAULT_PIDS: u64 = 512;
/// Smallest memory limit a sandbox can boot with (gVisor's sentry needs some itself).
pub const MIN_MEMORY_MB: u64 = 16;

fn invalid(msg: String) -> ApiError {
    ApiError::Invalid(msg)
}

/// Validates a create request against the host.
pub fn create(req: &CreateSandbox, cfg: &ServiceConfig) -> Result<(), ApiError> {
    if req.image.trim().is_empty() {
        return Err(invalid("image must not be empty".into()));
    }
    if let Some(cpu) = req.cpu {
        if !(cpu.is_finite() && cpu > 0.0) {
            return Err(invalid(format!(
                "cpu must be a positive number of cores, got {cpu}"
            )));
        }
        if cpu > cfg.host_cpus {
            return Err(invalid(format!(
                "cpu {cpu} is more than this host's {} cores",
                cfg.host_cpus
            )));
        }
    }
    if let Some(m) = req.memory_mb {
        if m < MIN_MEMORY_MB {
            return Err(invalid(format!(
                "memory_mb must be at least {MIN_MEMORY_MB}, got {m}"
            )));
        }
        if m > cfg.host_memory_mb {
            return Err(invalid(format!(
                "memory_mb {m} is more than this host's {} MiB",
                cfg.host_memory_mb
            )));
        }
    }
    if req.disk_mb == Some(0) {
        return Err(invalid("disk_mb must be positive".into()));
    }
    if let Some(p) = req.pids {
        if !(8..=1_000_000).contains(&p) {
            return Err(invalid(format!(
                "pids must be between 8 and 1000000, got {p}"
            )));
        }
    }
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(invalid(format!(
                "env name {k:?} is not a valid variable name"
            )));
        }
    }
    if req.cmd.iter().any(|a| a.contains('\0')) {
        return Err(invalid("cmd must not contain NUL bytes".into()));
    }
    if let Some(u) = &req.user {
        if u.is_empty() || u.len() > 64 || u.contains([':', '/', '\0']) {
            return Err(invalid(format!("user {u:?} is not a valid user name")));
        }
    }
    if let Some(cwd) = &req.cwd {
        if !cwd.starts_with('/') || cwd.contains('\0') {
            return Err(invalid(format!(
                "cwd must be an absolute path, got {cwd:?}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ServiceConfig {
        ServiceConfig {
            default_runtime: warren_api::Runtime::Runc,
            host_cpus: 2.0,
            host_memory_mb: 1024,
            history_retention: std::time::Duration::from_secs(3600),
        }
    }

    fn req() -> CreateSandbox {
        CreateSandbox {
            image: "busybox".into(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_defaults_and_rejects_bad_values() {
        assert!(create(&req(), &cfg()).is_ok());
        for bad in [
            CreateSandbox {
                memory_mb: Some(0),
                ..req()
            },
            CreateSandbox {
                memory_mb: Some(4096),
                ..req()
            },
            CreateSandbox {
                cpu: Some(0.0),
                ..req()
            },
            CreateSandbox {
                cpu: Some(f64::NAN),
                ..req()
            },
            CreateSandbox {
                cpu: Some(3.0),
                ..req()
            },
            CreateSandbox {
                pids: Some(1),
                ..req()
            },
            CreateSandbox {
                cwd: Some("rel".into()),
                ..req()
            },
            CreateSandbox {
                image: " ".into(),
                ..req()
            },
        ] {
            assert!(
                matches!(create(&bad, &cfg()), Err(ApiError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
