//! The OCI runtime driver: `runsc` or `crun`, called only to run, inspect, signal and delete
//! containers (never per command: commands go to the agent). Each server gives its runtimes
//! their own `--root`, so its containers are its own.
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use tokio::process::Command;

use crate::criu;

pub use warren_backend::ContainerStatus;

/// A runtime that runs OCI bundles.
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Creates and starts the container from `bundle`, detached; the container's stdout and
    /// stderr are appended to those two files.
    async fn run(&self, id: &str, bundle: &Path, stdout: &Path, stderr: &Path) -> io::Result<()>;
    /// Creates the container from `bundle` without starting its process (so the host can put
    /// its network in first), output as with [`ContainerRuntime::run`].
    async fn create(&self, id: &str, bundle: &Path, stdout: &Path, stderr: &Path)
        -> io::Result<()>;
    /// Starts a created container's process.
    async fn start(&self, id: &str) -> io::Result<()>;
    /// The host pid of the container's init.
    async fn pid(&self, id: &str) -> io::Result<u32>;
    /// The container's status.
    async fn status(&self, id: &str) -> io::Result<ContainerStatus>;
    /// Sends a signal (`TERM`, `KILL`) to the container's init.
    async fn kill(&self, id: &str, signal: &str) -> io::Result<()>;
    /// Kills and deletes the container; idempotent.
    async fn delete(&self, id: &str) -> io::Result<()>;
    /// The runtime binary and its global arguments, for benchmarks comparing with the raw tool.
    fn command_line(&self) -> (PathBuf, Vec<String>);
    /// Writes the running container's processes, memory and kernel state into `image` (a
    /// directory that must not exist yet), after which the container has exited.
    async fn checkpoint(&self, id: &str, image: &Path) -> io::Result<()>;
    /// Makes the container `id` from `bundle` again, with the state `checkpoint` wrote to
    /// `image`, detached; output goes to the two files as with [`ContainerRuntime::run`].
    /// `link`, a veth end in the host's namespace, becomes the sandbox's `eth0` where the
    /// runtime makes the network namespace anew (CRIU); gVisor reuses the bundle's.
    async fn restore(
        &self,
        id: &str,
        bundle: &Path,
        image: &Path,
        stdout: &Path,
        stderr: &Path,
        link: Option<&str>,
    ) -> io::Result<()>;
    /// The runtime's version, as its `--version` prints it (first line).
    async fn version(&self) -> io::Result<String>;
    /// Whether a `verb` (`checkpoint`, `restore`) of container `id` is running now, also one
    /// started by a server that has since died: its work goes on without it.
    fn busy(&self, verb: &str, id: &str) -> bool;
}

/// How gVisor sandboxes run: which `runsc`, on which platform, with which network stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GvisorConfig {
    /// The `runsc` binary.
    pub binary: PathBuf,
    /// `--platform`: `systrap` (default; no virtualisation needed), `ptrace` or `kvm`.
    pub platform: String,
    /// `--network`: `sandbox` (gVisor's own network stack on the sandbox's veth, so its packets
    /// never meet the host kernel's TCP/IP code) or `host` (the host kernel's stack, inside the
    /// sandbox's own network namespace: what runsc releases older than 2023 need here).
    pub network: String,
}

/// The gVisor release Warren is built and tested with: the `gvisor.dev/gvisor` Go module
/// version `scripts/install-deps.sh` builds `runsc` from (named once, in
/// `scripts/gvisor-version`).
pub const GVISOR_VERSION: &str = include_str!("../../../scripts/gvisor-version").trim_ascii();

/// Where `scripts/install-deps.sh` installs the `runsc` of [`GVISOR_VERSION`].
pub fn pinned_runsc() -> PathBuf {
    PathBuf::from(format!("/opt/warren/runsc/{GVISOR_VERSION}/runsc"))
}

