//! E2B's SDKs run commands, open terminals and write files by calling the sandbox's agent
//! (envd) through the proxy, not through `/v1`: those calls go to the audit log too, under
//! the sandbox's team, with `sandbox-token` as the key (the agent's token is the sandbox's,
//! not an API key's). Reads (lists, stats, watches, downloads) are not recorded.
use axum::http::{Method, Request};
use warren_agent::connect::path;
use warren_api::{AuditEntry, SandboxId};

use crate::AppState;

/// Who the log says called: the sandbox's own token.
pub const SANDBOX_TOKEN: &str = "sandbox-token";

/// The agent's calls that only read.
const READS: [&str; 7] = [
    path::LIST,
    path::STAT,
    path::LIST_DIR,
    path::WATCH_DIR,
    path::CREATE_WATCHER,
    path::GET_WATCHER_EVENTS,
    path::REMOVE_WATCHER,
];

/// What of a request to the agent the log keeps, taken before the request is sent on; none
/// for a read.
pub fn pending<B>(id: &SandboxId, req: &Request<B>) -> Option<AuditEntry> {
    let method = req.method();
    let p = req.uri().path();
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || READS.contains(&p) {
        return None;
    }
    Some(AuditEntry {
        seq: 0,
        at: chrono::Utc::now(),
        key_id: SANDBOX_TOKEN.into(),
        team: String::new(),
        method: method.to_string(),
        path: p.to_owned(),
        route: p.to_owned(),
        target: id.to_string(),
        status: 0,
        client: crate::auth::gate::client_address(req),
        request_id: crate::auth::gate::request_id(req),
    })
}

/// Writes `entry` with the answer's `status` and the sandbox's team, off the answer's path.
pub fn record(state: &AppState, id: SandboxId, mut entry: AuditEntry, status: u16) {
    let service = state.service.clone();
    tokio::spawn(async move {
        entry.status = status;
        entry.at = chrono::Utc::now();
        match service.sandboxes().owners_of(&id).await {
            Ok(Some((team, _))) => entry.team = team,
            // A sandbox gone (or never there): its calls are still kept, under no team.
            Ok(None) => {}
            Err(e) => tracing::warn!(sandbox = %id, "the audit entry's team: {e}"),
        }
        if let Err(e) = service.store().append_audit(&entry).await {
            tracing::error!(path = %entry.path, "writing the audit log: {e}");
        }
    });
}
