//! The sandbox service: validates, records intent in the store, then drives the backend.
//! Handlers call it; it speaks only to the [`Store`] and [`Backend`] traits and the agent.
mod addresses;
pub mod build;
pub mod cluster;
mod connect;
mod exec;
mod expiry;
mod files;
mod fork;
mod history;
mod idempotent;
mod images;
mod lifecycle;
pub mod operations;
mod pause;
mod pools;
mod preview;
mod provision;
mod pty;
mod pull;
pub(crate) mod quotas;
mod snapshots;
mod usage;
pub(crate) mod validate;
mod volumes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use warren_agent::AgentClient;
use warren_api::{Runtime, SandboxId};
use warren_backend::{Backend, LayerStore};
use warren_store::{SandboxRecord, Store};

pub use exec::{exit_code, ExecEvent, ExecStream};
pub(crate) use images::upload_failed;
pub use preview::{PreviewRoute, PreviewUrls};
pub use pty::PtySession;
pub(crate) use volumes::valid_name as validate_snapshot_name;

use crate::error::ApiError;
use crate::logs::LogHub;

/// Settings the service needs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Runtime when a request names none.
    pub default_runtime: Runtime,
    /// CPUs of the host (requests may not ask for more).
    pub host_cpus: f64,
    /// Memory of the host in MiB (requests may not ask for more).
    pub host_memory_mb: u64,
    /// How long command history is kept.
    pub history_retention: std::time::Duration,
    /// How long the audit log is kept.
    pub audit_retention: std::time::Duration,
    /// How long a create waits for its image's ready command.
    pub ready_timeout: std::time::Duration,
    /// How preview URLs are spelled.
    pub preview: PreviewUrls,
    /// Operations carried out at once (more wait, highest priority first).
    pub operation_workers: usize,
    /// Who this server is among those sharing its database.
    pub server: cluster::Identity,
}

/// What `/v1/events` tells.
#[derive(Debug, Clone)]
pub enum Event {
    /// A sandbox changed state.
    Sandbox(Box<warren_api::Sandbox>),
    /// An operation was queued, began, or ended.
    Operation(warren_api::Operation),
}

/// How much of a sandbox's output the server keeps: in a plain exec's answer and in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Bytes of each stream a plain (non-streamed) exec answers with; the rest is counted
    /// and dropped (`truncated`).
    pub exec_output: usize,
    /// What the main command's output may write to the log.
    pub logs: crate::logs::LogLimits,
}

/// Default [`OutputLimits::exec_output`]: 10 MiB per stream.
pub const DEFAULT_EXEC_OUTPUT_LIMIT: usize = 10 << 20;

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            exec_output: DEFAULT_EXEC_OUTPUT_LIMIT,
            logs: Default::default(),
        }
    }
}

/// Declares the view of the service that holds one concern's operations: they live in that
/// concern's modules, and reach the shared core (store, backend, per-sandbox locks, agents)
/// through `Deref`.
macro_rules! concern {
    ($(#[$doc:meta])* $name:ident, $accessor:ident) => {
        $(#[$doc])*
        pub struct $name<'a>(&'a Service);

        impl std::ops::Deref for $name<'_> {
            type Target = Service;
            fn deref(&self) -> &Service {
                self.0
            }
        }

        impl Service {
            #[doc = concat!("The service's [`", stringify!($name), "`].")]
            pub fn $accessor(&self) -> $name<'_> {
                $name(self)
            }
        }
    };
}

concern!(
    /// Sandboxes' lifecycle: made, listed, started, stopped, paused, resumed, forked,
    /// connected to, timed out and deleted.
    Sandboxes,
    sandboxes
);
concern!(
    /// Operations: the durable record of what the API was asked to do, carried out by the
    /// server's workers.
    Operations,
    operations
);
concern!(
    /// Images: imports, registry pulls, builds, tags, and layer collection.
    Images,
    images
);
concern!(
    /// What runs inside sandboxes: commands (plain and streamed), terminals, and their
    /// history.
    Processes,
    processes
);
concern!(
    /// Sandboxes' files: read, written, listed, watched.
    Files,
    files
);
concern!(
    /// Preview URLs: routes to sandboxes' ports, cached for the proxy.
    Previews,
    previews
);
concern!(
    /// Volumes: made, mounted by sandboxes, backed up, removed.
    Volumes,
    volumes
);
concern!(
    /// Warm pools of ready sandboxes.
    Pools,
    pools
);
concern!(
    /// Snapshots of paused sandboxes, and sandboxes made from them.
    Snapshots,
    snapshots
);
concern!(
    /// Resource samples and the figures made of them.
    Metrics,
    metrics
);