/// The `runsc` to use when none is named: the pinned build when installed, else whichever
/// `runsc` is on PATH (Debian's own package is a fallback: see README).
pub fn default_runsc() -> PathBuf {
    let pinned = pinned_runsc();
    if pinned.is_file() {
        pinned
    } else {
        PathBuf::from("runsc")
    }
}

impl Default for GvisorConfig {
    fn default() -> Self {
        GvisorConfig {
            binary: default_runsc(),
            platform: "systrap".into(),
            network: "sandbox".into(),
        }
    }
}

/// `runsc` or `crun` driven through its command line.
#[derive(Debug, Clone)]
pub struct CliRuntime {
    binary: PathBuf,
    global: Vec<String>,
    /// Whether `checkpoint` can work: runsc's is built in; crun needs CRIU, which Debian's
    /// crun lacks (`scripts/build-criu.sh` builds one that has it).
    checkpoints: bool,
    /// Whether checkpoints go through CRIU (crun), with [`crate::criu`]'s configuration.
    criu: bool,
    /// `PATH` for the runtime's processes: libcriu runs the `criu` it finds there.
    path: Option<OsString>,
    /// Its `--version`, once asked.
    version: tokio::sync::OnceCell<String>,
}

impl CliRuntime {
    /// `runsc` as `cfg` says, with state under `root`.
    pub fn gvisor(cfg: &GvisorConfig, root: &Path) -> Self {
        let mut global = vec![
            format!("--root={}", root.display()),
            format!("--network={}", cfg.network),
            format!("--platform={}", cfg.platform),
        ];
        // Writes go through to the sandbox's own disk, where they outlive a stop and count
        // against `disk_mb`; since 2023 runsc's default overlay keeps them in its memory.
        // Older releases have no such overlay, nor the flag.
        let flags = std::process::Command::new(&cfg.binary)
            .arg("flags")
            .output()
            // It prints them on stderr.
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default();
        if flags.contains("-overlay2") {
            global.push("--overlay2=none".into());
        }
        // setuid binaries (`sudo`) raise ids inside the sandbox, as under runc; gVisor ignores
        // the bits unless told. The sandbox's root is gVisor's, not the host's.
        if flags.contains("-allow-suid") {
            global.push("--allow-suid".into());
        }
        CliRuntime {
            binary: cfg.binary.clone(),
            global,
            checkpoints: true,
            criu: false,
            path: None,
            version: Default::default(),
        }
    }

    /// `crun` with state under `root`: the one `scripts/build-criu.sh` built with CRIU when
    /// installed, else the one on PATH (which pauses only if it reports `+CRIU`).
    pub fn crun(root: &Path) -> Self {
        let pinned = criu::pinned_crun();
        let binary = if pinned.is_file() {
            pinned
        } else {
            PathBuf::from("crun")
        };
        let path = criu::path_with_criu();
        let with_criu = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("+CRIU"));
        CliRuntime {
            binary,
            global: vec![format!("--root={}", root.display())],
            checkpoints: with_criu,
            criu: true,
            path,
            version: Default::default(),
        }
    }

    /// A command of the runtime with its global arguments and environment.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.global).stdin(Stdio::null());
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        cmd
    }

    async fn call(&self, args: &[&str]) -> io::Result<(bool, String, String)> {
        self.call_with(args, None).await
    }

    /// Runs `args`, with `CRIU_CONFIG_FILE` set when `config` is given.
    async fn call_with(
        &self,
        args: &[&str],
        config: Option<&Path>,
    ) -> io::Result<(bool, String, String)> {
        let mut cmd = self.command();
        if let Some(c) = config {
            cmd.env("CRIU_CONFIG_FILE", c);
        }
        let out = cmd
            .args(args)
            .output()
            .await
            .map_err(|e| io::Error::other(format!("running {}: {e}", self.binary.display())))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }

    fn failed(&self, what: &str, stderr: &str) -> io::Error {
        io::Error::other(format!("{} {what}: {stderr}", self.binary.display()))
    }
}

