//! `warren image`: import, pull, build, build-base, tag, ls, rm, prune.
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::Method;
use warren_api::{Image, ImageList, TagImage};
use warren_cli::base_image::{self, BuildBaseArgs};

use crate::rootfs;
use crate::ClientOpts;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import an image from a root-filesystem directory or tar.
    Import {
        /// Name to give the image.
        name: String,
        /// A directory holding the root filesystem, or a tar of one.
        #[arg(required_unless_present = "busybox")]
        source: Option<PathBuf>,
        /// Build the image from this host's static busybox instead (apt-get install busybox-static).
        #[arg(long, conflicts_with = "source")]
        busybox: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Build the `base` image with debootstrap and import it (root; cached after one build).
    ///
    /// Debian bookworm (minbase) with bash, python3, ca-certificates, sudo and curl, and a user
    /// `user` (uid 1000, home /home/user, passwordless sudo). The tar is cached per recipe in
    /// the cache dir: later builds take seconds and need no network.
    BuildBase {
        #[command(flatten)]
        args: BuildBaseArgs,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Pull an image from a registry, with a progress bar per layer.
    ///
    /// REFERENCE is `host/repo:tag`, `host/repo@sha256:…`, or a Docker Hub short form
    /// (`alpine`). Layers already here are not fetched again; the server's --registry-auth
    /// holds credentials.
    Pull {
        /// The image reference.
        reference: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Build an image from a Dockerfile, each RUN step in a gVisor sandbox.
    ///
    /// Takes FROM (a Warren image or a registry reference), RUN, COPY [--chown], ENV, WORKDIR,
    /// USER, CMD, ENTRYPOINT and EXPOSE. Each step's result is cached as Docker's build cache
    /// is: an unchanged step over an unchanged image is not run again. The context directory
    /// is sent (minus `.dockerignore`'s patterns) only when the Dockerfile copies files.
    Build {
        #[command(flatten)]
        args: crate::image_build::BuildArgs,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Remove the layers no image and no sandbox uses.
    Prune {
        /// Forget the build cache and uploaded build files first, so their layers go too
        /// (the next build runs every step).
        #[arg(long)]
        build_cache: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Give an image another name: the same layers and config, and the same registry
    /// source for a pulled one (so a backend whose nodes pull images, Kubernetes, runs it by
    /// the new name: `warren image tag registry.example.com/e2b/base:1 base`).
    Tag {
        /// An image here (`warren image ls`).
        source: String,
        /// The new name (your team's; without a registry host unless yours is the operator's
        /// team).
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List images.
    Ls {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Delete images no sandbox uses.
    Rm {
        /// Image names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

pub async fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Import {
            name,
            source,
            busybox,
            opts,
        } => import(name, source, busybox, opts).await,
        ImageCommand::BuildBase { args, opts } => {
            base_image::build_base(args, opts.json, || opts.client()).await
        }
        ImageCommand::Pull { reference, opts } => crate::image_pull::pull(reference, opts).await,
        ImageCommand::Build { args, opts } => crate::image_build::build(args, opts).await,
        ImageCommand::Prune { build_cache, opts } => {
            crate::image_pull::prune(build_cache, opts).await
        }
        ImageCommand::Tag { source, name, opts } => tag(source, name, opts).await,
        ImageCommand::Ls { opts } => ls(opts).await,
        ImageCommand::Rm { names, opts } => rm(names, opts).await,
    }
}

async fn import(
    name: String,
    source: Option<PathBuf>,
    busybox: bool,
    opts: ClientOpts,
) -> anyhow::Result<()> {
    let client = opts.client();
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let tar_path = match source {
        Some(p) if p.is_file() => p,
        Some(p) if p.is_dir() => {
            let out = scratch.path().join("rootfs.tar");
            if !opts.json {
                eprintln!("warren: packing {} ...", p.display());
            }
            rootfs::tar_dir(&p, &out)?;
            out
        }
        Some(p) => bail!("{} is neither a directory nor a file", p.display()),
        None if busybox => {
            let tree = scratch.path().join("rootfs");
            rootfs::busybox_tree(&tree)?;
            let out = scratch.path().join("rootfs.tar");
            rootfs::tar_dir(&tree, &out)?;
            out
        }
        None => bail!("give a directory or tar, or --busybox"),
    };
    if !opts.json {
        let size = std::fs::metadata(&tar_path).map(|m| m.len()).unwrap_or(0);
        eprintln!("warren: uploading {:.1} MB ...", size as f64 / 1e6);
    }
    let image: Image = base_image::import_tar(&client, &name, &tar_path).await?;
    print_image(&image, opts.json)
}

async fn tag(source: String, name: String, opts: ClientOpts) -> anyhow::Result<()> {
    let client = opts.client();
    let body = TagImage {
        source: source.clone(),
        name,
    };
    let image: Image = client
        .json(client.request(Method::POST, "/v1/images/tag").json(&body))
        .await
        .with_context(|| format!("tagging image {source}"))?;
    print_image(&image, opts.json)
}

fn print_image(image: &Image, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(image)?);
    } else {
        println!(
            "{} {} ({:.1} MB)",
            image.name,
            image.digest,
            image.size as f64 / 1e6
        );
    }
    Ok(())
}

async fn ls(opts: ClientOpts) -> anyhow::Result<()> {
    let client = opts.client();
    let list: ImageList = client
        .json(client.request(Method::GET, "/v1/images"))
        .await?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let width = list
        .images
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0)
        .clamp(24, 64);
    println!(
        "{:<width$} {:<20} {:>10}  CREATED",
        "NAME", "DIGEST", "SIZE"
    );
    for i in list.images {
        println!(
            "{:<width$} {:<20} {:>8.1}MB  {}",
            i.name,
            &i.digest[..i.digest.len().min(19)],
            i.size as f64 / 1e6,
            i.created_at.format("%Y-%m-%d %H:%M")
        );
    }
    Ok(())
}

async fn rm(names: Vec<String>, opts: ClientOpts) -> anyhow::Result<()> {
    let client = opts.client();
    for n in &names {
        client
            .send(client.request(Method::DELETE, &format!("/v1/images/{n}")))
            .await
            .with_context(|| format!("deleting image {n}"))?;
        if opts.json {
            println!("{}", serde_json::json!({"name": n, "deleted": true}));
        } else {
            println!("{n}");
        }
    }
    Ok(())
}
