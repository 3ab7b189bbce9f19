//! The OCI bundle of a sandbox: `config.json` built with `oci-spec`, plus the per-sandbox
//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` bind-mounted over the image's.
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use warren_api::Runtime;

use crate::confinement;

/// Where the agent binary appears inside every sandbox.
pub const AGENT_PATH_IN_SANDBOX: &str = "/.warren/agent";
/// The agent's port on the sandbox address.
pub use warren_backend::AGENT_PORT;
/// Where the agent reads its token: a read-only file only root inside may read, so the token
/// is never in PID 1's environment (which gVisor shows to every user in `/proc/1/environ`).
pub const TOKEN_PATH_IN_SANDBOX: &str = "/.warren/token";

/// Everything the bundle needs to know.
#[derive(Debug, Clone)]
pub struct BundleSpec<'a> {
    /// Sandbox id (also the hostname).
    pub id: &'a str,
    /// Runtime, for the few knobs that differ.
    pub runtime: Runtime,
    /// Merged rootfs path.
    pub rootfs: &'a Path,
    /// Agent binary on the host.
    pub agent: &'a Path,
    /// Network namespace path (gVisor; a runc sandbox's runtime makes its own).
    pub netns_path: &'a str,
    /// cgroup path.
    pub cgroups_path: &'a str,
    /// The agent's access token.
    pub token: &'a str,
    /// The sandbox's main command.
    pub cmd: &'a [String],
    /// Its working directory.
    pub cwd: &'a str,
    /// The user the agent acts as by default.
    pub user: &'a str,
    /// Environment for everything in the sandbox.
    pub env: &'a BTreeMap<String, String>,
    /// CPU cores.
    pub cpu: f64,
    /// Memory limit, MiB.
    pub memory_mb: u64,
    /// Process limit.
    pub pids: u64,
    /// The sandbox's address, for `/etc/hosts`.
    pub ip: std::net::Ipv4Addr,
    /// Name servers for `/etc/resolv.conf`.
    pub resolv_conf: &'a str,
    /// Open files per process (`RLIMIT_NOFILE`, soft and hard).
    pub nofile: u64,
    /// Volumes: host directory, path inside, read-only.
    pub volumes: &'a [(PathBuf, String, bool)],
}

impl BundleSpec<'_> {
    /// Whether the sandbox gets its own user namespace (runc: root inside is
    /// [`confinement::USERNS_HOST_BASE`] outside; gVisor's sentry is already unprivileged).
    pub fn userns(&self) -> bool {
        self.runtime == Runtime::Runc
    }

    /// The host uid and gid that root inside the sandbox has.
    pub fn host_root(&self) -> u32 {
        if self.userns() {
            confinement::USERNS_HOST_BASE
        } else {
            0
        }
    }
}

/// Errors of bundle writing.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// oci-spec refused a value.
    #[error("building config.json: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// gVisor's sentry counts its own host threads against `pids`; below ~1024 it cannot boot, so
/// the sandbox's process budget is given on top of that floor.
pub const GVISOR_THREAD_FLOOR: u64 = 1024;

fn bind(dest: &str, src: &Path, ro: bool) -> Result<Mount, BundleError> {
    let mut opts = vec!["rbind".to_owned(), "nosuid".to_owned(), "nodev".to_owned()];
    if ro {
        opts.push("ro".to_owned());
    }
    Ok(MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(src)
        .options(opts)
        .build()?)
}

/// Writes a file the sandbox sees through a bind mount, owned by root inside (`owner` on the
/// host). Under a 0700 data dir (gVisor) or a 0710 directory only root and runc sandboxes'
/// root may enter (runc), so `mode` matters only inside.
fn write(path: &Path, text: &str, mode: u32, owner: u32) -> Result<(), BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_owned(),
        source,
    };
    // A fresh file each time: an existing one may carry another mode or owner.
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    std::os::unix::fs::fchown(&f, Some(owner), Some(owner)).map_err(io)
}

/// The files [`write_bundle`] writes beside `config.json` for the sandbox to see.
pub const BOUND_FILES: [&str; 4] = ["hostname", "hosts", "resolv.conf", "token"];

