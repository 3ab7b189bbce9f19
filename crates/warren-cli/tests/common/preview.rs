//! The preview proxy's test subject: a sandbox running the agent's `demo-http` server, and
//! requests addressed to it by preview host.
use std::time::{Duration, Instant};

use reqwest::{header, Method};
use serde_json::{json, Value};

use super::TestServer;

pub const PORT: u16 = 8000;

/// A running sandbox whose main command is the demo server on port 8000, once the server
/// listens (as its `ports` say).
pub async fn demo(s: &TestServer, runtime: &str, public: bool) -> Value {
    let sb = s
        .create(json!({
            "image": "busybox",
            "runtime": runtime,
            "public": public,
            "cmd": ["/.warren/agent", "demo-http", PORT.to_string()],
        }))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = s.get_json(&format!("/v1/sandboxes/{id}")).await;
        let listening = got["ports"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["port"] == PORT));
        if listening {
            return got;
        }
        assert!(Instant::now() < deadline, "demo-http never listened: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn host(id: &str, port: u16) -> String {
    format!("{id}-{port}.localhost")
}

/// A request to the server's listener for `path` on the preview host of `id`.
pub fn at(s: &TestServer, method: Method, id: &str, path: &str) -> reqwest::RequestBuilder {
    s.http
        .request(method, format!("{}{path}", s.url))
        .header(header::HOST, host(id, PORT))
}

pub fn id_of(sb: &Value) -> String {
    sb["id"].as_str().expect("id").to_owned()
}

/// The request headers the demo app saw, for a request to its `/headers` (which must answer 200).
pub async fn seen_headers(rb: reqwest::RequestBuilder) -> Value {
    let resp = rb.send().await.expect("GET");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    resp.json().await.expect("headers")
}
