//! Warren itself on the test cluster (`scripts/k8s-up.sh`; its kubeconfig in
//! `WARREN_TEST_KUBECONFIG`): the image `scripts/warren-image.sh` builds from this build's
//! binary, pushed to the cluster's registry, installed from `deploy/kubernetes/` through an
//! overlay as a user's would be (`kubectl apply -k`), after its Secret (the PostgreSQL URL and
//! the sealing key) and its CRDs when `deploy/kubernetes/crds.yaml` is there; the API's smoke
//! test through the Service's cluster address (kube-proxy's rules take the host there); a
//! restart of the server (a new Pod) that keeps its sandboxes and its sealed secrets; then the
//! uninstall, after which nothing of it is left.
//!
//! PostgreSQL is this host's (`WARREN_TEST_POSTGRES`, else `scripts/postgres-up.sh`), which
//! listens on 127.0.0.1 only: the test forwards a port on the cluster bridge's address
//! (10.244.0.1, where pods reach the host) to it while the server runs.
mod common;
// Shared with the other cluster tests; not all of it is used here.
#[allow(dead_code)]
#[path = "kube_parts/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use support::{kubeconfig, kubectl_path, push_agent_image, push_user_image, REGISTRY};

/// The cluster's registry (`REGISTRY`) as pods reach it: k8s-up.sh serves it on the bridge's
/// address too.
const BRIDGE_REGISTRY: &str = "10.244.0.1:5100";
/// The host on the cluster's bridge.
const BRIDGE_IP: &str = "10.244.0.1";
const NS: &str = "warren-system";
/// The server's Pods.
const SELECTOR: &str = "app.kubernetes.io/name=warren";
/// A secret's value in an exec's environment (the record keeps only its reference).
const GREETING: &str = "echo GREETING=$GREETING";
/// What a sandbox is made of on the cluster.
const OBJECTS: &str = "pods,secrets,networkpolicies,persistentvolumeclaims";
/// Its team namespaces' prefix: its own, so the uninstall removes only what it made.
const TEAM_PREFIX: &str = "warren-it-";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubectl() -> Command {
    let mut cmd = Command::new(kubectl_path());
    cmd.arg("--kubeconfig").arg(kubeconfig());
    cmd
}

