//! The `Sandbox` custom resource, in the shape of kubernetes-sigs/agent-sandbox's
//! (`agents.x-k8s.io/v1alpha1`), so that project's manifests apply here: `spec.podTemplate`
//! (its first container's image, resources, env and command; `runtimeClassName`),
//! `spec.replicas` (1 running, 0 stopped), `spec.shutdownTime` and `spec.shutdownPolicy`.
//! Warren adds `status.sandboxID` and `status.state`.
use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group (agent-sandbox's).
pub const GROUP: &str = "agents.x-k8s.io";
/// The finalizer that holds a resource until its sandbox is deleted.
pub const FINALIZER: &str = "warren.dev/sandbox";
/// Sandbox metadata naming the resource a sandbox was made for (`kubectl apply`); a sandbox
/// made through the API has a resource named by its id instead.
pub const RESOURCE_METADATA: &str = "agents.x-k8s.io/sandbox";

/// What a `Sandbox` resource asks for.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "agents.x-k8s.io",
    version = "v1alpha1",
    kind = "Sandbox",
    namespaced,
    status = "SandboxResourceStatus",
    shortname = "sbx",
    printcolumn = r#"{"name":"Sandbox","type":"string","jsonPath":".status.sandboxID"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxResourceSpec {
    /// The Pod the sandbox is made from: only its first container's image, command, args,
    /// workingDir, env values, resource limits (cpu, memory, ephemeral-storage) and the
    /// spec's runtimeClassName are read.
    pub pod_template: PodTemplate,
    /// agent-sandbox's PVC templates: accepted, not used yet (a sandbox keeps its files
    /// across stop and start by itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "any_objects")]
    pub volume_claim_templates: Vec<serde_json::Value>,
    /// When the sandbox expires (RFC 3339); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_time: Option<String>,
    /// What expiry does with the resource: `Retain` (default: the sandbox is stopped, the
    /// resource kept) or `Delete` (both go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_policy: Option<ShutdownPolicy>,
    /// 1 (default): running; 0: stopped, its files kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub replicas: Option<i32>,
    /// agent-sandbox's headless Service: accepted, not made (reach a sandbox's ports through
    /// Warren's preview URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<bool>,
}

/// `spec.shutdownPolicy`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ShutdownPolicy {
    /// Expiry deletes the sandbox and the resource.
    Delete,
    /// Expiry stops the sandbox; the resource stays, `Ready` false with `SandboxExpired`.
    Retain,
}

/// `spec.podTemplate`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct PodTemplate {
    /// A Pod spec (`k8s.io/api/core/v1.PodSpec`).
    #[schemars(schema_with = "any_object")]
    pub spec: serde_json::Value,
    /// Labels and annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub metadata: Option<serde_json::Value>,
}

/// What Warren reports of a `Sandbox` resource.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxResourceStatus {
    /// `Ready`, `Suspended` and `Finished`, as agent-sandbox sets them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// 1 while the sandbox runs, else 0.
    #[serde(default)]
    pub replicas: i32,
    /// The label selector of its Pod.
    #[serde(default, rename = "selector", skip_serializing_if = "String::is_empty")]
    pub label_selector: String,
    /// Its Pod's address while it runs.
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Vec<String>,
    /// The Warren sandbox it is (the REST API's and the CLI's id).
    #[serde(
        default,
        rename = "sandboxID",
        skip_serializing_if = "String::is_empty"
    )]
    pub sandbox_id: String,
    /// The sandbox's state (`creating`, `running`, `stopped`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// The generation whose `replicas` and `shutdownTime` were carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A status condition (`metav1.Condition`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Suspended`, `Finished`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A PascalCase word for why.
    pub reason: String,
    /// Why, for people.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation it was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn any_objects(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let item = any_object(generator);
    schemars::json_schema!({ "type": "array", "items": item })
}

/// Every definition Warren serves: `Sandbox`, `SandboxTemplate`, `SandboxClaim`.
pub fn definitions(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        Sandbox::crd(),
        crate::crd_ext::SandboxTemplate::crd(),
        crate::crd_ext::SandboxClaim::crd(),
    ]
}

/// The CustomResourceDefinitions, as YAML (`deploy/kubernetes/crds.yaml`).
pub fn definition_yaml() -> String {
    let docs: Vec<String> = definitions()
        .iter()
        .filter_map(|crd| serde_json::to_value(crd).ok())
        .filter_map(|v| serde_yaml_string(&v))
        .collect();
    format!(
        "# Warren's resources: Sandbox (agents.x-k8s.io/v1alpha1), SandboxTemplate and\n\
         # SandboxClaim (extensions.agents.x-k8s.io/v1alpha1), in agent-sandbox's shapes.\n\
         # Made by `warren kube crds`; do not edit.\n---\n{}",
        docs.join("---\n")
    )
}

/// JSON is YAML: the definition as indented JSON keeps the file readable without a YAML
/// writer in the server.
fn serde_yaml_string(v: &serde_json::Value) -> Option<String> {
    serde_json::to_string_pretty(v).ok().map(|s| s + "\n")
}

/// A condition list with `type_` set as given, keeping the transition time of one whose
/// status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            let at = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *old = Condition {
                last_transition_time: at,
                ..new
            };
        }
        None => conditions.push(new),
    }
}

/// Drops the condition of `type_`.
pub fn drop_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The labels a sandbox's resource carries.
pub fn resource_labels(id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (crate::objects::SANDBOX_LABEL.to_owned(), id.to_owned()),
        (
            crate::objects::MANAGED_BY.0.to_owned(),
            crate::objects::MANAGED_BY.1.to_owned(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_sandbox_manifest_parses() {
        let doc = serde_json::json!({
            "apiVersion": "agents.x-k8s.io/v1alpha1",
            "kind": "Sandbox",
            "metadata": {"name": "my-sandbox", "namespace": "warren-default"},
            "spec": {
                "podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                "shutdownTime": "2030-01-01T00:00:00Z",
                "replicas": 1
            }
        });
        let sb: Sandbox = serde_json::from_value(doc).expect("parses");
        assert_eq!(sb.spec.replicas, Some(1));
        assert_eq!(
            sb.spec.pod_template.spec["containers"][0]["image"],
            "busybox"
        );
    }

    #[test]
    fn definition_is_structural() {
        let yaml = definition_yaml();
        assert!(yaml.contains("\"group\": \"agents.x-k8s.io\""));
        assert!(yaml.contains("x-kubernetes-preserve-unknown-fields"));
        assert!(yaml.contains("\"status\": {}"), "status subresource");
    }

    #[test]
    fn a_condition_keeps_its_time_while_unchanged() {
        let c = |status: &str, at: &str| Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: at.into(),
            observed_generation: None,
        };
        let mut all = vec![c("True", "t1")];
        set_condition(&mut all, c("True", "t2"));
        assert_eq!(all[0].last_transition_time, "t1");
        set_condition(&mut all, c("False", "t3"));
        assert_eq!(all[0].last_transition_time, "t3");
        assert_eq!(all.len(), 1);
    }
}

#[cfg(test)]
mod file_tests {
    /// `deploy/kubernetes/crds.yaml` is what `warren kube crds` prints.
    #[test]
    fn the_manifest_is_the_definition() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/kubernetes/crds.yaml"
        );
        let file = std::fs::read_to_string(path).expect("deploy/kubernetes/crds.yaml");
        assert!(
            file == super::definition_yaml(),
            "deploy/kubernetes/crds.yaml is stale: `warren kube crds > deploy/kubernetes/crds.yaml`"
        );
    }
}
