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
    ca: Option<PathBuf>,
    data_dir: PathBuf,
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

/// The CA a local server made with `--tls-self-signed`.
pub fn local_ca(data_dir: &Path) -> PathBuf {
    data_dir.join("tls/ca.pem")
}

/// The CA to trust besides the public roots: `ca`, or a local server's when there is one.
fn extra_ca(ca: Option<&Path>, data_dir: &Path) -> anyhow::Result<Option<(PathBuf, Vec<u8>)>> {
    let local = local_ca(data_dir);
    let path = match ca {
        Some(p) => p.to_path_buf(),
        None if local.exists() => local,
        None => return Ok(None),
    };
    let pem = std::fs::read(&path)
        .with_context(|| format!("reading the CA certificate {}", path.display()))?;
    Ok(Some((path, pem)))
}

/// An HTTP client trusting the public roots and the CA of [`extra_ca`].
pub fn http_client(ca: Option<&Path>, data_dir: &Path) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().no_proxy();
    if let Some((path, pem)) = extra_ca(ca, data_dir)? {
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().context("building the HTTP client")
}

/// The same trust as [`http_client`], as a rustls configuration (for WebSockets), HTTP/1.1.
pub fn tls_config(ca: Option<&Path>, data_dir: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some((path, pem)) = extra_ca(ca, data_dir)? {
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("{}: unusable CA certificate", path.display()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Client {
    /// A client of `url`, with the key from `WARREN_API_KEY` or `data_dir/admin.key`,
    /// trusting the CA certificate at `ca` (see [`http_client`]) besides the public roots.
    pub fn with_ca(url: &str, data_dir: &Path, ca: Option<&Path>) -> anyhow::Result<Client> {
        let http = http_client(ca, data_dir)?;
        let key = std::env::var("WARREN_API_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .or_else(|| {
                std::fs::read_to_string(data_dir.join("admin.key"))
                    .ok()
                    .map(|s| s.trim().to_owned())
            });
        Ok(Client {
            base: url.trim_end_matches('/').to_owned(),
            key,
            http,
            ca: ca.map(Path::to_path_buf),
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The TLS configuration for WebSockets to this server.
    pub fn tls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        tls_config(self.ca.as_deref(), &self.data_dir)
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTP client, with this server's trust.
    pub fn http(&self) -> reqwest::Client {
        self.http.clone()
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

    /// Why a request got no answer, in words that point at the fix: an untrusted certificate
    /// is not a server that is down.
    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        // The alternate form is the error and its causes, colon-separated.
        let chain = format!("{:#}", anyhow::Error::from(e));
        if chain.contains("certificate") || chain.contains("UnknownIssuer") {
            return anyhow!(
                "the Warren server at {} answered over TLS with a certificate this CLI does not \
                 trust ({chain}); pass its CA with --ca-cert or WARREN_CA_CERT (a \
                 --tls-self-signed server's is <data-dir>/tls/ca.pem)",
                self.base
            );
        }
        anyhow!(
            "cannot reach the Warren server at {} ({chain}); is `warren serve` running? (set \
             --url or WARREN_URL)",
            self.base
        )
    }

    /// Sends and checks the status, turning an error body into its message.
    pub async fn send(&self, rb: RequestBuilder) -> anyhow::Result<Response> {
        let resp = rb.send().await.map_err(|e| self.unreachable(e))?;
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
