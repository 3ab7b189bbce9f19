//! Sandbox verbs: run, exec, ls, inspect, rm, stop, start.
use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use reqwest::Method;
use warren_api::{
    CreateSandbox, Egress, ExecKind, ExecList, ExecRequest, LogLine, LogList, LogStream, Runtime,
    Sandbox, SandboxList,
};

use crate::client::{Client, ExecChunk};
use crate::ClientOpts;

fn parse_env(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--env {kv:?}: expected NAME=VALUE"))
        })
        .collect()
}

#[derive(Args)]
pub struct RunArgs {
    /// Image name or registry reference (pulled if it is not here) [default: base].
    image: Option<String>,
    /// When to pull the image: missing, always or never [default: missing].
    #[arg(long, value_parser = ["missing", "always", "never"])]
    pull: Option<String>,
    /// Runtime: gvisor or runc [default: the server's].
    #[arg(long)]
    runtime: Option<Runtime>,
    /// CPU cores.
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory limit in MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Process limit.
    #[arg(long)]
    pids: Option<u64>,
    /// Environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Delete the sandbox when the command ends.
    #[arg(long)]
    rm: bool,
    /// Sandbox lifetime in seconds, after which the server deletes it (0 = no limit)
    /// [default: the server's, 300].
    #[arg(long)]
    lifetime: Option<u64>,
    /// Command timeout in seconds (0 = none).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Outbound network: allow (through NAT), deny, or a comma-separated list of IPv4
    /// networks and domain names to allow only (e.g. 10.1.0.0/16,192.0.2.7,pypi.org), where
    /// `!NET` denies a network instead and leaves the rest open (`!0.0.0.0/0` closes it)
    /// [default: allow].
    #[arg(long, value_parser = parse_egress)]
    egress: Option<Egress>,
    /// Mount a volume: NAME:/path, or NAME:/path:ro (repeatable; `warren volume create` makes
    /// one).
    #[arg(long = "volume", short = 'v', value_parser = crate::volume::parse_mount)]
    volumes: Vec<warren_api::VolumeMount>,
    /// Make the sandbox from this snapshot (its image, runtime and limits are the snapshot's;
    /// with memory, its processes already run).
    #[arg(long, conflicts_with_all = ["runtime", "cpu", "memory_mb", "pids", "env", "volumes"])]
    snapshot: Option<String>,
    /// Open the sandbox's ports through the preview proxy to anyone (default: only with its
    /// traffic token or an API key).
    #[arg(long)]
    public: bool,
    #[command(flatten)]
    opts: ClientOpts,
    /// Command and arguments [default: sh].
    #[arg(last = true)]
    cmd: Vec<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Sandbox id.
    id: String,
    /// Environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    cwd: Option<String>,
    /// Timeout in seconds (0 = none).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    #[command(flatten)]
    opts: ClientOpts,
    /// Command and arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only sandboxes in this state.
    #[arg(long)]
    state: Option<String>,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Args)]
pub struct IdArgs {
    /// Sandbox id.
    id: String,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Args)]
pub struct IdsArgs {
    /// Sandbox ids.
    #[arg(required = true)]
    ids: Vec<String>,
    #[command(flatten)]
    opts: ClientOpts,
}

/// Streams an exec to this terminal; returns its exit code.
async fn stream_exec(
    client: &Client,
    id: &str,
    req: &ExecRequest,
    json: bool,
) -> anyhow::Result<i32> {
    let mut stream = Box::pin(client.exec_stream(id, req).await?);
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(chunk) = stream.next().await {
        match chunk? {
            ExecChunk::Stdout(s) if !json => {
                out.write_all(s.as_bytes())?;
                out.flush()?;
            }
            ExecChunk::Stderr(s) if !json => {
                err.write_all(s.as_bytes())?;
                err.flush()?;
            }
            ExecChunk::Exit(exit) => {
                if json {
                    println!("{}", serde_json::to_string(&exit)?);
                }
                if exit.timed_out {
                    eprintln!(
                        "warren: command timed out after {} ms and was killed",
                        exit.duration_ms
                    );
                }
                return Ok(exit.exit_code);
            }
            _ => {}
        }
    }
    bail!("the output stream ended without an exit status")
}

