//! Sandbox → `Sandbox` resource: a sandbox made through the API gets a resource named by
//! its id once its Pod is asked for, and any sandbox's resource goes when it is deleted. On
//! every change the service announces, and every [`RESYNC`] for those made by other servers.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use warren_api::SandboxState;
use warren_kube::crd::{Sandbox, RESOURCE_METADATA};
use warren_kube::kube::api::Patch;
use warren_kube::kube::{Api, ResourceExt};

use super::Ctx;
use crate::service::Event;

/// How often every sandbox is looked at again.
const RESYNC: Duration = Duration::from_secs(30);

/// Mirrors until the service's announcements end.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let mut events = ctx.service.subscribe_events();
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => resync(&ctx).await,
            event = events.recv() => match event {
                Ok(Event::Sandbox(s)) => mirror(&ctx, &s).await,
                Ok(Event::Operation(_)) => {}
                Err(RecvError::Lagged(_)) => resync(&ctx).await,
                Err(RecvError::Closed) => return,
            },
        }
    }
}

async fn resync(ctx: &Ctx) {
    match ctx.service.sandboxes().list_all().await {
        Ok(all) => {
            for s in all {
                mirror(ctx, &s).await;
            }
        }
        Err(e) => tracing::warn!("operator: listing sandboxes: {e}"),
    }
}

/// Puts a sandbox's resource in step with it (what fails is tried again at the next resync).
async fn mirror(ctx: &Ctx, s: &warren_api::Sandbox) {
    if s.pool.is_some() {
        return;
    }
    let ns = warren_kube::objects::namespace_of(&ctx.cfg, &s.team);
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
    let made_by_kubectl = s.metadata.get(RESOURCE_METADATA);
    let name = made_by_kubectl.cloned().unwrap_or_else(|| s.id.to_string());
    let have = match api.get_opt(&name).await {
        Ok(have) => have,
        // No namespace yet, or no rights: the next pass.
        Err(e) => {
            tracing::debug!(sandbox = %s.id, "operator: reading resource {ns}/{name}: {e}");
            return;
        }
    };
    match (s.state, have) {
        (SandboxState::Terminating | SandboxState::Deleted, Some(res)) => {
            // Only the resource that is this sandbox's, never one someone named alike.
            if res.labels().get(warren_kube::objects::SANDBOX_LABEL) != Some(&s.id.to_string()) {
                return;
            }
            if let Err(e) = api.delete(&name, &Default::default()).await {
                tracing::debug!(sandbox = %s.id, "operator: deleting resource {ns}/{name}: {e}");
            }
        }
        // Made with kubectl: its resource is there or on its way out.
        (_, _) if made_by_kubectl.is_some() => {}
        (SandboxState::Pending | SandboxState::Provisioning, _) => {}
        (SandboxState::Terminating | SandboxState::Deleted, None) => {}
        (_, Some(res)) => keep_in_step(&api, &res, s).await,
        (_, None) => {
            let res = warren_kube::resource::resource_of(&ctx.cfg, s, &ns);
            if let Err(e) = api.create(&Default::default(), &res).await {
                tracing::debug!(sandbox = %s.id, "operator: making resource {ns}/{name}: {e}");
            }
        }
    }
}

/// Writes what the API changed (expiry, stopped or running) into the spec of a sandbox's
/// resource, so a later change of the resource does not carry out stale values.
async fn keep_in_step(api: &Api<Sandbox>, res: &Sandbox, s: &warren_api::Sandbox) {
    // A change of the resource's own not carried out yet is the reconciler's to carry out.
    let observed = res.status.as_ref().and_then(|st| st.observed_generation);
    if observed != res.metadata.generation {
        return;
    }
    let shutdown = s.expires_at.map(|t| t.to_rfc3339());
    let replicas = match s.state {
        SandboxState::Running => Some(1),
        SandboxState::Stopped => Some(0),
        _ => None,
    };
    let stale_time = res.spec.shutdown_time.as_deref().map(parse) != shutdown.as_deref().map(parse);
    let stale_replicas = replicas.is_some_and(|r| res.spec.replicas.unwrap_or(1) != r);
    if !stale_time && !stale_replicas {
        return;
    }
    let mut spec = serde_json::json!({"shutdownTime": shutdown});
    if let Some(r) = replicas.filter(|_| stale_replicas) {
        spec["replicas"] = r.into();
    }
    let patch = serde_json::json!({"spec": spec});
    let pp = super::reconcile::patch_params();
    if let Err(e) = api.patch(&res.name_any(), &pp, &Patch::Merge(&patch)).await {
        tracing::debug!(sandbox = %s.id, "operator: bringing its resource in step: {e}");
    }
}

fn parse(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}
