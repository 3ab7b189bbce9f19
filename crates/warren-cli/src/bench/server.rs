//! The scratch server of `warren bench`: an in-process Warren on its own data directory and a
//! small API client of it (not [`crate::client::Client`], which would take the user's
//! `WARREN_API_KEY` over the scratch server's key).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::task::JoinHandle;
use warren_api::{
    CreateSandbox, ErrorBody, ExecRequest, ExecResult, Image, Runtime, Sandbox, SandboxId,
    SandboxState,
};
use warren_server::service::Service;
use warren_server::{Server, ServerConfig};

/// Name of the image the bench imports into its scratch server.
pub const IMAGE: &str = "bench-busybox";
/// Sandbox range of the scratch server: not the default 10.77.0.0/16, so it never collides
/// with a server of the user's.
const SUBNET: &str = "10.78.0.0/16";

/// The scratch server, kept so its sandboxes can be deleted even once it stops listening.
pub struct InProcess {
    service: Service,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// [`shutdown`](Self::shutdown) of the server in `slot`, if one started; whether it left
    /// nothing behind.
    pub async fn shutdown_any(slot: Option<InProcess>) -> bool {
        match slot {
            Some(s) => s.shutdown().await,
            None => true,
        }
    }

    /// Stops the server, deletes every sandbox through the service (the listener may already
    /// be gone after Ctrl-C) and checks nothing of any is left on the host.
    pub async fn shutdown(self) -> bool {
        self.task.abort();
        let mut clean = true;
        // On PostgreSQL the pool may still hold connections the server's HTTP workers made:
        // their runtimes ended with the server, and each such connection fails once as it is
        // found dead and dropped.
        let mut listed = self.service.sandboxes().list_all().await;
        for _ in 0..32 {
            if listed.is_ok() {
                break;
            }
            listed = self.service.sandboxes().list_all().await;
        }
        match listed {
            Ok(all) => {
                for s in &all {
                    if s.state != SandboxState::Deleted {
                        if let Err(e) = self.service.sandboxes().delete(&s.id).await {
                            eprintln!("warren bench: deleting sandbox {}: {e}", s.id);
                            clean = false;
                        }
                    }
                    match self.service.sandboxes().leftovers(&s.id).await {
                        Ok(left) if left.is_empty() => {}
                        Ok(left) => {
                            eprintln!("warren bench: sandbox {} left {}", s.id, left.join(", "));
                            clean = false;
                        }
                        Err(e) => {
                            eprintln!("warren bench: checking sandbox {}: {e}", s.id);
                            clean = false;
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("warren bench: listing sandboxes: {e}");
                clean = false;
            }
        }
        // The aborted server never ran its graceful stop: release its warm network leases too.
        self.service.backend().drain_warm().await;
        self.service.backend().remove_shared().await;
        clean
    }
}

/// A client of the scratch server.
#[derive(Clone)]
pub struct Api {
    /// Where the server listens.
    pub addr: SocketAddr,
    base: String,
    /// The scratch server's admin key.
    pub key: String,
    http: reqwest::Client,
}

impl Api {
    fn new(addr: SocketAddr, key: String) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            addr,
            base: format!("http://{addr}"),
            key,
            http,
        })
    }

