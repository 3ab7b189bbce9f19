//! The gate every `/v1` and E2B call passes, in this order: a key in force (401), its rate
//! limit (429 with `Retry-After`), its scope (403), its own team's sandboxes only (another
//! team's answer 404, as if they did not exist), then the handler; every mutating call, and
//! every terminal, is written to the audit log with how it ended.
use axum::extract::{MatchedPath, OriginalUri, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use warren_api::{AuditEntry, Scope, DEFAULT_TEAM};

use crate::error::ApiError;
use crate::AppState;

/// Who is calling: the key that a request carried, as the gate let it in (an extension of
/// every request past the gate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id.
    pub key_id: String,
    /// Its team.
    pub team: String,
    /// What it may do.
    pub scope: Scope,
}

impl Caller {
    /// Whether this is the operator: an admin key of the default team, which manages teams.
    pub fn operator(&self) -> bool {
        self.team == DEFAULT_TEAM && self.scope == Scope::Admin
    }

    /// `s` as this caller may see it: a `read` key is not given the traffic token, which
    /// opens the sandbox's private ports.
    pub fn shown(&self, mut s: warren_api::Sandbox) -> warren_api::Sandbox {
        if self.scope < Scope::Sandboxes {
            s.traffic_token = None;
        }
        s
    }

    /// The team whose things a listing shows: the operator's `?team=` when it names one,
    /// the caller's own otherwise (naming another team is the operator's alone).
    pub fn team_to_list(&self, asked: Option<&str>) -> Result<Option<String>, ApiError> {
        match asked {
            Some(t) if self.operator() => Ok(Some(t.to_owned())),
            Some(t) if t != self.team => Err(ApiError::Forbidden(format!(
                "only the operator (an admin key of team {DEFAULT_TEAM:?}) sees other teams"
            ))),
            _ if self.operator() => Ok(None),
            _ => Ok(Some(self.team.clone())),
        }
    }
}

/// The target a handler names for the audit log when the path has none (a create's new
/// sandbox): a response extension.
#[derive(Debug, Clone)]
pub(crate) struct AuditTarget(pub String);

/// What a route asks of a key's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Sandboxes,
    Admin,
    /// Any key of the operator's team (a `read` one for a scraper).
    OperatorTeam,
    Operator,
}

fn need(method: &Method, route: &str) -> Need {
    let r = route.strip_prefix("/v1").unwrap_or(route);
    let reads = method == Method::GET || method == Method::HEAD;
    if r == "/metrics" {
        Need::OperatorTeam
    } else if r.starts_with("/teams") {
        if reads {
            Need::Read
        } else {
            Need::Operator
        }
    } else if r.starts_with("/keys") || r.starts_with("/audit") {
        Need::Admin
    } else if !reads && (r.starts_with("/pools") || r == "/images/prune") {
        // Shared by every team: warm pools (their sandboxes are no team's until taken) and
        // the layers under every team's images.
        Need::Operator
    } else if reads
        && !r.ends_with("/pty")
        && route != "/sandboxes/{id}"
        && route != "/templates/{id}/files/{hash}"
    {
        Need::Read
    } else {
        // Terminals are a GET that writes: they take what exec takes. E2B's sandbox GET
        // answers the agent's access token, with which its SDK runs commands; its template
        // files GET answers an upload URL.
        Need::Sandboxes
    }
}

fn allowed(caller: &Caller, need: Need) -> bool {
    match need {
        Need::Read => true,
        Need::Sandboxes => caller.scope >= Scope::Sandboxes,
        Need::Admin => caller.scope == Scope::Admin,
        Need::OperatorTeam => caller.team == DEFAULT_TEAM,
        Need::Operator => caller.operator(),
    }
}

/// Whether a call goes in the audit log: every one that changes something, and terminals.
fn audited(method: &Method, route: &str) -> bool {
    !(method == Method::GET || method == Method::HEAD || method == Method::OPTIONS)
        || route.ends_with("/pty")
}

/// The path's values of the route's parameters, by name (`{id}` → the sandbox id; a
/// trailing `{*name}` takes the rest).
fn params<'a>(route: &'a str, path: &'a str) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    let mut segs = path.split('/');
    for t in route.split('/') {
        if let Some(name) = t.strip_prefix("{*").and_then(|n| n.strip_suffix('}')) {
            out.push((name, segs.by_ref().collect::<Vec<_>>().join("/")));
            break;
        }
        let Some(seg) = segs.next() else { break };
        if let Some(name) = t.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            out.push((name, seg.to_owned()));
        }
    }
    out
}

