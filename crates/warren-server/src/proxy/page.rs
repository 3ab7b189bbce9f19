//! The proxy's own answers when it cannot reach the app: a short HTML page for a person in a
//! browser, the API's JSON error shape for everything else.
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use warren_api::{ErrorBody, SandboxId};

/// Why a preview request was not passed on.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No such sandbox.
    #[error("sandbox {0} not found")]
    UnknownSandbox(SandboxId),
    /// It exists but is not running.
    #[error("sandbox {0} is {1}, not running: start it to reach its ports")]
    NotRunning(SandboxId, warren_api::SandboxState),
    /// A private port and no credential.
    #[error("port {port} of sandbox {id} is private: send its traffic token as header X-Warren-Traffic-Token, or open the URL once with ?warren_token=<token>")]
    NoCredential {
        /// The sandbox.
        id: SandboxId,
        /// The port.
        port: u16,
    },
    /// A credential that does not open this sandbox.
    #[error("wrong traffic token for sandbox {0}")]
    WrongToken(SandboxId),
    /// Nothing accepted the connection.
    #[error("nothing is listening on port {port} of sandbox {id} (a server must listen on 0.0.0.0:{port} inside it)")]
    NotListening {
        /// The sandbox.
        id: SandboxId,
        /// The port.
        port: u16,
    },
    /// The app broke the exchange off.
    #[error("the app on port {port} of sandbox {id} did not answer properly: {detail}")]
    BadGateway {
        /// The sandbox.
        id: SandboxId,
        /// The port.
        port: u16,
        /// What went wrong.
        detail: String,
    },
    /// Refused for what it is, whoever asks.
    #[error("{0}")]
    Forbidden(String),
    /// Our own failure (store).
    #[error("{0}")]
    Internal(String),
    /// The agent port of a sandbox that is gone or not running, or whose agent does not
    /// answer: E2B's SDKs read a 502 whose message says "was not found" (or "port is not
    /// open") as the sandbox being gone (or unreachable).
    #[error("{1}")]
    AgentUnavailable(SandboxId, String),
    /// The sandbox runs on another server sharing the database: its ports are there.
    #[error("sandbox {id} runs on server {server}: its ports are reached through {url}")]
    Elsewhere {
        /// The sandbox.
        id: SandboxId,
        /// The server that runs it.
        server: String,
        /// That server's URL.
        url: String,
    },
    /// The sandbox's server is not answering: its ports are on that host.
    #[error("sandbox {id} runs on server {server}, which is not answering")]
    HostDown {
        /// The sandbox.
        id: SandboxId,
        /// The server that runs it.
        server: String,
    },
    /// The proxy-only listener got a request that names no sandbox.
    #[error("this address serves preview URLs only: http://<sandbox-id>-<port>.{0}/")]
    NoTarget(String),
}

/// Whether the client would rather read HTML (a browser navigating).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

impl ProxyError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::UnknownSandbox(_) | ProxyError::NoTarget(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ProxyError::NotRunning(..) => (StatusCode::CONFLICT, "conflict"),
            ProxyError::Elsewhere { .. } => (StatusCode::MISDIRECTED_REQUEST, "misdirected"),
            ProxyError::HostDown { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            // A missing traffic token is 403, as E2B's proxy answers (not 401: no scheme would
            // make the request acceptable to a client that retries with credentials).
            ProxyError::NoCredential { .. }
            | ProxyError::WrongToken(_)
            | ProxyError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ProxyError::NotListening { .. }
            | ProxyError::BadGateway { .. }
            | ProxyError::AgentUnavailable(..) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            ProxyError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn title(&self) -> String {
        match self {
            ProxyError::UnknownSandbox(_) => "Sandbox not found".into(),
            ProxyError::NoTarget(_) => "Not a preview URL".into(),
            ProxyError::NotRunning(..) => "Sandbox not running".into(),
            ProxyError::Elsewhere { .. } => "Sandbox on another server".into(),
            ProxyError::HostDown { .. } => "Sandbox's server not answering".into(),
            ProxyError::AgentUnavailable(..) => "Sandbox agent unavailable".into(),
            ProxyError::NoCredential { .. } | ProxyError::WrongToken(_) => "Private port".into(),
            ProxyError::NotListening { port, .. } => format!("Nothing on port {port}"),
            ProxyError::BadGateway { port, .. } => format!("Port {port} did not answer"),
            ProxyError::Forbidden(_) => "Refused".into(),
            ProxyError::Internal(_) => "Internal error".into(),
        }
    }

    /// The answer: HTML for a browser (`wants_html`), JSON otherwise.
    pub fn render(&self, wants_html: bool) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error()
            && !matches!(
                self,
                ProxyError::NotListening { .. } | ProxyError::AgentUnavailable(..)
            )
        {
            tracing::warn!("proxy: {self}");
        }
        if let ProxyError::AgentUnavailable(id, message) = self {
            // Connect's error shape, which E2B's SDKs parse on their agent connection.
            let body = serde_json::json!({
                "code": "unavailable",
                "message": message,
                "sandboxId": id.as_str(),
            });
            return (status, Json(body)).into_response();
        }
        if !wants_html {
            return (status, Json(ErrorBody::new(code, self.to_string()))).into_response();
        }
        let title = escape(&self.title());
        let body = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;\
             padding:0 1em;color:#222}}code{{background:#f3f3f3;padding:0 .2em}}</style></head>\
             <body><h1>{title}</h1><p>{}</p><p><small>{} · Warren preview proxy</small></p>\
             </body></html>\n",
            escape(&self.to_string()),
            status.as_u16()
        );
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        resp
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
