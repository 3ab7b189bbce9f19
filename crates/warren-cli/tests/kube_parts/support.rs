//! What the Kubernetes tests share: the test cluster's kubeconfig, kubectl, the agent and user
//! images pushed to its registry, and servers on it.
use std::process::Command;

use serde_json::Value;

use crate::common::TestServer;

/// The test cluster's registry (k8s-up.sh starts it; its nodes pull from it over HTTP).
pub(crate) const REGISTRY: &str = "127.0.0.1:5100";

pub(crate) fn kubeconfig() -> String {
    std::env::var("WARREN_TEST_KUBECONFIG").expect(
        "WARREN_TEST_KUBECONFIG must name the test cluster's kubeconfig (scripts/k8s-up.sh \
         starts the cluster and prints it)",
    )
}

/// Runs `cmd` (`what` names it) to success; its standard output.
pub(crate) fn run_ok(mut cmd: Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The kubectl scripts/build-k8s.sh built.
pub(crate) fn kubectl_path() -> String {
    let version = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/k8s-version"
    ))
    .expect("scripts/k8s-version");
    format!("/opt/warren/k8s/{}/kubectl", version.trim())
}

/// `kubectl ARGS -o json` against the test cluster.
pub(crate) fn kubectl_json(args: &[&str]) -> Value {
    let mut cmd = Command::new(kubectl_path());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .args(["-o", "json"]);
    let out = run_ok(
        cmd,
        &format!("kubectl {args:?} (scripts/build-k8s.sh builds it)"),
    );
    serde_json::from_slice(&out).expect("kubectl's JSON")
}

/// Held across each push: the test registry (Debian's docker-registry) answers concurrent
/// uploads of one blob to one repository with DIGEST_INVALID, and the tests of one binary run
/// in parallel.
static PUSHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_push_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A push that panicked poisoned nothing the next one relies on.
    PUSHING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pushes the agent image with `warren agent-image push`; its reference pinned by digest.
pub(crate) fn push_agent_image() -> String {
    let _one = one_push_at_a_time();
    let target = format!("{REGISTRY}/warren-test/agent:{}", std::process::id());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.args(["agent-image", "push", &target, "--json"]);
    let v: Value =
        serde_json::from_slice(&run_ok(cmd, "warren agent-image push")).expect("its JSON");
    let pinned = v["reference"].as_str().expect("reference").to_owned();
    assert!(pinned.starts_with(&format!("{target}@sha256:")), "{pinned}");
    pinned
}

/// A busybox image made by the real umoci, pushed with skopeo: its reference.
pub(crate) fn push_user_image(dir: &std::path::Path) -> String {
    let layout = dir.join("layout");
    crate::common::oci_layout::umoci_image(&layout, "v1");
    let target = format!("{REGISTRY}/warren-test/busybox:{}", std::process::id());
    skopeo_push(&format!("{}:v1", layout.display()), &target, dir);
    target
}

/// Copies OCI layout image `image` (`DIR:TAG`) to the registry as `target` with skopeo
/// (`home` its scratch home).
pub(crate) fn skopeo_push(image: &str, target: &str, home: &std::path::Path) {
    let _one = one_push_at_a_time();
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-no-creds",
    ])
    .arg(format!("oci:{image}"))
    .arg(format!("docker://{target}"))
    .env("HOME", home);
    run_ok(cmd, &format!("skopeo copy to {target}"));
}

/// A server on the test cluster with agent image `agent`, and `extra` flags; no operator
/// (see [`operator`]).
pub(crate) async fn kube_server(agent: &str, extra: &[&str]) -> TestServer {
    let mut args = vec!["--kube-operator", "false"];
    args.extend_from_slice(extra);
    kube_server_with(agent, &args).await
}

/// A server on the test cluster with agent image `agent`, and `extra` flags.
pub(crate) async fn kube_server_with(agent: &str, extra: &[&str]) -> TestServer {
    let kc = kubeconfig();
    let mut args = vec![
        "--backend",
        "kubernetes",
        "--kubeconfig",
        &kc,
        "--kube-agent-image",
        agent,
    ];
    args.extend_from_slice(extra);
    TestServer::start_with(&args).await
}

/// The agent image and a busybox image, pushed to the test cluster's registry.
pub(crate) struct Images {
    /// The agent image, pinned by digest.
    pub(crate) agent: String,
    /// The user's image.
    pub(crate) image: String,
}

/// Both images a test's sandboxes need, pushed once per test binary.
pub(crate) fn push_images() -> &'static Images {
    static PUSHED: std::sync::OnceLock<Images> = std::sync::OnceLock::new();
    PUSHED.get_or_init(|| {
        let scratch = tempfile::tempdir().expect("scratch");
        let agent = push_agent_image();
        let image = push_user_image(scratch.path());
        Images { agent, image }
    })
}
