//! E2B's own SDKs against a real Warren server, unchanged: the pytest suite in `tests/e2b`
//! (Python `e2b`, sync and async clients) and `tests/e2b/js/smoke.mjs` (npm `e2b`), each under
//! two pinned versions installed by `scripts/e2b-sdk-env.sh`: the newest, and 2.45, the last
//! that refuses a key not spelled `e2b_` + hex (so it runs with the E2B spelling of the server's
//! key, from `warren key show --e2b`). Each runs the way a user's script would: only
//! `E2B_API_URL`, `E2B_API_KEY` and `E2B_SANDBOX_URL` (plain HTTP) or `SSL_CERT_FILE` /
//! `NODE_EXTRA_CA_CERTS` (TLS, sandbox hosts resolved as `*.localhost`) set.
mod common;

use common::base::base_tar;
use common::e2b::*;
use common::remote::Remote;
use common::TestServer;
use reqwest::StatusCode;

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
            check(&what, node_smoke(&s, sdk, "local"), &s);
        }
        s.shutdown().await;
    }
}
