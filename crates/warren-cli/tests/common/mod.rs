//! Test harness: a real `warren serve` process on a scratch data dir, its own port and its own
//! address range, driven over HTTP. Needs root, `crun`, `runsc`, `ip` and busybox-static.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

pub mod base;
pub mod build;
mod database;
pub mod e2b;
pub mod envd;
pub mod garage;
pub mod oci_layout;
pub mod ops;
pub mod preview;
pub mod pulls;
pub mod registry;
pub mod remote;
pub mod state;
pub mod teams;
mod teardown;

pub const RUNTIMES: [&str; 2] = ["runc", "gvisor"];

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// A /24 for one test server: the second octet from the test binary's name, the third a
/// counter, so servers running at once in one binary, or left over by another, never overlap.
pub fn unique_subnet() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.split('-').next().unwrap_or("").to_owned();
    let h = stem
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    format!(
        "10.{}.{}.0/24",
        100 + h % 100,
        NEXT_NET.fetch_add(1, Ordering::SeqCst) % 250
    )
}

/// A client trusting only the CA at `ca` (waiting for a starting server to make it), over
/// HTTP/2 or 1.1.
pub fn tls_client(ca: &Path) -> reqwest::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ca.exists() {
        assert!(Instant::now() < deadline, "no {} after 30 s", ca.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    let pem = std::fs::read(ca).expect("ca.pem");
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA certificate"))
        .build()
        .expect("TLS client")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A tar of a busybox root filesystem, built once per test binary.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("warren-test-busybox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tree = dir.join("rootfs");
        warren_cli::rootfs::busybox_tree(&tree).expect("busybox tree");
        let tar = dir.join("busybox.tar");
        warren_cli::rootfs::tar_dir(&tree, &tar).expect("busybox tar");
        tar
    })
}

pub struct TestServer {
    child: Option<Child>,
    pub url: String,
    pub key: String,
    pub data_dir: PathBuf,
    pub subnet: String,
    pub port: u16,
    _scratch: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

impl TestServer {
    /// A new server with the busybox image imported as `busybox`.
    pub async fn start() -> TestServer {
        TestServer::start_with(&[]).await
    }

    /// Like [`start`](Self::start), with extra `warren serve` arguments.
    pub async fn start_with(extra: &[&str]) -> TestServer {
        TestServer::start_listening("127.0.0.1", extra).await
    }

    /// Like [`start_with`](Self::start_with), the API listening on `ip` (e.g. `0.0.0.0`).
    pub async fn start_listening(ip: &str, extra: &[&str]) -> TestServer {
        let scratch = tempfile::Builder::new()
            .prefix("warren-test-")
            .tempdir_in("/var/tmp")
            .expect("scratch dir");
        let data_dir = scratch.path().to_path_buf();
        let mut s =
            TestServer::start_on_with(data_dir, ip, free_port(), unique_subnet(), extra).await;
        s._scratch = Some(scratch);
        let resp = s.import_tar("busybox", busybox_tar()).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "importing busybox");
        s
    }

    /// A server on an existing data dir (for restarts).
    pub async fn start_on(data_dir: PathBuf, port: u16, subnet: String) -> TestServer {
        TestServer::start_on_with(data_dir, "127.0.0.1", port, subnet, &[]).await
    }

