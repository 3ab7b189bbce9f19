//! Teams, scoped keys, quotas, rate limits and the audit log: each team sees only its own
//! sandboxes and operations, a key does only what its scope allows, quotas answer 429 naming
//! themselves, and every mutating call is in the audit log.
mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A client of `s` with another key.
struct As<'a> {
    s: &'a TestServer,
    key: String,
}

impl As<'_> {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut rb = self
            .s
            .http
            .request(method, format!("{}{path}", self.s.url))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> StatusCode {
        self.send(Method::DELETE, path, None).await.0
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Deletes the team's sandboxes (the test server's own clean-up sees only its team's).
    async fn delete_all(&self) {
        let (_, list) = self.get("/v1/sandboxes").await;
        for sb in list["sandboxes"].as_array().cloned().unwrap_or_default() {
            let id = sb["id"].as_str().unwrap_or_default();
            let (st, body) = self
                .send(Method::DELETE, &format!("/v1/sandboxes/{id}"), None)
                .await;
            assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
        }
    }
}

/// Makes a team (as the operator) and a key of it with `scope`.
async fn team_key<'a>(s: &'a TestServer, team: Option<Value>, name: &str, scope: &str) -> As<'a> {
    if let Some(t) = team {
        let r = s.post("/v1/teams", Some(t)).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = s
        .post(
            "/v1/keys",
            Some(json!({"name": format!("{name}-{scope}"), "team": name, "scope": scope})),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.expect("key");
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["team"].as_str(), v["scope"].as_str()),
        (Some(name), Some(scope))
    );
    As {
        s,
        key: v["secret"].as_str().expect("secret").to_owned(),
    }
}

const BOX: &str = r#"{"image": "busybox", "runtime": "runc", "cmd": ["sleep", "600"]}"#;

