//! Running a command in a sandbox through its agent: streamed events, or collected whole.
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use warren_agent::{ProcessConfig, ProcessData, ProcessEvent, Signal, StartRequest};
use warren_api::{ExecExit, ExecKind, ExecRecord, ExecRequest, ExecResult, SandboxId};

use super::history::Capped;

use super::Service;
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

impl Service {
    /// Starts `req` in sandbox `id` and streams its output. Validation and the agent's refusal
    /// to start the process are errors here; what happens after is in the stream.
    pub async fn exec_stream(
        &self,
        id: &SandboxId,
        req: ExecRequest,
    ) -> Result<ExecStream, ApiError> {
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
        let mut envs = rec.sandbox.env.clone();
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
        let svc = self.clone();
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
                match ev.map_err(|e| svc.agent_error(&id, e))? {
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
                        svc.record_exec(&id, &ExecRecord {
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

    /// Runs `req` and collects its whole output.
    pub async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecResult, ApiError> {
        use futures::StreamExt;
        let mut stream = self.exec_stream(id, req).await?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(ev) = stream.next().await {
            match ev? {
                ExecEvent::Stdout(b) => stdout.extend_from_slice(&b),
                ExecEvent::Stderr(b) => stderr.extend_from_slice(&b),
                ExecEvent::Exit(exit) => {
                    return Ok(ExecResult {
                        id: exit.id,
                        exit_code: exit.exit_code,
                        stdout: String::from_utf8_lossy(&stdout).into_owned(),
                        stderr: String::from_utf8_lossy(&stderr).into_owned(),
                        duration_ms: exit.duration_ms,
                        timed_out: exit.timed_out,
                    })
                }
            }
        }
        Err(ApiError::Internal(format!(
            "sandbox {id}: exec ended without an exit"
        )))
    }

    /// Maps an agent error: the agent's own refusals are the caller's (bad program, bad
    /// cwd); transport failures mean the sandbox may have died, so it is checked at once.
    fn agent_error(&self, id: &SandboxId, e: warren_agent::AgentError) -> ApiError {
        match e.rpc_code() {
            Some("invalid_argument") | Some("not_found") | Some("failed_precondition") => {
                ApiError::Invalid(format!("sandbox {id}: {e}"))
            }
            _ => {
                let svc = self.clone();
                let id2 = id.clone();
                tokio::spawn(async move {
                    let _ = svc.reconcile(&id2).await;
                });
                ApiError::Unavailable(format!("sandbox {id}: agent unreachable: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exit_code;

    #[test]
    fn signals_become_128_plus() {
        assert_eq!(exit_code(3, true, "exit status 3"), 3);
        assert_eq!(exit_code(-1, false, "signal: killed"), 137);
        assert_eq!(exit_code(-1, false, "signal: terminated"), 143);
    }
}
