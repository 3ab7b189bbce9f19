//! `SandboxClaim` → `Sandbox` resource: a claim makes a `Sandbox` of its name from its
//! `SandboxTemplate` (the claim's env added to the template's first container, its lifecycle
//! the sandbox's), owned by the claim, so deleting the claim deletes the `Sandbox` and so the
//! sandbox; the claim's status follows its `Sandbox`'s.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use warren_kube::crd::{
    set_condition, Condition, PodTemplate, Sandbox, SandboxResourceSpec, ShutdownPolicy,
};
use warren_kube::crd_ext::{ClaimedSandbox, SandboxClaim, SandboxClaimStatus, SandboxTemplate};
use warren_kube::kube::api::{ObjectMeta, Patch, PostParams};
use warren_kube::kube::runtime::controller::{Action, Controller};
use warren_kube::kube::runtime::watcher;
use warren_kube::kube::{Api, Resource, ResourceExt};

use super::reconcile::{patch_params, OpError};
use super::Ctx;

/// Reconciles every claim (and again when its `Sandbox` changes) until the stream ends.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let claims: Api<SandboxClaim> = Api::all(ctx.client.clone());
    let sandboxes: Api<Sandbox> = Api::all(ctx.client.clone());
    Controller::new(claims, watcher::Config::default())
        .owns(sandboxes, watcher::Config::default())
        .run(reconcile, retry, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("operator (claims): {e}");
            }
        })
        .await;
}

fn retry(_: Arc<SandboxClaim>, e: &OpError, _: Arc<Ctx>) -> Action {
    tracing::warn!("operator (claims): {e}");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(claim: Arc<SandboxClaim>, ctx: Arc<Ctx>) -> Result<Action, OpError> {
    let ns = claim.namespace().unwrap_or_default();
    // Another installation's, or going (its Sandbox goes with it, by owner reference).
    if !ns.starts_with(&ctx.cfg.namespace_prefix) || claim.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = claim.name_any();
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = claim.uid().unwrap_or_default();
    let status = match sandboxes.get_opt(&name).await? {
        Some(sbx) if sbx.owner_references().iter().any(|o| o.uid == uid) => {
            let st = sbx.status.clone().unwrap_or_default();
            let mut conditions = claim
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            match st.conditions.iter().find(|c| c.type_ == "Ready") {
                Some(ready) => set_condition(&mut conditions, ready.clone()),
                None => set_condition(
                    &mut conditions,
                    not_ready("SandboxNotReady", "its Sandbox has no status yet"),
                ),
            }
            SandboxClaimStatus {
                conditions,
                sandbox: ClaimedSandbox {
                    name: name.clone(),
                    pod_ips: st.pod_ips,
                },
            }
        }
        Some(_) => refused(
            &claim,
            "NameTaken",
            &format!("a Sandbox named {name} is there, not this claim's"),
        ),
        // Made once and gone since (deleted, or expired): never made again; an expiry with
        // `Delete` takes the claim too.
        None if claim
            .status
            .as_ref()
            .is_some_and(|s| !s.sandbox.name.is_empty()) =>
        {
            let lifecycle = claim.spec.lifecycle.as_ref();
            let policy = lifecycle.and_then(|l| l.shutdown_policy.as_deref());
            if matches!(policy, Some("Delete" | "DeleteForeground")) {
                let claims: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &ns);
                match claims.delete(&name, &Default::default()).await {
                    Ok(_) | Err(warren_kube::kube::Error::Api(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                return Ok(Action::await_change());
            }
            let mut status = refused(
                &claim,
                "SandboxExpired",
                &format!("its Sandbox {name} is gone"),
            );
            status.sandbox.pod_ips.clear();
            status
        }
        None => {
            let templates: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &ns);
            let wanted = &claim.spec.sandbox_template_ref.name;
            match templates.get_opt(wanted).await? {
                None => refused(
                    &claim,
                    "TemplateNotFound",
                    &format!("no SandboxTemplate {wanted} in {ns}"),
                ),
                Some(template) => {
                    let made = sandbox_of(&claim, &template, &ns);
                    sandboxes.create(&PostParams::default(), &made).await?;
                    let mut status = refused(
                        &claim,
                        "SandboxNotReady",
                        &format!("Sandbox {name} made from {wanted}"),
                    );
                    status.sandbox.name = name.clone();
                    status
                }
            }
        }
    };
    if claim.status.as_ref() != Some(&status) {
        let claims: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": status});
        claims
            .patch_status(&name, &patch_params(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

fn not_ready(reason: &str, why: &str) -> Condition {
    super::status::condition("Ready", false, reason, why, None)
}

fn refused(claim: &SandboxClaim, reason: &str, why: &str) -> SandboxClaimStatus {
    let mut status = claim.status.clone().unwrap_or_default();
    set_condition(&mut status.conditions, not_ready(reason, why));
    status
}

/// The claim's `Sandbox`: the template's Pod with the claim's env, the claim's lifecycle.
fn sandbox_of(claim: &SandboxClaim, template: &SandboxTemplate, ns: &str) -> Sandbox {
    let mut pod = template.spec.pod_template.spec.clone();
    if let Some(first) = pod
        .get_mut("containers")
        .and_then(|c| c.as_array_mut())
        .and_then(|c| c.first_mut())
    {
        let mut env: Vec<serde_json::Value> = first
            .get("env")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        for var in &claim.spec.env {
            env.retain(|e| e["name"] != var.name.as_str());
            env.push(serde_json::json!({"name": var.name, "value": var.value}));
        }
        if !env.is_empty() {
            first["env"] = serde_json::Value::Array(env);
        }
    }
    let lifecycle = claim.spec.lifecycle.clone().unwrap_or_default();
    let policy = match lifecycle.shutdown_policy.as_deref() {
        Some("Delete" | "DeleteForeground") => ShutdownPolicy::Delete,
        _ => ShutdownPolicy::Retain,
    };
    Sandbox {
        metadata: ObjectMeta {
            name: Some(claim.name_any()),
            namespace: Some(ns.to_owned()),
            owner_references: claim.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: SandboxResourceSpec {
            pod_template: PodTemplate {
                spec: pod,
                metadata: template.spec.pod_template.metadata.clone(),
            },
            shutdown_time: lifecycle.shutdown_time,
            shutdown_policy: Some(policy),
            ..Default::default()
        },
        status: None,
    }
}
