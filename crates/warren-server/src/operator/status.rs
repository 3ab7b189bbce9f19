//! A `Sandbox` resource's status, from its sandbox: agent-sandbox's conditions (`Ready`,
//! `Suspended`, `Finished`) and Warren's `sandboxID` and `state`.
use warren_api::SandboxState;
use warren_kube::crd::{drop_condition, set_condition, Condition, Sandbox, SandboxResourceStatus};

pub(crate) fn condition(
    type_: &str,
    on: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if on { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        observed_generation: generation,
    }
}

/// What a sandbox's state says, for conditions and events.
pub(crate) fn note(s: &warren_api::Sandbox) -> String {
    match &s.error {
        Some(e) => format!("sandbox {} is {}: {e}", s.id, s.state),
        None => format!("sandbox {} is {}", s.id, s.state),
    }
}

/// The status of a resource whose sandbox is `s`, the resource's `generation` carried out.
pub(crate) fn status_of(
    res: &Sandbox,
    s: &warren_api::Sandbox,
    generation: Option<i64>,
) -> SandboxResourceStatus {
    let mut conditions = res
        .status
        .as_ref()
        .map(|st| st.conditions.clone())
        .unwrap_or_default();
    let expired = s.state == SandboxState::Stopped
        && res
            .spec
            .shutdown_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t <= chrono::Utc::now());
    let (ready, reason) = match s.state {
        SandboxState::Running => (true, "DependenciesReady"),
        SandboxState::Stopped if expired => (false, "SandboxExpired"),
        SandboxState::Stopped => (false, "SandboxSuspended"),
        SandboxState::Paused => (false, "SandboxPaused"),
        SandboxState::Failed => (false, "PodFailed"),
        _ => (false, "DependenciesNotReady"),
    };
    let message = note(s);
    set_condition(
        &mut conditions,
        condition("Ready", ready, reason, &message, generation),
    );
    match s.state {
        SandboxState::Stopped => set_condition(
            &mut conditions,
            condition("Suspended", true, "PodTerminated", &message, generation),
        ),
        SandboxState::Stopping => set_condition(
            &mut conditions,
            condition("Suspended", false, "PodNotTerminated", &message, generation),
        ),
        _ => drop_condition(&mut conditions, "Suspended"),
    }
    if s.state == SandboxState::Failed {
        set_condition(
            &mut conditions,
            condition("Finished", true, "PodFailed", &message, generation),
        );
    } else {
        drop_condition(&mut conditions, "Finished");
    }
    let running = s.state == SandboxState::Running;
    SandboxResourceStatus {
        conditions,
        replicas: i32::from(running),
        label_selector: format!("{}={}", warren_kube::objects::SANDBOX_LABEL, s.id),
        pod_ips: s.ip.iter().filter(|_| running).cloned().collect(),
        sandbox_id: s.id.to_string(),
        state: s.state.to_string(),
        observed_generation: generation,
    }
}

/// The status of a resource that has no sandbox and will not get one as it is.
pub(crate) fn refused(res: &Sandbox, reason: &str, why: &str) -> SandboxResourceStatus {
    let mut status = res.status.clone().unwrap_or_default();
    let generation = res.metadata.generation;
    set_condition(
        &mut status.conditions,
        condition("Ready", false, reason, why, generation),
    );
    status.observed_generation = generation;
    status
}

/// The `Ready` condition's status and reason, to tell a change worth an event.
pub(crate) fn ready_reason(status: &SandboxResourceStatus) -> (String, String) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}
