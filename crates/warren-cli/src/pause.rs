//! `warren pause`, `warren resume` and `warren fork`: a sandbox's processes and memory to disk
//! and back, or into a new sandbox.
use clap::Args;
use warren_api::{ForkSandbox, PauseReceipt, ResumeSandbox, Sandbox};

use crate::{named, ClientOpts};

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

/// `id state`, with the receipt when there is one.
fn shown(s: &Sandbox) -> String {
    match &s.pause {
        Some(r) => format!("{} {}: {}", s.id, s.state, describe(r)),
        None => format!("{} {}", s.id, s.state),
    }
}

pub async fn pause(a: PauseArgs) -> anyhow::Result<()> {
    eprintln!("pausing {} (its memory is written to disk)…", a.id);
    let path = format!("/v1/sandboxes/{}/pause", a.id);
    named::post(&a.opts, &path, None::<&()>, shown).await
}

pub async fn resume(a: ResumeArgs) -> anyhow::Result<()> {
    let body = ResumeSandbox {
        timeout_s: a.timeout,
    };
    let path = format!("/v1/sandboxes/{}/resume", a.id);
    named::post(&a.opts, &path, Some(&body), shown).await
}

#[derive(Args)]
pub struct ForkArgs {
    /// Sandbox id (running or paused).
    id: String,
    /// Seconds the fork may live (0: no limit) [default: the server's, 300].
    #[arg(long)]
    timeout: Option<u64>,
    #[command(flatten)]
    opts: ClientOpts,
}

pub async fn fork(a: ForkArgs) -> anyhow::Result<()> {
    let body = ForkSandbox {
        metadata: None,
        timeout_s: a.timeout,
    };
    eprintln!("forking {} (its memory and files are copied)…", a.id);
    let path = format!("/v1/sandboxes/{}/fork", a.id);
    named::post(&a.opts, &path, Some(&body), shown).await
}
