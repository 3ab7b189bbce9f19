//! The streaming methods: `Start`, `Connect` and `WatchDir` (one request message, a stream of
//! answers) and `StreamInput` (a stream of request messages, one answer).

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};

use warren_agent::connect::{self, code, ConnectError};
use warren_agent::envelope::{self, EnvelopeDecoder};
use warren_agent::{
    ConnectRequest, ProcessSelector, StartRequest, StreamInputRequest, WatchEvent, WatchRequest,
};

use super::body::AgentBody;
use super::rpc::{
    content_type_is, end_stream, envelope_payload, parse, response, stream_options, stream_request,
    stream_response, unsupported_media_type, Services, MAX_REQUEST_BODY,
};
use super::users::User;
use super::watch::Watcher;

/// Envelopes queued per watch stream before the watcher waits for the client.
const WATCH_QUEUE: usize = 64;

/// `process.Process/Start`. Failures before the process runs end the stream with an error and
/// no events, as connect-go does for envd.
pub async fn start(services: &Services, user: User, req: Request<Incoming>) -> Response<AgentBody> {
    if !content_type_is(req.headers(), connect::CONTENT_TYPE_STREAM, false) {
        return unsupported_media_type();
    }
    let options = stream_options(req.headers());
    let events = match stream_request::<StartRequest>(req).await {
        Ok(request) => services.sup.start(request, options, &user),
        Err(e) => Err(e),
    };
    stream_response(events)
}

/// `process.Process/Connect`: the process's events from now on, ending with its `end`.
pub async fn connect(services: &Services, req: Request<Incoming>) -> Response<AgentBody> {
    if !content_type_is(req.headers(), connect::CONTENT_TYPE_STREAM, false) {
        return unsupported_media_type();
    }
    let options = stream_options(req.headers());
    let events = match stream_request::<ConnectRequest>(req).await {
        Ok(request) => services.sup.connect(&request.process, options),
        Err(e) => Err(e),
    };
    stream_response(events)
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn watch_envelope(event: WatchEvent) -> Bytes {
    envelope::encode_json(0, &serde_json::json!(event)).unwrap_or_default()
}

/// `filesystem.Filesystem/WatchDir`: `start`, then changes until the client goes away.
pub async fn watch_dir(
    services: &Services,
    user: User,
    req: Request<Incoming>,
) -> Response<AgentBody> {
    if !content_type_is(req.headers(), connect::CONTENT_TYPE_STREAM, false) {
        return unsupported_media_type();
    }
    let options = stream_options(req.headers());
    let watcher = match stream_request::<WatchRequest>(req).await {
        Ok(request) => Watcher::new(&request, &user, &services.accounts).await,
        Err(e) => Err(e),
    };
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => return stream_response(Err(e)),
    };
    let (tx, rx) = mpsc::channel(WATCH_QUEUE);
    let _ = tx.try_send(watch_envelope(WatchEvent::Start));
    let mut keepalive = options
        .keepalive
        .map(|period| tokio::time::interval_at(Instant::now() + period, period));
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                event = watcher.next() => match event {
                    Ok(e) => watch_envelope(WatchEvent::Filesystem(e)),
                    Err(e) => {
                        let error = ConnectError::new(code::INTERNAL, format!("watch failed: {e}"));
                        let _ = tx.send(end_stream(Some(error))).await;
                        return;
                    }
                },
                () = tick(&mut keepalive) => watch_envelope(WatchEvent::Keepalive),
                // The client left: dropping the watcher closes its inotify instance.
                () = tx.closed() => return,
            };
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    stream_response(Ok(rx))
}

async fn feed_input(services: &Services, body: Incoming) -> Result<(), ConnectError> {
    let mut body = body;
    let mut decoder = EnvelopeDecoder::with_max_len(MAX_REQUEST_BODY);
    let mut target: Option<ProcessSelector> = None;
    loop {
        while let Some(env) = decoder
            .next_envelope()
            .map_err(|e| ConnectError::new(code::INVALID_ARGUMENT, e.to_string()))?
        {
            match parse::<StreamInputRequest>(&envelope_payload(env)?)? {
                StreamInputRequest::Start { process } => target = Some(process),
                StreamInputRequest::Data { input } => {
                    let Some(selector) = &target else {
                        return Err(ConnectError::new(
                            code::INVALID_ARGUMENT,
                            "stream input data before its start message",
                        ));
                    };
                    services.sup.send_input(selector, input).await?;
                }
                StreamInputRequest::Keepalive => {}
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    decoder.push(data);
                }
            }
            Some(Err(e)) => {
                return Err(ConnectError::new(
                    code::INVALID_ARGUMENT,
                    format!("cannot read request body: {e}"),
                ))
            }
            None if decoder.has_partial() => {
                return Err(ConnectError::new(
                    code::INVALID_ARGUMENT,
                    "request stream ends inside an envelope",
                ))
            }
            None => return Ok(()),
        }
    }
}

/// `process.Process/StreamInput`: feeds each `data` message to the process the `start` message
/// named; answers `{}` once the client has finished its stream.
pub async fn stream_input(services: &Services, req: Request<Incoming>) -> Response<AgentBody> {
    if !content_type_is(req.headers(), connect::CONTENT_TYPE_STREAM, false) {
        return unsupported_media_type();
    }
    let body = match feed_input(services, req.into_body()).await {
        Ok(()) => {
            let mut all = BytesMut::new();
            all.extend_from_slice(&envelope::encode(0, b"{}").unwrap_or_default());
            all.extend_from_slice(&end_stream(None));
            all.freeze()
        }
        Err(e) => end_stream(Some(e)),
    };
    response(
        StatusCode::OK,
        connect::CONTENT_TYPE_STREAM,
        AgentBody::full(body),
    )
}
