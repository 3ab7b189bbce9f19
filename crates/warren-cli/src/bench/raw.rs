//! The floors Warren is compared with: `crun` and `runsc` themselves, run on a plain OCI bundle
//! of the same root filesystem with no Warren in between. Each runtime keeps its state under
//! the bench's scratch directory (`--root`), so its containers are the bench's own.
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::process::Command;
use warren_api::Runtime;

/// The runtime's binary.
pub fn binary(rt: Runtime) -> &'static str {
    match rt {
        Runtime::Runc => "crun",
        Runtime::Gvisor => "runsc",
    }
}

/// Name of the raw `run` measurement.
pub fn run_label(rt: Runtime) -> &'static str {
    match rt {
        Runtime::Runc => "crun run",
        Runtime::Gvisor => "runsc run",
    }
}

/// Name of the raw checkpoint's measurements.
pub fn checkpoint_label(rt: Runtime) -> &'static str {
    match rt {
        Runtime::Runc => "CRIU dump/restore",
        Runtime::Gvisor => "runsc checkpoint/restore",
    }
}

/// Name of the raw `exec` measurement.
pub fn exec_label(rt: Runtime) -> &'static str {
    match rt {
        Runtime::Runc => "crun exec",
        Runtime::Gvisor => "runsc exec",
    }
}

/// Whether `bin` is on `PATH`.
pub fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn state_root(dir: &Path, rt: Runtime) -> PathBuf {
    dir.join("state").join(binary(rt))
}

/// gVisor's platform unless one is asked for: Warren's default.
pub const DEFAULT_PLATFORM: &str = "systrap";

/// The runtime with its global flags: its own state root; for runsc the one Warren runs (the
/// pinned build when installed), on `platform`, with no network (the empty namespace of the
/// bundle is the whole network).
fn command(dir: &Path, rt: Runtime, platform: &str) -> Command {
    let mut c = match rt {
        Runtime::Gvisor => Command::new(warren_local::runtime::default_runsc()),
        Runtime::Runc => {
            // The crun Warren runs: the one built with CRIU when installed, with its CRIU.
            let pinned = warren_local::criu::pinned_crun();
            if pinned.is_file() {
                let mut c = Command::new(pinned);
                // The same `PATH` Warren gives it (its CRIU, and CRIU's `gzip` shim).
                if let Some(path) = warren_local::criu::path_with_criu() {
                    c.env("PATH", path);
                }
                c
            } else {
                Command::new(binary(rt))
            }
        }
    };
    c.arg(format!("--root={}", state_root(dir, rt).display()));
    if rt == Runtime::Gvisor {
        c.arg("--network=none")
            .arg(format!("--platform={platform}"));
    }
    c.stdin(Stdio::null()).kill_on_drop(true);
    c
}

/// Bundles for the raw runtimes, on one root filesystem.
pub struct Raw {
    dir: PathBuf,
    /// gVisor's `--platform`.
    platform: String,
    /// The runtime's default `config.json`, for [`bundle`](Self::bundle).
    template: Value,
    rootfs: PathBuf,
    run_bundle: PathBuf,
    exec_bundle: PathBuf,
}

impl Raw {
    /// Writes, under `dir`, a bundle running `/bin/true` and one running `sleep`, both from the
    /// runtime's default `spec` with `rootfs` as a read-only root.
    pub async fn prepare(dir: &Path, rootfs: &Path) -> anyhow::Result<Raw> {
        Self::prepare_on(dir, rootfs, DEFAULT_PLATFORM).await
    }

    /// [`prepare`](Self::prepare), runsc running on gVisor's `platform`.
    pub async fn prepare_on(dir: &Path, rootfs: &Path, platform: &str) -> anyhow::Result<Raw> {
        for rt in Runtime::ALL {
            let root = state_root(dir, rt);
            fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        }
        let template = default_spec(&dir.join("spec")).await?;
        let run_bundle = write_bundle(&dir.join("run"), &template, rootfs, &["/bin/true"])?;
        let exec_bundle = write_bundle(
            &dir.join("exec"),
            &template,
            rootfs,
            &["/bin/sleep", "1000000"],
        )?;
        Ok(Raw {
            dir: dir.to_owned(),
            platform: platform.to_owned(),
            template,
            rootfs: rootfs.to_owned(),
            run_bundle,
            exec_bundle,
        })
    }

