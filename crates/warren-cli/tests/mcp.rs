//! Warren's MCP tools driven by a real MCP client, the official Python SDK
//! (`scripts/mcp-client-env.sh` installs it, pinned): `tests/mcp/agent.py` creates a sandbox,
//! writes a Python file, runs it (its output also as progress notifications), starts a server
//! in the background and fetches its preview URL, and reads errors as tool errors; over
//! stdio (`warren mcp`) and over streamable HTTP (the server's `/mcp`). And the MCP
//! inspector's CLI (npm, pinned in tests/mcp/js) lists and calls the tools over both.
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

/// `mcp-inspector --cli ARGS` (the pinned npm package); its JSON answer.
fn inspector(args: &[&str]) -> serde_json::Value {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp/js");
    let bin = js.join("node_modules/.bin/mcp-inspector");
    assert!(
        bin.exists(),
        "{} missing: run scripts/install-deps.sh (scripts/mcp-client-env.sh)",
        bin.display()
    );
    let home = tempfile::tempdir().expect("a home for the inspector's catalog");
    let out = Command::new(bin)
        .arg("--cli")
        .args(args)
        .env("HOME", home.path())
        .env("NO_PROXY", "*")
        .output()
        .expect("running the inspector");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mcp-inspector {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The text of a `tools/call` answer's first content, as JSON.
fn tool_json(answer: &serde_json::Value) -> serde_json::Value {
    assert_ne!(answer["isError"], true, "{answer}");
    let text = answer["content"][0]["text"].as_str().unwrap_or_default();
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_inspector_lists_and_calls_the_tools_over_both_transports() {
    let s = TestServer::start().await;
    let bin = env!("CARGO_BIN_EXE_warren");
    let (url_env, key_env) = (
        format!("WARREN_URL={}", s.url),
        format!("WARREN_API_KEY={}", s.key),
    );
    let stdio: Vec<&str> = vec!["-e", &url_env, "-e", &key_env, bin, "mcp"];
    let (mcp_url, auth) = (
        format!("{}/mcp", s.url),
        format!("Authorization: bearer {}", s.key),
    );
    // The scheme in lower case, as the key check reads it (any case).
    let http: Vec<&str> = vec![&mcp_url, "--header", &auth];
    for target in [stdio, http] {
        let with = |more: &[&str]| -> Vec<String> {
            target.iter().chain(more).map(|a| a.to_string()).collect()
        };
        let run = |more: &[&str]| {
            let args = with(more);
            inspector(&args.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let tools = run(&["--method", "tools/list"]);
        let names: Vec<&str> = tools["tools"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            names.contains(&"create_sandbox") && names.contains(&"run_command"),
            "{names:?}"
        );
        let sb = tool_json(&run(&[
            "--method",
            "tools/call",
            "--tool-name",
            "create_sandbox",
            "--tool-arg",
            "image=busybox",
            "--tool-arg",
            "runtime=runc",
        ]));
        let id = sb["id"].as_str().expect("id").to_owned();
        let id_arg = format!("id={id}");
        let ran = tool_json(&run(&[
            "--method",
            "tools/call",
            "--tool-name",
            "run_command",
            "--tool-arg",
            &id_arg,
            "--tool-arg",
            "command=echo inspected",
        ]));
        assert_eq!(ran["stdout"], "inspected\n", "{ran}");
        let killed = tool_json(&run(&[
            "--method",
            "tools/call",
            "--tool-name",
            "kill_sandbox",
            "--tool-arg",
            &id_arg,
        ]));
        assert_eq!(killed["deleted"], id.as_str());
    }
    s.shutdown().await;
}
