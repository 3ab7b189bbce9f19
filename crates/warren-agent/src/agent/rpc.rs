//! The Connect side of each `process.Process` method: reading and checking the request body,
//! calling the supervisor, and shaping the answer (unary JSON or an envelope stream).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use warren_agent::connect::{self, code, path, ConnectError, EndStream};
use warren_agent::envelope::{self, EnvelopeDecoder};
use warren_agent::{
    CloseStdinRequest, Empty, ListResponse, SendInputRequest, SendSignalRequest, StartRequest,
};

use super::body::AgentBody;
use super::process::{StreamOptions, Supervisor};

/// Request bodies above this are refused (stdin chunks are the only big ones).
const MAX_REQUEST_BODY: usize = 32 << 20;

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: AgentBody,
) -> Response<AgentBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A failed unary call: the Connect error as JSON, with the code's HTTP status.
pub fn unary_error(error: &ConnectError) -> Response<AgentBody> {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(error).unwrap_or_default();
    response(status, connect::CONTENT_TYPE_UNARY, AgentBody::full(body))
}

/// 415, for a body in a codec this agent does not speak (the Connect rule).
pub fn unsupported_media_type() -> Response<AgentBody> {
    let mut resp = Response::new(AgentBody::empty());
    *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    resp
}

fn content_type_is(headers: &HeaderMap, expected: &str, missing_ok: bool) -> bool {
    match headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        None => missing_ok,
        Some(value) => {
            let essence = value.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case(expected)
        }
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, ConnectError> {
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ConnectError::new(
            code::RESOURCE_EXHAUSTED,
            format!("request body exceeds {MAX_REQUEST_BODY} bytes"),
        )),
        Err(e) => Err(ConnectError::new(
            code::INVALID_ARGUMENT,
            format!("cannot read request body: {e}"),
        )),
    }
}

fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, ConnectError> {
    // Connect clients may send an empty body for an empty message.
    let json: &[u8] = if json.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        json
    };
    serde_json::from_slice(json).map_err(|e| {
        ConnectError::new(
            code::INVALID_ARGUMENT,
            format!("invalid request message: {e}"),
        )
    })
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
}

/// `process.Process/Start`: one request envelope in, an envelope stream out. Failures before the
/// process runs end the stream with an error and no events, as connect-go does for envd.
pub async fn start(sup: &Arc<Supervisor>, req: Request<Incoming>) -> Response<AgentBody> {
    if !content_type_is(req.headers(), connect::CONTENT_TYPE_STREAM, false) {
        return unsupported_media_type();
    }
    let options = StreamOptions {
        keepalive: header_number(req.headers(), connect::HEADER_KEEPALIVE_INTERVAL)
            .map(Duration::from_secs),
        timeout: header_number(req.headers(), connect::HEADER_TIMEOUT_MS)
            .map(Duration::from_millis),
    };
    let started = async {
        let body = read_body(req.into_body()).await?;
        let mut decoder = EnvelopeDecoder::with_max_len(MAX_REQUEST_BODY);
        decoder.push(&body);
        let message = match decoder.next_envelope() {
            Ok(Some(env)) if env.is_compressed() => {
                return Err(ConnectError::new(
                    code::INVALID_ARGUMENT,
                    "compressed request message without negotiated compression",
                ))
            }
            Ok(Some(env)) => env.data,
            Ok(None) => {
                return Err(ConnectError::new(
                    code::INVALID_ARGUMENT,
                    "request body holds no complete envelope",
                ))
            }
            Err(e) => return Err(ConnectError::new(code::INVALID_ARGUMENT, e.to_string())),
        };
        let request: StartRequest = parse(&message)?;
        sup.start(request, options)
    };
    let body = match started.await {
        Ok(events) => AgentBody::Stream(events),
        Err(error) => {
            let end = EndStream { error: Some(error) };
            AgentBody::full(
                envelope::encode_json(envelope::FLAG_END_STREAM, &end).unwrap_or_default(),
            )
        }
    };
    response(StatusCode::OK, connect::CONTENT_TYPE_STREAM, body)
}

fn to_json<T: Serialize>(message: &T) -> Result<Bytes, ConnectError> {
    serde_json::to_vec(message)
        .map(Bytes::from)
        .map_err(|e| ConnectError::new(code::INTERNAL, format!("cannot encode response: {e}")))
}

async fn call(sup: &Supervisor, route: &str, body: &[u8]) -> Result<Bytes, ConnectError> {
    match route {
        path::LIST => {
            let _: Empty = parse(body)?;
            to_json(&ListResponse {
                processes: sup.list(),
            })
        }
        path::SEND_INPUT => {
            let req: SendInputRequest = parse(body)?;
            sup.send_input(&req.process, req.input).await?;
            to_json(&Empty {})
        }
        path::CLOSE_STDIN => {
            let req: CloseStdinRequest = parse(body)?;
            sup.close_stdin(&req.process).await?;
            to_json(&Empty {})
        }
        path::SEND_SIGNAL => {
            let req: SendSignalRequest = parse(body)?;
            sup.send_signal(&req.process, req.signal)?;
            to_json(&Empty {})
        }
        other => Err(ConnectError::new(
            code::UNIMPLEMENTED,
            format!("{other} is not implemented by this agent"),
        )),
    }
}

/// A unary `process.Process` method: JSON in, JSON out.
pub async fn unary(sup: &Supervisor, route: &str, req: Request<Incoming>) -> Response<AgentBody> {
    if !content_type_is(req.headers(), connect::CONTENT_TYPE_UNARY, true) {
        return unsupported_media_type();
    }
    let result = match read_body(req.into_body()).await {
        Ok(body) => call(sup, route, &body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(json) => response(
            StatusCode::OK,
            connect::CONTENT_TYPE_UNARY,
            AgentBody::full(json),
        ),
        Err(error) => unary_error(&error),
    }
}
