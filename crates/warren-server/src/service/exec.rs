//! Running a command in a sandbox through its agent: streamed events, or collected whole.
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use warren_agent::{ProcessConfig, ProcessData, ProcessEvent, Signal, StartRequest};
use warren_api::{ExecExit, ExecKind, ExecRecord, ExecRequest, ExecResult, SandboxId};

use super::history::Capped;

use crate::error::ApiError;

/// Default exec timeout when the request gives none.
pub const DEFAULT_EXEC_TIMEOUT_S: u64 = 60;

/// One event of a running exec.
#[derive(Debug, Clone)]
pub enum ExecEvent {
    /// A chunk of standard output.
    Stdout(Bytes),
    /// A chunk of standard error.
    Stderr(Bytes),
    /// The end.
    Exit(ExecExit),
}

/// The events of one exec, ending with [`ExecEvent::Exit`].
pub type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecEvent, ApiError>> + Send>>;

/// Go's `os.ProcessState` names for signals, as the agent reports them (`signal: killed`).
const SIGNAL_NAMES: [(&str, i32); 12] = [
    ("hangup", 1),
    ("interrupt", 2),
    ("quit", 3),
    ("illegal instruction", 4),
    ("trace/breakpoint trap", 5),
    ("aborted", 6),
    ("bus error", 7),
    ("floating point exception", 8),
    ("killed", 9),
    ("segmentation fault", 11),
    ("broken pipe", 13),
    ("terminated", 15),
];

/// A shell-style exit code: the code itself, or 128 + the signal that killed the process.
pub fn exit_code(code: i32, exited: bool, status: &str) -> i32 {
    if exited || code >= 0 {
        return code;
    }
    let name = status.strip_prefix("signal: ").unwrap_or(status);
    SIGNAL_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| 128 + s)
        .unwrap_or(255)
}

pub(crate) fn new_exec_id() -> String {
    let bytes: [u8; 8] = rand::random();
    format!("ex_{}", hex::encode(bytes))
}

/// One stream of a plain exec's answer: its first `limit` bytes, and how many more came.
#[derive(Default)]
struct Kept {
    bytes: Vec<u8>,
    limit: usize,
    dropped: u64,
}