    /// A request to `path` with the key.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    async fn send(&self, rb: RequestBuilder, what: &str) -> anyhow::Result<Response> {
        let resp = rb
            .send()
            .await
            .with_context(|| format!("{what}: no answer"))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error.message)
            .unwrap_or(text);
        bail!("{what}: {status}: {msg}")
    }

    /// Waits until the server answers `/readyz`, or fails with the reason it stopped.
    async fn wait_ready(&self, server: &mut InProcess) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = self.http.get(format!("{}/readyz", self.base)).send().await;
            if ok.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if server.task.is_finished() {
                return match (&mut server.task).await {
                    Ok(Ok(())) => Err(anyhow!("the scratch server stopped at once")),
                    Ok(Err(e)) => Err(e.context("the scratch server failed")),
                    Err(e) => Err(anyhow!("the scratch server failed: {e}")),
                };
            }
            if Instant::now() > deadline {
                bail!("the scratch server did not become ready within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn import(&self, tar: &Path) -> anyhow::Result<Image> {
        let bytes = tokio::fs::read(tar)
            .await
            .with_context(|| format!("reading {}", tar.display()))?;
        let rb = self
            .req(Method::PUT, &format!("/v1/images/{IMAGE}"))
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .body(bytes);
        let resp = self.send(rb, "importing the busybox image").await?;
        resp.json().await.context("decoding the imported image")
    }

    /// Pulls an image through the API.
    pub async fn pull(&self, reference: &str) -> anyhow::Result<Image> {
        let rb = self
            .req(Method::POST, "/v1/images/pull")
            .json(&warren_api::PullImage {
                reference: reference.to_owned(),
            });
        let resp = self.send(rb, "pulling the image").await?;
        resp.json().await.context("decoding the pulled image")
    }

    /// Creates a sandbox and waits until it runs; returns the round trip and the sandbox.
    pub async fn create(&self, rt: Runtime) -> anyhow::Result<(Duration, Sandbox)> {
        self.create_with(CreateSandbox {
            image: Some(IMAGE.to_owned()),
            runtime: Some(rt),
            ..Default::default()
        })
        .await
    }

    /// Creates the sandbox `body` asks for and waits until it runs.
    pub async fn create_with(&self, body: CreateSandbox) -> anyhow::Result<(Duration, Sandbox)> {
        let rt = body.runtime.unwrap_or(Runtime::Gvisor);
        let t = Instant::now();
        let resp = self
            .send(
                self.req(Method::POST, "/v1/sandboxes").json(&body),
                "creating a sandbox",
            )
            .await?;
        let status = resp.status();
        let sb: Sandbox = resp.json().await.context("decoding the created sandbox")?;
        let took = t.elapsed();
        if status != StatusCode::CREATED || sb.state != SandboxState::Running {
            bail!(
                "sandbox {} ({rt}) is {} ({status}): {}",
                sb.id,
                sb.state,
                sb.error.as_deref().unwrap_or("no error given")
            );
        }
        Ok((took, sb))
    }

    pub async fn delete(&self, id: &SandboxId) -> anyhow::Result<()> {
        self.send(
            self.req(Method::DELETE, &format!("/v1/sandboxes/{id}")),
            "deleting a sandbox",
        )
        .await
        .map(|_| ())
    }

    /// Runs `cmd` in sandbox `id` without a timeout, reading and throwing away the answer
    /// until the command ends or the sandbox goes: the whole JSON answer (`stream` false) or
    /// the SSE events. Returns the bytes read.
    pub async fn exec_drain(
        &self,
        id: &SandboxId,
        cmd: &[&str],
        stream: bool,
    ) -> anyhow::Result<u64> {
        use futures::StreamExt;
        let body = ExecRequest {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout_s: Some(0),
            ..Default::default()
        };
        let mut rb = self
            .req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&body);
        if stream {
            rb = rb.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        let resp = self.send(rb, "exec").await?;
        let mut body = resp.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            n += chunk.context("reading the exec answer")?.len() as u64;
        }
        Ok(n)
    }

    /// `POST /v1/sandboxes/{id}/{verb}` (`pause`, `resume`) with no body; the round trip
    /// and the answer.
    pub async fn lifecycle(
        &self,
        id: &SandboxId,
        verb: &str,
    ) -> anyhow::Result<(Duration, Sandbox)> {
        let t = Instant::now();
        let resp = self
            .send(
                self.req(Method::POST, &format!("/v1/sandboxes/{id}/{verb}")),
                verb,
            )
            .await?;
        let took = t.elapsed();
        let sb: Sandbox = resp
            .json()
            .await
            .with_context(|| format!("{verb} answer"))?;
        Ok((took, sb))
    }

    /// `DELETE path`, which must succeed.
    pub async fn delete_path(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.req(Method::DELETE, path), path)
            .await
            .map(|_| ())
    }

    /// `POST path` with a JSON body; the JSON answer.
    pub async fn post_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .send(self.req(Method::POST, path).json(body), path)
            .await?;
        resp.json().await.with_context(|| format!("{path} answer"))
    }

    /// `GET path`; the JSON answer.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self.send(self.req(Method::GET, path), path).await?;
        resp.json().await.with_context(|| format!("{path} answer"))
    }

    /// Runs `sh -c script` in sandbox `id`; its round trip, or why it did not exit 0.
    pub async fn sh(&self, id: &SandboxId, script: &str) -> anyhow::Result<Duration> {
        let cmd = vec!["sh".into(), "-c".into(), script.into()];
        self.exec_ok(id, cmd, Some(600)).await
    }

    /// Runs `true` in sandbox `id`; returns the round trip.
    pub async fn exec_true(&self, id: &SandboxId) -> anyhow::Result<Duration> {
        self.exec(id, vec!["true".to_owned()]).await
    }

    /// Runs `cmd` in sandbox `id`; its round trip, or why it did not exit 0.
    pub async fn exec(&self, id: &SandboxId, cmd: Vec<String>) -> anyhow::Result<Duration> {
        self.exec_ok(id, cmd, None).await
    }

    /// Runs `cmd` in sandbox `id`; its round trip, or why it did not exit 0.
    async fn exec_ok(
        &self,
        id: &SandboxId,
        cmd: Vec<String>,
        timeout_s: Option<u64>,
    ) -> anyhow::Result<Duration> {
        let body = ExecRequest {
            cmd,
            timeout_s,
            ..Default::default()
        };
        let t = Instant::now();
        let resp = self
            .send(
                self.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                    .json(&body),
                "exec",
            )
            .await?;
        let res: ExecResult = resp.json().await.context("decoding the exec result")?;
        let took = t.elapsed();
        if res.exit_code != 0 {
            bail!(
                "{:?} in sandbox {id} exited {}: {}",
                body.cmd,
                res.exit_code,
                res.stderr.trim()
            );
        }
        Ok(took)
    }
}

