//! The CLI's client of the `/v1` API: finds the server and key, maps error bodies to messages.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use warren_api::{ErrorBody, ExecExit, ExecRequest};

/// Default data directory: `$WARREN_DATA_DIR`, else `~/.local/share/warren`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WARREN_DATA_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".local/share/warren")
}

/// An API client.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// One event of a streamed exec.
pub enum ExecChunk {
    /// Standard output text.
    Stdout(String),
    /// Standard error text.
    Stderr(String),
    /// The end.
    Exit(ExecExit),
}

impl Client {
    /// A client of `url`, with the key from `WARREN_API_KEY` or `data_dir/admin.key`.
    pub fn new(url: &str, data_dir: &Path) -> Client {
        let key = std::env::var("WARREN_API_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .or_else(|| {
                std::fs::read_to_string(data_dir.join("admin.key"))
                    .ok()
                    .map(|s| s.trim().to_owned())
            });
        Client {
            base: url.trim_end_matches('/').to_owned(),
            key,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API key in use, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// A request to `path` under the server.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    /// Sends and checks the status, turning an error body into its message.
    pub async fn send(&self, rb: RequestBuilder) -> anyhow::Result<Response> {
        let resp = rb.send().await.map_err(|e| {
            anyhow!("cannot reach the Warren server at {} ({e}); is `warren serve` running? (set --url or WARREN_URL)", self.base)
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| format!("{} ({})", b.error.message, b.error.code))
            .unwrap_or(text);
        if status == StatusCode::UNAUTHORIZED && self.key.is_none() {
            bail!("{msg}: no API key found; set WARREN_API_KEY or run on the server's machine");
        }
        bail!("{msg}")
    }

    /// Sends and decodes a JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> anyhow::Result<T> {
        let resp = self.send(rb).await?;
        resp.json().await.context("decoding the server's answer")
    }

    /// Runs a command, streaming its output as it comes.
    pub async fn exec_stream(
        &self,
        id: &str,
        req: &ExecRequest,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<ExecChunk>>> {
        use eventsource_stream::Eventsource;
        let rb = self
            .request(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(req);
        let resp = self.send(rb).await?;
        Ok(resp.bytes_stream().eventsource().map(|ev| {
            let ev = ev.map_err(|e| anyhow!("reading the output stream: {e}"))?;
            Ok(match ev.event.as_str() {
                "stdout" => ExecChunk::Stdout(ev.data),
                "stderr" => ExecChunk::Stderr(ev.data),
                "exit" => {
                    ExecChunk::Exit(serde_json::from_str(&ev.data).context("bad exit event")?)
                }
                "error" => {
                    let msg = serde_json::from_str::<ErrorBody>(&ev.data)
                        .map(|b| b.error.message)
                        .unwrap_or(ev.data);
                    bail!("{msg}")
                }
                _ => ExecChunk::Stdout(String::new()),
            })
        }))
    }
}
