//! Pulling through a test server's API: plain JSON, or the SSE progress stream.
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::oci_layout::{Image, ImageDesc, OciLayout};
use super::registry::Registry;
use super::TestServer;

/// Writes `image` as an OCI layout in `dir` and pushes it to `reg` as `repo_tag`.
pub fn push_image(reg: &Registry, dir: &Path, repo_tag: &str, image: &Image) -> ImageDesc {
    let mut layout = OciLayout::create(dir);
    let desc = layout.add_image("t", image);
    reg.push(dir, "t", repo_tag, false);
    desc
}

/// `POST /v1/images/prune`'s answer.
pub async fn prune(s: &TestServer) -> Value {
    let resp = s
        .req(Method::POST, "/v1/images/prune")
        .send()
        .await
        .expect("prune");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("prune JSON")
}

/// Runs the `warren` CLI against `s` as a user on its machine would (the key from its data
/// dir).
pub fn warren(s: &TestServer, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .env("WARREN_URL", &s.url)
        .env("WARREN_DATA_DIR", &s.data_dir)
        .env_remove("WARREN_API_KEY")
        .output()
        .expect("run warren")
}

/// `POST /v1/images/pull` without SSE: the status and the body.
pub async fn pull(s: &TestServer, reference: &str) -> (StatusCode, Value) {
    let resp = s
        .req(Method::POST, "/v1/images/pull")
        .json(&json!({ "ref": reference }))
        .send()
        .await
        .expect("pull request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Pulls and insists it worked; the image.
pub async fn pull_ok(s: &TestServer, reference: &str) -> Value {
    let (status, body) = pull(s, reference).await;
    assert_eq!(status, StatusCode::OK, "pulling {reference}: {body}");
    body
}

/// `POST /v1/images/pull` with `Accept: text/event-stream`: every event's JSON, in order.
pub async fn pull_events(s: &TestServer, reference: &str) -> Vec<Value> {
    let resp = s
        .req(Method::POST, "/v1/images/pull")
        .header("accept", "text/event-stream")
        .json(&json!({ "ref": reference }))
        .send()
        .await
        .expect("pull request");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("event stream");
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).expect("event JSON"))
        .collect()
}

/// The last status each layer reached in a pull's events.
pub fn final_layer_status(events: &[Value], digest: &str) -> String {
    events
        .iter()
        .rfind(|e| e["type"] == "layer" && e["digest"] == digest)
        .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Layer digests in the server's layer store.
pub fn stored_layers(data_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data_dir.join("images/layers"))
        .map(|rd| {
            rd.flatten()
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Entries left in the image store's scratch directory.
pub fn scratch_entries(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("images/tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Image names the server lists.
pub async fn image_names(s: &TestServer) -> Vec<String> {
    s.get_json("/v1/images").await["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `len` bytes no compressor can shrink (xorshift64), so a layer of them is as big on the wire
/// as on disk.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}
