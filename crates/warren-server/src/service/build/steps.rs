//! The steps of a build, one at a time: configuration steps change the image config, COPY and
//! WORKDIR write a layer on the host, RUN runs in a sandbox whose changes become a layer.
use std::collections::BTreeMap;

use futures::StreamExt;
use warren_api::build::{BuildEvent, Instruction, LogLevel};
use warren_api::{CreateSandbox, ExecRequest, Image, ImageConfig, Runtime, SandboxId};
use warren_backend::images::{CopySpec, Imported};

use super::{Build, PlannedStep, Stage};
use crate::error::ApiError;
use crate::service::ExecEvent;

/// Disk of a RUN step's sandbox (sparse: only what the step writes is used).
const BUILD_DISK_MB: u64 = 16 * 1024;
/// How long one RUN step may take.
const STEP_TIMEOUT_S: u64 = 3600;

/// What every step of one build shares.
pub(crate) struct Ctx<'a> {
    pub build: &'a Build,
    pub scratch: String,
    pub cpu: Option<f64>,
    pub memory_mb: Option<u64>,
    pub home_cwd: bool,
    pub total: usize,
}

/// `KEY=value` set in an image's env list (replacing an earlier `KEY`).
fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let prefix = format!("{key}=");
    env.retain(|e| !e.starts_with(&prefix));
    env.push(format!("{key}={value}"));
}

/// The step with Docker's `$VAR` substitution done in the words Docker does it in (RUN is
/// left to its shell).
fn expanded(i: &Instruction, env: &[String]) -> Instruction {
    let x = |w: &String| super::expand::expand(w, env);
    match i {
        Instruction::Env { vars } => Instruction::Env {
            vars: vars.iter().map(|(k, v)| (k.clone(), x(v))).collect(),
        },
        Instruction::Workdir { path } => Instruction::Workdir { path: x(path) },
        Instruction::User { user } => Instruction::User { user: x(user) },
        Instruction::Copy {
            sources,
            dest,
            chown,
            mode,
        } => Instruction::Copy {
            sources: sources.iter().map(x).collect(),
            dest: x(dest),
            chown: chown.as_ref().map(x),
            mode: *mode,
        },
        other => other.clone(),
    }
}

/// A WORKDIR against the current one, `..` taken lexically (never above `/`).
fn join_dir(current: Option<&str>, path: &str) -> String {
    let joined = std::path::Path::new(current.unwrap_or("/")).join(path);
    let mut out = std::path::PathBuf::from("/");
    for c in joined.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out.to_string_lossy().into_owned()
}

fn blocking_failed(e: tokio::task::JoinError) -> ApiError {
    ApiError::Internal(format!("build task: {e}"))
}

