//! What a Pod's status says of a sandbox starting: running at an address, or never going to
//! (and why), or not yet.
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// How long a Pod may stay unschedulable (no node has room now) before its create fails:
/// room a deleted sandbox frees comes within it.
pub(crate) const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(10);

/// Why a Pod will not run, if it will not: a failed phase, an init container that failed, a
/// container stuck on its image or its configuration; or, `true` beside it, no node with room
/// for it now (which may change).
pub(crate) fn failure(pod: &Pod) -> Option<(String, bool)> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        let why = status.message.clone();
        return Some((why.unwrap_or_else(|| "the pod failed".into()), false));
    }
    // No node has room (or none fits): said at once rather than after the start timeout.
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(c) = unschedulable {
        let why = c.message.as_deref().unwrap_or("unschedulable");
        return Some((format!("no node can run it: {why}"), true));
    }
    let stuck = [
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    ];
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in all {
        let state = c.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            if stuck.contains(&w.reason.as_deref().unwrap_or("")) {
                let why = format!(
                    "container {}: {}: {}",
                    c.name,
                    w.reason.as_deref().unwrap_or(""),
                    w.message.as_deref().unwrap_or("")
                );
                return Some((why, false));
            }
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            if t.exit_code != 0 {
                let why = format!(
                    "container {} exited {}: {}",
                    c.name,
                    t.exit_code,
                    t.message.as_deref().or(t.reason.as_deref()).unwrap_or("")
                );
                return Some((why, false));
            }
        }
    }
    None
}

/// Whether waiting for `pod` (made at `began`) is over without it running.
pub(crate) fn gives_up(pod: &Pod, began: Instant) -> bool {
    failure(pod).is_some_and(|(_, for_now)| !for_now || began.elapsed() >= UNSCHEDULABLE_GRACE)
}

/// The Pod's address once it runs.
pub(crate) fn running_ip(pod: &Pod) -> Option<Ipv4Addr> {
    let status = pod.status.as_ref()?;
    (status.phase.as_deref() == Some("Running"))
        .then(|| status.pod_ip.as_deref()?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status}))
            .expect("a pod")
    }

    #[test]
    fn a_pod_that_cannot_run_says_why_and_a_running_one_has_its_address() {
        let unschedulable = pod(serde_json::json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu."}]}));
        let (why, for_now) = failure(&unschedulable).expect("a failure");
        assert!(why.contains("Insufficient cpu") && for_now, "{why}");
        assert!(!gives_up(&unschedulable, Instant::now()));
        assert!(gives_up(
            &unschedulable,
            Instant::now() - UNSCHEDULABLE_GRACE
        ));
        let pull = pod(
            serde_json::json!({"phase": "Pending", "containerStatuses": [{
            "name": "sandbox", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}),
        );
        assert!(failure(&pull).is_some_and(|(w, now)| w.contains("ImagePullBackOff") && !now));
        assert!(gives_up(&pull, Instant::now()));
        let init = pod(
            serde_json::json!({"phase": "Pending", "initContainerStatuses": [{
            "name": "warren-agent", "image": "a", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        );
        assert!(failure(&init).is_some_and(|(w, _)| w.contains("warren-agent exited 1")));
        let pending = pod(serde_json::json!({"phase": "Pending"}));
        assert_eq!((failure(&pending), running_ip(&pending)), (None, None));
        let running = pod(serde_json::json!({"phase": "Running", "podIP": "10.244.0.12"}));
        assert_eq!(failure(&running), None);
        assert_eq!(running_ip(&running), Some(Ipv4Addr::new(10, 244, 0, 12)));
    }
}
