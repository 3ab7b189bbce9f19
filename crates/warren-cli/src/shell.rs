//! `warren shell`: an interactive terminal in a sandbox over the PTY WebSocket. Raw mode while
//! it runs, the window size follows SIGWINCH, and the remote exit code becomes ours.
use std::io::{IsTerminal, Write};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::ClientOpts;

#[derive(Args)]
pub struct ShellArgs {
    /// Sandbox id.
    id: String,
    /// Act as this user of the sandbox.
    #[arg(long)]
    user: Option<String>,
    #[command(flatten)]
    opts: ClientOpts,
    /// Program and arguments [default: sh].
    #[arg(last = true)]
    cmd: Vec<String>,
}

/// Puts the terminal back however the session ends.
struct RawMode(bool);

impl RawMode {
    fn enable() -> RawMode {
        RawMode(std::io::stdin().is_terminal() && crossterm::terminal::enable_raw_mode().is_ok())
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

fn size() -> (u16, u16) {
    crossterm::terminal::size().unwrap_or((80, 24))
}

pub async fn run(a: ShellArgs) -> anyhow::Result<i32> {
    let client = a.opts.client();
    let (cols, rows) = size();
    let mut pairs: Vec<(&str, String)> =
        vec![("cols", cols.to_string()), ("rows", rows.to_string())];
    if let Some((prog, args)) = a.cmd.split_first() {
        pairs.push(("cmd", prog.clone()));
        pairs.extend(args.iter().map(|arg| ("arg", arg.clone())));
    }
    if let Some(u) = &a.user {
        pairs.push(("user", u.clone()));
    }
    let ws_base = client.base().replacen("http", "ws", 1);
    let url =
        reqwest::Url::parse_with_params(&format!("{ws_base}/v1/sandboxes/{}/pty", a.id), &pairs)
            .context("building the terminal URL")?;
    let url = url.as_str();
    let mut req = url
        .into_client_request()
        .context("building the terminal request")?;
    if let Some(k) = client.key() {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {k}")
                .parse()
                .context("API key is not a valid header")?,
        );
    }
    let connector = if client.base().starts_with("https://") {
        Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
            client.tls_config()?,
        )))
    } else {
        None
    };
    let (ws, _) =
        match tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
                let msg = serde_json::from_str::<warren_api::ErrorBody>(&body)
                    .map(|b| b.error.message)
                    .unwrap_or(body);
                bail!("{msg}");
            }
            Err(e) => return Err(anyhow!("cannot open a terminal at {}: {e}", client.base())),
        };
    let (mut tx, mut rx) = ws.split();
    let raw = RawMode::enable();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("watching window size changes")?;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 8192];
    let mut stdin_open = true;
    let mut out = std::io::stdout();
    let code = loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    out.write_all(&b)?;
                    out.flush()?;
                }
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                    if let Some(code) = v.get("exit").and_then(|c| c.as_i64()) {
                        break code as i32;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break 255,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    drop(raw);
                    bail!("terminal connection lost: {e}");
                }
            },
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => tx.send(Message::Binary(buf[..n].to_vec().into())).await?,
            },
            _ = winch.recv() => {
                let (cols, rows) = size();
                let msg = format!(r#"{{"resize": {{"cols": {cols}, "rows": {rows}}}}}"#);
                tx.send(Message::Text(msg.into())).await?;
            }
        }
    };
    drop(raw);
    let _ = tx.send(Message::Close(None)).await;
    Ok(code)
}
