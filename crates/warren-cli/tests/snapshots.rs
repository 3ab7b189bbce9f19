//! Snapshots: named, immutable copies of a sandbox (gVisor or runc); new sandboxes made from
//! one run its processes with their memory (or, files only, boot afresh on its files), each
//! with its own copy; the source goes on as it was. Needs root, the pinned runsc, crun and
//! CRIU as scripts/build-criu.sh builds them, busybox-static.
mod common;

use common::state::{count, inside, make_on, pause, through_proxy};
use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn snapshot(s: &TestServer, id: &str, body: Value) -> (StatusCode, Value) {
    let resp = s
        .post(&format!("/v1/sandboxes/{id}/snapshots"), Some(body))
        .await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn from_snapshot(s: &TestServer, body: Value) -> (StatusCode, Value) {
    let resp = s.post("/v1/sandboxes", Some(body)).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_made_from_a_snapshot_start_where_it_was() {
    starts_where_it_was("gvisor").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runc_sandboxes_made_from_a_snapshot_start_where_it_was() {
    starts_where_it_was("runc").await;
}

async fn starts_where_it_was(rt: &str) {
    let s = TestServer::start().await;
    let id = make_on(&s, rt).await;
    s.sh(&id, "echo at-snapshot > /root/mark").await;
    let before = inside(&s, &id).await;

    let (status, snap) = snapshot(&s, &id, json!({"name": "warm"})).await;
    assert_eq!(status, StatusCode::CREATED, "{snap}");
    assert_eq!(snap["memory"], true);
    assert_eq!(snap["source"], id.as_str());
    assert!(
        snap["receipt"]["memory"]["bytes"].as_u64().unwrap_or(0) > 32 << 20,
        "{snap}"
    );
    assert_eq!(
        snapshot(&s, &id, json!({"name": "warm"})).await.0,
        StatusCode::CONFLICT
    );
    let (status, files) = snapshot(&s, &id, json!({"name": "cold", "memory": false})).await;
    assert_eq!(status, StatusCode::CREATED, "{files}");
    // The source runs on, and moves on.
    assert_eq!(s.get(&id).await.1["state"], "running");
    s.sh(&id, "echo after-snapshot > /root/mark").await;

    // Two sandboxes from the snapshot with memory: its processes, memory and files, each at
    // its own address, each with its own copy.
    let mut made = Vec::new();
    for i in 0..2 {
        let (status, sb) = from_snapshot(
            &s,
            json!({"snapshot": "warm", "metadata": {"n": i.to_string()}}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{sb}");
        assert_eq!(sb["state"], "running");
        let new = sb["id"].as_str().expect("id").to_owned();
        assert_eq!(inside(&s, &new).await, before, "{new}");
        assert_eq!(s.sh(&new, "cat /root/mark").await, "at-snapshot\n");
        assert!(count(&s, &new).await > 1, "its shell counts on");
        let (status, body) = through_proxy(&s, &new).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello\n"));
        s.sh(&new, &format!("echo mine-{i} > /root/mark")).await;
        made.push(new);
    }
    assert_eq!(s.sh(&made[0], "cat /root/mark").await, "mine-0\n");
    assert_eq!(s.sh(&id, "cat /root/mark").await, "after-snapshot\n");

    // Files only: booted afresh (the counter starts again), on the snapshot's files.
    let (status, sb) = from_snapshot(&s, json!({"snapshot": "cold"})).await;
    assert_eq!(status, StatusCode::CREATED, "{sb}");
    let cold = sb["id"].as_str().expect("id").to_owned();
    assert_eq!(s.sh(&cold, "cat /root/mark").await, "at-snapshot\n");
    made.push(cold);

    // What a create from a snapshot may not say, and a snapshot that is not there.
    for (body, why) in [
        (
            json!({"snapshot": "warm", "image": "busybox"}),
            "image comes from snapshot",
        ),
        (json!({"snapshot": "nope"}), "does not exist"),
    ] {
        let (status, v) = from_snapshot(&s, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(why)),
            "{v}"
        );
    }

    // Listed; removed (sandboxes made from it keep their copies); a paused source too.
    let list = s.get_json("/v1/snapshots").await;
    let names: Vec<&str> = list["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert_eq!(names, ["cold", "warm"]);
    for name in ["warm", "cold"] {
        let resp = s
            .req(Method::DELETE, &format!("/v1/snapshots/{name}"))
            .send()
            .await
            .expect("DELETE");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    assert!(!s.data_dir.join("snapshots/warm").exists());
    assert_eq!(s.sh(&made[1], "cat /root/mark").await, "mine-1\n");
    assert_eq!(pause(&s, &id).await.0, StatusCode::OK);
    assert_eq!(
        snapshot(&s, &id, json!({"name": "of-paused"})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(s.get(&id).await.1["state"], "paused");

    made.push(id);
    for x in &made {
        let sb = s.get(x).await.1;
        s.delete(x).await;
        assert!(s.leftovers(&sb).is_empty(), "{x}: {:?}", s.leftovers(&sb));
    }
    s.shutdown().await;
}