impl crate::service::Images<'_> {
    pub(super) async fn run_step(
        &self,
        ctx: &Ctx<'_>,
        stage: &mut Stage,
        step: &PlannedStep,
        forced: bool,
        index: usize,
        text: &str,
    ) -> Result<(), ApiError> {
        let announce = |cached| {
            ctx.build.push(BuildEvent::Step {
                index,
                total: ctx.total,
                text: text.to_owned(),
                cached,
            })
        };
        let instruction = expanded(&step.instruction, &stage.config.env);
        let config = &mut stage.config;
        match &instruction {
            Instruction::From { .. } => {
                return Err(ApiError::Invalid("FROM may only come first".into()));
            }
            Instruction::Env { vars } => {
                vars.iter()
                    .for_each(|(k, v)| set_env(&mut config.env, k, v));
            }
            Instruction::User { user } => config.user = Some(user.clone()),
            Instruction::Cmd { argv } => {
                config.cmd = argv.clone();
                stage.cmd_set = true;
            }
            Instruction::Entrypoint { argv } => {
                // As Docker: a new entrypoint drops the command the base image had, not one
                // this build set.
                config.entrypoint = argv.clone();
                if !stage.cmd_set {
                    config.cmd.clear();
                }
            }
            Instruction::Expose { ports } => {
                config.exposed_ports.extend(ports);
                config.exposed_ports.sort_unstable();
                config.exposed_ports.dedup();
            }
            Instruction::Workdir { path } => {
                let dir = join_dir(config.working_dir.as_deref(), path);
                config.working_dir = Some(dir.clone());
                announce(false);
                stage.advance(&format!("WORKDIR {dir}"));
                let image = stage.layers.clone();
                let layers = self.inner.layers.clone();
                let _no_gc = self.inner.images_gc.read().await;
                let made = tokio::task::spawn_blocking(move || layers.store_dir(&dir, &image))
                    .await
                    .map_err(blocking_failed)?
                    .map_err(|e| ApiError::Invalid(e.to_string()))?;
                if let Some(layer) = made {
                    self.keep_layer(stage, layer)?;
                }
                return Ok(());
            }
            Instruction::Copy {
                sources,
                dest,
                chown,
                mode,
            } => {
                announce(false);
                let files = step.files.clone().ok_or_else(|| {
                    ApiError::Invalid(format!("{text}: no files were uploaded for it"))
                })?;
                let owner = chown.clone().or_else(|| {
                    step.copy_as_current_user
                        .then(|| config.user.clone())
                        .flatten()
                });
                let current = config.user.clone().unwrap_or_else(|| "root".into());
                let workdir = config.working_dir.clone();
                let (sources, dest, mode) = (sources.clone(), dest.clone(), *mode);
                let image = stage.layers.clone();
                let home_cwd = ctx.home_cwd;
                let layers = self.inner.layers.clone();
                let _no_gc = self.inner.images_gc.read().await;
                let layer = tokio::task::spawn_blocking(move || {
                    let (uid, gid) = match owner {
                        Some(o) => layers.owner_ids(&image, &o)?,
                        None => (0, 0),
                    };
                    // Relative destinations: from the WORKDIR, else `/` (Docker) or the
                    // user's home (E2B, whose steps start there).
                    let workdir = workdir
                        .or_else(|| home_cwd.then(|| layers.home_of(&image, &current)).flatten())
                        .unwrap_or_else(|| "/".into());
                    let spec = CopySpec {
                        sources,
                        dest,
                        workdir,
                        uid,
                        gid,
                        mode,
                    };
                    layers.store_copy(&files, &spec, &image)
                })
                .await
                .map_err(blocking_failed)?
                .map_err(|e| ApiError::Invalid(format!("{text}: {e}")))?;
                // Keyed by content, not the layer's digest (which has the files' times).
                stage.advance(&format!("{text} {}", layer.content));
                return self.keep_layer(stage, layer.layer);
            }
            Instruction::Run { command, user } => {
                let user = user
                    .clone()
                    .or_else(|| config.user.clone())
                    .unwrap_or_else(|| "root".into());
                stage.advance(&serde_json::to_string(&step.instruction).unwrap_or_default());
                if !forced {
                    if let Some(layer) = self.inner.layers.cached_layer(&stage.key) {
                        announce(true);
                        stage.push(layer);
                        return Ok(());
                    }
                }
                announce(false);
                let name = user.split(':').next().unwrap_or_default().to_owned();
                let (image, layers) = (stage.layers.clone(), self.inner.layers.clone());
                let known = name.parse::<u32>().is_ok()
                    || tokio::task::spawn_blocking(move || layers.passwd_names_user(&image, &name))
                        .await
                        .unwrap_or(false);
                if !known {
                    // E2B's words for it, which its SDKs' users look for.
                    return Err(ApiError::Invalid(format!(
                        "failed to run command '{command}': command failed: unauthenticated: invalid username: '{user}'"
                    )));
                }
                let layer = self.run_in_sandbox(ctx, stage, command, &user).await?;
                stage.push(layer);
                return Ok(());
            }
        }
        announce(false);
        stage.advance(text);
        Ok(())
    }

    /// Puts a new layer on the stage and in the build cache under the stage's key (which also
    /// keeps it from layer collection until an image names it).
    fn keep_layer(&self, stage: &mut Stage, layer: Imported) -> Result<(), ApiError> {
        self.inner
            .layers
            .cache_layer(&stage.key, &layer)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        stage.push(layer);
        Ok(())
    }

    /// Runs `command` as `user` in a gVisor sandbox made from the stage; the layer of what it
    /// changed. The sandbox is removed whatever happens.
    async fn run_in_sandbox(
        &self,
        ctx: &Ctx<'_>,
        stage: &Stage,
        command: &str,
        user: &str,
    ) -> Result<Imported, ApiError> {
        let mut kept = stage.clone();
        kept.layers.push(self.tmp_keeper().await?);
        let config = ImageConfig {
            env: stage.config.env.clone(),
            working_dir: stage.config.working_dir.clone(),
            ..Default::default()
        };
        let id = self
            .scratch_sandbox(ctx, &kept.image(&ctx.scratch, config, &ctx.build.team))
            .await?;
        let ran = self.run_command(ctx, &id, stage, command, user).await;
        let stored = match ran {
            Ok(()) => self.stop_and_store(&id, &stage.key).await,
            Err(e) => Err(e),
        };
        if let Err(e) = self.sandboxes().delete(&id).await {
            tracing::warn!(sandbox = %id, "removing a build step's sandbox: {e}");
        }
        stored
    }

    /// Starts a sandbox of the finished stage (its command running) and waits for its ready
    /// command as a create does; the sandbox is removed either way.
    pub(super) async fn check_ready(&self, ctx: &Ctx<'_>, stage: &Stage) -> Result<(), ApiError> {
        let cmd = stage.config.ready_cmd.clone().unwrap_or_default();
        ctx.build.log(
            LogLevel::Info,
            format!("[finalize] starting the image's command, waiting for `{cmd}` to succeed"),
        );
        let id = self
            .scratch_sandbox(
                ctx,
                &stage.image(&ctx.scratch, stage.config.clone(), &ctx.build.team),
            )
            .await?;
        if let Err(e) = self.sandboxes().delete(&id).await {
            tracing::warn!(sandbox = %id, "removing a build's ready check sandbox: {e}");
        }
        ctx.build.log(LogLevel::Info, "[finalize] ready");
        Ok(())
    }

    /// Records `scratch` and makes a step's sandbox of it; what a failed create leaves (its
    /// record: failed, never expiring) is removed.
    async fn scratch_sandbox(&self, ctx: &Ctx<'_>, scratch: &Image) -> Result<SandboxId, ApiError> {
        self.inner.store.put_image(scratch).await?;
        match self
            .create(self.step_sandbox(ctx), crate::service::quotas::NO_TEAM)
            .await
        {
            Ok((sandbox, _)) => Ok(sandbox.id),
            Err(e) => {
                self.remove_build_sandboxes(Some(&ctx.build.id)).await;
                Err(e)
            }
        }
    }

    /// A sandbox for a step: of the scratch image, under gVisor, never expiring.
    fn step_sandbox(&self, ctx: &Ctx<'_>) -> CreateSandbox {
        CreateSandbox {
            image: Some(ctx.scratch.clone()),
            runtime: Some(Runtime::Gvisor),
            cpu: ctx.cpu,
            memory_mb: ctx.memory_mb,
            disk_mb: Some(BUILD_DISK_MB),
            timeout_s: Some(0),
            metadata: BTreeMap::from([("warren.build".to_owned(), ctx.build.id.clone())]),
            ..Default::default()
        }
    }

    /// The `/tmp` keeper layer (see [`LayerStore::store_tmp_keeper`]), made once and kept by
    /// the build cache.
    ///
    /// [`LayerStore::store_tmp_keeper`]: warren_backend::LayerStore::store_tmp_keeper
    async fn tmp_keeper(&self) -> Result<String, ApiError> {
        const KEY: &str = "warren-build-tmp-keeper";
        if let Some(layer) = self.inner.layers.cached_layer(KEY) {
            return Ok(layer.digest);
        }
        let store = self.inner.layers.clone();
        let _no_gc = self.inner.images_gc.read().await;
        tokio::task::spawn_blocking(move || {
            let layer = store.store_tmp_keeper().map_err(|e| e.to_string())?;
            store.cache_layer(KEY, &layer).map_err(|e| e.to_string())?;
            Ok::<_, String>(layer.digest)
        })
        .await
        .map_err(blocking_failed)?
        .map_err(ApiError::Internal)
    }

    async fn run_command(
        &self,
        ctx: &Ctx<'_>,
        id: &SandboxId,
        stage: &Stage,
        command: &str,
        user: &str,
    ) -> Result<(), ApiError> {
        let build = ctx.build;
        let req = ExecRequest {
            cmd: vec!["/bin/sh".into(), "-c".into(), command.to_owned()],
            env: BTreeMap::new(),
            // Docker's default is `/`; E2B's (and the agent's, given none) the user's home.
            cwd: stage
                .config
                .working_dir
                .clone()
                .or_else(|| (!ctx.home_cwd).then(|| "/".into())),
            stdin: None,
            timeout_s: Some(STEP_TIMEOUT_S),
            label: Some("image build step".into()),
            user: Some(user.to_owned()),
        };
        let mut events = self.processes().exec_stream(id, req).await?;
        let mut lines = Lines::default();
        while let Some(event) = events.next().await {
            match event? {
                ExecEvent::Stdout(b) | ExecEvent::Stderr(b) => {
                    lines.feed(&b, |l| build.log(LogLevel::Info, l))
                }
                ExecEvent::Exit(exit) => {
                    lines.finish(|l| build.log(LogLevel::Info, l));
                    if exit.timed_out {
                        return Err(ApiError::Invalid(format!(
                            "RUN {command}: did not finish within {STEP_TIMEOUT_S} s"
                        )));
                    }
                    if exit.exit_code != 0 {
                        return Err(ApiError::Invalid(format!(
                            "RUN {command}: exited with code {}",
                            exit.exit_code
                        )));
                    }
                    return Ok(());
                }
            }
        }
        Err(ApiError::Internal(format!(
            "RUN {command}: the command's stream ended without its exit"
        )))
    }

    /// Stops the sandbox and stores its changes as a layer, cached under `key` (under the
    /// collection lock, before the layer exists, so collection never takes it) while the long
    /// packing runs without the lock.
    async fn stop_and_store(&self, id: &SandboxId, key: &str) -> Result<Imported, ApiError> {
        self.sandboxes().stop(id).await?;
        let svc = self.0.clone();
        let owned = id.to_string();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut keep = |layer: &Imported| {
                let _no_gc = svc.inner.images_gc.blocking_read();
                svc.inner.layers.cache_layer(&key, layer)
            };
            svc.inner
                .backend
                .store_changes(&owned, BUILD_DISK_MB << 20, &mut keep)
                .map_err(|e| format!("storing the step's changes: {e}"))
        })
        .await
        .map_err(blocking_failed)?
        .map_err(ApiError::Invalid)
    }
}

/// Output cut into lines (a partial line waits for the rest, up to [`MAX_LINE`] bytes;
/// invalid UTF-8 replaced).
///
/// [`MAX_LINE`]: super::record::MAX_LINE
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(String)) {
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let room = super::record::MAX_LINE.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(piece.get(..room.min(piece.len())).unwrap_or_default());
            let ended = piece.ends_with(b"\n");
            if ended || self.partial.len() >= super::record::MAX_LINE {
                let line = std::mem::take(&mut self.partial);
                let text = String::from_utf8_lossy(&line);
                emit(
                    text.trim_end_matches('\n')
                        .trim_end_matches('\r')
                        .to_owned(),
                );
            }
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(String)) {
        if !self.partial.is_empty() {
            emit(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
        }
    }
}
