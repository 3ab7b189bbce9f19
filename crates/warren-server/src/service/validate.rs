//! Checks of requests: every value a user can get wrong gets a 422 naming it and, for sizes,
//! the limit it broke. Each limit sits below what would fail later, less clearly: in the
//! runtime (a CPU quota crun refuses), in `execve` (argument and environment size), or in time
//! arithmetic (a lifetime past the calendar).
use std::collections::BTreeMap;

use warren_api::{CreateSandbox, ExecRequest};

use super::ServiceConfig;
use crate::error::ApiError;

mod egress;
pub use egress::egress;

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
/// Smallest CPU share: the kernel (and so crun) refuses a CFS quota under 1 ms per 100 ms.
pub const MIN_CPU: f64 = 0.01;
/// Disk budget bounds, MiB (16 MiB to 16 TiB: its byte count must fit the metrics' u64).
pub const MIN_DISK_MB: u64 = 16;
/// See [`MIN_DISK_MB`].
pub const MAX_DISK_MB: u64 = 16 << 20;
/// Process limit bounds.
pub const MIN_PIDS: u64 = 8;
/// See [`MIN_PIDS`].
pub const MAX_PIDS: u64 = 1_000_000;
/// Most arguments a command may have (program included).
pub const MAX_ARGS: usize = 4096;
/// Most bytes a command's arguments may add up to (each counted with its NUL, as `execve`
/// does): Linux's limit for one argument, so no single argument can be refused there.
pub const MAX_ARGS_BYTES: usize = 128 << 10;
/// Most variables an `env` may set.
pub const MAX_ENV_VARS: usize = 1000;
/// Most bytes an `env` may add up to (`NAME=value` and a NUL each).
pub const MAX_ENV_BYTES: usize = 128 << 10;
/// Most entries of a sandbox's `metadata`.
pub const MAX_METADATA_ENTRIES: usize = 256;
/// Most bytes of a sandbox's `metadata`, keys and values together.
pub const MAX_METADATA_BYTES: usize = 64 << 10;
/// Longest lifetime or exec timeout, seconds (30 days); `0` means no limit instead.
pub const MAX_TIMEOUT_S: u64 = 30 * 86_400;
/// Longest `cwd` (Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;

fn invalid(msg: String) -> ApiError {
    ApiError::Invalid(msg)
}

/// `n` bytes with its binary unit, when it has a whole one.
fn bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{n} ({} MiB)", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{n} ({} KiB)", n >> 10),
        n => n.to_string(),
    }
}

