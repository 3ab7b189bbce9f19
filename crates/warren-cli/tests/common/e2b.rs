//! E2B's own SDKs run against a test server as a user's script would (tests/e2b_sdk.rs, and
//! the Kubernetes backend's run in tests/kube.rs): the pinned installs `scripts/e2b-sdk-env.sh`
//! makes, pointed at the server by the environment alone.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::TestServer;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One installed SDK: where it is and which spelling of the key it takes.
#[derive(Clone, Copy)]
pub struct Sdk {
    /// The virtualenv's name under `WARREN_E2B_VENVS` (Python) or the npm package (JS).
    pub python: &'static str,
    pub js: &'static str,
    /// Whether it refuses keys not spelled `e2b_` + hex.
    pub checks_key_format: bool,
}

pub const NEWEST: Sdk = Sdk {
    python: "venv",
    js: "e2b",
    checks_key_format: false,
};
pub const V2_45: Sdk = Sdk {
    python: "venv-2.45",
    js: "e2b-2.45",
    checks_key_format: true,
};
pub const SDKS: [Sdk; 2] = [NEWEST, V2_45];

pub fn venv_python(sdk: Sdk) -> PathBuf {
    let venvs = std::env::var("WARREN_E2B_VENVS").unwrap_or_else(|_| "/opt/warren-e2b".into());
    let python = Path::new(&venvs).join(sdk.python).join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/install-deps.sh (it installs E2B's SDKs)",
        python.display()
    );
    python
}

/// The server's key as `sdk` wants it: E2B's spelling, printed by the CLI, for an SDK that
/// checks the format; Warren's own (`wk_…`, the same key) for the others.
pub fn key_for(s: &TestServer, sdk: Sdk) -> String {
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
pub fn sdk_env(s: &TestServer, sdk: Sdk, cmd: &mut Command) {
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

pub fn check(what: &str, out: Output, s: &TestServer) {
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

pub fn pytest(s: &TestServer, sdk: Sdk, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(venv_python(sdk));
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(args)
        .current_dir(repo().join("tests/e2b"));
    sdk_env(s, sdk, &mut cmd);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.output().expect("running pytest")
}

/// `tests/e2b/js/smoke.mjs` under `sdk`; `backend` is the server's (`WARREN_TEST_BACKEND`:
/// on `kubernetes` the smoke expects template builds refused).
pub fn node_smoke(s: &TestServer, sdk: Sdk, backend: &str) -> Output {
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
        .env("E2B_JS_PACKAGE", sdk.js)
        .env("WARREN_TEST_BACKEND", backend);
    sdk_env(s, sdk, &mut cmd);
    cmd.output().expect("running node")
}
