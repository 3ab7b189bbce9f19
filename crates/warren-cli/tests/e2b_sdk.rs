//! E2B's own SDKs against a real Warren server, unchanged: the pytest suite in `tests/e2b`
//! (Python `e2b`, sync and async clients) and `tests/e2b/js/smoke.mjs` (npm `e2b`), both pinned
//! and installed by `scripts/e2b-sdk-env.sh`. Each runs the way a user's script would: only
//! `E2B_API_URL`, `E2B_API_KEY` and `E2B_SANDBOX_URL` (plain HTTP) or `SSL_CERT_FILE` /
//! `NODE_EXTRA_CA_CERTS` (TLS, sandbox hosts resolved as `*.localhost`) set.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::base::base_tar;
use common::TestServer;
use reqwest::StatusCode;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtualenv with the pinned Python SDK.
fn venv_python() -> PathBuf {
    let venv = std::env::var("WARREN_E2B_VENV").unwrap_or_else(|_| "/opt/warren-e2b/venv".into());
    let python = Path::new(&venv).join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/install-deps.sh (it installs E2B's SDKs)",
        python.display()
    );
    python
}

/// A server (under its default runtime, gVisor) with the `base` image E2B's SDKs ask for.
async fn server(extra: &[&str]) -> TestServer {
    let s = TestServer::start_with(extra).await;
    let resp = s.import_tar("base", &base_tar()).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "importing base");
    s
}

/// The environment of an SDK user pointed at `s`: over plain HTTP the sandboxes are reached
/// through `E2B_SANDBOX_URL` (the SDKs would otherwise use https), over TLS by their own hosts.
fn sdk_env(s: &TestServer, cmd: &mut Command) {
    cmd.env_remove("E2B_DOMAIN")
        .env_remove("E2B_DEBUG")
        .env("E2B_API_KEY", &s.key)
        .env("NO_PROXY", "*");
    if s.url.starts_with("https") {
        let ca = s.data_dir.join("tls/ca.pem");
        cmd.env("E2B_API_URL", format!("https://localhost:{}", s.port))
            .env_remove("E2B_SANDBOX_URL")
            .env("SSL_CERT_FILE", &ca)
            .env("NODE_EXTRA_CA_CERTS", &ca);
    } else {
        cmd.env("E2B_API_URL", &s.url)
            .env("E2B_SANDBOX_URL", &s.url);
    }
}

fn check(what: &str, out: Output, s: &TestServer) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{what}:\n{text}");
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}\nserver log:\n{}",
        out.status,
        std::fs::read_to_string(s.data_dir.join("server.log")).unwrap_or_default()
    );
}

fn pytest(s: &TestServer, args: &[&str]) -> Output {
    let mut cmd = Command::new(venv_python());
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(args)
        .current_dir(repo().join("tests/e2b"));
    sdk_env(s, &mut cmd);
    cmd.output().expect("running pytest")
}

fn node_smoke(s: &TestServer) -> Output {
    let js = repo().join("tests/e2b/js");
    assert!(
        js.join("node_modules/e2b").exists(),
        "{}/node_modules/e2b missing: run scripts/install-deps.sh",
        js.display()
    );
    let mut cmd = Command::new("node");
    cmd.arg("smoke.mjs").current_dir(&js);
    sdk_env(s, &mut cmd);
    cmd.output().expect("running node")
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_suite_over_http() {
    let s = server(&[]).await;
    let out = pytest(&s, &[]);
    check("pytest tests/e2b (http)", out, &s);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_over_tls_finds_sandboxes_by_their_own_hosts() {
    let s = server(&["--tls-self-signed"]).await;
    let out = pytest(
        &s,
        &["test_sandbox.py", "test_commands.py", "test_files.py"],
    );
    check("pytest tests/e2b (https)", out, &s);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript_sdk_over_http_and_tls() {
    for extra in [&[][..], &["--tls-self-signed"][..]] {
        let s = server(extra).await;
        check(&format!("node smoke.mjs ({})", s.url), node_smoke(&s), &s);
        s.shutdown().await;
    }
}
