//! Image builds: a base image and steps (RUN, COPY, ENV, WORKDIR, USER, CMD, ENTRYPOINT,
//! EXPOSE; from a Dockerfile or E2B's template steps) made into a new image. A RUN step runs
//! in a gVisor sandbox made from the image so far; the sandbox is stopped and what it
//! changed becomes a layer on top. A COPY step's layer is written on the host from the
//! uploaded files. Each step's key is the sha256 of the key before it and of the step (with
//! the content of what it copies), so a step whose key made a layer before reuses that layer,
//! as Docker's build cache does; `no_cache` (or a step's `force`) runs it again. Builds run
//! in the server's own task: a client that goes away does not stop one.
mod expand;
mod record;
mod steps;

use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};
use warren_api::build::{BuildEvent, Instruction, LogLevel};
use warren_api::{Image, ImageConfig, PullPolicy};
use warren_backend::images::BuildFiles;

pub use record::{Build, Outcome};

use crate::error::ApiError;

/// How long a finished build stays readable (its status and logs).
const KEEP_FINISHED: chrono::Duration = chrono::Duration::hours(1);

/// A build to run.
pub struct BuildPlan {
    /// The image it records.
    pub name: String,
    /// The image it starts from: a Warren image's name or a registry reference.
    pub from: String,
    /// The steps after FROM.
    pub steps: Vec<PlannedStep>,
    /// Run every step again, reusing nothing.
    pub no_cache: bool,
    /// CPUs and memory of the sandboxes RUN steps run in.
    pub cpu: Option<f64>,
    /// See `cpu`.
    pub memory_mb: Option<u64>,
    /// E2B's `startCmd`: the image's command (run by `sh -c`) when set.
    pub start_cmd: Option<String>,
    /// E2B's `readyCmd`, kept in the image.
    pub ready_cmd: Option<String>,
    /// Steps run in the user's home until a WORKDIR (E2B's templates), not in `/` (Docker's).
    pub home_cwd: bool,
    /// More names the image is recorded under (E2B's tags: `name:tag`).
    pub also_named: Vec<String>,
    /// The user steps run as when the base image names none, if the image has it (E2B's
    /// templates build as `user`).
    pub default_user: Option<String>,
    /// The team asking: the image is its, built from what it sees.
    pub team: String,
}

/// One step and what it needs.
pub struct PlannedStep {
    /// The step.
    pub instruction: Instruction,
    /// The files a COPY step copies from (a build context is removed once the plan, and so
    /// every step naming it, is dropped at the build's end).
    pub files: Option<BuildFiles>,
    /// Run it again even if cached (and every step after it).
    pub force: bool,
    /// The step's owner when a COPY names none: E2B copies as the current user, Docker as
    /// root.
    pub copy_as_current_user: bool,
}

/// The image as it stands between steps.
#[derive(Debug, Clone)]
pub(crate) struct Stage {
    pub layers: Vec<String>,
    pub config: ImageConfig,
    pub key: String,
    pub size: u64,
    /// Whether this build set CMD (an ENTRYPOINT then keeps it; an inherited one it drops).
    pub cmd_set: bool,
}

impl Stage {
    fn advance(&mut self, what: &str) {
        let mut h = Sha256::new();
        h.update(self.key.as_bytes());
        h.update(b"\n");
        h.update(what.as_bytes());
        self.key = hex::encode(h.finalize());
    }

    /// Puts `layer` on top.
    fn push(&mut self, layer: warren_backend::images::Imported) {
        self.layers.push(layer.digest);
        self.size += layer.size;
    }

    /// The stage as an image record named `name`, with `config`.
    fn image(&self, name: &str, config: ImageConfig, team: &str) -> Image {
        let with = Stage {
            config,
            ..self.clone()
        };
        Image {
            name: name.to_owned(),
            digest: with.digest(),
            size: self.size,
            created_at: Utc::now(),
            source: None,
            layers: self.layers.clone(),
            config: with.config,
            team: team.to_owned(),
        }
    }

    /// A digest naming this stage's layers and config (the image record's `digest`).
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        for l in &self.layers {
            h.update(l.as_bytes());
            h.update(b"\n");
        }
        h.update(serde_json::to_vec(&self.config).unwrap_or_default());
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

/// A new build's id, in a UUID's form as E2B's are (random, version 4).
pub fn build_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        8 | (b[8] & 3),
        &h[17..20],
        &h[20..32]
    )
}

