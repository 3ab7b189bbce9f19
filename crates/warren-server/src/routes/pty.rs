//! `GET /v1/sandboxes/{id}/pty`: a WebSocket terminal. Binary frames carry terminal bytes both
//! ways; the client sends text `{"resize": {"cols", "rows"}}`; the server ends with text
//! `{"exit": <code>}` and a close frame.
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use warren_agent::{ProcessData, ProcessEvent};

use super::sandbox_id;
use crate::error::ApiError;
use crate::service::{exit_code, PtySession};
use crate::AppState;

#[derive(serde::Deserialize)]
struct Resize {
    resize: Size,
}

#[derive(serde::Deserialize)]
struct Size {
    cols: u32,
    rows: u32,
}

#[utoipa::path(get, path = "/sandboxes/{id}/pty", tag = "processes", params(super::doc::SandboxPath, ("cmd" = Option<String>, Query, description = "The program (default: sh)"), ("arg" = Option<Vec<String>>, Query, description = "Its arguments, one `arg` each"), ("cols" = Option<u32>, Query, description = "Columns (default 80)"), ("rows" = Option<u32>, Query, description = "Rows (default 24)"), ("user" = Option<String>, Query, description = "Run as this user of the sandbox")), responses((status = 101, description = "A WebSocket (a browser may send its key as subprotocol `warren.key.<key>` beside `warren.terminal` instead of `Authorization`): binary frames are the terminal's bytes both ways; the client sends text `{\"resize\": {\"cols\": C, \"rows\": R}}`, the server ends with text `{\"exit\": N}`"), super::doc::Errors))]
pub async fn pty(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&id)?;
    let ws = ws.map_err(|e| {
        ApiError::BadRequest(format!("a terminal is a WebSocket: {}", e.body_text()))
    })?;
    let (mut cmd, mut args, mut cols, mut rows, mut user) = (None, Vec::new(), 80u32, 24u32, None);
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let num = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| ApiError::BadRequest(format!("{k}={v:?} is not a number")))
        };
        match k.as_ref() {
            "cmd" => cmd = Some(v.into_owned()),
            "arg" => args.push(v.into_owned()),
            "cols" => cols = num(&v)?,
            "rows" => rows = num(&v)?,
            "user" => user = Some(v.into_owned()),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {other:?}"
                )))
            }
        }
    }
    let cmd = cmd.unwrap_or_else(|| "sh".into());
    let argv: Vec<String> = std::iter::once(cmd.clone()).chain(args.clone()).collect();
    crate::service::validate::cmd(&argv)?;
    let session = state
        .service
        .processes()
        .start_pty(&id, cmd, args, cols, rows, user.as_deref())
        .await?;
    // A browser, which cannot send `Authorization` on a WebSocket, offers its key as a
    // subprotocol (see `auth::websocket_key`) beside this one, which is the one answered.
    Ok(ws
        .protocols([crate::auth::TERMINAL_PROTOCOL])
        .on_upgrade(move |socket| run(socket, session)))
}

async fn run(mut socket: WebSocket, mut s: PtySession) {
    let mut pid = None;
    loop {
        tokio::select! {
            ev = s.events.next() => {
                let Some(Ok(ev)) = ev else {
                    let _ = socket.send(Message::Text(r#"{"exit": 255, "error": "terminal stream lost"}"#.into())).await;
                    break;
                };
                match ev {
                    ProcessEvent::Start { pid: p } => pid = Some(p),
                    ProcessEvent::Data(ProcessData::Pty(b) | ProcessData::Stdout(b) | ProcessData::Stderr(b)) => {
                        if socket.send(Message::Binary(b)).await.is_err() {
                            break;
                        }
                    }
                    ProcessEvent::End { exit_code: code, exited, status, .. } => {
                        let code = exit_code(code, exited, &status);
                        let _ = socket.send(Message::Text(format!(r#"{{"exit": {code}}}"#).into())).await;
                        break;
                    }
                    ProcessEvent::Keepalive => {}
                }
            }
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { break };
                let Some(p) = pid else { continue };
                match msg {
                    Message::Binary(b) => { let _ = s.agent.send_pty_input(p, &b).await; }
                    Message::Text(t) => {
                        if let Ok(r) = serde_json::from_str::<Resize>(t.as_str()) {
                            let _ = s.agent.resize_pty(p, r.resize.cols, r.resize.rows).await;
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        }
    }
    // A client that leaves takes its terminal with it, as closing a terminal window does.
    if let Some(p) = pid {
        let _ = s.agent.send_signal(p, warren_agent::Signal::Sigkill).await;
    }
    let _ = socket.send(Message::Close(None)).await;
}
