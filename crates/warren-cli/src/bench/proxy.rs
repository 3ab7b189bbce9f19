//! `warren bench proxy`: wrk against the agent's `demo-http` server inside a sandbox, three
//! ways in one run (straight to the sandbox's address, through Warren's preview proxy, through
//! nginx as a reverse proxy to the same address), at full load and at one connection, plus a
//! WebSocket echo round trip each way.
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use warren_api::{CreateSandbox, Runtime};

use super::load::{self, Nginx, WrkResult};
use super::report::Stats;
use super::server::{self, InProcess, IMAGE};

/// Port the demo server listens on inside the sandbox.
const APP_PORT: u16 = 8000;
/// Throughput target: Warren's requests/s at least this share of nginx's.
const THROUGHPUT_TARGET: f64 = 0.9;
/// Latency target: Warren adds at most this to the p50 of one connection, ms.
const ADDED_P50_TARGET_MS: f64 = 0.2;

#[derive(Args)]
pub struct ProxyBenchArgs {
    /// Seconds of each wrk run (after a 2 s warm-up of each path).
    #[arg(long, short = 'd', default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// Rounds over the three paths, each in a rotated order; each figure is the median over
    /// rounds, and the throughput ratio the median of the rounds' own ratios (the host's own
    /// noise moves single runs by 10-20 %).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Concurrent connections of the throughput runs.
    #[arg(long, short = 'c', default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// wrk threads of the throughput runs.
    #[arg(long, short = 't', default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    threads: u32,
    /// WebSocket echo round trips timed per path.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    ws_round_trips: u32,
    /// HTTP worker threads of the server under test [default: the server's, half the cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    http_workers: Option<u16>,
    /// Runtime of the sandbox running the demo server.
    #[arg(long, default_value = "runc")]
    runtime: Runtime,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    keep: bool,
}

/// One path's numbers.
#[derive(Debug, Serialize)]
struct PathResult {
    path: &'static str,
    load: WrkResult,
    single: WrkResult,
    ws: Stats,
}

#[derive(Debug, Serialize)]
struct ProxyReport {
    runtime: Runtime,
    http_workers: usize,
    connections: u32,
    duration_s: u64,
    rounds: u32,
    paths: Vec<PathResult>,
    throughput_vs_nginx: f64,
    /// Warren's requests/s over nginx's, round by round (in the order measured).
    round_ratios: Vec<f64>,
    added_p50_ms: f64,
    throughput_ok: bool,
    latency_ok: bool,
}

