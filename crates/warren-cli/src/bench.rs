//! `warren bench`: sandbox create and exec latency through the API, beside the raw runtimes on
//! the same busybox root filesystem, measured in one run by an in-process server on a scratch
//! data directory (no running server needed; root is). `warren bench proxy` measures the
//! preview proxy (see [`proxy`]); `warren bench noisy` a sandbox's exec beside one printing as
//! fast as it can (see [`noisy`]); `warren bench gvisor` create and exec per gVisor platform
//! (see [`gvisor`]); `warren bench checkpoint` raw runsc checkpoint and restore (see
//! [`checkpoint`]).
mod checkpoint;
mod control;
mod control_scale;
mod gvisor;
mod image;
mod kube;
mod load;
mod noisy;
mod proxy;
mod raw;
mod report;
mod server;
mod state;
mod store;

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use warren_api::Runtime;

use crate::rootfs;
use raw::Raw;
use report::{Measure, Report, Row, Stats};
use server::{Api, InProcess};

const RCU_EXPEDITED: &str = "/sys/kernel/rcu_expedited";

/// `runsc exec` costs tens of ms; this many samples are enough for its floor.
const RAW_RUNSC_EXEC_MAX: u32 = 30;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The Kubernetes backend beside plain kubectl, per runtime class: create → running
    /// against `kubectl run` + `kubectl wait --for=condition=Ready`, and the exec round trip
    /// against `kubectl exec` (needs a cluster: scripts/k8s-up.sh starts one).
    Kube(kube::KubeBenchArgs),
    /// The preview proxy: wrk straight to a sandbox, through Warren, and through nginx
    /// (needs wrk and nginx), plus WebSocket echo round trips.
    Proxy(proxy::ProxyBenchArgs),
    /// Image pulls and creates from a pulled image: a 5-layer ~200 MB image through a local
    /// docker-registry, then 20 sandboxes from it and the disk each used (needs
    /// docker-registry).
    Image(image::ImageBenchArgs),
    /// A sandbox's exec round trip while another prints as fast as it can (`yes` as its main
    /// command, in an exec, in a streamed exec), against none; and what that output cost
    /// (database growth, host-side log files, peak memory).
    Noisy(noisy::NoisyBenchArgs),
    /// gVisor alone, per platform (systrap, ptrace, ...): create → running and the exec
    /// round trip through Warren beside the same runsc's raw `run` and `exec`.
    Gvisor(gvisor::GvisorBenchArgs),
    /// Raw `runsc checkpoint` and `restore` of a sandbox holding 64 MiB and 512 MiB of
    /// touched memory: each one's p50 and the image's size on disk.
    Checkpoint(checkpoint::CheckpointBenchArgs),
    /// Warren's pause and resume of a sandbox holding 64 MiB and 512 MiB of touched memory, per
    /// runtime, beside the raw tool's of the same (`runsc checkpoint`/`restore`, CRIU's
    /// dump/restore through crun), forks, and creates from warm pools, in one run.
    State(state::StateBenchArgs),
    /// Pause, resume and snapshot with images on local disk only, then also sent to an object
    /// store (`--object-store`), in one run: their p50/p95 and what a snapshot takes in each.
    Store(store::StoreBenchArgs),
    /// The control plane: create and exec p50 on SQLite and PostgreSQL, a burst of concurrent
    /// creates, GET throughput, and many idle sandboxes per runtime (list/get/exec at 10 and
    /// at the count, memory per sandbox), in one run.
    Control(control::ControlBenchArgs),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchCommand>,
    /// Timed sandbox creates per runtime (also the number of raw `run`s of `true`), after
    /// one untimed warm-up.
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Timed exec round trips per runtime, after one untimed warm-up (also the number of raw
    /// `crun exec`s; raw `runsc exec` stops at 30).
    #[arg(long, short = 'm', default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    exec_iterations: u32,
    /// Runtimes to measure: gvisor, runc, or both; repeat the flag or give a comma-separated
    /// list [default: runc,gvisor].
    #[arg(long = "runtime", value_name = "RUNTIME", value_delimiter = ',', num_args = 1..)]
    runtimes: Vec<Runtime>,
    /// Print the results as JSON (percentiles in ms, targets, verdicts) instead of the table.
    #[arg(long)]
    json: bool,
    /// Set the kernel's rcu_expedited for the run (restored after), as `warren serve
    /// --expedite-rcu` does: both Warren and the raw runtimes are measured under it.
    #[arg(long)]
    expedite_rcu: bool,
    /// Keep the scratch directory (data dir, busybox tree, raw bundles and logs) and print
    /// its path, instead of removing it.
    #[arg(long)]
    keep: bool,
    /// HTTP worker threads of the server under test [default: the server's, half the cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    http_workers: Option<u16>,
}

