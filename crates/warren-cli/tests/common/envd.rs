//! E2B's SDKs' calls to a sandbox's agent (envd) through the proxy, as tests/e2b_api.rs makes
//! them.
use serde_json::json;

use super::TestServer;

/// envd's port, as E2B's SDKs name it.
pub const AGENT_PORT: &str = "49983";

/// A `MakeDir` through the proxy is in the audit log under the sandbox's team, with its
/// request id and `sandbox-token` as the key; the `List` made before it (a read) is not.
pub async fn changes_are_audited(s: &TestServer, id: &str, token: &str) {
    let made = s
        .http
        .post(format!("{}/filesystem.Filesystem/MakeDir", s.url))
        .header("E2b-Sandbox-Id", id)
        .header("E2b-Sandbox-Port", AGENT_PORT)
        .header("X-Access-Token", token)
        .header("connect-protocol-version", "1")
        .header("x-request-id", "envd-audit-1")
        .json(&json!({"path": "/tmp/audited"}));
    let resp = made.send().await.expect("MakeDir");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let entries = loop {
        let log = s
            .get_json(&format!("/v1/audit?target={id}&limit=1000"))
            .await;
        let entries = log["entries"].as_array().cloned().unwrap_or_default();
        if entries.iter().any(|e| e["request_id"] == "envd-audit-1")
            || std::time::Instant::now() > deadline
        {
            break entries;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let entry = entries
        .iter()
        .find(|e| e["request_id"] == "envd-audit-1")
        .unwrap_or_else(|| panic!("no entry for the agent's MakeDir in {entries:?}"));
    assert_eq!(entry["path"], "/filesystem.Filesystem/MakeDir", "{entry}");
    assert_eq!(entry["key_id"], "sandbox-token", "{entry}");
    assert_eq!(entry["team"], "default", "{entry}");
    assert_eq!(entry["status"], 200, "{entry}");
    assert!(
        !entries.iter().any(|e| e["path"] == "/process.Process/List"),
        "a read was logged: {entries:?}"
    );
}
