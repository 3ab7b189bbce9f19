//! `warren image build-base`: the `base` image, Debian bookworm from Debian's own packages
//! (debootstrap minbase plus what code written for E2B's `base` template expects: bash, python3
//! as `python` with pip, git, Node.js with npm, curl, ca-certificates, sudo) with a user `user`
//! (uid 1000, passwordless sudo). The tar is cached per recipe under `/var/cache/warren`, so a
//! machine builds it once and later builds (and the tests) take seconds, offline.
use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, IsTerminal};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use reqwest::Method;
use warren_api::Image;

use crate::client::Client;

mod tree;

pub use tree::pack_tree;
use tree::{remove_tree, setup_tree, WorkDir};

/// The Debian release the image is built from.
pub const SUITE: &str = "bookworm";
/// Packages on top of minbase.
pub const PACKAGES: [&str; 5] = ["bash", "python3", "ca-certificates", "sudo", "curl"];
/// Installed by apt inside the tree after debootstrap (whose own resolver cannot settle npm's
/// virtual packages): what code written for E2B's `base` template expects besides the above.
pub const APT_PACKAGES: [&str; 7] = [
    "python-is-python3",
    "python3-pip",
    "git",
    "nodejs",
    "npm",
    "iproute2",
    "procps",
];
/// Part of the cache key: bump it whenever what is done to the tree after debootstrap changes,
/// so machines holding an older tar build a new one.
const SETUP_VERSION: u32 = 4;
/// Where built tars are kept.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/warren";
const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";

/// `warren image build-base`.
#[derive(clap::Args, Debug, Clone)]
pub struct BuildBaseArgs {
    /// Name to import the image as.
    #[arg(long, default_value = "base")]
    pub name: String,
    /// Debian mirror [default: the first URIs: of /etc/apt/sources.list.d/debian.sources or
    /// /etc/apt/sources.list, else http://deb.debian.org/debian].
    #[arg(long)]
    pub mirror: Option<String>,
    /// Build again even when a cached tar of this recipe exists.
    #[arg(long)]
    pub rebuild: bool,
    /// Only write the image tar to this path; do not import it.
    #[arg(long, value_name = "TAR")]
    pub output: Option<PathBuf>,
    /// Directory of the cached tar.
    #[arg(long, env = "WARREN_CACHE_DIR", default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
}

/// How to get the base tar.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Debian mirror; `None`: the host's (see [`host_mirror`]).
    pub mirror: Option<String>,
    /// Ignore a cached tar.
    pub rebuild: bool,
    /// Where the tar is cached.
    pub cache_dir: PathBuf,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            mirror: None,
            rebuild: false,
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
        }
    }
}

/// A base tar ready to import.
#[derive(Debug, Clone)]
pub struct BaseTar {
    /// The cached tar.
    pub path: PathBuf,
    /// Whether this call built it (rather than finding it cached).
    pub built: bool,
    /// Time this call took.
    pub elapsed: Duration,
}

/// The cached base tar, built first if absent. Blocks (for about a minute when building); needs
/// root only to build.
pub fn cached_base_tar(opts: &BuildOptions) -> anyhow::Result<PathBuf> {
    Ok(ensure_base_tar(opts)?.path)
}

/// What the cache key covers: a tar built from another recipe is never reused.
fn recipe() -> String {
    format!(
        "suite={SUITE};variant=minbase;include={};apt={};user=user:1000:/home/user:bash;sudo=nopasswd;setup={SETUP_VERSION}",
        PACKAGES.join(","),
        APT_PACKAGES.join(",")
    )
}

/// A short hash of the recipe. FNV-1a, because `DefaultHasher`'s output may change between
/// Rust releases and the name must stay the same on a machine.
pub fn recipe_hash() -> String {
    let h = recipe().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")[..12].to_owned()
}

/// Where the tar of the current recipe is cached under `cache_dir`.
pub fn cache_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("base-{}.tar", recipe_hash()))
}

