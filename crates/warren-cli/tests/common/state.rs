//! A sandbox with state worth keeping, and the calls that keep it: pause, resume, and
//! what to compare before and after.
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::TestServer;

/// What the sandbox runs: 32 MiB of random bytes in its memory (a tmpfs file gVisor keeps in
/// its own memory) with their checksum, a web server, and a counter that would restart from
/// 1 if the shell were started again instead of restored.
pub const MAIN: &str =
    "echo $$ > /tmp/shell; dd if=/dev/urandom of=/dev/shm/blob bs=1M count=32 2>/dev/null; \
    md5sum /dev/shm/blob > /tmp/sum; echo hello > /tmp/index.html; httpd -p 8000 -h /tmp; \
    i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done";

pub async fn make(s: &TestServer) -> String {
    make_on(s, "gvisor").await
}

/// [`make`] under runtime `rt`.
pub async fn make_on(s: &TestServer, rt: &str) -> String {
    make_from(s, json!({"image": "busybox", "runtime": rt})).await
}

/// [`make`] from a create request (`body`, to which the main command is added).
pub async fn make_from(s: &TestServer, mut body: Value) -> String {
    body["cmd"] = json!(["sh", "-c", MAIN]);
    let sb = s.create(body).await;
    let id = sb["id"].as_str().expect("id").to_owned();
    // The counter has started (so the blob and its sum are written).
    for _ in 0..100 {
        if s.sh(&id, "cat /tmp/count 2>/dev/null || echo 0")
            .await
            .trim()
            != "0"
        {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the main command never started counting");
}

/// The state inside that must survive: the blob's checksum now and as first written, and
/// the pids of the web server and of the looping shell, alive. (Not a count of processes
/// running the loop: the shell forks a copy of itself for each `sleep`, which a count would
/// catch now and then.)
pub async fn inside(s: &TestServer, id: &str) -> String {
    s.sh(
        id,
        "md5sum /dev/shm/blob; cat /tmp/sum; pidof httpd; cat /tmp/shell; \
         kill -0 $(cat /tmp/shell) && echo alive",
    )
    .await
}

/// The counter's last value. The shell writes it with `>` (truncate, then write), so a read
/// can fall between the two and find the file empty: such a read is made again.
pub async fn count(s: &TestServer, id: &str) -> u64 {
    for _ in 0..20 {
        let text = s.sh(id, "cat /tmp/count").await;
        if !text.trim().is_empty() {
            return text.trim().parse().expect("a count");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/tmp/count stayed empty for a second");
}

pub async fn through_proxy(s: &TestServer, id: &str) -> (StatusCode, String) {
    let resp = s
        .req(Method::GET, &format!("/proxy/{id}/8000/index.html"))
        .send()
        .await
        .expect("GET through the proxy");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

pub async fn pause(s: &TestServer, id: &str) -> (StatusCode, Value) {
    let resp = s.post(&format!("/v1/sandboxes/{id}/pause"), None).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn resume(s: &TestServer, id: &str) -> (StatusCode, Value) {
    let resp = s.post(&format!("/v1/sandboxes/{id}/resume"), None).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The agent token file of a sandbox: in its bundle (gVisor), or beside its root filesystem
/// (runc).
pub fn token_file(s: &TestServer, id: &str) -> std::path::PathBuf {
    let in_bundle = s.data_dir.join("sandboxes").join(id).join("bundle/token");
    if in_bundle.exists() {
        return in_bundle;
    }
    std::fs::read_dir(warren_local::backend::ROOTFS_PARENT)
        .expect("/run/warren")
        .flatten()
        .map(|tag| tag.path().join(format!("{id}.files/token")))
        .find(|p| p.exists())
        .expect("a token file")
}
