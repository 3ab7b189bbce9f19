//! Helpers of the image build tests: a build context, posting a build, reading its events.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::TestServer;

/// How long one build may take here (a few RUN steps, each a gVisor sandbox).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// The build context: a directory `app/` (a script and a subdirectory), two files; owned by
/// uid 4242 in the tar (COPY makes them root's or `--chown`'s), fixed mtimes (the same bytes
/// each time, so COPY layers and the steps after them hit the cache).
pub fn context_tar() -> Vec<u8> {
    context_tar_with(b"some notes\n")
}

/// [`context_tar`] with other contents for `notes.txt`.
pub fn context_tar_with(notes: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(4242);
        h.set_gid(4242);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, data).expect("append");
    };
    add("app/", tar::EntryType::Directory, 0o755, b"");
    add(
        "app/main.sh",
        tar::EntryType::Regular,
        0o755,
        b"#!/bin/sh\necho main\n",
    );
    add("app/lib/", tar::EntryType::Directory, 0o750, b"");
    add(
        "app/lib/util.txt",
        tar::EntryType::Regular,
        0o644,
        b"util\n",
    );
    add("config.txt", tar::EntryType::Regular, 0o600, b"key=value\n");
    add("notes.txt", tar::EntryType::Regular, 0o644, notes);
    b.into_inner().expect("tar")
}

/// `POST /v1/images/build?name=NAME&…` with the given multipart fields.
pub async fn post_build(
    s: &TestServer,
    query: &str,
    dockerfile: Option<&str>,
    context: Option<Vec<u8>>,
) -> reqwest::Response {
    let mut form = Form::new();
    if let Some(d) = dockerfile {
        form = form.text("dockerfile", d.to_owned());
    }
    if let Some(c) = context {
        let part = Part::bytes(c)
            .file_name("context.tar")
            .mime_str("application/x-tar")
            .expect("mime");
        form = form.part("context", part);
    }
    s.req(Method::POST, &format!("/v1/images/build?{query}"))
        .multipart(form)
        .send()
        .await
        .expect("POST /v1/images/build")
}

/// The NDJSON events of a build's answer, read to the end; checks the stream ends with its
/// one `done` or `error` event.
pub async fn events_of(resp: reqwest::Response) -> Vec<Value> {
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let text = tokio::time::timeout(BUILD_TIMEOUT, resp.text())
        .await
        .expect("the build did not finish in time")
        .expect("reading the build's events");
    assert!(text.ends_with('\n'), "events end with a newline: {text:?}");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event {l:?}: {e}")))
        .collect();
    let ends = events
        .iter()
        .filter(|e| e["type"] == "done" || e["type"] == "error")
        .count();
    assert_eq!(ends, 1, "one done or error event: {events:#?}");
    let last = events.last().expect("some events");
    assert!(
        last["type"] == "done" || last["type"] == "error",
        "the stream ends with done or error: {last}"
    );
    events
}

/// Builds and insists it succeeded: the build id, its events and the image.
pub async fn build_ok(
    s: &TestServer,
    name: &str,
    dockerfile: &str,
    context: Option<Vec<u8>>,
) -> (String, Vec<Value>, Value) {
    let started = Instant::now();
    let resp = post_build(s, &format!("name={name}"), Some(dockerfile), context).await;
    let status = resp.status();
    if status != StatusCode::OK {
        let body = resp.text().await.unwrap_or_default();
        panic!("building {name}: {status} {body}");
    }
    let id = build_id_of(&resp);
    let events = events_of(resp).await;
    let last = events.last().expect("events");
    assert_eq!(last["type"], "done", "building {name}: {events:#?}");
    eprintln!(
        "built {name} in {:.1} s ({} events)",
        started.elapsed().as_secs_f64(),
        events.len()
    );
    let image = last["image"].clone();
    (id, events, image)
}

pub fn steps(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["type"] == "step").collect()
}

pub fn log_lines(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["type"] == "log")
        .filter_map(|e| e["message"].as_str())
        .collect()
}

/// The RUN steps' `cached` flags, in order.
pub fn run_cached(events: &[Value]) -> Vec<bool> {
    steps(events)
        .into_iter()
        .filter(|e| e["text"].as_str().unwrap_or("").starts_with("RUN "))
        .map(|e| e["cached"].as_bool().expect("cached"))
        .collect()
}

pub async fn images(s: &TestServer) -> Vec<Value> {
    let v = s.get_json("/v1/images").await;
    v["images"].as_array().cloned().expect("images list")
}

pub async fn image(s: &TestServer, name: &str) -> Option<Value> {
    images(s).await.into_iter().find(|i| i["name"] == name)
}

pub async fn expect_error(resp: reqwest::Response, status: StatusCode, code: &str) -> String {
    let got = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    v["error"]["message"].as_str().expect("message").to_owned()
}

pub fn layer_dir(s: &TestServer, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    s.data_dir.join("images/layers").join(hex)
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Polls the sandbox's stored logs for a line.
pub async fn wait_for_log(s: &TestServer, id: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = s
            .get_json(&format!("/v1/sandboxes/{id}/logs?follow=false"))
            .await;
        let lines = v["lines"].as_array().cloned().unwrap_or_default();
        if lines.iter().any(|l| l["text"] == text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no log line {text:?}: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The build's last event, whatever it was.
pub async fn build_outcome(s: &TestServer, name: &str, dockerfile: &str) -> Value {
    build_events(s, name, dockerfile)
        .await
        .pop()
        .expect("events")
}

/// Every event of a build of `name` from `dockerfile` (with [`context_tar`]).
pub async fn build_events(s: &TestServer, name: &str, dockerfile: &str) -> Vec<Value> {
    let resp = post_build(
        s,
        &format!("name={name}"),
        Some(dockerfile),
        Some(context_tar()),
    )
    .await;
    events_of(resp).await
}

/// The build id a build's answer names (`X-Warren-Build-Id`).
pub fn build_id_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-warren-build-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-warren-build-id")
        .to_owned()
}
