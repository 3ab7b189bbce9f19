//! `warren image build`: a Dockerfile and its context sent to the server's builder, its steps
//! and their output printed as they happen (with `--json`, the build's events as JSON lines).
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use warren_api::build::{parse_dockerfile, BuildEvent, Instruction};

use crate::ClientOpts;

/// What `warren image build` takes.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// The build context: the directory COPY sources are relative to.
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// The Dockerfile [default: CONTEXT/Dockerfile].
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Name of the image to record (replacing one of that name).
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub name: String,
    /// Run every step again, reusing nothing from earlier builds.
    #[arg(long)]
    pub no_cache: bool,
    /// CPUs of the sandboxes RUN steps run in [default: the server's sandbox default].
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory (MiB) of the sandboxes RUN steps run in [default: the server's default].
    #[arg(long)]
    pub memory_mb: Option<u64>,
}

/// `.dockerignore`'s patterns (`#` comments, blank lines skipped; `!` exceptions unsupported).
fn ignore_patterns(context: &Path) -> anyhow::Result<Vec<glob::Pattern>> {
    let Ok(text) = fs::read_to_string(context.join(".dockerignore")) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('!') {
            bail!(".dockerignore: exceptions (`{line}`) are not supported");
        }
        let p = line
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/');
        out.push(glob::Pattern::new(p).with_context(|| format!(".dockerignore: {line:?}"))?);
    }
    Ok(out)
}

/// Tars the context directory (links kept as links, owners as numbers) into `out`.
fn tar_context(context: &Path, out: &Path) -> anyhow::Result<u64> {
    let ignored = ignore_patterns(context)?;
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    b.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    let mut count = 0u64;
    while let Some(rel) = stack.pop() {
        let dir = context.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = rel.join(e.file_name());
            if ignored.iter().any(|p| p.matches_path(&path)) {
                continue;
            }
            let ft = e.file_type()?;
            b.append_path_with_name(e.path(), &path)
                .with_context(|| format!("packing {}", path.display()))?;
            count += 1;
            if ft.is_dir() {
                stack.push(path);
            }
        }
    }
    b.into_inner()?.flush()?;
    Ok(count)
}

pub async fn build(args: BuildArgs, opts: ClientOpts) -> anyhow::Result<()> {
    let client = opts.client();
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    // Parsed here too, so a bad line is named before anything is sent.
    let steps = parse_dockerfile(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let copies = steps.iter().any(|s| matches!(s, Instruction::Copy { .. }));
    let mut form = Form::new().text("dockerfile", text);
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    if copies {
        if !args.context.is_dir() {
            bail!(
                "the build context {} is not a directory",
                args.context.display()
            );
        }
        let tar = scratch.path().join("context.tar");
        let n = tar_context(&args.context, &tar)?;
        let size = fs::metadata(&tar)?.len();
        if !opts.json {
            eprintln!(
                "warren: sending the build context ({n} entries, {:.1} MB)",
                size as f64 / 1e6
            );
        }
        let body = tokio::fs::File::open(&tar).await?;
        let part = Part::stream_with_length(reqwest::Body::from(body), size)
            .file_name("context.tar")
            .mime_str("application/x-tar")?;
        form = form.part("context", part);
    }
    let mut query = vec![("name", args.name.clone())];
    if args.no_cache {
        query.push(("no_cache", "true".into()));
    }
    if let Some(c) = args.cpu {
        query.push(("cpu", c.to_string()));
    }
    if let Some(m) = args.memory_mb {
        query.push(("memory_mb", m.to_string()));
    }
    let rb = client
        .request(Method::POST, "/v1/images/build")
        .query(&query)
        .multipart(form);
    let resp = client.send(rb).await?;
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut outcome = None;
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.context("reading the build's events")?);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let event: BuildEvent = serde_json::from_slice(&line[..nl])
                .context("the server sent an event this CLI does not know")?;
            if opts.json {
                println!("{}", String::from_utf8_lossy(&line[..nl]));
            } else {
                show(&event);
            }
            if matches!(event, BuildEvent::Done { .. } | BuildEvent::Error { .. }) {
                outcome = Some(event);
            }
        }
    }
    match outcome {
        Some(BuildEvent::Done { image }) => {
            if !opts.json {
                println!("{} {}", image.name, image.digest);
            }
            Ok(())
        }
        Some(BuildEvent::Error { step, error }) => match step {
            Some(s) => bail!("step {s} failed: {}", error.message),
            None => bail!("{}", error.message),
        },
        _ => {
            bail!("the build's event stream ended early (follow it with GET /v1/images/builds/ID)")
        }
    }
}

fn show(event: &BuildEvent) {
    match event {
        BuildEvent::Step {
            index,
            total,
            text,
            cached,
        } => {
            let cached = if *cached { " (cached)" } else { "" };
            eprintln!("Step {index}/{total} : {text}{cached}");
        }
        BuildEvent::Log { message, .. } => eprintln!("  {message}"),
        BuildEvent::Done { .. } | BuildEvent::Error { .. } => {}
    }
}
