//! Warren's server: the axum application (`/v1` API, health), API-key auth, the sandbox
//! service that drives the store and backend, and the reconciler.
#![deny(missing_docs)]

pub mod agent_bin;
pub mod auth;
pub mod body_schema;
mod console;
mod e2b;
pub mod error;
pub mod idempotency;
pub mod listen;
pub mod logs;
pub mod metrics;
pub mod operator;
pub mod proxy;
pub mod reconciler;
mod routes;
pub mod secrets;
pub mod service;
pub mod timed_store;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};
use warren_api::Runtime;
use warren_local::{LocalBackend, LocalConfig};
use warren_store::{PostgresStore, SqliteStore};

pub use routes::router;
use service::{Service, ServiceConfig};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The sandbox service.
    pub service: Service,
    /// Keys already read from the store, with their rate limiters.
    pub known_keys: Arc<auth::KnownKeys>,
    /// The preview proxy.
    pub proxy: Arc<proxy::Proxy>,
    /// The key secret values are sealed with.
    pub sealer: Arc<secrets::Sealer>,
    /// E2B template builds asked for, and their upload URLs.
    pub e2b_templates: Arc<e2b::templates::Requests>,
    /// The data directory (its filesystem's free space is a metric).
    pub data_dir: Arc<PathBuf>,
    /// The audit log's writer.
    pub audit: auth::AuditLog,
}

/// Where the server's certificate comes from, when it serves TLS.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files given by the user.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A local CA made (once) in the data dir, and a wildcard certificate for the domain.
    SelfSigned,
}

/// Operations carried out at once unless `--operation-workers` says otherwise: enough that
/// creates never queue behind one another on a host this size, few enough that a burst
/// cannot start thousands of runtimes at once.
pub const DEFAULT_OPERATION_WORKERS: usize = 64;

/// How long the audit log is kept unless `--audit-retention` says otherwise.
pub const DEFAULT_AUDIT_RETENTION: std::time::Duration = std::time::Duration::from_secs(90 * 86400);

/// Settings of `warren serve`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Runtime for requests that name none.
    pub default_runtime: Runtime,
    /// Address range for sandboxes.
    pub subnet: Ipv4Net,
    /// Network leases kept ready ahead of creates.
    pub warm_leases: usize,
    /// Set the kernel's `rcu_expedited` at start (host-wide; faster container starts).
    pub expedite_rcu: bool,
    /// Remount the cgroup2 hierarchy with `favordynmods` at start (host-wide, until reboot).
    pub favor_dynmods: bool,
    /// How long command history is kept.
    pub history_retention: std::time::Duration,
    /// How long the audit log is kept.
    pub audit_retention: std::time::Duration,
    /// How long a create waits for its image's ready command.
    pub ready_timeout: std::time::Duration,
    /// Operations (creates, stops, pulls, ...) carried out at once.
    pub operation_workers: usize,
    /// Name servers for sandboxes (empty: the host's).
    pub dns: Vec<std::net::Ipv4Addr>,
    /// Registry credentials (`--registry-auth`) and plain-HTTP registries for pulls.
    pub pull: warren_local::pull::PullConfig,
    /// Domain of preview URLs (`<id>-<port>.<domain>`).
    pub domain: String,
    /// A second listener serving only the preview proxy.
    pub proxy_listen: Option<SocketAddr>,
    /// TLS on both listeners.
    pub tls: Option<TlsSource>,
    /// Threads serving each listener's connections (`None`: [`listen::default_workers`]).
    pub http_workers: Option<usize>,
    /// Open files per sandbox process (`RLIMIT_NOFILE`).
    pub sandbox_nofile: u64,
    /// Raise the host's `fs.file-max` at start (host-wide).
    pub raise_file_max: bool,
    /// Raise the host's `kernel.pid_max` at start (host-wide).
    pub raise_pid_max: bool,
    /// Which `runsc`, platform and network stack gVisor sandboxes use.
    pub gvisor: warren_local::runtime::GvisorConfig,
    /// How much of sandboxes' output is kept (exec answers, logs).
    pub output: service::OutputLimits,
    /// The database: a PostgreSQL URL (`postgres://…`) or a SQLite file (`None`:
    /// `warren.db` in the data dir).
    pub database: Option<String>,
    /// Where pause images are kept besides local disk: `s3://bucket/prefix` or `file:///dir`.
    pub object_store: Option<String>,
    /// This server's name among those sharing the database (`None`: the host's name and the
    /// data dir's tag).
    pub server_name: Option<String>,
    /// Where other servers' clients are sent for this server's sandboxes (`None`: the
    /// listen address, the host's name for an unspecified one).
    pub advertise_url: Option<String>,
    /// How long a server sharing the database may go unseen before another takes over.
    pub server_timeout: std::time::Duration,
    /// Run sandboxes as Pods on this Kubernetes cluster instead of on this host.
    pub kubernetes: Option<warren_kube::KubeConfig>,
}

