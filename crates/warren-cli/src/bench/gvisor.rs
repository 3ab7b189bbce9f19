//! `warren bench gvisor`: create → running and the exec round trip under gVisor, through
//! Warren's API beside the same runsc's raw `run` and `exec`, once per gVisor platform
//! (`systrap`, `ptrace`, ...). Each platform gets its own scratch server (the platform is a
//! server setting), started, measured and shut down in turn.
use std::path::Path;

use clap::Args;
use serde::Serialize;
use warren_api::Runtime;
use warren_local::runtime::{GvisorConfig, GVISOR_VERSION};

use super::raw::{self, Raw};
use super::report::{self, Measure, Row, Stats};
use super::server::Api;
use super::server::{self, InProcess};

#[derive(Args)]
pub struct GvisorBenchArgs {
    /// gVisor platforms to measure, in order; repeat the flag or give a comma-separated list
    /// (`kvm` needs /dev/kvm).
    #[arg(long = "platform", value_delimiter = ',', num_args = 1.., default_values = ["systrap", "ptrace"])]
    platforms: Vec<String>,
    /// gVisor's network stack for Warren's sandboxes, as `warren serve --gvisor-network`
    /// takes it (`host` or `sandbox`) [default: the server's].
    #[arg(long)]
    network: Option<String>,
    /// Timed sandbox creates per platform (also the number of raw `runsc run`s of `true`),
    /// after one untimed warm-up.
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Timed exec round trips per platform, after one untimed warm-up (raw `runsc exec`
    /// stops at 30).
    #[arg(long, short = 'm', default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    exec_iterations: u32,
    /// HTTP worker threads of the server under test [default: the server's, half the cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    http_workers: Option<u16>,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    keep: bool,
}

/// One platform's rows: create, then exec; and the floor under any exec.
#[derive(Debug, Serialize)]
struct PlatformResult {
    platform: String,
    rows: Vec<Row>,
    /// One process started and reaped inside a sandbox by its own shell (fork, exec of
    /// `/bin/true`, wait), with 1/[`LOOP`] of an exec's round trip: what gVisor itself costs
    /// any exec.
    process_start: Stats,
}

/// Processes a timed shell loop starts for [`PlatformResult::process_start`].
const LOOP: u32 = 50;

/// The per-process figure of `n` timed loops (after one untimed) in one sandbox.
async fn bench_process_start(api: &Api, n: u32, label: &str) -> anyhow::Result<Stats> {
    let script = format!("i=0; while [ $i -lt {LOOP} ]; do /bin/true; i=$((i+1)); done");
    super::bench_exec_of(api, Runtime::Gvisor, &["sh", "-c", &script], LOOP, n, label).await
}

#[derive(Debug, Serialize)]
struct GvisorReport {
    gvisor_version: &'static str,
    /// `--network` of Warren's sandboxes (the raw runs have none).
    network: String,
    cores: usize,
    iterations: u32,
    exec_iterations: u32,
    platforms: Vec<PlatformResult>,
}

pub async fn run(a: GvisorBenchArgs) -> anyhow::Result<()> {
    let scratch = super::begin("gvisor")?;
    let dir = scratch.path().to_owned();
    let mut server: Option<InProcess> = None;
    let result = super::unless_interrupted(measure(&a, &dir, &mut server)).await;
    eprintln!("warren bench gvisor: cleaning up");
    let mut clean = InProcess::shutdown_any(server).await;
    for p in &a.platforms {
        clean &= raw::cleanup(&dir.join(p).join("raw")).await;
    }
    super::finish_scratch(scratch, a.keep, clean);
    super::print_report(&result?, a.json, table)
}

async fn measure(
    a: &GvisorBenchArgs,
    dir: &Path,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<GvisorReport> {
    let tar = super::busybox_tar(dir)?;
    let tree = dir.join("busybox-rootfs");
    let workers = a.http_workers.map(usize::from);
    let mut network = String::new();
    let mut platforms = Vec::new();
    for platform in &a.platforms {
        let pdir = dir.join(platform);
        std::fs::create_dir_all(&pdir)?;
        let mut gvisor = GvisorConfig {
            platform: platform.clone(),
            ..GvisorConfig::default()
        };
        if let Some(n) = &a.network {
            gvisor.network.clone_from(n);
        }
        network.clone_from(&gvisor.network);
        let (api, _) = server::start_with(
            &pdir,
            Runtime::Gvisor,
            workers,
            Default::default(),
            gvisor,
            slot,
        )
        .await?;
        api.import(&tar).await?;
        let raw = Raw::prepare_on(&pdir.join("raw"), &tree, platform).await?;
        let rt = Runtime::Gvisor;
        let label = |what: &str| format!("{what} ({platform})");
        let create = super::bench_create(&api, rt, a.iterations, &label("create")).await?;
        let run = super::bench_raw_run(&raw, rt, a.iterations, &label("runsc run")).await?;
        let exec = super::bench_exec(&api, rt, a.exec_iterations, &label("exec")).await?;
        let raw_n = a.exec_iterations.min(super::RAW_RUNSC_EXEC_MAX);
        let raw_exec = super::bench_raw_exec(&raw, rt, raw_n, &label("runsc exec")).await?;
        let process_start = bench_process_start(&api, 10, &label("process start")).await?;
        platforms.push(PlatformResult {
            platform: platform.clone(),
            rows: vec![
                Row::new(Measure::Create, rt, create, raw::run_label(rt), run),
                Row::new(Measure::Exec, rt, exec, raw::exec_label(rt), raw_exec),
            ],
            process_start,
        });
        // The next platform's server takes the same address range.
        if let Some(s) = slot.take() {
            if !s.shutdown().await {
                anyhow::bail!("the {platform} server's sandboxes were not all cleaned up");
            }
        }
    }
    Ok(GvisorReport {
        gvisor_version: GVISOR_VERSION,
        network,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        iterations: a.iterations,
        exec_iterations: a.exec_iterations,
        platforms,
    })
}

fn table(r: &GvisorReport) -> String {
    let mut s = format!(
        "warren bench gvisor — runsc {}, busybox, N={} creates, M={} execs (raw runsc exec {}), \
         {} cores, Warren's sandboxes on --network={}\n",
        r.gvisor_version,
        r.iterations,
        r.exec_iterations,
        r.exec_iterations.min(super::RAW_RUNSC_EXEC_MAX),
        r.cores,
        r.network
    );
    let line = |c: [&str; 10]| {
        format!(
            "{:<9} {:<22} {:>10} {:>10}  {:<10} {:>10} {:>10} {:>7}  {:<10} {}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
        )
    };
    s.push_str(&line([
        "platform", "measure", "p50", "p95", "raw", "raw p50", "raw p95", "ratio", "target",
        "result",
    ]));
    for p in &r.platforms {
        for row in &p.rows {
            s.push_str(&line([
                &p.platform,
                row.measure_label(),
                &report::ms(row.warren.p50_ms),
                &report::ms(row.warren.p95_ms),
                row.raw_command,
                &report::ms(row.raw.p50_ms),
                &report::ms(row.raw.p95_ms),
                &format!("{:.2}x", row.ratio),
                &row.target_cell(),
                if row.ok { "ok" } else { "MISS" },
            ]));
        }
    }
    for p in &r.platforms {
        let exec = p.rows.iter().find(|r| r.measure == Measure::Exec);
        s.push_str(&format!(
            "{}: a process started and reaped inside the sandbox by its shell (fork, exec of \
             /bin/true, wait) p50 {}, p95 {}: the floor under any exec{}\n",
            p.platform,
            report::ms(p.process_start.p50_ms),
            report::ms(p.process_start.p95_ms),
            exec.map(|e| format!(
                "; Warren's exec p50 is {} above it",
                report::ms(e.warren.p50_ms - p.process_start.p50_ms)
            ))
            .unwrap_or_default()
        ));
    }
    s.push_str(
        "\nEach platform: its own scratch server (`warren serve --gvisor-platform P`), the raw \
         runsc on the same platform with --network=none. What create, exec and the raw figures \
         include: see `warren bench`'s notes. Targets (p50): create ≤1.5× raw `runsc run`; exec \
         ≤5 ms.\n",
    );
    s
}