pub async fn run(a: RunArgs) -> anyhow::Result<i32> {
    let client = a.opts.client();
    let req = CreateSandbox {
        image: a.image.clone(),
        pull: a
            .pull
            .as_deref()
            .map(|p| serde_json::from_value(serde_json::Value::String(p.to_owned())))
            .transpose()
            .context("--pull")?,
        runtime: a.runtime,
        cpu: a.cpu,
        memory_mb: a.memory_mb,
        pids: a.pids,
        env: parse_env(&a.env)?,
        timeout_s: a.lifetime,
        egress: a.egress.clone(),
        public: a.public.then_some(true),
        volumes: a.volumes.clone(),
        snapshot: a.snapshot.clone(),
        ..Default::default()
    };
    let sandbox: Sandbox = client
        .json(client.request(Method::POST, "/v1/sandboxes").json(&req))
        .await?;
    if !a.opts.json {
        eprintln!(
            "warren: sandbox {} running ({})",
            sandbox.id, sandbox.runtime
        );
    }
    let cmd = if a.cmd.is_empty() {
        vec!["sh".to_owned()]
    } else {
        a.cmd
    };
    let exec = ExecRequest {
        cmd,
        timeout_s: Some(a.timeout),
        ..Default::default()
    };
    let code = stream_exec(&client, sandbox.id.as_str(), &exec, a.opts.json).await;
    if a.rm {
        client
            .send(client.request(Method::DELETE, &format!("/v1/sandboxes/{}", sandbox.id)))
            .await?;
    }
    code
}

pub async fn exec(a: ExecArgs) -> anyhow::Result<i32> {
    let client = a.opts.client();
    let req = ExecRequest {
        cmd: a.cmd,
        env: parse_env(&a.env)?,
        cwd: a.cwd,
        timeout_s: Some(a.timeout),
        ..Default::default()
    };
    stream_exec(&client, &a.id, &req, a.opts.json).await
}

fn age(t: chrono::DateTime<chrono::Utc>) -> String {
    let s = (chrono::Utc::now() - t).num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub async fn ls(a: LsArgs) -> anyhow::Result<()> {
    let client = a.opts.client();
    let mut rb = client.request(Method::GET, "/v1/sandboxes");
    if let Some(s) = &a.state {
        rb = rb.query(&[("state", s)]);
    }
    let list: SandboxList = client.json(rb).await?;
    if a.opts.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<18} {:<12} {:<8} {:<16} {:<15} {:>5}",
        "ID", "STATE", "RUNTIME", "IMAGE", "IP", "AGE"
    );
    for s in list.sandboxes {
        println!(
            "{:<18} {:<12} {:<8} {:<16} {:<15} {:>5}",
            s.id,
            s.state,
            s.runtime,
            s.image,
            s.ip.as_deref().unwrap_or("-"),
            age(s.created_at)
        );
    }
    Ok(())
}

