//! `listen::serve` and `tls::server_config` over real sockets on 127.0.0.1: TLS with the local
//! CA and with PEM files, HTTP/1.1 and HTTP/2 (ALPN and prior knowledge), WebSocket upgrades,
//! and graceful shutdown. No sandboxes, no root.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warren_server::listen::{self, ConnInfo};
use warren_server::{tls, TlsSource};

fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route(
            "/conn",
            get(|Extension(info): Extension<Arc<ConnInfo>>| async move {
                format!("{} {}", info.tls, info.remote)
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async { ws.on_upgrade(echo) }),
        )
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if matches!(msg, Message::Text(_) | Message::Binary(_)) && socket.send(msg).await.is_err() {
            break;
        }
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Running {
    // Two workers, so consecutive connections land on different threads.
    start_with(tls, 2).await
}

async fn start_with(tls: Option<Arc<rustls::ServerConfig>>, workers: usize) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(listen::serve(listener, tls, app(), workers, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

fn client_config(ca_pem: &Path, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &Path,
    alpn: &[u8],
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(client_config(ca_pem, alpn))
        .connect(name, tcp)
        .await
}

/// GET `path` over HTTP/1.1 on `io`; the status and body.
async fn get_h1<S>(io: S, path: &str) -> (http::StatusCode, String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// GET `uri` over HTTP/2 on `io`; the status and body.
async fn get_h2<S>(io: S, uri: &str) -> (http::StatusCode, String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Every name in `names` fails certificate verification against `ca`.
async fn assert_refused(addr: std::net::SocketAddr, ca: &Path, names: &[&str]) {
    for name in names {
        let err = tls_connect(addr, ca, b"http/1.1", name).await.unwrap_err();
        assert!(is_bad_certificate(&err), "{name}: {err}");
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_bad_certificate(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)))
}

#[tokio::test]
async fn self_signed_serves_preview_names_over_h1_and_h2() {
    let data = tempfile::tempdir().unwrap();
    let config = tls::server_config(&TlsSource::SelfSigned, data.path(), "localhost").unwrap();
    let ca = tls::ca_path(data.path());
    assert_eq!(ca, data.path().join("tls/ca.pem"));
    let server = start(Some(config)).await;

    let tls = tls_connect(server.addr, &ca, b"http/1.1", "abc-8000.localhost")
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        get_h1(tls, "/hello").await,
        (http::StatusCode::OK, "hi".into())
    );

    let tls = tls_connect(server.addr, &ca, b"h2", "abc-8000.localhost")
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, body) = get_h2(tls, "https://abc-8000.localhost/hello").await;
    assert_eq!((status, body.as_str()), (http::StatusCode::OK, "hi"));

    // The handler sees the connection: TLS, and the client's own address.
    let tls = tls_connect(server.addr, &ca, b"http/1.1", "localhost")
        .await
        .unwrap();
    let local = tls.get_ref().0.local_addr().unwrap();
    let (_, body) = get_h1(tls, "/conn").await;
    assert_eq!(body, format!("true {local}"));

    // Without SNI (an IP address) the start-time certificate answers, and it names 127.0.0.1.
    let tls = tls_connect(server.addr, &ca, b"http/1.1", "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(get_h1(tls, "/hello").await.1, "hi");

    // Names the CA does not vouch for fail verification.
    assert_refused(server.addr, &ca, &["example.com", "a.b.localhost"]).await;
    server.stop().await;
}

#[tokio::test]
async fn self_signed_covers_a_custom_domain() {
    let data = tempfile::tempdir().unwrap();
    let config = tls::server_config(&TlsSource::SelfSigned, data.path(), "Warren.Test.").unwrap();
    let ca = tls::ca_path(data.path());
    let server = start(Some(config)).await;
    for name in [
        "sb1-3000.warren.test",
        "warren.test",
        "sb1-3000.localhost",
        "localhost",
    ] {
        let tls = tls_connect(server.addr, &ca, b"http/1.1", name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(get_h1(tls, "/hello").await.1, "hi", "{name}");
    }
    assert_refused(server.addr, &ca, &["warren.example", "a.b.warren.test"]).await;
    server.stop().await;
}

#[tokio::test]
async fn self_signed_ca_is_made_once_and_kept_private() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("tls");
    tls::server_config(&TlsSource::SelfSigned, data.path(), "localhost").unwrap();
    let ca_before = std::fs::read(dir.join("ca.pem")).unwrap();
    let ca_key_before = std::fs::read(dir.join("ca-key.pem")).unwrap();
    let server_before = std::fs::read(dir.join("server.pem")).unwrap();

    let config = tls::server_config(&TlsSource::SelfSigned, data.path(), "localhost").unwrap();
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca_before);
    assert_eq!(
        std::fs::read(dir.join("ca-key.pem")).unwrap(),
        ca_key_before
    );
    // The server certificate is remade each start (so a new --domain takes effect).
    assert_ne!(
        std::fs::read(dir.join("server.pem")).unwrap(),
        server_before
    );

    assert_eq!(mode(&dir), 0o755);
    for file in ["ca-key.pem", "server-key.pem"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    for file in ["ca.pem", "server.pem"] {
        assert_eq!(mode(&dir.join(file)), 0o644, "{file}");
    }
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");

    // Certificates signed by the reloaded CA verify against the CA users already trust.
    let server = start(Some(config)).await;
    let ca_copy = data.path().join("trusted-ca.pem");
    std::fs::write(&ca_copy, &ca_before).unwrap();
    for name in ["x-1.localhost", "localhost"] {
        let tls = tls_connect(server.addr, &ca_copy, b"h2", name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(get_h2(tls, "https://localhost/hello").await.1, "hi");
    }
    server.stop().await;
}

/// A CA and a leaf for `localhost` signed by it, as PEM: (ca cert, leaf cert, leaf key).
fn make_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[tokio::test]
async fn pem_files_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_pki();
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_path, ca).unwrap();
    // A chain file may carry intermediates after the leaf; here the CA itself.
    std::fs::write(
        &cert_path,
        format!("{cert}{}", std::fs::read_to_string(&ca_path).unwrap()),
    )
    .unwrap();
    std::fs::write(&key_path, key).unwrap();
    let source = TlsSource::Files {
        cert: cert_path,
        key: key_path,
    };
    let config = tls::server_config(&source, dir.path(), "localhost").unwrap();
    assert!(!dir.path().join("tls").exists(), "files mode makes no CA");
    let server = start(Some(config)).await;
    let tls = tls_connect(server.addr, &ca_path, b"h2", "localhost")
        .await
        .unwrap();
    assert_eq!(get_h2(tls, "https://localhost/hello").await.1, "hi");
    server.stop().await;
}

#[test]
fn pem_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = make_pki();
    let (_, _, other_key) = make_pki();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let err_of = |cert: &Path, key: &Path| {
        let source = TlsSource::Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        format!(
            "{:#}",
            tls::server_config(&source, dir.path(), "localhost").unwrap_err()
        )
    };

    let missing = dir.path().join("missing-key.pem");
    let err = err_of(&cert_path, &missing);
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");

    let missing = dir.path().join("missing-cert.pem");
    let err = err_of(&missing, &key_path);
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let err = err_of(&cert_path, &garbage);
    assert!(err.contains(&*garbage.to_string_lossy()), "{err}");
    assert!(err.contains("no PEM private key"), "{err}");
    let err = err_of(&garbage, &key_path);
    assert!(err.contains(&*garbage.to_string_lossy()), "{err}");
    assert!(err.contains("no PEM certificate"), "{err}");

    // A certificate where the key should be: still no key in it.
    let err = err_of(&cert_path, &cert_path);
    assert!(err.contains("no PEM private key"), "{err}");

    let bad_base64 = dir.path().join("bad-base64.pem");
    std::fs::write(
        &bad_base64,
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = err_of(&cert_path, &bad_base64);
    assert!(err.contains(&*bad_base64.to_string_lossy()), "{err}");

    let other = dir.path().join("other-key.pem");
    std::fs::write(&other, other_key).unwrap();
    let err = err_of(&cert_path, &other);
    assert!(err.contains(&*other.to_string_lossy()), "{err}");
    assert!(err.contains("do they belong together"), "{err}");
}

#[tokio::test]
async fn plain_tcp_serves_h1_h2c_and_websockets() {
    let server = start(None).await;

    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    assert_eq!(
        get_h1(tcp, "/hello").await,
        (http::StatusCode::OK, "hi".into())
    );
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let local2 = tcp.local_addr().unwrap();
    assert_ne!(local, local2);
    assert_eq!(get_h1(tcp, "/conn").await.1, format!("false {local2}"));

    // HTTP/2 with prior knowledge (h2c).
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let uri = format!("http://{}/hello", server.addr);
    assert_eq!(get_h2(tcp, &uri).await, (http::StatusCode::OK, "hi".into()));

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "ping");
    ws.close(None).await.unwrap();

    server.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_does_not_block_others() {
    let data = tempfile::tempdir().unwrap();
    let config = tls::server_config(&TlsSource::SelfSigned, data.path(), "localhost").unwrap();
    let ca = tls::ca_path(data.path());
    let server = start(Some(config)).await;
    // Connected, never says a word.
    let idle = TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(2),
        tls_connect(server.addr, &ca, b"http/1.1", "localhost"),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(get_h1(tls, "/hello").await.1, "hi");
    drop(idle);
    server.stop().await;
}

#[tokio::test]
async fn one_worker_answers_other_connections_while_a_request_waits() {
    // One worker is the default on a 2-core host: every connection shares its thread.
    let server = start_with(None, 1).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let slow = tokio::spawn(get_h1(tcp, "/slow"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(get_h1(tcp, "/hello").await.1, "hi");
    assert!(
        !slow.is_finished(),
        "the second connection was answered while the first request was still waiting"
    );
    assert_eq!(slow.await.unwrap().1, "done");
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let mut server = start(None).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let in_flight = tokio::spawn(get_h1(tcp, "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopped_at = Instant::now();
    let _ = server.stop.take().unwrap().send(());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "new connections are refused once stopping"
    );

    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (http::StatusCode::OK, "done"));
    tokio::time::timeout(Duration::from_secs(2), &mut server.task)
        .await
        .expect("serve returns soon after its connections finish")
        .unwrap()
        .unwrap();
    assert!(stopped_at.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn graceful_shutdown_closes_idle_keepalive_connections() {
    let mut server = start(None).await;
    // An HTTP/1.1 keep-alive connection and an HTTP/2 one, both idle after a request.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut h1, h1_conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let h1_conn = tokio::spawn(h1_conn);
    let req = http::Request::get("/hello")
        .header("host", "test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(h1.send_request(req).await.unwrap().status(), 200);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (_h2, h2_conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let h2_conn = tokio::spawn(h2_conn);

    let stopped_at = Instant::now();
    let _ = server.stop.take().unwrap().send(());
    tokio::time::timeout(Duration::from_secs(2), &mut server.task)
        .await
        .expect("idle connections do not hold the stop")
        .unwrap()
        .unwrap();
    assert!(stopped_at.elapsed() < Duration::from_secs(2));
    // The server closed both; the clients see their connections end.
    tokio::time::timeout(Duration::from_secs(2), h1_conn)
        .await
        .unwrap()
        .unwrap()
        .ok();
    tokio::time::timeout(Duration::from_secs(2), h2_conn)
        .await
        .unwrap()
        .unwrap()
        .ok();
}
