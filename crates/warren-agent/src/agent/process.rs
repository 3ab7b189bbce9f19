//! Supervision of the processes the agent starts: spawning them in their own process groups,
//! the table `List`/`SendInput`/`SendSignal` look them up in, and the per-process pump that turns
//! their output and exit into `Start` stream envelopes.

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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant, Interval};

use warren_agent::connect::{code, ConnectError};
use warren_agent::envelope;
use warren_agent::{
    ProcessConfig, ProcessData, ProcessEvent, ProcessInfo, ProcessInput, ProcessSelector, Signal,
    StartRequest, StartResponse,
};

use super::exit_status;

/// Largest output chunk per `data` event (envd's size).
const CHUNK: usize = 32 << 10;
/// Envelopes queued per stream before the pump waits for the HTTP client: the backpressure bound.
const QUEUE: usize = 16;
/// After a process exits, how long its pipes may stay silent before we stop waiting for EOF: a
/// background grandchild may hold them open forever.
const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// Tag of the sandbox's main command in `List`.
const MAIN_TAG: &str = "main";

/// Per-stream options taken from request headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamOptions {
    /// Send a `keepalive` event after this long without one.
    pub keepalive: Option<Duration>,
    /// Kill the process group with SIGKILL after this long (the Connect deadline, like envd).
    pub timeout: Option<Duration>,
}

struct Entry {
    pid: u32,
    config: ProcessConfig,
    tag: Option<String>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
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

/// Mirrors envd: running out of something is retryable, anything else is the request's fault.
fn spawn_error_code(e: &std::io::Error) -> &'static str {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EAGAIN | Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE | Errno::ENOSPC) => {
            code::RESOURCE_EXHAUSTED
        }
        _ => code::INVALID_ARGUMENT,
    }
}