pub async fn inspect(a: IdArgs) -> anyhow::Result<()> {
    let client = a.opts.client();
    let s: Sandbox = client
        .json(client.request(Method::GET, &format!("/v1/sandboxes/{}", a.id)))
        .await?;
    if a.opts.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("id:        {}", s.id);
    println!("state:     {}", s.state);
    if let Some(e) = &s.error {
        println!("error:     {e}");
    }
    println!("image:     {} ({})", s.image, s.image_digest);
    println!("runtime:   {}", s.runtime);
    println!(
        "limits:    cpu {} · memory {} MiB · pids {}",
        s.cpu, s.memory_mb, s.pids
    );
    println!("ip:        {}", s.ip.as_deref().unwrap_or("-"));
    println!("created:   {} ({} ago)", s.created_at, age(s.created_at));
    match s.expires_at {
        Some(t) => println!("expires:   {t}"),
        None => println!("expires:   never"),
    }
    if !s.cmd.is_empty() {
        println!("cmd:       {}", s.cmd.join(" "));
    }
    for (k, v) in &s.metadata {
        println!("metadata:  {k}={v}");
    }
    println!("egress:    {}", s.egress);
    println!(
        "access:    {}",
        if s.public {
            "public"
        } else {
            "private (traffic token or API key)"
        }
    );
    if let Some(t) = &s.traffic_token {
        println!("token:     {t}");
    }
    for p in &s.ports {
        match &p.url {
            Some(url) => println!("port:      {} on {} → {url}", p.port, p.address),
            None => println!(
                "port:      {} on {} (loopback only: not reachable through the proxy)",
                p.port, p.address
            ),
        }
    }
    Ok(())
}

/// `allow`, `deny`, or networks and domain names separated by commas (only those), where an
/// entry after `!` is denied instead (then what is not named stays open; `!0.0.0.0/0` closes
/// it), e.g. `!198.18.0.0/15` or `api.example.com,!0.0.0.0/0`.
pub fn parse_egress(s: &str) -> Result<Egress, String> {
    match s.trim() {
        "allow" => Ok(Egress::Allow),
        "deny" => Ok(Egress::Deny),
        "" => Err("expected allow, deny or a list of networks and names".into()),
        list => {
            let entries: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .collect();
            let deny: Vec<String> = entries
                .iter()
                .filter_map(|e| e.strip_prefix('!'))
                .map(|e| e.trim().to_owned())
                .collect();
            let allow: Vec<String> = entries
                .iter()
                .filter(|e| !e.starts_with('!'))
                .map(|e| (*e).to_owned())
                .collect();
            Ok(if deny.is_empty() {
                Egress::Only(allow)
            } else {
                Egress::Rules { allow, deny }
            })
        }
    }
}

#[derive(Args)]
pub struct NetworkArgs {
    /// Sandbox id.
    id: String,
    /// The new outbound policy: allow, deny, or a comma-separated list of IPv4 networks and
    /// domain names to allow only, `!NET` entries denied instead (see `warren run --egress`).
    /// In force at once, without a restart.
    #[arg(value_parser = parse_egress)]
    egress: Egress,
    #[command(flatten)]
    opts: ClientOpts,
}

pub async fn network(a: NetworkArgs) -> anyhow::Result<()> {
    let client = a.opts.client();
    let s: Sandbox = client
        .json(
            client
                .request(Method::PUT, &format!("/v1/sandboxes/{}/network", a.id))
                .json(&warren_api::SetNetwork { egress: a.egress }),
        )
        .await?;
    if a.opts.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("{}: egress {}", s.id, s.egress);
    }
    Ok(())
}