/// How long a server may go unseen before another takes over its sandboxes, unless
/// `--server-timeout` says otherwise: ten reconciler passes.
pub const DEFAULT_SERVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the name a server chose for itself is kept, so a restart (even under another host
/// name) is the same server.
const SERVER_NAME_FILE: &str = "server-name";

/// This server's name: `--server-name`, or the one it chose at its first start (the host's
/// name and the data dir's tag), kept in the data dir.
fn server_name(given: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    let valid = |n: &str| {
        (1..=63).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if let Some(n) = given {
        anyhow::ensure!(
            valid(n),
            "--server-name {n:?}: 1 to 63 letters, digits, '.', '_' or '-'"
        );
        return Ok(n.to_owned());
    }
    let kept = data_dir.join(SERVER_NAME_FILE);
    if let Ok(n) = std::fs::read_to_string(&kept) {
        let n = n.trim();
        if valid(n) {
            return Ok(n.to_owned());
        }
    }
    let made: String = format!("{}-{}", hostname(), host_tag(data_dir))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    std::fs::write(&kept, format!("{made}\n"))
        .with_context(|| format!("keeping the server's name in {}", kept.display()))?;
    Ok(made)
}

/// The host's name (`/proc/sys/kernel/hostname`), or `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("warren-data"),
            default_runtime: Runtime::Gvisor,
            subnet: Ipv4Net::new(std::net::Ipv4Addr::new(10, 77, 0, 0), 16).unwrap_or_default(),
            warm_leases: 2,
            expedite_rcu: false,
            favor_dynmods: true,
            history_retention: std::time::Duration::from_secs(5 * 86400),
            audit_retention: DEFAULT_AUDIT_RETENTION,
            ready_timeout: std::time::Duration::from_secs(120),
            operation_workers: DEFAULT_OPERATION_WORKERS,
            dns: Vec::new(),
            pull: Default::default(),
            domain: "localhost".into(),
            proxy_listen: None,
            tls: None,
            http_workers: None,
            sandbox_nofile: 1_048_576,
            raise_file_max: true,
            raise_pid_max: true,
            gvisor: Default::default(),
            output: Default::default(),
            database: None,
            object_store: None,
            server_name: None,
            advertise_url: None,
            server_timeout: DEFAULT_SERVER_TIMEOUT,
            kubernetes: None,
        }
    }
}

/// A mutex's guard, also after a panic while it was held: the maps it guards stay usable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Four base32 characters naming this server's host resources, derived from its data dir so
/// two servers on one host never share names.
pub fn host_tag(data_dir: &Path) -> String {
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    data_encoding::BASE32_NOPAD.encode(&digest)[..4].to_ascii_lowercase()
}

fn host_memory_mb() -> u64 {
    meminfo_kib("MemTotal").map(|kb| kb / 1024).unwrap_or(1024)
}

/// A field of `/proc/meminfo` (`MemTotal`, `MemAvailable`, ...), in KiB.
pub(crate) fn meminfo_kib(field: &str) -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// A ready server: state built, admin key ensured, sandboxes reconciled.
pub struct Server {
    /// Handler state.
    pub state: AppState,
    /// The admin key, when this start created it (print it once).
    pub new_admin_key: Option<String>,
    cfg: ServerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The operator of `Sandbox` resources, on the Kubernetes backend.
    operator: Option<operator::Operator>,
}