/// The sandbox service, shared by every handler and the reconciler.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    backend: Arc<dyn Backend>,
    layers: Arc<dyn LayerStore>,
    cfg: ServiceConfig,
    output: OutputLimits,
    // One lock per sandbox so lifecycle operations on it never interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    // Recent resource samples per sandbox (E2B's metrics are a series since the start).
    samples: Mutex<HashMap<String, usage::Series>>,
    // Layer collection (write side) against everything between storing or choosing layers and
    // recording what uses them: pulls, imports, creates (read side).
    images_gc: tokio::sync::RwLock<()>,
    // Held (shared) from a create's volume check until the sandbox is recorded, so a volume
    // is never removed under a sandbox about to mount it.
    volumes_gc: tokio::sync::RwLock<()>,
    // Sandboxes taken from each warm pool since the server started.
    pool_claims: Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
    // Network lease allocation reads then writes the store: one allocation at a time.
    net_alloc: tokio::sync::Mutex<()>,
    agents: Mutex<HashMap<String, AgentClient>>,
    routes: Mutex<HashMap<String, Arc<PreviewRoute>>>,
    // Bumped by every change to `routes`, so a lookup racing a change does not cache stale.
    routes_epoch: std::sync::atomic::AtomicU64,
    // The other servers on the database, as the last heartbeat read them.
    peers: Mutex<cluster::Peers>,
    refilling: std::sync::atomic::AtomicBool,
    logs: LogHub,
    events: tokio::sync::broadcast::Sender<Event>,
    ops: operations::OpQueue,
    telemetry: crate::metrics::Metrics,
    shutdown: tokio::sync::watch::Sender<bool>,
    journal: tokio::sync::mpsc::UnboundedSender<Journal>,
    // Sandboxes being reaped now (so the timer queue and the reconciler never both do it).
    reaping: Mutex<std::collections::HashSet<SandboxId>>,
    // Image builds, running or finished within the hour.
    builds: Mutex<HashMap<String, Arc<build::Build>>>,
    // Opens the secrets a sandbox's environment refers to, when it is made.
    sealer: std::sync::OnceLock<Arc<crate::secrets::Sealer>>,
    // Deadlines to the timer queue (`expiry.rs`), and its receiving end until it starts.
    expiries: tokio::sync::mpsc::UnboundedSender<expiry::Change>,
    expiry_queue: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<expiry::Change>>>,
    // The server's main runtime. Work that outlives a request (warm-lease refills, background
    // provisioning) goes there: a listener thread's runtime ends with the listener, cancelling
    // whatever it still holds.
    runtime: tokio::runtime::Handle,
}

/// Records that describe what happened but decide nothing (lifecycle log events, provisioning
/// steps), written in order by one background task, off the path of the operation itself.
pub(crate) enum Journal {
    /// A lifecycle event for the sandbox's log.
    Event(SandboxId, String),
    /// A history entry.
    Exec(SandboxId, Box<warren_api::ExecRecord>),
    /// The sandbox is gone: drop its log (after everything queued before).
    Forget(SandboxId),
    /// Answered once everything queued before it is written: reads that must see it wait.
    Written(tokio::sync::oneshot::Sender<()>),
}

