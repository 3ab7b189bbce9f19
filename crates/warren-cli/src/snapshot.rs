//! `warren snapshot`: named copies of a sandbox's files and running processes.
use clap::Subcommand;
use warren_api::{CreateSnapshot, Snapshot, SnapshotList};

use crate::{named, ClientOpts};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a running or paused sandbox (it ends as it was).
    Create {
        /// The sandbox.
        id: String,
        /// The snapshot's name (a-z, 0-9, '-', '_').
        name: String,
        /// Keep its files only, not its processes and memory.
        #[arg(long)]
        files_only: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List snapshots.
    Ls {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Remove a snapshot (sandboxes made from it keep their copies).
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

fn line(s: &Snapshot) -> String {
    format!(
        "{:<24} {:<18} {:<8} {:>10.1} MB  {}",
        s.name,
        s.source,
        if s.memory { "memory" } else { "files" },
        (s.receipt.filesystem.bytes + if s.memory { s.receipt.memory.bytes } else { 0 }) as f64
            / 1e6,
        s.created_at.format("%Y-%m-%d %H:%M:%S")
    )
}

pub async fn run(c: SnapshotCommand) -> anyhow::Result<()> {
    match c {
        SnapshotCommand::Create {
            id,
            name,
            files_only,
            opts,
        } => {
            let body = CreateSnapshot {
                name,
                memory: Some(!files_only),
            };
            eprintln!("snapshotting {id} (paused for the copy)…");
            let path = format!("/v1/sandboxes/{id}/snapshots");
            named::create(&opts, &path, &body, line).await
        }
        SnapshotCommand::Ls { opts } => {
            let header = format!(
                "{:<24} {:<18} {:<8} {:>13}  CREATED",
                "NAME", "SOURCE", "HOLDS", "SIZE"
            );
            named::list(
                &opts,
                "/v1/snapshots",
                &header,
                |l: &SnapshotList| &l.snapshots,
                line,
            )
            .await
        }
        SnapshotCommand::Rm { name, opts } => named::remove(&opts, "/v1/snapshots", &name).await,
    }
}
