//! `warren bench control`: the control plane's figures (issue #16) in one run. Per database
//! (SQLite, and PostgreSQL when given one): create and exec p50, a burst of concurrent creates
//! (p50/p99, and every answer that was not 201: only clean 429s are acceptable), and the
//! throughput of `GET /v1/sandboxes/{id}` under wrk. Then, on SQLite, many idle busybox
//! sandboxes per runtime (`control_scale`).
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use warren_api::{CreateSandbox, Runtime, Sandbox};

use super::control_scale::{self, ScaleRow};
use super::report::{ms, Stats};
use super::server::{self, Api, InProcess, IMAGE};

#[derive(Args)]
pub struct ControlBenchArgs {
    /// PostgreSQL to set beside SQLite: the URL of a role that may create databases (the
    /// bench makes one of its own and drops it after), e.g. what scripts/postgres-up.sh
    /// prints. Without it only SQLite is measured.
    #[arg(long, env = "WARREN_BENCH_POSTGRES")]
    postgres: Option<String>,
    /// Timed creates, execs, gets and lists per series, after one untimed warm-up.
    #[arg(long, short = 'n', default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Creates sent at once in the burst.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrent: u32,
    /// Seconds wrk asks for `GET /v1/sandboxes/{id}`.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    throughput_secs: u64,
    #[command(flatten)]
    scale: control_scale::ScaleArgs,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    keep: bool,
}

