//! What a team's keys may do: scopes, quotas (429 naming the quota), rate limits (429 with
//! Retry-After), expiry and revocation, and the audit log of every mutating call.
mod common;

use common::teams::{sandbox, team_key, As};
use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
#[tokio::test(flavor = "multi_thread")]
async fn keys_do_what_their_scope_allows() {
    let s = TestServer::start().await;
    let made = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = made["id"].as_str().expect("id");
    let read = team_key(&s, None, "default", "read").await;
    let work = team_key(&s, None, "default", "sandboxes").await;
    let green_admin = team_key(&s, Some(json!({"name": "green"})), "green", "admin").await;

    // Read: looks, never touches, and is not given what would let it (the traffic token,
    // E2B's agent token).
    let (st, seen) = read.get(&format!("/v1/sandboxes/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        made["traffic_token"].is_string() && seen["traffic_token"].is_null(),
        "{seen}"
    );
    assert_eq!(
        read.get(&format!("/sandboxes/{id}")).await.0,
        StatusCode::FORBIDDEN
    );
    let (st, body) = read
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            json!({"cmd": ["true"]}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("scope (read)"),
        "{body}"
    );
    assert_eq!(
        read.post("/v1/sandboxes", sandbox()).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        read.get(&format!("/v1/sandboxes/{id}/pty")).await.0,
        StatusCode::FORBIDDEN
    );
    // A scraper's read key of the operator's team reads /metrics.
    assert_eq!(read.get("/metrics").await.0, StatusCode::OK);
    // Sandboxes: works, but no keys, audit or teams.
    let (st, out) = work
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            json!({"cmd": ["true"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    for path in ["/v1/keys", "/v1/audit"] {
        assert_eq!(work.get(path).await.0, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        work.post("/v1/teams", json!({"name": "x"})).await.0,
        StatusCode::FORBIDDEN
    );
    // A team's admin: its own keys, not another team's, not teams.
    let (st, k) = green_admin
        .post("/v1/keys", json!({"name": "g2", "scope": "read"}))
        .await;
    assert_eq!(
        (st, k["team"].as_str()),
        (StatusCode::CREATED, Some("green")),
        "{k}"
    );
    let (st, _) = green_admin
        .post("/v1/keys", json!({"name": "g3", "team": "default"}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, keys) = green_admin.get("/v1/keys").await;
    let teams: Vec<&str> = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["team"].as_str())
        .collect();
    assert_eq!(teams, ["green", "green"], "{keys}");
    let admin_id = s.get_json("/v1/keys").await["keys"][0]["id"]
        .as_str()
        .expect("the operator's key")
        .to_owned();
    let (st, _) = green_admin
        .send(Method::DELETE, &format!("/v1/keys/{admin_id}"), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another team's key is not there");
    assert_eq!(green_admin.get("/metrics").await.0, StatusCode::FORBIDDEN);
    let (_, teams) = green_admin.get("/v1/teams").await;
    assert_eq!(teams["teams"].as_array().map(Vec::len), Some(1), "{teams}");
    assert_eq!(
        green_admin.delete("/v1/teams/green").await,
        StatusCode::FORBIDDEN
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_answer_429_naming_the_quota() {
    let s = TestServer::start().await;
    let team = json!({"name": "small", "quotas": {"sandboxes": 1, "memory_mb": 512}});
    let small = team_key(&s, Some(team), "small", "sandboxes").await;

    let (st, big) = small
        .post(
            "/v1/sandboxes",
            json!({"image": "busybox", "runtime": "runc", "memory_mb": 1024}),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{big}");
    assert_eq!(big["error"]["code"], "quota_exceeded");
    assert!(
        big["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("512 MiB of memory"),
        "{big}"
    );

    let one =
        json!({"image": "busybox", "runtime": "runc", "memory_mb": 256, "cmd": ["sleep", "600"]});
    let (st, first) = small.post("/v1/sandboxes", one.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    let (st, second) = small.post("/v1/sandboxes", one.clone()).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{second}");
    let msg = second["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("team \"small\"") && msg.contains("1 sandboxes running at once"),
        "{msg}"
    );
    let (_, team) = small.get("/v1/teams/small").await;
    assert_eq!(team["usage"]["sandboxes"], 1, "{team}");
    assert_eq!(team["usage"]["memory_mb"], 256, "{team}");

    // A stopped one frees its place; starting it again needs one.
    let first_id = first["id"].as_str().expect("id");
    let (st, _) = small
        .post(&format!("/v1/sandboxes/{first_id}/stop"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, other) = small.post("/v1/sandboxes", one.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{other}");
    let start_path = format!("/v1/sandboxes/{first_id}/start");
    let start = || small.post(&start_path, json!({}));
    let (st, again) = start().await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{again}");
    // The operator raises it; the start passes.
    let raise = |n: u64| {
        s.req(Method::PATCH, "/v1/teams/small")
            .json(&json!({"quotas": {"sandboxes": n}}))
            .send()
    };
    assert_eq!(raise(2).await.expect("patch").status(), StatusCode::OK);
    let (st, again) = start().await;
    assert_eq!(st, StatusCode::OK, "{again}");

    // Two creates at once with one place left: one passes, one gets 429.
    assert_eq!(raise(3).await.expect("patch").status(), StatusCode::OK);
    let (a, b) = tokio::join!(
        small.post("/v1/sandboxes", one.clone()),
        small.post("/v1/sandboxes", one.clone())
    );
    let mut got = [a.0, b.0];
    got.sort();
    assert_eq!(
        got,
        [StatusCode::CREATED, StatusCode::TOO_MANY_REQUESTS],
        "{a:?} {b:?}"
    );
    small.delete_all().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_rate_limited_expire_and_are_revoked() {
    let s = TestServer::start().await;
    let team = json!({"name": "slow", "rate_limit": 2});
    let slow = team_key(&s, Some(team), "slow", "sandboxes").await;
    let mut limited = None;
    for _ in 0..6 {
        let r = s
            .http
            .get(format!("{}/v1/sandboxes", s.url))
            .bearer_auth(&slow.key)
            .send()
            .await
            .expect("get");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("6 requests at once over a limit of 2 a second");
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&wait), "{wait}");
    let body: Value = r.json().await.expect("body");
    assert_eq!(body["error"]["code"], "rate_limited");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        slow.get("/v1/sandboxes").await.0,
        StatusCode::OK,
        "after the wait"
    );
    // E2B's routes keep the same limit.
    let mut e2b_limited = false;
    for _ in 0..6 {
        let r = s
            .http
            .get(format!("{}/v2/sandboxes", s.url))
            .header("x-api-key", &slow.key)
            .send()
            .await
            .expect("get");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            e2b_limited = r.headers().contains_key("retry-after");
            break;
        }
    }
    assert!(e2b_limited, "E2B's routes answer 429 with Retry-After too");

    // A key that expires works until then.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let r = s
        .post(
            "/v1/keys",
            Some(json!({"name": "brief", "expires_at": soon})),
        )
        .await;
    let brief: Value = r.json().await.expect("key");
    let brief = As {
        s: &s,
        key: brief["secret"].as_str().expect("secret").to_owned(),
    };
    assert_eq!(brief.get("/v1/sandboxes").await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(brief.get("/v1/sandboxes").await.0, StatusCode::UNAUTHORIZED);
    for when in ["2020-01-01T00:00:00Z", "+10000-01-01T00:00:00Z"] {
        let r = s
            .post("/v1/keys", Some(json!({"name": "odd", "expires_at": when})))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{when}");
    }
    // A key's own limit cannot be looser than its team's.
    let r = s
        .post(
            "/v1/keys",
            Some(json!({"name": "loose", "team": "slow", "rate_limit": 1000})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let loose: Value = r.json().await.expect("key");
    let loose = As {
        s: &s,
        key: loose["secret"].as_str().expect("secret").to_owned(),
    };
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(loose.get("/v1/sandboxes").await.0);
    }
    assert!(codes.contains(&StatusCode::TOO_MANY_REQUESTS), "{codes:?}");

    // Revoked: refused at once, listed as revoked, its last use noted.
    let keys = s.get_json("/v1/keys?team=slow").await;
    let slow_key = &keys["keys"][0];
    assert!(slow_key["last_used_at"].is_string(), "{keys}");
    let id = slow_key["id"].as_str().expect("id");
    let r = s
        .req(Method::DELETE, &format!("/v1/keys/{id}"))
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(slow.get("/v1/sandboxes").await.0, StatusCode::UNAUTHORIZED);
    let keys = s.get_json("/v1/keys?team=slow").await;
    assert!(keys["keys"][0]["revoked_at"].is_string(), "{keys}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mutating_call_is_audited() {
    let s = TestServer::start().await;
    let red_admin = team_key(&s, Some(json!({"name": "red"})), "red", "admin").await;
    let red_read = team_key(&s, None, "red", "read").await;
    let (st, made) = red_admin.post("/v1/sandboxes", sandbox()).await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    let id = made["id"].as_str().expect("id");
    let (st, _) = red_admin
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            json!({"cmd": ["true"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = red_read
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            json!({"cmd": ["true"]}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let r = red_admin
        .s
        .http
        .put(format!("{}/v1/sandboxes/{id}/files?path=/tmp/a", s.url))
        .bearer_auth(&red_admin.key)
        .body("x")
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success(), "{}", r.status());
    let _ = red_admin.get(&format!("/v1/sandboxes/{id}")).await;

    // Written beside the answers: wait for them.
    let want = 4;
    let mut entries = Vec::new();
    for _ in 0..50 {
        let (st, log) = red_admin.get(&format!("/v1/audit?target={id}")).await;
        assert_eq!(st, StatusCode::OK, "{log}");
        entries = log["entries"].as_array().cloned().unwrap_or_default();
        if entries.len() >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let seen: Vec<(String, String, u64)> = entries
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap_or("").to_owned(),
                e["route"].as_str().unwrap_or("").to_owned(),
                e["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("PUT".into(), "/v1/sandboxes/{id}/files".into(), 204),
            ("POST".into(), "/v1/sandboxes/{id}/exec".into(), 403),
            ("POST".into(), "/v1/sandboxes/{id}/exec".into(), 200),
            ("POST".into(), "/v1/sandboxes".into(), 201),
        ],
        "newest first, reads left out: {entries:?}"
    );
    for e in &entries {
        assert_eq!(e["team"], "red");
        assert_eq!(e["client"], "127.0.0.1");
        assert_eq!(e["target"], id);
        assert!(e["key_id"].as_str().is_some_and(|k| k.len() == 16), "{e}");
        assert!(
            e["request_id"].as_str().is_some_and(|r| !r.is_empty()),
            "{e}"
        );
    }
    // A team's admin reads only its own team's log; the operator reads all.
    let (st, _) = red_admin.get("/v1/audit?team=default").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let all = s.get_json("/v1/audit?limit=1000").await;
    let teams: std::collections::BTreeSet<&str> = all["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["team"].as_str())
        .collect();
    assert_eq!(teams, ["default", "red"].into(), "{all}");
    let (_, mine) = red_admin.get("/v1/audit").await;
    assert!(mine["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .all(|e| e["team"] == "red"));
    red_admin.delete_all().await;
    s.shutdown().await;
}