/// [`cached_base_tar`], saying whether it built and how long it took.
pub fn ensure_base_tar(opts: &BuildOptions) -> anyhow::Result<BaseTar> {
    let start = Instant::now();
    let path = cache_path(&opts.cache_dir);
    let done = |built| BaseTar {
        path: path.clone(),
        built,
        elapsed: start.elapsed(),
    };
    if !opts.rebuild && path.is_file() {
        return Ok(done(false));
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("building the base image needs root (debootstrap, chroot, files owned by other users): run it with sudo");
    }
    fs::create_dir_all(&opts.cache_dir)
        .with_context(|| format!("creating {}", opts.cache_dir.display()))?;
    let mut progress = Progress::new();
    let hash = recipe_hash();
    let (_lock, waited) = lock_cache(&opts.cache_dir, &hash, &progress)?;
    // Whoever held the lock has just built it: with --rebuild too, once is enough.
    if path.is_file() && (!opts.rebuild || waited) {
        return Ok(done(false));
    }
    clean_leftovers(&opts.cache_dir, &hash)?;
    let mirror = opts.mirror.clone().unwrap_or_else(host_mirror);
    let debootstrap = find_program("debootstrap")
        .ok_or_else(|| anyhow!("debootstrap not found: apt-get install debootstrap"))?;
    check_mirror(&mirror)?;

    let pid = std::process::id();
    let work = WorkDir(opts.cache_dir.join(format!("base-{hash}.build-{pid}")));
    let root = work.0.join("rootfs");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    progress.phase(&format!(
        "debootstrap {SUITE} from {mirror} (about a minute)"
    ));
    run_debootstrap(&debootstrap, &root, &mirror, &mut progress)?;
    progress.phase(&format!(
        "apt-get install {} (about a minute)",
        APT_PACKAGES.join(" ")
    ));
    tree::apt_install(&root, &APT_PACKAGES)?;
    progress.phase("adding user `user` (uid 1000, passwordless sudo), cleaning caches");
    setup_tree(&root)?;
    progress.phase("packing the tar");
    let tmp = opts.cache_dir.join(format!("base-{hash}.tar.tmp-{pid}"));
    let packed = pack_tree(&root, &tmp).and_then(|()| {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
    });
    if let Err(e) = packed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    drop(work);
    progress.finish();
    Ok(done(true))
}

/// The mirror apt uses on this host: the first `URIs:` of `debian.sources` (or `deb` line of
/// `sources.list`) that is not the security archive, else deb.debian.org.
pub fn host_mirror() -> String {
    let mut found: Vec<String> = Vec::new();
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list.d/debian.sources") {
        found.extend(
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("URIs:"))
                .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned)),
        );
    }
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("deb") {
                continue;
            }
            // Skip `[signed-by=... arch=...]`, which may span several words.
            let mut in_options = false;
            for w in words {
                if in_options || w.starts_with('[') {
                    in_options = !w.ends_with(']');
                    continue;
                }
                found.push(w.to_owned());
                break;
            }
        }
    }
    found
        .iter()
        .find(|u| !u.contains("security"))
        .or(found.first())
        .cloned()
        .unwrap_or_else(|| FALLBACK_MIRROR.to_owned())
}

/// Fails early, with a clear message, when an http(s) mirror cannot be reached (debootstrap's
/// own message is a bare "Failed getting release file").
fn check_mirror(mirror: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(mirror).with_context(|| format!("bad mirror URL {mirror}"))?;
    let proxied = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !matches!(url.scheme(), "http" | "https") || proxied {
        return Ok(()); // file:, copy: and proxies are debootstrap's to reach
    }
    let addrs = url
        .socket_addrs(|| None)
        .with_context(|| format!("cannot resolve the Debian mirror {mirror}: pass --mirror"))?;
    let mut last = None;
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    bail!(
        "cannot reach the Debian mirror {mirror} ({}): pass --mirror with one this machine reaches",
        last.map(|e| e.to_string())
            .unwrap_or_else(|| "no address".to_owned())
    )
}

/// `name` on PATH or in the sbin directories (absent from PATH under plain `sudo` on some hosts).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// An exclusive lock per recipe, so concurrent builders (parallel test binaries) build once.
/// flock dies with its process: an interrupted build leaves no stale lock.
fn lock_cache(
    dir: &Path,
    hash: &str,
    progress: &Progress,
) -> anyhow::Result<(Flock<fs::File>, bool)> {
    let path = dir.join(format!("base-{hash}.lock"));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok((l, false)),
        Err((file, e)) if e == Errno::EWOULDBLOCK => {
            progress.phase("another build of the base image is running; waiting for it");
            let l = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| anyhow!("locking {}: {e}", path.display()))?;
            Ok((l, true))
        }
        Err((_, e)) => bail!("locking {}: {e}", path.display()),
    }
}