impl BenchArgs {
    fn runtimes(&self) -> Vec<Runtime> {
        let mut v: Vec<Runtime> = Vec::new();
        let asked = if self.runtimes.is_empty() {
            vec![Runtime::Runc, Runtime::Gvisor]
        } else {
            self.runtimes.clone()
        };
        for rt in asked {
            if !v.contains(&rt) {
                v.push(rt);
            }
        }
        v
    }
}

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    match a.what {
        Some(BenchCommand::Proxy(p)) => return proxy::run(p).await,
        Some(BenchCommand::Image(i)) => return image::run(i).await,
        Some(BenchCommand::Noisy(n)) => return noisy::run(n).await,
        Some(BenchCommand::Gvisor(g)) => return gvisor::run(g).await,
        Some(BenchCommand::Checkpoint(c)) => return checkpoint::run(c).await,
        Some(BenchCommand::State(st)) => return state::run(st).await,
        Some(BenchCommand::Store(st)) => return store::run(st).await,
        Some(BenchCommand::Control(c)) => return control::run(c).await,
        Some(BenchCommand::Kube(k)) => return kube::run(k).await,
        None => {}
    }
    let runtimes = a.runtimes();
    preflight(&runtimes)?;
    let scratch = scratch_dir()?;
    let dir = scratch.path().to_owned();
    eprintln!("warren bench: scratch directory {}", dir.display());

    let rcu_before = std::fs::read_to_string(RCU_EXPEDITED).unwrap_or_default();
    if a.expedite_rcu {
        std::fs::write(RCU_EXPEDITED, "1").with_context(|| format!("writing {RCU_EXPEDITED}"))?;
    }
    let mut server: Option<InProcess> = None;
    let result = unless_interrupted(measure(&a, &runtimes, &dir, &mut server)).await;
    if a.expedite_rcu && !rcu_before.trim().is_empty() {
        let _ = std::fs::write(RCU_EXPEDITED, rcu_before.trim());
    }

    // Clean up whatever happened: the scratch server's sandboxes outlive it unless deleted.
    eprintln!("warren bench: cleaning up");
    let mut clean = raw::cleanup(&dir.join("raw")).await;
    if let Some(s) = server {
        clean &= s.shutdown().await;
    }
    finish_scratch(scratch, a.keep, clean);

    print_report(&result?, a.json, Report::table)
}

pub(crate) fn require_root() -> anyhow::Result<()> {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if uid != 0 {
        bail!("warren bench needs root (it starts sandboxes and the raw runtimes)");
    }
    Ok(())
}

/// Builds the busybox root filesystem and its tar in `dir`; returns the tar.
fn busybox_tar(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    eprintln!("warren bench: building the busybox image");
    let tree = dir.join("busybox-rootfs");
    let tar = dir.join("busybox.tar");
    rootfs::busybox_tree(&tree)?;
    rootfs::tar_dir(&tree, &tar)?;
    Ok(tar)
}

fn preflight(runtimes: &[Runtime]) -> anyhow::Result<()> {
    require_root()?;
    for &rt in runtimes {
        if !raw::on_path(raw::binary(rt)) {
            bail!(
                "{} is not on PATH (apt-get install {}), or leave {rt} out with --runtime",
                raw::binary(rt),
                raw::binary(rt)
            );
        }
    }
    Ok(())
}

/// The start of a sub-bench (`warren bench NAME`): root checked, a scratch directory made and
/// named on stderr.
pub(crate) fn begin(name: &str) -> anyhow::Result<tempfile::TempDir> {
    require_root()?;
    let scratch = scratch_dir()?;
    eprintln!(
        "warren bench {name}: scratch directory {}",
        scratch.path().display()
    );
    Ok(scratch)
}

/// `work`, unless Ctrl-C comes first (the caller cleans up either way).
pub(crate) async fn unless_interrupted<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    }
}

/// Prints a sub-bench's report: JSON when asked, else its table.
pub(crate) fn print_report<R: serde::Serialize>(
    report: &R,
    json: bool,
    table: fn(&R) -> String,
) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).context("encoding the results")?
        );
    } else {
        print!("{}", table(report));
    }
    Ok(())
}

/// A scratch directory under /var/tmp (on disk, like a real data dir), else the temp dir.
pub(crate) fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    let b = {
        let mut b = tempfile::Builder::new();
        b.prefix("warren-bench-");
        b
    };
    b.tempdir_in("/var/tmp")
        .or_else(|_| b.tempdir())
        .context("creating a scratch directory")
}

/// Removes the scratch directory unless asked to keep it or cleanup left something in it.
pub(crate) fn finish_scratch(scratch: tempfile::TempDir, keep: bool, clean: bool) {
    let mounts = mounts_under(scratch.path());
    if keep || !clean || !mounts.is_empty() {
        let path = scratch.keep();
        if !mounts.is_empty() {
            eprintln!(
                "warren bench: still mounted under the scratch directory: {}",
                mounts.join(", ")
            );
        }
        if !clean {
            eprintln!("warren bench: cleanup was incomplete (see above)");
        }
        eprintln!("warren bench: kept {}", path.display());
        return;
    }
    let path = scratch.path().to_owned();
    if let Err(e) = scratch.close() {
        eprintln!("warren bench: removing {}: {e}", path.display());
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

/// Shows progress on stderr: a line rewritten in place on a terminal, else one line per series.
fn progress(label: &str, i: u32, n: u32) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K{label} {i}/{n}");
        if i == n {
            eprintln!();
        }
    } else if i == n {
        eprintln!("{label} {i}/{n}");
    }
}