/// The sandbox's environment for a process it starts, but the variables filled from secrets
/// (`${e2b.secrets.NAME}`): the agent has their values from PID 1's environment, and the
/// record holds only the references.
pub(super) fn plain_env(
    env: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    env.iter()
        .filter(|(_, v)| crate::secrets::referenced(v).is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Kept {
    fn new(limit: usize) -> Kept {
        Kept {
            bytes: Vec::new(),
            limit,
            dropped: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        let take = chunk.len().min(room);
        let need = self.bytes.len() + take;
        if need > self.bytes.capacity() {
            // Doubling up to 1 MiB, then the limit at once: growing by doubling to 10 MiB
            // would hold 16, and 8 + 10 while the last copy is made.
            let cap = if need <= 1 << 20 {
                need.max(self.bytes.capacity() * 2).min(1 << 20)
            } else {
                self.limit
            }
            .min(self.limit);
            self.bytes.reserve_exact(cap - self.bytes.len());
        }
        self.bytes.extend_from_slice(&chunk[..take]);
        self.dropped += (chunk.len() - take) as u64;
    }

    /// The text (invalid UTF-8 replaced) and the bytes dropped. A UTF-8 sequence the limit
    /// cut in two is dropped whole rather than turned into U+FFFD.
    fn finish(mut self) -> (String, u64) {
        if self.dropped > 0 {
            let cut = incomplete_tail(&self.bytes);
            self.bytes.truncate(self.bytes.len() - cut);
            self.dropped += cut as u64;
        }
        let text = String::from_utf8(self.bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        (text, self.dropped)
    }
}

/// Length of an incomplete UTF-8 sequence at the end of `b` (0 if there is none).
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(4) {
        let lead = b[b.len() - back];
        if lead & 0xC0 == 0x80 {
            continue; // a continuation byte: the lead is further back
        }
        let need = match lead {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// A task that is aborted when this is dropped: work moved off a request's thread still ends
/// with the request.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Nice value of the bulk threads: under contention the scheduler gives them a tenth of what
/// a thread at 0 gets, while they still take all of any CPU nobody else wants.
const BULK_NICE: i32 = 10;

/// The runtime big outputs are read on: its threads run at [`BULK_NICE`], so draining one
/// sandbox's flood of output yields the CPU to other sandboxes' API calls. (The reader's
/// queue is bounded: a starved reader slows the command that floods, not the server.)
/// `fallback` when it cannot be made.
fn bulk_runtime(fallback: &tokio::runtime::Handle) -> tokio::runtime::Handle {
    static BULK: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    let rt = BULK.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("warren-bulk")
            .on_thread_start(|| {
                // Linux's nice is per thread; `None` is the calling one.
                if let Err(e) = rustix::process::setpriority_process(None, BULK_NICE) {
                    tracing::debug!("renicing a bulk output thread: {e}");
                }
            })
            .enable_all()
            .build()
            .map_err(|e| tracing::warn!("starting the bulk output runtime: {e}"))
            .ok()
    });
    rt.as_ref()
        .map_or_else(|| fallback.clone(), |rt| rt.handle().clone())
}

/// Events between the task reading an exec and the request streaming it.
const EXEC_QUEUE: usize = 16;
/// Output an exec's request reads itself; past this the rest is read by a task on the bulk
/// runtime ([`bulk_runtime`]). A command printing as fast as it can would otherwise keep the HTTP worker thread
/// serving its request, and every other request on that thread, busy decoding; handing every
/// exec off would cost each small one two thread hops (~0.5 ms measured on runc's ~1 ms).
const OFFLOAD_AFTER: usize = 1 << 20;

fn output_len(ev: &Result<ExecEvent, ApiError>) -> usize {
    match ev {
        Ok(ExecEvent::Stdout(b)) | Ok(ExecEvent::Stderr(b)) => b.len(),
        _ => 0,
    }
}

/// `events`, read by a task on `rt` once [`OFFLOAD_AFTER`] bytes of output have gone by, and
/// forwarded through a bounded queue (a slow reader still slows the command).
fn offload_heavy(mut events: ExecStream, rt: tokio::runtime::Handle) -> ExecStream {
    use futures::StreamExt;
    Box::pin(async_stream::stream! {
        let mut seen = 0;
        while seen < OFFLOAD_AFTER {
            let Some(ev) = events.next().await else { return };
            seen += output_len(&ev);
            yield ev;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(EXEC_QUEUE);
        let _reader = AbortOnDrop(rt.spawn(async move {
            while let Some(ev) = events.next().await {
                if tx.send(ev).await.is_err() {
                    return; // the request went away
                }
            }
        }));
        while let Some(ev) = rx.recv().await {
            yield ev;
        }
    })
}

/// What a plain exec has collected so far.
struct Collect {
    id: SandboxId,
    events: ExecStream,
    stdout: Kept,
    stderr: Kept,
}

impl Collect {
    /// Reads until the exit (`Some`), or until `until` bytes of output went by (`None`).
    async fn run(&mut self, until: Option<usize>) -> Result<Option<ExecResult>, ApiError> {
        use futures::StreamExt;
        let mut seen = 0;
        while let Some(ev) = self.events.next().await {
            seen += output_len(&ev);
            match ev? {
                ExecEvent::Stdout(b) => self.stdout.push(&b),
                ExecEvent::Stderr(b) => self.stderr.push(&b),
                ExecEvent::Exit(exit) => {
                    let (stdout, stdout_dropped) = std::mem::take(&mut self.stdout).finish();
                    let (stderr, stderr_dropped) = std::mem::take(&mut self.stderr).finish();
                    return Ok(Some(ExecResult {
                        id: exit.id,
                        exit_code: exit.exit_code,
                        stdout,
                        stderr,
                        duration_ms: exit.duration_ms,
                        timed_out: exit.timed_out,
                        truncated: stdout_dropped > 0 || stderr_dropped > 0,
                        stdout_dropped,
                        stderr_dropped,
                    }));
                }
            }
            if until.is_some_and(|n| seen >= n) {
                return Ok(None);
            }
        }
        Err(ApiError::Internal(format!(
            "sandbox {}: exec ended without an exit",
            self.id
        )))
    }
}

impl crate::service::Processes<'_> {
    /// Starts `req` in sandbox `id` and streams its output. Validation and the agent's refusal
    /// to start the process are errors here; what happens after is in the stream. Past
    /// [`OFFLOAD_AFTER`] bytes of output, a task on the bulk runtime reads the agent's stream.
    pub async fn exec_stream(
        &self,
        id: &SandboxId,
        req: ExecRequest,
    ) -> Result<ExecStream, ApiError> {
        let events = self.agent_exec(id, req).await?;
        Ok(offload_heavy(events, bulk_runtime(&self.inner.runtime)))
    }

    /// Starts `req` through the agent and reads its stream (on the caller's runtime).
    async fn agent_exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecStream, ApiError> {
        let Some((program, args)) = req.cmd.split_first() else {
            return Err(ApiError::Invalid("cmd must name a program".into()));
        };
        if req.cmd.iter().any(|a| a.contains('\0')) {
            return Err(ApiError::Invalid("cmd must not contain NUL bytes".into()));
        }
        if let Some(cwd) = &req.cwd {
            if !cwd.starts_with('/') {
                return Err(ApiError::Invalid(format!(
                    "cwd must be an absolute path, got {cwd:?}"
                )));
            }
        }
        let (rec, agent) = self.running_agent(id, req.user.as_deref()).await?;
        let mut envs = plain_env(&rec.sandbox.env);
        envs.extend(req.env);
        let start = StartRequest {
            process: ProcessConfig {
                cmd: program.clone(),
                args: args.to_vec(),
                envs,
                cwd: req.cwd.clone(),
            },
            pty: None,
            tag: None,
            stdin: Some(req.stdin.is_some()),
        };
        let began = Instant::now();
        let started_at = chrono::Utc::now();
        let history_cmd = req.cmd.clone();
        let label = req.label.clone();
        let mut stream = agent
            .start(&start)
            .await
            .map_err(|e| self.agent_error(id, e))?;
        let timeout = match req.timeout_s.unwrap_or(DEFAULT_EXEC_TIMEOUT_S) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let exec_id = new_exec_id();
        let stdin = req.stdin;
        let svc = self.0.clone();
        let id = id.clone();
        let out = async_stream::try_stream! {
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            let mut pid = None;
            let mut timed_out = false;
            let (mut kept_out, mut kept_err) = (Capped::default(), Capped::default());
            loop {
                let next = match (deadline, timed_out) {
                    (Some(d), false) => match tokio::time::timeout_at(d, stream.next()).await {
                        Ok(ev) => ev,
                        Err(_) => {
                            timed_out = true;
                            if let Some(pid) = pid {
                                let _ = agent.send_signal(pid, Signal::Sigkill).await;
                            }
                            continue;
                        }
                    },
                    _ => stream.next().await,
                };
                let Some(ev) = next else {
                    Err(ApiError::Internal(format!("sandbox {id}: the agent ended the stream without an exit")))?;
                    break;
                };
                match ev.map_err(|e| svc.processes().agent_error(&id, e))? {
                    ProcessEvent::Start { pid: p } => {
                        pid = Some(p);
                        if let Some(text) = &stdin {
                            // Written from a task so a large stdin and the output flow together.
                            let agent = agent.clone();
                            let text = text.clone().into_bytes();
                            tokio::spawn(async move {
                                for chunk in text.chunks(64 * 1024) {
                                    if agent.send_input(p, chunk).await.is_err() {
                                        return;
                                    }
                                }
                                let _ = agent.close_stdin(p).await;
                            });
                        }
                    }
                    ProcessEvent::Data(ProcessData::Stdout(b)) | ProcessEvent::Data(ProcessData::Pty(b)) => {
                        kept_out.push(&b);
                        yield ExecEvent::Stdout(b);
                    }
                    ProcessEvent::Data(ProcessData::Stderr(b)) => {
                        kept_err.push(&b);
                        yield ExecEvent::Stderr(b);
                    }
                    ProcessEvent::Keepalive => {}
                    ProcessEvent::End { exit_code: code, exited, status, .. } => {
                        let exit = ExecExit {
                            id: exec_id.clone(),
                            exit_code: exit_code(code, exited, &status),
                            duration_ms: began.elapsed().as_millis() as u64,
                            timed_out,
                        };
                        svc.processes().record_exec(&id, ExecRecord {
                            id: exec_id.clone(),
                            cmd: history_cmd.clone(),
                            label: label.clone(),
                            kind: ExecKind::User,
                            exit_code: Some(exit.exit_code),
                            stdout: kept_out.text(),
                            stderr: kept_err.text(),
                            started_at,
                            duration_ms: exit.duration_ms,
                        }).await;
                        yield ExecEvent::Exit(exit);
                        break;
                    }
                }
            }
        };
        Ok(Box::pin(out))
    }

    /// Runs `req` and collects its output: the first [`OutputLimits::exec_output`] bytes of
    /// each stream, counting the rest. The command runs to its end either way (its output
    /// keeps being read, so it never blocks on a full pipe).
    ///
    /// [`OutputLimits::exec_output`]: super::OutputLimits::exec_output
    pub async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecResult, ApiError> {
        let t = std::time::Instant::now();
        let res = self.exec_untimed(id, req).await;
        self.inner.telemetry.exec_ended(t.elapsed());
        res
    }

    async fn exec_untimed(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecResult, ApiError> {
        let limit = self.inner.output.exec_output;
        let mut c = Collect {
            id: id.clone(),
            events: self.agent_exec(id, req).await?,
            stdout: Kept::new(limit),
            stderr: Kept::new(limit),
        };
        if let Some(res) = c.run(Some(OFFLOAD_AFTER)).await? {
            return Ok(res);
        }
        // A big one: the rest on the bulk runtime, all of it there (no queue).
        let rest =
            AbortOnDrop(bulk_runtime(&self.inner.runtime).spawn(async move { c.run(None).await }));
        match rest.await {
            Ok(Ok(Some(res))) => Ok(res),
            // Without a limit it returns only at the exit, or with an error.
            Ok(Ok(None)) => Err(ApiError::Internal(format!(
                "sandbox {id}: exec ended without an exit"
            ))),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(ApiError::Internal(format!("sandbox {id}: exec: {e}"))),
        }
    }

    /// Maps an agent error: the agent's own refusals are the caller's (bad program, bad
    /// cwd); transport failures mean the sandbox may have died, so it is checked at once.
    fn agent_error(&self, id: &SandboxId, e: warren_agent::AgentError) -> ApiError {
        match e.rpc_code() {
            Some("invalid_argument") | Some("not_found") | Some("failed_precondition") => {
                ApiError::Invalid(format!("sandbox {id}: {e}"))
            }
            _ => {
                let svc = self.0.clone();
                let id2 = id.clone();
                tokio::spawn(async move {
                    let _ = svc.sandboxes().reconcile(&id2).await;
                });
                ApiError::Unavailable(format!("sandbox {id}: agent unreachable: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{exit_code, Kept};

    #[test]
    fn kept_output_stops_at_the_limit_and_counts_the_rest() {
        let mut k = Kept::new(5);
        k.push(b"abc");
        k.push(b"defgh");
        assert_eq!(k.finish(), ("abcde".to_owned(), 3));
        let mut k = Kept::new(4);
        k.push("ab€".as_bytes()); // € is 3 bytes: cut after its first
        assert_eq!(k.finish(), ("ab".to_owned(), 3));
        let mut k = Kept::new(10);
        k.push("ab€".as_bytes());
        assert_eq!(k.finish(), ("ab€".to_owned(), 0));
    }

    #[test]
    fn signals_become_128_plus() {
        assert_eq!(exit_code(3, true, "exit status 3"), 3);
        assert_eq!(exit_code(-1, false, "signal: killed"), 137);
        assert_eq!(exit_code(-1, false, "signal: terminated"), 143);
    }
}