pub async fn rm(a: IdsArgs) -> anyhow::Result<()> {
    let client = a.opts.client();
    let mut failed = 0;
    for id in &a.ids {
        match client
            .send(client.request(Method::DELETE, &format!("/v1/sandboxes/{id}")))
            .await
        {
            Ok(_) if a.opts.json => println!("{}", serde_json::json!({"id": id, "deleted": true})),
            Ok(_) => println!("{id}"),
            Err(e) => {
                failed += 1;
                eprintln!("error: {id}: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} sandbox(es) not deleted", a.ids.len());
    }
    Ok(())
}

pub async fn lifecycle(a: IdArgs, verb: &str) -> anyhow::Result<()> {
    let path = format!("/v1/sandboxes/{}/{verb}", a.id);
    crate::named::post(&a.opts, &path, None::<&()>, |s: &Sandbox| {
        format!("{} {}", s.id, s.state)
    })
    .await
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Sandbox id.
    id: String,
    /// How many of the latest entries.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Leave out the steps Warren ran while provisioning.
    #[arg(long)]
    user_only: bool,
    #[command(flatten)]
    opts: ClientOpts,
}

/// Quotes an argument the way a shell user would type it.
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

pub async fn history(a: HistoryArgs) -> anyhow::Result<()> {
    let client = a.opts.client();
    let list: ExecList = client
        .json(
            client
                .request(Method::GET, &format!("/v1/sandboxes/{}/execs", a.id))
                .query(&[("limit", a.limit)]),
        )
        .await?;
    let execs = list
        .execs
        .into_iter()
        .filter(|e| !a.user_only || e.kind == ExecKind::User);
    if a.opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&execs.collect::<Vec<_>>())?
        );
        return Ok(());
    }
    for e in execs {
        let when = e.started_at.format("%H:%M:%S");
        let status = match e.exit_code {
            Some(0) => "ok".to_owned(),
            Some(c) => format!("exit {c}"),
            None => "unfinished".to_owned(),
        };
        match e.kind {
            ExecKind::System => println!(
                "# {when} {} ({status}, {} ms)",
                e.label.as_deref().unwrap_or("system step"),
                e.duration_ms
            ),
            ExecKind::User => {
                if let Some(label) = &e.label {
                    println!("# {label}");
                }
                let line: Vec<String> = e.cmd.iter().map(|w| shell_word(w)).collect();
                println!("$ {}", line.join(" "));
                print!("{}", e.stdout);
                if !e.stdout.is_empty() && !e.stdout.ends_with('\n') {
                    println!();
                }
                for l in e.stderr.lines() {
                    println!("{l}");
                }
                println!("# {when} {status}, {} ms", e.duration_ms);
            }
        }
        if e.kind == ExecKind::System && !e.stderr.is_empty() {
            println!("#   {}", e.stderr);
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct LogsArgs {
    /// Sandbox id.
    id: String,
    /// Keep printing new lines as they come.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Start after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: u64,
    #[command(flatten)]
    opts: ClientOpts,
}

fn print_line(l: &LogLine, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(l)?);
        return Ok(());
    }
    match l.stream {
        LogStream::Stdout => println!("{}", l.text),
        LogStream::Stderr => eprintln!("{}", l.text),
        LogStream::Event => eprintln!("-- {} {}", l.ts.format("%H:%M:%S"), l.text),
    }
    Ok(())
}

pub async fn logs(a: LogsArgs) -> anyhow::Result<()> {
    let client = a.opts.client();
    let path = format!("/v1/sandboxes/{}/logs", a.id);
    if !a.follow {
        // Page by page: the server answers a bounded page and says whether more follow.
        let mut after = a.after;
        let mut first = true;
        loop {
            let list: LogList = client
                .json(
                    client
                        .request(Method::GET, &path)
                        .query(&[("follow", "false".to_owned()), ("after", after.to_string())]),
                )
                .await?;
            if first && !a.opts.json && list.dropped > after {
                eprintln!(
                    "-- lines {} to {} were dropped to keep the log within the server's limits",
                    after + 1,
                    list.dropped
                );
            }
            first = false;
            for l in &list.lines {
                print_line(l, a.opts.json)?;
            }
            if !list.more || list.next <= after {
                return Ok(());
            }
            after = list.next;
        }
    }
    use eventsource_stream::Eventsource;
    let resp = client
        .send(
            client
                .request(Method::GET, &path)
                .query(&[("after", a.after)])
                .header(reqwest::header::ACCEPT, "text/event-stream"),
        )
        .await?;
    let mut events = resp.bytes_stream().eventsource();
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow::anyhow!("reading the log stream: {e}"))?;
        let line: LogLine = serde_json::from_str(&ev.data).context("bad log line")?;
        print_line(&line, a.opts.json)?;
    }
    Ok(())
}
