//! Supervision of the processes the agent starts: the table every selector (pid or tag) is
//! looked up in, input to their stdin or terminal, signals, terminal resizes, and attaching
//! `Connect` subscribers to their output.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal as NixSignal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, Command};
use tokio::sync::{broadcast, mpsc, watch};

use warren_agent::connect::{code, ConnectError};
use warren_agent::{
    ProcessConfig, ProcessEvent, ProcessInfo, ProcessInput, ProcessSelector, PtySize, Signal,
    StartRequest,
};

use super::exit_status;
use super::pty::PtyMaster;
use super::pump::{self, event_envelope};
use super::spawn::{spawn, Input};
use super::users::User;

/// Tag of the sandbox's main command in `List`.
const MAIN_TAG: &str = "main";
/// Envelopes kept for `Connect` subscribers that have not read them yet. A subscriber further
/// behind than this is cut off (its stream ends with `resource_exhausted`), so it can neither
/// stall the process nor grow the agent's memory.
const SUBSCRIBER_BACKLOG: usize = 256;

/// Per-stream options taken from request headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamOptions {
    /// Send a `keepalive` event after this long without one.
    pub keepalive: Option<Duration>,
    /// Kill the process group with SIGKILL after this long (the Connect deadline, like envd).
    pub timeout: Option<Duration>,
}

/// One running process.
pub struct Entry {
    pid: u32,
    config: ProcessConfig,
    tag: Option<String>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pty: Option<Arc<PtyMaster>>,
    /// Where `Connect` subscribers listen; `None` once the process's stream has ended (or for
    /// the main command, whose output is not captured).
    events: Mutex<Option<broadcast::Sender<Bytes>>>,
}

impl Entry {
    /// Hands an envelope to the current `Connect` subscribers, if any.
    pub fn publish(&self, envelope: &Bytes) {
        if let Some(tx) = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            // Err only means nobody is subscribed.
            let _ = tx.send(envelope.clone());
        }
    }

    /// Ends every subscriber's stream after what was published so far.
    pub fn close_subscribers(&self) {
        drop(
            self.events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

/// Every running process the agent started, and what they inherit.
pub struct Supervisor {
    child_env: Vec<(OsString, OsString)>,
    table: Mutex<HashMap<u32, Arc<Entry>>>,
    main: watch::Sender<Option<u32>>,
}

fn not_found(selector: &ProcessSelector) -> ConnectError {
    let message = match selector {
        ProcessSelector::Pid(pid) => format!("process with pid {pid} not found"),
        ProcessSelector::Tag(tag) => format!("process with tag {tag} not found"),
    };
    ConnectError::new(code::NOT_FOUND, message)
}

/// Signals the process group led by `pid`, or `pid` alone if it left its group.
pub fn signal_group(pid: u32, signal: NixSignal) -> nix::Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid).map_err(|_| Errno::ESRCH)?);
    killpg(pid, signal).or_else(|_| kill(pid, signal))
}