/// Validates a create request against the host.
pub fn create(req: &CreateSandbox, cfg: &ServiceConfig) -> Result<(), ApiError> {
    if req.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        return Err(invalid("image must not be empty".into()));
    }
    if let Some(host) = &req.request_host {
        request_host(host)?;
    }
    if let Some(cpu) = req.cpu {
        if !(cpu.is_finite() && cpu > 0.0) {
            return Err(invalid(format!(
                "cpu must be a positive number of cores, got {cpu}"
            )));
        }
        if cpu < MIN_CPU {
            return Err(invalid(format!(
                "cpu must be at least {MIN_CPU} cores (the smallest CPU quota, 1 ms per 100 ms), \
                 got {cpu}"
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
    if let Some(d) = req.disk_mb {
        if !(MIN_DISK_MB..=MAX_DISK_MB).contains(&d) {
            return Err(invalid(format!(
                "disk_mb must be between {MIN_DISK_MB} and {MAX_DISK_MB} (16 TiB), got {d}"
            )));
        }
    }
    if let Some(p) = req.pids {
        if !(MIN_PIDS..=MAX_PIDS).contains(&p) {
            return Err(invalid(format!(
                "pids must be between {MIN_PIDS} and {MAX_PIDS}, got {p}"
            )));
        }
    }
    env(&req.env)?;
    if let Some(k) = req.env.keys().find(|k| k.starts_with("WARREN_AGENT_")) {
        return Err(invalid(format!(
            "env name {k:?}: WARREN_AGENT_* names are the sandbox agent's own settings"
        )));
    }
    // An empty `cmd` takes the image's.
    if !req.cmd.is_empty() {
        cmd(&req.cmd)?;
    }
    metadata(&req.metadata)?;
    if let Some(t) = req.timeout_s {
        timeout_s(t, "timeout_s")?;
    }
    if let Some(u) = &req.user {
        if u.is_empty() || u.len() > 64 || u.contains([':', '/', '\0']) {
            return Err(invalid(format!("user {u:?} is not a valid user name")));
        }
    }
    if let Some(c) = &req.cwd {
        cwd(c)?;
    }
    if let Some(e) = &req.egress {
        egress(e)?;
    }
    Ok(())
}

/// Validates an exec request (what the service does not check itself).
pub fn exec(req: &ExecRequest) -> Result<(), ApiError> {
    if req.cmd.is_empty() {
        return Err(invalid("cmd must name a program".into()));
    }
    cmd(&req.cmd)?;
    env(&req.env)?;
    if let Some(c) = &req.cwd {
        cwd(c)?;
    }
    if let Some(t) = req.timeout_s {
        timeout_s(t, "timeout_s")?;
    }
    Ok(())
}

/// A command's arguments (program first): no NUL, at most [`MAX_ARGS`] of them and
/// [`MAX_ARGS_BYTES`] in all.
pub fn cmd(args: &[String]) -> Result<(), ApiError> {
    if args.iter().any(|a| a.contains('\0')) {
        return Err(invalid("cmd must not contain NUL bytes".into()));
    }
    if args.len() > MAX_ARGS {
        return Err(invalid(format!(
            "cmd has {} arguments; at most {MAX_ARGS} are allowed",
            args.len()
        )));
    }
    let size: usize = args.iter().map(|a| a.len() + 1).sum();
    if size > MAX_ARGS_BYTES {
        return Err(invalid(format!(
            "cmd is {size} bytes long; at most {} are allowed in all",
            bytes(MAX_ARGS_BYTES)
        )));
    }
    Ok(())
}

/// An environment: names `execve` can pass, at most [`MAX_ENV_VARS`] variables and
/// [`MAX_ENV_BYTES`] in all.
pub fn env(env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if env.len() > MAX_ENV_VARS {
        return Err(invalid(format!(
            "env sets {} variables; at most {MAX_ENV_VARS} are allowed",
            env.len()
        )));
    }
    let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if size > MAX_ENV_BYTES {
        return Err(invalid(format!(
            "env is {size} bytes long; at most {} are allowed in all",
            bytes(MAX_ENV_BYTES)
        )));
    }
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(invalid(format!(
                "env name {k:?} is not a valid variable name"
            )));
        }
    }
    Ok(())
}

fn metadata(m: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(format!(
            "metadata has {} entries; at most {MAX_METADATA_ENTRIES} are allowed",
            m.len()
        )));
    }
    let size: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_METADATA_BYTES {
        return Err(invalid(format!(
            "metadata is {size} bytes long; at most {} are allowed in all",
            bytes(MAX_METADATA_BYTES)
        )));
    }
    Ok(())
}

/// A lifetime or timeout named `what`: `0` (no limit) or at most [`MAX_TIMEOUT_S`].
pub fn timeout_s(t: u64, what: &str) -> Result<(), ApiError> {
    if t > MAX_TIMEOUT_S {
        return Err(invalid(format!(
            "{what} {t} is more than {MAX_TIMEOUT_S} seconds (30 days); 0 means no limit"
        )));
    }
    Ok(())
}

fn cwd(cwd: &str) -> Result<(), ApiError> {
    if !cwd.starts_with('/') || cwd.contains('\0') {
        return Err(invalid(format!(
            "cwd must be an absolute path, got {cwd:?}"
        )));
    }
    if cwd.len() > MAX_PATH {
        return Err(invalid(format!(
            "cwd is {} bytes long; at most {MAX_PATH} are allowed",
            cwd.len()
        )));
    }
    Ok(())
}

