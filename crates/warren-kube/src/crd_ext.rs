//! agent-sandbox's extensions (`extensions.agents.x-k8s.io/v1alpha1`) that Warren serves:
//! `SandboxTemplate` (a Pod template kept under a name) and `SandboxClaim` (a sandbox made
//! from a template, owned by the claim). Warm pools (`SandboxWarmPool`) are Warren's own
//! (`/v1/pools`) and not served as resources yet.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::{Condition, PodTemplate};

/// What a `SandboxTemplate` holds.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "extensions.agents.x-k8s.io",
    version = "v1alpha1",
    kind = "SandboxTemplate",
    namespaced
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SandboxTemplateSpec {
    /// The Pod sandboxes made from it run (read as a `Sandbox`'s `spec.podTemplate`).
    /// agent-sandbox's other fields (PVC templates, network policy objects, Services) are
    /// kept and not used: a sandbox's egress is set through Warren's API.
    pub pod_template: PodTemplate,
}

/// A claim's template.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TemplateRef {
    /// The `SandboxTemplate`'s name, in the claim's namespace.
    pub name: String,
}

/// `spec.lifecycle` of a claim.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimLifecycle {
    /// When the claim's sandbox expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_time: Option<String>,
    /// `Delete` (the claim and its sandbox go), `DeleteForeground` (the same), or `Retain`
    /// (default: the sandbox is stopped, both kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_policy: Option<String>,
}

/// An environment variable a claim adds to its template's first container.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimEnv {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Accepted for agent-sandbox's manifests; the sandbox has one container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// What a `SandboxClaim` asks for.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "extensions.agents.x-k8s.io",
    version = "v1alpha1",
    kind = "SandboxClaim",
    namespaced,
    status = "SandboxClaimStatus",
    printcolumn = r#"{"name":"Template","type":"string","jsonPath":".spec.sandboxTemplateRef.name"}"#,
    printcolumn = r#"{"name":"Sandbox","type":"string","jsonPath":".status.sandbox.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SandboxClaimSpec {
    /// The template the sandbox is made from.
    pub sandbox_template_ref: TemplateRef,
    /// When and how the sandbox ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<ClaimLifecycle>,
    /// Variables added to (or replacing those of) the template's first container.
    /// agent-sandbox's warm-pool choice and extra Pod metadata are kept and not used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<ClaimEnv>,
}

/// What Warren reports of a claim.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SandboxClaimStatus {
    /// `Ready`, as its `Sandbox` says it (or why there is none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Its `Sandbox`.
    #[serde(default)]
    pub sandbox: ClaimedSandbox,
}

/// `status.sandbox` of a claim.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ClaimedSandbox {
    /// The `Sandbox` resource's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Its Pod's address.
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Vec<String>,
}
