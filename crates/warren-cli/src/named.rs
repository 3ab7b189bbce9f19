//! What the verbs over named things (volumes, snapshots, pools) and over a sandbox (stop,
//! pause, fork, ...) share: post and show the answer, list, remove; `--json` prints the server's answer as it is.
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ClientOpts;

/// `POST path` with `body`; prints the answer as JSON or as `line` says.
pub async fn create<B: Serialize, T: DeserializeOwned + Serialize>(
    opts: &ClientOpts,
    path: &str,
    body: &B,
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    post(opts, path, Some(body), line).await
}

/// `POST path`, with `body` when given; prints the answer as JSON or as `line` says.
pub async fn post<B: Serialize, T: DeserializeOwned + Serialize>(
    opts: &ClientOpts,
    path: &str,
    body: Option<&B>,
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    let client = opts.client();
    let mut rb = client.request(Method::POST, path);
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let made: T = client.json(rb).await?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&made)?);
    } else {
        println!("{}", line(&made));
    }
    Ok(())
}

/// `GET path`: a header, then a line per item of the answer.
pub async fn list<L: DeserializeOwned + Serialize, T>(
    opts: &ClientOpts,
    path: &str,
    header: &str,
    items: impl Fn(&L) -> &[T],
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    let client = opts.client();
    let all: L = client.json(client.request(Method::GET, path)).await?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        println!("{header}");
        for item in items(&all) {
            println!("{}", line(item));
        }
    }
    Ok(())
}

/// `DELETE path/name`.
pub async fn remove(opts: &ClientOpts, path: &str, name: &str) -> anyhow::Result<()> {
    let client = opts.client();
    client
        .send(client.request(Method::DELETE, &format!("{path}/{name}")))
        .await?;
    if !opts.json {
        println!("{name} removed");
    }
    Ok(())
}
