//! The load tools of `warren bench proxy`: wrk (its report parsed), nginx as the reference
//! reverse proxy (a configuration of its own, in the scratch directory), and a WebSocket echo
//! round-trip timer.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Requests done.
    pub requests: u64,
}

/// A wrk duration like `846.00us`, `1.20ms` or `2.01s`, in ms.
fn parse_ms(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// Reads wrk's `--latency` report; errors on socket errors or non-2xx answers, which would
/// make the numbers meaningless.
pub fn parse_wrk(out: &str) -> anyhow::Result<WrkResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["50%", v] => p50 = parse_ms(v),
            ["99%", v] => p99 = parse_ms(v),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Non-2xx", ..] | ["Socket", "errors:", ..] => {
                bail!("wrk saw failed requests: {}", line.trim())
            }
            _ => {}
        }
    }
    match (rps, p50, p99, requests) {
        (Some(rps), Some(p50_ms), Some(p99_ms), Some(requests)) => Ok(WrkResult {
            rps,
            p50_ms,
            p99_ms,
            requests,
        }),
        _ => bail!("could not read wrk's report:\n{out}"),
    }
}

/// Runs wrk against `url` (with `host` as the Host header when given).
pub async fn wrk(
    url: &str,
    host: Option<&str>,
    connections: u32,
    threads: u32,
    duration: Duration,
) -> anyhow::Result<WrkResult> {
    let header = host.map(|h| format!("Host: {h}"));
    wrk_with(url, header.as_slice(), connections, threads, duration).await
}

/// Runs wrk against `url`, sending `headers` (`Name: value`) with each request.
pub async fn wrk_with(
    url: &str,
    headers: &[String],
    connections: u32,
    threads: u32,
    duration: Duration,
) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency");
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk {url}: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("wrk {url}"))
}

/// nginx as a reverse proxy to one upstream, the way one would configure it for speed:
/// upstream keep-alive, HTTP/1.1, no access log, WebSocket upgrades passed.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in `dir` proxying `127.0.0.1:<free port>` to `upstream`.
    pub async fn start(dir: &Path, upstream: SocketAddr) -> anyhow::Result<Nginx> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for nginx")?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             \x20 upstream sandbox {{ server {upstream}; keepalive 128; }}\n\
             \x20 map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
             \x20 server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://sandbox;\n\
             \x20     proxy_http_version 1.1;\n      proxy_set_header Host $host;\n\
             \x20     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             \x20     proxy_set_header Upgrade $http_upgrade;\n\
             \x20     proxy_set_header Connection $connection_upgrade;\n    }}\n  }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting nginx (apt-get install nginx)")?;
        let mut nginx = Nginx {
            child,
            addr,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited ({status}): {log}");
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {addr} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(nginx)
    }

    /// Stops nginx and its workers (a killed master would leave its workers serving).
    pub async fn stop(mut self) {
        let _ = Command::new("nginx")
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Round trips of a small WebSocket message to the echo at `url` (`Host: host` when given),
/// one at a time on one connection, after a few untimed ones.
pub async fn ws_round_trips(
    url: &str,
    host: Option<&str>,
    n: u32,
) -> anyhow::Result<Vec<Duration>> {
    let mut req = url
        .into_client_request()
        .context("building the WebSocket request")?;
    if let Some(h) = host {
        req.headers_mut()
            .insert("host", h.parse().context("Host header")?);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .with_context(|| format!("WebSocket to {url}"))?;
    let payload = "warren-bench-echo-0123456789abcdef";
    let mut samples = Vec::with_capacity(n as usize);
    for i in 0..n + 10 {
        let t = Instant::now();
        ws.send(Message::text(payload)).await.context("sending")?;
        match ws.next().await {
            Some(Ok(Message::Text(t2))) if t2.as_str() == payload => {}
            other => bail!("the echo answered {other:?}"),
        }
        if i >= 10 {
            samples.push(t.elapsed());
        }
    }
    let _ = ws.close(None).await;
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let out = "Running 2s test @ http://127.0.0.1:8000/\n  2 threads and 64 connections\n  \
                   Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.10ms  \
                   300.00us   5.00ms   80.00%\n  Latency Distribution\n     50%  846.00us\n     \
                   75%    1.20ms\n     90%    1.80ms\n     99%    4.37ms\n  24690 requests in \
                   2.00s, 3.00MB read\nRequests/sec:  12345.67\nTransfer/sec:      1.50MB\n";
        let r = parse_wrk(out).expect("parsed");
        assert!((r.rps - 12345.67).abs() < 1e-6);
        assert!((r.p50_ms - 0.846).abs() < 1e-9);
        assert!((r.p99_ms - 4.37).abs() < 1e-9);
        assert_eq!(r.requests, 24690);
        assert!(parse_wrk(&format!("{out}  Non-2xx or 3xx responses: 5\n")).is_err());
        assert!(parse_wrk("garbage").is_err());
        assert_eq!(parse_ms("2.00s"), Some(2000.0));
    }
}
