//! Test harness: runs the built agent binary (not as PID 1, so in server role) on a free
//! localhost port with a token handed over in a file, as the server does, and collects `Start`
//! streams.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warren_agent::{AgentClient, ProcessConfig, ProcessData, ProcessEvent, StartRequest};

pub const TOKEN: &str = "test-token";

pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    pub client: AgentClient,
    _token_file: tempfile::NamedTempFile,
}

/// A file holding [`TOKEN`].
pub fn token_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(file.path(), TOKEN).expect("write token file");
    file
}

/// The agent binary under test.
pub fn agent_bin() -> String {
    // WARREN_AGENT_BIN runs the suite against another build (the static release binary).
    std::env::var("WARREN_AGENT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_warren-agent").to_owned())
}

impl Agent {
    pub async fn spawn() -> Agent {
        Agent::spawn_with(&[]).await
    }

    pub async fn spawn_with(env: &[(&str, &str)]) -> Agent {
        // Bind-then-release: the agent cannot report an ephemeral port back to us.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let token_file = token_file();
        let mut cmd = Command::new(agent_bin());
        cmd.env("WARREN_AGENT_ADDR", addr.to_string())
            .env("WARREN_AGENT_TOKEN_FILE", token_file.path())
            .env_remove("WARREN_AGENT_TOKEN")
            .env_remove("WARREN_AGENT_CMD")
            .env_remove("WARREN_AGENT_ROLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn agent");
        let agent = Agent {
            child,
            addr,
            client: AgentClient::new(addr, TOKEN),
            _token_file: token_file,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while agent.client.health().await.is_err() {
            assert!(Instant::now() < deadline, "agent never became healthy");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        agent
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn request(cmd: &str, args: &[&str]) -> StartRequest {
    StartRequest {
        process: ProcessConfig {
            cmd: cmd.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..ProcessConfig::default()
        },
        ..StartRequest::default()
    }
}

pub fn sh(script: &str) -> StartRequest {
    request("/bin/sh", &["-c", script])
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub pid: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub end: Option<ProcessEvent>,
    pub events: usize,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        match &self.end {
            Some(ProcessEvent::End { exit_code, .. }) => *exit_code,
            other => panic!("no end event: {other:?}"),
        }
    }
    pub fn status(&self) -> String {
        match &self.end {
            Some(ProcessEvent::End { status, .. }) => status.clone(),
            other => panic!("no end event: {other:?}"),
        }
    }
}

/// Reads a whole stream, checking the event order (start first, end last).
pub async fn collect(stream: &mut warren_agent::ProcessStream) -> Outcome {
    let mut out = Outcome::default();
    while let Some(event) = stream.next().await {
        let event = event.expect("stream error");
        out.events += 1;
        assert!(out.end.is_none(), "event after end: {event:?}");
        match event {
            ProcessEvent::Start { pid } => {
                assert_eq!(out.events, 1, "start is not first");
                out.pid = pid;
            }
            ProcessEvent::Data(ProcessData::Stdout(b)) => out.stdout.extend_from_slice(&b),
            ProcessEvent::Data(ProcessData::Stderr(b)) => out.stderr.extend_from_slice(&b),
            ProcessEvent::Data(ProcessData::Pty(_)) => panic!("pty data without pty"),
            ProcessEvent::Keepalive => {}
            end @ ProcessEvent::End { .. } => out.end = Some(end),
        }
    }
    assert!(out.end.is_some(), "stream ended without end event");
    out
}

pub async fn run(agent: &Agent, req: &StartRequest) -> Outcome {
    let mut stream = agent.client.start(req).await.expect("start");
    collect(&mut stream).await
}

/// Whether any process is still in process group `pgid`.
pub fn group_alive(pgid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // Fields after the parenthesised command: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.get(2).and_then(|p| p.parse::<u32>().ok()) == Some(pgid)
            && fields.first() != Some(&"Z")
    })
}

/// Peak resident memory of a process, in KiB.
pub fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
