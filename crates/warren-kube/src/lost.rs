//! A sandbox on a node that stopped reporting. The cluster evicts such a Pod after its
//! toleration (`--kube-node-lost-after`), but not when every node of a zone stopped reporting
//! (it then suspects itself, and evicts nothing: a one-node cluster is always so). Warren asks
//! the agent itself: a Pod on a node silent for longer than the toleration whose agent does
//! not answer either is lost; one whose agent answers runs on (only its kubelet is gone).
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;

use crate::objects;
use crate::pod_state::{failure, running_ip};
use crate::KubeBackend;

/// How long the agent has to accept a connection.
const KNOCK: Duration = Duration::from_secs(2);

/// Why the Pod's node is lost to it (its Ready condition not True for longer than `after`),
/// if it is.
pub(crate) async fn silent_node(
    client: &kube::Client,
    pod: &Pod,
    after: Duration,
) -> Option<String> {
    let name = pod.spec.as_ref()?.node_name.clone()?;
    let node = match Api::<Node>::all(client.clone()).get_opt(&name).await {
        Ok(node) => node?,
        Err(e) => {
            tracing::warn!("reading node {name}: {e}");
            return None;
        }
    };
    let ready = node
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    if ready.status == "True" {
        return None;
    }
    let since = ready.last_transition_time?.0;
    let silent = jiff::Timestamp::now().duration_since(since);
    let after = jiff::SignedDuration::try_from(after).ok()?;
    (silent > after).then(|| {
        format!(
            "its node {name} has not been ready since {since} ({}: {})",
            ready.reason.unwrap_or_default(),
            ready.message.unwrap_or_default()
        )
    })
}

/// Whether the agent at `ip` takes a connection (and so its Pod still runs).
pub(crate) async fn agent_answers(ip: Ipv4Addr) -> bool {
    let addr = SocketAddr::from((ip, warren_backend::AGENT_PORT));
    matches!(
        tokio::time::timeout(KNOCK, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Why a running Pod is lost, if it is: the cluster marked it not ready, its node has not
/// reported for longer than the toleration, and its agent does not answer.
pub(crate) async fn lost(backend: &KubeBackend, pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let unready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status != "True");
    let ip = running_ip(pod)?;
    if !unready {
        return None;
    }
    let node = silent_node(&backend.client, pod, backend.cfg.node_lost_after).await?;
    (!agent_answers(ip).await).then_some(node)
}

/// What [`Backend::why_gone`](warren_backend::Backend::why_gone) says of sandbox `id`: its
/// Pod deleted, failed or lost, with the cluster's last telling event about it.
pub(crate) async fn why_gone(backend: &KubeBackend, id: &str) -> Option<String> {
    let ns = backend.namespace_of_id(id).await.ok().flatten()?;
    let name = objects::pod_name(id);
    let pods: Api<Pod> = Api::namespaced(backend.client.clone(), &ns);
    let pod = pods.get_opt(&name).await.ok()?;
    let mut why = match &pod {
        None => format!("its Pod {ns}/{name} is gone (deleted outside Warren, or evicted)"),
        Some(p) if p.metadata.deletion_timestamp.is_some() => {
            format!("its Pod {ns}/{name} is being deleted (not by Warren)")
        }
        Some(p) => match (failure(p), lost(backend, p).await) {
            (Some((failed, _)), _) => format!("its Pod {ns}/{name} failed: {failed}"),
            (None, Some(node)) => {
                format!("lost: {node}, and the agent of its Pod {ns}/{name} does not answer")
            }
            (None, None) => format!("its Pod {ns}/{name} is not running"),
        },
    };
    if let Some(event) = crate::events::last_word(&backend.client, &ns, &name).await {
        why.push_str("; ");
        why.push_str(&event);
    }
    Some(why)
}
