//! Checks of create requests: every value a user can get wrong gets a 422 naming it.
use ipnet::Ipv4Net;
use warren_api::{CreateSandbox, Egress};
use warren_local::EgressPolicy;

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
    if req.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
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
        if k.starts_with("WARREN_AGENT_") {
            return Err(invalid(format!(
                "env name {k:?}: WARREN_AGENT_* names are the sandbox agent's own settings"
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
    if let Some(e) = &req.egress {
        egress(e)?;
    }
    Ok(())
}

/// Most networks an allow-list may name (each is one set element of the sandbox's rules).
const MAX_EGRESS_NETS: usize = 256;

/// The firewall policy of an egress setting; 422 naming the first entry that is not an IPv4
/// network.
pub fn egress(e: &Egress) -> Result<EgressPolicy, ApiError> {
    Ok(match e {
        Egress::Allow => EgressPolicy::Allow,
        Egress::Deny => EgressPolicy::Deny,
        Egress::Only(nets) => {
            if nets.len() > MAX_EGRESS_NETS {
                return Err(invalid(format!(
                    "egress.allow may name at most {MAX_EGRESS_NETS} networks, got {}",
                    nets.len()
                )));
            }
            let parsed = nets
                .iter()
                .map(|n| {
                    let n = n.trim();
                    n.parse::<Ipv4Net>()
                        .or_else(|_| n.parse::<std::net::Ipv4Addr>().map(Ipv4Net::from))
                        .map(|net| net.trunc())
                        .map_err(|_| {
                            invalid(format!(
                                "egress.allow: {n:?} is not an IPv4 network (a.b.c.d/len or a.b.c.d); sandboxes have no IPv6"
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            EgressPolicy::Only(parsed)
        }
    })
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
            preview: Default::default(),
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
}