/// Removes what an interrupted build of this recipe left (we hold its lock, so none is running).
fn clean_leftovers(dir: &Path, hash: &str) -> anyhow::Result<()> {
    let build = format!("base-{hash}.build-");
    let tmp = format!("base-{hash}.tar.tmp-");
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&build) {
            remove_tree(&entry.path())?;
        } else if name.starts_with(&tmp) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn run_debootstrap(
    program: &Path,
    root: &Path,
    mirror: &str,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let mut child = Command::new(program)
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(root)
        .arg(mirror)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out: Box<dyn std::io::Read + Send> = match child.stdout.take() {
        Some(o) => Box::new(o),
        None => Box::new(std::io::empty()),
    };
    let err: Box<dyn std::io::Read + Send> = match child.stderr.take() {
        Some(e) => Box::new(e),
        None => Box::new(std::io::empty()),
    };
    for stream in [out, err] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut tail: VecDeque<String> = VecDeque::new();
    for line in rx {
        progress.debootstrap(&line);
        if tail.len() == 30 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().context("waiting for debootstrap")?;
    if status.success() {
        return Ok(());
    }
    let mut text: Vec<String> = tail.into_iter().collect();
    // debootstrap points at its log inside the tree, which is about to be deleted.
    if let Ok(log) = fs::read_to_string(root.join("debootstrap/debootstrap.log")) {
        let lines: Vec<&str> = log.lines().collect();
        text.push("--- debootstrap.log (end) ---".to_owned());
        text.extend(
            lines[lines.len().saturating_sub(20)..]
                .iter()
                .map(|l| l.to_string()),
        );
    }
    let joined = text.join("\n");
    let hint = if joined.contains("Failed getting release file")
        || joined.contains("Couldn't download")
        || joined.contains("Failed to resolve")
    {
        format!("\nthe mirror {mirror} is unreachable or lacks {SUITE}: pass --mirror")
    } else {
        String::new()
    };
    bail!("debootstrap failed ({status}):\n{joined}{hint}")
}

/// Uploads a tar as image `name` (`PUT /v1/images/{name}`, streamed), like `warren image import`.
pub async fn import_tar(client: &Client, name: &str, tar: &Path) -> anyhow::Result<Image> {
    let file = tokio::fs::File::open(tar)
        .await
        .with_context(|| format!("opening {}", tar.display()))?;
    let size = file.metadata().await?.len();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    client
        .json(
            client
                .request(Method::PUT, &format!("/v1/images/{name}"))
                .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
                .header(reqwest::header::CONTENT_LENGTH, size)
                .body(body),
        )
        .await
        .with_context(|| format!("importing {} as {name}", tar.display()))
}

/// `warren image build-base`: builds (or finds cached) the base tar, then imports it with the
/// client `client` makes, or only writes it to `--output`. `json`: the result as JSON on stdout.
pub async fn build_base(
    args: BuildBaseArgs,
    json: bool,
    client: impl FnOnce() -> Client,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let opts = BuildOptions {
        mirror: args.mirror.clone(),
        rebuild: args.rebuild,
        cache_dir: args.cache_dir.clone(),
    };
    let base = tokio::task::spawn_blocking(move || ensure_base_tar(&opts))
        .await
        .context("the build task failed")??;
    let tar_size = fs::metadata(&base.path)?.len();
    let mb = |n: u64| n as f64 / 1e6;
    eprintln!(
        "warren: base tar {} ({:.1} MB, {})",
        base.path.display(),
        mb(tar_size),
        if base.built {
            format!("built in {:.1} s", base.elapsed.as_secs_f64())
        } else {
            "cached".to_owned()
        }
    );
    let mut result = serde_json::json!({
        "tar": base.path,
        "tar_size": tar_size,
        "cached": !base.built,
        "build_s": base.elapsed.as_secs_f64(),
    });
    if let Some(out) = &args.output {
        fs::copy(&base.path, out).with_context(|| format!("writing {}", out.display()))?;
        result["output"] = serde_json::json!(out);
        if !json {
            println!("{}", out.display());
        }
    } else {
        let client = client();
        eprintln!("warren: importing as {} ...", args.name);
        let image = import_tar(&client, &args.name, &base.path).await?;
        if !json {
            println!("{} {} ({:.1} MB)", image.name, image.digest, mb(image.size));
        }
        result["name"] = serde_json::json!(image.name);
        result["digest"] = serde_json::json!(image.digest);
        result["size"] = serde_json::json!(image.size);
    }
    let total = start.elapsed().as_secs_f64();
    result["total_s"] = serde_json::json!(total);
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        eprintln!("warren: done in {total:.1} s");
    }
    Ok(())
}

/// Build progress on stderr: a spinner showing debootstrap's current line on a terminal, and a
/// line per phase (not per package) above it or, without a terminal, alone.
struct Progress {
    bar: Option<ProgressBar>,
    last_step: &'static str,
    start: Instant,
}

/// debootstrap's per-package verbs and the step each belongs to: a line per step, not per package.
fn package_step(verb: &str) -> Option<&'static str> {
    match verb {
        "Retrieving" | "Validating" => Some("downloading"),
        "Extracting" => Some("extracting"),
        "Unpacking" => Some("unpacking"),
        "Configuring" => Some("configuring"),
        _ => None,
    }
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let pb = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed:>3}] {wide_msg}") {
                pb.set_style(style);
            }
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Progress {
            bar,
            last_step: "",
            start: Instant::now(),
        }
    }

    fn phase(&self, msg: &str) {
        let line = format!(
            "build-base: [{:>5.1}s] {msg}",
            self.start.elapsed().as_secs_f64()
        );
        match &self.bar {
            Some(pb) => {
                pb.println(&line);
                pb.set_message(msg.to_owned());
            }
            None => eprintln!("{line}"),
        }
    }

    fn debootstrap(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let body = line.strip_prefix("I: ").unwrap_or(line);
        if let Some(pb) = &self.bar {
            pb.set_message(body.to_owned());
        }
        let (verb, rest) = body.split_once(' ').unwrap_or((body, ""));
        let rest = rest.trim_end_matches("...");
        match package_step(verb) {
            Some(step) if !rest.ends_with("packages") => {
                if step != self.last_step {
                    self.last_step = step;
                    self.phase(&format!("debootstrap: {step} {rest} ..."));
                }
            }
            _ => {
                self.last_step = "";
                self.phase(&format!("debootstrap: {body}"));
            }
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