/// A `request_host`: `host` or `host:port`, ASCII, where `${PORT}` may stand for the port.
pub fn request_host(raw: &str) -> Result<(), ApiError> {
    let probe = raw.replace("${PORT}", "1");
    let ok = !probe.is_empty()
        && probe.len() <= 255
        && probe
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        && probe.parse::<axum::http::uri::Authority>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "request_host {raw:?} is not a valid host (ASCII `host` or `host:port`, `${{PORT}}` \
             for the port)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_api::Egress;
    use warren_backend::EgressPolicy;

    fn cfg() -> ServiceConfig {
        ServiceConfig {
            default_runtime: warren_api::Runtime::Runc,
            host_cpus: 2.0,
            host_memory_mb: 1024,
            history_retention: std::time::Duration::from_secs(3600),
            audit_retention: std::time::Duration::from_secs(3600),
            ready_timeout: std::time::Duration::from_secs(120),
            preview: Default::default(),
            operation_workers: 1,
            server: crate::service::cluster::Identity {
                name: "test".into(),
                url: "http://127.0.0.1:8080".into(),
                timeout: std::time::Duration::from_secs(30),
            },
        }
    }

    fn req() -> CreateSandbox {
        CreateSandbox {
            image: Some("busybox".into()),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_defaults_and_rejects_bad_values() {
        assert!(create(&req(), &cfg()).is_ok());
        assert_eq!(
            egress(&Egress::Only(vec![
                "198.18.0.5/24".into(),
                " 1.2.3.4 ".into()
            ]))
            .expect("valid"),
            EgressPolicy::Only(vec![
                "198.18.0.0/24".parse().expect("net"),
                "1.2.3.4/32".parse().expect("net"),
            ])
        );
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
                image: Some(" ".into()),
                ..req()
            },
            CreateSandbox {
                egress: Some(Egress::Only(vec!["10.0.0.0/8".into(), "fe80::/10".into()])),
                ..req()
            },
            CreateSandbox {
                egress: Some(Egress::Only(vec!["10.0.0.300".into()])),
                ..req()
            },
        ] {
            assert!(
                matches!(create(&bad, &cfg()), Err(ApiError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits_hold_at_their_edges_and_name_themselves() {
        let many = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        let vars = |n: usize| {
            (0..n)
                .map(|i| (format!("V{i}"), String::new()))
                .collect::<BTreeMap<_, _>>()
        };
        let ok = [
            CreateSandbox {
                cpu: Some(MIN_CPU),
                disk_mb: Some(MIN_DISK_MB),
                pids: Some(MAX_PIDS),
                timeout_s: Some(MAX_TIMEOUT_S),
                cmd: many(MAX_ARGS),
                env: vars(MAX_ENV_VARS),
                ..req()
            },
            CreateSandbox {
                timeout_s: Some(0),
                disk_mb: Some(MAX_DISK_MB),
                cmd: vec!["x".repeat(MAX_ARGS_BYTES - 1)],
                ..req()
            },
        ];
        for good in ok {
            assert!(create(&good, &cfg()).is_ok(), "{good:?}");
        }
        let bad = [
            (
                CreateSandbox {
                    cpu: Some(0.0001),
                    ..req()
                },
                "0.01",
            ),
            (
                CreateSandbox {
                    disk_mb: Some(1),
                    ..req()
                },
                "16777216",
            ),
            (
                CreateSandbox {
                    disk_mb: Some(u64::MAX),
                    ..req()
                },
                "16777216",
            ),
            (
                CreateSandbox {
                    timeout_s: Some(u64::MAX),
                    ..req()
                },
                "2592000",
            ),
            (
                CreateSandbox {
                    cmd: many(MAX_ARGS + 1),
                    ..req()
                },
                "4096",
            ),
            (
                CreateSandbox {
                    cmd: vec!["x".repeat(MAX_ARGS_BYTES)],
                    ..req()
                },
                "131072 (128 KiB)",
            ),
            (
                CreateSandbox {
                    env: vars(MAX_ENV_VARS + 1),
                    ..req()
                },
                "1000",
            ),
            (
                CreateSandbox {
                    env: [("BIG".to_owned(), "x".repeat(MAX_ENV_BYTES))].into(),
                    ..req()
                },
                "131072 (128 KiB)",
            ),
            (
                CreateSandbox {
                    metadata: vars(MAX_METADATA_ENTRIES + 1),
                    ..req()
                },
                "256",
            ),
            (
                CreateSandbox {
                    metadata: [("k".to_owned(), "x".repeat(MAX_METADATA_BYTES))].into(),
                    ..req()
                },
                "65536 (64 KiB)",
            ),
            (
                CreateSandbox {
                    cwd: Some(format!("/{}", "d".repeat(MAX_PATH))),
                    ..req()
                },
                "4096",
            ),
        ];
        for (req, limit) in bad {
            match create(&req, &cfg()) {
                Err(ApiError::Invalid(msg)) => assert!(msg.contains(limit), "{msg}"),
                other => panic!("{other:?} for {req:?}"),
            }
        }
        let exec_req = |cmd: Vec<String>| ExecRequest {
            cmd,
            ..ExecRequest::default()
        };
        assert!(exec(&exec_req(many(MAX_ARGS))).is_ok());
        assert!(exec(&exec_req(many(MAX_ARGS + 1))).is_err());
        assert!(exec(&exec_req(Vec::new())).is_err());
        let mut forever = exec_req(many(1));
        forever.timeout_s = Some(u64::MAX);
        assert!(exec(&forever).is_err());
        forever.timeout_s = Some(0);
        assert!(exec(&forever).is_ok());
    }
}
