//! E2B's `PUT /sandboxes/{id}/network` with `allowPublicTraffic` takes effect on the preview
//! proxy at once, both ways (it once answered 204 and did nothing). Needs root and crun.
mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn allow_public_traffic_opens_and_closes_the_ports() {
    let s = TestServer::start_with(&["--default-runtime", "runc"]).await;
    let e2b = |method: Method, path: &str| {
        s.http
            .request(method, format!("{}{path}", s.url))
            .header("X-API-KEY", &s.key)
    };
    let resp = e2b(Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "busybox"}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.expect("json");
    let id = created["sandboxID"].as_str().expect("id").to_owned();
    assert!(created["trafficAccessToken"].is_null(), "public by default");
    let token = s.get(&id).await.1["traffic_token"]
        .as_str()
        .expect("traffic_token")
        .to_owned();
    s.sh(&id, "/.warren/agent demo-http 8000 >/dev/null 2>&1 &")
        .await;
    let page = |token: Option<&str>| {
        let rb = s
            .http
            .get(format!("{}/", s.url))
            .header("E2b-Sandbox-Id", &id)
            .header("E2b-Sandbox-Port", "8000");
        let rb = match token {
            Some(t) => rb.header("e2b-traffic-access-token", t),
            None => rb,
        };
        async move { rb.send().await.expect("GET").status() }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while page(None).await != StatusCode::OK {
        assert!(Instant::now() < deadline, "demo-http never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let set = |public: bool| {
        e2b(Method::PUT, &format!("/sandboxes/{id}/network"))
            .json(&json!({ "allowPublicTraffic": public }))
            .send()
    };

    assert_eq!(
        set(false).await.expect("PUT").status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(page(None).await, StatusCode::FORBIDDEN);
    assert_eq!(page(Some("wrong")).await, StatusCode::FORBIDDEN);
    assert_eq!(page(Some(&token)).await, StatusCode::OK);
    assert_eq!(s.get(&id).await.1["public"], false);
    // A connect now hands out the token the ports need.
    let resp = e2b(Method::POST, &format!("/sandboxes/{id}/connect"))
        .json(&json!({}))
        .send()
        .await
        .expect("connect");
    let connected: Value = resp.json().await.expect("json");
    assert_eq!(
        connected["trafficAccessToken"],
        token.as_str(),
        "{connected}"
    );

    assert_eq!(
        set(true).await.expect("PUT").status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(page(None).await, StatusCode::OK);
    assert_eq!(s.get(&id).await.1["public"], true);
    s.delete(&id).await;
    s.shutdown().await;
}