/// Builds and starts the scratch server on a free port of 127.0.0.1; returns a client of it
/// and its (canonical) data directory.
pub async fn start(
    dir: &Path,
    default_runtime: Runtime,
    http_workers: Option<usize>,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<(Api, PathBuf)> {
    start_with_output(dir, default_runtime, http_workers, Default::default(), slot).await
}

/// [`start`], keeping sandboxes' output within `output`.
pub async fn start_with_output(
    dir: &Path,
    default_runtime: Runtime,
    http_workers: Option<usize>,
    output: warren_server::service::OutputLimits,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<(Api, PathBuf)> {
    let gvisor = warren_local::runtime::GvisorConfig::default();
    start_with(dir, default_runtime, http_workers, output, gvisor, slot).await
}

/// A scratch gVisor server whose pause images also go to `object_store` (if any).
pub async fn start_with_store(
    dir: &Path,
    object_store: Option<&str>,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<(Api, PathBuf)> {
    let cfg = ServerConfig {
        object_store: object_store.map(str::to_owned),
        ..ServerConfig::default()
    };
    start_config(dir, Runtime::Gvisor, cfg, slot).await
}

/// A scratch server on `database` (a PostgreSQL URL; none is SQLite in its data dir).
pub async fn start_on(
    dir: &Path,
    database: Option<String>,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<(Api, PathBuf)> {
    let cfg = ServerConfig {
        database,
        ..ServerConfig::default()
    };
    start_config(dir, Runtime::Runc, cfg, slot).await
}

/// A scratch server whose sandboxes are Pods on the cluster `kube` names.
pub async fn start_kube(
    dir: &Path,
    kube: warren_kube::KubeConfig,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<(Api, PathBuf)> {
    let cfg = ServerConfig {
        kubernetes: Some(kube),
        ..ServerConfig::default()
    };
    start_config(dir, Runtime::Gvisor, cfg, slot).await
}

/// [`start_with_output`], gVisor sandboxes running as `gvisor` says.
pub async fn start_with(
    dir: &Path,
    default_runtime: Runtime,
    http_workers: Option<usize>,
    output: warren_server::service::OutputLimits,
    gvisor: warren_local::runtime::GvisorConfig,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<(Api, PathBuf)> {
    let cfg = ServerConfig {
        http_workers,
        output,
        gvisor,
        ..ServerConfig::default()
    };
    start_config(dir, default_runtime, cfg, slot).await
}

/// A scratch server from `cfg`, on a free port, the bench's address range and `dir/data`.
async fn start_config(
    dir: &Path,
    default_runtime: Runtime,
    cfg: ServerConfig,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<(Api, PathBuf)> {
    let data_dir = dir.join("data");
    // The port must be known before the server binds it (the preview URLs name it).
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port on 127.0.0.1")?;
    let server = Server::build(ServerConfig {
        listen,
        data_dir: data_dir.clone(),
        default_runtime,
        subnet: SUBNET.parse().context("parsing the bench subnet")?,
        warm_leases: 2,
        history_retention: std::time::Duration::from_secs(3600),
        ..cfg
    })
    .await
    .context("starting the scratch server")?;
    let key = match server.new_admin_key.clone() {
        Some(k) => k,
        None => std::fs::read_to_string(data_dir.join("admin.key"))
            .context("reading the scratch server's admin.key")?
            .trim()
            .to_owned(),
    };
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", data_dir.display()))?;
    let service = server.state.service.clone();
    let task = tokio::spawn(server.serve());
    let inproc = slot.insert(InProcess { service, task });
    let api = Api::new(listen, key)?;
    api.wait_ready(inproc).await?;
    Ok((api, data_dir))
}