/// The sandbox a route acts on: the `{id}` after `sandboxes/`.
fn sandbox_of(route: &str, path: &str) -> Option<String> {
    let t: Vec<&str> = route.split('/').collect();
    let at = t
        .windows(2)
        .position(|w| w[0] == "sandboxes" && w[1] == "{id}")?;
    path.split('/').nth(at + 1).map(str::to_owned)
}

/// Middleware of `/v1`: a bearer key (`Authorization: Bearer <key>`), or on a terminal's
/// WebSocket handshake (`GET …/pty`) the key offered as a subprotocol
/// ([`super::websocket_key`]).
pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let terminal = req.method() == Method::GET && req.uri().path().ends_with("/pty");
    let secret = super::bearer(req.headers())
        .or_else(|| {
            terminal
                .then(|| super::websocket_key(req.headers()))
                .flatten()
        })
        .map(str::to_owned);
    pass(&state, req, next, secret, IntoResponse::into_response).await
}

/// The gate for E2B's routes (`X-API-KEY`, or a bearer), answering in E2B's shape.
pub(crate) async fn guard_e2b(
    state: &AppState,
    req: Request,
    next: Next,
    secret: Option<String>,
    render: fn(ApiError) -> Response,
) -> Response {
    pass(state, req, next, secret, render).await
}

async fn pass(
    state: &AppState,
    mut req: Request,
    next: Next,
    secret: Option<String>,
    render: fn(ApiError) -> Response,
) -> Response {
    let Some(secret) = secret else {
        return render(ApiError::Unauthorized);
    };
    let known = match state.known_keys.find(&state.service, &secret).await {
        Ok(Some(k)) => k,
        Ok(None) => return render(ApiError::Unauthorized),
        Err(e) => return render(e),
    };
    if let Some(wait) = known.over_limit() {
        return render(ApiError::RateLimited(wait));
    }
    known.touch(&state.service);
    let caller = known.caller.clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path(), |u| u.0.path())
        .to_owned();
    let method = req.method().clone();
    let pending = audited(&method, &route).then(|| AuditEntry {
        seq: 0,
        at: chrono::Utc::now(),
        key_id: caller.key_id.clone(),
        team: caller.team.clone(),
        method: method.to_string(),
        target: params(&route, &path)
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or_default(),
        path: path.clone(),
        route: route.clone(),
        status: 0,
        client: client_address(&req),
        request_id: request_id(&req),
    });
    let checked = check(
        state,
        &caller,
        need(&method, &route),
        &method,
        &route,
        &path,
    )
    .await;
    let resp = match checked {
        Ok(()) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => render(e),
    };
    if let Some(mut entry) = pending {
        entry.status = resp.status().as_u16();
        if entry.target.is_empty() {
            if let Some(AuditTarget(t)) = resp.extensions().get::<AuditTarget>() {
                entry.target.clone_from(t);
            }
        }
        entry.at = chrono::Utc::now();
        state.audit.write(entry);
    }
    resp
}

/// Routes about a sandbox that read only what the database holds: any server answers them
/// (E2B's GET answers the agent's token and domain, which its SDK then uses: that one goes
/// to the sandbox's server).
fn answered_anywhere(method: &Method, route: &str) -> bool {
    method == Method::GET && (route == "/v1/sandboxes/{id}" || route == "/v1/sandboxes/{id}/execs")
}