/// The text of a step as a Dockerfile would have it, for logs.
pub fn describe(i: &Instruction) -> String {
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    match i {
        Instruction::From { image } => format!("FROM {image}"),
        Instruction::Run {
            command,
            user: None,
        } => format!("RUN {command}"),
        Instruction::Run {
            command,
            user: Some(u),
        } => format!("RUN (as {u}) {command}"),
        Instruction::Copy {
            sources,
            dest,
            chown,
            ..
        } => {
            let chown = chown
                .as_ref()
                .map(|c| format!("--chown={c} "))
                .unwrap_or_default();
            format!("COPY {chown}{} {dest}", sources.join(" "))
        }
        Instruction::Env { vars } => {
            let v: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("ENV {}", v.join(" "))
        }
        Instruction::Workdir { path } => format!("WORKDIR {path}"),
        Instruction::User { user } => format!("USER {user}"),
        Instruction::Cmd { argv } => format!("CMD {}", json(argv)),
        Instruction::Entrypoint { argv } => format!("ENTRYPOINT {}", json(argv)),
        Instruction::Expose { ports } => {
            let p: Vec<String> = ports.iter().map(u16::to_string).collect();
            format!("EXPOSE {}", p.join(" "))
        }
    }
}

impl crate::service::Images<'_> {
    /// Whether this server builds images: a build's steps run in sandboxes of its scratch
    /// images, which a backend whose nodes pull images cannot run (refused before the build's
    /// files are taken in, not at its first step).
    pub fn builds_possible(&self) -> Result<(), ApiError> {
        if self.inner.backend.pulls_images() {
            return Err(ApiError::Conflict(
                "image builds are not supported on the Kubernetes backend yet: build on a \
                 server of the local backend, push the image to a registry, and pull it here"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Starts a build in the background; follow it through the answer.
    pub fn start_build(&self, plan: BuildPlan, id: Option<String>) -> Result<Arc<Build>, ApiError> {
        super::images::check_name(&plan.name)?;
        self.builds_possible()?;
        let id = id.unwrap_or_else(build_id);
        let build = Arc::new(Build::new(id.clone(), plan.name.clone(), plan.team.clone()));
        {
            let mut builds = crate::lock(&self.inner.builds);
            let now = Utc::now();
            builds.retain(|_, b| b.ended_at().is_none_or(|t| now - t < KEEP_FINISHED));
            builds.insert(id, build.clone());
        }
        let svc = self.0.clone();
        let b = build.clone();
        self.spawn_background(async move {
            match svc.images().run_build(plan, &b).await {
                Ok(image) => b.push(BuildEvent::Done {
                    image: Box::new(image),
                }),
                Err((step, e)) => {
                    b.log(LogLevel::Error, e.to_string());
                    b.push(BuildEvent::Error {
                        step,
                        error: e.body().error,
                    })
                }
            }
        });
        Ok(build)
    }

    /// Deletes the sandboxes of build `id` (every build's when `None`: at start, when no
    /// build survived the last run).
    pub(crate) async fn remove_build_sandboxes(&self, id: Option<&str>) {
        let Ok(all) = self.own_sandboxes().await else {
            return;
        };
        let all = all.into_iter().map(|r| r.sandbox);
        for s in all {
            let of = s.metadata.get("warren.build").map(String::as_str);
            if of.is_some() && (id.is_none() || of == id) {
                if let Err(e) = self.sandboxes().delete(&s.id).await {
                    tracing::warn!(sandbox = %s.id, "removing a build's sandbox: {e}");
                }
            }
        }
    }

    /// What builds a stopped server left: their sandboxes and scratch images.
    pub async fn clean_build_leftovers(&self) {
        self.remove_build_sandboxes(None).await;
        if let Ok(images) = self.list_images(crate::service::quotas::NO_TEAM).await {
            // This server's alone: the others' may be in use by their builds.
            let mine = format!("{}{}/", super::images::SCRATCH_PREFIX, self.server_name());
            for i in images.iter().filter(|i| i.name.starts_with(&mine)) {
                let _ = self.inner.store.delete_image(&i.name).await;
            }
        }
    }

    /// A build by id, while it is kept.
    pub fn build(&self, id: &str) -> Option<Arc<Build>> {
        let builds = crate::lock(&self.inner.builds);
        builds.get(id).cloned()
    }

    /// How many builds are running.
    pub fn running_builds(&self) -> usize {
        crate::lock(&self.inner.builds)
            .values()
            .filter(|b| matches!(b.outcome(), Outcome::Running))
            .count()
    }

    async fn run_build(
        &self,
        plan: BuildPlan,
        build: &Build,
    ) -> Result<Image, (Option<usize>, ApiError)> {
        build.log(LogLevel::Info, format!("FROM {}", plan.from));
        // Each run its own scratch image: two runs of one build id never share one.
        let scratch = format!(
            "{}{}/{}-{:08x}",
            super::images::SCRATCH_PREFIX,
            self.server_name(),
            build.id,
            rand::random::<u32>()
        );
        let base = {
            // Held until the scratch image names the base's layers: a pull's layers are in
            // no image until it is recorded, and collection must not take them meanwhile.
            let _no_gc = self.inner.images_gc.read().await;
            let base = self
                .image_for_create(Some(&plan.from), PullPolicy::Missing, &plan.team)
                .await
                .map_err(|e| (None, e.map_message(|m| format!("FROM {}: {m}", plan.from))))?;
            let held = Image {
                name: scratch.clone(),
                team: plan.team.clone(),
                ..base.clone()
            };
            self.inner
                .store
                .put_image(&held)
                .await
                .map_err(|e| (None, e.into()))?;
            base
        };
        let result = self.build_on(plan, build, base, &scratch).await;
        // Only now: until the image is recorded the scratch image keeps what it builds on.
        let _ = self.inner.store.delete_image(&scratch).await;
        result
    }

    async fn build_on(
        &self,
        plan: BuildPlan,
        build: &Build,
        base: Image,
        scratch: &str,
    ) -> Result<Image, (Option<usize>, ApiError)> {
        let total = plan.steps.len();
        let mut stage = Stage {
            layers: base.layers.clone(),
            config: base.config.clone(),
            key: String::new(),
            size: base.size,
            cmd_set: false,
        };
        if let (None, Some(u)) = (&stage.config.user, &plan.default_user) {
            if self.image_has_user(&base.digest, u).await.unwrap_or(false) {
                stage.config.user = Some(u.clone());
            }
        }
        stage.advance(&format!(
            "warren-build-1 {} {:?}",
            base.digest, stage.config.user
        ));
        let ctx = steps::Ctx {
            build,
            scratch: scratch.to_owned(),
            cpu: plan.cpu,
            memory_mb: plan.memory_mb,
            home_cwd: plan.home_cwd,
            total,
        };
        let mut forced = plan.no_cache;
        let mut result = Ok(());
        for (i, step) in plan.steps.iter().enumerate() {
            forced |= step.force;
            let index = i + 1;
            let text = describe(&step.instruction);
            if let Err(e) = self
                .run_step(&ctx, &mut stage, step, forced, index, &text)
                .await
            {
                result = Err((Some(index), e));
                break;
            }
        }
        if let Some(cmd) = &plan.start_cmd {
            stage.config.entrypoint.clear();
            stage.config.cmd = vec!["/bin/sh".into(), "-c".into(), cmd.clone()];
        }
        stage.config.ready_cmd = plan.ready_cmd.clone();
        if result.is_ok() && stage.config.ready_cmd.is_some() {
            // E2B's finalize step: the start command runs and the ready check passes once
            // here, so a template that never gets ready fails its build, not each create. Its
            // step is the one after the last (the SDKs point at `set_start_cmd`).
            result = self
                .check_ready(&ctx, &stage)
                .await
                .map_err(|e| (Some(total + 1), e));
        }
        result?;
        let image = stage.image(&plan.name, stage.config.clone(), &plan.team);
        let replaced = self.record_image(&image).await.map_err(|e| (None, e))?;
        if replaced {
            let _ = self.prune_images().await;
        }
        for name in &plan.also_named {
            self.tag_image(&image.name, name, &plan.team)
                .await
                .map_err(|e| (None, e))?;
        }
        build.log(
            LogLevel::Info,
            format!("built {} ({} layers)", image.name, image.layers.len()),
        );
        drop(plan);
        Ok(image)
    }
}
