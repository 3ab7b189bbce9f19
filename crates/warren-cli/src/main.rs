//! `warren`: the server (`serve`), the client verbs, and `bench`. Argument parsing and
//! printing only; the work is in the library crates.
mod agent_image;
mod audit;
mod bench;
mod cp;
mod image;
mod image_build;
mod image_pull;
mod key;
mod kube_args;
mod named;
mod pause;
mod pool;
mod shell;
mod snapshot;
mod team;
mod telemetry;
mod verbs;
mod volume;

// Re-exported at the root so the verbs name them as `crate::client` and `crate::rootfs`.
use warren_cli::{client, rootfs};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;
use warren_api::Runtime;

use crate::client::{default_data_dir, Client};

#[derive(Parser)]
#[command(
    name = "warren",
    version,
    about = "Isolated sandboxes for untrusted code, on your own machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How client verbs reach the server.
#[derive(Args, Clone)]
pub struct ClientOpts {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "WARREN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Data directory of a server on this machine, where its admin.key is found when
    /// WARREN_API_KEY is unset [default: ~/.local/share/warren].
    #[arg(long, global = true, env = "WARREN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// CA certificate (PEM) to trust for an https:// server URL, besides the public roots
    /// [default: the local server's DATA_DIR/tls/ca.pem, when present].
    #[arg(long, global = true, env = "WARREN_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

impl ClientOpts {
    fn client(&self) -> Client {
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        match Client::with_ca(&self.url, &data_dir, self.ca_cert.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: REST API and background workers.
    Serve(Box<ServeArgs>),
    /// Create a sandbox, run a command in it and stream its output; exits with its code.
    Run(verbs::RunArgs),
    /// Run a command in a running sandbox; streams its output, exits with its code.
    Exec(verbs::ExecArgs),
    /// List sandboxes.
    Ls(verbs::LsArgs),
    /// Show one sandbox.
    Inspect(verbs::IdArgs),
    /// Delete sandboxes and everything they hold.
    Rm(verbs::IdsArgs),
    /// Copy files or directories between this machine and a sandbox (ID:/path).
    Cp(cp::CpArgs),
    /// Open an interactive terminal in a sandbox.
    Shell(shell::ShellArgs),
    /// Print a sandbox's log: its main command's output and lifecycle events.
    Logs(verbs::LogsArgs),
    /// Show what ran in a sandbox, like a terminal transcript.
    History(verbs::HistoryArgs),
    /// Change a sandbox's outbound network policy (in force at once).
    Network(verbs::NetworkArgs),
    /// Stop a sandbox, keeping its files.
    Stop(verbs::IdArgs),
    /// Start a stopped sandbox.
    Start(verbs::IdArgs),
    /// Pause a running sandbox: its processes, memory and files written to disk, nothing of
    /// it running; its address and preview URLs are kept.
    Pause(pause::PauseArgs),
    /// Resume a paused sandbox as it was (its image is checked against its receipt first).
    Resume(pause::ResumeArgs),
    /// Fork a sandbox: a new one with a copy of its files and its running processes.
    Fork(pause::ForkArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Manage volumes: named filesystems of a fixed size that outlive sandboxes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Manage API keys (each also in E2B's `e2b_…` spelling, for E2B's SDKs).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Manage teams (the operator's admin key): each team's keys see only its own sandboxes;
    /// quotas and rate limits per team.
    #[command(subcommand)]
    Team(team::TeamCommand),
    /// Read the audit log, newest first: every mutating call, exec, terminal and file write,
    /// with its key, team, target, result and client (an admin key; the operator's reads
    /// every team's).
    Audit(audit::AuditArgs),
    /// Manage snapshots: named copies of a sandbox's files and running processes
    /// (`"snapshot": NAME` at create makes sandboxes from one).
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Manage warm pools: sandboxes kept ready for creates that ask for what they are.
    #[command(subcommand)]
    Pool(pool::PoolCommand),
    /// Measure sandbox create and exec latency against the raw runtimes (needs root).
    Bench(bench::BenchArgs),
    /// The agent's image for `warren serve --backend kubernetes`: `push REF` builds it from
    /// the agent this binary carries and pushes it.
    #[command(subcommand)]
    AgentImage(agent_image::AgentImageCommand),
    /// Kubernetes: `crds` prints the definition of Warren's Sandbox resource.
    #[command(subcommand)]
    Kube(kube_args::KubeCommand),
    /// Serve Warren's primitives as MCP tools on standard input and output, for a local
    /// agent (Claude Desktop, Claude Code, any MCP client): each tool is a call of the
    /// server's API with your key (WARREN_URL, WARREN_API_KEY). Remote agents use the
    /// server's /mcp (streamable HTTP) instead.
    Mcp(McpArgs),
}

#[derive(Args)]
struct McpArgs {
    #[command(flatten)]
    opts: ClientOpts,
}

/// A size in bytes: a number with an optional unit, `k`/`KiB` = 1024, `M`/`MiB`, `G`/`GiB`
/// (`KB`, `MB`, `GB`: powers of 1000).
fn byte_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 10MiB, 512k, 1048576)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown size unit {u:?} (use k, M, G, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// How much of sandboxes' output the server keeps (shared by `serve` and `bench noisy`).
#[derive(Args, Clone)]
pub struct OutputArgs {
    /// Bytes of each stream (stdout, stderr) a plain exec answers with; the rest is counted
    /// (`truncated`, `stdout_dropped`, `stderr_dropped`) and dropped. Streamed execs (SSE)
    /// carry everything.
    #[arg(long, env = "WARREN_EXEC_OUTPUT_LIMIT", default_value = "10MiB", value_parser = byte_size)]
    exec_output_limit: u64,
    /// Log lines kept per sandbox; the oldest go first.
    #[arg(long, env = "WARREN_LOG_KEEP_LINES", default_value_t = 100_000)]
    log_keep_lines: u64,
    /// Bytes of log text kept per sandbox; the oldest lines go first.
    #[arg(long, env = "WARREN_LOG_KEEP_BYTES", default_value = "32MiB", value_parser = byte_size)]
    log_keep_bytes: u64,
    /// Lines per second a sandbox's main command may add to its log (bursts of 10 s' worth);
    /// lines over it are dropped, and an event line says how many.
    #[arg(long, env = "WARREN_LOG_RATE_LINES", default_value_t = 2_000)]
    log_rate_lines: u64,
    /// Bytes per second of a sandbox's main command's output read into its log (bursts of
    /// 10 s' worth); output over it is skipped, and an event line says how much.
    #[arg(long, env = "WARREN_LOG_RATE_BYTES", default_value = "1MiB", value_parser = byte_size)]
    log_rate_bytes: u64,
    /// Unread output a sandbox's host-side log file (DATA_DIR/sandboxes/ID/stdout.log,
    /// stderr.log) may hold before the oldest is skipped; output already read is freed.
    #[arg(long, env = "WARREN_LOG_FILE_LIMIT", default_value = "8MiB", value_parser = byte_size)]
    log_file_limit: u64,
}

impl OutputArgs {
    pub fn limits(&self) -> warren_server::service::OutputLimits {
        warren_server::service::OutputLimits {
            exec_output: usize::try_from(self.exec_output_limit).unwrap_or(usize::MAX),
            logs: warren_server::logs::LogLimits {
                keep_lines: self.log_keep_lines,
                keep_bytes: self.log_keep_bytes,
                rate_lines: self.log_rate_lines,
                rate_bytes: self.log_rate_bytes,
                file_bytes: self.log_file_limit,
            },
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Send the server's spans (each request with its id, each operation, their steps) to
    /// an OpenTelemetry collector at this OTLP/HTTP base URL, e.g. http://127.0.0.1:4318
    /// (they go to /v1/traces). Without it none are sent.
    #[arg(long, env = "WARREN_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The `service.name` the spans carry.
    #[arg(long, env = "WARREN_OTLP_SERVICE_NAME", default_value = "warren")]
    otlp_service_name: String,
    /// Address of the API.
    #[arg(long, env = "WARREN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data directory (database, images, sandboxes, admin.key) [default: ~/.local/share/warren].
    #[arg(long, env = "WARREN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Runtime for sandboxes whose request names none: gvisor or runc.
    #[arg(long, env = "WARREN_DEFAULT_RUNTIME", default_value = "gvisor")]
    default_runtime: Runtime,
    /// Address range for sandboxes (each gets a /30 of it). Give each server on a host its own.
    #[arg(long, env = "WARREN_SUBNET", default_value = "10.77.0.0/16")]
    subnet: Ipv4Net,
    /// Network namespaces (with veth and addresses) kept ready ahead of creates.
    #[arg(long, env = "WARREN_WARM_LEASES", default_value_t = 2)]
    warm_leases: usize,
    /// Set the kernel's rcu_expedited (host-wide): container runtimes wait on RCU grace
    /// periods, which an idle kernel stretches to tens of milliseconds per sandbox start.
    #[arg(long, env = "WARREN_EXPEDITE_RCU")]
    expedite_rcu: bool,
    /// Remount the host's cgroup2 hierarchy with favordynmods (host-wide, until reboot): without
    /// it every sandbox start waits ~10 ms for an RCU grace period to join its cgroup.
    #[arg(long, env = "WARREN_CGROUP_FAVORDYNMODS", default_value_t = true, action = clap::ArgAction::Set)]
    cgroup_favordynmods: bool,
    /// How long command history (GET /v1/sandboxes/{id}/execs) and ended operations
    /// (GET /v1/operations) are kept, e.g. 5d, 12h, 30m.
    #[arg(long, env = "WARREN_HISTORY_RETENTION", default_value = "5d", value_parser = humantime::parse_duration)]
    history_retention: std::time::Duration,
    /// How long the audit log (GET /v1/audit: every mutating call, exec, terminal and file
    /// write, with its key, target, result and client) is kept, e.g. 90d, 1y.
    #[arg(long, env = "WARREN_AUDIT_RETENTION", default_value = "90d", value_parser = humantime::parse_duration)]
    audit_retention: std::time::Duration,
    /// How long a create waits for the image's ready command (E2B's `readyCmd`, set by E2B
    /// template builds) to succeed before it fails, e.g. 2m, 30s.
    #[arg(long, env = "WARREN_READY_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    ready_timeout: std::time::Duration,
    /// Operations (creates, starts, stops, deletes, pauses, resumes, forks, snapshots, pulls)
    /// carried out at once; more wait their turn, deletes and stops first.
    #[arg(long, env = "WARREN_OPERATION_WORKERS", default_value_t = warren_server::DEFAULT_OPERATION_WORKERS)]
    operation_workers: usize,
    /// Name server for sandboxes' /etc/resolv.conf (repeat for several) [default: the host's].
    #[arg(long = "dns", env = "WARREN_DNS", value_delimiter = ',')]
    dns: Vec<std::net::Ipv4Addr>,
    /// Domain of preview URLs: port P of sandbox ID is http://ID-P.DOMAIN (browsers resolve
    /// *.localhost without DNS; for another domain point a wildcard record at this host).
    #[arg(long, env = "WARREN_DOMAIN", default_value = "localhost")]
    domain: String,
    /// Also serve the preview proxy (only) on this address, e.g. 0.0.0.0:80.
    #[arg(long, env = "WARREN_PROXY_LISTEN")]
    proxy_listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM) for both listeners; needs --tls-key.
    #[arg(
        long,
        env = "WARREN_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for --tls-cert.
    #[arg(long, env = "WARREN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve TLS with a certificate for *.DOMAIN signed by a local CA made once in the data
    /// dir (ca.pem there: add it to your trust store or pass it to clients).
    #[arg(long, env = "WARREN_TLS_SELF_SIGNED")]
    tls_self_signed: bool,
    /// Threads serving HTTP (API and preview proxy) on each listener [default: half the cores,
    /// at least 1]. The sandboxes whose ports the proxy serves run on the same cores; more
    /// threads than that made proxying dearer per request where measured.
    #[arg(long, env = "WARREN_HTTP_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    http_workers: Option<u16>,
    /// Registry credentials for image pulls: a Docker config.json (its "auths": "auth",
    /// "username"/"password", "identitytoken" or "registrytoken" per registry host).
    #[arg(long, env = "WARREN_REGISTRY_AUTH")]
    registry_auth: Option<PathBuf>,
    /// A registry (host:port) to pull from over plain HTTP (repeat for several). Registries on
    /// loopback addresses and localhost always are.
    #[arg(
        long = "insecure-registry",
        env = "WARREN_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    insecure_registry: Vec<String>,
    /// The only registries (host[:port]; docker.io for Docker Hub) image pulls may reach,
    /// repeat for several; a pull from any other is refused (403 registry_denied) before any
    /// connection. Without it, any registry.
    #[arg(
        long = "allowed-registry",
        env = "WARREN_ALLOWED_REGISTRY",
        value_delimiter = ','
    )]
    allowed_registry: Vec<String>,
    /// Open files each sandbox process may have (RLIMIT_NOFILE). What a sandbox holds in all
    /// is bounded by its memory limit: each open file is charged to its memory cgroup.
    #[arg(long, env = "WARREN_SANDBOX_NOFILE", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    sandbox_nofile: u64,
    /// Raise the kernel's fs.file-max to its maximum at start (host-wide, as systemd does on
    /// most distributions): a sandbox's open files are charged to its memory limit, and under
    /// the default table a few sandboxes within their memory could fill it for the whole host.
    #[arg(long, env = "WARREN_RAISE_FILE_MAX", default_value_t = true, action = clap::ArgAction::Set)]
    raise_file_max: bool,
    /// Raise the kernel's kernel.pid_max to 4194304 at start (host-wide, as systemd does on
    /// most distributions): a gVisor sandbox holds some thirty threads, and the old default
    /// of 32768 ids ends a host's room near a thousand sandboxes whatever their memory.
    #[arg(long, env = "WARREN_RAISE_PID_MAX", default_value_t = true, action = clap::ArgAction::Set)]
    raise_pid_max: bool,
    /// The runsc binary for gVisor sandboxes [default: the pinned build scripts/install-deps.sh
    /// installs in /opt/warren/runsc/VERSION/, else runsc on PATH].
    #[arg(long, env = "WARREN_RUNSC")]
    runsc: Option<PathBuf>,
    /// gVisor's platform: systrap (no virtualisation needed), ptrace (slower; what runsc
    /// releases before 2023 need) or kvm.
    #[arg(long, env = "WARREN_GVISOR_PLATFORM", default_value = "systrap", value_parser = ["systrap", "ptrace", "kvm"])]
    gvisor_platform: String,
    /// gVisor's network stack: sandbox (gVisor's own netstack on the sandbox's veth: its
    /// packets never reach the host kernel's TCP/IP code) or host (the host kernel's, inside the
    /// sandbox's own namespace: what runsc releases before 2023 need).
    #[arg(long, env = "WARREN_GVISOR_NETWORK", default_value = "sandbox", value_parser = ["sandbox", "host"])]
    gvisor_network: String,
    /// The database: postgres://USER:PASSWORD@HOST:PORT/DB for PostgreSQL, or a SQLite file
    /// [default: DATA_DIR/warren.db]. Migrations run at start on either. Servers that share
    /// a PostgreSQL one serve one API (see --server-name); with an --object-store they resume
    /// each other's paused sandboxes. A SQLite file takes one server at a time.
    #[arg(long, env = "WARREN_DATABASE")]
    database: Option<String>,
    /// Keep pause images in an object store as well as on local disk: s3://BUCKET/PREFIX
    /// (endpoint, region and keys from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY; AWS_ALLOW_HTTP=true for plain HTTP) or file:///DIR. A resume
    /// whose image is not on this host fetches it from there.
    #[arg(long, env = "WARREN_OBJECT_STORE")]
    object_store: Option<String>,
    /// This server's name among servers sharing one --database (each sandbox is the server's
    /// whose host runs it) [default: the host's name and a tag of the data dir].
    #[arg(long, env = "WARREN_SERVER_NAME")]
    server_name: Option<String>,
    /// The URL other servers send clients to for this server's sandboxes (answering 421 with
    /// it) [default: http(s)://LISTEN, the host's name for 0.0.0.0].
    #[arg(long, env = "WARREN_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// How long a server sharing the database may go unseen (it notes itself alive every 3 s)
    /// before another one takes over: its running sandboxes are reported failed with the
    /// reason, e.g. 30s, 2m.
    #[arg(long, env = "WARREN_SERVER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    server_timeout: std::time::Duration,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    kube: kube_args::KubeArgs,
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let tls_on = args.tls_self_signed || args.tls_cert.is_some();
    let scheme = if tls_on { "https" } else { "http" };
    let (domain, proxy_listen) = (args.domain.clone(), args.proxy_listen);
    let self_signed = args.tls_self_signed;
    let server = warren_server::Server::build(warren_server::ServerConfig {
        listen: args.listen,
        data_dir: data_dir.clone(),
        default_runtime: args.default_runtime,
        subnet: args.subnet,
        warm_leases: args.warm_leases,
        expedite_rcu: args.expedite_rcu,
        favor_dynmods: args.cgroup_favordynmods,
        sandbox_nofile: args.sandbox_nofile,
        raise_file_max: args.raise_file_max,
        raise_pid_max: args.raise_pid_max,
        gvisor: warren_local::runtime::GvisorConfig {
            binary: args
                .runsc
                .unwrap_or_else(warren_local::runtime::default_runsc),
            platform: args.gvisor_platform,
            network: args.gvisor_network,
        },
        history_retention: args.history_retention,
        audit_retention: args.audit_retention,
        ready_timeout: args.ready_timeout,
        operation_workers: args.operation_workers,
        database: args.database,
        object_store: args.object_store,
        server_name: args.server_name,
        advertise_url: args.advertise_url,
        server_timeout: args.server_timeout,
        dns: args.dns,
        pull: warren_local::pull::PullConfig {
            auth_file: args.registry_auth,
            insecure: args.insecure_registry,
            allowed: args.allowed_registry,
        },
        domain: args.domain,
        proxy_listen: args.proxy_listen,
        tls: match (args.tls_cert, args.tls_key, args.tls_self_signed) {
            (Some(cert), Some(key), _) => Some(warren_server::TlsSource::Files { cert, key }),
            (_, _, true) => Some(warren_server::TlsSource::SelfSigned),
            _ => None,
        },
        http_workers: args.http_workers.map(usize::from),
        output: args.output.limits(),
        kubernetes: args.kube.config()?,
    })
    .await?;
    if let Some(key) = &server.new_admin_key {
        eprintln!("Created the admin API key (shown once; also saved to {}/admin.key, mode 0600):\n  {key}", data_dir.display());
    }
    eprintln!(
        "warren listening on {scheme}://{} (data dir {})",
        args.listen,
        data_dir.display()
    );
    eprintln!(
        "web console: {scheme}://{}/ui/ (sign in with an API key)",
        args.listen
    );
    let preview_port = proxy_listen.unwrap_or(args.listen).port();
    match proxy_listen {
        Some(addr) => eprintln!(
            "preview proxy on {scheme}://{addr}: {scheme}://<sandbox-id>-<port>.{domain}:{preview_port}/"
        ),
        None => eprintln!(
            "preview URLs: {scheme}://<sandbox-id>-<port>.{domain}:{preview_port}/ (and /proxy/<sandbox-id>/<port>/)"
        ),
    }
    if self_signed {
        eprintln!(
            "TLS: certificate for *.{domain} signed by the local CA {} (trust it, or curl --cacert it)",
            warren_server::tls::ca_path(&data_dir).display()
        );
    }
    server.serve().await
}

// The proxy and the API allocate per request (headers, bodies, futures); mimalloc's
// thread-local free lists cost less than glibc's malloc under that churn.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let otlp = match &cli.command {
        Command::Serve(a) => a.otlp_endpoint.clone().map(|endpoint| telemetry::Otlp {
            endpoint,
            service_name: a.otlp_service_name.clone(),
        }),
        _ => None,
    };
    // Kept to the end of main: dropping it sends the spans still queued.
    let _telemetry = match telemetry::init(otlp) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve(*a).await.map(|_| 0),
            Command::Run(a) => verbs::run(a).await,
            Command::Exec(a) => verbs::exec(a).await,
            Command::Ls(a) => verbs::ls(a).await.map(|_| 0),
            Command::Inspect(a) => verbs::inspect(a).await.map(|_| 0),
            Command::Rm(a) => verbs::rm(a).await.map(|_| 0),
            Command::History(a) => verbs::history(a).await.map(|_| 0),
            Command::Logs(a) => verbs::logs(a).await.map(|_| 0),
            Command::Shell(a) => shell::run(a).await,
            Command::Cp(a) => cp::run(a).await.map(|_| 0),
            Command::Network(a) => verbs::network(a).await.map(|_| 0),
            Command::Stop(a) => verbs::lifecycle(a, "stop").await.map(|_| 0),
            Command::Start(a) => verbs::lifecycle(a, "start").await.map(|_| 0),
            Command::Pause(a) => pause::pause(a).await.map(|_| 0),
            Command::Resume(a) => pause::resume(a).await.map(|_| 0),
            Command::Fork(a) => pause::fork(a).await.map(|_| 0),
            Command::Image(c) => image::run(c).await.map(|_| 0),
            Command::Volume(c) => volume::run(c).await.map(|_| 0),
            Command::Key(c) => key::run(c).await.map(|_| 0),
            Command::Team(c) => team::run(c).await.map(|_| 0),
            Command::Audit(a) => audit::run(a).await.map(|_| 0),
            Command::Snapshot(c) => snapshot::run(c).await.map(|_| 0),
            Command::Pool(c) => pool::run(c).await.map(|_| 0),
            Command::Bench(a) => bench::run(a).await.map(|_| 0),
            Command::AgentImage(c) => agent_image::run(c).await.map(|_| 0),
            Command::Kube(c) => c.run().map(|_| 0),
            Command::Mcp(a) => {
                let client = a.opts.client();
                let api = warren_mcp::Api::http(
                    client.base(),
                    client.http(),
                    client.key().map(str::to_owned),
                );
                warren_mcp::serve_stdio(api)
                    .await
                    .map_err(|e| anyhow::anyhow!("serving MCP on stdio: {e}"))
                    .map(|_| 0)
            }
        }
    });
    // A terminal session leaves a blocking read of stdin behind; dropping the runtime would
    // wait for it (for the next key press). Nothing else is left to finish.
    rt.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(byte_size("10MiB"), Ok(10 << 20));
        assert_eq!(byte_size("512k"), Ok(512 << 10));
        assert_eq!(byte_size("3 GB"), Ok(3_000_000_000));
        assert_eq!(byte_size("42"), Ok(42));
        assert!(byte_size("ten").is_err());
        assert!(byte_size("1XB").is_err());
    }

    #[test]
    fn output_defaults_are_the_servers() {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            o: OutputArgs,
        }
        let t = T::parse_from(["t"]);
        assert_eq!(
            t.o.limits(),
            warren_server::service::OutputLimits::default()
        );
    }
}