/// Runs `cmd` (`what` names it) to success; its standard output as text.
fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        what.starts_with("kubectl")
            .then(diagnose)
            .unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl ARGS` (whitespace-separated) to success: its output.
fn k(args: &str) -> String {
    let mut cmd = kubectl();
    cmd.args(args.split_whitespace());
    run_ok(cmd, &format!("kubectl {args}"))
}

/// `kubectl ARGS -o json`.
fn k_json(args: &str) -> Value {
    serde_json::from_str(&k(&format!("{args} -o json"))).expect("kubectl's JSON")
}

/// Whether `kubectl get KIND NAME` says NotFound.
fn gone(kind: &str, name: &str) -> bool {
    kubectl_do(&format!("get {kind} {name}")).is_err_and(|e| e.contains("NotFound"))
}

/// The server's Pods, their events and its log, for a failure's message.
fn diagnose() -> String {
    let mut out = String::new();
    for args in [
        vec!["-n", NS, "describe", "pods"],
        vec!["-n", NS, "logs", "deploy/warren", "--tail=60"],
    ] {
        let mut cmd = kubectl();
        cmd.args(&args);
        if let Ok(o) = cmd.output() {
            out += &format!("\n--- kubectl {}\n", args.join(" "));
            out += &String::from_utf8_lossy(&[o.stdout, o.stderr].concat());
        }
    }
    out
}

/// The server's log (all of it, of the Pod running now).
fn server_log() -> String {
    k(&format!("-n {NS} logs deploy/warren"))
}

/// Builds Warren's image from this build's binary and pushes it: (its name, its digest).
fn push_warren_image() -> (String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/warren-image.sh"))
        .arg(env!("CARGO_BIN_EXE_warren"))
        .arg(format!(
            "{REGISTRY}/warren-test/warren:{}",
            std::process::id()
        ));
    let out = run_ok(cmd, "scripts/warren-image.sh");
    let pinned = out.lines().last().unwrap_or("").trim();
    let (tagged, digest) = pinned.split_once('@').expect("REF@sha256:... last");
    let name = tagged.rsplit_once(':').map_or(tagged, |(n, _)| n);
    (name.to_owned(), digest.to_owned())
}

/// A TCP port on the bridge's address forwarded to `to` (PostgreSQL on 127.0.0.1) until
/// dropped.
struct Forward {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Forward {
    async fn start(to: String) -> Forward {
        let listener = tokio::net::TcpListener::bind((BRIDGE_IP, 0))
            .await
            .expect("a port on the cluster bridge (is the cluster up?)");
        let port = listener.local_addr().expect("its address").port();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = to.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forward { port, task }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A PostgreSQL database of the test's own on the host's server: (a pool on the server's
/// admin URL, the database's name, the server's `host:port`, `user:password`).
async fn database() -> (sqlx::PgPool, String, String, String) {
    let admin_url = match std::env::var("WARREN_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            let mut cmd = Command::new("bash");
            cmd.arg(repo().join("scripts/postgres-up.sh"));
            run_ok(cmd, "scripts/postgres-up.sh").trim().to_owned()
        }
    };
    let url = reqwest::Url::parse(&admin_url).expect("WARREN_TEST_POSTGRES is a URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    let hostport = format!("{host}:{}", url.port().unwrap_or(5432));
    let userinfo = format!("{}:{}", url.username(), url.password().unwrap_or(""));
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .expect("connecting to PostgreSQL");
    // One name: a run cut short leaves its database to the next (this test installs into
    // one namespace, so never runs twice at once).
    let name = "warren_test_kube_install".to_owned();
    for q in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&q).execute(&admin).await.expect(&q);
    }
    (admin, name, hostport, userinfo)
}

/// What the install made, removed at the end (or on a failure, as far as it goes).
struct Installed {
    overlay: PathBuf,
    crds: Option<PathBuf>,
    done: bool,
}

impl Installed {
    /// `kubectl delete` of everything, each waited for: first the team namespaces the server
    /// made, while it runs (its operator takes its finalizer off each Sandbox resource as the
    /// sandbox goes); then the overlay's objects (the namespace and all in it, the cluster
    /// role and binding); then the CRDs the test applied. What failed.
    fn uninstall(&mut self) -> Vec<String> {
        self.done = true;
        let mut failed = Vec::new();
        for ns in team_namespaces() {
            if let Err(e) = kubectl_do(&format!("delete namespace {ns} --timeout=30s")) {
                // A server that is not running leaves its finalizers: taken off by hand.
                failed.push(e);
                let mut cmd = kubectl();
                cmd.args(["-n", &ns, "get", "sandboxes.agents.x-k8s.io", "-o", "name"]);
                let names = cmd.output().map(|o| o.stdout).unwrap_or_default();
                for name in String::from_utf8_lossy(&names).lines() {
                    let patch = r#"-p={"metadata":{"finalizers":null}}"#;
                    let _ = kubectl_do(&format!("-n {ns} patch {name} --type=merge {patch}"));
                }
            }
        }
        let mut steps = vec![
            format!(
                "delete -k {} --ignore-not-found --timeout=90s",
                self.overlay.display()
            ),
            // What the overlay names, again by name (should the overlay be what failed).
            format!("delete namespace {NS} --ignore-not-found --timeout=90s"),
            "delete clusterrolebinding,clusterrole warren --ignore-not-found".into(),
        ];
        for ns in team_namespaces() {
            steps.push(format!("delete namespace {ns} --timeout=60s"));
        }
        if let Some(crds) = &self.crds {
            steps.push(format!("delete -f {} --ignore-not-found", crds.display()));
        }
        failed.extend(steps.iter().filter_map(|s| kubectl_do(s).err()));
        failed
    }
}

/// `kubectl ARGS` (whitespace-separated): what went wrong, if anything.
fn kubectl_do(args: &str) -> Result<(), String> {
    let mut cmd = kubectl();
    cmd.args(args.split_whitespace());
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "kubectl {args}: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(format!("kubectl {args}: {e}")),
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.done {
            for f in self.uninstall() {
                eprintln!("cleaning up after a failure: {f}");
            }
        }
    }
}

/// The namespaces the installed server made for its teams.
fn team_namespaces() -> Vec<String> {
    let mut cmd = kubectl();
    cmd.args(["get", "namespaces", "-o", "name"]);
    let out = cmd.output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("namespace/"))
        .filter(|n| n.starts_with(TEAM_PREFIX))
        .map(str::to_owned)
        .collect()
}

/// The overlay a user would write: the base by its relative path (kustomize takes no other),
/// the images, the settings.
fn write_overlay(dir: &Path, base: &Path, warren: &(String, String), settings: &[String]) {
    std::fs::create_dir_all(dir).expect("overlay dir");
    let up = dir.canonicalize().expect("overlay").components().count() - 1;
    let base = format!(
        "{}{}",
        "../".repeat(up),
        base.display().to_string().trim_start_matches('/')
    );
    let literals: String = settings.iter().map(|s| format!("\n      - {s}")).collect();
    let (name, digest) = warren;
    let text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {base}
images:
  - name: warren
    newName: {name}
    digest: {digest}
configMapGenerator:
  - name: warren-config
    namespace: {NS}
    behavior: merge
    literals:{literals}
"
    );
    std::fs::write(dir.join("kustomization.yaml"), text).expect("kustomization.yaml");
}

/// Waits for the Deployment's rollout, then for the Service to answer `/readyz` (kube-proxy's
/// rules follow a new endpoint by a moment).
async fn wait_ready(http: &reqwest::Client, url: &str) {
    k(&format!(
        "-n {NS} rollout status deployment/warren --timeout=120s"
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http.get(format!("{url}/readyz")).send().await {
            Ok(r) if r.status() == StatusCode::OK => return,
            other => assert!(
                Instant::now() < deadline,
                "GET {url}/readyz through the Service: {other:?}{}",
                diagnose()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The API through the Service, with a key.
struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    fn req(&self, m: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(m, format!("{}{path}", self.url));
        r.bearer_auth(&self.key)
    }

    /// A running sandbox of the image `image` with environment `env`.
    async fn create(&self, image: &str, env: Value) -> Value {
        let body = json!({"image": image, "cmd": ["sleep", "600"], "env": env,
                          "cpu": 0.5, "memory_mb": 256});
        let r = self.req(Method::POST, "/v1/sandboxes").json(&body);
        let r = r.send().await.expect("create");
        let status = r.status();
        let sb: Value = r.json().await.expect("a sandbox");
        assert_eq!(status, StatusCode::CREATED, "{sb}{}", diagnose());
        assert_eq!(sb["state"], "running", "{sb}");
        sb
    }

    /// `sh -c script` in sandbox `id`: its standard output (exit 0).
    async fn sh(&self, id: &str, script: &str) -> String {
        let body = json!({"cmd": ["sh", "-c", script]});
        let r = self
            .req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&body);
        let r = r.send().await.expect("exec");
        let status = r.status();
        let out: Value = r.json().await.expect("exec result");
        assert!(
            status == StatusCode::OK && out["exit_code"] == 0,
            "{status} {out}"
        );
        out["stdout"].as_str().unwrap_or("").to_owned()
    }

    /// Deletes sandbox `id` and waits for its objects (Pod, Secrets, claim, policy) to go.
    async fn delete(&self, id: &str) {
        let r = self.req(Method::DELETE, &format!("/v1/sandboxes/{id}"));
        assert_eq!(
            r.send().await.expect("delete").status(),
            StatusCode::NO_CONTENT
        );
        let selector = format!("warren.dev/sandbox={id}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = k_json(&format!("get {OBJECTS} -A -l {selector}"));
            if left["items"].as_array().is_some_and(Vec::is_empty) {
                return;
            }
            assert!(Instant::now() < deadline, "left of {id} after 60 s: {left}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_install_warren_on_the_cluster_and_use_its_api_through_the_service() {
    let t0 = Instant::now();
    let scratch = tempfile::tempdir().expect("scratch");

    // The images: Warren's (from this build's binary), the agent's, a user's.
    let t = Instant::now();
    let warren = push_warren_image();
    let image_secs = t.elapsed().as_secs_f64();
    let agent = push_agent_image();
    let user_image = push_user_image(scratch.path()).replace(REGISTRY, BRIDGE_REGISTRY);

    // PostgreSQL, reachable from pods.
    let (admin, db, pg, userinfo) = database().await;
    let forward = Forward::start(pg).await;
    let database_url = format!("postgres://{userinfo}@{BRIDGE_IP}:{}/{db}", forward.port);

    // The install, as README's "Install on a cluster" has it: the namespace, the Secret,
    // the CRDs, then an overlay naming the images and settings.
    let base = repo()
        .join("deploy/kubernetes")
        .canonicalize()
        .expect("deploy/kubernetes");
    let crds = Some(base.join("crds.yaml")).filter(|f| f.exists());
    let mut settings = vec![
        format!("WARREN_KUBE_AGENT_IMAGE={agent}"),
        format!("WARREN_INSECURE_REGISTRY={BRIDGE_REGISTRY}"),
        format!("WARREN_KUBE_NAMESPACE_PREFIX={TEAM_PREFIX}"),
    ];
    if crds.is_none() {
        // No Sandbox definition to install: the operator stays off.
        settings.push("WARREN_KUBE_OPERATOR=false".into());
    }
    let overlay = scratch.path().join("overlay");
    write_overlay(&overlay, &base, &warren, &settings);
    let overlay_arg = overlay.display().to_string();
    // Nothing is applied that names a placeholder (the node would try to pull it).
    let rendered = k(&format!("kustomize {overlay_arg}"));
    let image_line = format!("image: {}@{}", warren.0, warren.1);
    assert!(
        rendered.contains(&image_line) && !rendered.contains("example.com"),
        "{rendered}"
    );
    let mut installed = Installed {
        overlay,
        crds: None,
        done: false,
    };
    let t = Instant::now();
    k(&format!("apply -f {}/namespace.yaml", base.display()));
    let sealing_key = hex::encode(rand::random::<[u8; 32]>());
    k(&format!(
        "-n {NS} create secret generic warren --from-literal=database-url={database_url} \
         --from-literal=secrets.key={sealing_key}"
    ));
    if let Some(crds) = &crds {
        // Only a definition the test made is the test's to remove.
        if gone("crd", "sandboxes.agents.x-k8s.io") {
            installed.crds = Some(crds.clone());
        }
        k(&format!("apply -f {}", crds.display()));
    }
    k(&format!("apply -k {overlay_arg}"));
    let svc = k_json(&format!("-n {NS} get service warren"));
    let cluster_ip = svc["spec"]["clusterIP"].as_str().expect("clusterIP");
    assert!(cluster_ip.starts_with("10.96.0."), "{svc}");
    let url = format!("http://{cluster_ip}:8080");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    wait_ready(&http, &url).await;
    let ready_secs = t.elapsed().as_secs_f64();

    // What runs is what was asked for: this image, its service account.
    let pods = k_json(&format!("-n {NS} get pods -l {SELECTOR}"));
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(1), "{pods}");
    let pod = &pods["items"][0];
    assert_eq!(pod["spec"]["containers"][0]["image"], image_line[7..]);
    assert_eq!(pod["spec"]["serviceAccountName"], "warren");
    let first_pod = pod["metadata"]["name"].as_str().expect("name").to_owned();

    // The admin key: made at the first start, in the server's data dir; `warren key show`
    // in its container reads it (the log printed it too).
    let key = k(&format!("-n {NS} exec deploy/warren -- warren key show"));
    let api = Api {
        http: http.clone(),
        url: url.clone(),
        key: key.trim().to_owned(),
    };
    assert!(api.key.starts_with("wk_"), "{key:?}");
    assert!(server_log().contains(&api.key));
    let r = http
        .get(format!("{url}/v1/sandboxes"))
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no key, no answer");

    // A secret, sealed with the Secret's key (E2B's /secrets), for sandboxes' environments.
    let r = api
        .req(Method::POST, "/secrets")
        .header("X-API-KEY", &api.key);
    let r = r
        .json(&json!({"name": "greeting", "value": "sealed hi"}))
        .send()
        .await;
    let r = r.expect("POST /secrets");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let secret_env = json!({"GREETING": "${e2b.secrets.greeting}"});

    // A sandbox: created, exec, a file written and read back.
    let t = Instant::now();
    let sb = api.create(&user_image, secret_env.clone()).await;
    let create_secs = t.elapsed().as_secs_f64();
    let id = sb["id"].as_str().expect("id").to_owned();
    assert_eq!(api.sh(&id, "echo hi").await, "hi\n");
    assert_eq!(api.sh(&id, GREETING).await, "GREETING=sealed hi\n");
    let path = format!("/v1/sandboxes/{id}/files?path=/tmp/note.txt");
    let r = api
        .req(Method::PUT, &path)
        .body("through the Service")
        .send()
        .await;
    assert_eq!(r.expect("put").status(), StatusCode::NO_CONTENT);
    let r = api.req(Method::GET, &path).send().await.expect("get");
    assert_eq!(r.text().await.expect("body"), "through the Service");
    // Its Pod, made by the installed server (its name on it) in its team's namespace.
    let selector = format!("warren.dev/sandbox={id}");
    let sandbox_pod = &k_json(&format!("get pods -A -l {selector}"))["items"][0];
    assert_eq!(
        sandbox_pod["metadata"]["namespace"],
        format!("{TEAM_PREFIX}default")
    );
    assert_eq!(
        sandbox_pod["metadata"]["labels"]["warren.dev/server"],
        "warren"
    );
    assert_eq!(sandbox_pod["status"]["podIP"], sb["ip"]);

    // A restart (what an upgrade does): a new Pod, once the old one is gone, is the same
    // server: the sandbox is still its own and answers, the sealed secret still opens, the
    // admin key (in the database) still works, though the new data dir has no admin.key.
    let log = server_log();
    assert!(!log.to_lowercase().contains("forbidden"), "RBAC: {log}");
    let t = Instant::now();
    k(&format!("-n {NS} rollout restart deployment/warren"));
    wait_ready(&http, &url).await;
    let restart_secs = t.elapsed().as_secs_f64();
    let pods = k_json(&format!("-n {NS} get pods -l {SELECTOR}"));
    let names: Vec<&str> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert!(
        names.len() == 1 && names[0] != first_pod,
        "{names:?} after {first_pod}"
    );
    let r = api
        .req(Method::GET, &format!("/v1/sandboxes/{id}"))
        .send()
        .await;
    let again: Value = r.expect("get").json().await.expect("a sandbox");
    assert_eq!(again["state"], "running", "{again}");
    assert_eq!(
        api.sh(&id, "cat /tmp/note.txt").await,
        "through the Service"
    );
    let sb2 = api.create(&user_image, secret_env).await;
    let id2 = sb2["id"].as_str().expect("id").to_owned();
    assert_eq!(api.sh(&id2, GREETING).await, "GREETING=sealed hi\n");
    for id in [&id, &id2] {
        api.delete(id).await;
    }
    let log = server_log();
    assert!(!log.to_lowercase().contains("forbidden"), "RBAC: {log}");

    // The uninstall: nothing of it is left.
    let t = Instant::now();
    let failed = installed.uninstall();
    assert!(failed.is_empty(), "{failed:?}");
    let uninstall_secs = t.elapsed().as_secs_f64();
    for (kind, name) in [
        ("namespace", NS),
        ("clusterrole", "warren"),
        ("clusterrolebinding", "warren"),
    ] {
        assert!(gone(kind, name), "{kind} {name} is left");
    }
    assert_eq!(team_namespaces(), Vec::<String>::new());
    let left = k_json(&format!("get {OBJECTS} -A -l warren.dev/server=warren"));
    assert_eq!(left["items"], json!([]), "{left}");

    drop(forward);
    let drop_db = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
    sqlx::query(&drop_db).execute(&admin).await.expect(&drop_db);
    eprintln!(
        "kube_install: image built and pushed in {image_secs:.1} s; the server answering \
         through the Service {ready_secs:.1} s after the apply, {restart_secs:.1} s after a \
         restart; a sandbox created through it in {create_secs:.1} s; uninstalled in \
         {uninstall_secs:.1} s; {:.1} s in all",
        t0.elapsed().as_secs_f64()
    );
}
