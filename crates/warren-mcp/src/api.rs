//! The tools' way to Warren: its `/v1` API with the caller's key, so an MCP call is checked,
//! limited, audited and answered as the same call of the API would be. `warren mcp` reaches
//! a server over HTTP; the server's own `/mcp` hands the call to its router in process (no
//! socket, and no TLS to itself).
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use http::{header, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a call of the API gave no answer the tool can use: said to the agent as the tool's
/// error, in the API's words.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered an error (`{"error": {"code", "message"}}`).
    #[error("{message} ({code})")]
    Refused { code: String, message: String },
    /// The server did not answer.
    #[error("cannot reach the Warren server at {base}: {reason}")]
    Unreachable { base: String, reason: String },
    /// The answer was not what the API promises.
    #[error("the server's answer could not be read: {0}")]
    Garbled(String),
}

/// How calls reach the API.
enum Via {
    /// A server at this base URL (`http://127.0.0.1:8080`).
    Http { base: String, http: reqwest::Client },
    /// The server's own router, in process.
    Router(axum::Router),
}

/// The API of one server, called with one key.
#[derive(Clone)]
pub struct Api {
    via: Arc<Via>,
    key: Option<String>,
}

/// One call of the API.
pub struct Call {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<(Bytes, &'static str)>,
    events: bool,
}

impl Call {
    pub fn new(method: Method, path: impl Into<String>) -> Call {
        Call {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            events: false,
        }
    }

    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Call {
        self.query.push((key.into(), value.into()));
        self
    }

    pub fn json(mut self, v: &Value) -> Call {
        self.body = Some((Bytes::from(v.to_string()), "application/json"));
        self
    }

    pub fn bytes(mut self, b: Vec<u8>) -> Call {
        self.body = Some((Bytes::from(b), "application/octet-stream"));
        self
    }

    /// Asks for the answer as server-sent events.
    pub fn events(mut self) -> Call {
        self.events = true;
        self
    }

    fn uri(&self) -> String {
        let mut uri = self.path.clone();
        for (i, (k, v)) in self.query.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&urlencoding::encode(k));
            uri.push('=');
            uri.push_str(&urlencoding::encode(v));
        }
        uri
    }
}

/// One event of a streamed command.
pub enum Output {
    Stdout(String),
    Stderr(String),
    /// The end: the exec's final JSON (`exit_code`, `timed_out`, ...).
    Exit(Value),
}

type Body = BoxStream<'static, Result<Bytes, String>>;

impl Api {
    /// The API of the server at `base`, over `http`, called with `key`.
    pub fn http(base: &str, http: reqwest::Client, key: Option<String>) -> Api {
        let base = base.trim_end_matches('/').to_owned();
        Api {
            via: Arc::new(Via::Http { base, http }),
            key,
        }
    }

    /// The API of `router` (the server's own), called in process; each call's key is set
    /// with [`Api::with_key`].
    pub fn in_process(router: axum::Router) -> Api {
        Api {
            via: Arc::new(Via::Router(router)),
            key: None,
        }
    }

    /// The same API called with another key (each HTTP session's own).
    pub fn with_key(&self, key: Option<String>) -> Api {
        Api {
            via: self.via.clone(),
            key,
        }
    }

    fn place(&self) -> String {
        match &*self.via {
            Via::Http { base, .. } => base.clone(),
            Via::Router(_) => "this server".into(),
        }
    }

    /// Sends; the status and the body as it streams.
    async fn exchange(&self, call: Call) -> Result<(StatusCode, Body), ApiError> {
        let unreachable = |reason: String| ApiError::Unreachable {
            base: self.place(),
            reason,
        };
        let accept = if call.events {
            "text/event-stream"
        } else {
            "application/json"
        };
        match &*self.via {
            Via::Http { base, http } => {
                let mut rb = http
                    .request(call.method.clone(), format!("{base}{}", call.uri()))
                    .header(header::ACCEPT, accept);
                if let Some(k) = &self.key {
                    rb = rb.bearer_auth(k);
                }
                if let Some((b, kind)) = call.body {
                    rb = rb.header(header::CONTENT_TYPE, kind).body(b);
                }
                let resp = rb.send().await.map_err(|e| unreachable(e.to_string()))?;
                let status = resp.status();
                Ok((
                    status,
                    resp.bytes_stream().map_err(|e| e.to_string()).boxed(),
                ))
            }
            Via::Router(router) => {
                use tower::ServiceExt;
                let mut rb = http::Request::builder()
                    .method(call.method.clone())
                    .uri(call.uri())
                    .header(header::ACCEPT, accept);
                if let Some(k) = &self.key {
                    rb = rb.header(header::AUTHORIZATION, format!("Bearer {k}"));
                }
                let body = match call.body {
                    Some((b, kind)) => {
                        rb = rb.header(header::CONTENT_TYPE, kind);
                        axum::body::Body::from(b)
                    }
                    None => axum::body::Body::empty(),
                };
                let req = rb.body(body).map_err(|e| unreachable(e.to_string()))?;
                let resp = router
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                let status = resp.status();
                let body = resp
                    .into_body()
                    .into_data_stream()
                    .map_err(|e| e.to_string());
                Ok((status, body.boxed()))
            }
        }
    }