impl Service {
    /// A service over `store` and `backend`, keeping sandboxes' output within `output`. Call
    /// it on the server's main runtime: background work (log tailers, warm-lease refills)
    /// runs there.
    pub fn new(
        store: Arc<dyn Store>,
        backend: Arc<dyn Backend>,
        layers: Arc<dyn LayerStore>,
        cfg: ServiceConfig,
        output: OutputLimits,
    ) -> Self {
        let (journal, queue) = tokio::sync::mpsc::unbounded_channel();
        let (expiries, expiry_queue) = expiry::channel();
        let telemetry = crate::metrics::Metrics::default();
        let store: Arc<dyn Store> = Arc::new(crate::timed_store::TimedStore::new(
            store,
            telemetry.store_calls(),
        ));
        let logs = LogHub::new(store.clone(), output.logs);
        tokio::spawn(write_journal(queue, logs.clone(), store.clone()));
        Service {
            inner: Arc::new(Inner {
                runtime: tokio::runtime::Handle::current(),
                journal,
                expiries,
                expiry_queue: Mutex::new(Some(expiry_queue)),
                sealer: std::sync::OnceLock::new(),
                reaping: Mutex::default(),
                builds: Mutex::default(),
                logs,
                events: tokio::sync::broadcast::channel(1024).0,
                telemetry,
                ops: {
                    let q = operations::OpQueue::new();
                    q.start_workers(cfg.operation_workers);
                    q
                },
                shutdown: tokio::sync::watch::channel(false).0,
                store,
                backend,
                layers,
                cfg,
                output,
                locks: Mutex::default(),
                samples: Mutex::default(),
                net_alloc: tokio::sync::Mutex::default(),
                images_gc: tokio::sync::RwLock::default(),
                volumes_gc: tokio::sync::RwLock::default(),
                pool_claims: Mutex::default(),
                agents: Mutex::default(),
                routes: Mutex::default(),
                routes_epoch: Default::default(),
                refilling: Default::default(),
                peers: Mutex::default(),
            }),
        }
    }

    /// Gives the service the key secrets are sealed with (once, at start).
    pub fn set_sealer(&self, sealer: Arc<crate::secrets::Sealer>) {
        let _ = self.inner.sealer.set(sealer);
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// How long the audit log is kept.
    pub fn audit_retention(&self) -> std::time::Duration {
        self.inner.cfg.audit_retention
    }

    /// The store, shared (for streams that outlive a handler).
    pub fn store_arc(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    /// Sandbox logs.
    pub fn logs(&self) -> &LogHub {
        &self.inner.logs
    }

    /// Tells long-lived streams (logs, events) to end, so a graceful stop is not held open
    /// by followers that never disconnect.
    pub fn begin_shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }

    /// Whether [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Resolves once [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Lifecycle changes of every sandbox, from now on.
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.inner.backend.as_ref()
    }

