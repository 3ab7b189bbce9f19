//! `warren bench store`: pause, resume and snapshot of a gVisor sandbox holding N MiB of
//! touched memory with the images on local disk only, then with them sent to an object store
//! (`--object-store`, reached through the usual `AWS_*` variables), in one run; and what a
//! snapshot takes in each. The resume "from the store" first removes the sandbox's image and
//! disk from this host, as another server sharing the store would find it.
use std::path::Path;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use warren_api::SandboxId;

use super::report::{self, Stats};
use super::server::{self, Api, InProcess};

#[derive(Args)]
pub struct StoreBenchArgs {
    /// The object store: s3://BUCKET/PREFIX (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP as for `warren serve`) or file:///DIR.
    #[arg(long)]
    object_store: String,
    #[command(flatten)]
    a: super::state::SizedArgs,
}

/// One size in one place.
#[derive(Debug, Serialize)]
struct PlaceRow {
    memory_mib: u32,
    /// `local` or the store's URL.
    place: String,
    pause: Stats,
    resume: Stats,
    snapshot: Stats,
    /// What a snapshot takes there: disk blocks of its directory (local) or the bytes sent
    /// (the memory image and the disk's data extents), bytes.
    snapshot_bytes: u64,
}

#[derive(Debug, Serialize)]
struct StoreReport {
    cores: usize,
    iterations: u32,
    rows: Vec<PlaceRow>,
}

pub async fn run(args: StoreBenchArgs) -> anyhow::Result<()> {
    let a = &args.a;
    let scratch = super::begin("store")?;
    let dir = scratch.path().to_owned();
    let mut slot: Option<InProcess> = None;
    let result = super::unless_interrupted(measure(&args.object_store, a, &dir, &mut slot)).await;
    eprintln!("warren bench store: cleaning up");
    let clean = InProcess::shutdown_any(slot).await;
    super::finish_scratch(scratch, a.keep, clean);
    super::print_report(&result?, a.json, table)
}

async fn measure(
    object_store: &str,
    a: &super::state::SizedArgs,
    dir: &Path,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<StoreReport> {
    let tar = super::busybox_tar(dir)?;
    let mut rows = Vec::new();
    for store in [None, Some(object_store)] {
        let place = store.unwrap_or("local").to_owned();
        let sub = dir.join(if store.is_some() { "store" } else { "local" });
        std::fs::create_dir_all(&sub)?;
        let (api, data_dir) = server::start_with_store(&sub, store, slot).await?;
        api.import(&tar).await?;
        for &mib in &a.sizes_mib {
            rows.push(place_row(&api, &data_dir, &place, mib, a.iterations).await?);
        }
        if let Some(s) = slot.take() {
            anyhow::ensure!(
                s.shutdown().await,
                "the scratch server left sandboxes behind"
            );
        }
    }
    Ok(StoreReport {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        iterations: a.iterations,
        rows,
    })
}

async fn place_row(
    api: &Api,
    data_dir: &Path,
    place: &str,
    mib: u32,
    n: u32,
) -> anyhow::Result<PlaceRow> {
    let offsite = place != "local";
    let sb = super::state::holding(api, warren_api::Runtime::Gvisor, mib).await?;
    let label = format!("{place} {mib} MiB");
    let (mut pauses, mut resumes, mut snapshots) = (Vec::new(), Vec::new(), Vec::new());
    let mut snapshot_bytes = 0;
    for i in 0..=n {
        let (p, _) = api.lifecycle(&sb.id, "pause").await?;
        if offsite {
            forget_local_image(data_dir, &sb.id)?;
        }
        let (r, _) = api.lifecycle(&sb.id, "resume").await?;
        let name = format!("bench-{mib}-{i}");
        let t = std::time::Instant::now();
        let snap = api
            .post_json(
                &format!("/v1/sandboxes/{}/snapshots", sb.id),
                &serde_json::json!({ "name": name }),
            )
            .await?;
        let s = t.elapsed();
        snapshot_bytes = if offsite {
            let receipt = &snap["receipt"];
            anyhow::ensure!(
                receipt["stored"].is_string(),
                "the snapshot was not sent to the store: {snap}"
            );
            receipt["memory"]["bytes"].as_u64().unwrap_or(0)
                + receipt["filesystem"]["bytes"].as_u64().unwrap_or(0)
        } else {
            tree_blocks(&data_dir.join("snapshots").join(&name))
        };
        api.delete_path(&format!("/v1/snapshots/{name}")).await?;
        if i > 0 {
            pauses.push(p);
            resumes.push(r);
            snapshots.push(s);
            super::progress(&label, i, n);
        }
    }
    // Whole after it all.
    super::state::still_holding(api, &sb, mib).await?;
    api.delete(&sb.id).await?;
    Ok(PlaceRow {
        memory_mib: mib,
        place: place.to_owned(),
        pause: Stats::of(&pauses),
        resume: Stats::of(&resumes),
        snapshot: Stats::of(&snapshots),
        snapshot_bytes,
    })
}

/// Disk blocks of every file under `dir`, bytes.
fn tree_blocks(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.path(), e.metadata().ok()?)))
        .map(|(path, m)| {
            if m.is_dir() {
                tree_blocks(&path)
            } else {
                m.blocks() * 512
            }
        })
        .sum()
}

/// Removes a paused sandbox's image and disk from this host: its resume must fetch them.
fn forget_local_image(data_dir: &Path, id: &SandboxId) -> anyhow::Result<()> {
    let sdir = data_dir.join("sandboxes").join(id.as_str());
    std::fs::remove_dir_all(sdir.join("paused")).context("removing the local pause image")?;
    std::fs::remove_file(sdir.join("disk.img")).context("removing the local disk")?;
    Ok(())
}

fn table(r: &StoreReport) -> String {
    let mut s = format!(
        "warren bench store — gVisor sandbox holding N MiB of random bytes, {} timed cycles, {} \
         cores\n",
        r.iterations, r.cores
    );
    let line = |c: [&str; 9]| {
        format!(
            "{:<7} {:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
        )
    };
    s.push_str(&line([
        "memory",
        "images",
        "pause p50",
        "pause p95",
        "resume p50",
        "resume p95",
        "snap p50",
        "snap p95",
        "snapshot",
    ]));
    for row in &r.rows {
        s.push_str(&line([
            &format!("{} MiB", row.memory_mib),
            &row.place,
            &report::ms(row.pause.p50_ms),
            &report::ms(row.pause.p95_ms),
            &report::ms(row.resume.p50_ms),
            &report::ms(row.resume.p95_ms),
            &report::ms(row.snapshot.p50_ms),
            &report::ms(row.snapshot.p95_ms),
            &format!("{:.1} MiB", row.snapshot_bytes as f64 / f64::from(1 << 20)),
        ]));
    }
    s.push_str(
        "\npause: POST /pause (checkpoint, hashing, and with a store the upload). resume: POST \
         /resume; with a store the sandbox's image and disk are first removed from this host, \
         so it is fetched. snap: POST /snapshots of the running sandbox (it is held paused \
         for the copy; with a store the copy is sent). snapshot: its disk blocks locally, the \
         bytes sent to the store (memory image and the disk's data).\n",
    );
    s
}
