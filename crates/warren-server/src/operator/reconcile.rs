//! `Sandbox` resource → sandbox: makes the sandbox a resource asks for, carries out its
//! `replicas` and `shutdownTime`, writes its status, and deletes the sandbox with the resource.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use warren_api::{SandboxId, SandboxState};
use warren_kube::crd::{Sandbox, FINALIZER};
use warren_kube::k8s_openapi::api::core::v1::Pod;
use warren_kube::kube::api::{Patch, PatchParams};
use warren_kube::kube::runtime::controller::{Action, Controller};
use warren_kube::kube::runtime::events::{Event, EventType};
use warren_kube::kube::runtime::finalizer::{finalizer, Event as Finalizer};
use warren_kube::kube::runtime::reflector::ObjectRef;
use warren_kube::kube::runtime::watcher;
use warren_kube::kube::{Api, Resource, ResourceExt};

use super::Ctx;
use crate::error::ApiError;

/// Why a reconcile failed (retried).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
    /// The API server.
    #[error("Kubernetes: {0}")]
    Kube(#[from] warren_kube::kube::Error),
    /// The service.
    #[error("{0}")]
    Service(#[from] ApiError),
}

/// Field manager of the operator's patches.
pub(crate) const MANAGER: &str = "warren-operator";

/// Reconciles every `Sandbox` resource (and again when its Pod changes) until the stream ends.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let resources: Api<Sandbox> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let managed = format!(
        "{}={}",
        warren_kube::objects::MANAGED_BY.0,
        warren_kube::objects::MANAGED_BY.1
    );
    Controller::new(resources, watcher::Config::default())
        .watches(pods, watcher::Config::default().labels(&managed), |pod| {
            owner_of(&pod)
        })
        .run(reconcile, retry, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("operator: {e}");
            }
        })
        .await;
}

/// The resource a sandbox's Pod belongs to: its owner, or (before it has one) the resource
/// named by its sandbox's id.
fn owner_of(pod: &Pod) -> Option<ObjectRef<Sandbox>> {
    let ns = pod.namespace()?;
    let name = pod
        .owner_references()
        .iter()
        .find(|o| o.kind == "Sandbox" && o.api_version.starts_with(warren_kube::crd::GROUP))
        .map(|o| o.name.clone())
        .or_else(|| {
            pod.labels()
                .get(warren_kube::objects::SANDBOX_LABEL)
                .cloned()
        })?;
    Some(ObjectRef::new(&name).within(&ns))
}

