//! `warren cp`: files and directories between this machine and a sandbox. Files stream through
//! the files API; directories travel as a tar unpacked by `tar` inside the sandbox.
mod extract;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use warren_api::ExecResult;

use crate::client::Client;
use crate::rootfs;
use crate::ClientOpts;

#[derive(Args)]
pub struct CpArgs {
    /// Source: a local path, or ID:PATH in a sandbox.
    src: String,
    /// Destination: a local path, or ID:PATH in a sandbox.
    dest: String,
    #[command(flatten)]
    opts: ClientOpts,
}

/// `ID:/path` → (id, path); anything else is local.
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (id, path) = spec.split_once(':')?;
    (id.len() == 16 && path.starts_with('/')).then_some((id, path))
}

fn scratch_name() -> String {
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("/tmp/.warren-cp-{n:x}.tar")
}

async fn sh(client: &Client, id: &str, script: &str, args: &[&str]) -> anyhow::Result<ExecResult> {
    let mut cmd = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        script.to_owned(),
        "sh".to_owned(),
    ];
    cmd.extend(args.iter().map(|a| a.to_string()));
    client
        .json(
            client
                .request(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"cmd": cmd, "label": "warren cp"})),
        )
        .await
}

async fn upload(client: &Client, id: &str, local: &Path, path: &str) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("opening {}", local.display()))?;
    let len = file.metadata().await?.len();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    client
        .send(
            client
                .request(Method::PUT, &format!("/v1/sandboxes/{id}/files"))
                .query(&[("path", path)])
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(body),
        )
        .await?;
    Ok(())
}

async fn download(client: &Client, id: &str, path: &str, local: &Path) -> anyhow::Result<()> {
    let resp = client
        .send(
            client
                .request(Method::GET, &format!("/v1/sandboxes/{id}/files"))
                .query(&[("path", path)]),
        )
        .await?;
    let mut out = tokio::fs::File::create(local)
        .await
        .with_context(|| format!("creating {}", local.display()))?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk.context("reading the download")?)
            .await?;
    }
    out.flush().await?;
    Ok(())
}

pub async fn run(a: CpArgs) -> anyhow::Result<()> {
    let client = a.opts.client();
    match (remote(&a.src), remote(&a.dest)) {
        (None, Some((id, path))) => to_sandbox(&client, Path::new(&a.src), id, path).await,
        (Some((id, path)), None) => from_sandbox(&client, id, path, Path::new(&a.dest)).await,
        (Some(_), Some(_)) => {
            bail!("copy between two sandboxes is not supported: go through this machine")
        }
        (None, None) => bail!("one side must be ID:/absolute/path in a sandbox"),
    }
}

async fn to_sandbox(client: &Client, local: &Path, id: &str, path: &str) -> anyhow::Result<()> {
    let meta = std::fs::metadata(local).with_context(|| format!("{}", local.display()))?;
    if meta.is_file() {
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = if path.ends_with('/') {
            format!("{path}{name}")
        } else {
            path.to_owned()
        };
        return upload(client, id, local, &target).await;
    }
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let tar = scratch.path().join("cp.tar");
    rootfs::tar_dir(local, &tar)?;
    let remote_tar = scratch_name();
    upload(client, id, &tar, &remote_tar).await?;
    let r = sh(
        client,
        id,
        "mkdir -p \"$1\" && tar -xf \"$2\" -C \"$1\"; s=$?; rm -f \"$2\"; exit $s",
        &[path, &remote_tar],
    )
    .await?;
    if r.exit_code != 0 {
        bail!(
            "unpacking in the sandbox failed (is tar in the image?): {}",
            r.stderr.trim()
        );
    }
    Ok(())
}

async fn from_sandbox(client: &Client, id: &str, path: &str, local: &Path) -> anyhow::Result<()> {
    let r = sh(client, id, "test -d \"$1\"", &[path]).await?;
    if r.exit_code != 0 {
        let target: PathBuf = if local.is_dir() {
            local.join(Path::new(path).file_name().unwrap_or_default())
        } else {
            local.to_owned()
        };
        return download(client, id, path, &target).await;
    }
    let remote_tar = scratch_name();
    let r = sh(
        client,
        id,
        "tar -cf \"$2\" -C \"$1\" .",
        &[path, &remote_tar],
    )
    .await?;
    if r.exit_code != 0 {
        bail!(
            "packing in the sandbox failed (is tar in the image?): {}",
            r.stderr.trim()
        );
    }
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let tar = scratch.path().join("cp.tar");
    let fetched = download(client, id, &remote_tar, &tar).await;
    let _ = sh(client, id, "rm -f \"$1\"", &[&remote_tar]).await;
    fetched?;
    // The tar was made by whatever runs in the sandbox: unpack it as untrusted input.
    let file = std::io::BufReader::new(std::fs::File::open(&tar)?);
    let skipped = extract::extract(file, local)?;
    for link in skipped {
        eprintln!(
            "warren cp: skipped symlink {} -> {} (it points outside the copy)",
            local.join(&link.path).display(),
            link.target.display()
        );
    }
    Ok(())
}
