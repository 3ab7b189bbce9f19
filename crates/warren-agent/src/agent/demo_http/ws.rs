//! `GET /ws` of `demo-http`: the RFC 6455 opening handshake on hyper's HTTP/1.1 upgrade, then an
//! echo of every text and binary message until the client closes.

use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::body::DemoBody;
use super::text;

/// Answers the handshake and, once hyper hands over the connection, echoes on it in a task.
pub fn upgrade(mut req: Request<Incoming>) -> Response<DemoBody> {
    // WebSocket over HTTP/2 (RFC 8441's extended CONNECT) is not offered.
    if req.version() != Version::HTTP_11 {
        return text(StatusCode::BAD_REQUEST, "WebSocket needs HTTP/1.1\n");
    }
    let headers = req.headers();
    if !has_token(headers, &UPGRADE, "websocket") || !has_token(headers, &CONNECTION, "upgrade") {
        let mut resp = text(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade expected\n");
        resp.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return resp;
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut resp = text(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        resp.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return resp;
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key missing\n");
    };
    // Base64 of a SHA-1 digest: always a valid header value.
    let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key\n");
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        // An upgrade that fails is a client gone before the 101 arrived: nothing to do.
        if let Ok(upgraded) = on_upgrade.await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            echo(ws).await;
        }
    });

    let mut resp = Response::new(DemoBody::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

async fn echo<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // Reading also answers: tungstenite queues the pong to a ping and the reply to a close, and
    // writes them before it reads again; after a close the next read ends the stream.
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// Whether a comma-separated header (any of its lines) holds `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_in_lists_and_any_case() {
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.append(CONNECTION, HeaderValue::from_static("x, Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(has_token(&headers, &CONNECTION, "upgrade"));
        assert!(has_token(&headers, &UPGRADE, "websocket"));
        assert!(!has_token(&headers, &CONNECTION, "close"));
        assert!(!has_token(&headers, &SEC_WEBSOCKET_KEY, "x"));
    }

    #[test]
    fn accept_key_is_the_rfc_example() {
        // RFC 6455, section 1.3.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
