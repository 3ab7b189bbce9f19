//! Interactive terminals: a process under a real pseudo-terminal in the sandbox, fed and
//! resized through the agent.
use warren_agent::{AgentClient, ProcessConfig, ProcessStream, Pty, PtySize, StartRequest};
use warren_api::SandboxId;

use crate::error::ApiError;

/// A running terminal session.
pub struct PtySession {
    /// The agent, for input and resizes.
    pub agent: AgentClient,
    /// The process's events (the first is `start` with its pid).
    pub events: ProcessStream,
}

impl crate::service::Processes<'_> {
    /// Starts `cmd args...` under a pseudo-terminal of `cols`×`rows`.
    pub async fn start_pty(
        &self,
        id: &SandboxId,
        cmd: String,
        args: Vec<String>,
        cols: u32,
        rows: u32,
        user: Option<&str>,
    ) -> Result<PtySession, ApiError> {
        if cmd.is_empty() || cmd.contains('\0') || args.iter().any(|a| a.contains('\0')) {
            return Err(ApiError::Invalid(
                "cmd must name a program (no NUL bytes)".into(),
            ));
        }
        if !(1..=1000).contains(&cols) || !(1..=1000).contains(&rows) {
            return Err(ApiError::Invalid(format!(
                "terminal size {cols}x{rows} is out of range"
            )));
        }
        let (rec, agent) = self.running_agent(id, user).await?;
        let mut envs = super::exec::plain_env(&rec.sandbox.env);
        envs.entry("TERM".into())
            .or_insert_with(|| "xterm-256color".into());
        let req = StartRequest {
            process: ProcessConfig {
                cmd,
                args,
                envs,
                cwd: None,
            },
            pty: Some(Pty {
                size: Some(PtySize { cols, rows }),
            }),
            tag: None,
            stdin: Some(true),
        };
        let events = agent
            .start(&req)
            .await
            .map_err(|e| ApiError::Unavailable(format!("sandbox {id}: {e}")))?;
        Ok(PtySession { agent, events })
    }
}
