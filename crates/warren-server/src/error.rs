//! The API's errors and how each becomes `{"error": {"code", "message"}}` with its status.
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use warren_api::ErrorBody;

/// An error a handler answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be parsed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or wrong API key.
    #[error("missing or invalid API key (send Authorization: Bearer <key>)")]
    Unauthorized,
    /// 403: not allowed (inside the sandbox).
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: the thing is in the wrong state for this.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is too large.
    #[error("{0}")]
    TooLarge(String),
    /// 422: well-formed, but the values are not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// 403 from a registry: it refused Warren's credentials for an image.
    #[error("{0}")]
    RegistryDenied(String),
    /// 500: our fault.
    #[error("{0}")]
    Internal(String),
    /// 502: an upstream (a registry) failed or sent something wrong.
    #[error("{0}")]
    BadGateway(String),
    /// 503: a dependency is down.
    #[error("{0}")]
    Unavailable(String),
    /// 507: the sandbox's disk (or quota) is full.
    #[error("{0}")]
    InsufficientStorage(String),
    /// 429: a team's quota is reached (the message names it).
    #[error("{0}")]
    QuotaExceeded(String),
    /// 421: the sandbox runs on another server, at `url`.
    #[error("{what} runs on server {server}: send this request to {url}")]
    Misdirected {
        /// What was asked about.
        what: String,
        /// The server that runs it.
        server: String,
        /// Its API.
        url: String,
    },
    /// 429: the key's request rate limit is reached; try again after the wait.
    #[error("this API key's request rate limit is reached; try again in {:.1} s", .0.as_secs_f64())]
    RateLimited(std::time::Duration),
}

impl ApiError {
    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::RegistryDenied(_) => (StatusCode::FORBIDDEN, "registry_denied"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            ApiError::QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Misdirected { .. } => (StatusCode::MISDIRECTED_REQUEST, "misdirected"),
        }
    }
}

impl ApiError {
    /// The error a recorded [`ErrorDetail`] stands for (an operation's, replayed).
    pub fn from_detail(d: &warren_api::ErrorDetail) -> ApiError {
        let m = d.message.clone();
        match d.code.as_str() {
            "bad_request" => ApiError::BadRequest(m),
            "unauthorized" => ApiError::Unauthorized,
            "forbidden" => ApiError::Forbidden(m),
            "not_found" => ApiError::NotFound(m),
            "conflict" => ApiError::Conflict(m),
            "too_large" => ApiError::TooLarge(m),
            "invalid" => ApiError::Invalid(m),
            "registry_denied" => ApiError::RegistryDenied(m),
            "bad_gateway" => ApiError::BadGateway(m),
            // An operation a restart cut off and rolled back: asking again may well work.
            "unavailable" | "interrupted" => ApiError::Unavailable(m),
            "insufficient_storage" => ApiError::InsufficientStorage(m),
            "quota_exceeded" => ApiError::QuotaExceeded(m),
            _ => ApiError::Internal(m),
        }
    }

    /// The same error with its message rewritten (the status and code stay).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> ApiError {
        match self {
            ApiError::BadRequest(m) => ApiError::BadRequest(f(m)),
            ApiError::Unauthorized => ApiError::Unauthorized,
            ApiError::Forbidden(m) => ApiError::Forbidden(f(m)),
            ApiError::NotFound(m) => ApiError::NotFound(f(m)),
            ApiError::Conflict(m) => ApiError::Conflict(f(m)),
            ApiError::TooLarge(m) => ApiError::TooLarge(f(m)),
            ApiError::Invalid(m) => ApiError::Invalid(f(m)),
            ApiError::RegistryDenied(m) => ApiError::RegistryDenied(f(m)),
            ApiError::Internal(m) => ApiError::Internal(f(m)),
            ApiError::BadGateway(m) => ApiError::BadGateway(f(m)),
            ApiError::Unavailable(m) => ApiError::Unavailable(f(m)),
            ApiError::InsufficientStorage(m) => ApiError::InsufficientStorage(f(m)),
            ApiError::QuotaExceeded(m) => ApiError::QuotaExceeded(f(m)),
            ApiError::RateLimited(d) => ApiError::RateLimited(d),
            ApiError::Misdirected { what, server, url } => ApiError::Misdirected {
                what: f(what),
                server,
                url,
            },
        }
    }

    /// The headers the answer carries besides its body, in either API's shape: when to try
    /// again (`Retry-After`, whole seconds rounded up) and where to send the call instead
    /// (`Warren-Server-Url`).
    pub fn headers(&self) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        match self {
            ApiError::RateLimited(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                h.insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(secs.max(1)),
                );
            }
            ApiError::Misdirected { url, .. } => {
                if let Ok(v) = axum::http::HeaderValue::from_str(url) {
                    h.insert("warren-server-url", v);
                }
            }
            _ => {}
        }
        h
    }

    /// The body every error answers with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.status_and_code().1, self.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // A full disk in a sandbox is its user's doing, not a fault of the server.
        if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE {
            tracing::error!("{self}");
        }
        (
            status,
            self.headers(),
            Json(ErrorBody::new(code, self.to_string())),
        )
            .into_response()
    }
}

/// Logs a database failure under a fresh reference and answers the words a client may see:
/// the database's own words name tables, columns and files, so they stay in the log.
pub fn store_failure(context: &str, e: &dyn std::fmt::Display) -> String {
    let reference = hex::encode(rand::random::<[u8; 6]>());
    tracing::error!(reference, "{context}: {e}");
    format!("the server's database failed (reference {reference} in the server's log)")
}

impl From<warren_store::StoreError> for ApiError {
    fn from(e: warren_store::StoreError) -> Self {
        match e {
            warren_store::StoreError::Exists(what) => {
                ApiError::Conflict(format!("{what} already exists"))
            }
            e => ApiError::Internal(store_failure("store", &e)),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

/// The JSON extractor whose rejections are [`ApiError`]s: malformed JSON is 400, well-formed
/// JSON with wrong or unknown fields is 422. Any Content-Type is accepted, so `curl -d` works.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + utoipa::ToSchema,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("reading the body: {}", e.body_text())))?;
        parse_json(&body).map(ApiJson)
    }
}

/// `body` as JSON, with [`ApiJson`]'s errors.
pub fn parse_json<T: serde::de::DeserializeOwned + utoipa::ToSchema>(
    body: &[u8],
) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::Invalid(format!("invalid request: {e}")),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::BadRequest(format!("malformed JSON: {e}"))
            }
        }
    })?;
    crate::body_schema::check::<T>(&value)?;
    serde_json::from_value(value).map_err(|e| ApiError::Invalid(format!("invalid request: {e}")))
}

/// An optional body: none (or `null`) is `T`'s default.
pub fn optional_json<T: serde::de::DeserializeOwned + utoipa::ToSchema + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    let text = body.trim_ascii();
    if text.is_empty() || text == b"null" {
        return Ok(T::default());
    }
    parse_json(text)
}

/// The query extractor whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Answers unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

impl From<warren_backend::BackendError> for ApiError {
    fn from(e: warren_backend::BackendError) -> Self {
        use warren_backend::BackendError as B;
        match e {
            B::Invalid(m) => ApiError::Invalid(m),
            B::NotFound(m) => ApiError::NotFound(m),
            B::Denied(m) => ApiError::RegistryDenied(m),
            B::Upstream(m) => ApiError::BadGateway(m),
            B::Unsupported(m) | B::PauseImage(m) => ApiError::Conflict(m),
            e @ (B::Step { .. } | B::Setup(_) | B::Internal(_)) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}