fn sandbox() -> Value {
    serde_json::from_str(BOX).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn teams_see_only_their_own_sandboxes_and_operations() {
    let s = TestServer::start().await;
    let red = team_key(&s, Some(json!({"name": "red"})), "red", "sandboxes").await;
    let blue = team_key(&s, Some(json!({"name": "blue"})), "blue", "sandboxes").await;

    let (st, made) = red.post("/v1/sandboxes", sandbox()).await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    assert_eq!(made["team"], "red");
    let id = made["id"].as_str().expect("id").to_owned();

    // Red sees it; blue and the operator's own team do not, by any route.
    let (_, list) = red.get("/v1/sandboxes").await;
    assert_eq!(
        list["sandboxes"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    for who in [&blue] {
        let (_, list) = who.get("/v1/sandboxes").await;
        assert_eq!(list["sandboxes"], json!([]), "{list}");
        for (method, path, body) in [
            (Method::GET, format!("/v1/sandboxes/{id}"), None),
            (
                Method::POST,
                format!("/v1/sandboxes/{id}/exec"),
                Some(json!({"cmd": ["true"]})),
            ),
            (
                Method::GET,
                format!("/v1/sandboxes/{id}/files?path=/etc/hostname"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/sandboxes/{id}/stop"),
                Some(json!({})),
            ),
            (Method::DELETE, format!("/v1/sandboxes/{id}"), None),
            (Method::GET, format!("/sandboxes/{id}"), None),
            (Method::DELETE, format!("/sandboxes/{id}"), None),
        ] {
            let (st, body) = who.send(method.clone(), &path, body).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        }
        // An id spelled with percent-escapes is the same id to the handler: refused too.
        let escaped = format!("%{:02x}{}", id.as_bytes()[0], &id[1..]);
        for path in [
            format!("/v1/sandboxes/{escaped}"),
            format!("/v1/sandboxes/{escaped}/files?path=/etc/hostname"),
            format!("/sandboxes/{escaped}"),
        ] {
            let (st, body) = who.get(&path).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{path}: {body}");
        }
        let (_, e2b) = who.get("/v2/sandboxes").await;
        assert_eq!(e2b, json!([]), "{e2b}");
        let (_, ops) = who.get("/v1/operations").await;
        assert_eq!(ops["operations"], json!([]), "{ops}");
    }
    let (_, mine) = s.get(&id).await;
    assert_eq!(
        mine["error"]["code"], "not_found",
        "the operator's key is a team's too"
    );
    let ops = s.get_json("/v1/operations").await;
    assert_eq!(ops["operations"], json!([]), "{ops}");
    let (_, ops) = red.get("/v1/operations").await;
    let op_id = ops["operations"][0]["id"]
        .as_str()
        .expect("red's create")
        .to_owned();
    assert_eq!(ops["operations"][0]["team"], "red");
    let (st, _) = blue.get(&format!("/v1/operations/{op_id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Still running, and red's to use.
    let (st, out) = red
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            json!({"cmd": ["echo", "hi"]}),
        )
        .await;
    assert_eq!(
        (st, out["stdout"].as_str()),
        (StatusCode::OK, Some("hi\n")),
        "{out}"
    );

    // A team with sandboxes stays; without, it goes and its keys with it.
    let r = s
        .req(Method::DELETE, "/v1/teams/red")
        .send()
        .await
        .expect("delete team");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let (st, _) = red
        .send(Method::DELETE, &format!("/v1/sandboxes/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let r = s
        .req(Method::DELETE, "/v1/teams/red")
        .send()
        .await
        .expect("delete team");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (st, _) = red.get("/v1/sandboxes").await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a deleted team's keys are revoked"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_snapshots_secrets_and_images_are_their_teams() {
    let s = TestServer::start().await;
    let red = team_key(&s, Some(json!({"name": "red"})), "red", "sandboxes").await;
    let blue = team_key(&s, Some(json!({"name": "blue"})), "blue", "sandboxes").await;

    // A volume: red's alone; its name is the server's.
    let (st, vol) = red
        .post("/v1/volumes", json!({"name": "red-data", "size_mb": 16}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{vol}");
    assert_eq!(
        blue.get("/v1/volumes/red-data").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(blue.get("/v1/volumes").await.1["volumes"], json!([]));
    assert_eq!(blue.get("/volumes").await.1, json!([]));
    let mount = json!({"image": "busybox", "runtime": "runc",
        "volumes": [{"name": "red-data", "path": "/data"}]});
    let (st, body) = blue.post("/v1/sandboxes", mount.clone()).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{body}"
    );
    let (st, _) = blue
        .post("/v1/volumes", json!({"name": "red-data", "size_mb": 16}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(
        blue.delete("/v1/volumes/red-data").await,
        StatusCode::NOT_FOUND
    );
    let (st, sb) = red.post("/v1/sandboxes", mount).await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");
    let id = sb["id"].as_str().expect("id").to_owned();

    // A snapshot is its source's team's.
    let (st, snap) = red
        .post(
            &format!("/v1/sandboxes/{id}/snapshots"),
            json!({"name": "red-snap", "memory": false}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{snap}");
    assert_eq!(
        blue.get("/v1/snapshots/red-snap").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(blue.get("/v1/snapshots").await.1["snapshots"], json!([]));
    let (st, body) = blue
        .post("/v1/sandboxes", json!({"snapshot": "red-snap"}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        blue.delete("/v1/snapshots/red-snap").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(red.get("/v1/snapshots/red-snap").await.0, StatusCode::OK);
    assert_eq!(
        red.delete("/v1/snapshots/red-snap").await,
        StatusCode::NO_CONTENT
    );

    // A secret (E2B's): only red's sandboxes and keys use it.
    let (st, sec) = red
        .post("/secrets", json!({"name": "red-token", "value": "s3cret"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sec}");
    assert_eq!(blue.get("/secrets").await.1, json!([]));
    assert_eq!(
        blue.get("/secrets/red-token").await.0,
        StatusCode::NOT_FOUND
    );
    let (st, body) = blue
        .post(
            "/sandboxes",
            json!({"templateID": "busybox", "envVars": {"T": "${e2b.secrets.red-token}"}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");

    // An image red imports is red's: blue neither sees, uses, replaces nor removes it; the
    // operator's images are everyone's, and removed only by the operator's team.
    let tar = std::fs::read(common::busybox_tar()).expect("tar");
    let import = |who: &As<'_>, name: &str| {
        who.s
            .http
            .put(format!("{}/v1/images/{name}", who.s.url))
            .bearer_auth(&who.key)
            .header("content-type", "application/x-tar")
            .body(tar.clone())
            .send()
    };
    let r = import(&red, "red-img").await.expect("import");
    assert_eq!(r.status(), StatusCode::CREATED);
    let names = |v: Value| -> Vec<String> {
        v["images"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(names(red.get("/v1/images").await.1).contains(&"red-img".to_owned()));
    let blue_sees = names(blue.get("/v1/images").await.1);
    assert!(!blue_sees.contains(&"red-img".to_owned()), "{blue_sees:?}");
    assert!(blue_sees.contains(&"busybox".to_owned()), "{blue_sees:?}");
    let (st, body) = blue
        .post(
            "/v1/sandboxes",
            json!({"image": "red-img", "pull": "never", "runtime": "runc"}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let r = import(&blue, "red-img").await.expect("import");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = import(&blue, "busybox").await.expect("import");
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "a team never replaces everyone's image"
    );
    assert_eq!(
        blue.delete("/v1/images/red-img").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        blue.delete("/v1/images/busybox").await,
        StatusCode::FORBIDDEN
    );
    let (st, sb) = red
        .post(
            "/v1/sandboxes",
            json!({"image": "red-img", "runtime": "runc"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");

    red.delete_all().await;
    assert_eq!(
        red.delete("/v1/images/red-img").await,
        StatusCode::NO_CONTENT
    );
    // A team that still holds something stays.
    let r = s
        .req(Method::DELETE, "/v1/teams/red")
        .send()
        .await
        .expect("delete team");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.expect("body");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("1 volumes") && msg.contains("1 secrets"),
        "{msg}"
    );
    let (st, _) = red.send(Method::DELETE, "/v1/volumes/red-data", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    s.shutdown().await;
}

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
