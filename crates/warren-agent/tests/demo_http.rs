//! `warren-agent demo-http`, the built binary on a loopback port: every route over HTTP/1.1,
//! streamed echo with flat memory, and the WebSocket echo.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A running `demo-http`; killed on drop.
struct Demo {
    child: Child,
    addr: SocketAddr,
    /// Held open: the server's later messages must not meet a closed pipe.
    stderr: Option<BufReader<ChildStderr>>,
}

/// WARREN_AGENT_BIN runs the suite against another build (the static release binary).
fn agent_bin() -> String {
    std::env::var("WARREN_AGENT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_warren-agent").to_owned())
}

impl Demo {
    fn spawn() -> Demo {
        // Bind-then-release: the server cannot report an ephemeral port back to us.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = Command::new(agent_bin())
            .args(["demo-http", "--listen", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn demo-http");
        let mut demo = Demo {
            child,
            addr,
            stderr: None,
        };
        let mut stderr = BufReader::new(demo.child.stderr.take().unwrap());
        // Printed once the socket is bound, so no need to poll for it.
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert_eq!(line, format!("demo-http: listening on {addr}\n"));
        demo.stderr = Some(stderr);
        demo
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Peak resident memory, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn plain_routes() {
    let demo = Demo::spawn();
    let http = http();

    let resp = http.get(demo.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), "hello from warren demo-http\n");

    let resp = http
        .get(demo.url("/headers?a=b&c"))
        .header("x-demo", "one")
        .header("x-demo", "two")
        .header("X-Mixed-Case", "v")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let seen: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen["x-demo"], "one, two");
    assert_eq!(seen["x-mixed-case"], "v");
    assert_eq!(seen["host"], demo.addr.to_string());
    assert_eq!(seen["_method"], "GET");
    assert_eq!(seen["_path"], "/headers?a=b&c");
    assert_eq!(seen["_version"], "HTTP/1.1");

    let resp = http.get(demo.url("/redirect")).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/target");
    let resp = http
        .get(demo.url("/redirect-abs"))
        .header("host", "preview.example:8443")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "http://preview.example:8443/target"
    );

    let resp = http.get(demo.url("/cookie")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookies: Vec<&str> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/; HttpOnly", "b=2"]);

    let resp = http.get(demo.url("/status/418")).send().await.unwrap();
    assert_eq!(resp.status(), 418);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = http.get(demo.url("/status/101")).send().await.unwrap();
    assert_eq!(resp.status(), 400);

    let resp = http.get(demo.url("/nowhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = http.post(demo.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let resp = http.get(demo.url("/echo")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
}

#[tokio::test]
async fn echo_streams_bodies_back_with_flat_memory() {
    let demo = Demo::spawn();
    let http = http();

    // 8 MiB with a Content-Length: the same bytes and length come back.
    let body: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let resp = http
        .post(demo.url("/echo"))
        .header("content-type", "application/x-demo")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-demo");
    assert_eq!(resp.content_length(), Some(body.len() as u64));
    let back = resp.bytes().await.unwrap();
    assert!(back == body, "echo differs ({} bytes back)", back.len());

    // 64 MiB streamed without a length: it comes back while still being sent, and the
    // server never holds more than a little of it.
    const CHUNK: usize = 64 << 10;
    const CHUNKS: usize = 1024;
    let chunks =
        futures::stream::iter((0..CHUNKS).map(|i| Ok::<_, std::io::Error>(vec![i as u8; CHUNK])));
    let resp = http
        .post(demo.url("/echo"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut offset = 0usize;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        for byte in chunk.unwrap() {
            assert_eq!(byte, (offset / CHUNK) as u8, "at byte {offset}");
            offset += 1;
        }
    }
    assert_eq!(offset, CHUNK * CHUNKS);
    let peak = demo.peak_rss_kib();
    assert!(
        peak < 32 << 10,
        "peak RSS {peak} KiB: the body was buffered"
    );
}

#[tokio::test]
async fn sse_sends_each_event_as_it_is_produced() {
    let demo = Demo::spawn();
    let started = Instant::now();
    let mut resp = http()
        .get(demo.url("/sse?n=3&interval_ms=200"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(first, "data: 0\n\n", "the first event did not come alone");
    let mut all = first.to_vec();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        all.extend_from_slice(&chunk);
    }
    assert_eq!(all, b"data: 0\n\ndata: 1\n\ndata: 2\n\n");
    assert!(started.elapsed() >= Duration::from_millis(400));

    let resp = http().get(demo.url("/sse")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap().matches("data: ").count(), 3);
    let resp = http().get(demo.url("/sse?n=x")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn websocket_echoes_text_and_binary_and_answers_pings() {
    let demo = Demo::spawn();
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", demo.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);

    let replies = [
        (
            Message::text("hello, warren"),
            Message::text("hello, warren"),
        ),
        (
            Message::binary(vec![0u8, 1, 2, 254, 255]),
            Message::binary(vec![0u8, 1, 2, 254, 255]),
        ),
        (
            Message::Ping(Bytes::from_static(b"are you there")),
            Message::Pong(Bytes::from_static(b"are you there")),
        ),
    ];
    for (sent, expected) in replies {
        ws.send(sent).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no reply")
            .expect("stream ended")
            .unwrap();
        assert_eq!(got, expected);
    }

    ws.close(None).await.unwrap();
    // The server answers the close and ends the connection.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                return true;
            }
        }
        false
    })
    .await
    .expect("close not answered");
    assert!(end, "no close frame back");

    // A plain GET is told to upgrade.
    let resp = http().get(demo.url("/ws")).send().await.unwrap();
    assert_eq!(resp.status(), 426);
}

#[test]
fn bad_command_lines_exit_2() {
    for args in [
        &["demo-http", "nope"][..],
        &["demo-http", "--listen", "8000"],
    ] {
        let out = Command::new(agent_bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("usage: warren-agent demo-http"), "{stderr}");
    }
}
