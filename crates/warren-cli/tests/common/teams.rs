//! Clients of a test server with keys of teams other than the operator's (tests/teams.rs,
//! tests/team_limits.rs).
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::TestServer;

/// A client of `s` with another key.
pub struct As<'a> {
    pub s: &'a TestServer,
    pub key: String,
}

impl As<'_> {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
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

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> StatusCode {
        self.send(Method::DELETE, path, None).await.0
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Deletes the team's sandboxes (the test server's own clean-up sees only its team's).
    pub async fn delete_all(&self) {
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
pub async fn team_key<'a>(
    s: &'a TestServer,
    team: Option<Value>,
    name: &str,
    scope: &str,
) -> As<'a> {
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

/// A long-running runc busybox sandbox's create request.
pub fn sandbox() -> Value {
    serde_json::json!({"image": "busybox", "runtime": "runc", "cmd": ["sleep", "600"]})
}
