//! `warren bench noisy`: one sandbox's exec round trip while another prints as fast as it can
//! (`yes`), as its main command (the log tailer and the store take the output) or in an exec
//! (the server drains it, into a capped JSON answer or an SSE stream), against the same round
//! trip with no noisy neighbour. Also what the noise cost: the database's growth, the
//! host-side log file's disk use and the server's peak memory.
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::Serialize;
use warren_api::{CreateSandbox, Runtime, SandboxId};

use super::report::Stats;
use super::server::{self, Api, InProcess, IMAGE};

/// What the noisy sandbox does while the quiet one is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Noise {
    /// Nothing: the baseline.
    Quiet,
    /// `yes` as its main command (its output goes to the sandbox's log).
    Main,
    /// `yes` in a plain exec (JSON answer, output kept up to the server's limit).
    Exec,
    /// `yes` in a streamed exec (SSE, every byte sent; the bench reads and drops them).
    Stream,
}

impl Noise {
    fn label(self) -> &'static str {
        match self {
            Noise::Quiet => "no noisy neighbour",
            Noise::Main => "yes as main command",
            Noise::Exec => "yes in exec (JSON)",
            Noise::Stream => "yes in exec (SSE)",
        }
    }
}

#[derive(Args)]
pub struct NoisyBenchArgs {
    /// Timed exec round trips (`true`) of the quiet sandbox per scenario, after 5 untimed.
    #[arg(long, short = 'm', default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    exec_iterations: u32,
    /// Seconds the noisy sandbox prints before the timing starts.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Runtime of both sandboxes.
    #[arg(long, default_value = "gvisor")]
    runtime: Runtime,
    /// Scenarios to run, in order; repeat the flag or give a comma-separated list.
    #[arg(long = "scenario", value_delimiter = ',', num_args = 1.., default_values = ["quiet", "main", "exec", "stream"])]
    scenarios: Vec<Noise>,
    /// HTTP worker threads of the server under test [default: the server's, half the cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    http_workers: Option<u16>,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    keep: bool,
    /// The server's output limits, as `warren serve` takes them.
    #[command(flatten)]
    output: crate::OutputArgs,
}

/// One scenario's numbers.
#[derive(Debug, Serialize)]
struct ScenarioResult {
    noise: Noise,
    /// The quiet sandbox's exec round trips.
    exec: Stats,
    /// p50 over the quiet scenario's p50 (when it ran).
    vs_quiet: Option<f64>,
    /// How long the noise ran, s.
    noise_s: f64,
    /// Bytes of output the noise made that reached Warren: the main command's log file's
    /// length, or the streamed exec the bench read (none for a plain exec, whose answer
    /// never comes: its command runs until the sandbox is deleted).
    noise_bytes: Option<u64>,
    /// Growth of the database (`warren.db` and its WAL) during the scenario, bytes.
    db_growth: i64,
    /// Disk blocks of the noisy sandbox's host-side log files at the end, bytes.
    log_files_on_disk: u64,
    /// The bench process's (server and client) peak resident memory at the end, bytes.
    vm_hwm: u64,
}

#[derive(Debug, Serialize)]
struct NoisyReport {
    runtime: Runtime,
    cores: usize,
    exec_iterations: u32,
    warmup_s: u64,
    scenarios: Vec<ScenarioResult>,
}

