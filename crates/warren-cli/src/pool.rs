//! `warren pool`: warm pools of ready sandboxes that matching creates take at once.
use clap::Subcommand;
use warren_api::{CreatePool, CreateSandbox, Pool, PoolList, Runtime};

use crate::{named, ClientOpts};

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Keep SIZE sandboxes of an image ready; a create asking for exactly the same image,
    /// runtime, limits, command, env, cwd and user takes one.
    Create {
        /// Its name.
        name: String,
        /// Sandboxes kept ready.
        #[arg(long, default_value_t = 2)]
        size: u32,
        /// Their image [default: base].
        #[arg(long)]
        image: Option<String>,
        /// Their runtime [default: the server's].
        #[arg(long)]
        runtime: Option<Runtime>,
        /// Their memory limit, MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Their main command (after --).
        #[arg(last = true)]
        cmd: Vec<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List pools: size, sandboxes ready, sandboxes taken.
    Ls {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Remove a pool and the sandboxes waiting in it.
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

fn line(p: &Pool) -> String {
    format!(
        "{:<20} {:>5} {:>6} {:>8}  {} {}",
        p.name,
        p.size,
        p.ready,
        p.claimed,
        p.sandbox.image.as_deref().unwrap_or("base"),
        p.sandbox
            .runtime
            .map_or_else(|| "(default runtime)".to_owned(), |r| r.to_string())
    )
}

pub async fn run(c: PoolCommand) -> anyhow::Result<()> {
    match c {
        PoolCommand::Create {
            name,
            size,
            image,
            runtime,
            memory_mb,
            cmd,
            opts,
        } => {
            let body = CreatePool {
                name,
                size,
                sandbox: CreateSandbox {
                    image,
                    runtime,
                    memory_mb,
                    cmd,
                    ..Default::default()
                },
            };
            named::create(&opts, "/v1/pools", &body, line).await
        }
        PoolCommand::Ls { opts } => {
            let header = format!(
                "{:<20} {:>5} {:>6} {:>8}  IMAGE RUNTIME",
                "NAME", "SIZE", "READY", "TAKEN"
            );
            named::list(&opts, "/v1/pools", &header, |l: &PoolList| &l.pools, line).await
        }
        PoolCommand::Rm { name, opts } => named::remove(&opts, "/v1/pools", &name).await,
    }
}
