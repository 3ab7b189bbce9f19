//! The preview proxy's listeners: a proxy-only listener with its own domain, TLS (a local CA,
//! or a certificate given as files), and what `warren inspect` shows of a sandbox's ports.
mod common;

use common::preview::{demo, host, id_of, PORT};
use common::TestServer;
use reqwest::{header, Method, StatusCode};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn a_separate_proxy_listener_serves_previews_only() {
    let proxy_port = common::free_port();
    let listen = format!("127.0.0.1:{proxy_port}");
    let s = TestServer::start_with(&["--proxy-listen", &listen, "--domain", "preview.test"]).await;
    let sb = demo(&s, "runc", true).await;
    let id = id_of(&sb);
    assert_eq!(
        sb["urls"][PORT.to_string()],
        format!("http://{id}-{PORT}.preview.test:{proxy_port}/")
    );
    let proxy_url = format!("http://{listen}");
    let resp = s
        .http
        .get(format!("{proxy_url}/"))
        .header(header::HOST, format!("{id}-{PORT}.preview.test"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        resp.text().await.expect("body"),
        "hello from warren demo-http\n"
    );
    // The API is not served there…
    let resp = s
        .http
        .get(format!("{proxy_url}/v1/sandboxes"))
        .bearer_auth(&s.key)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // …and the old domain names nothing.
    let resp = s
        .http
        .get(format!("{proxy_url}/"))
        .header(header::HOST, host(&id, PORT))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    s.delete(&id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inspect_shows_ports_and_urls() {
    let s = TestServer::start().await;
    let sb = demo(&s, "runc", false).await;
    let id = id_of(&sb);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["inspect", &id])
        .env("WARREN_URL", &s.url)
        .env("WARREN_API_KEY", &s.key)
        .output()
        .expect("warren inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{PORT} on 0.0.0.0 → http://{id}-{PORT}.localhost:{}/",
            s.port
        )),
        "{text}"
    );
    assert!(text.contains("private"), "{text}");
    s.delete(&id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_self_signed_and_given_certificates() {
    let s = TestServer::start_with(&["--tls-self-signed"]).await;
    assert!(s.url.starts_with("https://"));
    let sb = demo(&s, "runc", true).await;
    let id = id_of(&sb);
    let preview = format!("https://{}:{}/", host(&id, PORT), s.port);
    assert_eq!(sb["urls"][PORT.to_string()], preview);
    // The preview name is pinned to loopback: no resolver is asked. The certificate must
    // verify for it against the local CA alone.
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(
                &std::fs::read(s.data_dir.join("tls/ca.pem")).expect("ca.pem"),
            )
            .expect("CA"),
        )
        .resolve(
            &host(&id, PORT),
            std::net::SocketAddr::from(([127, 0, 0, 1], s.port)),
        )
        .build()
        .expect("client");
    let resp = client
        .get(format!("{preview}headers"))
        .send()
        .await
        .expect("GET over TLS");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
    let seen: Value = resp.json().await.expect("headers");
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");

    // The CLI finds the local CA (and key) in the data dir: nothing to pass for https.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["exec", &id, "--url", &s.url, "--data-dir"])
        .arg(&s.data_dir)
        .args(["--", "echo", "over tls"])
        .env_remove("WARREN_API_KEY")
        .output()
        .expect("warren exec");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");
    // Without that CA the CLI says the certificate is the problem, not that nothing runs.
    let elsewhere = tempfile::tempdir().expect("scratch");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["ls", "--url", &s.url, "--data-dir"])
        .arg(elsewhere.path())
        .env("WARREN_API_KEY", &s.key)
        .env_remove("WARREN_CA_CERT")
        .output()
        .expect("warren ls");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("does not trust") && stderr.contains("--ca-cert"),
        "{stderr}"
    );

    // The same certificate, given as files to a second server, is served as given.
    let cert = s.data_dir.join("tls/server.pem");
    let key = s.data_dir.join("tls/server-key.pem");
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let s2 = TestServer::start_with(&["--tls-cert", &cert, "--tls-key", &key]).await;
    let resp = s2
        .req(Method::GET, "/v1/sandboxes")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::OK);
    s2.shutdown().await;
    s.delete(&id).await;
    s.shutdown().await;
}
