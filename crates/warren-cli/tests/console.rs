//! The web console at `/ui` in a real browser: Debian's Chromium driven by Playwright
//! (`tests/ui/js/console.mjs`, playwright-core pinned in tests/ui/js; scripts/install-deps.sh
//! installs both). It signs in, creates a sandbox, opens its preview, types in its terminal,
//! uploads a file, reads metrics, logs and history, pulls an image from a real registry with
//! its progress, deletes the sandbox and signs out; the browser must see no policy refusal,
//! no script error, and the key nowhere but this origin's `/v1`. Its screenshots go to
//! `docs/console/` (or `WARREN_CONSOLE_SHOTS`), which the README shows.
mod common;

use std::path::Path;
use std::process::Command;

use common::oci_layout::{busybox_layer, Compression, Image};
use common::pulls::push_image;
use common::registry::Registry;
use common::TestServer;
use reqwest::StatusCode;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_works_in_a_real_browser() {
    let js = repo().join("tests/ui/js");
    assert!(
        js.join("node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "playwright-core or Chromium missing: run scripts/install-deps.sh"
    );
    let s = TestServer::start().await;
    let reg = Registry::start();
    let scratch = tempfile::tempdir().expect("scratch");
    push_image(
        &reg,
        &scratch.path().join("layout"),
        "console/busybox:1",
        &Image::new(vec![busybox_layer(Compression::Gzip)]),
    );
    let shots = std::env::var("WARREN_CONSOLE_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo().join("docs/console"));
    let out = Command::new("node")
        .arg(js.join("console.mjs"))
        .current_dir(&js)
        .env("WARREN_URL", &s.url)
        .env("WARREN_API_KEY", &s.key)
        .env("PULL_REF", reg.reference("console/busybox:1"))
        .env("SHOTS", &shots)
        .output()
        .expect("running node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("console.mjs:\n{text}");
    assert!(
        out.status.success() && text.contains("console test passed"),
        "the console test failed ({}):\n{text}\n{}",
        out.status,
        s.log_tail()
    );
    s.shutdown().await;
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client")
}

/// `GET path` of the server, with `If-None-Match` if given.
async fn fetch(
    s: &TestServer,
    path: &str,
    etag: Option<reqwest::header::HeaderValue>,
) -> reqwest::Response {
    let mut req = s.http.get(format!("{}{path}", s.url));
    if let Some(etag) = etag {
        req = req.header("if-none-match", etag);
    }
    req.send().await.expect(path)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_is_served_under_a_strict_policy() {
    let s = TestServer::start().await;
    let page = fetch(&s, "/ui/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers().clone();
    let csp = h["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("a style nonce")
        .to_owned();
    for part in [
        "default-src 'none'",
        "script-src 'self';",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{part} not in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    let html = page.text().await.expect("html");
    assert!(html.contains(&format!("content=\"{nonce}\"")), "{html}");
    // A fresh nonce each time.
    let again = fetch(&s, "/ui/", None).await;
    assert!(!again.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .contains(&nonce));

    // Files revalidate by hash; a file the console lacks is a JSON 404; `/ui` leads to `/ui/`.
    let module = fetch(&s, "/ui/js/app.js", None).await;
    assert_eq!(module.status(), StatusCode::OK);
    assert_eq!(module.headers()["content-type"], "text/javascript");
    let etag = module.headers()["etag"].clone();
    let same = fetch(&s, "/ui/js/app.js", Some(etag)).await;
    assert_eq!(same.status(), StatusCode::NOT_MODIFIED);
    // Nor does a path that climbs out of the console's files (debug builds read them from disk).
    for path in [
        "/ui/nothing.js",
        "/ui/..%2fsrc%2fconsole.rs",
        "/ui/js%2f..%2f..%2fsrc%2fconsole.rs",
    ] {
        let missing = fetch(&s, path, None).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = missing.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("message")
                .contains("the console has no file"),
            "{body}"
        );
    }
    let index_raw = fetch(&s, "/ui/index.html", None).await;
    assert_eq!(index_raw.status(), StatusCode::NOT_FOUND);
    let bare = no_redirects()
        .get(format!("{}/ui", s.url))
        .send()
        .await
        .expect("bare");
    assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers()["location"], "/ui/");
    // The root shows a browser the console, and stays an API 404 for others.
    let root = fetch(&s, "/", None).await;
    assert_eq!(root.status(), StatusCode::NOT_FOUND);
    let browser = no_redirects()
        .get(format!("{}/", s.url))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("root");
    assert_eq!(browser.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(browser.headers()["location"], "/ui/");

    // The terminal's WebSocket takes the key as a subprotocol, and without one is refused.
    let sb = s
        .create(serde_json::json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let ws_url = format!("{}/v1/sandboxes/{id}/pty", s.url.replacen("http", "ws", 1));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        ws_url.as_str(),
    )
    .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("warren.terminal, warren.key.{}", s.key)
            .parse()
            .expect("header"),
    );
    let (_socket, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("a terminal with the key as a subprotocol");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "warren.terminal");
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        ws_url.as_str(),
    )
    .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "warren.terminal, warren.key.wk_wrong"
            .parse()
            .expect("header"),
    );
    // Only a terminal takes it so: another route refuses it, upgrade or not.
    let other = s
        .http
        .get(format!("{}/v1/sandboxes", s.url))
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-protocol", format!("warren.key.{}", s.key))
        .send()
        .await
        .expect("list");
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("a wrong key opened a terminal: {other:?}"),
    }
    s.shutdown().await;
}
