//! The operator on the real cluster: `Sandbox` resources (agents.x-k8s.io/v1alpha1) made
//! with kubectl become sandboxes the API sees, sandboxes made through the API show up as
//! resources, `replicas` stops and starts, deleting either deletes both, bad resources say
//! why, a resource never acts on another team's sandbox, and one server at a time
//! reconciles, elected by a Lease.
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{teams::team_key, TestServer};
use crate::support::{kube_server_with, kubeconfig, kubectl_json, kubectl_path, push_images};

/// `kubectl ARGS` (with `stdin` fed to it): whether it succeeded, and what it printed.
pub(crate) fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(kubectl_path());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("kubectl's stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("kubectl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `kubectl patch` of a resource's `spec.replicas`.
fn set_replicas(ns: &str, name: &str, n: u8) {
    let patch = format!(r#"{{"spec":{{"replicas":{n}}}}}"#);
    let args = [
        "patch", "sandbox", "-n", ns, name, "--type", "merge", "-p", &patch,
    ];
    let (ok, out) = kubectl(&args, None);
    assert!(ok, "kubectl patch: {out}");
}

/// `kubectl delete` of a resource, waiting (up to a minute) until it is gone.
fn delete_resource(ns: &str, name: &str) {
    let args = ["delete", "sandbox", "-n", ns, name, "--timeout=60s"];
    let (ok, out) = kubectl(&args, None);
    assert!(ok, "kubectl delete: {out}");
}

pub(crate) fn apply(doc: &Value) {
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&doc.to_string()));
    assert!(ok, "kubectl apply: {out}");
}

/// One resource, or `None` once it is gone.
pub(crate) fn resource(ns: &str, name: &str) -> Option<Value> {
    let (ok, out) = kubectl(
        &[
            "get",
            "sandboxes.agents.x-k8s.io",
            "-n",
            ns,
            name,
            "-o",
            "json",
        ],
        None,
    );
    if !ok {
        assert!(out.contains("NotFound"), "kubectl get: {out}");
        return None;
    }
    Some(serde_json::from_str(&out).expect("kubectl's JSON"))
}

/// Polls `f` until it gives a value, for at most `secs`; panics naming `what` after.
pub(crate) async fn until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub(crate) fn condition<'a>(res: &'a Value, type_: &str) -> &'a Value {
    res["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// A Sandbox resource of one container (a tenth of a core and 64 MiB unless it says: the test
/// node has two cores, and the tests run side by side).
fn sandbox_doc(ns: &str, name: &str, mut container: Value) -> Value {
    if container.get("resources").is_none() {
        container["resources"] = json!({"limits": {"cpu": "100m", "memory": "64Mi"}});
    }
    json!({
        "apiVersion": "agents.x-k8s.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podTemplate": {"spec": {"runtimeClassName": "runc", "containers": [container]}}}
    })
}

/// Reasons of the events about resource `name`.
fn event_reasons(ns: &str, name: &str) -> Vec<String> {
    let selector = format!("involvedObject.name={name}");
    let (ok, out) = kubectl(
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &selector,
            "-o",
            "json",
        ],
        None,
    );
    assert!(ok, "kubectl get events: {out}");
    let v: Value = serde_json::from_str(&out).expect("events");
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect()
}

/// A server with the operator on, its namespaces `prefix*`, its Lease in `lease_ns`.
pub(crate) async fn operator_server(
    agent: &str,
    prefix: &str,
    lease_ns: &str,
    name: &str,
) -> TestServer {
    kube_server_with(
        agent,
        &[
            "--kube-runc-class",
            "runc",
            "--kube-namespace-prefix",
            prefix,
            "--kube-lease-namespace",
            lease_ns,
            "--server-name",
            name,
        ],
    )
    .await
}

pub(crate) fn create_namespace(ns: &str) {
    let (ok, out) = kubectl(&["create", "namespace", ns], None);
    assert!(ok || out.contains("AlreadyExists"), "{out}");
}

/// Removes the test's namespaces, also after a failure: resources whose server is gone keep
/// their finalizer, so it is taken off first.
pub(crate) struct Namespaces {
    pub(crate) prefix: String,
    pub(crate) names: &'static [&'static str],
}