/// One database's figures.
#[derive(Debug, Serialize)]
pub struct DatabaseRow {
    /// `sqlite` or `postgres`.
    database: &'static str,
    create: Stats,
    exec: Stats,
    /// The creates of the burst that got 201.
    burst: Stats,
    /// Creates in the burst.
    burst_size: u32,
    /// Answers of the burst that were 429 (a quota or rate limit: acceptable).
    burst_429: u32,
    /// Other failures of the burst, with the first one's words.
    burst_errors: u32,
    burst_first_error: Option<String>,
    /// `GET /v1/sandboxes/{id}` per second under wrk, and its p50/p99 there.
    get_rps: f64,
    get_p50_ms: f64,
    get_p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ControlReport {
    cores: usize,
    iterations: u32,
    databases: Vec<DatabaseRow>,
    scale: Vec<ScaleRow>,
    /// Scale series that failed, with why.
    scale_failed: Vec<String>,
}

pub async fn run(a: ControlBenchArgs) -> anyhow::Result<()> {
    let scratch = super::begin("control")?;
    let dir = scratch.path().to_owned();
    let mut slot: Option<InProcess> = None;
    let mut made_db = None;
    let result = super::unless_interrupted(measure(&a, &dir, &mut slot, &mut made_db)).await;
    eprintln!("warren bench control: cleaning up");
    let clean = InProcess::shutdown_any(slot).await;
    if let Some((admin, name)) = made_db {
        drop_database(&admin, &name).await;
    }
    super::finish_scratch(scratch, a.keep, clean);
    super::print_report(&result?, a.json, table)
}

async fn measure(
    a: &ControlBenchArgs,
    dir: &Path,
    slot: &mut Option<InProcess>,
    made_db: &mut Option<(String, String)>,
) -> anyhow::Result<ControlReport> {
    let tar = super::busybox_tar(dir)?;
    let mut databases = Vec::new();
    let mut places: Vec<(&'static str, Option<String>)> = vec![("sqlite", None)];
    if let Some(admin) = &a.postgres {
        let name = format!("warren_bench_{}", std::process::id());
        let url = database_url(admin, &name)?;
        // Noted before it is made: an interrupted run still drops it.
        *made_db = Some((admin.clone(), name.clone()));
        create_database(admin, &name).await?;
        places.push(("postgres", Some(url)));
    }
    for (database, url) in places {
        let sub = dir.join(database);
        std::fs::create_dir_all(&sub)?;
        let (api, _) = server::start_on(&sub, url, slot).await?;
        api.import(&tar).await?;
        databases.push(database_row(&api, database, a).await?);
        if let Some(s) = slot.take() {
            anyhow::ensure!(
                s.shutdown().await,
                "the scratch server left sandboxes behind"
            );
        }
    }
    let sub = dir.join("scale");
    std::fs::create_dir_all(&sub)?;
    let (api, _) = server::start_on(&sub, None, slot).await?;
    api.import(&tar).await?;
    let (scale, scale_failed) = control_scale::measure(&api, &a.scale, a.iterations).await;
    Ok(ControlReport {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        iterations: a.iterations,
        databases,
        scale,
        scale_failed,
    })
}

/// An idle busybox sandbox under runc that lives until deleted (the default 300 s would end
/// the first of a thousand before the last is made).
pub(super) fn runc_busybox() -> CreateSandbox {
    CreateSandbox {
        image: Some(IMAGE.to_owned()),
        runtime: Some(Runtime::Runc),
        timeout_s: Some(0),
        ..Default::default()
    }
}

async fn database_row(
    api: &Api,
    database: &'static str,
    a: &ControlBenchArgs,
) -> anyhow::Result<DatabaseRow> {
    let label = format!("{database}:");
    let mut creates = Vec::new();
    for i in 0..=a.iterations {
        let (took, sb) = api.create_with(runc_busybox()).await?;
        api.delete(&sb.id).await?;
        if i > 0 {
            creates.push(took);
        }
        super::progress(&format!("{label} create"), i, a.iterations);
    }
    let (_, sb) = api.create_with(runc_busybox()).await?;
    let mut execs = Vec::new();
    for i in 0..=a.iterations {
        let took = api.exec_true(&sb.id).await?;
        if i > 0 {
            execs.push(took);
        }
        super::progress(&format!("{label} exec"), i, a.iterations);
    }
    eprintln!("{label} {} creates at once", a.concurrent);
    let burst = burst(api, a.concurrent).await?;
    eprintln!("{label} GET /v1/sandboxes/{{id}} under wrk");
    let url = format!("http://{}/v1/sandboxes/{}", api.addr, sb.id);
    let auth = [format!("Authorization: Bearer {}", api.key)];
    let w =
        super::load::wrk_with(&url, &auth, 32, 2, Duration::from_secs(a.throughput_secs)).await?;
    api.delete(&sb.id).await?;
    Ok(DatabaseRow {
        database,
        create: Stats::of(&creates),
        exec: Stats::of(&execs),
        burst: Stats::of(&burst.created),
        burst_size: a.concurrent,
        burst_429: burst.too_many,
        burst_errors: burst.errors.len() as u32,
        burst_first_error: burst.errors.into_iter().next(),
        get_rps: w.rps,
        get_p50_ms: w.p50_ms,
        get_p99_ms: w.p99_ms,
    })
}

struct Burst {
    created: Vec<Duration>,
    too_many: u32,
    errors: Vec<String>,
}

/// `n` creates sent at once; each one's round trip, then every sandbox made is deleted.
async fn burst(api: &Api, n: u32) -> anyhow::Result<Burst> {
    let calls = (0..n).map(|_| async {
        let t = Instant::now();
        let r = api
            .req(Method::POST, "/v1/sandboxes")
            .json(&runc_busybox())
            .send()
            .await;
        let took = t.elapsed();
        match r {
            Ok(r) if r.status() == StatusCode::CREATED => match r.json::<Sandbox>().await {
                Ok(sb) if sb.state == warren_api::SandboxState::Running => Ok((took, sb)),
                Ok(sb) => Err((Some(sb.id.clone()), format!("{} is {}", sb.id, sb.state))),
                Err(e) => Err((None, format!("decoding: {e}"))),
            },
            Ok(r) => Err((
                None,
                format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            )),
            Err(e) => Err((None, format!("no answer: {e}"))),
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut out = Burst {
        created: Vec::new(),
        too_many: 0,
        errors: Vec::new(),
    };
    let mut made = Vec::new();
    for r in results {
        match r {
            Ok((took, sb)) => {
                out.created.push(took);
                made.push(sb.id);
            }
            Err((id, e)) => {
                made.extend(id);
                if e.starts_with("429") {
                    out.too_many += 1;
                } else {
                    out.errors.push(e);
                }
            }
        }
    }
    for id in made {
        api.delete(&id).await?;
    }
    Ok(out)
}

/// `admin` with its database replaced by `name` (its query, such as `?sslmode=`, kept).
fn database_url(admin: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let (server, _) = base
        .rsplit_once('/')
        .filter(|(s, _)| s.contains("://") && !s.ends_with('/'))
        .context("--postgres must name a database (postgres://USER:PASSWORD@HOST:PORT/postgres)")?;
    Ok(match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    })
}

async fn create_database(admin: &str, name: &str) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(admin)
        .await
        .with_context(|| format!("connecting to {admin}"))?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&pool)
        .await
        .context("dropping an old bench database")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .with_context(|| format!("creating database {name} (the role needs CREATEDB)"))?;
    Ok(())
}

async fn drop_database(admin: &str, name: &str) {
    let dropped = match sqlx::PgPool::connect(admin).await {
        Ok(pool) => sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = dropped {
        eprintln!("warren bench control: dropping database {name}: {e}");
    }
}

fn table(r: &ControlReport) -> String {
    let mut out = format!(
        "warren bench control: {} cores, {} timed samples per series\n\n",
        r.cores, r.iterations
    );
    out += &format!(
        "{:<10} {:>11} {:>11} {:>22} {:>10} {:>12} {:>14}\n",
        "database",
        "create p50",
        "exec p50",
        "burst p50/p99",
        "burst 429",
        "burst errors",
        "GET id req/s"
    );
    for d in &r.databases {
        out += &format!(
            "{:<10} {:>11} {:>11} {:>22} {:>10} {:>12} {:>14.0}\n",
            d.database,
            ms(d.create.p50_ms),
            ms(d.exec.p50_ms),
            format!(
                "{} / {} ({}×)",
                ms(d.burst.p50_ms),
                ms(d.burst.p99_ms),
                d.burst_size
            ),
            d.burst_429,
            d.burst_errors,
            d.get_rps
        );
        if let Some(e) = &d.burst_first_error {
            out += &format!("  first burst error: {e}\n");
        }
    }
    out += "\n";
    out += &control_scale::table(&r.scale, &r.scale_failed);
    out
}
