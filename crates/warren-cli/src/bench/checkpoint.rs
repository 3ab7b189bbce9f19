//! `warren bench checkpoint`: raw `runsc checkpoint` and `restore` of a sandbox whose memory
//! holds N MiB of random data (a file in its /dev/shm: gVisor's memory, so every page is
//! touched and nothing compresses or is skipped as zero), the ground Warren's pause and
//! resume will stand on. One sandbox per size goes through checkpoint → delete → restore
//! cycles, each restoring the image the checkpoint just wrote.
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use warren_api::Runtime;
use warren_local::runtime::GVISOR_VERSION;

use super::raw::{self, Raw};
use super::report::{self, Stats};

/// The sandbox's id in the bench's own runsc root.
const ID: &str = "ckpt";

#[derive(Args)]
pub struct CheckpointBenchArgs {
    /// Memory the sandbox fills before its checkpoints, in MiB; repeat the flag or give a
    /// comma-separated list.
    #[arg(long = "size", value_name = "MIB", value_delimiter = ',', num_args = 1.., default_values = ["64", "512"], value_parser = clap::value_parser!(u32).range(1..=65536))]
    sizes_mib: Vec<u32>,
    /// Timed checkpoint/restore cycles per size, after one untimed.
    #[arg(long, short = 'n', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// gVisor platform of the sandbox.
    #[arg(long, default_value = raw::DEFAULT_PLATFORM)]
    platform: String,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    keep: bool,
}

/// One size's numbers.
#[derive(Debug, Serialize)]
pub(super) struct SizeResult {
    pub(super) memory_mib: u32,
    /// `runsc checkpoint`, from spawning it to its exit (the image is written by then).
    pub(super) checkpoint: Stats,
    /// `runsc restore --detach`, from spawning it to its exit (the sandbox runs by then).
    pub(super) restore: Stats,
    /// Disk blocks of the last image, bytes.
    pub(super) image_on_disk: u64,
    /// The last image's files' lengths, bytes.
    pub(super) image_bytes: u64,
}

#[derive(Debug, Serialize)]
struct CheckpointReport {
    gvisor_version: &'static str,
    platform: String,
    cores: usize,
    iterations: u32,
    sizes: Vec<SizeResult>,
}

pub async fn run(a: CheckpointBenchArgs) -> anyhow::Result<()> {
    let scratch = super::begin("checkpoint")?;
    let dir = scratch.path().to_owned();
    let result = super::unless_interrupted(measure(&a, &dir)).await;
    eprintln!("warren bench checkpoint: cleaning up");
    let clean = raw::cleanup(&dir.join("raw")).await;
    super::finish_scratch(scratch, a.keep, clean);
    super::print_report(&result?, a.json, table)
}

/// runsc as Warren runs it (`--overlay2=none`: the root's writes on disk, not in the memory
/// the image holds) on the bench's platform, with `args` after.
async fn runsc(raw: &Raw, args: &[&OsStr]) -> anyhow::Result<Duration> {
    let mut all: Vec<&OsStr> = vec!["--overlay2=none".as_ref()];
    all.extend_from_slice(args);
    raw.runsc(&all).await
}

/// The raw runtime of `rt` with `args`: runsc as [`runsc`] runs it, crun with CRIU quietly.
async fn raw_of(
    raw: &Raw,
    rt: Runtime,
    args: &[&OsStr],
    work: Option<&Path>,
) -> anyhow::Result<Duration> {
    match rt {
        Runtime::Gvisor => runsc(raw, args).await,
        Runtime::Runc => raw.crun_quiet(args, work).await,
    }
}