    pub async fn start_on_with(
        data_dir: PathBuf,
        ip: &str,
        port: u16,
        subnet: String,
        extra: &[&str],
    ) -> TestServer {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .expect("server log");
        let database = database::args(&data_dir, extra).await;
        let child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([
                "serve",
                "--listen",
                &format!("{ip}:{port}"),
                "--subnet",
                &subnet,
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .args(&database)
            .env(
                "WARREN_LOG",
                std::env::var("TEST_WARREN_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn warren serve");
        // The CA to trust: the server's own, or (with --tls-cert) the ca.pem beside the cert.
        let ca = if extra.contains(&"--tls-self-signed") {
            Some(data_dir.join("tls/ca.pem"))
        } else {
            extra
                .iter()
                .position(|a| *a == "--tls-cert")
                .and_then(|i| extra.get(i + 1))
                .map(|cert| Path::new(cert).with_file_name("ca.pem"))
        };
        let tls = ca.is_some();
        let url = if tls {
            format!("https://127.0.0.1:{port}")
        } else {
            format!("http://127.0.0.1:{port}")
        };
        let http = if let Some(ca) = &ca {
            tls_client(ca)
        } else {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client")
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up: {}",
                std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let key = std::fs::read_to_string(data_dir.join("admin.key"))
            .expect("admin.key written at first start")
            .trim()
            .to_owned();
        TestServer {
            child: Some(child),
            url,
            key,
            data_dir,
            subnet,
            port,
            _scratch: None,
            http,
        }
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(&self.key)
    }

    /// `POST path`, with a JSON body when given (any status).
    pub async fn post(&self, path: &str, body: Option<Value>) -> reqwest::Response {
        let rb = self.req(Method::POST, path);
        let rb = match body {
            Some(b) => rb.json(&b),
            None => rb,
        };
        rb.send().await.expect("POST")
    }

    /// `GET path` answered with JSON (any status).
    pub async fn get_json(&self, path: &str) -> Value {
        self.req(Method::GET, path)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON answer")
    }

    pub async fn import_tar(&self, name: &str, tar: &Path) -> reqwest::Response {
        let body = std::fs::read(tar).expect("read tar");
        self.req(Method::PUT, &format!("/v1/images/{name}"))
            .header("content-type", "application/x-tar")
            .body(body)
            .send()
            .await
            .expect("PUT image")
    }

    /// Creates a sandbox and asserts it is running.
    pub async fn create(&self, body: Value) -> Value {
        let resp = self
            .req(Method::POST, "/v1/sandboxes")
            .json(&body)
            .send()
            .await
            .expect("create");
        let status = resp.status();
        let v: Value = resp.json().await.expect("create body");
        assert_eq!(status, StatusCode::CREATED, "create {body}: {v}");
        assert_eq!(v["state"], "running", "{v}");
        v
    }

    pub async fn get(&self, id: &str) -> (StatusCode, Value) {
        let resp = self
            .req(Method::GET, &format!("/v1/sandboxes/{id}"))
            .send()
            .await
            .expect("get");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn exec(&self, id: &str, body: Value) -> Value {
        let resp = self
            .req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&body)
            .send()
            .await
            .expect("exec");
        let status = resp.status();
        let v: Value = resp.json().await.expect("exec body");
        assert_eq!(status, StatusCode::OK, "exec {body}: {v}");
        v
    }

    /// `sh -c script`, returning stdout; asserts exit 0.
    pub async fn sh(&self, id: &str, script: &str) -> String {
        let v = self.exec(id, json!({"cmd": ["sh", "-c", script]})).await;
        assert_eq!(v["exit_code"], 0, "{script}: {v}");
        v["stdout"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn delete(&self, id: &str) {
        let resp = self
            .req(Method::DELETE, &format!("/v1/sandboxes/{id}"))
            .send()
            .await
            .expect("delete");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }

    /// The first address of this server's sandbox range.
    pub fn subnet_base(&self) -> std::net::Ipv4Addr {
        self.subnet
            .split('/')
            .next()
            .unwrap_or("")
            .parse()
            .expect("subnet")
    }

    /// The tag naming this server's host resources.
    pub fn tag(&self) -> String {
        warren_server::host_tag(&self.data_dir.canonicalize().expect("data dir"))
    }

    /// What of sandbox `id` is still on the host: mounts, netns, veth, cgroups, container, files.
    /// `sandbox` is the sandbox as created (its `ip` names its veth).
    pub fn leftovers(&self, sandbox: &Value) -> Vec<String> {
        let id = sandbox["id"].as_str().expect("id");
        let runtime = sandbox["runtime"].as_str().expect("runtime");
        let tag = self.tag();
        let ip: std::net::Ipv4Addr = sandbox["ip"].as_str().expect("ip").parse().expect("ip");
        let net = self.subnet_base();
        let veth = format!("wr{tag}{}", (u32::from(ip) - u32::from(net)) / 4);
        // The server keeps a few warm leases of its own; the sandbox's is the one its ip names.
        let mut v = Vec::new();
        let sdir = self
            .data_dir
            .canonicalize()
            .expect("data dir")
            .join("sandboxes")
            .join(id);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let merged = Path::new(warren_local::backend::ROOTFS_PARENT)
            .join(&tag)
            .join(id);
        if mounts.contains(sdir.to_string_lossy().as_ref())
            || mounts.contains(merged.to_string_lossy().as_ref())
        {
            v.push("mount".to_owned());
        }
        for dir in [merged.clone(), merged.with_extension("files")] {
            if dir.exists() {
                v.push(format!("dir {}", dir.display()));
            }
        }
        let index = (u32::from(ip) - u32::from(net)) / 4;
        if Path::new(&format!("/run/netns/warren-{tag}-{index}")).exists() {
            v.push("netns".to_owned());
        }
        if Path::new("/sys/class/net").join(&veth).exists() {
            v.push(format!("veth {veth}"));
        }
        let chain = Command::new("nft")
            .args([
                "list",
                "chain",
                "inet",
                &format!("warren_{tag}"),
                &format!("sb_{index}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if chain {
            v.push(format!("nftables chain sb_{index}"));
        }
        for c in ["memory", "cpu", "pids", "unified"] {
            let p = format!("/sys/fs/cgroup/{c}/warren-{tag}/{id}");
            if Path::new(&p).exists() {
                v.push(format!("cgroup {p}"));
            }
        }
        let (bin, sub) = if runtime == "gvisor" {
            ("runsc", "runsc")
        } else {
            ("crun", "crun")
        };
        let root = self.data_dir.join("run").join(sub);
        let ok = Command::new(bin)
            .arg(format!("--root={}", root.display()))
            .args(["state", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            v.push("container".to_owned());
        }
        if sdir.exists() {
            v.push("sandbox dir".to_owned());
        }
        v
    }

    /// Takes over the scratch dir of `old` (a killed server on the same data dir), so the dir
    /// lives as long as this server.
    pub fn adopt_scratch(mut self, mut old: TestServer) -> TestServer {
        self._scratch = old._scratch.take();
        self
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILLs the server process (sandboxes stay).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Deletes every sandbox, then stops the server with SIGTERM (a graceful stop, which
    /// tidies the server's shared host state).
    pub async fn shutdown(mut self) {
        self.cleanup().await;
        if self.stop_graceful() {
            let parents: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path().join(format!("warren-{}", self.tag())))
                        .collect()
                })
                .unwrap_or_else(|_| Vec::new())
                .into_iter()
                .filter(|p: &PathBuf| p.exists())
                .map(|p| p.display().to_string())
                .collect();
            assert!(
                parents.is_empty(),
                "cgroups left after a graceful stop: {parents:?}\n{}",
                self.log_tail()
            );
            let tag = self.tag();
            let netns: Vec<String> = std::fs::read_dir("/run/netns")
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let ours: Vec<&String> = netns
                .iter()
                .filter(|n| n.starts_with(&format!("warren-{tag}-")))
                .collect();
            assert!(
                ours.is_empty(),
                "network namespaces left after a graceful stop: {ours:?}\n{}",
                self.log_tail()
            );
            let table = Command::new("nft")
                .args(["list", "table", "inet", &format!("warren_{tag}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                !table,
                "nftables table warren_{tag} left after a graceful stop\n{}",
                self.log_tail()
            );
        }
    }

    /// Stops the server gracefully and leaves its sandboxes be (another server sharing its
    /// database takes them over); the host resources of this one's tag (network namespaces
    /// and links) are removed after it, as a host that went away would lose them.
    pub fn stop_keeping_sandboxes(mut self) {
        self.stop_graceful();
        let tag = self.tag();
        let names = |dir: &str| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        for link in names("/sys/class/net") {
            if link.starts_with(&format!("wr{tag}")) {
                let _ = Command::new("ip").args(["link", "del", &link]).status();
            }
        }
        for ns in names("/run/netns") {
            if ns.starts_with(&format!("warren-{tag}-")) {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &format!("warren_{tag}")])
            .stderr(Stdio::null())
            .status();
    }

    /// The server log's last lines, for a failure's message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("the server log's last lines:\n{tail}")
    }

    /// SIGTERM, then SIGKILL after 30 s; whether there was a server to stop.
    fn stop_graceful(&mut self) -> bool {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            // Generous: on a loaded CI machine a stop (its last journal writes, the shared
            // state's removal) has been seen to pass 10 s, and a kill would leave that state.
            let began = Instant::now();
            let deadline = began + Duration::from_secs(30);
            let mut exited = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !exited {
                eprintln!(
                    "the server did not stop within {:?} of SIGTERM: killed",
                    began.elapsed()
                );
            } else if began.elapsed() > Duration::from_secs(5) {
                eprintln!("the server took {:?} to stop", began.elapsed());
            }
            let _ = c.kill();
            let _ = c.wait();
            return true;
        }
        false
    }

    async fn cleanup(&self) {
        if let Ok(resp) = self.req(Method::GET, "/v1/sandboxes").send().await {
            if let Ok(v) = resp.json::<Value>().await {
                for s in v["sandboxes"].as_array().cloned().unwrap_or_default() {
                    if let Some(id) = s["id"].as_str() {
                        let _ = self
                            .req(Method::DELETE, &format!("/v1/sandboxes/{id}"))
                            .send()
                            .await;
                    }
                }
            }
        }
    }
}

/// Polls `GET` until `pred` holds or `timeout` passes; returns the last body.
pub async fn wait_for(
    s: &TestServer,
    id: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, v) = s.get(id).await;
        if pred(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
