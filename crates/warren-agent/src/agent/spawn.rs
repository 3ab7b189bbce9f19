//! Turning a `ProcessConfig` into a running child: environment, working directory, identity and
//! terminal. Root without a terminal is spawned directly; anything else goes through the exec
//! shim, which switches user and session on the child's side.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::errno::Errno;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use warren_agent::connect::{code, ConnectError};
use warren_agent::{ProcessConfig, PtySize};

use super::exec_shim::{Spec, SPEC_VAR};
use super::pty::{self, PtyMaster};
use super::users::User;

/// What a child's stdin is.
pub enum Input {
    /// A pipe fed by `SendInput`.
    Pipe,
    /// `/dev/null` (`stdin: false`).
    Null,
}

/// A started child and the agent's ends of its terminal, if it has one.
pub struct Spawned {
    /// The child (stdout/stderr pipes inside unless it has a terminal).
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    /// The terminal's master side, and its output.
    pub pty: Option<(PtyMaster, pipe::Receiver)>,
}

/// Mirrors envd: running out of something is retryable, anything else is the request's fault.
fn spawn_error_code(e: &std::io::Error) -> &'static str {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EAGAIN | Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE | Errno::ENOSPC) => {
            code::RESOURCE_EXHAUSTED
        }
        _ => code::INVALID_ARGUMENT,
    }
}

fn spawn_error(config: &ProcessConfig, e: &std::io::Error) -> ConnectError {
    let shown = std::iter::once(&config.cmd)
        .chain(&config.args)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    ConnectError::new(
        spawn_error_code(e),
        format!("error starting process '{shown}': {e}"),
    )
}

/// The file `cmd` names, found the way `execvp` would: itself (against `cwd`) when it holds a
/// `/`, else the first executable file of that name on the `PATH` of `env` (or, when none is
/// executable, the first file, whose exec then fails with `EACCES` as `execvp`'s would).
fn find_program(cmd: &str, cwd: &Path, env: &[(OsString, OsString)]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let file = |p: &Path| p.metadata().ok().filter(|m| m.is_file());
    if cmd.contains('/') {
        let path = cwd.join(cmd);
        return file(&path).map(|_| path);
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut found = None;
    for dir in std::env::split_paths(&path) {
        let candidate = cwd.join(dir).join(cmd);
        if let Some(meta) = file(&candidate) {
            if meta.permissions().mode() & 0o111 != 0 {
                return Some(candidate);
            }
            found.get_or_insert(candidate);
        }
    }
    found
}

/// Starts `config` as `user`: its own process group (a session with a controlling terminal
/// when `pty` is given), `HOME`/`USER`/`LOGNAME` of the user, cwd defaulting to the home.
pub fn spawn(
    base_env: &[(OsString, OsString)],
    config: &ProcessConfig,
    user: &User,
    input: Input,
    pty: Option<PtySize>,
) -> Result<Spawned, ConnectError> {
    // A relative cwd (or `~`) is the user's home's, as envd resolves it.
    let cwd = match &config.cwd {
        Some(cwd) => {
            let resolved = super::fs::resolve(cwd, user)?;
            if !resolved.exists() {
                return Err(ConnectError::new(
                    code::INVALID_ARGUMENT,
                    format!("cwd '{}' does not exist", resolved.display()),
                ));
            }
            resolved
        }
        None if user.home.is_dir() => user.home.clone(),
        None => PathBuf::from("/"),
    };
    let mut env: Vec<(OsString, OsString)> = base_env.to_vec();
    env.push(("HOME".into(), user.home.clone().into()));
    env.push(("USER".into(), user.name.clone().into()));
    env.push(("LOGNAME".into(), user.name.clone().into()));
    if pty.is_some() {
        env.push(("TERM".into(), "xterm-256color".into()));
    }
    env.extend(config.envs.iter().map(|(k, v)| (k.into(), v.into())));

    // Found here: the shim would only discover a missing command after the spawn succeeded,
    // too late for a `Start` error.
    let Some(program) = find_program(&config.cmd, &cwd, &env) else {
        let e = std::io::Error::from_raw_os_error(Errno::ENOENT as i32);
        return Err(spawn_error(config, &e));
    };
    let shim = pty.is_some() || !user.is_root();
    let mut cmd = if shim {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg(&config.cmd).args(&config.args);
        cmd
    } else {
        // By its path, `argv[0]` as asked: std then starts it with `posix_spawn` (a vfork)
        // instead of fork and a `PATH` search in the child, which under gVisor saves about
        // 2 ms an exec.
        let mut cmd = Command::new(program);
        // Its own group, so a signal reaches everything it forks and the agent is spared.
        cmd.arg0(&config.cmd).args(&config.args).process_group(0);
        cmd
    };
    cmd.env_clear().envs(env).current_dir(&cwd);
    super::limits::score_child(&mut cmd);
    if shim {
        // After `env_clear`: without it the copy of this binary would start a second server.
        cmd.env(SPEC_VAR, Spec::new(user, pty.is_some()).encode());
    }
    // Held here so the agent's copy of the child side closes as soon as the spawn is done.
    let (master, _slave): (Option<(PtyMaster, pipe::Receiver)>, Option<OwnedFd>) = match pty {
        Some(size) => {
            let (master, output, slave) = pty::open(size).map_err(|e| {
                ConnectError::new(code::INTERNAL, format!("cannot open a pty: {e}"))
            })?;
            let dup = |fd: &OwnedFd| {
                fd.try_clone().map(Stdio::from).map_err(|e| {
                    ConnectError::new(code::INTERNAL, format!("cannot open a pty: {e}"))
                })
            };
            cmd.stdin(dup(&slave)?)
                .stdout(dup(&slave)?)
                .stderr(dup(&slave)?);
            (Some((master, output)), Some(slave))
        }
        None => {
            cmd.stdin(match input {
                Input::Pipe => Stdio::piped(),
                Input::Null => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            (None, None)
        }
    };
    let child = cmd.spawn().map_err(|e| spawn_error(config, &e))?;
    drop(cmd);
    let Some(pid) = child.id() else {
        return Err(ConnectError::new(
            code::INTERNAL,
            "started process has no pid",
        ));
    };
    Ok(Spawned {
        child,
        pid,
        pty: master,
    })
}
