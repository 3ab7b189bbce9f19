//! `warren bench control`'s scale part: idle busybox sandboxes on one host, per runtime. At 10
//! sandboxes and again at the count reached: list, get and exec p50; the creates that reached
//! the count; the server's memory (its RSS: the bench runs it in-process, its own client share
//! is small) and the host's (MemAvailable), each per sandbox. gVisor stops early when the host
//! would have less memory available than the floor.
use std::time::Duration;

use clap::Args;
use rand::seq::SliceRandom;
use serde::Serialize;
use warren_api::{Runtime, SandboxId};

use super::report::{ms, Stats};
use super::server::Api;

/// Sandboxes the "few" figures are taken at.
const FEW: u32 = 10;

#[derive(Args)]
pub struct ScaleArgs {
    /// Idle runc sandboxes of the scale part (0 skips it).
    #[arg(long, default_value_t = 1000)]
    runc_count: u32,
    /// Most idle gVisor sandboxes of the scale part (0 skips it); it stops sooner when the
    /// host's available memory would fall under --memory-floor-pct of its total.
    #[arg(long, default_value_t = 1000)]
    gvisor_count: u32,
    /// Share of the host's memory (%) the gVisor series leaves available.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=90))]
    memory_floor_pct: u64,
}

/// List, get and exec p50 with some number of sandboxes.
#[derive(Debug, Serialize)]
pub struct At {
    sandboxes: u32,
    list: Stats,
    get: Stats,
    exec: Stats,
    server_rss_kib: u64,
    host_available_kib: u64,
}

/// One runtime's scale figures.
#[derive(Debug, Serialize)]
pub struct ScaleRow {
    runtime: Runtime,
    /// What was asked for, and why fewer were made if so.
    asked: u32,
    stopped_because: Option<String>,
    few: At,
    many: At,
    /// The last creates before `many`.
    create_at_many: Stats,
    server_kib_per_sandbox: f64,
    host_kib_per_sandbox: f64,
}

/// Each runtime's series; one that fails is reported by its error, the others still run.
pub async fn measure(api: &Api, a: &ScaleArgs, n: u32) -> (Vec<ScaleRow>, Vec<String>) {
    let (mut rows, mut failed) = (Vec::new(), Vec::new());
    for (rt, count) in [
        (Runtime::Runc, a.runc_count),
        (Runtime::Gvisor, a.gvisor_count),
    ] {
        if count <= FEW {
            continue;
        }
        let mut ids = Vec::new();
        let row = series(api, rt, count, a.memory_floor_pct, n, &mut ids).await;
        eprintln!("scale {rt}: deleting {} sandboxes", ids.len());
        for id in &ids {
            if let Err(e) = api.delete(id).await {
                eprintln!("scale {rt}: deleting {id}: {e:#}");
            }
        }
        match row {
            Ok(row) => rows.push(row),
            Err(e) => failed.push(format!("{rt}: {e:#}")),
        }
    }
    (rows, failed)
}

/// Threads on the host now (every process's), and how many the kernel allows (the lower of
/// kernel.pid_max and kernel.threads-max): a gVisor sandbox holds some thirty.
fn threads() -> (u64, u64) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let now = read("/proc/loadavg")
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/'))
        .and_then(|(_, total)| total.parse().ok())
        .unwrap_or(0);
    let limit = [
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ]
    .iter()
    .filter_map(|v| v.trim().parse::<u64>().ok())
    .min()
    .unwrap_or(u64::MAX);
    (now, limit)
}

