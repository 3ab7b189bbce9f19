//! Making sandboxes: a create (or a warm pool's, or a snapshot's) recorded, then provisioned:
//! the backend makes its root filesystem, network, bundle and container, and the agent is
//! waited for.
use std::time::{Duration, Instant};

use chrono::Utc;
use warren_api::{CreateSandbox, Sandbox, SandboxId, SandboxState};
use warren_backend::ContainerStatus;
use warren_backend::SandboxSpec;
use warren_store::SandboxRecord;

use super::lifecycle::{expiry, DEFAULT_TIMEOUT_S};
use super::validate::{self, DEFAULT_CPU, DEFAULT_DISK_MB, DEFAULT_MEMORY_MB, DEFAULT_PIDS};
use super::Service;
use crate::error::ApiError;

/// How long a new sandbox's agent has to answer before the sandbox is failed.
const AGENT_BOOT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the agent is watched for at a fine grain before polling backs off.
const QUICK_BOOT: Duration = Duration::from_millis(300);

/// Blocks until the agent at `addr` answers `GET /health` (which needs no token), trying to
/// connect every 100 µs for at most `within`; whether it did. Asking on the connection that
/// found the port open spares a second connect and an HTTP client's round trip.
fn wait_healthy(addr: std::net::SocketAddr, within: Duration) -> bool {
    use std::io::{Read, Write};
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut stream) =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50))
        {
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut status = [0u8; 12];
            // Bound but unhappy, or slow: the caller's own checks take it from here.
            return stream
                .write_all(b"GET /health HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n")
                .and_then(|()| stream.read_exact(&mut status))
                .is_ok_and(|()| status.starts_with(b"HTTP/1.1 2"));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    false
}