fn retry(_: Arc<Sandbox>, e: &OpError, _: Arc<Ctx>) -> Action {
    tracing::warn!("operator: {e}");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(res: Arc<Sandbox>, ctx: Arc<Ctx>) -> Result<Action, OpError> {
    let ns = res.namespace().unwrap_or_default();
    // Another installation's (or no one's): left alone, not even a finalizer.
    if !ns.starts_with(&ctx.cfg.namespace_prefix) {
        return Ok(Action::await_change());
    }
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, res, |event| async {
        match event {
            Finalizer::Apply(res) => apply(&res, &ctx).await,
            Finalizer::Cleanup(res) => cleanup(&res, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        warren_kube::kube::runtime::finalizer::Error::ApplyFailed(e)
        | warren_kube::kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        warren_kube::kube::runtime::finalizer::Error::AddFinalizer(e)
        | warren_kube::kube::runtime::finalizer::Error::RemoveFinalizer(e) => OpError::Kube(e),
        other => OpError::Service(ApiError::Internal(other.to_string())),
    })
}

/// The sandbox a resource is, once it has one.
fn sandbox_of(res: &Sandbox) -> Option<SandboxId> {
    let status = res.status.as_ref().map(|s| s.sandbox_id.as_str());
    status
        .filter(|s| !s.is_empty())
        .or_else(|| {
            res.labels()
                .get(warren_kube::objects::SANDBOX_LABEL)
                .map(String::as_str)
        })
        .and_then(|id| id.parse().ok())
}

/// The team whose namespace `ns` is.
async fn team_of(ctx: &Ctx, ns: &str) -> Result<Option<String>, OpError> {
    let mut teams: Vec<String> = ctx
        .service
        .store()
        .list_teams()
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|t| t.name)
        .collect();
    teams.push(warren_api::DEFAULT_TEAM.to_owned());
    Ok(teams
        .into_iter()
        .find(|t| warren_kube::objects::namespace_of(&ctx.cfg, t) == ns))
}

/// What the sandbox a resource names is to it.
enum Found {
    /// A sandbox of the namespace's team.
    Mine(Box<warren_api::Sandbox>),
    /// No such sandbox (any more).
    Gone,
    /// Another team's: a resource only ever acts on its own namespace's sandboxes, whatever
    /// labels someone wrote on it.
    Foreign,
}

async fn found(ctx: &Ctx, ns: &str, id: &SandboxId) -> Result<Found, OpError> {
    match ctx.service.sandboxes().get(id).await {
        Ok(s) if s.state == SandboxState::Deleted => Ok(Found::Gone),
        Ok(s) if warren_kube::objects::namespace_of(&ctx.cfg, &s.team) != ns => Ok(Found::Foreign),
        Ok(s) => Ok(Found::Mine(Box::new(s))),
        Err(ApiError::NotFound(_)) => Ok(Found::Gone),
        Err(e) => Err(e.into()),
    }
}

async fn apply(res: &Sandbox, ctx: &Ctx) -> Result<Action, OpError> {
    let ns = res.namespace().unwrap_or_default();
    let name = res.name_any();
    let id = match sandbox_of(res) {
        Some(id) => id,
        None => return create(res, ctx, &ns, &name).await,
    };
    let sandbox = match found(ctx, &ns, &id).await? {
        Found::Mine(s) => *s,
        Found::Gone => {
            // Deleted through the API (or expired): the resource goes too.
            let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
            match api.delete(&name, &Default::default()).await {
                Ok(_) | Err(warren_kube::kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::await_change());
        }
        Found::Foreign => {
            let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
            let why = format!("sandbox {id} is no sandbox of namespace {ns}'s team");
            refuse(res, ctx, &api, "NotThisTeams", &why).await?;
            return Ok(Action::await_change());
        }
    };
    // Another live server's sandbox is that server's to act on (its log tailer, its agent
    // connections): the resource waits, saying so.
    if let Some(owner) = owned_elsewhere(ctx, &sandbox).await? {
        let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
        let why = format!("sandbox {id} runs under server {owner}, not the operator's");
        refuse(res, ctx, &api, "OwnedElsewhere", &why).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let generation = res.metadata.generation;
    let mut observed = res.status.as_ref().and_then(|s| s.observed_generation);
    let sandbox = if generation != observed {
        let sandbox = carry_out(res, ctx, &id, sandbox).await?;
        // Only once the asked-for state is reached (a stop asked for while the sandbox was
        // still starting is carried out when it runs).
        if reached(res, &sandbox) {
            observed = generation;
        }
        sandbox
    } else {
        sandbox
    };
    own_pod(res, ctx, &ns, &id).await;
    let status = super::status::status_of(res, &sandbox, observed);
    if res.status.as_ref() != Some(&status) {
        let was = res.status.as_ref().map(super::status::ready_reason);
        let now = super::status::ready_reason(&status);
        let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": status});
        api.patch_status(&name, &patch_params(), &Patch::Merge(&patch))
            .await?;
        if was != Some(now.clone()) {
            let kind = if now.1 == "PodFailed" {
                EventType::Warning
            } else {
                EventType::Normal
            };
            publish(
                ctx,
                res,
                kind,
                &now.1,
                "Reconcile",
                &super::status::note(&sandbox),
            )
            .await;
        }
    }
    let settled = matches!(
        sandbox.state,
        SandboxState::Running | SandboxState::Stopped | SandboxState::Failed | SandboxState::Paused
    ) && observed == generation;
    Ok(Action::requeue(if settled {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(2)
    }))
}

/// Makes the sandbox of a resource made with `kubectl`: once, whatever happens in between
/// (the create's idempotency key is the resource's uid).
async fn create(res: &Sandbox, ctx: &Ctx, ns: &str, name: &str) -> Result<Action, OpError> {
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), ns);
    let Some(team) = team_of(ctx, ns).await? else {
        let why = format!(
            "namespace {ns} is no Warren team's: a team's sandboxes are in {}<team>",
            ctx.cfg.namespace_prefix
        );
        refuse(res, ctx, &api, "NoTeam", &why).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    let req = match warren_kube::resource::request_of(&ctx.cfg, name, &res.spec, chrono::Utc::now())
    {
        Ok(req) => req,
        Err(why) => {
            refuse(res, ctx, &api, "InvalidSpec", &why).await?;
            return Ok(Action::await_change());
        }
    };
    let key = format!("kube/{}", res.uid().unwrap_or_default());
    let made = match ctx.service.create_once(&key, req, None, &team).await {
        Ok(s) => s,
        Err(e @ (ApiError::Internal(_) | ApiError::BadGateway(_))) => return Err(e.into()),
        Err(e) => {
            refuse(res, ctx, &api, "CreateRefused", &e.to_string()).await?;
            return Ok(Action::await_change());
        }
    };
    let patch = serde_json::json!({"metadata": {
        "labels": warren_kube::crd::resource_labels(made.id.as_str()),
    }});
    api.patch(name, &patch_params(), &Patch::Merge(&patch))
        .await?;
    publish(
        ctx,
        res,
        EventType::Normal,
        "Created",
        "Create",
        &format!("sandbox {} made for team {team}", made.id),
    )
    .await;
    // The label's change brings the resource back, with its sandbox.
    Ok(Action::await_change())
}

/// Says on a resource why it has no sandbox.
async fn refuse(
    res: &Sandbox,
    ctx: &Ctx,
    api: &Api<Sandbox>,
    reason: &str,
    why: &str,
) -> Result<(), OpError> {
    let status = super::status::refused(res, reason, why);
    if res.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({"status": status});
    api.patch_status(&res.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    publish(ctx, res, EventType::Warning, reason, "Create", why).await;
    Ok(())
}

/// Whether the sandbox is as the resource's `replicas` asks, or can never be.
fn reached(res: &Sandbox, s: &warren_api::Sandbox) -> bool {
    let want_running = res.spec.replicas.unwrap_or(1) != 0;
    match s.state {
        SandboxState::Running => want_running,
        SandboxState::Stopped => !want_running,
        SandboxState::Failed | SandboxState::Deleted | SandboxState::Paused => true,
        _ => false,
    }
}

/// The live server other than this one whose sandbox `s` is, if it is one.
async fn owned_elsewhere(ctx: &Ctx, s: &warren_api::Sandbox) -> Result<Option<String>, OpError> {
    let elsewhere = ctx.service.elsewhere(&s.server).await?;
    Ok(elsewhere.map(|_| s.server.clone()))
}

/// Carries out a new generation's `replicas` and `shutdownTime`.
async fn carry_out(
    res: &Sandbox,
    ctx: &Ctx,
    id: &SandboxId,
    mut sandbox: warren_api::Sandbox,
) -> Result<warren_api::Sandbox, OpError> {
    let sandboxes = ctx.service.sandboxes();
    let want_running = res.spec.replicas.unwrap_or(1) != 0;
    match (want_running, sandbox.state) {
        (false, SandboxState::Running) => sandbox = sandboxes.stop(id).await?,
        (true, SandboxState::Stopped) => sandbox = sandboxes.start(id).await?,
        _ => {}
    }
    let want = match &res.spec.shutdown_time {
        None => None,
        Some(at) => chrono::DateTime::parse_from_rfc3339(at)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc)),
    };
    if want != sandbox.expires_at {
        let secs = want.map_or(0, |t| (t - chrono::Utc::now()).num_seconds().max(1) as u64);
        sandbox = sandboxes.set_timeout(id, secs).await?;
    }
    Ok(sandbox)
}

/// Makes the resource the owner of its sandbox's Pod (each start makes a new Pod), so
/// `kubectl get pods` says whose it is; a Pod not there yet is left for the next pass.
async fn own_pod(res: &Sandbox, ctx: &Ctx, ns: &str, id: &SandboxId) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let name = warren_kube::objects::pod_name(id.as_str());
    let Ok(Some(pod)) = pods.get_opt(&name).await else {
        return;
    };
    let uid = res.uid().unwrap_or_default();
    if pod.owner_references().iter().any(|o| o.uid == uid) {
        return;
    }
    let Some(owner) = res.controller_owner_ref(&()) else {
        return;
    };
    let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
    if let Err(e) = pods
        .patch(&name, &patch_params(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(sandbox = %id, "operator: owning Pod {name}: {e}");
    }
}

/// The sandbox of the resource's team made for it (by its name), if any.
async fn made_for(res: &Sandbox, ctx: &Ctx, ns: &str) -> Result<Option<SandboxId>, OpError> {
    let Some(team) = team_of(ctx, ns).await? else {
        return Ok(None);
    };
    let mine = [(
        warren_kube::crd::RESOURCE_METADATA.to_owned(),
        res.name_any(),
    )];
    let made = ctx.service.sandboxes().list(&team, None, &mine).await?;
    Ok(made
        .into_iter()
        .find(|s| s.state != SandboxState::Deleted)
        .map(|s| s.id))
}

/// A resource deleted: its sandbox goes first.
async fn cleanup(res: &Sandbox, ctx: &Ctx) -> Result<Action, OpError> {
    let ns = res.namespace().unwrap_or_default();
    let id = match sandbox_of(res) {
        Some(id) => id,
        // Made, but deleted before its label was written: found by what it was made for.
        None => match made_for(res, ctx, &ns).await? {
            Some(id) => id,
            None => return Ok(Action::await_change()),
        },
    };
    let sandbox = match found(ctx, &ns, &id).await? {
        Found::Mine(s) => s,
        Found::Gone | Found::Foreign => return Ok(Action::await_change()),
    };
    if let Some(owner) = owned_elsewhere(ctx, &sandbox).await? {
        let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
        let why = format!("sandbox {id} runs under server {owner}: delete it there");
        refuse(res, ctx, &api, "OwnedElsewhere", &why).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    match ctx.service.sandboxes().delete(&id).await {
        Ok(()) | Err(ApiError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    publish(
        ctx,
        res,
        EventType::Normal,
        "Deleted",
        "Delete",
        &format!("sandbox {id} deleted"),
    )
    .await;
    Ok(Action::await_change())
}

async fn publish(
    ctx: &Ctx,
    res: &Sandbox,
    kind: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_: kind,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &res.object_ref(&())).await {
        tracing::debug!("operator: an event on {}: {e}", res.name_any());
    }
}

/// The operator's patches, under its own field manager.
pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..Default::default()
    }
}