/// Waits until `file` exists in the sandbox (and so that it runs: also the check that a
/// restore brought it back).
async fn wait_for(raw: &Raw, rt: Runtime, file: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let args: [&OsStr; 5] = [
        "exec".as_ref(),
        ID.as_ref(),
        "test".as_ref(),
        "-f".as_ref(),
        file.as_ref(),
    ];
    loop {
        let err = match raw_of(raw, rt, &args, None).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(err.context(format!("no {file} in the sandbox within {within:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lifts the default spec's 64 MiB bound on the bundle's /dev/shm, where the memory goes.
fn unbound_shm(bundle: &Path) -> anyhow::Result<()> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mounts = spec
        .get_mut("mounts")
        .and_then(|m| m.as_array_mut())
        .context("the default spec has no mounts")?;
    let shm = mounts
        .iter_mut()
        .find(|m| m["destination"] == "/dev/shm")
        .context("the default spec mounts no /dev/shm")?;
    if let Some(opts) = shm.get_mut("options").and_then(|o| o.as_array_mut()) {
        opts.retain(|o| !o.as_str().is_some_and(|o| o.starts_with("size=")));
    }
    let text = serde_json::to_vec_pretty(&spec).context("encoding config.json")?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// The files of the image in `dir`: (disk blocks, lengths), bytes.
fn image_size(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let mut blocks = 0;
    let mut len = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let m = e?.metadata()?;
        blocks += m.blocks() * 512;
        len += m.len();
    }
    Ok((blocks, len))
}

async fn measure(a: &CheckpointBenchArgs, dir: &Path) -> anyhow::Result<CheckpointReport> {
    let tree = dir.join("busybox-rootfs");
    crate::rootfs::busybox_tree(&tree)?;
    let raw = Raw::prepare_on(&dir.join("raw"), &tree, &a.platform).await?;
    let mut sizes = Vec::new();
    for &mib in &a.sizes_mib {
        sizes.push(measure_size(a, &raw, dir, mib).await?);
    }
    Ok(CheckpointReport {
        gvisor_version: GVISOR_VERSION,
        platform: a.platform.clone(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        iterations: a.iterations,
        sizes,
    })
}

async fn measure_size(
    a: &CheckpointBenchArgs,
    raw: &Raw,
    dir: &Path,
    mib: u32,
) -> anyhow::Result<SizeResult> {
    raw_cycles(raw, Runtime::Gvisor, dir, mib, a.iterations).await
}

/// Raw checkpoint/restore cycles of a sandbox holding `mib` MiB under `rt` (`runsc
/// checkpoint`/`restore`, or crun's through CRIU: `criu dump`/`restore`), `iterations` timed.
pub(super) async fn raw_cycles(
    raw: &Raw,
    rt: Runtime,
    dir: &Path,
    mib: u32,
    iterations: u32,
) -> anyhow::Result<SizeResult> {
    // `done` either way, `filled` only when the blob is whole: a failed fill is told apart
    // from a slow one.
    let fill = format!(
        "head -c {} /dev/urandom > /dev/shm/blob && touch /dev/shm/filled; touch /dev/shm/done; \
         exec sleep 1000000",
        u64::from(mib) << 20
    );
    let bundle = raw.bundle(&format!("ckpt-{rt}-{mib}"), &["/bin/sh", "-c", &fill])?;
    unbound_shm(&bundle)?;
    let b: &OsStr = bundle.as_ref();
    let label = format!("raw {} {mib} MiB", raw::checkpoint_label(rt));
    eprintln!("{label}: filling the sandbox's memory");
    let run: [&OsStr; 5] = [
        "run".as_ref(),
        "--detach".as_ref(),
        "--bundle".as_ref(),
        b,
        ID.as_ref(),
    ];
    raw_of(raw, rt, &run, None).await?;
    // /dev/urandom in gVisor gives some tens of MB/s.
    let fill_time = Duration::from_secs(30 + u64::from(mib) / 4);
    let timed = async {
        wait_for(raw, rt, "/dev/shm/done", fill_time).await?;
        wait_for(raw, rt, "/dev/shm/filled", Duration::ZERO)
            .await
            .with_context(|| format!("{mib} MiB did not fit in the sandbox's /dev/shm"))?;
        let mut checkpoints = Vec::new();
        let mut restores = Vec::new();
        let mut last_image: Option<PathBuf> = None;
        let mut size = (0, 0);
        for i in 0..=iterations {
            let image = dir.join(format!("image-{rt}-{mib}-{i}"));
            let image_arg = format!("--image-path={}", image.display());
            // CRIU's logs beside the image, not in it.
            let work = dir.join(format!("work-{rt}-{mib}-{i}"));
            let work_arg = format!("--work-path={}", work.display());
            std::fs::create_dir_all(&work)
                .with_context(|| format!("creating {}", work.display()))?;
            let mut checkpoint: Vec<&OsStr> = vec!["checkpoint".as_ref(), image_arg.as_ref()];
            if rt == Runtime::Runc {
                checkpoint.push(work_arg.as_ref());
            }
            checkpoint.push(ID.as_ref());
            let took = raw_of(raw, rt, &checkpoint, Some(&work)).await?;
            size = image_size(&image)?;
            if size.1 < u64::from(mib) << 20 {
                bail!(
                    "the image of a sandbox holding {mib} MiB is {} bytes",
                    size.1
                );
            }
            // The sandbox restored from the previous image is gone: that image can go.
            if let Some(old) = last_image.replace(image.clone()) {
                std::fs::remove_dir_all(&old)
                    .with_context(|| format!("removing {}", old.display()))?;
            }
            // runsc keeps the checkpointed container, stopped, until deleted; crun removes it.
            if rt == Runtime::Gvisor {
                runsc(raw, &["delete".as_ref(), "--force".as_ref(), ID.as_ref()]).await?;
            }
            let mut restore: Vec<&OsStr> =
                vec!["restore".as_ref(), "--detach".as_ref(), image_arg.as_ref()];
            if rt == Runtime::Runc {
                restore.push(work_arg.as_ref());
            }
            restore.extend(["--bundle".as_ref(), b, ID.as_ref()]);
            let back = raw_of(raw, rt, &restore, Some(&work)).await?;
            let _ = std::fs::remove_dir_all(&work);
            wait_for(raw, rt, "/dev/shm/filled", Duration::from_secs(10)).await?;
            if i > 0 {
                checkpoints.push(took);
                restores.push(back);
                super::progress(&label, i, iterations);
            }
        }
        anyhow::Ok((checkpoints, restores, size))
    }
    .await;
    let delete: [&OsStr; 3] = ["delete".as_ref(), "--force".as_ref(), ID.as_ref()];
    let deleted = raw_of(raw, rt, &delete, None).await;
    let (checkpoints, restores, (on_disk, bytes)) = timed?;
    deleted?;
    Ok(SizeResult {
        memory_mib: mib,
        checkpoint: Stats::of(&checkpoints),
        restore: Stats::of(&restores),
        image_on_disk: on_disk,
        image_bytes: bytes,
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
}

fn table(r: &CheckpointReport) -> String {
    let mut s = format!(
        "warren bench checkpoint — runsc {} on {}, --network=none --overlay2=none, busybox, \
         N={} cycles per size (after 1 untimed), {} cores\n",
        r.gvisor_version, r.platform, r.iterations, r.cores
    );
    s.push_str(&format!(
        "{:<9} {:>16} {:>16} {:>14} {:>14} {:>14}\n",
        "memory", "checkpoint p50", "checkpoint p95", "restore p50", "restore p95", "image on disk"
    ));
    for x in &r.sizes {
        s.push_str(&format!(
            "{:<9} {:>16} {:>16} {:>14} {:>14} {:>14}\n",
            format!("{} MiB", x.memory_mib),
            report::ms(x.checkpoint.p50_ms),
            report::ms(x.checkpoint.p95_ms),
            report::ms(x.restore.p50_ms),
            report::ms(x.restore.p95_ms),
            mib(x.image_on_disk),
        ));
    }
    s.push_str(
        "\nEach cycle: `runsc checkpoint --image-path=DIR ckpt` (timed; the sandbox stops), \
         `runsc delete --force ckpt`, `runsc restore --detach --image-path=DIR --bundle=B ckpt` \
         (timed; returns once the sandbox runs), then an untimed `runsc exec` proving it does. \
         The memory is random data in the sandbox's /dev/shm. The image is written to the \
         scratch directory on disk without fsync, and restored from the page cache.\n",
    );
    s
}
