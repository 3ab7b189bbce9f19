//! Inputs past a limit get a 422 naming the limit (400 in E2B's shape on its routes) and leave
//! nothing behind, instead of a 500 from the runtime, a failed record, a slow acceptance or a
//! lifetime that silently became "never". Needs root and crun.
mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// `n` short arguments.
fn args(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("a{i}")).collect()
}

/// `n` environment variables.
fn vars(n: usize) -> serde_json::Map<String, Value> {
    (0..n).map(|i| (format!("V{i}"), json!("x"))).collect()
}

/// Asserts a `/v1` 422 whose message names `limit`.
async fn refused(resp: reqwest::Response, limit: &str, what: &str) {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
    assert_eq!(v["error"]["code"], "invalid", "{what}: {v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(limit), "{what}: {msg:?} does not name {limit}");
}

/// Asserts an E2B 400 (`{"code": 400, "message"}`) whose message names `limit`.
async fn refused_e2b(resp: reqwest::Response, limit: &str, what: &str) {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {v}");
    assert_eq!(v["code"], 400, "{what}: {v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(msg.contains(limit), "{what}: {msg:?} does not name {limit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_past_a_limit_are_refused_and_record_nothing() {
    let s = TestServer::start().await;
    let cases = [
        // Once a 500 from crun (a quota under 1 ms) and a failed sandbox on record.
        ("cpu", json!({"cpu": 0.0001}), "0.01"),
        // Once a 500.
        ("200k arguments", json!({"cmd": args(200_000)}), "4096"),
        (
            "a 200 KiB argument",
            json!({"cmd": ["sh", "x".repeat(200 << 10)]}),
            "131072 (128 KiB)",
        ),
        // Once accepted after seconds of work.
        ("100k variables", json!({"env": vars(100_000)}), "1000"),
        (
            "a 200 KiB variable",
            json!({"env": {"BIG": "x".repeat(200 << 10)}}),
            "131072 (128 KiB)",
        ),
        // Once "never".
        ("timeout_s", json!({"timeout_s": u64::MAX}), "2592000"),
        (
            "timeout_s",
            json!({"timeout_s": 30 * 86_400 + 1}),
            "2592000",
        ),
        ("metadata", json!({"metadata": vars(1000)}), "256"),
        ("disk_mb", json!({"disk_mb": 0}), "16"),
        ("disk_mb", json!({"disk_mb": u64::MAX}), "16777216"),
        ("memory_mb", json!({"memory_mb": 1}), "16"),
        ("pids", json!({"pids": 2_000_000}), "1000000"),
    ];
    for (what, extra, limit) in cases {
        let mut body = json!({"image": "busybox", "runtime": "runc"});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let began = Instant::now();
        refused(s.post("/v1/sandboxes", Some(body)).await, limit, what).await;
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "{what}: refused only after {:?}",
            began.elapsed()
        );
    }
    let list = s.get_json("/v1/sandboxes").await;
    assert_eq!(list["sandboxes"], json!([]), "{list}");

    // E2B's create goes through the same checks, answered in E2B's shape.
    let e2b = |body: Value| {
        s.http
            .post(format!("{}/v2/sandboxes", s.url))
            .header("X-API-KEY", &s.key)
            .json(&body)
            .send()
    };
    let resp = e2b(json!({"templateID": "busybox", "timeout": u64::MAX}))
        .await
        .expect("create");
    refused_e2b(resp, "2592000", "E2B timeout").await;
    let resp = e2b(json!({"templateID": "busybox", "envVars": vars(100_000)}))
        .await
        .expect("create");
    refused_e2b(resp, "1000", "E2B envVars").await;
    let list = s.get_json("/v1/sandboxes").await;
    assert_eq!(list["sandboxes"], json!([]), "{list}");

    // At the limits, a sandbox runs.
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "cpu": 0.01,
                       "timeout_s": 30 * 86_400, "env": vars(1000)}))
        .await;
    assert_eq!(sb["cpu"], 0.01);
    assert!(sb["expires_at"].is_string(), "{sb}");
    s.delete(sb["id"].as_str().expect("id")).await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "timeout_s": 0}))
        .await;
    assert!(sb["expires_at"].is_null(), "0 is still no limit: {sb}");
    s.delete(sb["id"].as_str().expect("id")).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn execs_and_timeouts_past_a_limit_are_refused() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let expires = sb["expires_at"].clone();
    assert!(expires.is_string(), "{sb}");
    let exec_path = format!("/v1/sandboxes/{id}/exec");
    let exec = |body: Value| s.post(&exec_path, Some(body));
    refused(
        exec(json!({"cmd": args(200_000)})).await,
        "4096",
        "exec arguments",
    )
    .await;
    refused(
        exec(json!({"cmd": ["true"], "env": vars(100_000)})).await,
        "1000",
        "exec env",
    )
    .await;
    refused(
        exec(json!({"cmd": ["true"], "timeout_s": u64::MAX})).await,
        "2592000",
        "exec timeout_s",
    )
    .await;
    // Up to the limit, every argument arrives.
    let mut cmd = vec!["sh".to_owned(), "-c".into(), "echo $#".into(), "sh".into()];
    cmd.extend(args(4096 - cmd.len()));
    let out = s.exec(id, json!({ "cmd": cmd })).await;
    assert_eq!(out["stdout"], "4092\n", "{out}");

    // A lifetime past the limit is refused by both routes and changes nothing.
    refused(
        s.post(
            &format!("/v1/sandboxes/{id}/timeout"),
            Some(json!({"timeout_s": u64::MAX})),
        )
        .await,
        "2592000",
        "POST timeout",
    )
    .await;
    for path in ["timeout", "connect"] {
        let resp = s
            .http
            .post(format!("{}/sandboxes/{id}/{path}", s.url))
            .header("X-API-KEY", &s.key)
            .json(&json!({"timeout": u64::MAX}))
            .send()
            .await
            .expect("E2B");
        refused_e2b(resp, "2592000", path).await;
    }
    assert_eq!(s.get(id).await.1["expires_at"], expires);
    let resp = s
        .req(Method::POST, &format!("/v1/sandboxes/{id}/timeout"))
        .json(&json!({"timeout_s": 0}))
        .send()
        .await
        .expect("timeout");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(s.get(id).await.1["expires_at"].is_null());
    s.delete(id).await;
    s.shutdown().await;
}