    /// Runs `args` under `rt`, timing it; its stderr goes to a log read back on failure (a file,
    /// not a pipe: a detached container would keep a pipe open).
    async fn invoke(&self, rt: Runtime, args: &[&OsStr]) -> anyhow::Result<Duration> {
        let log_path = self.dir.join(format!("{}.log", binary(rt)));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let mut cmd = command(&self.dir, rt, &self.platform);
        cmd.args(args).stdout(Stdio::null()).stderr(log);
        let t = Instant::now();
        let status = cmd
            .status()
            .await
            .with_context(|| format!("running {}", binary(rt)))?;
        let took = t.elapsed();
        if !status.success() {
            let text = fs::read(&log_path).unwrap_or_default();
            let tail = String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default());
            let words: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            bail!(
                "{} {} failed ({status}): {}",
                binary(rt),
                words.join(" "),
                tail.trim()
            );
        }
        Ok(took)
    }

    /// `crun` with `args`, timed, its output and the container's (a `run` or `restore`
    /// leaves its own) to `/dev/null`: CRIU checkpoints no open host file it is not told of.
    /// On failure, the errors of CRIU's log in `work` when there is one.
    pub async fn crun_quiet(
        &self,
        args: &[&OsStr],
        work: Option<&Path>,
    ) -> anyhow::Result<Duration> {
        let mut cmd = command(&self.dir, Runtime::Runc, &self.platform);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        let t = Instant::now();
        let status = cmd.status().await.context("running crun")?;
        let took = t.elapsed();
        if status.success() {
            return Ok(took);
        }
        let mut why = String::new();
        for log in ["dump.log", "restore.log"] {
            let text = work
                .map(|w| fs::read_to_string(w.join(log)).unwrap_or_default())
                .unwrap_or_default();
            let errors = text
                .lines()
                .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"));
            for line in errors.take(3) {
                why.push_str("; ");
                why.push_str(line.trim());
            }
        }
        let words: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        bail!("crun {} failed ({status}){why}", words.join(" "))
    }

    /// Writes a bundle named `name` of the same root filesystem, running `args`.
    pub fn bundle(&self, name: &str, args: &[&str]) -> anyhow::Result<PathBuf> {
        write_bundle(&self.dir.join(name), &self.template, &self.rootfs, args)
    }

    /// `runsc` with `args` (global flags first, then the command), timed.
    pub async fn runsc(&self, args: &[&OsStr]) -> anyhow::Result<Duration> {
        self.invoke(Runtime::Gvisor, args).await
    }

    /// `run` of `/bin/true` in the foreground: create, start, wait for exit, delete.
    pub async fn run_true(&self, rt: Runtime, id: &str) -> anyhow::Result<Duration> {
        self.invoke(
            rt,
            &[
                "run".as_ref(),
                "--bundle".as_ref(),
                self.run_bundle.as_os_str(),
                id.as_ref(),
            ],
        )
        .await
    }

    /// Starts a detached container running `sleep`, for [`exec_true`](Self::exec_true).
    pub async fn start_sleeper(&self, rt: Runtime, id: &str) -> anyhow::Result<()> {
        let args = [
            "run".as_ref(),
            "--detach".as_ref(),
            "--bundle".as_ref(),
            self.exec_bundle.as_os_str(),
            id.as_ref(),
        ];
        self.invoke(rt, &args).await.map(|_| ())
    }

    /// `exec` of `/bin/true` in container `id`.
    pub async fn exec_true(&self, rt: Runtime, id: &str) -> anyhow::Result<Duration> {
        self.invoke(rt, &["exec".as_ref(), id.as_ref(), "/bin/true".as_ref()])
            .await
    }

    /// Kills and deletes container `id`.
    pub async fn delete(&self, rt: Runtime, id: &str) -> anyhow::Result<()> {
        self.invoke(rt, &["delete".as_ref(), "--force".as_ref(), id.as_ref()])
            .await
            .map(|_| ())
    }
}

/// The runtime's default `config.json` (`crun spec`, or `runsc spec` where crun is missing).
async fn default_spec(dir: &Path) -> anyhow::Result<Value> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tool = if on_path("crun") { "crun" } else { "runsc" };
    let out = Command::new(tool)
        .arg("spec")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {tool} spec"))?;
    if !out.status.success() {
        bail!(
            "{tool} spec: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = dir.join("config.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write_bundle(
    dir: &Path,
    template: &Value,
    rootfs: &Path,
    args: &[&str],
) -> anyhow::Result<PathBuf> {
    let mut spec = template.clone();
    let process = spec
        .get_mut("process")
        .and_then(Value::as_object_mut)
        .context("the default spec has no process")?;
    process.insert("args".into(), json!(args));
    process.insert("terminal".into(), json!(false));
    let top = spec
        .as_object_mut()
        .context("the default spec is not an object")?;
    top.insert(
        "root".into(),
        json!({"path": rootfs.to_string_lossy(), "readonly": true}),
    );
    top.insert("hostname".into(), json!("bench"));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&spec).context("encoding config.json")?;
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(dir.to_owned())
}

/// Force-deletes every container left in the bench's runtime roots under `dir` (after an
/// error or an interrupt). Returns whether none is left.
pub async fn cleanup(dir: &Path) -> bool {
    let mut clean = true;
    for rt in Runtime::ALL {
        if !state_root(dir, rt).is_dir() || !on_path(binary(rt)) {
            continue;
        }
        let ids = match command(dir, rt, DEFAULT_PLATFORM)
            .args(["list", "--quiet"])
            .output()
            .await
        {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            Ok(out) => {
                eprintln!(
                    "warren bench: {} list: {}",
                    binary(rt),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                clean = false;
                continue;
            }
            Err(e) => {
                eprintln!("warren bench: running {} list: {e}", binary(rt));
                clean = false;
                continue;
            }
        };
        for id in ids
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "ID")
        {
            let res = command(dir, rt, DEFAULT_PLATFORM)
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .await;
            match res {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    eprintln!(
                        "warren bench: {} delete {id}: {}",
                        binary(rt),
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                    clean = false;
                }
                Err(e) => {
                    eprintln!("warren bench: running {} delete {id}: {e}", binary(rt));
                    clean = false;
                }
            }
        }
    }
    // runsc pins an empty network namespace under its root: unmounted, or the scratch
    // directory cannot go.
    warren_local::backend::release_runsc_pins(&state_root(dir, Runtime::Gvisor));
    clean
}
