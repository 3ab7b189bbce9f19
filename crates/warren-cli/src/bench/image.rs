//! `warren bench image`: a 5-layer image of ~200 MB (a busybox root and four layers of
//! incompressible files) pushed with oci-client to Debian's `docker-registry` on 127.0.0.1,
//! pulled through Warren's API (then again, with every layer present), then 20 sandboxes made
//! from it, with the disk each one used right after its create: an overlay copies nothing.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use warren_api::{CreateSandbox, Image, Runtime};
use warren_local::images::disk_usage;

use super::report::Stats;
use super::server::{self, InProcess};
use crate::rootfs;

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Args)]
pub struct ImageBenchArgs {
    /// Sandboxes created from the pulled image.
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    sandboxes: u32,
    /// Size of the image's four data layers together, MB (plus a ~1 MB busybox layer).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(4..))]
    size_mb: u64,
    /// Runtime of the sandboxes.
    #[arg(long, default_value = "runc")]
    runtime: Runtime,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Serialize)]
struct ImageReport {
    layers: usize,
    image_mb: f64,
    pull_s: f64,
    pull_mb_per_s: f64,
    repull_ms: f64,
    stored_mb: f64,
    runtime: Runtime,
    create: Stats,
    sandboxes: usize,
    disk_per_sandbox_kb_max: f64,
    disk_per_sandbox_kb_mean: f64,
}

/// Debian's registry on a free port of 127.0.0.1, storing under the scratch directory.
struct Registry {
    child: Child,
    host: String,
}

impl Registry {
    fn start(dir: &Path) -> anyhow::Result<Registry> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let storage = dir.join("registry");
        std::fs::create_dir_all(&storage)?;
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let registry = Registry {
            child,
            host: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on 127.0.0.1:{port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gzip layer holding `tar` and its digest before compression (the config's diff id).
fn gzip_layer(tar: &[u8]) -> anyhow::Result<(ImageLayer, String)> {
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(tar)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar)?;
    let layer = ImageLayer::new(gz.finish()?, LAYER_MEDIA_TYPE.to_owned(), None);
    Ok((layer, diff_id))
}

/// A layer of `files` files of `file_size` random bytes each under `/data/<n>/`.
fn random_layer(n: usize, files: usize, file_size: usize) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::with_capacity(files * (file_size + 1024)));
    let mut data = vec![0u8; file_size];
    for f in 0..files {
        rand::thread_rng().fill_bytes(&mut data);
        let mut h = tar::Header::new_gnu();
        h.set_size(file_size as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("data/{n}/file-{f}"), &data[..])?;
    }
    Ok(b.into_inner()?)
}

/// Builds the image and pushes it; returns its reference and size as pushed.
async fn push_image(dir: &Path, registry: &str, size_mb: u64) -> anyhow::Result<(String, u64)> {
    let tree = dir.join("busybox");
    rootfs::busybox_tree(&tree)?;
    let base_tar = dir.join("busybox.tar");
    rootfs::tar_dir(&tree, &base_tar)?;
    let mut tars = vec![std::fs::read(&base_tar)?];
    let per_layer = usize::try_from(size_mb * 1_000_000 / 4).unwrap_or(usize::MAX);
    let file_size = 4 << 20;
    for n in 1..=4 {
        tars.push(random_layer(n, per_layer.div_ceil(file_size), file_size)?);
    }
    let built = tokio::task::spawn_blocking(move || {
        tars.iter()
            .map(|t| gzip_layer(t))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    let (layers, diff_ids): (Vec<_>, Vec<_>) = built.into_iter().unzip();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let size = layers.iter().map(|l| l.data.len() as u64).sum();
    let reference = format!("{registry}/bench/big:v1");
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.to_owned()]),
        ..Default::default()
    });
    client
        .push(
            &reference.parse()?,
            &layers,
            Config::oci_v1(serde_json::to_vec(&config)?, None),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .context("pushing the bench image to the local registry")?;
    Ok((reference, size))
}