fn is_missing(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    // crun, mid-delete: its state directory is there but the status file already gone.
    s.contains("does not exist")
        || s.contains("not exist")
        || s.contains("not found")
        || (s.contains("/status") && s.contains("no such file or directory"))
}

#[async_trait]
impl ContainerRuntime for CliRuntime {
    async fn run(&self, id: &str, bundle: &Path, stdout: &Path, stderr: &Path) -> io::Result<()> {
        let mut args = vec![OsString::from("run"), "--detach".into(), "--bundle".into()];
        args.extend([bundle.as_os_str().to_owned(), id.into()]);
        self.detached("run", &args, stdout, stderr, None).await
    }

    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdout: &Path,
        stderr: &Path,
    ) -> io::Result<()> {
        let mut args = vec![OsString::from("create"), "--bundle".into()];
        args.extend([bundle.as_os_str().to_owned(), id.into()]);
        self.detached("create", &args, stdout, stderr, None).await
    }

    async fn start(&self, id: &str) -> io::Result<()> {
        let (ok, _, stderr) = self.call(&["start", id]).await?;
        if ok {
            Ok(())
        } else {
            Err(self.failed("start", &stderr))
        }
    }

    async fn pid(&self, id: &str) -> io::Result<u32> {
        let (ok, stdout, stderr) = self.call(&["state", id]).await?;
        if !ok {
            return Err(self.failed("state", &stderr));
        }
        let v: serde_json::Value = serde_json::from_str(&stdout)
            .map_err(|e| io::Error::other(format!("parsing runtime state: {e}")))?;
        v.get("pid")
            .and_then(|p| p.as_u64())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| io::Error::other(format!("{id} has no init process")))
    }

    async fn status(&self, id: &str) -> io::Result<ContainerStatus> {
        let (ok, stdout, stderr) = self.call(&["state", id]).await?;
        if !ok {
            return if is_missing(&stderr) {
                Ok(ContainerStatus::Missing)
            } else {
                Err(self.failed("state", &stderr))
            };
        }
        let v: serde_json::Value = serde_json::from_str(&stdout)
            .map_err(|e| io::Error::other(format!("parsing runtime state: {e}")))?;
        Ok(match v.get("status").and_then(|s| s.as_str()) {
            Some("running") => ContainerStatus::Running,
            Some("created") | Some("creating") => ContainerStatus::Created,
            Some("paused") => ContainerStatus::Paused,
            _ => ContainerStatus::Stopped,
        })
    }

    async fn kill(&self, id: &str, signal: &str) -> io::Result<()> {
        let (ok, _, stderr) = self.call(&["kill", id, signal]).await?;
        if ok || is_missing(&stderr) {
            Ok(())
        } else {
            Err(self.failed("kill", &stderr))
        }
    }

    async fn delete(&self, id: &str) -> io::Result<()> {
        let (ok, _, stderr) = self.call(&["delete", "--force", id]).await?;
        if ok || is_missing(&stderr) {
            Ok(())
        } else {
            Err(self.failed("delete", &stderr))
        }
    }

    fn command_line(&self) -> (PathBuf, Vec<String>) {
        (self.binary.clone(), self.global.clone())
    }

    async fn checkpoint(&self, id: &str, image: &Path) -> io::Result<()> {
        if !self.checkpoints {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{} cannot checkpoint here (no CRIU support): pause needs gVisor",
                    self.binary.display()
                ),
            ));
        }
        let image_arg = format!("--image-path={}", image.display());
        if !self.criu {
            let (ok, _, stderr) = self.call(&["checkpoint", &image_arg, id]).await?;
            return if ok {
                Ok(())
            } else {
                Err(self.failed("checkpoint", &stderr))
            };
        }
        let pid = self.pid(id).await?;
        // The keys go into the image first (crun writes into a directory that exists), so an
        // image a crash left whole has them too.
        let config = criu::dump_config(pid, image)?;
        let work = criu::work_dir(image);
        let work_arg = format!("--work-path={}", work.display());
        let (ok, _, stderr) = self
            .call_with(&["checkpoint", &image_arg, &work_arg, id], Some(&config))
            .await?;
        if !ok {
            return Err(self.failed("checkpoint", &criu_failure(&stderr, &work, "dump")));
        }
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }

    async fn restore(
        &self,
        id: &str,
        bundle: &Path,
        image: &Path,
        stdout: &Path,
        stderr: &Path,
        link: Option<&str>,
    ) -> io::Result<()> {
        let mut args = vec![OsString::from("restore"), "--detach".into()];
        args.push(format!("--image-path={}", image.display()).into());
        // CRIU's logs and configuration, beside the image.
        let work = self.criu.then(|| criu::work_dir(image));
        let config = match &work {
            Some(w) => {
                args.push(format!("--work-path={}", w.display()).into());
                Some(criu::restore_config(image, bundle, link)?)
            }
            None => None,
        };
        args.extend(["--bundle".into(), bundle.as_os_str().to_owned(), id.into()]);
        let res = self
            .detached("restore", &args, stdout, stderr, config.as_deref())
            .await;
        match (res, work) {
            (Ok(()), Some(w)) => {
                let _ = std::fs::remove_dir_all(&w);
                Ok(())
            }
            (Err(e), Some(w)) => Err(io::Error::other(criu_failure(
                &e.to_string(),
                &w,
                "restore",
            ))),
            (res, None) => res,
        }
    }

    fn busy(&self, verb: &str, id: &str) -> bool {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return false;
        };
        let binary = self.binary.as_os_str().as_encoded_bytes();
        procs.flatten().any(|p| {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let argv: Vec<&[u8]> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .collect();
            argv.first().is_some_and(|a0| *a0 == binary)
                && argv.contains(&verb.as_bytes())
                && argv.last().is_some_and(|last| *last == id.as_bytes())
        })
    }

    async fn version(&self) -> io::Result<String> {
        // Asked once: a pause and a resume each want it, and a process spawn costs ms.
        self.version
            .get_or_try_init(|| async {
                let (ok, stdout, stderr) = self.call(&["--version"]).await?;
                match stdout.lines().next() {
                    Some(line) if ok => Ok(line.trim().to_owned()),
                    _ => Err(self.failed("--version", &stderr)),
                }
            })
            .await
            .cloned()
    }
}

