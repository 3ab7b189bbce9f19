//! Warm pools: sandboxes kept ready for creates that ask for exactly what they are; a create
//! takes one (its own metadata, lifetime and egress), the pool refills, and sandboxes waiting
//! in a pool are nobody's (not listed). Needs root, crun, runsc.
mod common;

use std::time::{Duration, Instant};

use common::{TestServer, RUNTIMES};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn pool(s: &TestServer, name: &str) -> Value {
    let all = s.get_json("/v1/pools").await;
    all["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

async fn wait_ready(s: &TestServer, name: &str, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = pool(s, name).await;
        if p["ready"].as_u64() == Some(n) || Instant::now() > deadline {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_matching_create_takes_a_ready_sandbox_and_the_pool_refills() {
    let s = TestServer::start().await;
    for rt in RUNTIMES {
        let name = format!("p-{rt}");
        let shape = json!({"image": "busybox", "runtime": rt, "cmd": ["sleep", "1000000"]});
        let mut body = shape.clone();
        body["name"] = json!(name);
        body["size"] = json!(2);
        let resp = s.post("/v1/pools", Some(body.clone())).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "{rt}");
        assert_eq!(
            s.post("/v1/pools", Some(body)).await.status(),
            StatusCode::CONFLICT
        );
        let p = wait_ready(&s, &name, 2).await;
        assert_eq!(p["ready"], 2, "{rt}: {p}");
        // Waiting sandboxes are no one's.
        let listed = s.get_json("/v1/sandboxes").await;
        assert_eq!(
            listed["sandboxes"].as_array().map(Vec::len),
            Some(0),
            "{listed}"
        );

        let mut ask = shape.clone();
        ask["metadata"] = json!({"who": "first"});
        ask["timeout_s"] = json!(120);
        ask["egress"] = json!("deny");
        let t = Instant::now();
        let sb = s.create(ask).await;
        eprintln!("{rt}: a create from the warm pool took {:?}", t.elapsed());
        let id = sb["id"].as_str().expect("id").to_owned();
        assert_eq!(sb["metadata"]["who"], "first");
        assert_eq!(sb["egress"], "deny");
        assert!(sb.get("pool").is_none(), "{sb}");
        let left = sb["expires_at"].as_str().expect("expires_at");
        let left = chrono::DateTime::parse_from_rfc3339(left)
            .expect("time")
            .with_timezone(&chrono::Utc)
            - chrono::Utc::now();
        assert!((100..=121).contains(&left.num_seconds()), "{left}");
        assert_eq!(s.sh(&id, "echo mine").await, "mine\n");
        let p = pool(&s, &name).await;
        assert_eq!(p["claimed"], 1, "{p}");
        // Listed now, and the pool fills up again.
        let listed = s.get_json("/v1/sandboxes").await;
        assert_eq!(
            listed["sandboxes"].as_array().map(Vec::len),
            Some(1),
            "{listed}"
        );
        assert_eq!(wait_ready(&s, &name, 2).await["ready"], 2);

        // A create asking for something else is made anew.
        let other = s
            .create(json!({"image": "busybox", "runtime": rt, "cmd": ["sleep", "999"]}))
            .await;
        assert_eq!(pool(&s, &name).await["claimed"], 1);

        // Removing the pool removes what waits in it, not what was taken.
        let resp = s
            .req(Method::DELETE, &format!("/v1/pools/{name}"))
            .send()
            .await
            .expect("DELETE");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(pool(&s, &name).await, Value::Null);
        assert_eq!(s.sh(&id, "echo still").await, "still\n");
        for x in [&id, other["id"].as_str().expect("id")] {
            s.delete(x).await;
        }
        let all = s.get_json("/v1/sandboxes").await;
        assert_eq!(all["sandboxes"].as_array().map(Vec::len), Some(0), "{all}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pools_say_what_they_cannot_hold() {
    let s = TestServer::start().await;
    for (body, why) in [
        (json!({"name": "a", "size": 0, "image": "busybox"}), "size"),
        (
            json!({"name": "a", "size": 1, "image": "busybox", "metadata": {"k": "v"}}),
            "metadata",
        ),
        (json!({"name": "a", "size": 1, "imgae": "busybox"}), "imgae"),
        (json!({"name": "a", "size": 1, "image": "nope"}), "nope"),
    ] {
        let resp = s.post("/v1/pools", Some(body.clone())).await;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_client_error(), "{body}: {status} {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{body}: {msg}");
    }
    s.shutdown().await;
}