/// An image config's `KEY=value` list as a map (a later duplicate wins, as in Docker).
fn image_env(entries: &[String]) -> std::collections::BTreeMap<String, String> {
    entries
        .iter()
        .filter_map(|e| e.split_once('='))
        // The agent's own settings come from the server, never from an image.
        .filter(|(k, _)| !k.is_empty() && !k.starts_with("WARREN_AGENT_"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The user part of an image's `User` (`name`, `uid`, `name:group`, `uid:gid`): the agent
/// looks the name (or number) up in the sandbox's own passwd; the group is the user's own.
fn image_user(user: Option<&str>) -> Option<String> {
    let name = user?.split(':').next()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

pub(super) fn token() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}

/// Told of a create's sandbox once it is recorded.
pub(crate) type Recorded = dyn Fn(&Sandbox) + Send + Sync;

impl Service {
    /// Records a sandbox and, unless `wait` is false, provisions it before answering.
    /// Returns the sandbox and whether it was provisioned inline.
    pub async fn create(
        &self,
        req: CreateSandbox,
        team: &str,
    ) -> Result<(Sandbox, bool), ApiError> {
        self.create_preferring(req, None, team, None).await
    }

    /// [`Service::create`], with `user` as the default user when neither the request nor the
    /// image names one and the image has that user (E2B's SDKs expect `user`), telling
    /// `recorded` of the sandbox as soon as it is recorded. With `recorded`, a create that
    /// asked not to wait provisions before it returns (an operation's worker carries it; the
    /// waiter already has its answer).
    pub(crate) async fn create_preferring(
        &self,
        req: CreateSandbox,
        user: Option<&str>,
        team: &str,
        recorded: Option<&Recorded>,
    ) -> Result<(Sandbox, bool), ApiError> {
        let made = if let Some(name) = req.snapshot.clone() {
            self.snapshots()
                .create_from_snapshot(&name, req, team)
                .await?
        } else if let Some(sandbox) = self.pools().claim_from_pool(&req, user, team).await? {
            (sandbox, true)
        } else {
            return self.create_with(req, user, team, None, recorded).await;
        };
        if let Some(tell) = recorded {
            tell(&made.0);
        }
        Ok(made)
    }

    /// [`Service::create_preferring`], for a warm pool's sandbox when `pool` names one.
    pub(super) async fn create_with(
        &self,
        req: CreateSandbox,
        user: Option<&str>,
        team: &str,
        pool: Option<String>,
        recorded: Option<&Recorded>,
    ) -> Result<(Sandbox, bool), ApiError> {
        validate::create(&req, &self.inner.cfg)?;
        super::volumes::valid_mounts(&req.volumes)?;
        // Held until the sandbox is recorded: its image's layers and volumes are then in use.
        let no_gc = self.inner.images_gc.read().await;
        let no_volume_gc = self.inner.volumes_gc.read().await;
        self.volumes().check_volumes(&req.volumes, team).await?;
        let image = self
            .images()
            .image_for_create(
                req.image.as_deref(),
                req.pull.unwrap_or_default(),
                // A warm pool's sandboxes are no team's, and take the images everyone sees.
                if pool.is_some() {
                    warren_api::DEFAULT_TEAM
                } else {
                    team
                },
            )
            .await?;
        if self.inner.backend.pulls_images() && image.source.is_none() {
            return Err(ApiError::Invalid(format!(
                "image {} was imported or built on this server, not pulled from a registry: \
                 sandboxes here run images their nodes pull (push it to a registry, then use \
                 that reference)",
                image.name
            )));
        }
        let defaults = &image.config;
        let ready_cmd = defaults.ready_cmd.clone();
        let preferred = match user {
            Some(name) if req.user.is_none() && defaults.user.is_none() => self
                .images()
                .image_has_user(&image.digest, name)
                .await?
                .then(|| name.to_owned()),
            _ => None,
        };
        let mut env = image_env(&defaults.env);
        env.extend(req.env);
        let cmd = if req.cmd.is_empty() {
            defaults
                .entrypoint
                .iter()
                .chain(&defaults.cmd)
                .cloned()
                .collect()
        } else {
            req.cmd
        };
        let sandbox = Sandbox {
            id: SandboxId::generate(),
            state: SandboxState::Pending,
            runtime: req.runtime.unwrap_or(self.inner.cfg.default_runtime),
            cpu: req.cpu.unwrap_or(DEFAULT_CPU.min(self.inner.cfg.host_cpus)),
            memory_mb: req.memory_mb.unwrap_or(DEFAULT_MEMORY_MB),
            disk_mb: req.disk_mb.unwrap_or(DEFAULT_DISK_MB),
            pids: req.pids.unwrap_or(DEFAULT_PIDS),
            env,
            cmd,
            cwd: req
                .cwd
                .or_else(|| defaults.working_dir.clone())
                .unwrap_or_else(|| "/".into()),
            user: req
                .user
                .or(preferred)
                .or_else(|| image_user(defaults.user.as_deref()))
                .unwrap_or_else(|| "root".into()),
            exposed_ports: defaults.exposed_ports.clone(),
            image: image.name,
            image_digest: image.digest,
            metadata: req.metadata,
            volumes: req.volumes,
            egress: req.egress.unwrap_or_default(),
            public: req.public.unwrap_or(false),
            traffic_token: Some(token()),
            request_host: req.request_host,
            ip: None,
            created_at: Utc::now(),
            started_at: None,
            expires_at: expiry(req.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S)),
            on_timeout: req.on_timeout.unwrap_or_default(),
            auto_resume: req.auto_resume.unwrap_or(false),
            error: None,
            urls: Default::default(),
            ports: Vec::new(),
            pause: None,
            pool,
            team: team.to_owned(),
            server: self.server_name().to_owned(),
        };
        let rec = SandboxRecord {
            sandbox,
            token: token(),
            net_index: None,
        };
        self.sandboxes().insert(&rec).await?;
        drop(no_gc);
        drop(no_volume_gc);
        let id = rec.sandbox.id.clone();
        if let Some(tell) = recorded {
            tell(&rec.sandbox);
        }
        let wait = req.wait.unwrap_or(true);
        if !wait && recorded.is_some() {
            let lock = self.lock_for(&id);
            let _guard = lock.lock().await;
            // Deleted (or otherwise moved on) meanwhile: nothing to do.
            return match self.inner.store.get_sandbox(&id).await? {
                Some(rec) if rec.sandbox.state == SandboxState::Pending => self
                    .provision_started(rec)
                    .await
                    .map(|(sandbox, _)| (sandbox, false)),
                Some(rec) => Ok((rec.sandbox, false)),
                None => Err(ApiError::NotFound(format!("sandbox {id} not found"))),
            };
        }
        if wait {
            let lock = self.lock_for(&id);
            let guard = lock.lock().await;
            let started = self.provision_started(rec).await?;
            drop(guard);
            if let Some(cmd) = ready_cmd {
                self.await_ready(&id, &cmd).await?;
            }
            Ok(started)
        } else {
            let sandbox = rec.sandbox.clone();
            let svc = self.clone();
            self.spawn_background(async move {
                let lock = svc.lock_for(&id);
                let _guard = lock.lock().await;
                // Deleted (or otherwise moved on) while queued: nothing to do.
                match svc.inner.store.get_sandbox(&id).await {
                    Ok(Some(rec)) if rec.sandbox.state == SandboxState::Pending => {
                        if let Err(e) = svc.provision(rec).await {
                            tracing::error!(sandbox = %id, "provisioning: {e}");
                        }
                    }
                    _ => {}
                }
            });
            Ok((sandbox, false))
        }
    }

    /// Runs the image's ready command until it exits 0 (E2B's `readyCmd`); a sandbox that is
    /// not ready within the server's ready timeout is deleted and the create fails, naming the command
    /// and its last output.
    async fn await_ready(&self, id: &SandboxId, cmd: &str) -> Result<(), ApiError> {
        let within = self.inner.cfg.ready_timeout;
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            // A check may take as long as is left (E2B's `wait_for_timeout` is a `sleep`).
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_secs()
                .max(1);
            let req = warren_api::ExecRequest {
                cmd: vec!["/bin/sh".into(), "-c".into(), cmd.to_owned()],
                env: Default::default(),
                cwd: None,
                stdin: None,
                timeout_s: Some(left),
                label: Some("ready check".into()),
                user: None,
            };
            match self.processes().exec(id, req).await {
                Ok(r) if r.exit_code == 0 => return Ok(()),
                Ok(r) => last = format!("exit code {}: {}{}", r.exit_code, r.stdout, r.stderr),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = self.sandboxes().delete(id).await;
        Err(ApiError::Unavailable(format!(
            "the image's ready command `{cmd}` did not succeed within {} s (last: {}); the sandbox was removed",
            within.as_secs(),
            last.trim()
        )))
    }

    /// Takes a pending or stopped sandbox to running (or failed, with everything released).
    /// The caller holds the sandbox's lock.
    pub(super) async fn provision(&self, rec: SandboxRecord) -> Result<SandboxRecord, ApiError> {
        self.provision_admitted(rec, None).await
    }

    /// [`Service::provision`], letting go of its team's quota check (`admitted`) as soon as
    /// the sandbox counts as running (provisioning): the team's other creates need not wait
    /// for this one to boot.
    pub(super) async fn provision_admitted(
        &self,
        mut rec: SandboxRecord,
        admitted: Option<super::quotas::Admitted>,
    ) -> Result<SandboxRecord, ApiError> {
        rec.sandbox.error = None;
        self.claim_lease(&mut rec).await?;
        drop(admitted);
        let result = self.provision_claimed(rec).await;
        // Topped up only now: two `ip` processes beside the runtime would slow this create.
        self.refill_warm_leases();
        result
    }

    /// Provisions a recorded sandbox (its lock held) and answers with it running, or with why
    /// it failed.
    pub(super) async fn provision_started(
        &self,
        rec: SandboxRecord,
    ) -> Result<(Sandbox, bool), ApiError> {
        let id = rec.sandbox.id.clone();
        let rec = self.provision(rec).await?;
        if rec.sandbox.state == SandboxState::Failed {
            return Err(ApiError::Internal(format!(
                "sandbox {id} failed to start: {}",
                rec.sandbox.error.unwrap_or_default()
            )));
        }
        Ok((rec.sandbox, true))
    }

    /// Provisioning after the network lease is claimed.
    async fn provision_claimed(&self, mut rec: SandboxRecord) -> Result<SandboxRecord, ApiError> {
        let id = rec.sandbox.id.clone();
        let began = Utc::now();
        let spec = match self.spec_for(&rec).await {
            Ok(spec) => spec,
            Err(e) => return self.sandboxes().fail(rec, e).await,
        };
        let t0 = Utc::now();
        let provisioned = match self.inner.backend.provision(&spec).await {
            Ok(p) => p,
            Err(e) => {
                let step = match &e {
                    warren_backend::BackendError::Step { step, .. } => *step,
                    _ => "provision",
                };
                let took = (Utc::now() - t0).to_std().unwrap_or_default();
                self.processes()
                    .record_step(&id, step, t0, took, Some(&e.to_string()));
                return self.sandboxes().fail(rec, e.to_string()).await;
            }
        };
        tracing::debug!(sandbox = %id, steps = ?provisioned.steps, "provisioned");
        let mut at = t0;
        for (step, took) in &provisioned.steps {
            self.processes().record_step(&id, step, at, *took, None);
            at += chrono::Duration::from_std(*took).unwrap_or_default();
        }
        rec.sandbox.ip = Some(provisioned.ip.to_string());
        // Announced, not written: the agent boots meanwhile, and a restart finding the record
        // still `provisioning` fails and releases it just as it would a `starting` one.
        rec.sandbox.state = SandboxState::Starting;
        self.sandboxes().announce(&rec);
        self.sandboxes().forget_agent(&id);
        let booted = self.await_agent(&rec).await?;
        if let Err(msg) = booted {
            return self.sandboxes().fail(rec, msg).await;
        }
        let now = Utc::now();
        // A timeout is the sandbox's time to run: its boot (a Pod's image pull and start can
        // take seconds), and at its first start its wait in the queue, do not count against
        // it, or a short one would end as it began.
        let since = match rec.sandbox.started_at {
            None => rec.sandbox.created_at.min(began),
            Some(_) => began,
        };
        rec.sandbox.started_at = Some(now);
        if let Some(at) = rec.sandbox.expires_at.as_mut() {
            *at += now - since;
        }
        self.sandboxes()
            .set_state(&mut rec, SandboxState::Running)
            .await?;
        self.sandboxes().follow_logs(&id);
        Ok(rec)
    }

    /// What the backend needs to make (or bring back) the sandbox of `rec`.
    pub(super) async fn spec_for(&self, rec: &SandboxRecord) -> Result<SandboxSpec, String> {
        let id = &rec.sandbox.id;
        Ok(SandboxSpec {
            id: id.to_string(),
            runtime: rec.sandbox.runtime,
            layers: self
                .images()
                .image_layers(&rec.sandbox.image_digest)
                .await
                .map_err(|e| e.to_string())?,
            image_ref: self
                .images()
                .pull_ref(&rec.sandbox.image, &rec.sandbox.image_digest)
                .await
                .map_err(|e| e.to_string())?,
            team: rec.sandbox.team.clone(),
            cpu: rec.sandbox.cpu,
            memory_mb: rec.sandbox.memory_mb,
            pids: rec.sandbox.pids,
            disk_mb: rec.sandbox.disk_mb,
            env: self
                .env_with_secrets(&rec.sandbox.env, &rec.sandbox.team)
                .await?,
            cmd: rec.sandbox.cmd.clone(),
            cwd: rec.sandbox.cwd.clone(),
            user: rec.sandbox.user.clone(),
            token: rec.token.clone(),
            net_index: rec.net_index.unwrap_or_default(),
            // Validated when set; a record from elsewhere that does not parse gets nothing.
            egress: validate::egress(&rec.sandbox.egress)
                .unwrap_or(warren_backend::EgressPolicy::Deny),
            volumes: self.volumes().spec_volumes(&rec.sandbox.volumes).await?,
        })
    }

    /// The environment with each `${e2b.secrets.NAME}` replaced by the secret's value, as the
    /// sandbox gets it (its record keeps the references).
    async fn env_with_secrets(
        &self,
        env: &std::collections::BTreeMap<String, String>,
        team: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        let mut out = env.clone();
        for value in out.values_mut() {
            if crate::secrets::referenced(value).is_empty() {
                continue;
            }
            let sealer = self
                .inner
                .sealer
                .get()
                .ok_or_else(|| "secrets are not available on this server".to_owned())?;
            *value = crate::secrets::fill(self.inner.store.as_ref(), sealer, value, team)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    /// Waits for a sandbox's agent to answer (at most [`AGENT_BOOT_TIMEOUT`]), recording the
    /// wait as the `agent` step; why it did not.
    pub(super) async fn await_agent(
        &self,
        rec: &SandboxRecord,
    ) -> Result<Result<(), String>, ApiError> {
        let id = rec.sandbox.id.clone();
        let agent = self.agent(rec)?;
        let began = Instant::now();
        let agent_t0 = Utc::now();
        let deadline = began + AGENT_BOOT_TIMEOUT;
        let mut last_status_check = began;
        // A crun sandbox's agent listens within a few ms: watch for it at a finer grain than
        // tokio's 1 ms timer allows, on a blocking thread (a refused connect costs µs). gVisor's
        // boot takes ~100 ms, which such polling would only slow down on a small host.
        let quick = rec.sandbox.runtime == warren_api::Runtime::Runc;
        let mut healthy = false;
        if let Some(ip) = rec.sandbox.ipv4().filter(|_| quick) {
            let addr = std::net::SocketAddr::from((ip, warren_backend::AGENT_PORT));
            healthy = tokio::task::spawn_blocking(move || wait_healthy(addr, QUICK_BOOT))
                .await
                .unwrap_or(false);
        }
        let booted = loop {
            if healthy {
                break Ok(());
            }
            match agent.health().await {
                Ok(()) => break Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    break Err(format!(
                        "agent did not answer within {AGENT_BOOT_TIMEOUT:?}: {e}"
                    ));
                }
                Err(_) => {
                    // Asking the runtime costs a process spawn: only now and then.
                    if last_status_check.elapsed() >= Duration::from_millis(100) {
                        last_status_check = Instant::now();
                        let status = self
                            .inner
                            .backend
                            .status(id.as_str(), rec.sandbox.runtime)
                            .await;
                        if status == ContainerStatus::Stopped {
                            break Err("the sandbox exited while booting".to_owned());
                        }
                    }
                    // A refused connection costs microseconds: poll tightly while a quick boot
                    // is likely (crun: ms, gVisor: ~100 ms), then back off.
                    let delay = if began.elapsed() < Duration::from_millis(500) {
                        Duration::from_micros(250)
                    } else {
                        Duration::from_millis(25)
                    };
                    tokio::time::sleep(delay).await;
                }
            }
        };
        tracing::debug!(sandbox = %id, took = ?began.elapsed(), "agent answered");
        self.processes().record_step(
            &id,
            "agent",
            agent_t0,
            began.elapsed(),
            booted.as_ref().err().map(String::as_str),
        );
        Ok(booted)
    }
}