/// Signals the process group led by `pid`, or `pid` alone if it left its group.
fn signal_group(pid: u32, signal: NixSignal) -> nix::Result<()> {
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

    fn command(&self, config: &ProcessConfig) -> Command {
        let mut cmd = Command::new(&config.cmd);
        cmd.args(&config.args)
            .env_clear()
            .envs(self.child_env.iter().map(|(k, v)| (k, v)))
            .envs(&config.envs)
            // Its own group, so a signal reaches everything it forks and the agent is spared.
            .process_group(0);
        if let Some(cwd) = &config.cwd {
            cmd.current_dir(cwd);
        }
        cmd
    }

    /// Starts a process for a `Start` call; the receiver yields its stream's envelopes, the
    /// `start` event first and the end-of-stream message last.
    pub fn start(
        self: &Arc<Self>,
        req: StartRequest,
        options: StreamOptions,
    ) -> Result<mpsc::Receiver<Bytes>, ConnectError> {
        if req.pty.is_some() {
            return Err(ConnectError::new(
                code::UNIMPLEMENTED,
                "pty processes are not supported by this agent",
            ));
        }
        if let Some(cwd) = &req.process.cwd {
            if !Path::new(cwd).exists() {
                return Err(ConnectError::new(
                    code::INVALID_ARGUMENT,
                    format!("cwd '{cwd}' does not exist"),
                ));
            }
        }
        let mut cmd = self.command(&req.process);
        let stdin = match req.stdin {
            Some(false) => Stdio::null(),
            _ => Stdio::piped(),
        };
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            let shown = std::iter::once(&req.process.cmd)
                .chain(&req.process.args)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            ConnectError::new(
                spawn_error_code(&e),
                format!("error starting process '{shown}': {e}"),
            )
        })?;
        let Some(pid) = child.id() else {
            return Err(ConnectError::new(
                code::INTERNAL,
                "started process has no pid",
            ));
        };
        let entry = Entry {
            pid,
            config: req.process,
            tag: req.tag,
            stdin: tokio::sync::Mutex::new(child.stdin.take()),
        };
        self.table().insert(pid, Arc::new(entry));

        let (tx, rx) = mpsc::channel(QUEUE);
        if let Some(start) = event_envelope(ProcessEvent::Start { pid }) {
            // The queue is empty: this cannot fail for lack of room.
            let _ = tx.try_send(start);
        }
        tokio::spawn(pump(self.clone(), child, pid, tx, options));
        Ok(rx)
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
        let mut command = self.command(&config);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start main command {argv:?}: {e}"))?;
        let pid = child.id().ok_or("main command has no pid")?;
        let entry = Entry {
            pid,
            config,
            tag: Some(MAIN_TAG.to_owned()),
            stdin: tokio::sync::Mutex::new(None),
        };
        self.table().insert(pid, Arc::new(entry));
        self.main.send_replace(Some(pid));
        let this = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            this.table().remove(&pid);
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

    /// Writes to a process's stdin pipe.
    pub async fn send_input(
        &self,
        selector: &ProcessSelector,
        input: ProcessInput,
    ) -> Result<(), ConnectError> {
        let entry = self.find(selector)?;
        let data = match input {
            ProcessInput::Stdin(data) => data,
            ProcessInput::Pty(_) => {
                return Err(ConnectError::new(
                    code::INTERNAL,
                    "error writing to tty: tty not assigned to process",
                ))
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

/// One `Start` stream message, framed; `None` only if it cannot be serialized.
fn event_envelope(event: ProcessEvent) -> Option<Bytes> {
    match envelope::encode_json(0, &StartResponse { event }) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!("warren-agent: cannot encode process event: {e}");
            None
        }
    }
}

/// Where a pump's envelopes go; after the client has gone, nowhere, but the pump keeps draining
/// the pipes so the process never blocks on a full pipe.
struct Sink(Option<mpsc::Sender<Bytes>>);

impl Sink {
    fn is_open(&self) -> bool {
        self.0.is_some()
    }

    async fn send(&mut self, event: impl FnOnce() -> ProcessEvent) {
        let Some(tx) = &self.0 else { return };
        let Some(bytes) = event_envelope(event()) else {
            return;
        };
        if tx.send(bytes).await.is_err() {
            self.0 = None;
        }
    }

    async fn finish(&mut self) {
        let Some(tx) = self.0.take() else { return };
        if let Ok(end) = envelope::encode_json(
            envelope::FLAG_END_STREAM,
            &warren_agent::EndStream::default(),
        ) {
            let _ = tx.send(end).await;
        }
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Forwards a process's output and exit to its stream, then reaps it.
async fn pump(
    sup: Arc<Supervisor>,
    mut child: Child,
    pid: u32,
    tx: mpsc::Sender<Bytes>,
    options: StreamOptions,
) {
    let mut sink = Sink(Some(tx));
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_buf = vec![0u8; CHUNK];
    let mut err_buf = vec![0u8; CHUNK];
    let mut end: Option<ProcessEvent> = None;
    let never = Instant::now() + Duration::from_secs(30 * 365 * 86400);
    let drain = sleep_until(never);
    tokio::pin!(drain);
    let deadline = sleep_until(options.timeout.map_or(never, |t| Instant::now() + t));
    tokio::pin!(deadline);
    let mut keepalive = options
        .keepalive
        .map(|period| tokio::time::interval_at(Instant::now() + period, period));

    while end.is_none() || stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Ok(n) if n > 0 => {
                    let chunk = out_buf.get(..n).map(Bytes::copy_from_slice).unwrap_or_default();
                    sink.send(|| ProcessEvent::Data(ProcessData::Stdout(chunk))).await;
                }
                _ => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Ok(n) if n > 0 => {
                    let chunk = err_buf.get(..n).map(Bytes::copy_from_slice).unwrap_or_default();
                    sink.send(|| ProcessEvent::Data(ProcessData::Stderr(chunk))).await;
                }
                _ => stderr = None,
            },
            status = child.wait(), if end.is_none() => {
                // Removed as soon as it is reaped, so its pid can no longer be signalled.
                sup.table().remove(&pid);
                end = Some(match status {
                    Ok(status) => exit_status::end_event(status),
                    Err(e) => exit_status::wait_failed(&e),
                });
            }
            () = &mut drain, if end.is_some() => break,
            () = &mut deadline, if end.is_none() => {
                let _ = signal_group(pid, NixSignal::SIGKILL);
                deadline.as_mut().reset(never);
            }
            () = tick(&mut keepalive), if sink.is_open() => {
                sink.send(|| ProcessEvent::Keepalive).await;
            }
        }
        if end.is_some() {
            // Measured from the last activity, not from a send that waited on a slow client.
            drain.as_mut().reset(Instant::now() + DRAIN_IDLE);
        }
    }
    drop((stdout, stderr));
    if let Some(end) = end {
        sink.send(|| end).await;
    }
    sink.finish().await;
}
