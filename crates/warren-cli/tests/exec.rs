//! Exec through the API under both runtimes: exit codes, stderr, env, cwd, stdin, timeout,
//! 10 MB of output (JSON and SSE). Needs root, crun, runsc.
mod common;

use std::time::Instant;

use common::{TestServer, RUNTIMES};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn exec_suite(s: &TestServer, runtime: &str) {
    let sb = s
        .create(json!({"image": "busybox", "runtime": runtime, "env": {"FROM_SANDBOX": "yes"}}))
        .await;
    let id = sb["id"].as_str().expect("id");

    let v = s
        .exec(
            id,
            json!({"cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
        )
        .await;
    assert_eq!(v["exit_code"], 3, "{runtime}: {v}");
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["timed_out"], false);
    assert!(v["id"].as_str().is_some_and(|i| !i.is_empty()));

    let v = s
        .exec(
            id,
            json!({"cmd": ["sh", "-c", "echo $FOO $FROM_SANDBOX"], "env": {"FOO": "bar"}}),
        )
        .await;
    assert_eq!(v["stdout"], "bar yes\n", "{runtime}");

    let v = s.exec(id, json!({"cmd": ["pwd"], "cwd": "/tmp"})).await;
    assert_eq!(v["stdout"], "/tmp\n", "{runtime}");

    let v = s
        .exec(
            id,
            json!({"cmd": ["sh", "-c", "tr a-z A-Z"], "stdin": "hello stdin\n"}),
        )
        .await;
    assert_eq!(v["stdout"], "HELLO STDIN\n", "{runtime}");

    let t = Instant::now();
    let v = s
        .exec(id, json!({"cmd": ["sh", "-c", "sleep 30"], "timeout_s": 1}))
        .await;
    assert_eq!(v["timed_out"], true, "{runtime}: {v}");
    assert_eq!(v["exit_code"], 137, "{runtime}: {v}");
    assert!(
        t.elapsed().as_secs() < 10,
        "{runtime}: timeout took {:?}",
        t.elapsed()
    );

    // 10 MB through the JSON path.
    let v = s
        .exec(
            id,
            json!({"cmd": ["sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' a"]}),
        )
        .await;
    assert_eq!(v["exit_code"], 0);
    let out = v["stdout"].as_str().expect("stdout");
    assert_eq!(out.len(), 10_000_000, "{runtime}");
    assert!(out.bytes().all(|b| b == b'a'));

    // ... and through SSE, counted as it streams.
    let resp = s
        .req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
        .header("accept", "text/event-stream")
        .json(&json!({"cmd": ["sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' b; echo done >&2; exit 4"]}))
        .send()
        .await
        .expect("sse exec");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
    let (mut bytes, mut chunks, mut stderr, mut exit) = (0usize, 0usize, String::new(), None);
    while let Some(ev) = events.next().await {
        let ev = ev.expect("sse event");
        match ev.event.as_str() {
            "stdout" => {
                assert!(ev.data.bytes().all(|b| b == b'b'));
                bytes += ev.data.len();
                chunks += 1;
            }
            "stderr" => stderr.push_str(&ev.data),
            "exit" => {
                exit =
                    Some(serde_json::from_str::<serde_json::Value>(&ev.data).expect("exit json"));
                break;
            }
            other => panic!("unexpected event {other}: {}", ev.data),
        }
    }
    assert_eq!(bytes, 10_000_000, "{runtime}");
    assert!(
        chunks > 10,
        "{runtime}: output arrived in {chunks} chunks, not streamed"
    );
    assert_eq!(stderr, "done\n");
    assert_eq!(exit.expect("exit event")["exit_code"], 4);

    // A program that does not exist is the caller's error, not a 500.
    let resp = s
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"cmd": ["/no/such/program"]})),
        )
        .await;
    assert!(
        resp.status().is_client_error(),
        "{runtime}: {}",
        resp.status()
    );

    s.delete(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runc() {
    let s = TestServer::start().await;
    exec_suite(&s, RUNTIMES[0]).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_gvisor() {
    let s = TestServer::start().await;
    exec_suite(&s, RUNTIMES[1]).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn history_records_user_and_system_steps() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    s.exec(
        id,
        json!({"cmd": ["sh", "-c", "echo one; echo two >&2; exit 2"], "label": "Counting"}),
    )
    .await;
    s.exec(
        id,
        json!({"cmd": ["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x"]}),
    )
    .await;
    let v: serde_json::Value = s.get_json(&format!("/v1/sandboxes/{id}/execs")).await;
    let execs = v["execs"].as_array().expect("array");
    let system: Vec<&str> = execs
        .iter()
        .filter(|e| e["kind"] == "system")
        .filter_map(|e| e["cmd"][0].as_str())
        .collect();
    assert_eq!(
        system,
        [
            "warren:rootfs",
            "warren:network",
            "warren:bundle",
            "warren:runtime",
            "warren:agent"
        ],
        "{v}"
    );
    let user: Vec<&serde_json::Value> = execs.iter().filter(|e| e["kind"] == "user").collect();
    assert_eq!(user.len(), 2, "{v}");
    assert_eq!(user[0]["label"], "Counting");
    assert_eq!(
        user[0]["cmd"],
        json!(["sh", "-c", "echo one; echo two >&2; exit 2"])
    );
    assert_eq!(user[0]["exit_code"], 2);
    assert_eq!(user[0]["stdout"], "one\n");
    assert_eq!(user[0]["stderr"], "two\n");
    assert!(user[0]["duration_ms"].is_u64() && user[0]["started_at"].is_string());
    // Output is kept up to 64 KiB per stream.
    assert_eq!(user[1]["stdout"].as_str().map(str::len), Some(64 * 1024));
    // ?limit keeps the latest.
    let v: serde_json::Value = s
        .get_json(&format!("/v1/sandboxes/{id}/execs?limit=1"))
        .await;
    assert_eq!(v["execs"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["execs"][0]["id"], user[1]["id"]);
    let r = s
        .req(Method::GET, "/v1/sandboxes/aaaaaaaaaaaaaaaa/execs")
        .send()
        .await
        .expect("execs");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.delete(id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn history_past_retention_is_pruned() {
    let s = TestServer::start_with(&["--history-retention", "2s"]).await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    s.exec(id, json!({"cmd": ["true"]})).await;
    let count = |v: serde_json::Value| v["execs"].as_array().map(Vec::len).unwrap_or(0);
    let url = format!("/v1/sandboxes/{id}/execs");
    let first: serde_json::Value = s.get_json(&url).await;
    assert!(count(first) >= 6);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v: serde_json::Value = s.get_json(&url).await;
        if count(v) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "history not pruned after 20 s with a 2 s retention"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    s.delete(id).await;
    s.shutdown().await;
}