pub async fn run(a: ProxyBenchArgs) -> anyhow::Result<()> {
    super::require_root()?;
    for (bin, pkg) in [("wrk", "wrk"), ("nginx", "nginx")] {
        if !super::raw::on_path(bin) {
            bail!("{bin} is not on PATH (apt-get install {pkg})");
        }
    }
    let scratch = super::begin("proxy")?;
    let dir = scratch.path().to_owned();
    let mut server: Option<InProcess> = None;
    let mut nginx: Option<Nginx> = None;
    let result = super::unless_interrupted(measure(&a, &dir, &mut server, &mut nginx)).await;
    eprintln!("warren bench proxy: cleaning up");
    if let Some(n) = nginx {
        n.stop().await;
    }
    let clean = InProcess::shutdown_any(server).await;
    super::finish_scratch(scratch, a.keep, clean);
    super::print_report(&result?, a.json, table)
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("the demo server in the sandbox did not listen on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn measure(
    a: &ProxyBenchArgs,
    dir: &Path,
    slot: &mut Option<InProcess>,
    nginx_slot: &mut Option<Nginx>,
) -> anyhow::Result<ProxyReport> {
    let tar = super::busybox_tar(dir)?;
    let workers = a
        .http_workers
        .map_or_else(warren_server::listen::default_workers, usize::from);
    let (api, _) = server::start(dir, a.runtime, Some(workers), slot).await?;
    api.import(&tar).await?;
    let (_, sb) = api
        .create_with(CreateSandbox {
            image: Some(IMAGE.to_owned()),
            runtime: Some(a.runtime),
            public: Some(true),
            cmd: vec![
                "/.warren/agent".into(),
                "demo-http".into(),
                APP_PORT.to_string(),
            ],
            ..Default::default()
        })
        .await?;
    let ip = sb.ipv4().context("the sandbox has no address")?;
    let upstream = SocketAddr::from((ip, APP_PORT));
    wait_listening(upstream).await?;
    let nginx = nginx_slot.insert(Nginx::start(&dir.join("nginx"), upstream).await?);

    let preview_host = format!("{}-{APP_PORT}.localhost", sb.id);
    let paths: [(&'static str, String, Option<&str>); 3] = [
        ("direct", format!("{upstream}"), None),
        (
            "warren",
            format!("{}", api.addr),
            Some(preview_host.as_str()),
        ),
        ("nginx", format!("{}", nginx.addr), None),
    ];
    let duration = Duration::from_secs(a.duration);
    for (name, addr, host) in &paths {
        eprintln!("warren bench proxy: {name}: warm-up");
        load::wrk(
            &format!("http://{addr}/"),
            *host,
            a.connections,
            a.threads,
            Duration::from_secs(2),
        )
        .await?;
    }
    let mut loaded: [Vec<WrkResult>; 3] = Default::default();
    let mut single: [Vec<WrkResult>; 3] = Default::default();
    let mut ws: [Vec<Duration>; 3] = Default::default();
    for round in 0..a.rounds as usize {
        for k in 0..paths.len() {
            let i = (round + k) % paths.len();
            let (name, addr, host) = &paths[i];
            eprintln!(
                "warren bench proxy: round {}/{}: {name}: {} connections, 1 connection, WebSocket",
                round + 1,
                a.rounds,
                a.connections
            );
            let url = format!("http://{addr}/");
            loaded[i].push(load::wrk(&url, *host, a.connections, a.threads, duration).await?);
            single[i].push(load::wrk(&url, *host, 1, 1, duration).await?);
            let per_round = a.ws_round_trips.div_ceil(a.rounds);
            ws[i].extend(load::ws_round_trips(&format!("ws://{addr}/ws"), *host, per_round).await?);
        }
    }
    let mut out = Vec::new();
    for (i, (name, _, _)) in paths.iter().enumerate() {
        out.push(PathResult {
            path: name,
            load: median_by(&loaded[i], |r| r.rps)?,
            single: median_by(&single[i], |r| r.p50_ms)?,
            ws: Stats::of(&ws[i]),
        });
    }
    let by = |n: &str| out.iter().find(|p| p.path == n).map(|p| p.single);
    let (Some(direct1), Some(warren1)) = (by("direct"), by("warren")) else {
        bail!("a path was not measured");
    };
    // The host's speed drifts over minutes; Warren and nginx measured in the same round saw
    // the same host, so their ratio is taken per round and the median of those reported.
    let round_ratios: Vec<f64> = loaded[1]
        .iter()
        .zip(&loaded[2])
        .map(|(w, n)| w.rps / n.rps)
        .collect();
    let mut ratios = round_ratios.clone();
    ratios.sort_by(f64::total_cmp);
    let throughput_vs_nginx = *ratios
        .get(ratios.len() / 2)
        .context("no round to take a ratio of")?;
    let added_p50_ms = warren1.p50_ms - direct1.p50_ms;
    Ok(ProxyReport {
        runtime: a.runtime,
        http_workers: workers,
        connections: a.connections,
        duration_s: a.duration,
        rounds: a.rounds,
        throughput_ok: throughput_vs_nginx >= THROUGHPUT_TARGET,
        latency_ok: added_p50_ms <= ADDED_P50_TARGET_MS,
        paths: out,
        throughput_vs_nginx,
        round_ratios,
        added_p50_ms,
    })
}

/// The run whose `key` is the median of `runs`.
fn median_by(runs: &[WrkResult], key: impl Fn(&WrkResult) -> f64) -> anyhow::Result<WrkResult> {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted
        .get(sorted.len() / 2)
        .copied()
        .context("no wrk run to take a median of")
}

fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{:.0} µs", v * 1000.0)
    } else {
        format!("{v:.2} ms")
    }
}

fn table(r: &ProxyReport) -> String {
    let mut s = format!(
        "warren bench proxy: demo-http in a {} sandbox; wrk {} s per run, median of {} rounds; \
         {} HTTP worker thread(s), nginx: one per core\n\n",
        r.runtime, r.duration_s, r.rounds, r.http_workers
    );
    s.push_str(&format!(
        "{:<8} {:>12} {:>10} {:>10} │ {:>10} {:>10} │ {:>10} {:>10}\n",
        "path",
        format!("req/s ({}c)", r.connections),
        "p50",
        "p99",
        "p50 (1c)",
        "p99 (1c)",
        "ws p50",
        "ws p99"
    ));
    for p in &r.paths {
        s.push_str(&format!(
            "{:<8} {:>12.0} {:>10} {:>10} │ {:>10} {:>10} │ {:>10} {:>10}\n",
            p.path,
            p.load.rps,
            ms(p.load.p50_ms),
            ms(p.load.p99_ms),
            ms(p.single.p50_ms),
            ms(p.single.p99_ms),
            ms(p.ws.p50_ms),
            ms(p.ws.p99_ms),
        ));
    }
    let verdict = |ok| if ok { "ok" } else { "MISS" };
    s.push_str(&format!(
        "\nthroughput: warren = {:.2}× nginx (median of the rounds' ratios: {}; target ≥ {THROUGHPUT_TARGET}×): {}\n",
        r.throughput_vs_nginx,
        r.round_ratios
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        verdict(r.throughput_ok)
    ));
    s.push_str(&format!(
        "latency:    warren adds {} to the p50 of one connection over direct (target ≤ {} µs): {}\n",
        ms(r.added_p50_ms),
        ADDED_P50_TARGET_MS * 1000.0,
        verdict(r.latency_ok)
    ));
    s
}
