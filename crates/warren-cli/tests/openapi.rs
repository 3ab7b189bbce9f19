//! `/openapi.json` and `/docs`: the document describes every `/v1` route the server serves,
//! and Schemathesis (scripts/schemathesis-env.sh) fuzzes a running server from it, with a
//! real sandbox and volume to act on, finding no 500s, no answers outside the document and no
//! schema-violating request accepted.
mod common;

use std::path::PathBuf;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The server pulls from nowhere: a fuzzed image reference must not reach out.
const NO_REGISTRY: [&str; 2] = ["--allowed-registry", "127.0.0.1:9"];

#[tokio::test(flavor = "multi_thread")]
async fn the_document_lists_every_route_and_each_is_served() {
    let s = TestServer::start_with(&NO_REGISTRY).await;
    // Public, like the routes it describes.
    let doc: Value = reqwest::get(format!("{}/openapi.json", s.url))
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("json");
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        assert!(path.starts_with("/v1/"), "{path}");
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            // Every operation names its errors and what it answers on success.
            let responses = op["responses"].as_object().expect("responses");
            for code in ["400", "401", "404", "429", "500"] {
                assert!(responses.contains_key(code), "{method} {path}: no {code}");
            }
            assert!(
                responses.keys().any(|c| c.starts_with('2') || c == "101"),
                "{method} {path}: no success"
            );
            // Served: without a key, the gate answers (not the router's 404 or 405).
            let url = format!(
                "{}{}",
                s.url,
                path.replace("{id}", "x").replace("{name}", "x")
            );
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = reqwest::Client::new()
                .request(m, &url)
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
    assert!(operations >= 50, "{operations} operations");
    // The schemas the operations refer to are all there.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in text.split("#/components/schemas/").skip(1) {
        let name = name.split('"').next().unwrap_or_default();
        assert!(
            schemas.contains_key(name),
            "{name} is referred to but missing"
        );
    }
    // A method a route does not take: 405 naming the ones it does, in the one error shape.
    let r = s
        .req(Method::PATCH, "/v1/sandboxes")
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = r.headers()["allow"].to_str().unwrap_or_default().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    // The page that reads the document.
    let page = reqwest::get(format!("{}/docs/", s.url))
        .await
        .expect("docs");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap_or_default().contains("swagger"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_are_held_to_their_schemas() {
    let s = TestServer::start_with(&NO_REGISTRY).await;
    // serde alone would read an array as the struct's fields in order.
    for (path, body) in [
        ("/v1/keys", json!([null, null])),
        ("/v1/volumes", json!(["v", 16])),
        ("/v1/teams", json!({"name": "t", "quotas": [1, 2.0, 3, 4]})),
    ] {
        let r = s
            .req(Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(
            r.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body}"
        );
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["code"], "invalid", "{e}");
    }
    // A pull from a registry not allowed is refused before any connection.
    let r = s
        .req(Method::POST, "/v1/images/pull")
        .json(&json!({"ref": "example.com/some/image:1"}))
        .send()
        .await
        .expect("pull");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "registry_denied", "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("example.com"));
    s.shutdown().await;
}

fn schemathesis() -> PathBuf {
    let venv = std::env::var("WARREN_SCHEMATHESIS_VENV")
        .unwrap_or_else(|_| "/opt/warren-schemathesis".into());
    let bin = PathBuf::from(venv).join("bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/schemathesis-env.sh (scripts/install-deps.sh does)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing() {
    let bin = schemathesis();
    let s = TestServer::start_with(&NO_REGISTRY).await;
    // Something real to act on: its routes are fuzzed against this sandbox, not a missing one.
    // It reaches nothing (egress deny); the routes that would end it or open its network are
    // fuzzed with made-up ids.
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "egress": "deny"}))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    let vol = s
        .req(Method::POST, "/v1/volumes")
        .json(&json!({"name": "fuzzed", "size_mb": 16}))
        .send()
        .await
        .expect("volume");
    assert_eq!(vol.status(), StatusCode::CREATED);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/openapi");
    let config = format!(
        r#"
hooks = "{hooks}"
[[operations]]
include-path-regex = '^/v1/sandboxes/\{{id\}}/(exec|execs|files|files/list|metrics|snapshots|pty)$'
parameters = {{ "id" = "{id}" }}
[[operations]]
include-path = "/v1/sandboxes/{{id}}/logs"
parameters = {{ "id" = "{id}", "follow" = false }}
[[operations]]
include-path = "/v1/sandboxes/{{id}}"
include-method = "GET"
parameters = {{ "id" = "{id}" }}
[[operations]]
include-path-regex = '^/v1/volumes/\{{name\}}'
exclude-method = "DELETE"
parameters = {{ "name" = "fuzzed" }}
"#,
        hooks = root.join("hooks.py").display(),
    );
    let config_path = dir.path().join("schemathesis.toml");
    std::fs::write(&config_path, config).expect("config");
    let out = tokio::process::Command::new(&bin)
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(format!("{}/openapi.json", s.url))
        .args(["-H", &format!("Authorization: Bearer {}", s.key)])
        // All checks but one: that every request the schema allows is taken. The server's
        // rules go further than a schema says (names' forms, a sandbox's memory floor), so
        // it refuses some (422, with the rule in the message).
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // The event stream never ends by itself.
        .args(["--exclude-path", "/v1/events"])
        .args([
            "--max-examples",
            "40",
            "--request-timeout",
            "60",
            "--seed",
            "1",
        ])
        .args(["--no-color", "--report", "junit", "--report-dir"])
        .arg(dir.path())
        .current_dir(dir.path())
        .output()
        .await
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(text.contains("passed"), "{text}");
    // The sandbox took the calls aimed at it and is still well, unless the run's stateful
    // phase found it in a list and deleted it, as a client may.
    let r = s
        .req(Method::GET, &format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .expect("get");
    if r.status() == StatusCode::OK {
        let sandbox: Value = r.json().await.expect("json");
        assert_ne!(sandbox["state"], "failed", "{sandbox}");
        s.delete(&id).await;
    } else {
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let audit: Value = s
        .get_json(&format!("/v1/audit?target={id}&limit=1000"))
        .await;
    let calls = audit["entries"].as_array().map(Vec::len).unwrap_or(0);
    assert!(calls > 50, "only {calls} calls reached the sandbox");
    s.shutdown().await;
}
