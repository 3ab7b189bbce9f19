//! `Idempotency-Key` on every mutating `/v1` call that is not an operation (operations keep
//! their own keys, with their results): the first call's answer is kept, and a retry with the
//! same key and the same request gets it again (with `Idempotent-Replayed: true`) without the
//! call running twice. The same key with another request is 422; a retry while the first
//! still runs is 409. An answer that is a stream (SSE, NDJSON) or over 1 MiB is not kept (a
//! retry is 409: the call ran); a 5xx is not kept either (the retry runs). Keys belong to the
//! API key that sent them and are kept a day. A body over 1 MiB counts by its first MiB and
//! its length. `POST /v1/keys` passes through: a new key's secret is never stored.
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use warren_store::{KeyClaim, Store, StoredAnswer};

use crate::error::ApiError;
use crate::AppState;

/// Request bodies up to this size are part of the fingerprint; a larger one counts by its
/// length (it is streamed, never held).
const HASHED_BODY: u64 = 1 << 20;
/// Answers up to this size are kept for replay.
const KEPT_ANSWER: u64 = 1 << 20;
/// How long an answered key is kept.
pub const KEY_LIFE: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// Routes whose calls are operations (they take `Idempotency-Key` themselves), or whose answer
/// must never be kept (a new API key's secret: keys are stored only as hashes).
fn passes_through(method: &Method, path: &str) -> bool {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    match *method {
        Method::POST if path == "/keys" => true,
        Method::POST => {
            path == "/sandboxes"
                || path == "/images/pull"
                || [
                    "/stop",
                    "/start",
                    "/pause",
                    "/resume",
                    "/fork",
                    "/snapshots",
                ]
                .iter()
                .any(|tail| path.starts_with("/sandboxes/{id}") && path.ends_with(tail))
        }
        Method::DELETE => path == "/sandboxes/{id}",
        _ => false,
    }
}

/// Lets go of a claimed key if the call never answers (its client went away mid-call).
struct Claim {
    store: std::sync::Arc<dyn Store>,
    key: String,
    settled: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled {
            let (store, key) = (self.store.clone(), std::mem::take(&mut self.key));
            tokio::spawn(async move {
                if let Err(e) = store.release_request_key(&key).await {
                    tracing::warn!("releasing an idempotency key: {e}");
                }
            });
        }
    }
}

/// The middleware (see the module's words).
pub async fn layer(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(key) = req.headers().get("idempotency-key") else {
        return Ok(next.run(req).await);
    };
    let route = matched.as_ref().map(MatchedPath::as_str).unwrap_or("");
    let method = req.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS)
        || passes_through(&method, route)
    {
        return Ok(next.run(req).await);
    }
    let key = key.to_str().unwrap_or_default();
    crate::service::operations::check_key(key)?;
    let stored_key = crate::auth::owned_key(req.headers(), key);

    let (parts, body) = req.into_parts();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut hash = Sha256::new();
    hash.update(method.as_str());
    hash.update(b" ");
    hash.update(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""));
    hash.update(b"\n");
    // The body's first MiB (all of a small one); past that, its declared length too. It is
    // passed on as it came, never held whole.
    let (head, rest) = read_head(body, HASHED_BODY).await?;
    hash.update(&head);
    let body = match rest {
        None => Body::from(head),
        Some(rest) => {
            hash.update(format!("\nand more, {length:?} bytes in all"));
            rest
        }
    };
    let fingerprint = hex::encode(hash.finalize());

    let store = state.service.store_arc();
    // Claimed in a task of its own and guarded at once: a client gone mid-claim must not
    // leave the key claimed by nobody.
    let claiming = {
        let (store, key, fp) = (store.clone(), stored_key.clone(), fingerprint.clone());
        let host = state.service.server_name().to_owned();
        tokio::spawn(async move {
            let claim = store
                .claim_request_key(&key, &fp, &host, chrono::Utc::now())
                .await;
            let guard = matches!(claim, Ok(KeyClaim::Claimed)).then(|| Claim {
                store,
                key,
                settled: false,
            });
            (claim, guard)
        })
    };
    let (claim, guard) = claiming
        .await
        .map_err(|e| ApiError::Internal(format!("claiming an idempotency key: {e}")))?;
    match claim? {
        KeyClaim::Claimed => {}
        KeyClaim::Running { .. } => {
            return Err(ApiError::Conflict(
                "a call with this Idempotency-Key is still running; try again when it ends".into(),
            ))
        }
        KeyClaim::Done {
            fingerprint: first,
            answer,
        } => {
            if first != fingerprint {
                return Err(ApiError::Invalid(
                    "this Idempotency-Key was used for another request; use a new key".into(),
                ));
            }
            return replay(answer);
        }
    }
    let mut claim = guard.ok_or_else(|| ApiError::Internal("an unguarded key claim".into()))?;
    let resp = next.run(Request::from_parts(parts, body)).await;
    if resp.status().is_server_error() {
        // Let go before answering, so an immediate retry runs rather than hearing 409.
        if let Err(e) = store.release_request_key(&claim.key).await {
            tracing::warn!("releasing an idempotency key: {e}");
        }
        claim.settled = true;
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let streamed = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("text/event-stream") || c.contains("ndjson"));
    let (resp, body) = if streamed {
        (resp, None)
    } else {
        keep_whole(resp).await?
    };
    let answer = StoredAnswer {
        status,
        content_type,
        body,
    };
    // The call ran: its answer goes to the client whatever happens to the copy. Unkept, the
    // key stays claimed (a retry hears 409) until the server's next start or a day passes.
    if let Err(e) = store.finish_request_key(&claim.key, &answer).await {
        tracing::error!("keeping an idempotent answer: {e}");
    }
    claim.settled = true;
    Ok(resp)
}

/// A body's first `limit` bytes or more (all of it when it ends by then), and, when it goes
/// on, the whole body again (the bytes read, then the rest, streamed).
async fn read_head(body: Body, limit: u64) -> Result<(axum::body::Bytes, Option<Body>), ApiError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut head = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
        head.extend_from_slice(&chunk);
        if head.len() as u64 > limit {
            let head = axum::body::Bytes::from(head);
            let first = head.clone();
            let again = futures::stream::once(async move { Ok::<_, axum::Error>(first) });
            return Ok((head, Some(Body::from_stream(again.chain(stream)))));
        }
    }
    Ok((head.into(), None))
}

/// The answer, and its bytes when it fits [`KEPT_ANSWER`]; a larger one passes on as it
/// came.
async fn keep_whole(resp: Response) -> Result<(Response, Option<Vec<u8>>), ApiError> {
    let (parts, body) = resp.into_parts();
    let (head, rest) = read_head(body, KEPT_ANSWER)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the answer: {e}")))?;
    Ok(match rest {
        Some(all) => (Response::from_parts(parts, all), None),
        None => (
            Response::from_parts(parts, Body::from(head.clone())),
            Some(head.to_vec()),
        ),
    })
}

/// The kept answer of a call, again.
fn replay(answer: StoredAnswer) -> Result<Response, ApiError> {
    let Some(body) = answer.body else {
        return Err(ApiError::Conflict(
            "a call with this Idempotency-Key already ran, and its answer (a stream, or over 1 MiB) is not kept".into(),
        ));
    };
    let status = axum::http::StatusCode::from_u16(answer.status)
        .map_err(|e| ApiError::Internal(format!("a kept answer's status: {e}")))?;
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    if let Some(ct) = answer
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(resp)
}
