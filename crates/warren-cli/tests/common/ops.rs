//! Helpers of the operations tests: waiting for an operation, and a registry that hangs or
//! fails on demand.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TestServer;

/// Polls an operation until it has ended; its last state.
pub async fn settled(s: &TestServer, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let op = s.get_json(&format!("/v1/operations/{id}")).await;
        if op["state"] == "succeeded" || op["state"] == "failed" || Instant::now() > deadline {
            return op;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The newest operation of `kind` on `target`.
pub async fn newest(s: &TestServer, kind: &str, target: &str) -> Value {
    let list = s
        .get_json(&format!("/v1/operations?kind={kind}&target={target}"))
        .await;
    list["operations"][0].clone()
}

/// A registry on 127.0.0.1 that holds every request open while `hold` is set and then
/// answers what `status` says (a stand-in for a registry that hangs or fails).
pub struct FakeRegistry {
    port: u16,
    hold: Arc<AtomicBool>,
}

impl FakeRegistry {
    pub async fn start(status: &'static str) -> FakeRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hold = Arc::new(AtomicBool::new(true));
        let held = hold.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let held = held.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    while held.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let body = if status.starts_with("404") {
                        r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"test registry"}]}"#
                    } else {
                        r#"{"errors":[{"code":"UNAVAILABLE","message":"test registry"}]}"#
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        FakeRegistry { port, hold }
    }

    pub fn reference(&self) -> String {
        format!("127.0.0.1:{}/test/held:latest", self.port)
    }

    pub fn release(&self) {
        self.hold.store(false, Ordering::SeqCst);
    }
}

/// Submits a pull without waiting; the operation's id.
pub async fn pull_async(s: &TestServer, reference: &str) -> String {
    let resp = s
        .req(Method::POST, "/v1/images/pull")
        .header("prefer", "respond-async")
        .json(&json!({ "ref": reference }))
        .send()
        .await
        .expect("pull");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let op: Value = resp.json().await.expect("operation");
    op["id"].as_str().expect("id").to_owned()
}

/// Holds a server's (only) worker: a pull from a registry that does not answer until
/// released, begun. The registry and the pull's operation id.
pub async fn hold_the_worker(s: &TestServer) -> (FakeRegistry, String) {
    let held = FakeRegistry::start("404 Not Found").await;
    let pull = pull_async(s, &held.reference()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get_json(&format!("/v1/operations/{pull}")).await["state"] != "running" {
        assert!(Instant::now() < deadline, "the pull never began");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (held, pull)
}