pub async fn run(a: NoisyBenchArgs) -> anyhow::Result<()> {
    let scratch = super::begin("noisy")?;
    let dir = scratch.path().to_owned();
    let mut server: Option<InProcess> = None;
    let result = super::unless_interrupted(measure(&a, &dir, &mut server)).await;
    eprintln!("warren bench noisy: cleaning up");
    let clean = InProcess::shutdown_any(server).await;
    super::finish_scratch(scratch, a.keep, clean);
    super::print_report(&result?, a.json, table)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn db_size(data_dir: &Path) -> i64 {
    ["warren.db", "warren.db-wal"]
        .iter()
        .map(|f| file_len(&data_dir.join(f)) as i64)
        .sum()
}

/// `VmHWM` of this process, bytes.
fn vm_hwm() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

async fn create(api: &Api, rt: Runtime, cmd: &[&str]) -> anyhow::Result<SandboxId> {
    let (_, sb) = api
        .create_with(CreateSandbox {
            image: Some(IMAGE.to_owned()),
            runtime: Some(rt),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await?;
    Ok(sb.id)
}

async fn time_execs(api: &Api, id: &SandboxId, n: u32, label: &str) -> anyhow::Result<Stats> {
    let mut samples = Vec::with_capacity(n as usize);
    for i in 0..n + 5 {
        let took = api.exec_true(id).await?;
        if i >= 5 {
            samples.push(took);
            super::progress(label, i - 4, n);
        }
    }
    Ok(Stats::of(&samples))
}

async fn measure(
    a: &NoisyBenchArgs,
    dir: &Path,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<NoisyReport> {
    let tar = super::busybox_tar(dir)?;
    let workers = a.http_workers.map(usize::from);
    let (api, data_dir) =
        server::start_with_output(dir, a.runtime, workers, a.output.limits(), slot).await?;
    api.import(&tar).await?;
    let quiet = create(&api, a.runtime, &[]).await?;
    let mut out: Vec<ScenarioResult> = Vec::new();
    for &noise in &a.scenarios {
        let db_before = db_size(&data_dir);
        let noisy = match noise {
            Noise::Main => create(&api, a.runtime, &["yes"]).await?,
            _ => create(&api, a.runtime, &[]).await?,
        };
        let began = Instant::now();
        let drain = match noise {
            Noise::Exec | Noise::Stream => {
                let api2 = api.clone();
                let id = noisy.clone();
                Some(tokio::spawn(async move {
                    api2.exec_drain(&id, &["yes"], noise == Noise::Stream).await
                }))
            }
            _ => None,
        };
        tokio::time::sleep(Duration::from_secs(a.warmup)).await;
        let exec = time_execs(&api, &quiet, a.exec_iterations, noise.label()).await;
        let noise_s = began.elapsed().as_secs_f64();
        let sdir = data_dir.join("sandboxes").join(noisy.as_str());
        let logs = [sdir.join("stdout.log"), sdir.join("stderr.log")];
        let log_files_on_disk = logs
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.blocks() * 512))
            .sum();
        let main_bytes: u64 = logs.iter().map(|p| file_len(p)).sum();
        let db_growth = db_size(&data_dir) - db_before;
        let vm_hwm = vm_hwm();
        let deleted = api.delete(&noisy).await;
        let drained = match drain {
            // The answer ends when the sandbox goes: an error then is expected.
            Some(t) => t.await.ok().and_then(|r| r.ok()).unwrap_or(0),
            None => 0,
        };
        let exec = exec?;
        deleted?;
        out.push(ScenarioResult {
            noise,
            exec,
            vs_quiet: None,
            noise_s,
            noise_bytes: match noise {
                Noise::Main => Some(main_bytes),
                Noise::Stream => Some(drained),
                Noise::Quiet | Noise::Exec => None,
            },
            db_growth,
            log_files_on_disk,
            vm_hwm,
        });
    }
    api.delete(&quiet).await?;
    let base = out
        .iter()
        .find(|r| r.noise == Noise::Quiet)
        .map(|r| r.exec.p50_ms);
    for r in &mut out {
        r.vs_quiet = base.map(|b| r.exec.p50_ms / b);
    }
    Ok(NoisyReport {
        runtime: a.runtime,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        exec_iterations: a.exec_iterations,
        warmup_s: a.warmup,
        scenarios: out,
    })
}

fn mb(b: f64) -> String {
    format!("{:.1} MB", b / 1e6)
}

fn table(r: &NoisyReport) -> String {
    let mut s = format!(
        "warren bench noisy: exec of `true` in one {} sandbox ({} timed per row) while another \
         runs `yes`; {} cores; noise starts {} s before the timing\n\n",
        r.runtime, r.exec_iterations, r.cores, r.warmup_s
    );
    s.push_str(&format!(
        "{:<22} {:>9} {:>9} {:>9} {:>8} │ {:>12} {:>10} {:>11} {:>11}\n",
        "noisy neighbour",
        "p50",
        "p95",
        "p99",
        "vs quiet",
        "noise out",
        "db growth",
        "log files",
        "peak RSS"
    ));
    for x in &r.scenarios {
        let rate = match x.noise_bytes {
            Some(b) if x.noise_s > 0.0 => format!("{}/s", mb(b as f64 / x.noise_s)),
            _ => "-".into(),
        };
        s.push_str(&format!(
            "{:<22} {:>6.2} ms {:>6.2} ms {:>6.2} ms {:>8} │ {:>12} {:>10} {:>11} {:>11}\n",
            x.noise.label(),
            x.exec.p50_ms,
            x.exec.p95_ms,
            x.exec.p99_ms,
            x.vs_quiet.map_or("-".into(), |v| format!("{v:.2}×")),
            rate,
            mb(x.db_growth as f64),
            mb(x.log_files_on_disk as f64),
            mb(x.vm_hwm as f64),
        ));
    }
    s.push_str(
        "\nnoise out: the noisy output that reached Warren per second (log file length, or the \
         streamed exec read); db growth: warren.db + WAL during the row; log files: disk blocks of \
         the noisy sandbox's stdout.log + stderr.log at the end of the row; peak RSS: VmHWM of \
         the bench process (server and client) so far. The server runs in the bench's process, \
         so in the SSE row the bench also spends CPU reading the stream.\n",
    );
    s
}