async fn check(
    state: &AppState,
    caller: &Caller,
    need: Need,
    method: &Method,
    route: &str,
    path: &str,
) -> Result<(), ApiError> {
    if !allowed(caller, need) {
        let what = match need {
            Need::Operator => {
                format!("only the operator (an admin key of team {DEFAULT_TEAM:?}) may do this")
            }
            Need::OperatorTeam => format!("only keys of team {DEFAULT_TEAM:?} may read this"),
            _ => format!(
                "this key's scope ({}) does not allow this (it needs {})",
                caller.scope,
                match need {
                    Need::Admin => "admin",
                    _ => "sandboxes or admin",
                }
            ),
        };
        return Err(ApiError::Forbidden(what));
    }
    if let Some(raw) = sandbox_of(route, path) {
        // Read off the path as sent: the handler's extractor decodes percent-escapes, so an
        // id that does not parse here as it stands (`%61bc…`) is refused, never let through
        // unchecked.
        let not_found = || ApiError::NotFound(format!("sandbox {raw:?} not found"));
        let id = raw.parse().map_err(|_| not_found())?;
        let Some((team, server)) = state.service.sandboxes().owners_of(&id).await? else {
            return Ok(());
        };
        if team != caller.team {
            return Err(not_found());
        }
        // Its record is in the shared database, answered anywhere; what acts on it runs on
        // its host.
        if !answered_anywhere(method, route) {
            use crate::service::cluster::Act;
            let act = if method == Method::DELETE && route.ends_with("/sandboxes/{id}") {
                Act::Delete
            } else if method == Method::POST
                && (route.ends_with("/resume") || route.ends_with("/connect"))
            {
                Act::Resume
            } else {
                Act::Other
            };
            state
                .service
                .check_here(&server, &format!("sandbox {raw}"), act)
                .await?;
        }
    }
    Ok(())
}

/// The address a request came from, for the audit log.
pub(crate) fn client_address<B>(req: &axum::http::Request<B>) -> String {
    req.extensions()
        .get::<std::sync::Arc<crate::listen::ConnInfo>>()
        .map(|c| c.remote.ip().to_string())
        .unwrap_or_default()
}

/// The request's id (`X-Request-Id`), for the audit log.
pub(crate) fn request_id<B>(req: &axum::http::Request<B>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_ask_what_their_method_and_path_say() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(need(&get, "/v1/sandboxes/{id}"), Need::Read);
        assert_eq!(need(&get, "/v1/sandboxes/{id}/pty"), Need::Sandboxes);
        assert_eq!(need(&post, "/v1/sandboxes/{id}/exec"), Need::Sandboxes);
        assert_eq!(need(&get, "/v1/keys"), Need::Admin);
        assert_eq!(need(&get, "/v1/audit"), Need::Admin);
        assert_eq!(need(&get, "/v1/teams"), Need::Read);
        assert_eq!(need(&post, "/v1/teams"), Need::Operator);
        assert_eq!(need(&get, "/metrics"), Need::OperatorTeam);
        assert_eq!(need(&get, "/v2/sandboxes"), Need::Read);
        assert_eq!(need(&get, "/sandboxes/{id}"), Need::Sandboxes);
        assert_eq!(need(&post, "/v1/pools"), Need::Operator);
        assert_eq!(need(&get, "/v1/pools"), Need::Read);
        assert_eq!(need(&Method::DELETE, "/v1/images/{*name}"), Need::Sandboxes);
        assert_eq!(need(&post, "/v1/images/prune"), Need::Operator);
        assert_eq!(need(&get, "/templates/{id}/files/{hash}"), Need::Sandboxes);
        assert_eq!(need(&post, "/v1/images/pull"), Need::Sandboxes);
        assert_eq!(need(&post, "/v1/images/tag"), Need::Sandboxes);
        // MCP's tool calls are POSTs: a key that may create sandboxes.
        assert_eq!(need(&post, "/mcp"), Need::Sandboxes);
        assert!(audited(&post, "/v1/sandboxes"));
        assert!(audited(&get, "/v1/sandboxes/{id}/pty"));
        assert!(!audited(&get, "/v1/sandboxes/{id}"));
    }

    #[test]
    fn parameters_are_read_off_the_path_by_the_route() {
        assert_eq!(
            params("/v1/sandboxes/{id}/exec", "/v1/sandboxes/abc/exec"),
            [("id", "abc".to_owned())]
        );
        assert_eq!(
            params(
                "/v1/images/{*name}",
                "/v1/images/docker.io/library/busybox:1"
            ),
            [("name", "docker.io/library/busybox:1".to_owned())]
        );
        assert_eq!(
            sandbox_of("/sandboxes/{id}/connect", "/sandboxes/xyz/connect"),
            Some("xyz".into())
        );
        assert_eq!(sandbox_of("/v1/volumes/{name}", "/v1/volumes/a"), None);
    }
}
