//! API keys: `warren key` and `/v1/keys`. Every key has E2B's spelling too (`e2b_` + hex, the
//! only form E2B's SDKs from mid-2026 accept), and both spellings work on every route.
mod common;

use std::process::Command;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn warren(s: &TestServer, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .env("WARREN_URL", &s.url)
        .env("WARREN_DATA_DIR", &s.data_dir)
        .env_remove("WARREN_API_KEY")
        .output()
        .expect("running warren");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_owned())
}

async fn status_with(s: &TestServer, path: &str, header: (&str, &str)) -> StatusCode {
    s.http
        .request(Method::GET, format!("{}{path}", s.url))
        .header(header.0, header.1)
        .send()
        .await
        .expect("request")
        .status()
}

fn is_e2b_key(k: &str) -> bool {
    k.len() == 44
        && k.starts_with("e2b_")
        && k[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_made_listed_and_revoked_in_both_spellings() {
    let s = TestServer::start().await;

    // The admin key, printed in E2B's spelling, is the same key.
    let (ok, admin_e2b) = warren(&s, &["key", "show", "--e2b"]);
    assert!(ok && is_e2b_key(&admin_e2b), "{admin_e2b}");
    for (path, header) in [
        (
            "/v1/sandboxes",
            ("authorization", format!("Bearer {admin_e2b}")),
        ),
        ("/sandboxes", ("x-api-key", admin_e2b.clone())),
        ("/v2/sandboxes", ("x-api-key", s.key.clone())),
    ] {
        let st = status_with(&s, path, (header.0, &header.1)).await;
        assert_eq!(st, StatusCode::OK, "{path} with {}", header.1);
    }

    // A new key: the CLI prints its E2B spelling; --json shows both.
    let (ok, ci_e2b) = warren(&s, &["key", "create", "--name", "ci", "--e2b"]);
    assert!(ok && is_e2b_key(&ci_e2b), "{ci_e2b}");
    let (ok, made) = warren(&s, &["key", "create", "--name", "other", "--json"]);
    assert!(ok, "{made}");
    let made: Value = serde_json::from_str(&made).expect("json");
    let other = made["secret"].as_str().expect("secret").to_owned();
    assert!(other.starts_with("wk_"), "{made}");
    assert!(
        is_e2b_key(made["e2b_secret"].as_str().unwrap_or("")),
        "{made}"
    );
    for key in [&ci_e2b, &other] {
        let st = status_with(
            &s,
            "/v1/sandboxes",
            ("authorization", &format!("Bearer {key}")),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{key}");
    }

    // Listed without secrets.
    let list = s.get_json("/v1/keys").await;
    let names: Vec<&str> = list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["admin", "ci", "other"], "{list}");
    assert!(!list.to_string().contains("wk_") && !list.to_string().contains("e2b_"));

    // Revoked at once, in both spellings; an unknown id is 404.
    let id = made["id"].as_str().expect("id");
    let (ok, out) = warren(&s, &["key", "rm", id]);
    assert!(ok, "{out}");
    let e2b_other = made["e2b_secret"].as_str().expect("e2b secret");
    for (path, header) in [
        (
            "/v1/sandboxes",
            ("authorization", format!("Bearer {other}")),
        ),
        ("/sandboxes", ("x-api-key", e2b_other.to_owned())),
    ] {
        let st = status_with(&s, path, (header.0, &header.1)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{path} after revoke");
    }
    let resp = s
        .req(Method::DELETE, "/v1/keys/0000000000000000")
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Bad names are 422; the last key cannot be revoked.
    let resp = s
        .req(Method::POST, "/v1/keys")
        .json(&serde_json::json!({"name": ""}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let ci_id = list["keys"][1]["id"].as_str().expect("ci id");
    let (ok, out) = warren(&s, &["key", "rm", ci_id]);
    assert!(ok, "{out}");
    let admin_id = list["keys"][0]["id"].as_str().expect("admin id");
    let (ok, out) = warren(&s, &["key", "rm", admin_id]);
    assert!(!ok && out.contains("last admin key"), "{out}");
    s.shutdown().await;
}
