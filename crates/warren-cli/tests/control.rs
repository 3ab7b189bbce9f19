//! The control plane's cross-cutting parts: Idempotency-Key on every other mutating call,
//! request ids in answers and logs, and `/metrics`.
mod common;

use common::ops::FakeRegistry;
use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn every_other_mutating_call_takes_an_idempotency_key() {
    let s = TestServer::start().await;
    let post = |path: String, key: &'static str, body: Value| {
        s.req(Method::POST, &path)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    // A volume made once, the answer replayed.
    let a = post(
        "/v1/volumes".into(),
        "vol-1",
        json!({"name": "v1", "size_mb": 16}),
    )
    .await
    .expect("a");
    assert_eq!(a.status(), StatusCode::CREATED);
    assert!(a.headers().get("idempotent-replayed").is_none());
    let a: Value = a.json().await.expect("a");
    let b = post(
        "/v1/volumes".into(),
        "vol-1",
        json!({"name": "v1", "size_mb": 16}),
    )
    .await
    .expect("b");
    assert_eq!(b.status(), StatusCode::CREATED);
    assert_eq!(b.headers()["idempotent-replayed"], "true");
    let b: Value = b.json().await.expect("b");
    assert_eq!(a, b);
    // Another request under the key: refused, nothing made.
    let c = post(
        "/v1/volumes".into(),
        "vol-1",
        json!({"name": "v2", "size_mb": 16}),
    )
    .await
    .expect("c");
    assert_eq!(c.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let vols = s.get_json("/v1/volumes").await;
    assert_eq!(vols["volumes"].as_array().map(Vec::len), Some(1), "{vols}");
    // A refusal is an answer too.
    let d = post(
        "/v1/volumes".into(),
        "vol-2",
        json!({"name": "v1", "size_mb": 16}),
    )
    .await
    .expect("d");
    assert_eq!(d.status(), StatusCode::CONFLICT);
    let d = post(
        "/v1/volumes".into(),
        "vol-2",
        json!({"name": "v1", "size_mb": 16}),
    )
    .await
    .expect("d");
    assert_eq!(d.status(), StatusCode::CONFLICT);
    assert_eq!(d.headers()["idempotent-replayed"], "true");

    // A command run once, however often it is asked with its key.
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let count = json!({"cmd": ["sh", "-c", "echo x >> /root/n; wc -l < /root/n"]});
    let mut outs = Vec::new();
    for _ in 0..3 {
        let r = post(format!("/v1/sandboxes/{id}/exec"), "exec-1", count.clone())
            .await
            .expect("exec");
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.expect("exec");
        outs.push(v["stdout"].as_str().unwrap_or_default().trim().to_owned());
    }
    assert_eq!(outs, ["1", "1", "1"]);
    assert_eq!(s.sh(id, "wc -l < /root/n").await.trim(), "1");
    // A streamed answer is not kept: the retry is told the call ran.
    let streamed = || {
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .header("idempotency-key", "exec-2")
            .header("accept", "text/event-stream")
            .json(&count)
            .send()
    };
    let first = streamed().await.expect("stream");
    assert_eq!(first.status(), StatusCode::OK);
    let _ = first.text().await;
    assert_eq!(
        streamed().await.expect("stream").status(),
        StatusCode::CONFLICT
    );
    assert_eq!(s.sh(id, "wc -l < /root/n").await.trim(), "2");
    // A new API key's answer (its secret) is never kept: each call makes its own.
    let mut secrets = Vec::new();
    for _ in 0..2 {
        let r = post("/v1/keys".into(), "key-1", json!({"name": "k"}))
            .await
            .expect("key");
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(r.headers().get("idempotent-replayed").is_none());
        let v: Value = r.json().await.expect("key");
        secrets.push(v["secret"].as_str().unwrap_or_default().to_owned());
    }
    assert_ne!(secrets[0], secrets[1]);
    // Keys belong to the API key that sent them.
    let other: Value = s
        .post("/v1/keys", Some(json!({"name": "other"})))
        .await
        .json()
        .await
        .expect("key");
    let r = s
        .http
        .post(format!("{}/v1/sandboxes/{id}/exec", s.url))
        .bearer_auth(other["secret"].as_str().expect("secret"))
        .header("idempotency-key", "exec-1")
        .json(&count)
        .send()
        .await
        .expect("exec");
    let v: Value = r.json().await.expect("exec");
    assert_eq!(v["stdout"].as_str().map(str::trim), Some("3"));
    s.delete(id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_have_ids_in_the_answer_and_in_every_log_line() {
    let s = TestServer::start().await;
    let resp = s
        .req(Method::GET, "/v1/sandboxes")
        .send()
        .await
        .expect("list");
    let made = resp.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert_eq!(made.len(), 16, "{made}");
    // The client's own id is kept, and names what its operation logs, on its worker too.
    let failing = FakeRegistry::start("503 Service Unavailable").await;
    failing.release();
    let resp = s
        .req(Method::POST, "/v1/images/pull")
        .header("x-request-id", "req-test-42")
        .json(&json!({ "ref": failing.reference() }))
        .send()
        .await
        .expect("pull");
    assert_eq!(resp.headers()["x-request-id"], "req-test-42");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let log = std::fs::read_to_string(s.data_dir.join("server.log")).expect("log");
    let retries: Vec<&str> = log.lines().filter(|l| l.contains("retrying")).collect();
    assert_eq!(retries.len(), 3, "{log}");
    assert!(
        retries
            .iter()
            .all(|l| l.contains("request{id=req-test-42") && l.contains("operation{id=op-")),
        "{retries:?}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_tell_sandboxes_operations_execs_and_headroom() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    s.sh(id, "true").await;
    // Through the preview proxy: a port nothing listens on (502, an error page's bytes).
    let proxied = s
        .http
        .get(format!("{}/", s.url))
        .header("host", format!("{id}-8080.localhost"))
        .header(
            "x-warren-traffic-token",
            sb["traffic_token"].as_str().expect("token"),
        )
        .send()
        .await
        .expect("proxied");
    assert_eq!(proxied.status(), StatusCode::BAD_GATEWAY);
    let page = proxied.bytes().await.expect("page").len();
    let resp = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let text = s
        .req(Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in {text}"))
    };
    assert_eq!(
        value(r#"warren_sandboxes{state="running",runtime="runc"}"#),
        1.0
    );
    assert_eq!(
        value(r#"warren_operations_total{kind="create",outcome="succeeded"}"#),
        1.0
    );
    assert_eq!(
        value(r#"warren_operation_duration_seconds_count{kind="create"}"#),
        1.0
    );
    assert!(value("warren_exec_duration_seconds_count") >= 1.0);
    assert!(value("warren_store_round_trip_seconds") > 0.0);
    // Every store call is timed, by call: the create recorded its sandbox.
    assert!(value(r#"warren_store_call_duration_seconds_count{call="insert_sandbox"}"#) >= 1.0);
    assert!(value(r#"warren_store_call_duration_seconds_sum{call="insert_sandbox"}"#) > 0.0);
    assert!(value("warren_host_memory_available_bytes") > 0.0);
    assert!(value("warren_host_disk_available_bytes") > 0.0);
    assert!(value("warren_host_cpus") >= 1.0);
    assert_eq!(
        value(r#"warren_proxy_requests_total{target="app",class="5xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"warren_proxy_response_bytes_total{target="app"}"#),
        page as f64
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    s.delete(id).await;
    s.shutdown().await;
}