/// A CRIU failure's message with the errors of CRIU's own log (`<work>/<what>.log`), which
/// say why where crun says only that it failed.
fn criu_failure(stderr: &str, work: &Path, what: &str) -> String {
    let log = std::fs::read_to_string(work.join(format!("{what}.log"))).unwrap_or_default();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .take(4)
        .collect();
    if errors.is_empty() {
        stderr.to_owned()
    } else {
        format!("{stderr}; CRIU: {}", errors.join("; "))
    }
}

impl CliRuntime {
    /// Runs `args` (`run` or `restore`, detached), the container's output appended to the
    /// two files.
    async fn detached(
        &self,
        what: &str,
        args: &[OsString],
        stdout: &Path,
        stderr: &Path,
        criu_config: Option<&Path>,
    ) -> io::Result<()> {
        // The sandbox's output: for its owner's eyes only.
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(p)
        };
        let log = open(stdout)?;
        let log2 = open(stderr)?;
        // The container inherits these descriptors, so they must be files, not pipes we wait on.
        let mut cmd = self.command();
        if let Some(c) = criu_config {
            cmd.env("CRIU_CONFIG_FILE", c);
        }
        let status = cmd
            .args(args)
            .stdout(log)
            .stderr(log2)
            .status()
            .await
            .map_err(|e| io::Error::other(format!("running {}: {e}", self.binary.display())))?;
        if status.success() {
            Ok(())
        } else {
            let text = std::fs::read_to_string(stderr).unwrap_or_default();
            let tail: String = text
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("; ");
            Err(self.failed(what, &tail))
        }
    }
}
