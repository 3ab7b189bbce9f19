//! Warren's MCP tools driven by a real MCP client, the official Python SDK
//! (`scripts/mcp-client-env.sh` installs it, pinned): `tests/mcp/agent.py` creates a sandbox,
//! writes a Python file, runs it (its output also as progress notifications), starts a server
//! in the background and fetches its preview URL, and reads errors as tool errors; over
//! stdio (`warren mcp`) and over streamable HTTP (the server's `/mcp`).
mod common;

use std::path::Path;
use std::process::Command;

use common::base::base_tar;
use common::TestServer;
use reqwest::StatusCode;

fn agent(s: &TestServer, transport: &str) {
    let venv = std::env::var("WARREN_MCP_VENV").unwrap_or_else(|_| "/opt/warren-mcp".into());
    let python = Path::new(&venv).join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/install-deps.sh (scripts/mcp-client-env.sh)",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp/agent.py");
    let out = Command::new(python)
        .arg(script)
        .arg(transport)
        .env("WARREN_URL", &s.url)
        .env("WARREN_API_KEY", &s.key)
        .env("WARREN_BIN", env!("CARGO_BIN_EXE_warren"))
        .env("NO_PROXY", "*")
        .output()
        .expect("running the agent script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("agent.py {transport}:\n{text}");
    assert!(
        out.status.success() && text.contains(&format!("agent: ok {transport}")),
        "agent.py {transport} failed ({}):\n{text}\n{}",
        out.status,
        s.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_uses_sandboxes_over_mcp_on_stdio_and_streamable_http() {
    let s = TestServer::start().await;
    let resp = s.import_tar("base", &base_tar()).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "importing base");
    agent(&s, "stdio");
    agent(&s, "http");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_over_http_needs_a_key() {
    let s = TestServer::start().await;
    let init = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}
    });
    let post = |key: Option<&str>| {
        let mut rb = s
            .http
            .post(format!("{}/mcp", s.url))
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        rb.send()
    };
    for key in [None, Some("wk_not_a_key")] {
        let r = post(key).await.expect("post");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{key:?}");
        let body: serde_json::Value = r.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    let r = post(Some(&s.key)).await.expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    s.shutdown().await;
}
