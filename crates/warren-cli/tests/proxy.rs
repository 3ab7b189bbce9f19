//! The preview proxy against real sandboxes running the agent's `demo-http` server: routing by
//! host, E2B headers and path; private ports and their three credentials; streaming both ways,
//! SSE, WebSocket and HTTP/2; the path form's rewrites; readable errors; `urls` and `ports`.
mod common;

use std::time::{Duration, Instant};

use common::preview::{at, demo, host, id_of, seen_headers, PORT};
use common::{TestServer, RUNTIMES};
use futures::{SinkExt, StreamExt};
use reqwest::{header, Method, StatusCode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_e2b_headers_and_path_under_both_runtimes() {
    let s = TestServer::start().await;
    for runtime in RUNTIMES {
        let sb = demo(&s, runtime, true).await;
        let id = id_of(&sb);
        let hello = "hello from warren demo-http\n";
        for h in [host(&id, PORT), format!("{PORT}-{id}.localhost")] {
            let resp = s
                .http
                .get(format!("{}/", s.url))
                .header(header::HOST, &h)
                .send()
                .await
                .expect("GET");
            assert_eq!(resp.status(), StatusCode::OK, "{runtime} {h}");
            assert_eq!(resp.text().await.expect("body"), hello);
        }
        let resp = s
            .http
            .get(format!("{}/", s.url))
            .header("E2b-Sandbox-Id", &id)
            .header("E2b-Sandbox-Port", PORT.to_string())
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.text().await.expect("body"), hello, "{runtime}");
        let resp = s
            .http
            .get(format!("{}/proxy/{id}/{PORT}/", s.url))
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.text().await.expect("body"), hello, "{runtime}");

        // `urls` and `ports` name what listens now, with the URL the proxy answers on.
        let url = format!("http://{id}-{PORT}.localhost:{}/", s.port);
        assert_eq!(sb["urls"][PORT.to_string()], url, "{sb}");
        let port = sb["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["port"] == PORT))
            .expect("port 8000 listed");
        assert_eq!(port["url"], url);

        // WebSocket through the proxy, under each runtime.
        let mut req = format!("ws://127.0.0.1:{}/ws", s.port)
            .into_client_request()
            .expect("ws request");
        req.headers_mut()
            .insert("host", host(&id, PORT).parse().expect("host"));
        let (mut ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws.send(Message::text("ping through warren"))
            .await
            .expect("send");
        let back = ws.next().await.expect("an answer").expect("a message");
        assert_eq!(
            back.into_text().expect("text").as_str(),
            "ping through warren"
        );
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .expect("send");
        let back = ws.next().await.expect("an answer").expect("a message");
        assert_eq!(back.into_data().as_ref(), &[0u8, 1, 2, 255]);
        ws.close(None).await.expect("close");
        s.delete(&id).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn private_ports_take_a_token_header_cookie_or_api_key() {
    let s = TestServer::start().await;
    let sb = demo(&s, "runc", false).await;
    let id = id_of(&sb);
    let token = sb["traffic_token"]
        .as_str()
        .expect("traffic_token")
        .to_owned();
    assert!(token.len() >= 32);
    assert_eq!(sb["public"], false);

    // No credential: 403 (E2B's answer), readable as JSON or as a page.
    let resp = at(&s, Method::GET, &id, "/").send().await.expect("GET");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let v: Value = resp.json().await.expect("json error");
    assert_eq!(v["error"]["code"], "forbidden");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("X-Warren-Traffic-Token"));
    let resp = at(&s, Method::GET, &id, "/")
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap_or("")
        .starts_with("text/html"));
    assert!(resp.text().await.expect("page").contains("Private port"));

    // Wrong token: 403, whichever way it comes.
    let resp = at(&s, Method::GET, &id, "/")
        .header("X-Warren-Traffic-Token", "nope")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = at(&s, Method::GET, &id, "/?warren_token=nope")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = at(&s, Method::GET, &id, "/")
        .bearer_auth("wk_notakey")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // The header: passed, and not passed on to the app.
    let seen =
        seen_headers(at(&s, Method::GET, &id, "/headers").header("X-Warren-Traffic-Token", &token))
            .await;
    assert!(seen.get("x-warren-traffic-token").is_none(), "{seen}");

    // Once in the URL: a cookie for that host, and back to the clean URL.
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = no_redirects
        .get(format!("{}/headers?a=1&warren_token={token}", s.url))
        .header(header::HOST, host(&id, PORT))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()[header::LOCATION], "/headers?a=1");
    let cookie = resp.headers()[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.starts_with(&format!("warren_token_{id}={token}; Path=/;")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let seen = seen_headers(
        at(&s, Method::GET, &id, "/headers?a=1")
            .header(header::COOKIE, format!("app=1; warren_token_{id}={token}")),
    )
    .await;
    assert_eq!(seen["cookie"], "app=1", "the app sees its own cookies only");

    // An API key opens it too, and is not handed to the app.
    let seen = seen_headers(at(&s, Method::GET, &id, "/headers").bearer_auth(&s.key)).await;
    assert!(seen.get("authorization").is_none(), "{seen}");
    s.delete(&id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_streaming_sse_and_http2() {
    let s = TestServer::start().await;
    let sb = demo(&s, "runc", true).await;
    let id = id_of(&sb);

    // Warren's credentials never reach the app, even where none was needed (a public
    // sandbox); the app's own bearer does.
    let seen = seen_headers(
        at(&s, Method::GET, &id, "/headers")
            .header("X-Warren-Traffic-Token", "whatever")
            .header(header::COOKIE, "app=1; warren_token_aaaaaaaaaaaaaaaa=t")
            .bearer_auth(&s.key),
    )
    .await;
    assert!(seen.get("x-warren-traffic-token").is_none(), "{seen}");
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert_eq!(seen["cookie"], "app=1", "{seen}");
    let seen = seen_headers(at(&s, Method::GET, &id, "/headers").bearer_auth("the-apps-own")).await;
    assert_eq!(seen["authorization"], "Bearer the-apps-own");

    let seen = seen_headers(
        at(&s, Method::GET, &id, "/headers?x=1")
            .header(header::CONNECTION, "keep-alive, x-hop")
            .header("x-hop", "dropped")
            .header("x-forwarded-for", "192.0.2.9")
            .header("x-app", "kept"),
    )
    .await;
    assert_eq!(seen["x-forwarded-for"], "192.0.2.9, 127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], host(&id, PORT));
    assert_eq!(seen["host"], host(&id, PORT));
    assert_eq!(seen["x-app"], "kept");
    assert!(seen.get("x-hop").is_none(), "{seen}");
    assert_eq!(seen["_path"], "/headers?x=1");

    // 32 MiB up and back, streamed (the body is produced while it is sent).
    let chunk = vec![7u8; 1 << 20];
    let body = futures::stream::iter((0..32).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = at(&s, Method::POST, &id, "/echo")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut total = 0usize;
    let mut stream = resp.bytes_stream();
    while let Some(part) = stream.next().await {
        let part = part.expect("chunk");
        assert!(part.iter().all(|b| *b == 7));
        total += part.len();
    }
    assert_eq!(total, 32 << 20);

    // SSE: each event arrives when it is written, not when the stream ends.
    let start = Instant::now();
    let resp = at(&s, Method::GET, &id, "/sse?n=3&interval_ms=400")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(part) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&part.expect("chunk")));
        arrivals.push(start.elapsed());
    }
    assert_eq!(text, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    assert!(arrivals.len() >= 3, "{arrivals:?}");
    assert!(
        arrivals[0] + Duration::from_millis(600) < arrivals[arrivals.len() - 1],
        "events were held back: {arrivals:?}"
    );

    // HTTP/2 with prior knowledge on the plain listener, proxied to the app's HTTP/1.1. The
    // preview name is pinned to loopback, so no resolver is asked; HTTP/2 names the host in
    // `:authority`, not `Host`.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], s.port));
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve(&host(&id, PORT), addr)
        .build()
        .expect("h2 client");
    let resp = h2
        .get(format!("http://{}:{}/headers", host(&id, PORT), s.port))
        .send()
        .await
        .expect("h2 GET");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let seen: Value = resp.json().await.expect("headers");
    assert_eq!(seen["_version"], "HTTP/1.1", "the app speaks HTTP/1.1");
    assert_eq!(
        seen["host"],
        format!("{}:{}", host(&id, PORT), s.port),
        "{seen}"
    );
    s.delete(&id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn path_form_rewrites_redirects_and_cookie_paths() {
    let s = TestServer::start().await;
    let sb = demo(&s, "runc", true).await;
    let id = id_of(&sb);
    let prefix = format!("/proxy/{id}/{PORT}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let location = |path: String| {
        let client = client.clone();
        async move {
            let resp = client.get(path).send().await.expect("GET");
            let loc = resp.headers()[header::LOCATION]
                .to_str()
                .expect("loc")
                .to_owned();
            (resp.status(), loc)
        }
    };
    assert_eq!(
        location(format!("{}{prefix}", s.url)).await,
        (StatusCode::PERMANENT_REDIRECT, format!("{prefix}/"))
    );
    assert_eq!(
        location(format!("{}{prefix}/redirect", s.url)).await,
        (StatusCode::FOUND, format!("{prefix}/target"))
    );
    assert_eq!(
        location(format!("{}{prefix}/redirect-abs", s.url)).await.1,
        format!("http://127.0.0.1:{}{prefix}/target", s.port)
    );
    let resp = client
        .get(format!("{}{prefix}/cookie", s.url))
        .send()
        .await
        .expect("GET");
    let cookies: Vec<&str> = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        cookies,
        [format!("a=1; Path={prefix}/; HttpOnly").as_str(), "b=2"]
    );
    // Headers acting on the whole origin (shared with the API and the web console) are
    // dropped; the host form, an origin of the app's own, keeps them.
    const ORIGIN_WIDE: [&str; 6] = [
        "service-worker-allowed",
        "clear-site-data",
        "strict-transport-security",
        "alt-svc",
        "cross-origin-opener-policy",
        "cross-origin-embedder-policy",
    ];
    let resp = client
        .get(format!("{}{prefix}/origin-wide", s.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::OK);
    for name in ORIGIN_WIDE {
        assert!(resp.headers().get(name).is_none(), "{name} passed");
    }
    let resp = client
        .get(format!("{}/origin-wide", s.url))
        .header(header::HOST, host(&id, PORT))
        .send()
        .await
        .expect("GET");
    for name in ORIGIN_WIDE {
        assert!(resp.headers().get(name).is_some(), "{name} missing");
    }
    // A service worker registered from a /proxy/ page would control the whole origin.
    let resp = client
        .get(format!("{}{prefix}/sw.js", s.url))
        .header("Service-Worker", "script")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // The host form leaves the app's own paths alone.
    let resp = client
        .get(format!("{}/redirect", s.url))
        .header(header::HOST, host(&id, PORT))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.headers()[header::LOCATION], "/target");
    s.delete(&id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_say_what_is_wrong() {
    let s = TestServer::start().await;
    let sb = demo(&s, "runc", true).await;
    let id = id_of(&sb);
    // Nothing on that port: 502, and the page names it.
    let resp = s
        .http
        .get(format!("{}/", s.url))
        .header(header::HOST, host(&id, 9999))
        .header(header::ACCEPT, "text/html,*/*")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let page = resp.text().await.expect("page");
    assert!(page.contains("9999") && page.contains("<html"), "{page}");
    let resp = s
        .http
        .get(format!("{}/", s.url))
        .header(header::HOST, host(&id, 9999))
        .send()
        .await
        .expect("GET");
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "bad_gateway");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("port 9999"));

    // Unknown sandbox: 404.
    let resp = s
        .http
        .get(format!("{}/", s.url))
        .header(header::HOST, host("aaaaaaaaaaaaaaaa", PORT))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Stopped: 409; deleted: 404.
    let resp = s.post(&format!("/v1/sandboxes/{id}/stop"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = at(&s, Method::GET, &id, "/").send().await.expect("GET");
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let v: Value = resp.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("stopped"),
        "{v}"
    );
    s.delete(&id).await;
    let resp = at(&s, Method::GET, &id, "/").send().await.expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // The API itself is untouched by the proxy.
    let resp = s
        .req(Method::GET, "/v1/sandboxes")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::OK);
    s.shutdown().await;
}

/// A client connection keeps its app connection between requests; one that names another
/// sandbox (or port) on its next request must reach that one, and an app that closes its end
/// after each answer (busybox httpd) must not cost the client an error.
#[tokio::test(flavor = "multi_thread")]
async fn one_client_connection_reaches_every_sandbox_it_names() {
    let s = TestServer::start().await;
    let serve_id =
        "mkdir -p /www && echo $HOSTNAME > /www/index.html && exec httpd -f -p 8000 -h /www";
    let mut ids = Vec::new();
    for _ in 0..2 {
        let sb = s
            .create(serde_json::json!({"image": "busybox", "runtime": "runc", "public": true, "cmd": ["sh", "-c", serve_id]}))
            .await;
        ids.push(id_of(&sb));
    }
    let demo_sb = demo(&s, "runc", true).await;
    let demo_id = id_of(&demo_sb);
    // One connection for everything.
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    for round in 0..6 {
        for id in &ids {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let body = loop {
                let resp = client
                    .get(format!("{}/", s.url))
                    .header(header::HOST, host(id, PORT))
                    .send()
                    .await
                    .expect("GET");
                if resp.status() == StatusCode::OK {
                    break resp.text().await.expect("body");
                }
                // httpd may still be starting on the first round.
                assert!(
                    round == 0 && std::time::Instant::now() < deadline,
                    "{id}: {}",
                    resp.status()
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            assert_eq!(body.trim(), id, "round {round}");
        }
        let resp = client
            .get(format!("{}/", s.url))
            .header(header::HOST, host(&demo_id, PORT))
            .send()
            .await
            .expect("GET");
        assert_eq!(
            resp.text().await.expect("body"),
            "hello from warren demo-http\n"
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_never_reach_the_app_in_any_form() {
    let s = TestServer::start().await;
    let key = s.key.clone();
    let upper = key.to_ascii_uppercase();
    for public in [true, false] {
        let sb = demo(&s, "runc", public).await;
        let id = id_of(&sb);
        // The traffic token opens a private port (and is itself taken off); the API key rides
        // along in each form, never needed, never passed on.
        let token = sb["traffic_token"]
            .as_str()
            .expect("traffic_token")
            .to_owned();
        let headers =
            || at(&s, Method::GET, &id, "/headers").header("X-Warren-Traffic-Token", &token);
        let forms = [
            ("X-API-KEY", key.clone()),
            ("x-api-key", format!(" {key} ")),
            ("Authorization", key.clone()),
            ("Authorization", format!("bearer {key}")),
            ("Authorization", format!("BEARER \t {key}")),
            ("Authorization", format!("Bearer {upper}")),
        ];
        for (name, value) in &forms {
            let seen = seen_headers(headers().header(*name, value)).await;
            let text = seen.to_string();
            assert!(
                !text.contains(&key) && !text.contains(&upper),
                "public={public} {name}: {value:?} reached the app: {seen}"
            );
        }
        // The app's own credentials arrive.
        let seen = seen_headers(headers().header("X-Api-Key", "the-apps-own")).await;
        assert_eq!(seen["x-api-key"], "the-apps-own", "{seen}");
        let seen = seen_headers(headers().basic_auth("user", Some("pass"))).await;
        assert_eq!(seen["authorization"], "Basic dXNlcjpwYXNz", "{seen}");
        s.delete(&id).await;
    }
    s.shutdown().await;
}
