//! Passing a request to a sandbox port and its answer back: a pooled HTTP/1.1 client to the
//! sandbox address, hop-by-hop headers dropped both ways, `X-Forwarded-*` added, bodies
//! streamed frame by frame (SSE arrives as it is written), and WebSocket (any HTTP/1.1
//! upgrade) tunnelled byte for byte once the app agrees to it.
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::http::{Request, StatusCode, Uri, Version};
use axum::response::Response;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::listen::ConnInfo;

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

/// The app connection a client connection last used, kept for its next request: an HTTP/1.1
/// client sends its requests one after another, so one upstream connection serves them all
/// without a trip through the shared pool. One per client connection (in its
/// [`ConnInfo`](crate::listen::ConnInfo)).
#[derive(Default)]
pub struct Pinned(std::sync::Mutex<Slot>);

#[derive(Default)]
enum Slot {
    #[default]
    Empty,
    /// A request is on it (an HTTP/2 client's other streams go through the pool meanwhile).
    Busy,
    Idle(SocketAddr, SendRequest<Incoming>),
}

enum Take {
    Reuse(SendRequest<Incoming>),
    Connect,
    Pool,
}

impl Pinned {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, addr: SocketAddr) -> Take {
        let mut slot = self.slot();
        match std::mem::replace(&mut *slot, Slot::Busy) {
            Slot::Idle(to, sender) if to == addr && sender.is_ready() => Take::Reuse(sender),
            // Its last answer is still streaming: leave it be.
            Slot::Idle(to, sender) if to == addr && !sender.is_closed() => {
                *slot = Slot::Idle(to, sender);
                Take::Pool
            }
            Slot::Idle(..) | Slot::Empty => Take::Connect,
            Slot::Busy => Take::Pool,
        }
    }

    fn put(&self, addr: SocketAddr, sender: SendRequest<Incoming>) {
        *self.slot() = Slot::Idle(addr, sender);
    }

    fn clear(&self) {
        *self.slot() = Slot::Empty;
    }
}

/// A new HTTP/1.1 connection to `addr`, driven on this thread's runtime.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Incoming>, ForwardError> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| ForwardError::Connect)?
        .map_err(|_| ForwardError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ForwardError::Exchange(source_chain(&e)))?;
    tokio::spawn(async move {
        // The app closing an idle connection is routine.
        let _ = conn.await;
    });
    Ok(sender)
}

type Answer = Result<hyper::Response<Incoming>, ForwardError>;

/// Sends `req` over this client connection's pinned app connection (made if there is none),
/// or, when another request holds it (HTTP/2 clients multiplex), through the pool.
// The common case (an idle pinned connection that takes the request) awaits only hyper's own
// small future; connecting and the pool are boxed, so the future every request moves is
// smaller.
async fn send_pinned(pinned: &Pinned, addr: SocketAddr, req: Request<Incoming>) -> Answer {
    let sent = match pinned.take(addr) {
        Take::Reuse(mut sender) => match sender.try_send_request(req).await {
            Ok(resp) => Ok((sender, resp)),
            // The app closed the idle connection before our request went out: once more on a
            // new one.
            Err(mut e) => match e.take_message() {
                Some(req) => Box::pin(connect_and_send(addr, req)).await,
                None => Err(ForwardError::Exchange(source_chain(e.error()))),
            },
        },
        Take::Connect => Box::pin(connect_and_send(addr, req)).await,
        Take::Pool => return Box::pin(send_pooled(req.map(Body::new), addr)).await,
    };
    match sent {
        Ok((sender, resp)) => {
            pinned.put(addr, sender);
            Ok(resp)
        }
        Err(e) => {
            pinned.clear();
            Err(e)
        }
    }
}

async fn connect_and_send(
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<(SendRequest<Incoming>, hyper::Response<Incoming>), ForwardError> {
    let mut sender = connect(addr).await?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ForwardError::Exchange(source_chain(&e)))?;
    Ok((sender, resp))
}

async fn send_pooled(mut req: Request<Body>, addr: SocketAddr) -> Answer {
    // The pool's client wants the absolute form; it sends the origin form.
    let uri: Uri = format!("http://{addr}{}", req.uri())
        .parse()
        .map_err(|e| ForwardError::Exchange(format!("bad path {}: {e}", req.uri())))?;
    *req.uri_mut() = uri;
    CLIENT.with(Client::clone).request(req).await.map_err(|e| {
        if e.is_connect() {
            ForwardError::Connect
        } else {
            ForwardError::Exchange(source_chain(&e))
        }
    })
}

/// What the proxy adds to a request besides the target.
pub struct Forwarding<'a> {
    /// The client's connection.
    pub conn: Option<&'a ConnInfo>,
    /// The host the client asked for (for `X-Forwarded-Host`).
    pub host: Option<&'a HeaderValue>,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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
    // Most messages carry none: one pass over their few names costs less than ten lookups.
    let any = headers
        .keys()
        .any(|k| k == header::UPGRADE || HOP_BY_HOP.contains(k));
    if !any {
        return;
    }
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
    if let Some(ip) = fwd.conn.and_then(|c| c.remote_ip.as_ref()) {
        let value = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
            Some(prior) => {
                let mut v = prior.to_vec();
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip.as_bytes());
                HeaderValue::from_bytes(&v).ok()
            }
            None => Some(ip.clone()),
        };
        if let Some(v) = value {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    let proto = if fwd.conn.is_some_and(|c| c.tls) {
        "https"
    } else {
        "http"
    };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = fwd.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// Sends `req` to `addr` as `path_and_query` and returns the app's answer (headers not
/// yet rewritten for the path form; the caller does that).
pub async fn forward(
    mut req: Request<Incoming>,
    addr: SocketAddr,
    path_and_query: &PathAndQuery,
    fwd: &Forwarding<'_>,
) -> Result<Response, ForwardError> {
    let upgrade = (req.version() == Version::HTTP_11)
        .then(|| wants_upgrade(req.headers()))
        .flatten();
    // HTTP/2 clients name the host in the URI only; the app gets it as `Host`.
    let host = req.uri().authority().map(|a| a.as_str().to_owned());
    *req.uri_mut() = Uri::from(path_and_query.clone());
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if !headers.contains_key(header::HOST) {
        if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            headers.insert(header::HOST, v);
        }
    }
    append_forwarded(headers, fwd);
    match (upgrade, fwd.conn) {
        // An upgraded connection leaves HTTP for good: it never goes back to the pin.
        (None, Some(conn)) => {
            let resp = send_pinned(&conn.pinned, addr, req).await?;
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, Body::new(body)))
        }
        (upgrade, _) => Box::pin(forward_pooled(req.map(Body::new), addr, upgrade)).await,
    }
}

/// The rest of [`forward`] for requests that do not use the pinned connection: those that
/// upgrade (WebSocket), and those with no connection to pin to.
async fn forward_pooled(
    mut req: Request<Body>,
    addr: SocketAddr,
    upgrade: Option<HeaderValue>,
) -> Result<Response, ForwardError> {
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    if let Some(proto) = upgrade {
        let headers = req.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
    let mut resp = send_pooled(req, addr).await?;
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
        let conn = ConnInfo::new("127.0.0.1:5000".parse().expect("addr"), true);
        let host = HeaderValue::from_static("a-1.localhost");
        append_forwarded(
            &mut h,
            &Forwarding {
                conn: Some(&conn),
                host: Some(&host),
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