impl Server {
    /// Prepares everything short of listening.
    pub async fn build(cfg: ServerConfig) -> anyhow::Result<Server> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
        // Before anything is written into it: the database and logs hold tokens and output.
        std::fs::set_permissions(
            &cfg.data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .with_context(|| format!("making {} private (0700)", cfg.data_dir.display()))?;
        let data_dir = cfg
            .data_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", cfg.data_dir.display()))?;
        let agent = agent_bin::install(&data_dir).context("installing the agent binary")?;
        // Several reconciler passes (3 s each) at least, and no more than a day.
        anyhow::ensure!(
            (std::time::Duration::from_secs(10)..=std::time::Duration::from_secs(86_400))
                .contains(&cfg.server_timeout),
            "--server-timeout must be from 10s to 1d"
        );
        let store: Arc<dyn warren_store::Store> = match cfg.database.as_deref() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Arc::new(PostgresStore::connect(url).await.with_context(|| {
                    format!("connecting to the database {}", without_password(url))
                })?)
            }
            other => {
                let db = other
                    .map(PathBuf::from)
                    .unwrap_or_else(|| data_dir.join("warren.db"));
                Arc::new(
                    SqliteStore::open(&db)
                        .await
                        .with_context(|| format!("opening the database {}", db.display()))?,
                )
            }
        };
        let offsite = match &cfg.object_store {
            None => None,
            Some(url) => {
                let o = warren_local::offsite::Offsite::open(url)
                    .with_context(|| format!("--object-store {url}"))?;
                o.check()
                    .await
                    .with_context(|| format!("--object-store {url}: the store does not answer"))?;
                Some(o)
            }
        };
        let new_admin_key = auth::ensure_admin_key(store.as_ref(), &data_dir).await?;
        let name = server_name(cfg.server_name.as_deref(), &data_dir)?;
        // None of this server's calls runs before it does: keys its last run left claimed go
        // (other servers' calls may be running).
        store
            .drop_running_request_keys(&name)
            .await
            .context("clearing idempotency keys of calls the last run cut off")?;
        let sealer = Arc::new(secrets::Sealer::open(&data_dir)?);
        let mut operator = None;
        let (backend, layers): (
            Arc<dyn warren_backend::Backend>,
            Arc<dyn warren_backend::LayerStore>,
        ) = match &cfg.kubernetes {
            Some(kube) => {
                let kube = warren_kube::KubeConfig {
                    server: name.clone(),
                    ..kube.clone()
                };
                let backend = warren_kube::KubeBackend::connect(kube)
                    .await
                    .context("--backend kubernetes")?;
                if backend.config().operator {
                    let client = backend.client().clone();
                    let ns = backend
                        .config()
                        .lease_namespace
                        .clone()
                        .unwrap_or_else(|| client.default_namespace().to_owned());
                    let op = operator::Operator::new(client, backend.config().clone(), ns);
                    op.install_definitions()
                        .await
                        .context("--kube-operator (false leaves Sandbox resources alone)")?;
                    operator = Some(op);
                }
                let layers = warren_local::LocalLayers::open(&data_dir, &cfg.pull)?;
                (Arc::new(backend), Arc::new(layers))
            }
            None => {
                let backend = LocalBackend::new(LocalConfig {
                    tag: host_tag(&data_dir),
                    data_dir: data_dir.clone(),
                    subnet: cfg.subnet,
                    agent_binary: agent,
                    warm_leases: cfg.warm_leases,
                    expedite_rcu: cfg.expedite_rcu,
                    favor_dynmods: cfg.favor_dynmods,
                    dns: cfg.dns.clone(),
                    pull: cfg.pull.clone(),
                    nofile: cfg.sandbox_nofile,
                    raise_file_max: cfg.raise_file_max,
                    raise_pid_max: cfg.raise_pid_max,
                    gvisor: cfg.gvisor.clone(),
                    offsite,
                })?;
                let layers = Arc::new(backend.layer_store());
                (Arc::new(backend), layers)
            }
        };
        let service = Service::new(
            store,
            backend,
            layers,
            ServiceConfig {
                default_runtime: cfg.default_runtime,
                host_cpus: std::thread::available_parallelism()
                    .map(|n| n.get() as f64)
                    .unwrap_or(1.0),
                host_memory_mb: host_memory_mb(),
                history_retention: cfg.history_retention,
                audit_retention: cfg.audit_retention,
                ready_timeout: cfg.ready_timeout,
                operation_workers: cfg.operation_workers,
                server: service::cluster::Identity {
                    name: name.clone(),
                    url: cfg.advertise_url.clone().unwrap_or_else(|| {
                        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
                        let host = if cfg.listen.ip().is_unspecified() {
                            hostname()
                        } else {
                            cfg.listen.ip().to_string()
                        };
                        format!("{scheme}://{host}:{}", cfg.listen.port())
                    }),
                    timeout: cfg.server_timeout,
                },
                preview: service::PreviewUrls {
                    scheme: if cfg.tls.is_some() { "https" } else { "http" },
                    domain: cfg.domain.trim_end_matches('.').to_ascii_lowercase(),
                    port: cfg.proxy_listen.unwrap_or(cfg.listen).port(),
                },
            },
            cfg.output,
        );
        service.set_sealer(sealer.clone());
        let tls = match &cfg.tls {
            Some(source) => {
                Some(tls::server_config(source, &data_dir, &cfg.domain).context("setting up TLS")?)
            }
            None => None,
        };
        let adopted = service
            .adopt_hostless()
            .await
            .context("naming this server in the rows from before")?;
        if adopted > 0 {
            tracing::info!("{adopted} sandbox(es) from before servers were named are this one's");
        }
        service.heartbeat().await;
        // Its own timer, not the reconciler's: a long pass (or start) must not make this
        // server look gone to the others.
        tokio::spawn(reconciler::keep_alive(service.clone()));
        let released = service.release_taken_over().await?;
        if released > 0 {
            tracing::warn!("{released} sandbox(es) another server reported lost while this one was away: released");
        }
        reconciler::pass(&service).await;
        service.images().clean_build_leftovers().await;
        service.prepare_network().await?;
        // After the reconciler's pass (sandboxes' states settled) and the network's set-up
        // (a resumed create needs it).
        let left = service.operations().recover().await?;
        if left > 0 {
            tracing::info!("{left} operation(s) a restart interrupted: resumed or settled");
        }
        Ok(Server {
            state: AppState {
                audit: auth::AuditLog::start(service.store_arc()),
                service,
                known_keys: Arc::default(),
                proxy: Arc::new(proxy::Proxy::new(&cfg.domain)),
                sealer,
                e2b_templates: Arc::default(),
                data_dir: Arc::new(data_dir.clone()),
            },
            new_admin_key,
            cfg,
            tls,
            operator,
        })
    }

    /// Serves until SIGINT/SIGTERM: the API (with the preview proxy) on `listen`, and the
    /// proxy alone on `proxy_listen` when given. Sandboxes keep running after the server stops.
    pub async fn serve(self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.cfg.listen)
            .await
            .with_context(|| format!("listening on {}", self.cfg.listen))?;
        let proxy_listener = match self.cfg.proxy_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening on {addr} (--proxy-listen)"))?,
            ),
            None => None,
        };
        let service = self.state.service.clone();
        let workers = self
            .cfg
            .http_workers
            .unwrap_or_else(listen::default_workers);
        tracing::info!("serving HTTP on {workers} worker thread(s) per listener");
        tokio::spawn(reconciler::run(service.clone()));
        tokio::spawn(service.clone().keep_deadlines());
        tokio::spawn(reconciler::keep_names_fresh(service.clone()));
        let operator = self
            .operator
            .clone()
            .map(|op| tokio::spawn(op.run(service.clone())));
        let sampler = service.clone();
        tokio::spawn(async move { sampler.metrics().sample_forever().await });
        let stopping = service.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stopping.begin_shutdown();
        });
        let proxy_task = proxy_listener.map(|l| {
            tokio::spawn(listen::serve(
                l,
                self.tls.clone(),
                proxy::FrontDoor::proxy_only(self.state.clone()),
                workers,
                service.shutting_down(),
            ))
        });
        let app = proxy::FrontDoor::with_api(self.state.clone(), router(self.state));
        listen::serve(listener, self.tls, app, workers, service.shutting_down())
            .await
            .context("serving")?;
        if let Some(task) = proxy_task {
            match task.await {
                Ok(Err(e)) => tracing::warn!("proxy listener: {e}"),
                Err(e) => tracing::warn!("proxy listener: {e}"),
                Ok(Ok(())) => {}
            }
        }
        // No refill may make a lease after the drain (nor bring the shared rules back).
        service.begin_shutdown();
        service.refills_done().await;
        // The Lease given back, so another server leads at once (a few seconds at most).
        if let Some(task) = operator {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        service.backend().drain_warm().await;
        // What the last calls journaled (history, log events) is written before the end.
        service.processes().journal_written().await;
        service.leave().await;
        // Sandboxes outlive the server; only when none of its own is left is the host's
        // shared state tidied.
        // A store that fails this read is asked again: leaving the shared state behind is
        // the worse outcome, and removing it under live sandboxes is never done.
        let mut tries = 0;
        loop {
            match service.own_sandboxes().await {
                Ok(l) if l.is_empty() => {
                    service.backend().remove_shared().await;
                    break;
                }
                Ok(l) => {
                    tracing::info!(
                        "{} sandboxes of this server remain: the host's shared state stays",
                        l.len()
                    );
                    break;
                }
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::warn!("listing this server's sandboxes at the stop: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::warn!(
                        "listing this server's sandboxes at the stop: {e}; the host's shared \
                         state stays"
                    );
                    break;
                }
            }
        }
        Ok(())
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A database URL fit for messages: its password replaced.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
