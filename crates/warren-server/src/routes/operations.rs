//! `/v1/operations`, and how the routes that start one answer: with the call's result once
//! the operation ends (its id in `Warren-Operation`), or at once with `202 Accepted` and the
//! operation when the client sends `Prefer: respond-async`. Either way the operation runs to
//! its end if the client goes away. `Idempotency-Key` makes a retried call the same
//! operation.
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::de::DeserializeOwned;
use warren_api::{Operation, OperationList};
use warren_store::OperationFilter;

use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};
use crate::service::operations::{check_key, Submit, Work};
use crate::AppState;

/// Header naming the operation a response is the result of.
const OPERATION_HEADER: &str = "warren-operation";
/// Most operations one list answers.
const MAX_LIST: u32 = 1000;

/// What a route that starts an operation reads from the request's headers.
pub struct OpCall {
    /// `Idempotency-Key`.
    pub key: Option<String>,
    /// `Prefer: respond-async`.
    pub respond_async: bool,
    /// The caller's team.
    pub team: String,
}

impl<S: Send + Sync> FromRequestParts<S> for OpCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get("idempotency-key")
            .map(|v| {
                let k = v.to_str().unwrap_or_default();
                check_key(k)?;
                Ok::<_, ApiError>(crate::auth::owned_key(&parts.headers, k))
            })
            .transpose()?;
        let respond_async = parts
            .headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("respond-async"));
        // Past the gate every request names its caller; a route outside it is a bug.
        let team = parts
            .extensions
            .get::<Caller>()
            .map(|c| c.team.clone())
            .ok_or_else(|| ApiError::Internal("an operation outside the key check".into()))?;
        Ok(OpCall {
            key,
            respond_async,
            team,
        })
    }
}

/// How a call started as an operation ended up.
pub enum OpReply<T> {
    /// `Prefer: respond-async`: the operation, queued.
    Accepted(Operation),
    /// The call's result.
    Done {
        /// The operation's id.
        id: String,
        /// The result.
        value: T,
        /// Given before the operation ended (a create's sandbox, not yet running).
        early: bool,
    },
}

impl OpCall {
    /// Starts `work` and waits for its answer (with `early`, a create's recorded sandbox
    /// will do), unless the client asked not to wait.
    pub async fn run<T: DeserializeOwned>(
        self,
        state: &AppState,
        work: Work,
        early: bool,
    ) -> Result<OpReply<T>, ApiError> {
        let ops = state.service.operations();
        let submit = Submit {
            team: self.team,
            key: self.key,
            events: None,
        };
        if self.respond_async {
            let ticket = ops.submit(work, submit).await?;
            return Ok(OpReply::Accepted(ops.get(&ticket.id).await?));
        }
        let called = ops.call(work, submit, early).await?;
        Ok(OpReply::Done {
            id: called.id,
            value: called.value,
            early: called.early,
        })
    }
}

impl<T> OpReply<T> {
    /// The response: `answer` of the result, or 202 with the operation.
    pub fn respond(self, answer: impl FnOnce(T, bool) -> Response) -> Response {
        match self {
            OpReply::Accepted(op) => {
                let mut r = (StatusCode::ACCEPTED, Json(&op)).into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("/v1/operations/{}", op.id)) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                with_operation(r, &op.id)
            }
            OpReply::Done { id, value, early } => with_operation(answer(value, early), &id),
        }
    }
}

/// `r` with the header naming the operation it answers.
pub(super) fn with_operation(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(OPERATION_HEADER, v);
    }
    r
}

/// `GET /v1/operations?target=&kind=&state=&limit=`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only operations on this target (a sandbox id, an image reference).
    target: Option<String>,
    /// Only this kind.
    #[param(value_type = Option<warren_api::OperationKind>)]
    kind: Option<String>,
    /// Only in this state.
    #[param(value_type = Option<warren_api::OperationState>)]
    state: Option<String>,
    /// At most this many, newest first (up to 1000).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/operations", tag = "operations", params(ListQuery), responses((status = 200, body = warren_api::OperationList), super::doc::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<OperationList>, ApiError> {
    let filter = OperationFilter {
        team: Some(caller.team),
        target: q.target,
        kind: q
            .kind
            .map(|k| k.parse())
            .transpose()
            .map_err(ApiError::BadRequest)?,
        state: q
            .state
            .map(|s| s.parse())
            .transpose()
            .map_err(ApiError::BadRequest)?,
        limit: q.limit.unwrap_or(100).clamp(1, MAX_LIST),
    };
    Ok(Json(OperationList {
        operations: state.service.operations().list(&filter).await?,
    }))
}

#[utoipa::path(get, path = "/operations/{id}", tag = "operations", params(("id" = String, Path, description = "The operation's id")), responses((status = 200, body = warren_api::Operation), super::doc::Errors))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    let op = state.service.operations().get(&id).await?;
    // Another team's operation is not there, as far as this caller can tell.
    if op.team != caller.team {
        return Err(ApiError::NotFound(format!("operation {id} not found")));
    }
    Ok(Json(op))
}