impl Namespaces {
    /// Namespaces `<tag><pid>-default` (the default team's) and `-lease` (the operator's
    /// Lease's) made, and `names` (with those two) removed after the test.
    pub(crate) fn make(tag: &str, names: &'static [&'static str]) -> Namespaces {
        let prefix = format!("{tag}{}-", std::process::id());
        create_namespace(&format!("{prefix}lease"));
        create_namespace(&format!("{prefix}default"));
        Namespaces { prefix, names }
    }

    /// The default team's namespace.
    pub(crate) fn default_team(&self) -> String {
        format!("{}default", self.prefix)
    }

    /// The Lease's namespace.
    pub(crate) fn lease(&self) -> String {
        format!("{}lease", self.prefix)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in self.names {
            let ns = format!("{}{n}", self.prefix);
            let (_, names) = kubectl(&["get", "sandboxes", "-n", &ns, "-o", "name"], None);
            for name in names.lines().filter(|l| l.starts_with("sandbox")) {
                let unfinalize = r#"{"metadata":{"finalizers":null}}"#;
                let _ = kubectl(
                    &[
                        "patch", "-n", &ns, name, "--type", "merge", "-p", unfinalize,
                    ],
                    None,
                );
            }
            let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"], None);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_sandbox_resources_and_sandboxes_are_one() {
    let images = push_images();
    let (agent, image) = (images.agent.clone(), images.image.clone());
    let tidy = Namespaces::make("wop", &["default", "lease", "noteam", "other"]);
    let (prefix, ns, lease_ns) = (tidy.prefix.clone(), tidy.default_team(), tidy.lease());
    let s = operator_server(&agent, &prefix, &lease_ns, &format!("{prefix}a")).await;

    // kubectl apply → a sandbox the API sees, running as the template says.
    apply(&sandbox_doc(
        &ns,
        "from-kubectl",
        json!({"name": "main", "image": image, "command": ["sleep"], "args": ["600"],
               "env": [{"name": "GREETING", "value": "hello"}],
               "resources": {"limits": {"cpu": "250m", "memory": "128Mi"}}}),
    ));
    let res = until("the kubectl resource runs", 120, || {
        resource(&ns, "from-kubectl").filter(|r| r["status"]["state"] == "running")
    })
    .await;
    let ready = condition(&res, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("True"), &json!("DependenciesReady")),
        "{res}"
    );
    assert_eq!(res["status"]["replicas"], 1);
    assert!(
        res["status"]["podIPs"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("10.244.0."),
        "{res}"
    );
    assert_eq!(res["metadata"]["finalizers"], json!(["warren.dev/sandbox"]));
    let id = res["status"]["sandboxID"]
        .as_str()
        .expect("sandboxID")
        .to_owned();
    let (st, sb) = s.get(&id).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sb["state"], "running");
    assert_eq!(sb["metadata"]["agents.x-k8s.io/sandbox"], "from-kubectl");
    assert_eq!(
        (sb["cpu"].as_f64(), sb["memory_mb"].as_u64()),
        (Some(0.25), Some(128))
    );
    assert_eq!(sb["expires_at"], Value::Null, "no shutdownTime: no expiry");
    assert_eq!(s.sh(&id, "echo $GREETING").await, "hello\n");
    let pod_name = format!("warren-{id}");
    let owner = until("the resource owns the Pod", 30, || {
        let pod = kubectl_json(&["get", "pod", "-n", &ns, &pod_name]);
        let owner = pod["metadata"]["ownerReferences"][0].clone();
        (owner["kind"] == "Sandbox").then_some(owner)
    })
    .await;
    assert_eq!(
        (&owner["name"], &owner["controller"]),
        (&json!("from-kubectl"), &json!(true))
    );
    let reasons = event_reasons(&ns, "from-kubectl");
    assert!(reasons.iter().any(|r| r == "Created"), "{reasons:?}");

    // replicas: 0 stops it (files kept), 1 starts it again.
    set_replicas(&ns, "from-kubectl", 0);
    let res = until("replicas 0 stops it", 60, || {
        resource(&ns, "from-kubectl").filter(|r| r["status"]["state"] == "stopped")
    })
    .await;
    assert_eq!(condition(&res, "Ready")["reason"], "SandboxSuspended");
    assert_eq!(condition(&res, "Suspended")["status"], "True");
    assert_eq!(res["status"]["replicas"], 0);
    assert_eq!(s.get(&id).await.1["state"], "stopped");
    set_replicas(&ns, "from-kubectl", 1);
    until("replicas 1 starts it", 120, || {
        resource(&ns, "from-kubectl").filter(|r| r["status"]["state"] == "running")
    })
    .await;
    assert_eq!(s.sh(&id, "echo $GREETING").await, "hello\n");

    // An API create shows up as a resource named by its id; an API delete takes it away.
    let made = s
        .create(json!({"image": image, "runtime": "runc", "cmd": ["sleep", "600"], "env": {"SECRET": "s3"}, "cpu": 0.1, "memory_mb": 64}))
        .await;
    let id2 = made["id"].as_str().expect("id").to_owned();
    let res2 = until("the API's sandbox shows up as a resource", 60, || {
        resource(&ns, &id2).filter(|r| r["status"]["state"] == "running")
    })
    .await;
    assert_eq!(res2["status"]["sandboxID"], id2.as_str());
    assert_eq!(
        res2["metadata"]["labels"]["warren.dev/sandbox"],
        id2.as_str()
    );
    let c = &res2["spec"]["podTemplate"]["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["sleep", "600"]));
    assert!(
        !res2.to_string().contains("s3"),
        "env values stay in the Secret: {res2}"
    );
    s.delete(&id2).await;
    until("an API delete removes the resource", 60, || {
        resource(&ns, &id2).is_none().then_some(())
    })
    .await;

    // A resource for another team's sandbox is refused, and deleting it leaves that sandbox be.
    let other = team_key(&s, Some(json!({"name": "other"})), "other", "sandboxes").await;
    let (st, theirs) = other
        .post(
            "/v1/sandboxes",
            json!({"image": image, "runtime": "runc", "cmd": ["sleep", "600"], "cpu": 0.1, "memory_mb": 64}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{theirs}");
    let theirs = theirs["id"].as_str().expect("id").to_owned();
    let mut forged = sandbox_doc(&ns, "forged", json!({"name": "c", "image": image}));
    forged["metadata"]["labels"] = json!({"warren.dev/sandbox": theirs});
    apply(&forged);
    let res = until("the forged resource is refused", 60, || {
        resource(&ns, "forged").filter(|r| condition(r, "Ready")["reason"] == "NotThisTeams")
    })
    .await;
    assert_eq!(condition(&res, "Ready")["status"], "False");
    delete_resource(&ns, "forged");
    let (st, v) = other.get(&format!("/v1/sandboxes/{theirs}")).await;
    assert_eq!(
        (st, v["state"].as_str()),
        (StatusCode::OK, Some("running")),
        "{v}"
    );
    other.delete_all().await;

    // What cannot be a sandbox says why, on the resource and in an event.
    apply(&sandbox_doc(&ns, "no-image", json!({"name": "c"})));
    let res = until("the resource without an image is refused", 60, || {
        resource(&ns, "no-image").filter(|r| condition(r, "Ready")["reason"] == "InvalidSpec")
    })
    .await;
    assert!(
        condition(&res, "Ready")["message"]
            .as_str()
            .unwrap_or("")
            .contains("image"),
        "{res}"
    );
    assert!(event_reasons(&ns, "no-image")
        .iter()
        .any(|r| r == "InvalidSpec"));
    delete_resource(&ns, "no-image");
    let nowhere = format!("{prefix}noteam");
    create_namespace(&nowhere);
    apply(&sandbox_doc(
        &nowhere,
        "lost",
        json!({"name": "c", "image": image}),
    ));
    until(
        "a resource outside every team's namespace is refused",
        60,
        || resource(&nowhere, "lost").filter(|r| condition(r, "Ready")["reason"] == "NoTeam"),
    )
    .await;
    delete_resource(&nowhere, "lost");

    // Made with replicas 0: it ends stopped (the stop carried out once it runs); a
    // shutdownTime with Retain stops it then (SandboxExpired), with Delete deletes both.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(20)).to_rfc3339();
    let sleeper = json!({"name": "c", "image": image, "command": ["sleep", "600"]});
    let mut idle = sandbox_doc(&ns, "idle", sleeper.clone());
    idle["spec"]["replicas"] = json!(0);
    apply(&idle);
    let mut retained = sandbox_doc(&ns, "retained", sleeper.clone());
    retained["spec"]["shutdownTime"] = json!(soon);
    apply(&retained);
    let mut deleted = sandbox_doc(&ns, "deleted", sleeper);
    deleted["spec"]["shutdownTime"] = json!(soon);
    deleted["spec"]["shutdownPolicy"] = json!("Delete");
    apply(&deleted);
    until("replicas 0 at the start leaves it stopped", 90, || {
        resource(&ns, "idle").filter(|r| r["status"]["state"] == "stopped")
    })
    .await;
    let res = until("Retain stops it at its shutdownTime", 90, || {
        resource(&ns, "retained").filter(|r| r["status"]["state"] == "stopped")
    })
    .await;
    assert_eq!(
        condition(&res, "Ready")["reason"],
        "SandboxExpired",
        "{res}"
    );
    until("Delete deletes both at its shutdownTime", 90, || {
        resource(&ns, "deleted").is_none().then_some(())
    })
    .await;
    delete_resource(&ns, "idle");
    delete_resource(&ns, "retained");

    // kubectl delete → the sandbox is deleted, its Pod gone, then the resource.
    let (ok, out) = kubectl(
        &[
            "delete",
            "sandbox",
            "-n",
            &ns,
            "from-kubectl",
            "--wait=false",
        ],
        None,
    );
    assert!(ok, "{out}");
    until("kubectl delete deletes the sandbox", 60, || {
        resource(&ns, "from-kubectl").is_none().then_some(())
    })
    .await;
    let (st, sb) = s.get(&id).await;
    assert!(
        st == StatusCode::NOT_FOUND || sb["state"] == "deleted",
        "{st} {sb}"
    );
    let pods = kubectl_json(&["get", "pods", "-n", &ns]);
    assert_eq!(pods["items"], json!([]), "no Pod left");

    s.shutdown().await;
}

/// The Lease's holder, if any.
fn holder(lease_ns: &str) -> Option<String> {
    let lease = kubectl_json(&["get", "lease", "-n", lease_ns, "warren-operator"]);
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_one_server_reconciles_at_a_time_elected_by_a_lease() {
    let images = push_images();
    let (agent, image) = (images.agent.clone(), images.image.clone());
    let tidy = Namespaces::make("wol", &["default", "lease"]);
    let (prefix, ns, lease_ns) = (tidy.prefix.clone(), tidy.default_team(), tidy.lease());
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    let sa = operator_server(&agent, &prefix, &lease_ns, &a).await;
    let sb = operator_server(&agent, &prefix, &lease_ns, &b).await;
    // A holder is its server's name and a suffix of its process's.
    let first = until("a server holds the Lease", 30, || holder(&lease_ns)).await;
    let (a_holds, b_holds) = (
        first.starts_with(&format!("{a}-")),
        first.starts_with(&format!("{b}-")),
    );
    assert!(a_holds != b_holds, "{first}");
    let (leader, follower, follower_name) = if a_holds { (sa, sb, b) } else { (sb, sa, a) };

    // Only the leader makes the resource's sandbox (each server here has its own database).
    apply(&sandbox_doc(
        &ns,
        "one",
        json!({"name": "c", "image": image, "command": ["sleep", "600"]}),
    ));
    let res = until("the leader makes the sandbox", 120, || {
        resource(&ns, "one").filter(|r| r["status"]["state"] == "running")
    })
    .await;
    let id = res["status"]["sandboxID"].as_str().expect("id").to_owned();
    assert_eq!(leader.get(&id).await.0, StatusCode::OK);
    assert_eq!(follower.get(&id).await.0, StatusCode::NOT_FOUND);
    delete_resource(&ns, "one");

    // The leader stops (giving the Lease back): the other takes over and reconciles.
    let stopped = Instant::now();
    leader.shutdown().await;
    until("the other server takes the Lease", 30, || {
        holder(&lease_ns).filter(|h| h.starts_with(&format!("{follower_name}-")))
    })
    .await;
    eprintln!(
        "the Lease passed {:?} after the leader's stop began",
        stopped.elapsed()
    );
    apply(&sandbox_doc(
        &ns,
        "two",
        json!({"name": "c", "image": image, "command": ["sleep", "600"]}),
    ));
    let res = until("the new leader makes the sandbox", 120, || {
        resource(&ns, "two").filter(|r| r["status"]["state"] == "running")
    })
    .await;
    let id = res["status"]["sandboxID"].as_str().expect("id").to_owned();
    assert_eq!(follower.get(&id).await.0, StatusCode::OK);
    delete_resource(&ns, "two");
    follower.shutdown().await;
}