async fn measure(
    a: &BenchArgs,
    runtimes: &[Runtime],
    dir: &Path,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<Report> {
    let default_runtime = *runtimes.first().context("no runtime to measure")?;
    let tar = busybox_tar(dir)?;
    let tree = dir.join("busybox-rootfs");
    let workers = a.http_workers.map(usize::from);
    let (api, data_dir) = server::start(dir, default_runtime, workers, slot).await?;
    let image = api.import(&tar).await?;
    // The raw runtimes run on the very tree the image was unpacked to.
    let hex = image
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&image.digest);
    let image_tree = data_dir.join("images/layers").join(hex);
    let raw_rootfs = if image_tree.is_dir() {
        image_tree
    } else {
        eprintln!(
            "warren bench: {} is missing; the raw runtimes use {}",
            image_tree.display(),
            tree.display()
        );
        tree
    };
    let raw = Raw::prepare(&dir.join("raw"), &raw_rootfs).await?;

    let mut rows = Vec::new();
    for &rt in runtimes {
        let warren = bench_create(&api, rt, a.iterations, &format!("create {rt}")).await?;
        let floor = bench_raw_run(&raw, rt, a.iterations, raw::run_label(rt)).await?;
        rows.push(Row::new(
            Measure::Create,
            rt,
            warren,
            raw::run_label(rt),
            floor,
        ));
    }
    for &rt in runtimes {
        let warren = bench_exec(&api, rt, a.exec_iterations, &format!("exec {rt}")).await?;
        let raw_n = match rt {
            Runtime::Gvisor => a.exec_iterations.min(RAW_RUNSC_EXEC_MAX),
            Runtime::Runc => a.exec_iterations,
        };
        let floor = bench_raw_exec(&raw, rt, raw_n, raw::exec_label(rt)).await?;
        rows.push(Row::new(
            Measure::Exec,
            rt,
            warren,
            raw::exec_label(rt),
            floor,
        ));
    }
    Ok(Report {
        image: "busybox",
        raw_rootfs: raw_rootfs.display().to_string(),
        rcu_expedited: std::fs::read_to_string(RCU_EXPEDITED).is_ok_and(|v| v.trim() == "1"),
        favordynmods: warren_local::cgroup::favors_dynmods(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        iterations: a.iterations,
        exec_iterations: a.exec_iterations,
        rows,
    })
}

async fn bench_create(api: &Api, rt: Runtime, n: u32, label: &str) -> anyhow::Result<Stats> {
    let mut samples = Vec::new();
    for i in 0..=n {
        let (took, sb) = api.create(rt).await?;
        api.delete(&sb.id).await?;
        if i > 0 {
            samples.push(took);
            progress(label, i, n);
        }
    }
    Ok(Stats::of(&samples))
}

async fn bench_raw_run(raw: &Raw, rt: Runtime, n: u32, label: &str) -> anyhow::Result<Stats> {
    let mut samples = Vec::new();
    for i in 0..=n {
        let took = raw.run_true(rt, &format!("run-{i}")).await?;
        if i > 0 {
            samples.push(took);
            progress(label, i, n);
        }
    }
    Ok(Stats::of(&samples))
}

async fn bench_exec(api: &Api, rt: Runtime, n: u32, label: &str) -> anyhow::Result<Stats> {
    bench_exec_of(api, rt, &["true"], 1, n, label).await
}

/// `n` timed round trips (after one untimed) of an exec of `cmd` in one new sandbox, each
/// divided by `per` (the things `cmd` does `per` times over).
async fn bench_exec_of(
    api: &Api,
    rt: Runtime,
    cmd: &[&str],
    per: u32,
    n: u32,
    label: &str,
) -> anyhow::Result<Stats> {
    let (_, sb) = api.create(rt).await?;
    let cmd: Vec<String> = cmd.iter().map(|&c| c.to_owned()).collect();
    let timed = async {
        let mut samples = Vec::new();
        for i in 0..=n {
            let took = api.exec(&sb.id, cmd.clone()).await?;
            if i > 0 {
                samples.push(took / per);
                progress(label, i, n);
            }
        }
        anyhow::Ok(samples)
    }
    .await;
    let deleted = api.delete(&sb.id).await;
    let samples = timed?;
    deleted?;
    Ok(Stats::of(&samples))
}

async fn bench_raw_exec(raw: &Raw, rt: Runtime, n: u32, label: &str) -> anyhow::Result<Stats> {
    let id = "exec";
    raw.start_sleeper(rt, id).await?;
    let timed = async {
        let mut samples = Vec::new();
        for i in 0..=n {
            let took = raw.exec_true(rt, id).await?;
            if i > 0 {
                samples.push(took);
                progress(label, i, n);
            }
        }
        anyhow::Ok(samples)
    }
    .await;
    let deleted = raw.delete(rt, id).await;
    let samples = timed?;
    deleted?;
    Ok(Stats::of(&samples))
}
