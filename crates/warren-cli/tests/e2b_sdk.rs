//! E2B's own SDKs against a real Warren server, unchanged: the pytest suite in `tests/e2b`
//! (Python `e2b`, sync and async clients) and `tests/e2b/js/smoke.mjs` (npm `e2b`), each under
//! two pinned versions installed by `scripts/e2b-sdk-env.sh`: the newest, and 2.45, the last
//! that refuses a key not spelled `e2b_` + hex (so it runs with the E2B spelling of the server's
//! key, from `warren key show --e2b`). Each runs the way a user's script would: only
//! `E2B_API_URL`, `E2B_API_KEY` and `E2B_SANDBOX_URL` (plain HTTP) or `SSL_CERT_FILE` /
//! `NODE_EXTRA_CA_CERTS` (TLS, sandbox hosts resolved as `*.localhost`) set.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::base::base_tar;
use common::remote::Remote;
use common::TestServer;
use reqwest::StatusCode;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One installed SDK: where it is and which spelling of the key it takes.
#[derive(Clone, Copy)]
struct Sdk {
    /// The virtualenv's name under `WARREN_E2B_VENVS` (Python) or the npm package (JS).
    python: &'static str,
    js: &'static str,
    /// Whether it refuses keys not spelled `e2b_` + hex.
    checks_key_format: bool,
}

const NEWEST: Sdk = Sdk {
    python: "venv",
    js: "e2b",
    checks_key_format: false,
};
const V2_45: Sdk = Sdk {
    python: "venv-2.45",
    js: "e2b-2.45",
    checks_key_format: true,
};
const SDKS: [Sdk; 2] = [NEWEST, V2_45];

fn venv_python(sdk: Sdk) -> PathBuf {
    let venvs = std::env::var("WARREN_E2B_VENVS").unwrap_or_else(|_| "/opt/warren-e2b".into());
    let python = Path::new(&venvs).join(sdk.python).join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/install-deps.sh (it installs E2B's SDKs)",
        python.display()
    );
    python
}

/// A server (under its default runtime, gVisor) with the `base` image E2B's SDKs ask for.
async fn server(extra: &[&str]) -> TestServer {
    // A template that never gets ready fails its build in seconds, not minutes.
    let mut args = vec!["--ready-timeout", "8s"];
    args.extend_from_slice(extra);
    let s = TestServer::start_with(&args).await;
    let resp = s.import_tar("base", &base_tar()).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "importing base");
    s
}

/// The server's key as `sdk` wants it: E2B's spelling, printed by the CLI, for an SDK that
/// checks the format; Warren's own (`wk_…`, the same key) for the others.
fn key_for(s: &TestServer, sdk: Sdk) -> String {
    if !sdk.checks_key_format {
        return s.key.clone();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["key", "show", "--e2b"])
        .env("WARREN_API_KEY", &s.key)
        .output()
        .expect("warren key show");
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success() && key.starts_with("e2b_"), "{key}");
    key
}

/// The environment of an SDK user pointed at `s`: over plain HTTP the sandboxes are reached
/// through `E2B_SANDBOX_URL` (the SDKs would otherwise use https), over TLS by their own hosts.
fn sdk_env(s: &TestServer, sdk: Sdk, cmd: &mut Command) {
    cmd.env_remove("E2B_DOMAIN")
        .env_remove("E2B_DEBUG")
        .env("E2B_API_KEY", key_for(s, sdk))
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

fn pytest(s: &TestServer, sdk: Sdk, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(venv_python(sdk));
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(args)
        .current_dir(repo().join("tests/e2b"));
    sdk_env(s, sdk, &mut cmd);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.output().expect("running pytest")
}

fn node_smoke(s: &TestServer, sdk: Sdk) -> Output {
    let js = repo().join("tests/e2b/js");
    assert!(
        js.join("node_modules").join(sdk.js).exists(),
        "{}/node_modules/{} missing: run scripts/install-deps.sh",
        js.display(),
        sdk.js
    );
    let mut cmd = Command::new("node");
    cmd.arg("smoke.mjs")
        .current_dir(&js)
        .env("E2B_JS_PACKAGE", sdk.js);
    sdk_env(s, sdk, &mut cmd);
    cmd.output().expect("running node")
}

/// test_network.py needs the hosts only `python_sdk_network_rules` makes.
const NOT_NETWORK: &str = "--ignore=test_network.py";

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_suite_over_http() {
    let s = server(&[]).await;
    for sdk in SDKS {
        let out = pytest(&s, sdk, &[NOT_NETWORK], &[]);
        check(&format!("pytest tests/e2b (http, {})", sdk.python), out, &s);
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_over_tls_finds_sandboxes_by_their_own_hosts() {
    let s = server(&["--tls-self-signed"]).await;
    for sdk in SDKS {
        let out = pytest(
            &s,
            sdk,
            &[
                "test_sandbox.py",
                "test_commands.py",
                "test_files.py",
                "test_signed_urls.py",
                "test_templates.py",
            ],
            &[],
        );
        check(
            &format!("pytest tests/e2b (https, {})", sdk.python),
            out,
            &s,
        );
    }
    s.shutdown().await;
}

/// E2B's network rules (`denyOut`, `allowOut` with addresses and names, updates,
/// `maskRequestHost`) against two hosts made here; the first is also the name server.
#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_network_rules() {
    let mut a = Remote::start("host-a");
    a.serve_dns(a.ip);
    let b = Remote::start("host-b");
    let dns = a.ip.to_string();
    let s = server(&["--dns", &dns]).await;
    let hosts = [
        ("WARREN_TEST_HOST_A", a.ip.to_string()),
        ("WARREN_TEST_HOST_B", b.ip.to_string()),
    ];
    for sdk in SDKS {
        let out = pytest(&s, sdk, &["test_network.py"], &hosts);
        check(&format!("pytest test_network.py ({})", sdk.python), out, &s);
    }
    s.shutdown().await;
}

/// File metadata lives in extended attributes: they must work under runc (crun) too, not
/// only under gVisor, the default.
#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_files_under_runc() {
    let s = server(&["--default-runtime", "runc"]).await;
    let out = pytest(&s, NEWEST, &["test_envd_current.py", "test_files.py"], &[]);
    check("pytest test_envd_current.py test_files.py (runc)", out, &s);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript_sdk_over_http_and_tls() {
    for extra in [&[][..], &["--tls-self-signed"][..]] {
        let s = server(extra).await;
        for sdk in SDKS {
            let what = format!("node smoke.mjs ({}, {})", s.url, sdk.js);
            check(&what, node_smoke(&s, sdk), &s);
        }
        s.shutdown().await;
    }
}
