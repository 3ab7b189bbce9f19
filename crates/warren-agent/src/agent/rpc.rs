//! The Connect plumbing shared by every method (reading and checking request bodies, shaping
//! unary and stream answers) and the unary methods of both services.

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
    CloseStdinRequest, CreateWatcherResponse, Empty, GetWatcherEventsResponse, ListDirRequest,
    ListResponse, MoveRequest, PathRequest, SendInputRequest, SendSignalRequest, UpdateRequest,
    WatchRequest, WatcherRequest,
};

use super::as_user;
use super::body::AgentBody;
use super::fs;
use super::process::{StreamOptions, Supervisor};
use super::users::{Accounts, Table, User};
use super::watch::{Watcher, Watchers};

/// Request bodies above this are refused (stdin chunks are the only big ones).
pub const MAX_REQUEST_BODY: usize = 32 << 20;

/// Everything the methods work on.
pub struct Services {
    /// The processes.
    pub sup: Arc<Supervisor>,
    /// Who requests act as.
    pub accounts: Accounts,
    /// The polled filesystem watchers.
    pub watchers: Watchers,
}

/// A response with a content type.
pub fn response(
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

/// A stream answer: the envelopes from `events`, or only an end-of-stream message holding the
/// error (with status 200, as Connect streams report errors).
pub fn stream_response(
    events: Result<tokio::sync::mpsc::Receiver<Bytes>, ConnectError>,
) -> Response<AgentBody> {
    let body = match events {
        Ok(rx) => AgentBody::Stream(rx),
        Err(error) => AgentBody::full(end_stream(Some(error))),
    };
    response(StatusCode::OK, connect::CONTENT_TYPE_STREAM, body)
}

/// The framed end-of-stream message.
pub fn end_stream(error: Option<ConnectError>) -> Bytes {
    envelope::encode_json(envelope::FLAG_END_STREAM, &EndStream { error }).unwrap_or_default()
}

/// 415, for a body in a codec this agent does not speak (the Connect rule).
pub fn unsupported_media_type() -> Response<AgentBody> {
    let mut resp = Response::new(AgentBody::empty());
    *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    resp
}

/// Whether the request's content type is `expected` (parameters ignored).
pub fn content_type_is(headers: &HeaderMap, expected: &str, missing_ok: bool) -> bool {
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

/// Parses a JSON request message.
pub fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, ConnectError> {
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

/// The payload of one request envelope, refusing compressed ones.
pub fn envelope_payload(env: envelope::Envelope) -> Result<Bytes, ConnectError> {
    if env.is_compressed() {
        return Err(ConnectError::new(
            code::INVALID_ARGUMENT,
            "compressed request message without negotiated compression",
        ));
    }
    Ok(env.data)
}

/// The single message of a server-stream request.
pub async fn stream_request<T: DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, ConnectError> {
    let body = read_body(req.into_body()).await?;
    let mut decoder = EnvelopeDecoder::with_max_len(MAX_REQUEST_BODY);
    decoder.push(&body);
    match decoder.next_envelope() {
        Ok(Some(env)) => parse(&envelope_payload(env)?),
        Ok(None) => Err(ConnectError::new(
            code::INVALID_ARGUMENT,
            "request body holds no complete envelope",
        )),
        Err(e) => Err(ConnectError::new(code::INVALID_ARGUMENT, e.to_string())),
    }
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

/// Keepalive interval and deadline from a stream request's headers.
pub fn stream_options(headers: &HeaderMap) -> StreamOptions {
    StreamOptions {
        keepalive: header_number(headers, connect::HEADER_KEEPALIVE_INTERVAL)
            .map(Duration::from_secs),
        timeout: header_number(headers, connect::HEADER_TIMEOUT_MS).map(Duration::from_millis),
    }
}

fn to_json<T: Serialize>(message: &T) -> Result<Bytes, ConnectError> {
    serde_json::to_vec(message)
        .map(Bytes::from)
        .map_err(|e| ConnectError::new(code::INTERNAL, format!("cannot encode response: {e}")))
}

/// Runs filesystem work as `user`, off the (single) runtime thread.
async fn as_user<T: Send + 'static>(
    user: &User,
    work: impl FnOnce() -> Result<T, ConnectError> + Send + 'static,
) -> Result<T, ConnectError> {
    as_user::run(user, work).await?
}

async fn fs_call(
    services: &Services,
    user: User,
    route: &str,
    body: &[u8],
) -> Result<Bytes, ConnectError> {
    let accounts = services.accounts.clone();
    let table = move || Table::load(&accounts);
    let u = user.clone();
    match route {
        path::STAT => {
            let req: PathRequest = parse(body)?;
            to_json(&as_user(&user, move || fs::stat(&req.path, &u, &table())).await?)
        }
        path::MAKE_DIR => {
            let req: PathRequest = parse(body)?;
            to_json(&as_user(&user, move || fs::make_dir(&req.path, &u, &table())).await?)
        }
        path::MOVE => {
            let req: MoveRequest = parse(body)?;
            to_json(&as_user(&user, move || fs::rename(&req, &u, &table())).await?)
        }
        path::LIST_DIR => {
            let req: ListDirRequest = parse(body)?;
            to_json(&as_user(&user, move || fs::list_dir(&req, &u, &table())).await?)
        }
        path::REMOVE => {
            let req: PathRequest = parse(body)?;
            as_user(&user, move || fs::remove(&req.path, &u)).await?;
            to_json(&Empty {})
        }
        path::CREATE_WATCHER => {
            let req: WatchRequest = parse(body)?;
            let watcher = Watcher::new(&req, &user, &services.accounts).await?;
            to_json(&CreateWatcherResponse {
                watcher_id: services.watchers.create(watcher),
            })
        }
        path::GET_WATCHER_EVENTS => {
            let req: WatcherRequest = parse(body)?;
            to_json(&GetWatcherEventsResponse {
                events: services.watchers.take(&req.watcher_id)?,
            })
        }
        path::REMOVE_WATCHER => {
            let req: WatcherRequest = parse(body)?;
            services.watchers.remove(&req.watcher_id)?;
            to_json(&Empty {})
        }
        other => Err(ConnectError::new(
            code::UNIMPLEMENTED,
            format!("{other} is not implemented by this agent"),
        )),
    }
}

async fn call(
    services: &Services,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
) -> Result<Bytes, ConnectError> {
    let sup = &services.sup;
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
        path::UPDATE => {
            let req: UpdateRequest = parse(body)?;
            let size = req.pty.and_then(|p| p.size).ok_or_else(|| {
                ConnectError::new(code::INVALID_ARGUMENT, "update carries no pty size")
            })?;
            sup.resize(&req.process, size)?;
            to_json(&Empty {})
        }
        other => {
            // Only file operations act as a user; process methods work for any caller.
            let user = services.accounts.acting_user(headers, None)?;
            fs_call(services, user, other, body).await
        }
    }
}

/// A unary method of either service: JSON in, JSON out.
pub async fn unary(
    services: &Services,
    route: &str,
    req: Request<Incoming>,
) -> Response<AgentBody> {
    if !content_type_is(req.headers(), connect::CONTENT_TYPE_UNARY, true) {
        return unsupported_media_type();
    }
    let (parts, body) = req.into_parts();
    let result = match read_body(body).await {
        Ok(body) => call(services, &parts.headers, route, &body).await,
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
