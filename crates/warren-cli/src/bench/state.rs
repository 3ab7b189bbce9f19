//! `warren bench state`: Warren's pause and resume of a sandbox holding N MiB of touched
//! memory (random bytes in its /dev/shm), per runtime, beside the raw tool's checkpoint and
//! restore of the same in one run: `runsc checkpoint`/`restore` for gVisor, crun's through
//! CRIU (`criu dump`/`restore`) for runc. Warren's pause also unmounts the sandbox's disk and
//! hashes the image and the disk for the receipt; its resume checks them, mounts the disk,
//! restores and waits for the agent to answer: all of that is in its figures.
use std::path::Path;

use clap::Args;
use serde::Serialize;
use warren_api::{CreateSandbox, Runtime, Sandbox};
use warren_local::runtime::{GvisorConfig, GVISOR_VERSION};

use super::checkpoint::{raw_cycles, SizeResult};
use super::raw::{self, Raw};
use super::report::Stats;
use super::server::{self, InProcess, IMAGE};

/// Each of pause and resume may take at most this many times its raw counterpart.
const MAX_RATIO: f64 = 1.5;
/// Resume of the 512 MiB sandbox: under this, ms.
const RESUME_512_MS: f64 = 1000.0;

/// What the benches of sandboxes holding memory share: the sizes, the cycles, the output.
#[derive(Args)]
pub struct SizedArgs {
    /// Memory the sandbox holds, MiB; repeat the flag or give a comma-separated list.
    #[arg(long = "size", value_name = "MIB", value_delimiter = ',', num_args = 1.., default_values = ["64", "512"], value_parser = clap::value_parser!(u32).range(1..=16384))]
    pub sizes_mib: Vec<u32>,
    /// Timed cycles per size (and raw checkpoint/restore cycles), after one untimed.
    #[arg(long, short = 'n', default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args)]
pub struct StateBenchArgs {
    #[command(flatten)]
    a: SizedArgs,
    /// Runtimes to measure; repeat the flag or give a comma-separated list.
    #[arg(long = "runtime", value_delimiter = ',', num_args = 1.., default_values = ["gvisor", "runc"])]
    runtimes: Vec<Runtime>,
}

/// A sandbox under `rt` (no expiry) holding `mib` MiB of random bytes in its /dev/shm.
pub(super) async fn holding(api: &server::Api, rt: Runtime, mib: u32) -> anyhow::Result<Sandbox> {
    let (_, sb) = api
        .create_with(CreateSandbox {
            image: Some(IMAGE.to_owned()),
            runtime: Some(rt),
            memory_mb: Some(u64::from(mib) + 256),
            cmd: vec!["sleep".into(), "1000000".into()],
            timeout_s: Some(0),
            ..Default::default()
        })
        .await?;
    api.sh(
        &sb.id,
        &format!(
            "head -c {} /dev/urandom > /dev/shm/blob",
            u64::from(mib) << 20
        ),
    )
    .await?;
    Ok(sb)
}

/// Fails unless the sandbox still holds its `mib` MiB whole.
pub(super) async fn still_holding(api: &server::Api, sb: &Sandbox, mib: u32) -> anyhow::Result<()> {
    api.sh(
        &sb.id,
        &format!("test $(wc -c < /dev/shm/blob) -eq {}", u64::from(mib) << 20),
    )
    .await
    .map(|_| ())
}

#[derive(Debug, Serialize)]
struct SizeRow {
    runtime: Runtime,
    memory_mib: u32,
    pause: Stats,
    resume: Stats,
    raw: SizeResult,
    /// The last receipt's memory image size, bytes.
    image_bytes: u64,
    /// `POST /fork` of the running sandbox: the new sandbox running.
    fork: Stats,
    /// Disk blocks a fork holds once running (its copy of the sandbox's disk), bytes.
    disk_per_fork: u64,
}

#[derive(Debug, Serialize)]
struct PoolRow {
    runtime: Runtime,
    /// A create a warm pool answers: the API round trip.
    create: Stats,
    /// The same create with no pool, for comparison.
    cold_create: Stats,
}

#[derive(Debug, Serialize)]
struct StateReport {
    gvisor_version: &'static str,
    cores: usize,
    iterations: u32,
    sizes: Vec<SizeRow>,
    pools: Vec<PoolRow>,
}

/// Creates from a warm pool: p50 under this, ms.
const POOL_CREATE_MS: f64 = 10.0;

/// A create from a warm pool of 2 (refilled between creates) beside the same create without
/// one, `n` of each.
async fn pool_creates(api: &server::Api, rt: Runtime, n: u32) -> anyhow::Result<PoolRow> {
    let shape = CreateSandbox {
        image: Some(IMAGE.to_owned()),
        runtime: Some(rt),
        cmd: vec!["sleep".into(), "1000000".into()],
        ..Default::default()
    };
    let label = format!("creates {rt}");
    let mut cold = Vec::new();
    for i in 1..=n {
        let (took, sb) = api.create_with(shape.clone()).await?;
        api.delete(&sb.id).await?;
        cold.push(took);
        super::progress(&format!("{label} without a pool"), i, n);
    }
    let name = format!("bench-{rt}");
    let mut pool = serde_json::to_value(&shape)?;
    pool["name"] = name.clone().into();
    pool["size"] = 2.into();
    api.post_json("/v1/pools", &pool).await?;
    let mut warm = Vec::new();
    for i in 1..=n {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let all = api.get_json("/v1/pools").await?;
            let ready = all["pools"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == name.as_str()))
                .and_then(|p| p["ready"].as_u64());
            if ready == Some(2) {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the pool never filled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (took, sb) = api.create_with(shape.clone()).await?;
        api.delete(&sb.id).await?;
        warm.push(took);
        super::progress(&format!("{label} from a warm pool"), i, n);
    }
    Ok(PoolRow {
        runtime: rt,
        create: Stats::of(&warm),
        cold_create: Stats::of(&cold),
    })
}

pub async fn run(args: StateBenchArgs) -> anyhow::Result<()> {
    let a = &args.a;
    let scratch = super::begin("state")?;
    let dir = scratch.path().to_owned();
    let mut slot: Option<InProcess> = None;
    let result = super::unless_interrupted(measure(a, &args.runtimes, &dir, &mut slot)).await;
    eprintln!("warren bench state: cleaning up");
    let clean = InProcess::shutdown_any(slot).await & raw::cleanup(&dir.join("raw")).await;
    super::finish_scratch(scratch, a.keep, clean);
    super::print_report(&result?, a.json, table)
}

async fn measure(
    a: &SizedArgs,
    runtimes: &[Runtime],
    dir: &Path,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<StateReport> {
    let tree = dir.join("busybox-rootfs");
    crate::rootfs::busybox_tree(&tree)?;
    let raw = Raw::prepare_on(&dir.join("raw"), &tree, raw::DEFAULT_PLATFORM).await?;
    let tar = super::busybox_tar(dir)?;
    let gvisor = GvisorConfig {
        network: "sandbox".into(),
        ..GvisorConfig::default()
    };
    let (api, data_dir) =
        server::start_with(dir, Runtime::Gvisor, None, Default::default(), gvisor, slot).await?;
    api.import(&tar).await?;
    let mut sizes = Vec::new();
    for (&rt, &mib) in runtimes
        .iter()
        .flat_map(|rt| a.sizes_mib.iter().map(move |m| (rt, m)))
    {
        let raw_row = raw_cycles(&raw, rt, dir, mib, a.iterations).await?;
        let label = format!("pause/resume {rt} {mib} MiB");
        eprintln!("{label}: filling the sandbox's memory");
        let sb = holding(&api, rt, mib).await?;
        let (mut pauses, mut resumes, mut image_bytes) = (Vec::new(), Vec::new(), 0);
        for i in 0..=a.iterations {
            let (p, paused) = api.lifecycle(&sb.id, "pause").await?;
            image_bytes = paused.pause.map_or(0, |r| r.memory.bytes);
            let (r, _) = api.lifecycle(&sb.id, "resume").await?;
            if i > 0 {
                pauses.push(p);
                resumes.push(r);
                super::progress(&label, i, a.iterations);
            }
        }
        let (mut forks, mut disk_per_fork) = (Vec::new(), 0);
        for i in 1..=a.iterations {
            let (took, fork) = api.lifecycle(&sb.id, "fork").await?;
            forks.push(took);
            disk_per_fork = disk_blocks(&data_dir.join("sandboxes").join(fork.id.as_str()));
            api.delete(&fork.id).await?;
            super::progress(&format!("fork {rt} {mib} MiB"), i, a.iterations);
        }
        // Whole after it all.
        still_holding(&api, &sb, mib).await?;
        api.delete(&sb.id).await?;
        sizes.push(SizeRow {
            runtime: rt,
            memory_mib: mib,
            pause: Stats::of(&pauses),
            resume: Stats::of(&resumes),
            raw: raw_row,
            image_bytes,
            fork: Stats::of(&forks),
            disk_per_fork,
        });
    }
    let mut pools = Vec::new();
    for rt in Runtime::ALL {
        pools.push(pool_creates(&api, rt, a.iterations.max(10)).await?);
    }
    Ok(StateReport {
        gvisor_version: GVISOR_VERSION,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        iterations: a.iterations,
        sizes,
        pools,
    })
}

/// Disk blocks of the files under `dir`, bytes.
fn disk_blocks(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // A sandbox's directory: its disk image and its log files, at the top.
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISS"
    }
}

fn table(r: &StateReport) -> String {
    let mut s = format!(
        "warren bench state — gVisor: runsc {}, systrap, its own network stack; runc: crun {} \
         with CRIU {}; busybox sandbox holding N MiB of random bytes in /dev/shm; {} timed \
         cycles per size; {} cores\n\n",
        r.gvisor_version,
        warren_local::criu::CRUN_VERSION,
        warren_local::criu::CRIU_VERSION,
        r.iterations,
        r.cores
    );
    s.push_str(&format!(
        "{:<7} {:<8} {:<7} {:>10} {:>10} │ {:<17} {:>10} {:>10} │ {:>6}  {:<22} {}\n",
        "runtime",
        "memory",
        "warren",
        "p50",
        "p95",
        "raw",
        "p50",
        "p95",
        "ratio",
        "target",
        "result"
    ));
    for x in &r.sizes {
        let (raw_pause, raw_resume) = match x.runtime {
            Runtime::Gvisor => ("runsc checkpoint", "runsc restore"),
            Runtime::Runc => ("criu dump", "criu restore"),
        };
        for (what, ours, raw_what, theirs) in [
            ("pause", &x.pause, raw_pause, &x.raw.checkpoint),
            ("resume", &x.resume, raw_resume, &x.raw.restore),
        ] {
            let ratio = ours.p50_ms / theirs.p50_ms;
            let mut target = format!("≤{MAX_RATIO}× raw");
            let mut ok = ratio <= MAX_RATIO;
            if what == "resume" && x.memory_mib == 512 {
                target.push_str(&format!(", <{RESUME_512_MS:.0} ms"));
                ok &= ours.p50_ms < RESUME_512_MS;
            }
            s.push_str(&format!(
                "{:<7} {:<8} {:<7} {:>7.1} ms {:>7.1} ms │ {:<17} {:>7.1} ms {:>7.1} ms │ {:>5.2}×  {:<22} {}\n",
                x.runtime.to_string(),
                format!("{} MiB", x.memory_mib),
                what,
                ours.p50_ms,
                ours.p95_ms,
                raw_what,
                theirs.p50_ms,
                theirs.p95_ms,
                ratio,
                target,
                verdict(ok)
            ));
        }
    }
    s.push_str(
        "\nwarren pause: API round trip of POST /pause (checkpoint, container removed, disk \
         unmounted, image and disk hashed, receipt synced). warren resume: POST /resume (image \
         and disk checked against the receipt, disk mounted, restore, agent answering). raw: \
         `runsc checkpoint`/`restore --detach`, or `crun checkpoint`/`restore --detach` \
         (CRIU's dump and restore), alone on the same binaries, image in the page cache.\n",
    );
    for x in &r.sizes {
        s.push_str(&format!(
            "{} {} MiB: Warren's memory image {:.1} MiB, raw image {:.1} MiB; fork p50 {:.1} ms, \
             p95 {:.1} ms (the source paused, its image and disk copied, it resumed, the fork \
             restored and answering), {:.1} MiB of disk per running fork\n",
            x.runtime,
            x.memory_mib,
            x.image_bytes as f64 / f64::from(1 << 20),
            x.raw.image_bytes as f64 / f64::from(1 << 20),
            x.fork.p50_ms,
            x.fork.p95_ms,
            x.disk_per_fork as f64 / f64::from(1 << 20)
        ));
    }
    s.push_str(&format!(
        "\n{:<8} {:<18} {:>10} {:>10} │ {:<14} {:>10} │ {:<10} {}\n",
        "runtime", "create", "p50", "p95", "without pool", "p50", "target", "result"
    ));
    for p in &r.pools {
        s.push_str(&format!(
            "{:<8} {:<18} {:>7.2} ms {:>7.2} ms │ {:<14} {:>7.1} ms │ {:<10} {}\n",
            p.runtime.to_string(),
            "from a warm pool",
            p.create.p50_ms,
            p.create.p95_ms,
            "",
            p.cold_create.p50_ms,
            format!("≤{POOL_CREATE_MS:.0} ms"),
            verdict(p.create.p50_ms <= POOL_CREATE_MS)
        ));
    }
    s
}
