//! Bad requests get the JSON error shape with the right status, and lose nothing.
//! Needs root (the server starts sandboxes for the 409 cases).
mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn expect_error(resp: reqwest::Response, status: StatusCode, code: &str) -> String {
    assert_eq!(resp.status(), status);
    let v: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().expect("message").to_owned();
    assert!(!msg.is_empty());
    msg
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_have_the_right_status_and_shape() {
    let s = TestServer::start().await;
    let http = &s.http;

    // 401: no key, wrong key. Health routes are open.
    let r = http
        .get(format!("{}/v1/sandboxes", s.url))
        .send()
        .await
        .expect("req");
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = http
        .get(format!("{}/v1/sandboxes", s.url))
        .bearer_auth("wk_wrong")
        .send()
        .await
        .expect("req");
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = http
        .get(format!("{}/v1/images", s.url))
        .header("authorization", "Basic Zm9v")
        .send()
        .await
        .expect("req");
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(
        http.get(format!("{}/healthz", s.url))
            .send()
            .await
            .expect("req")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(format!("{}/readyz", s.url))
            .send()
            .await
            .expect("req")
            .status(),
        StatusCode::OK
    );

    // 400: malformed JSON.
    let r = s
        .req(Method::POST, "/v1/sandboxes")
        .body("{\"image\": ")
        .send()
        .await
        .expect("req");
    expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = s
        .req(Method::POST, "/v1/sandboxes")
        .body("not json")
        .send()
        .await
        .expect("req");
    expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;

    // 404: unknown ids (well-formed or not), unknown image, unknown route.
    let r = s
        .req(Method::GET, "/v1/sandboxes/aaaaaaaaaaaaaaaa")
        .send()
        .await
        .expect("req");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = s
        .req(Method::DELETE, "/v1/sandboxes/not-an-id")
        .send()
        .await
        .expect("req");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = s
        .post(
            "/v1/sandboxes/aaaaaaaaaaaaaaaa/exec",
            Some(json!({"cmd": ["true"]})),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = s
        .post(
            "/v1/sandboxes",
            Some(json!({"image": "nope", "pull": "never"})),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = s.req(Method::GET, "/v1/nothing").send().await.expect("req");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;

    // 422: valid JSON, invalid values.
    for body in [
        json!({"image": "busybox", "runtime": "docker"}),
        json!({"image": "busybox", "memory_mb": 0}),
        json!({"image": "busybox", "memory_mb": 1_000_000_000u64}),
        json!({"image": "busybox", "cpu": 0}),
        json!({"image": "busybox", "cpu": 512}),
        json!({"image": "busybox", "pids": 0}),
        json!({"image": "busybox", "cwd": "relative"}),
        json!({"image": "busybox", "unknown_field": 1}),
        json!({"image": 7}),
        json!({"image": " "}),
        json!({"image": "busybox", "pull": "sometimes"}),
    ] {
        let r = s.post("/v1/sandboxes", Some(body.clone())).await;
        let msg = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
        assert!(!msg.is_empty(), "{body}");
    }
    let r = s
        .req(Method::GET, "/v1/sandboxes?state=sideways")
        .send()
        .await
        .expect("req");
    expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;

    // Nothing was created by any of that.
    let list: Value = s.get_json("/v1/sandboxes").await;
    assert_eq!(
        list["sandboxes"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );

    // 409: wrong state; image in use.
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let r = s.post(&format!("/v1/sandboxes/{id}/start"), None).await;
    expect_error(r, StatusCode::CONFLICT, "conflict").await;
    let r = s
        .req(Method::DELETE, "/v1/images/busybox")
        .send()
        .await
        .expect("req");
    expect_error(r, StatusCode::CONFLICT, "conflict").await;
    let r = s.post(&format!("/v1/sandboxes/{id}/stop"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.post(&format!("/v1/sandboxes/{id}/stop"), None).await;
    expect_error(r, StatusCode::CONFLICT, "conflict").await;
    // 422 on exec: empty cmd.
    let r = s
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"cmd": []})),
        )
        .await;
    assert!(r.status() == StatusCode::UNPROCESSABLE_ENTITY || r.status() == StatusCode::CONFLICT);
    s.delete(id).await;
    // Once unused, the image can go.
    let r = s
        .req(Method::DELETE, "/v1/images/busybox")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .req(Method::DELETE, "/v1/images/busybox")
        .send()
        .await
        .expect("req");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    s.shutdown().await;
}
