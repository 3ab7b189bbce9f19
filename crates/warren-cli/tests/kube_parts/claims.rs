//! agent-sandbox's `SandboxTemplate` and `SandboxClaim` on the real cluster: a claim makes a
//! `Sandbox` (so a sandbox) from its template with its own env added, its status follows, and
//! deleting the claim deletes both.
use serde_json::json;

use crate::operator::{apply, condition, kubectl, operator_server, resource, until, Namespaces};
use crate::support::push_images;

#[tokio::test(flavor = "multi_thread")]
async fn kube_a_claim_makes_a_sandbox_from_its_template() {
    let images = push_images();
    let (agent, image) = (images.agent.clone(), images.image.clone());
    let tidy = Namespaces::make("woc", &["default", "lease"]);
    let (prefix, ns, lease_ns) = (tidy.prefix.clone(), tidy.default_team(), tidy.lease());
    let s = operator_server(&agent, &prefix, &lease_ns, &format!("{prefix}a")).await;

    // A claim of a template not there yet says so; the template's arrival makes its sandbox.
    apply(&json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
        "kind": "SandboxClaim",
        "metadata": {"name": "mine", "namespace": ns},
        "spec": {
            "sandboxTemplateRef": {"name": "python-ish"},
            "env": [{"name": "FROM_CLAIM", "value": "claimed"}, {"name": "BOTH", "value": "claim"}],
            "warmpool": "none"
        }
    }));
    let claim = |ns: &str| {
        let (ok, out) = kubectl(
            &["get", "sandboxclaim", "-n", ns, "mine", "-o", "json"],
            None,
        );
        assert!(ok, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON")
    };
    until("the claim says its template is missing", 60, || {
        let c = claim(&ns);
        (condition(&c, "Ready")["reason"] == "TemplateNotFound").then_some(())
    })
    .await;
    apply(&json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
        "kind": "SandboxTemplate",
        "metadata": {"name": "python-ish", "namespace": ns},
        "spec": {
            "podTemplate": {"spec": {"runtimeClassName": "runc", "containers": [{
                "name": "main", "image": image, "command": ["sleep", "600"],
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                "env": [{"name": "FROM_TEMPLATE", "value": "templated"}, {"name": "BOTH", "value": "template"}]
            }]}},
            "networkPolicyManagement": "Unmanaged"
        }
    }));
    let res = until("the claim's Sandbox runs", 120, || {
        resource(&ns, "mine").filter(|r| r["status"]["state"] == "running")
    })
    .await;
    assert_eq!(
        res["metadata"]["ownerReferences"][0]["kind"],
        "SandboxClaim"
    );
    let id = res["status"]["sandboxID"]
        .as_str()
        .expect("sandboxID")
        .to_owned();
    let env = s.sh(&id, "echo $FROM_TEMPLATE $FROM_CLAIM $BOTH").await;
    assert_eq!(
        env, "templated claimed claim\n",
        "the claim's env over the template's"
    );
    let c = until("the claim is Ready", 60, || {
        let c = claim(&ns);
        (condition(&c, "Ready")["status"] == "True").then_some(c)
    })
    .await;
    assert_eq!(c["status"]["sandbox"]["name"], "mine");
    assert!(
        c["status"]["sandbox"]["podIPs"][0].as_str().is_some(),
        "{c}"
    );

    // Deleting the claim deletes its Sandbox, so the sandbox.
    let (ok, out) = kubectl(
        &["delete", "sandboxclaim", "-n", &ns, "mine", "--timeout=60s"],
        None,
    );
    assert!(ok, "{out}");
    until("the claim's Sandbox goes with it", 60, || {
        resource(&ns, "mine").is_none().then_some(())
    })
    .await;
    let (st, sb) = s.get(&id).await;
    assert!(
        st == reqwest::StatusCode::NOT_FOUND || sb["state"] == "deleted",
        "{st} {sb}"
    );

    // A claim whose lifecycle ends with Delete: at its shutdownTime the claim and its Sandbox
    // go, and nothing is made again.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(15)).to_rfc3339();
    apply(&json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
        "kind": "SandboxClaim",
        "metadata": {"name": "brief", "namespace": ns},
        "spec": {
            "sandboxTemplateRef": {"name": "python-ish"},
            "lifecycle": {"shutdownTime": soon, "shutdownPolicy": "Delete"}
        }
    }));
    until("the brief claim's Sandbox runs", 90, || {
        resource(&ns, "brief").filter(|r| r["status"]["state"] == "running")
    })
    .await;
    until("the claim goes at its shutdownTime", 90, || {
        let (ok, out) = kubectl(&["get", "sandboxclaim", "-n", &ns, "brief"], None);
        (!ok && out.contains("NotFound")).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert!(resource(&ns, "brief").is_none(), "its Sandbox made again");
    s.shutdown().await;
}