    /// Runs blocking backend work (file removal) on a blocking thread, never on an async
    /// worker (an HTTP listener's or the main runtime's), and waits for it.
    pub(crate) async fn off_thread(&self, f: impl FnOnce(&dyn Backend) + Send + 'static) {
        let backend = self.inner.backend.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || f(backend.as_ref())).await {
            tracing::error!("blocking backend task: {e}");
        }
    }

    /// What `/metrics` tells.
    pub fn telemetry(&self) -> &crate::metrics::Metrics {
        &self.inner.telemetry
    }

    /// The layer store images are kept in.
    pub fn layers(&self) -> &dyn LayerStore {
        self.inner.layers.as_ref()
    }

    fn lock_for(&self, id: &SandboxId) -> Arc<tokio::sync::Mutex<()>> {
        self.lock_named(id.as_str())
    }

    /// The lock of `name` (a sandbox id, or another name that cannot be one).
    fn lock_named(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(name.to_owned()).or_default().clone()
    }

    fn forget(&self, id: &SandboxId) {
        self.inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id.as_str());
        self.inner
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id.as_str());
        self.previews().forget_route(id);
        self.metrics().forget_samples(id);
    }

    /// The agent client of a sandbox (cached, so connections are reused).
    fn agent(&self, rec: &SandboxRecord) -> Result<AgentClient, ApiError> {
        let id = rec.sandbox.id.as_str();
        let mut agents = self.inner.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = agents.get(id) {
            return Ok(a.clone());
        }
        let ip = rec
            .sandbox
            .ipv4()
            .ok_or_else(|| ApiError::Conflict(format!("sandbox {id} has no address")))?;
        let client = AgentClient::new(
            SocketAddr::from((ip, warren_backend::AGENT_PORT)),
            &rec.token,
        );
        agents.insert(id.to_owned(), client.clone());
        Ok(client)
    }

    /// Runs `fut` on the server's main runtime, whichever thread asks.
    pub(crate) fn spawn_background<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.runtime.spawn(fut);
    }

    /// Queues a journal record.
    pub(crate) fn journal(&self, entry: Journal) {
        let _ = self.inner.journal.send(entry);
    }

    /// Resolves the domain names of egress policies again; rules follow moved records.
    pub async fn refresh_egress_names(&self) {
        let changed = self.inner.backend.refresh_egress_names().await;
        if changed > 0 {
            tracing::info!(
                "egress: {changed} sandbox(es) follow new addresses of their allowed names"
            );
        }
    }

    /// Puts the firewall back when something removed it (`nft flush ruleset`, a restart of
    /// the host's nftables service): without its table sandboxes would be unfiltered.
    pub async fn check_firewall(&self) {
        // A stopping server removes the table itself (when no sandbox is left): putting it
        // back then would leave it behind the server.
        if self.is_shutting_down() || self.inner.backend.firewall_intact().await {
            return;
        }
        tracing::warn!("the sandboxes' nftables table is gone; putting it back");
        if let Err(e) = self.prepare_network().await {
            tracing::error!("restoring the sandboxes' firewall: {e}");
        }
    }

    /// Replaces a sandbox's egress policy; in force at once when it is running, and from its
    /// next start otherwise.
    pub async fn set_network(
        &self,
        id: &SandboxId,
        egress: warren_api::Egress,
    ) -> Result<warren_api::Sandbox, ApiError> {
        let policy = validate::egress(&egress)?;
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let mut rec = self.record(id).await?;
        if let (Some(index), true) = (rec.net_index, rec.sandbox.state.holds_network()) {
            self.inner.backend.set_egress(index, &policy).await?;
        }
        rec.sandbox.egress = egress;
        self.inner.store.update_sandbox(&rec).await?;
        self.journal(Journal::Event(
            id.clone(),
            format!("network: egress {}", rec.sandbox.egress),
        ));
        Ok(rec.sandbox)
    }

    /// A running sandbox and its agent (acting as `user` when given); 404 or 409 otherwise.
    pub(crate) async fn running_agent(
        &self,
        id: &SandboxId,
        user: Option<&str>,
    ) -> Result<(SandboxRecord, AgentClient), ApiError> {
        let mut rec = self.record(id).await?;
        if rec.sandbox.auto_resume && rec.sandbox.state != warren_api::SandboxState::Running {
            rec = self.sandboxes().resume_for_request(rec).await?;
        }
        if rec.sandbox.state != warren_api::SandboxState::Running {
            return Err(ApiError::Conflict(format!(
                "sandbox {id} is {}, not running",
                rec.sandbox.state
            )));
        }
        let agent = self.agent(&rec)?;
        let agent = match user {
            Some(u) => agent.with_user(u),
            None => agent,
        };
        Ok((rec, agent))
    }

    /// A sandbox that exists and is not deleted, or 404.
    pub async fn record(&self, id: &SandboxId) -> Result<SandboxRecord, ApiError> {
        match self.inner.store.get_sandbox(id).await? {
            Some(rec) if rec.sandbox.state != warren_api::SandboxState::Deleted => Ok(rec),
            _ => Err(ApiError::NotFound(format!("sandbox {id} not found"))),
        }
    }
}

async fn write_journal(
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Journal>,
    logs: LogHub,
    store: Arc<dyn Store>,
) {
    while let Some(entry) = queue.recv().await {
        match entry {
            Journal::Event(id, text) => logs.event(&id, text).await,
            Journal::Exec(id, rec) => history::insert_history(store.as_ref(), &id, &rec).await,
            Journal::Forget(id) => logs.forget(&id).await,
            Journal::Written(done) => {
                let _ = done.send(());
            }
        }
    }
}