/// Writes `config.json` into `bundle_dir` and the `/etc` files and token into `files_dir`.
pub fn write_bundle(
    bundle_dir: &Path,
    files_dir: &Path,
    spec: &BundleSpec<'_>,
) -> Result<(), BundleError> {
    for dir in [bundle_dir, files_dir] {
        fs::create_dir_all(dir).map_err(|source| BundleError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let [hostname, hosts, resolv, token] = BOUND_FILES.map(|f| files_dir.join(f));
    let root = spec.host_root();
    write(&hostname, &format!("{}\n", spec.id), 0o644, root)?;
    write(
        &hosts,
        &format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
            spec.ip, spec.id
        ),
        0o644,
        root,
    )?;
    write(&resolv, spec.resolv_conf, 0o644, root)?;
    write(&token, spec.token, 0o400, root)?;

    let config = build_config(spec, &hostname, &hosts, &resolv, &token)?;
    // config.json holds the user's env: written 0600 from the start, never readable by others.
    let path = bundle_dir.join("config.json");
    let text = serde_json::to_vec(&config).map_err(|e| BundleError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    let _ = fs::remove_file(&path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(&text))
        .map_err(|source| BundleError::Io { path, source })
}

fn build_config(
    spec: &BundleSpec<'_>,
    hostname: &Path,
    hosts: &Path,
    resolv: &Path,
    token: &Path,
) -> Result<Spec, BundleError> {
    // Defaults a sandbox's own env (its image's, its request's) may replace: a key given twice
    // would leave which one wins to each reader.
    let defaults = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("HOSTNAME", spec.id),
    ];
    let mut env: Vec<String> = defaults
        .iter()
        .filter(|(k, _)| !spec.env.contains_key(*k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    env.push(format!("WARREN_AGENT_TOKEN_FILE={TOKEN_PATH_IN_SANDBOX}"));
    env.push(format!("WARREN_AGENT_DEFAULT_USER={}", spec.user));
    if spec.runtime == Runtime::Gvisor {
        // gVisor's host threads count against the host cgroup's `pids` (given
        // GVISOR_THREAD_FLOOR more), so the sandbox's own limit is held by gVisor's cgroupfs,
        // which the agent sets: a fork bomb then stops at `pids` instead of taking the sentry.
        env.push(format!("WARREN_AGENT_PIDS={}", spec.pids));
    } else {
        // The sandbox's processes go before the agent when its memory cgroup runs out (of files,
        // page tables: memory no process's size shows), so the sandbox loses a process, not
        // itself. Raising a score needs no privilege; lowering the agent's would need
        // CAP_SYS_RESOURCE on the host, which not every host's root holds.
        env.push("WARREN_AGENT_CHILD_OOM_SCORE_ADJ=1000".to_owned());
    }
    if !spec.cmd.is_empty() {
        env.push(format!(
            "WARREN_AGENT_CMD={}",
            serde_json::to_string(spec.cmd).unwrap_or_default()
        ));
        env.push(format!("WARREN_AGENT_CWD={}", spec.cwd));
    }

    // Never more than the host lets a process have.
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.min(spec.nofile))
        .unwrap_or(1024);
    let caps = confinement::capabilities();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(vec![AGENT_PATH_IN_SANDBOX.to_owned()])
        .env(env)
        .cwd("/")
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(nofile)
            .soft(nofile)
            .build()?])
        .no_new_privileges(false)
        .build()?;

    let mut mounts: Vec<Mount> = oci_spec::runtime::get_default_mounts();
    // The default /dev/shm holds 64 MiB; browsers and ML code want more. It is memory, so
    // the sandbox's memory limit bounds it anyway: as large as that.
    for m in mounts
        .iter_mut()
        .filter(|m| m.destination() == Path::new("/dev/shm"))
    {
        let mut opts: Vec<String> = m
            .options()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| !o.starts_with("size="))
            .collect();
        opts.push(format!("size={}m", spec.memory_mb.max(1)));
        m.set_options(Some(opts));
    }
    if spec.userns() {
        // In a user namespace no device node can be made, so the runtime binds the host's;
        // named here, CRIU sees them as the bind mounts they are and can checkpoint the
        // sandbox (it refuses mounts it cannot trace to a root).
        for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
            let path = format!("/dev/{dev}");
            mounts.push(
                MountBuilder::default()
                    .destination(&path)
                    .typ("bind")
                    .source(&path)
                    .options(["rbind", "nosuid", "noexec"].map(String::from).to_vec())
                    .build()?,
            );
        }
    }
    mounts.push(bind(AGENT_PATH_IN_SANDBOX, spec.agent, true)?);
    mounts.push(bind("/etc/hostname", hostname, false)?);
    mounts.push(bind("/etc/hosts", hosts, false)?);
    mounts.push(bind("/etc/resolv.conf", resolv, false)?);
    mounts.push(bind(TOKEN_PATH_IN_SANDBOX, token, true)?);
    for (src, dest, ro) in spec.volumes {
        mounts.push(bind(dest, src, *ro)?);
    }

    let memory_bytes =
        i64::try_from(spec.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
    let period: u64 = 100_000;
    let quota = (spec.cpu * period as f64).round() as i64;
    let pids = match spec.runtime {
        Runtime::Gvisor => spec.pids.saturating_add(GVISOR_THREAD_FLOOR),
        Runtime::Runc => spec.pids,
    };
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory_bytes)
                .swap(memory_bytes)
                .build()?,
        )
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(period)
                .build()?,
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(i64::try_from(pids).unwrap_or(i64::MAX))
                .build()?,
        )
        .devices(confinement::device_rules()?)
        .build()?;

    let ns = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    // A runc sandbox's network namespace is made by the runtime inside its user namespace
    // (the host moves the link in between create and start): CRIU checkpoints only namespaces
    // the sandbox's user namespace owns. Its root still cannot configure the network: no
    // `NET_ADMIN` or `NET_RAW` in its bounding set, and no new user namespace to gain them in.
    let network = if spec.userns() {
        ns(LinuxNamespaceType::Network)?
    } else {
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(spec.netns_path)
            .build()?
    };
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid)?,
        ns(LinuxNamespaceType::Ipc)?,
        ns(LinuxNamespaceType::Uts)?,
        ns(LinuxNamespaceType::Mount)?,
        network,
    ];
    let mut linux = LinuxBuilder::default();
    if spec.userns() {
        namespaces.push(ns(LinuxNamespaceType::User)?);
        linux = linux
            .uid_mappings(confinement::id_mappings()?)
            .gid_mappings(confinement::id_mappings()?)
            .seccomp(confinement::seccomp()?);
    }
    let linux = linux
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(spec.cgroups_path)
        .masked_paths(
            [
                "/proc/acpi",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ]
            .map(String::from)
            .to_vec(),
        )
        .readonly_paths(
            [
                "/proc/asound",
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ]
            .map(String::from)
            .to_vec(),
        )
        .build()?;

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(spec.rootfs)
                .readonly(false)
                .build()?,
        )
        .hostname(spec.id)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}
