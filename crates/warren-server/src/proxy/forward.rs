//! Passing a request to a sandbox port and its answer back: a pooled HTTP/1.1 client to the
//! sandbox address, hop-by-hop headers dropped both ways, `X-Forwarded-*` added, bodies
//! streamed frame by frame (SSE arrives as it is written), and WebSocket (any HTTP/1.1
//! upgrade) tunnelled byte for byte once the app agrees to it.
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::response::Response;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Headers that describe one hop, never passed on (RFC 9110 §7.6.1), besides those a
/// `Connection` header names.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// How a forward failed.
#[derive(Debug)]
pub enum ForwardError {
    /// The connection was refused or timed out: nothing listens there.
    Connect,
    /// The exchange broke off after connecting.
    Exchange(String),
}

fn client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

thread_local! {
    // One pool per thread: each listener thread runs its own runtime, and a pooled connection
    // is driven by the runtime that opened it; sharing one across threads would bounce every
    // exchange between them.
    static CLIENT: Client<HttpConnector, Body> = client();
}

/// What the proxy adds to a request besides the target.
pub struct Forwarding<'a> {
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// Whether the client came over TLS.
    pub tls: bool,
    /// The host the client asked for (for `X-Forwarded-Host`).
    pub host: Option<&'a str>,
}

fn wants_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Drops hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

fn append_forwarded(headers: &mut HeaderMap, fwd: &Forwarding<'_>) {
    if let Some(client) = fwd.client {
        let ip = client.ip().to_string();
        let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("x-forwarded-for", v);
        }
    }
    let proto = if fwd.tls { "https" } else { "http" };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Some(host) = fwd.host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert("x-forwarded-host", host);
    }
}

/// Sends `req` to `addr` as `path_and_query` and returns the app's answer (headers not
/// yet rewritten for the path form; the caller does that).
pub async fn forward(
    mut req: Request,
    addr: SocketAddr,
    path_and_query: &str,
    fwd: &Forwarding<'_>,
) -> Result<Response, ForwardError> {
    let upgrade = (req.version() == Version::HTTP_11)
        .then(|| wants_upgrade(req.headers()))
        .flatten();
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let uri: Uri = format!("http://{addr}{path_and_query}")
        .parse()
        .map_err(|e| ForwardError::Exchange(format!("bad path {path_and_query:?}: {e}")))?;
    // HTTP/2 clients name the host in the URI only; the app gets it as `Host`.
    let host = req.uri().authority().map(|a| a.as_str().to_owned());
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if !headers.contains_key(header::HOST) {
        if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            headers.insert(header::HOST, v);
        }
    }
    append_forwarded(headers, fwd);
    if let Some(proto) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto.clone());
    }
    let mut resp = CLIENT.with(Client::clone).request(req).await.map_err(|e| {
        if e.is_connect() {
            ForwardError::Connect
        } else {
            ForwardError::Exchange(source_chain(&e))
        }
    })?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let app_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(client), Ok(app)) = (client_upgrade.await, app_upgrade.await) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(app),
                )
                .await;
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, Body::empty()));
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        append_forwarded(
            &mut h,
            &Forwarding {
                client: Some("127.0.0.1:5000".parse().expect("addr")),
                tls: true,
                host: Some("a-1.localhost"),
            },
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a-1.localhost");
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h).is_none());
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            wants_upgrade(&h),
            Some(HeaderValue::from_static("websocket"))
        );
    }
}