impl Supervisor {
    /// A supervisor whose processes start from `child_env`.
    pub fn new(child_env: Vec<(OsString, OsString)>) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            child_env,
            table: Mutex::new(HashMap::new()),
            main: watch::Sender::new(None),
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<u32, Arc<Entry>>> {
        // The table stays consistent even if a holder panicked: every update is one insert/remove.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `pid` is a process this supervisor started and has not yet seen end (its exit
    /// status is tokio's to collect, not init's).
    pub fn owns(&self, pid: u32) -> bool {
        self.table().contains_key(&pid)
    }

    /// Forgets a process that has been reaped, so its pid can no longer be signalled.
    pub fn forget(&self, pid: u32) {
        self.table().remove(&pid);
    }

    fn find(&self, selector: &ProcessSelector) -> Result<Arc<Entry>, ConnectError> {
        let table = self.table();
        let found = match selector {
            ProcessSelector::Pid(pid) => table.get(pid).cloned(),
            ProcessSelector::Tag(tag) => table
                .values()
                .find(|e| e.tag.as_deref() == Some(tag.as_str()))
                .cloned(),
        };
        found.ok_or_else(|| not_found(selector))
    }

    /// Starts a process for a `Start` call as `user`; the receiver yields its stream's
    /// envelopes, the `start` event first and the end-of-stream message last.
    pub fn start(
        self: &Arc<Self>,
        req: StartRequest,
        options: StreamOptions,
        user: &User,
    ) -> Result<mpsc::Receiver<Bytes>, ConnectError> {
        let input = match req.stdin {
            Some(false) => Input::Null,
            _ => Input::Pipe,
        };
        let pty_size = req.pty.map(|p| p.size.unwrap_or_default());
        let mut spawned = spawn(&self.child_env, &req.process, user, input, pty_size)?;
        let pid = spawned.pid;
        let (pty, output) = match spawned.pty.take() {
            Some((master, output)) => (Some(Arc::new(master)), Some(output)),
            None => (None, None),
        };
        let (events, _) = broadcast::channel(SUBSCRIBER_BACKLOG);
        let entry = Arc::new(Entry {
            pid,
            config: req.process,
            tag: req.tag,
            stdin: tokio::sync::Mutex::new(spawned.child.stdin.take()),
            pty,
            events: Mutex::new(Some(events)),
        });
        self.table().insert(pid, entry.clone());

        let (tx, rx) = mpsc::channel(pump::QUEUE);
        if let Some(start) = event_envelope(ProcessEvent::Start { pid }) {
            // The queue is empty: this cannot fail for lack of room.
            let _ = tx.try_send(start);
        }
        tokio::spawn(pump::run(
            self.clone(),
            spawned.child,
            entry,
            output,
            tx,
            options,
        ));
        Ok(rx)
    }

    /// `Connect`: the process's events from now on (after a `start` event naming it), ending
    /// with its `end` event.
    pub fn connect(
        &self,
        selector: &ProcessSelector,
        options: StreamOptions,
    ) -> Result<mpsc::Receiver<Bytes>, ConnectError> {
        let entry = self.find(selector)?;
        let rx = entry
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(broadcast::Sender::subscribe)
            .ok_or_else(|| {
                ConnectError::new(
                    code::FAILED_PRECONDITION,
                    format!("output of process {} cannot be followed", entry.pid),
                )
            })?;
        Ok(pump::subscriber(entry.pid, rx, options))
    }

    /// Starts the sandbox's main command, output to the agent's own stdout/stderr.
    pub fn start_main(self: &Arc<Self>, argv: &[String], cwd: &Path) -> Result<u32, String> {
        let Some((cmd, args)) = argv.split_first() else {
            return Err("empty main command".to_owned());
        };
        let config = ProcessConfig {
            cmd: cmd.clone(),
            args: args.to_vec(),
            envs: Default::default(),
            cwd: Some(cwd.to_string_lossy().into_owned()),
        };
        // The sandbox's default user (an image's `User`, or the create request's) runs it, as
        // Docker runs an image's command; root needs no shim.
        let accounts = super::users::Accounts::from_env();
        let user = super::users::Table::load(&accounts)
            .user(&accounts.default_user)
            .ok_or_else(|| {
                format!(
                    "cannot start main command {argv:?}: user {:?} is not in /etc/passwd",
                    accounts.default_user
                )
            })?;
        let mut command = if user.is_root() {
            let mut c = Command::new(cmd);
            c.args(args).process_group(0);
            c
        } else {
            let mut c = Command::new("/proc/self/exe");
            c.arg(cmd).args(args);
            c
        };
        command
            .env_clear()
            .envs(self.child_env.iter().map(|(k, v)| (k, v)))
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
        if !user.is_root() {
            command.env(
                super::exec_shim::SPEC_VAR,
                super::exec_shim::Spec::new(&user, false).encode(),
            );
        }
        super::limits::score_child(&mut command);
        let mut child = command
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start main command {argv:?}: {e}"))?;
        let pid = child.id().ok_or("main command has no pid")?;
        let entry = Entry {
            pid,
            config,
            tag: Some(MAIN_TAG.to_owned()),
            stdin: tokio::sync::Mutex::new(None),
            pty: None,
            events: Mutex::new(None),
        };
        self.table().insert(pid, Arc::new(entry));
        self.main.send_replace(Some(pid));
        let this = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            this.forget(pid);
            match status {
                Ok(status) => eprintln!(
                    "warren-agent: main command (pid {pid}) ended: {}",
                    exit_status::describe(status)
                ),
                Err(e) => eprintln!("warren-agent: waiting for main command (pid {pid}): {e}"),
            }
            this.main.send_replace(None);
        });
        Ok(pid)
    }

    /// Signals the main command's process group; false when none is running.
    pub fn signal_main(&self, signal: NixSignal) -> bool {
        let pid = *self.main.borrow();
        match pid {
            Some(pid) => signal_group(pid, signal).is_ok(),
            None => false,
        }
    }

    /// Returns once no main command is running.
    pub async fn main_exited(&self) {
        let mut rx = self.main.subscribe();
        // Err only if the sender is gone, which it cannot be while `self` lives.
        let _ = rx.wait_for(Option::is_none).await;
    }

    /// Running processes, by pid.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut list: Vec<ProcessInfo> = self
            .table()
            .values()
            .map(|e| ProcessInfo {
                config: e.config.clone(),
                pid: e.pid,
                tag: e.tag.clone(),
            })
            .collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    /// Writes to a process's stdin pipe or terminal.
    pub async fn send_input(
        &self,
        selector: &ProcessSelector,
        input: ProcessInput,
    ) -> Result<(), ConnectError> {
        let entry = self.find(selector)?;
        let data = match input {
            ProcessInput::Stdin(data) => data,
            ProcessInput::Pty(data) => {
                let Some(pty) = &entry.pty else {
                    return Err(ConnectError::new(
                        code::INTERNAL,
                        "error writing to tty: tty not assigned to process",
                    ));
                };
                return pty.write_all(&data).await.map_err(|e| {
                    ConnectError::new(
                        code::INTERNAL,
                        format!("error writing to tty of process '{}': {e}", entry.pid),
                    )
                });
            }
        };
        let mut stdin = entry.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            return Err(ConnectError::new(
                code::INTERNAL,
                "error writing to stdin: stdin not enabled or closed",
            ));
        };
        pipe.write_all(&data).await.map_err(|e| {
            ConnectError::new(
                code::INTERNAL,
                format!("error writing to stdin of process '{}': {e}", entry.pid),
            )
        })
    }

    /// Closes a process's stdin pipe (no-op if already closed).
    pub async fn close_stdin(&self, selector: &ProcessSelector) -> Result<(), ConnectError> {
        let entry = self.find(selector)?;
        drop(entry.stdin.lock().await.take());
        Ok(())
    }

    /// `Update`: resizes a process's terminal.
    pub fn resize(&self, selector: &ProcessSelector, size: PtySize) -> Result<(), ConnectError> {
        let entry = self.find(selector)?;
        let Some(pty) = &entry.pty else {
            return Err(ConnectError::new(
                code::INTERNAL,
                "error resizing tty: tty not assigned to process",
            ));
        };
        pty.resize(size)
            .map_err(|e| ConnectError::new(code::INTERNAL, format!("error resizing tty: {e}")))
    }

    /// Sends a signal to a process's whole group.
    pub fn send_signal(
        &self,
        selector: &ProcessSelector,
        signal: Signal,
    ) -> Result<(), ConnectError> {
        let signal = match signal {
            Signal::Sigkill => NixSignal::SIGKILL,
            Signal::Sigterm => NixSignal::SIGTERM,
            Signal::Unspecified => {
                return Err(ConnectError::new(
                    code::INVALID_ARGUMENT,
                    "signal is unspecified",
                ))
            }
        };
        let entry = self.find(selector)?;
        signal_group(entry.pid, signal).map_err(|e| match e {
            Errno::ESRCH => not_found(selector),
            e => ConnectError::new(code::INTERNAL, format!("error sending signal: {e}")),
        })
    }
}
