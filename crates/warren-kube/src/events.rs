//! What the cluster last said about a Pod, from its Events: why it was evicted, killed or
//! never ran, in the words of the component that did it.
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::Api;

/// Reasons that tell why a Pod went (the kubelet's and controllers' words), most telling first
/// among events of one time.
const TELLING: [&str; 6] = [
    "TaintManagerEviction",
    "Evicted",
    "NodeNotReady",
    "Preempting",
    "Killing",
    "OOMKilling",
];

/// `reason: message` of the newest telling (or warning) event about Pod `name`.
pub(crate) async fn last_word(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=Pod,involvedObject.name={name}"
    ));
    let list = events.list(&lp).await.ok()?;
    list.items
        .into_iter()
        .filter(|e| {
            TELLING.contains(&e.reason.as_deref().unwrap_or(""))
                || e.type_.as_deref() == Some("Warning")
        })
        .max_by_key(|e| {
            let at = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let rank = TELLING
                .iter()
                .position(|r| Some(*r) == e.reason.as_deref())
                .map_or(0, |i| TELLING.len() - i);
            (at, rank)
        })
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default().trim()
            )
        })
}