    /// Sends, and turns an error answer into [`ApiError::Refused`].
    pub async fn send(&self, call: Call) -> Result<Body, ApiError> {
        let (status, body) = self.exchange(call).await?;
        if status.is_success() {
            return Ok(body);
        }
        let text = collect(body).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        Err(match serde_json::from_str::<Value>(&text) {
            Ok(v) if v["error"]["message"].is_string() => ApiError::Refused {
                code: v["error"]["code"].as_str().unwrap_or("error").to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            },
            _ => ApiError::Refused {
                code: status.as_u16().to_string(),
                message: text.into_owned(),
            },
        })
    }

    /// Sends and reads the whole answer.
    pub async fn bytes(&self, call: Call) -> Result<Bytes, ApiError> {
        collect(self.send(call).await?).await
    }

    /// Sends and reads at most `limit` bytes of the answer after its first `skip` (the rest
    /// is not read: a sandbox's file may be larger than the server should hold); whether
    /// more followed.
    pub async fn range(
        &self,
        call: Call,
        skip: u64,
        limit: usize,
    ) -> Result<(Bytes, bool), ApiError> {
        let mut body = self.send(call).await?;
        let (mut skip, mut kept) = (skip, Vec::new());
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(ApiError::Garbled)?;
            let drop = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
            skip -= drop as u64;
            let chunk = chunk.split_off(drop);
            let room = limit - kept.len();
            if chunk.len() > room {
                kept.extend_from_slice(&chunk[..room]);
                return Ok((Bytes::from(kept), true));
            }
            kept.extend_from_slice(&chunk);
        }
        Ok((Bytes::from(kept), false))
    }

    /// Sends and decodes the JSON answer (`null` for an empty one).
    pub async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, ApiError> {
        let bytes = self.bytes(call).await?;
        let body = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes
        };
        serde_json::from_slice(body).map_err(|e| ApiError::Garbled(e.to_string()))
    }

    /// Runs `exec` (an exec request's JSON) in sandbox `id`, its output as it comes.
    pub async fn exec_stream(
        &self,
        id: &str,
        exec: &Value,
    ) -> Result<impl Stream<Item = Result<Output, ApiError>>, ApiError> {
        use eventsource_stream::Eventsource;
        let call = Call::new(Method::POST, format!("/v1/sandboxes/{}/exec", path(id)))
            .json(exec)
            .events();
        let body = self.send(call).await?;
        Ok(body.eventsource().filter_map(|ev| async {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => return Some(Err(ApiError::Garbled(e.to_string()))),
            };
            match ev.event.as_str() {
                "stdout" => Some(Ok(Output::Stdout(ev.data))),
                "stderr" => Some(Ok(Output::Stderr(ev.data))),
                "exit" => Some(
                    serde_json::from_str(&ev.data)
                        .map(Output::Exit)
                        .map_err(|e| ApiError::Garbled(e.to_string())),
                ),
                "error" => {
                    let v: Value = serde_json::from_str(&ev.data).unwrap_or_default();
                    Some(Err(ApiError::Refused {
                        code: v["error"]["code"].as_str().unwrap_or("error").to_owned(),
                        message: v["error"]["message"]
                            .as_str()
                            .unwrap_or(&ev.data)
                            .to_owned(),
                    }))
                }
                _ => None,
            }
        }))
    }
}

async fn collect(mut body: Body) -> Result<Bytes, ApiError> {
    let mut all = Vec::new();
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk.map_err(ApiError::Garbled)?);
    }
    Ok(Bytes::from(all))
}

/// A path segment (a sandbox id or name) escaped for a URL; `.` and `..` too, which a
/// client would otherwise resolve as the path's own steps.
pub fn path(segment: &str) -> String {
    match segment {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        s => urlencoding::encode(s).into_owned(),
    }
}

/// The API key an HTTP request carries as `Authorization: Bearer KEY`, read as the server's
/// own key check reads it (any case of the scheme, spaces trimmed).
pub fn bearer(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then(|| key.to_owned())
}
