//! Durable operations: recorded with an id, a state and an error; carried out whether or not
//! the client stays; one per idempotency key; highest priority first; a transient failure
//! retried; and after a `kill -9`, resumed (queued ones, pulls) or settled (creates).
mod common;

use std::time::{Duration, Instant};

use common::ops::{hold_the_worker, newest, pull_async, settled, FakeRegistry};
use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn operations_have_ids_states_results_errors_and_events() {
    let s = TestServer::start().await;
    let mut events = s
        .req(Method::GET, "/v1/events")
        .send()
        .await
        .expect("events");
    let resp = s
        .req(Method::POST, "/v1/sandboxes")
        .json(&json!({"image": "busybox", "runtime": "runc"}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let op_id = resp.headers()["warren-operation"]
        .to_str()
        .expect("header")
        .to_owned();
    let sb: Value = resp.json().await.expect("sandbox");
    let id = sb["id"].as_str().expect("id").to_owned();
    let op = s.get_json(&format!("/v1/operations/{op_id}")).await;
    assert_eq!(op["kind"], "create");
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(op["target"], id.as_str());
    assert_eq!(op["attempts"], 1);
    assert_eq!(op["result"]["id"], id.as_str());
    assert!(op["ended_at"].is_string(), "{op}");

    // A failing one keeps its error, with the status the call answered.
    let resp = s.post(&format!("/v1/sandboxes/{id}/start"), None).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let op = newest(&s, "start", &id).await;
    assert_eq!(op["state"], "failed", "{op}");
    assert_eq!(op["error"]["code"], "conflict", "{op}");

    // `Prefer: respond-async`: 202 at once, the operation at its Location.
    let resp = s
        .req(Method::POST, &format!("/v1/sandboxes/{id}/stop"))
        .header("prefer", "respond-async")
        .send()
        .await
        .expect("stop");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let queued: Value = resp.json().await.expect("operation");
    assert_eq!(
        location,
        format!("/v1/operations/{}", queued["id"].as_str().unwrap_or(""))
    );
    assert_eq!(queued["kind"], "stop");
    let done = settled(
        &s,
        queued["id"].as_str().expect("id"),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["state"], "stopped", "{done}");

    // Filters, and bad ones.
    let list = s.get_json(&format!("/v1/operations?target={id}")).await;
    let kinds: Vec<&str> = list["operations"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["stop", "start", "create"]);
    let resp = s
        .req(Method::GET, "/v1/operations?state=sideways")
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = s
        .req(Method::GET, "/v1/operations/op-nosuch")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // `/v1/events` told of them as they went.
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("\"kind\":\"stop\",\"target\"") || !seen.contains("succeeded") {
        assert!(Instant::now() < deadline, "no operation events: {seen}");
        match tokio::time::timeout(Duration::from_secs(5), events.chunk()).await {
            Ok(Ok(Some(c))) => seen.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    assert!(seen.contains("event: operation"), "{seen}");
    assert!(seen.contains("\"state\":\"running\""), "{seen}");
    s.delete(&id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_cancels_nothing() {
    let s = TestServer::start().await;
    // gVisor takes far longer than 30 ms to start: the client gives up mid-create.
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(30))
        .build()
        .expect("client");
    let cut = impatient
        .post(format!("{}/v1/sandboxes", s.url))
        .bearer_auth(&s.key)
        .json(&json!({"image": "busybox", "runtime": "gvisor", "metadata": {"t": "cut"}}))
        .send()
        .await;
    assert!(cut.is_err(), "the create answered within 30 ms: {cut:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let op = loop {
        let op = s.get_json("/v1/operations?kind=create").await["operations"][0].clone();
        if op["state"] == "succeeded" || op["state"] == "failed" {
            break op;
        }
        assert!(Instant::now() < deadline, "create never ended: {op}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(op["state"], "succeeded", "{op}");
    let id = op["target"].as_str().expect("target").to_owned();
    let (_, sb) = s.get(&id).await;
    assert_eq!(sb["state"], "running", "{sb}");
    assert_eq!(sb["metadata"]["t"], "cut");
    assert_eq!(s.sh(&id, "echo up").await, "up\n");

    // A delete cut off likewise still deletes.
    let cut = impatient
        .delete(format!("{}/v1/sandboxes/{id}", s.url))
        .bearer_auth(&s.key)
        .send()
        .await;
    assert!(cut.is_err(), "the delete answered within 30 ms: {cut:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get(&id).await.0 != StatusCode::NOT_FOUND {
        assert!(Instant::now() < deadline, "sandbox not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let op = newest(&s, "delete", &id).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_makes_one_operation() {
    let s = TestServer::start().await;
    let create = |key: &'static str, body: Value| {
        s.req(Method::POST, "/v1/sandboxes")
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let body = json!({"image": "busybox", "runtime": "runc"});
    // Two at once, and one after: one operation, one sandbox.
    let (a, b) = tokio::join!(create("key-1", body.clone()), create("key-1", body.clone()));
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_eq!(a.status(), StatusCode::CREATED);
    assert_eq!(b.status(), StatusCode::CREATED);
    assert_eq!(
        a.headers()["warren-operation"],
        b.headers()["warren-operation"]
    );
    let a: Value = a.json().await.expect("a");
    let b: Value = b.json().await.expect("b");
    assert_eq!(a["id"], b["id"]);
    let c = create("key-1", body.clone()).await.expect("c");
    assert_eq!(c.status(), StatusCode::CREATED);
    let c: Value = c.json().await.expect("c");
    assert_eq!(a["id"], c["id"]);
    let list = s.get_json("/v1/sandboxes").await;
    assert_eq!(
        list["sandboxes"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );

    // The key with another request: refused, nothing done.
    let other = create("key-1", json!({"image": "busybox", "runtime": "gvisor"}))
        .await
        .expect("other");
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let err: Value = other.json().await.expect("error");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Idempotency-Key")),
        "{err}"
    );
    // A failed call's key answers the same failure again.
    let id = a["id"].as_str().expect("id");
    let start = || {
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/start"))
            .header("idempotency-key", "key-2")
            .send()
    };
    assert_eq!(start().await.expect("start").status(), StatusCode::CONFLICT);
    assert_eq!(start().await.expect("start").status(), StatusCode::CONFLICT);
    let starts = s
        .get_json(&format!("/v1/operations?kind=start&target={id}"))
        .await;
    assert_eq!(starts["operations"].as_array().map(Vec::len), Some(1));
    let bad = s
        .req(Method::POST, &format!("/v1/sandboxes/{id}/stop"))
        .header("idempotency-key", "")
        .send()
        .await
        .expect("stop");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    s.delete(id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_take_the_highest_priority_first_and_retry_transient_failures() {
    let s = TestServer::start_with(&["--operation-workers", "1"]).await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    // The one worker is held by a pull the registry does not answer.
    let (held, blocker) = hold_the_worker(&s).await;
    // Queued behind it: a pull (low) first, then a delete (high).
    let failing = FakeRegistry::start("503 Service Unavailable").await;
    failing.release();
    let low = pull_async(&s, &failing.reference()).await;
    let resp = s
        .req(Method::DELETE, &format!("/v1/sandboxes/{id}"))
        .header("prefer", "respond-async")
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let high: Value = resp.json().await.expect("operation");
    let high = high["id"].as_str().expect("id").to_owned();
    assert_eq!(
        s.get_json(&format!("/v1/operations/{high}")).await["state"],
        "queued"
    );
    held.release();
    let blocker = settled(&s, &blocker, Duration::from_secs(30)).await;
    assert_eq!(blocker["state"], "failed", "{blocker}");
    assert_eq!(blocker["error"]["code"], "not_found", "{blocker}");
    assert_eq!(
        blocker["attempts"], 1,
        "a missing image is not retried: {blocker}"
    );
    let high = settled(&s, &high, Duration::from_secs(30)).await;
    let low = settled(&s, &low, Duration::from_secs(60)).await;
    assert_eq!(high["state"], "succeeded", "{high}");
    assert!(
        high["started_at"].as_str() < low["started_at"].as_str(),
        "the delete waited for the pull queued before it: {high} {low}"
    );
    // A registry answering 503 is tried again with backoff, then given up on.
    assert_eq!(low["state"], "failed", "{low}");
    assert_eq!(low["attempts"], 4, "{low}");
    assert_eq!(low["error"]["code"], "bad_gateway", "{low}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_resumes_queued_and_pull_operations_and_settles_creates() {
    let mut s = TestServer::start_with(&["--operation-workers", "1"]).await;
    let (held, pull) = hold_the_worker(&s).await;
    // Queued behind the held pull when the server dies.
    let resp = s
        .req(Method::POST, "/v1/sandboxes")
        .header("prefer", "respond-async")
        .json(&json!({"image": "busybox", "runtime": "runc", "metadata": {"t": "queued"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let queued: Value = resp.json().await.expect("operation");
    let queued = queued["id"].as_str().expect("id").to_owned();
    s.kill9();
    held.release();

    let s2 = TestServer::start_on_with(
        s.data_dir.clone(),
        "127.0.0.1",
        s.port,
        s.subnet.clone(),
        &["--operation-workers", "1"],
    )
    .await;
    // The create that never began is carried out; the pull cut off is run again.
    let created = settled(&s2, &queued, Duration::from_secs(60)).await;
    assert_eq!(
        created["state"],
        "succeeded",
        "{created} {}",
        std::fs::read_to_string(s2.data_dir.join("server.log")).unwrap_or_default()
    );
    let id = created["target"].as_str().expect("target").to_owned();
    let (_, sb) = s2.get(&id).await;
    assert_eq!(sb["state"], "running", "{sb}");
    assert_eq!(sb["metadata"]["t"], "queued");
    let pull = settled(&s2, &pull, Duration::from_secs(30)).await;
    assert_eq!(pull["state"], "failed", "{pull}");
    assert_eq!(pull["attempts"], 2, "resumed after the restart: {pull}");
    assert_eq!(pull["error"]["code"], "not_found", "{pull}");

    // A create cut off mid-way is settled by what became of its sandbox: running and
    // succeeded, or failed (rolled back) and failed. Never left running.
    let mut s2 = s2;
    let resp = s2
        .req(Method::POST, "/v1/sandboxes")
        .header("prefer", "respond-async")
        .json(&json!({"image": "busybox", "runtime": "gvisor"}))
        .send()
        .await
        .expect("create");
    let cut: Value = resp.json().await.expect("operation");
    let cut = cut["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s2.get_json(&format!("/v1/operations/{cut}")).await["target"] == "" {
        assert!(
            Instant::now() < deadline,
            "the create never recorded its sandbox: {} {}",
            s2.get_json("/v1/operations").await,
            std::fs::read_to_string(s2.data_dir.join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s2.kill9();
    let s3 = TestServer::start_on(s.data_dir.clone(), s.port, s.subnet.clone())
        .await
        .adopt_scratch(s);
    let op = s3.get_json(&format!("/v1/operations/{cut}")).await;
    let target = op["target"].as_str().expect("target");
    let (_, sb) = s3.get(target).await;
    match op["state"].as_str() {
        Some("succeeded") => assert_eq!(sb["state"], "running", "{op} {sb}"),
        Some("failed") => {
            assert_eq!(op["error"]["code"], "interrupted", "{op}");
            assert_eq!(sb["state"], "failed", "{op} {sb}");
            // Released: its container, mounts and network are gone (the graceful stop
            // below checks that nothing of this server is left on the host at all).
            if sb["ip"].is_string() {
                let left: Vec<String> = s3
                    .leftovers(&sb)
                    .into_iter()
                    .filter(|l| l != "sandbox dir")
                    .collect();
                assert!(left.is_empty(), "a rolled-back create left {left:?}");
            }
        }
        _ => panic!("left unfinished after a restart: {op}"),
    }
    s3.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn operations_on_one_sandbox_run_in_the_order_they_were_asked() {
    let s = TestServer::start_with(&["--operation-workers", "1"]).await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    assert_eq!(
        s.post(&format!("/v1/sandboxes/{id}/stop"), None)
            .await
            .status(),
        StatusCode::OK
    );
    let (held, _blocker) = hold_the_worker(&s).await;
    // A start, then a stop (which outranks it): the stop waits for the start.
    let mut ops = Vec::new();
    for verb in ["start", "stop"] {
        let resp = s
            .req(Method::POST, &format!("/v1/sandboxes/{id}/{verb}"))
            .header("prefer", "respond-async")
            .send()
            .await
            .expect(verb);
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let op: Value = resp.json().await.expect("operation");
        ops.push(op["id"].as_str().expect("id").to_owned());
    }
    held.release();
    let start = settled(&s, &ops[0], Duration::from_secs(30)).await;
    let stop = settled(&s, &ops[1], Duration::from_secs(30)).await;
    assert_eq!(start["state"], "succeeded", "{start}");
    assert_eq!(stop["state"], "succeeded", "{stop}");
    assert!(
        start["ended_at"].as_str() <= stop["started_at"].as_str(),
        "{start} {stop}"
    );
    let (_, sb) = s.get(id).await;
    assert_eq!(sb["state"], "stopped", "{sb}");
    s.delete(id).await;
    s.shutdown().await;
}