pub async fn run(a: ImageBenchArgs) -> anyhow::Result<()> {
    let scratch = super::begin("image")?;
    let dir = scratch.path().to_owned();
    let mut server: Option<InProcess> = None;
    let result = super::unless_interrupted(measure(&a, &dir, &mut server)).await;
    eprintln!("warren bench image: cleaning up");
    let clean = InProcess::shutdown_any(server).await;
    super::finish_scratch(scratch, a.keep, clean);
    let report = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn measure(
    a: &ImageBenchArgs,
    dir: &Path,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<ImageReport> {
    let registry = Registry::start(dir)?;
    eprintln!(
        "warren bench image: building and pushing a 5-layer image of ~{} MB to {}",
        a.size_mb + 1,
        registry.host
    );
    let (reference, size) = push_image(dir, &registry.host, a.size_mb).await?;
    let (api, data_dir) = server::start(dir, a.runtime, None, slot).await?;

    eprintln!("warren bench image: pulling {reference}");
    let t = Instant::now();
    let image: Image = api.pull(&reference).await?;
    let pull = t.elapsed();
    let t = Instant::now();
    api.pull(&reference).await?;
    let repull = t.elapsed();
    let stored: u64 = image
        .layers
        .iter()
        .map(|l| {
            disk_usage(
                &data_dir
                    .join("images/layers")
                    .join(l.trim_start_matches("sha256:")),
            )
        })
        .sum();

    eprintln!(
        "warren bench image: creating {} sandboxes ({})",
        a.sandboxes, a.runtime
    );
    let mut times = Vec::new();
    let mut disk = Vec::new();
    for _ in 0..a.sandboxes {
        let (took, sb) = api
            .create_with(CreateSandbox {
                image: Some(reference.clone()),
                runtime: Some(a.runtime),
                timeout_s: Some(0),
                ..Default::default()
            })
            .await?;
        times.push(took);
        let sandbox_dir: PathBuf = data_dir.join("sandboxes").join(sb.id.as_str());
        // The sandbox's own writes: its upper directory and the files Warren keeps beside it
        // (bundle, logs), not the mounted overlay, which would count the image.
        let used: u64 = std::fs::read_dir(&sandbox_dir)
            .with_context(|| format!("listing {}", sandbox_dir.display()))?
            .flatten()
            .filter(|e| e.file_name() != "rootfs")
            .map(|e| disk_usage(&e.path()))
            .sum();
        disk.push(used as f64 / 1024.0);
    }
    drop(registry);
    Ok(ImageReport {
        layers: image.layers.len(),
        image_mb: size as f64 / 1e6,
        pull_s: pull.as_secs_f64(),
        pull_mb_per_s: size as f64 / 1e6 / pull.as_secs_f64(),
        repull_ms: repull.as_secs_f64() * 1e3,
        stored_mb: stored as f64 / 1e6,
        runtime: a.runtime,
        create: Stats::of(&times),
        sandboxes: disk.len(),
        disk_per_sandbox_kb_max: disk.iter().copied().fold(0.0, f64::max),
        disk_per_sandbox_kb_mean: disk.iter().sum::<f64>() / disk.len().max(1) as f64,
    })
}

fn print_table(r: &ImageReport) {
    println!();
    println!("{:<44} {:>14}", "measure", "value");
    println!("{:-<44} {:->14}", "", "");
    let rows = [
        (
            format!("pull {} layers, {:.1} MB (gzip)", r.layers, r.image_mb),
            format!("{:.2} s", r.pull_s),
        ),
        (
            "  throughput".to_owned(),
            format!("{:.0} MB/s", r.pull_mb_per_s),
        ),
        (
            "pull again (every layer present)".to_owned(),
            format!("{:.1} ms", r.repull_ms),
        ),
        (
            "layer store for the image (unpacked)".to_owned(),
            format!("{:.1} MB", r.stored_mb),
        ),
        (
            format!("create p50 ({}, {} sandboxes)", r.runtime, r.sandboxes),
            format!("{:.1} ms", r.create.p50_ms),
        ),
        (
            format!("create p95 ({})", r.runtime),
            format!("{:.1} ms", r.create.p95_ms),
        ),
        (
            "disk per sandbox after create, max".to_owned(),
            format!("{:.0} KiB", r.disk_per_sandbox_kb_max),
        ),
        (
            "disk per sandbox after create, mean".to_owned(),
            format!("{:.0} KiB", r.disk_per_sandbox_kb_mean),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<44} {v:>14}");
    }
}
