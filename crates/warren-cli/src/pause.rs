//! `warren pause`, `warren resume` and `warren fork`: a sandbox's processes and memory to disk
//! and back, or into a new sandbox.
use clap::Args;
use reqwest::Method;
use warren_api::{ForkSandbox, PauseReceipt, ResumeSandbox, Sandbox};

use crate::ClientOpts;

#[derive(Args)]
pub struct PauseArgs {
    /// Sandbox id.
    id: String,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Args)]
pub struct ResumeArgs {
    /// Sandbox id.
    id: String,
    /// Seconds it may live from now (0: no limit) [default: the server's default lifetime if
    /// the sandbox had one, else none].
    #[arg(long)]
    timeout: Option<u64>,
    #[command(flatten)]
    opts: ClientOpts,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn describe(r: &PauseReceipt) -> String {
    format!(
        "memory {} (sha256 {}…), files {} (sha256 {}…), {} ({}), took {} ms",
        mb(r.memory.bytes),
        &r.memory.sha256[..r.memory.sha256.len().min(12)],
        mb(r.filesystem.bytes),
        &r.filesystem.sha256[..r.filesystem.sha256.len().min(12)],
        r.runtime,
        r.runtime_version,
        r.took_ms
    )
}

pub async fn pause(a: PauseArgs) -> anyhow::Result<()> {
    let client = a.opts.client();
    eprintln!("pausing {} (its memory is written to disk)…", a.id);
    let s: Sandbox = client
        .json(client.request(Method::POST, &format!("/v1/sandboxes/{}/pause", a.id)))
        .await?;
    if a.opts.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        match &s.pause {
            Some(r) => println!("{} {}: {}", s.id, s.state, describe(r)),
            None => println!("{} {}", s.id, s.state),
        }
    }
    Ok(())
}

pub async fn resume(a: ResumeArgs) -> anyhow::Result<()> {
    let client = a.opts.client();
    let body = ResumeSandbox {
        timeout_s: a.timeout,
    };
    let s: Sandbox = client
        .json(
            client
                .request(Method::POST, &format!("/v1/sandboxes/{}/resume", a.id))
                .json(&body),
        )
        .await?;
    if a.opts.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("{} {}", s.id, s.state);
    }
    Ok(())
}

#[derive(Args)]
pub struct ForkArgs {
    /// Sandbox id (running or paused; gVisor).
    id: String,
    /// Seconds the fork may live (0: no limit) [default: the server's, 300].
    #[arg(long)]
    timeout: Option<u64>,
    #[command(flatten)]
    opts: ClientOpts,
}

pub async fn fork(a: ForkArgs) -> anyhow::Result<()> {
    let client = a.opts.client();
    let body = ForkSandbox {
        metadata: None,
        timeout_s: a.timeout,
    };
    eprintln!("forking {} (its memory and files are copied)…", a.id);
    let s: Sandbox = client
        .json(
            client
                .request(Method::POST, &format!("/v1/sandboxes/{}/fork", a.id))
                .json(&body),
        )
        .await?;
    if a.opts.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("{} {}", s.id, s.state);
    }
    Ok(())
}