async fn series(
    api: &Api,
    rt: Runtime,
    count: u32,
    floor_pct: u64,
    n: u32,
    ids: &mut Vec<SandboxId>,
) -> anyhow::Result<ScaleRow> {
    let body = || warren_api::CreateSandbox {
        runtime: Some(rt),
        ..super::control::runc_busybox()
    };
    let label = format!("scale {rt}:");
    while ids.len() < FEW as usize {
        ids.push(api.create_with(body()).await?.1.id);
    }
    let few = at(api, ids, n, &label).await?;
    let total = meminfo_kib("MemTotal");
    let floor = total * floor_pct / 100;
    let mut creates = Vec::new();
    let mut stopped_because = None;
    let mut per_sandbox_kib = 0;
    let mut per_sandbox_threads = 0;
    while ids.len() < count as usize {
        let before = meminfo_kib("MemAvailable");
        let (threads_now, threads_max) = threads();
        if threads_now + per_sandbox_threads * 2 > threads_max / 100 * 90 {
            stopped_because = Some(format!(
                "the host's threads ({threads_now}) neared the kernel's limit ({threads_max}: \
                 kernel.pid_max, kernel.threads-max)"
            ));
            break;
        }
        if rt == Runtime::Gvisor && before.saturating_sub(per_sandbox_kib * 2) < floor {
            stopped_because = Some(format!(
                "the host's available memory ({} MiB) neared the floor ({} MiB)",
                before / 1024,
                floor / 1024
            ));
            break;
        }
        match api.create_with(body()).await {
            Ok((took, sb)) => {
                creates.push(took);
                ids.push(sb.id);
            }
            Err(e) => {
                stopped_because = Some(format!("create {} failed: {e:#}", ids.len() + 1));
                break;
            }
        }
        per_sandbox_kib = before
            .saturating_sub(meminfo_kib("MemAvailable"))
            .max(per_sandbox_kib);
        per_sandbox_threads = threads()
            .0
            .saturating_sub(threads_now)
            .max(per_sandbox_threads);
        super::progress(&format!("{label} create"), ids.len() as u32, count);
    }
    if stopped_because.is_some() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    // Idle means idle: let the creates' own work (log tailers starting, samplers) settle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let many = at(api, ids, n, &label).await?;
    let made = (ids.len() as u32).saturating_sub(FEW).max(1) as f64;
    let last = &creates[creates.len().saturating_sub(n as usize)..];
    let row = ScaleRow {
        runtime: rt,
        asked: count,
        stopped_because,
        server_kib_per_sandbox: many.server_rss_kib.saturating_sub(few.server_rss_kib) as f64
            / made,
        host_kib_per_sandbox: few
            .host_available_kib
            .saturating_sub(many.host_available_kib) as f64
            / made,
        few,
        many,
        create_at_many: Stats::of(last),
    };
    Ok(row)
}

/// The figures with `ids` running.
async fn at(api: &Api, ids: &[SandboxId], n: u32, label: &str) -> anyhow::Result<At> {
    let count = ids.len() as u32;
    let (mut list, mut get, mut exec) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=n {
        let id = ids
            .choose(&mut rand::thread_rng())
            .ok_or_else(|| anyhow::anyhow!("no sandbox"))?;
        let t = std::time::Instant::now();
        let all = api.get_json("/v1/sandboxes").await?;
        let l = t.elapsed();
        let listed: std::collections::HashSet<&str> = all["sandboxes"]
            .as_array()
            .map(|l| l.iter().filter_map(|s| s["id"].as_str()).collect())
            .unwrap_or_default();
        let missing = ids.iter().filter(|i| !listed.contains(i.as_str())).count();
        anyhow::ensure!(
            missing == 0,
            "{missing} of {count} sandboxes were not listed"
        );
        let t = std::time::Instant::now();
        api.get_json(&format!("/v1/sandboxes/{id}")).await?;
        let g = t.elapsed();
        let e = api.exec_true(id).await?;
        if i > 0 {
            list.push(l);
            get.push(g);
            exec.push(e);
        }
        super::progress(&format!("{label} list, get, exec at {count}"), i, n);
    }
    Ok(At {
        sandboxes: count,
        list: Stats::of(&list),
        get: Stats::of(&get),
        exec: Stats::of(&exec),
        server_rss_kib: status_kib("VmRSS"),
        host_available_kib: meminfo_kib("MemAvailable"),
    })
}

fn kib_field(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn meminfo_kib(field: &str) -> u64 {
    kib_field("/proc/meminfo", field)
}

fn status_kib(field: &str) -> u64 {
    kib_field("/proc/self/status", field)
}

pub fn table(rows: &[ScaleRow], failed: &[String]) -> String {
    let mut out = String::new();
    for f in failed {
        out += &format!("scale series failed: {f}\n");
    }
    if rows.is_empty() {
        return out;
    }
    out += &format!(
        "{:<8} {:>10} {:>16} {:>16} {:>16} {:>11} {:>14} {:>14}\n",
        "runtime",
        "sandboxes",
        "list p50",
        "get p50",
        "exec p50",
        "create p50",
        "server/sb",
        "host/sb"
    );
    for r in rows {
        for (at, create, server, host) in [
            (&r.few, String::new(), String::new(), String::new()),
            (
                &r.many,
                ms(r.create_at_many.p50_ms),
                format!("{:.0} KiB", r.server_kib_per_sandbox),
                format!("{:.1} MiB", r.host_kib_per_sandbox / 1024.0),
            ),
        ] {
            out += &format!(
                "{:<8} {:>10} {:>16} {:>16} {:>16} {:>11} {:>14} {:>14}\n",
                r.runtime.to_string(),
                at.sandboxes,
                ms(at.list.p50_ms),
                ms(at.get.p50_ms),
                ms(at.exec.p50_ms),
                create,
                server,
                host
            );
        }
        if let Some(why) = &r.stopped_because {
            out += &format!("  {} of {} asked: {why}\n", r.many.sandboxes, r.asked);
        }
    }
    out += "server/sb: the server's RSS growth per sandbox (target ≤ 1 MiB); host/sb: the host's \
            MemAvailable drop per sandbox (the server's share included)\n";
    out
}
