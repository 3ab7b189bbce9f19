//! Logs: the main command's output and lifecycle events, numbered without gaps or duplicates,
//! resumable after a dropped connection and across a `kill -9` of the server; `/v1/events`.
//! Needs root, crun, runsc.
mod common;

use std::time::{Duration, Instant};

use common::{TestServer, RUNTIMES};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const BUSY: &str = "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); \
                    [ $((i % 200)) = 0 ] && sleep 0.05; done; echo finished >&2; sleep 1000";

/// The whole stored log, page by page.
async fn all_lines(s: &TestServer, id: &str) -> Vec<Value> {
    let (mut after, mut all) = (0, Vec::new());
    loop {
        let v: Value = s
            .get_json(&format!(
                "/v1/sandboxes/{id}/logs?follow=false&after={after}"
            ))
            .await;
        all.extend(v["lines"].as_array().cloned().unwrap_or_default());
        if v["more"] != true {
            return all;
        }
        after = v["next"].as_u64().expect("next");
    }
}

async fn wait_for_line(s: &TestServer, id: &str, text: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = all_lines(s, id).await;
        if lines.iter().any(|l| l["text"] == text) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no line {text:?}: {:?}",
            lines.last()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads SSE log events until `stop` says so; returns the lines.
async fn read_sse(
    s: &TestServer,
    id: &str,
    last_event_id: Option<u64>,
    stop: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut rb = s
        .req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))
        .header("accept", "text/event-stream");
    if let Some(n) = last_event_id {
        rb = rb.header("last-event-id", n.to_string());
    }
    let resp = rb.send().await.expect("sse");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !stop(&got) {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("log stream stalled");
        let ev = ev.expect("stream ended").expect("event");
        let line: Value = serde_json::from_str(&ev.data).expect("line json");
        assert_eq!(
            ev.id,
            line["seq"].to_string(),
            "event id is the sequence number"
        );
        got.push(line);
    }
    got
}

fn assert_contiguous(lines: &[Value]) {
    for (i, l) in lines.iter().enumerate() {
        assert!(l["seq"] == (i + 1) as u64, "gap or duplicate at {i}: {l}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_log_resumes_without_gaps_or_duplicates() {
    let s = TestServer::start().await;
    for rt in RUNTIMES {
        let sb = s
            .create(json!({"image": "busybox", "runtime": rt, "cmd": ["sh", "-c", BUSY]}))
            .await;
        let id = sb["id"].as_str().expect("id");
        // Read part of it while it is still being written, drop the connection, resume.
        let first = read_sse(&s, id, None, |got| got.len() >= 300).await;
        let last_seq = first.last().and_then(|l| l["seq"].as_u64()).expect("seq");
        let rest = read_sse(&s, id, Some(last_seq), |got| {
            got.iter().any(|l| l["text"] == "finished")
        })
        .await;
        let whole = wait_for_line(&s, id, "finished").await;
        let mut joined = first.clone();
        joined.extend(rest);
        assert_contiguous(&joined);
        assert_contiguous(&whole);
        assert!(
            joined.len() <= whole.len(),
            "{rt}: streamed more than stored"
        );
        if let Some(i) = joined.iter().zip(&whole).position(|(a, b)| a != b) {
            panic!(
                "{rt}: resumed stream differs from the stored log at {i}: {} vs {}",
                joined[i], whole[i]
            );
        }
        let out: Vec<&str> = whole
            .iter()
            .filter(|l| l["stream"] == "stdout")
            .filter_map(|l| l["text"].as_str())
            .collect();
        let want: Vec<String> = (0..2000).map(|i| format!("line {i}")).collect();
        assert!(
            out == want,
            "{rt}: {} stdout lines, first mismatch at {:?}",
            out.len(),
            out.iter().zip(&want).position(|(a, b)| a != b)
        );
        assert!(whole
            .iter()
            .any(|l| l["stream"] == "stderr" && l["text"] == "finished"));
        assert!(
            whole
                .iter()
                .any(|l| l["stream"] == "event" && l["text"] == "running"),
            "{rt}"
        );
        // ?after= works like Last-Event-ID.
        let v: Value = s
            .get_json(&format!("/v1/sandboxes/{id}/logs?follow=false&after=1990"))
            .await;
        assert_eq!(v["lines"][0]["seq"], 1991);
        s.delete(id).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_survive_kill_9_without_gaps_or_duplicates() {
    let mut s = TestServer::start().await;
    let script = "i=0; while [ $i -lt 150 ]; do echo tick $i; i=$((i+1)); sleep 0.02; done; echo over; sleep 1000";
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "cmd": ["sh", "-c", script]}))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.kill9();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let s2 = TestServer::start_on(s.data_dir.clone(), s.port, s.subnet.clone()).await;
    let whole = wait_for_line(&s2, &id, "over").await;
    assert_contiguous(&whole);
    let ticks: Vec<&str> = whole
        .iter()
        .filter(|l| l["stream"] == "stdout")
        .filter_map(|l| l["text"].as_str())
        .collect();
    let mut want: Vec<String> = (0..150).map(|i| format!("tick {i}")).collect();
    want.push("over".into());
    assert!(
        ticks == want,
        "ticks: {} lines, first mismatch at {:?}",
        ticks.len(),
        ticks.iter().zip(&want).position(|(a, b)| a != b)
    );
    s2.delete(&id).await;
    s2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_stream_lifecycle_changes() {
    let s = TestServer::start().await;
    let resp = s
        .req(Method::GET, "/v1/events")
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    s.delete(&id).await;
    let mut states = Vec::new();
    while !states.contains(&"deleted".to_owned()) {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("events stalled")
            .expect("ended")
            .expect("event");
        // Operations are told on the same stream.
        if ev.event == "operation" {
            continue;
        }
        assert_eq!(ev.event, "sandbox");
        let v: Value = serde_json::from_str(&ev.data).expect("json");
        if v["id"] == id.as_str() {
            states.push(v["state"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        states,
        [
            "provisioning",
            "starting",
            "running",
            "terminating",
            "deleted"
        ]
    );
    s.shutdown().await;
}
