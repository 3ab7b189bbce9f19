//! Warren's Kubernetes backend: each sandbox is a Pod in its team's namespace, under the
//! runtime class of its runtime (`gvisor` by default, `runc`), with Warren's agent as PID 1
//! (put into a volume by an init container of the agent's own image, never baked into the
//! user's), its limits as the Pod's resources, its agent token in a Secret, its egress policy
//! as a NetworkPolicy. The server reaches the agent on the Pod's IP, as it does a local
//! sandbox's address.
#![deny(missing_docs)]

mod backend;
pub mod crd;
pub mod crd_ext;
mod events;
pub mod keep;
mod logs;
mod lost;
pub mod objects;
mod pod_state;
pub mod policy;
pub mod resource;

pub use k8s_openapi;
pub use kube;
pub use kube_lease_manager;

use std::collections::HashMap;
use std::sync::Mutex;

use ipnet::Ipv4Net;

/// How the backend reaches and uses the cluster.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// The kubeconfig file; `None`: the in-cluster service account, else `KUBECONFIG` or
    /// `~/.kube/config`.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The image holding the agent (`/warren-agent`).
    pub agent_image: String,
    /// How the agent gets into a sandbox's Pod.
    pub agent_mount: AgentMount,
    /// Prefix of the per-team namespaces (`warren-` → `warren-<team>`).
    pub namespace_prefix: String,
    /// Runtime class of gVisor sandboxes.
    pub gvisor_class: Option<String>,
    /// Runtime class of runc sandboxes (`None`: the cluster's default runtime).
    pub runc_class: Option<String>,
    /// Networks no sandbox may reach whatever its policy (the cluster's pod and service
    /// networks, the nodes', metadata addresses).
    pub blocked: Vec<Ipv4Net>,
    /// The share of a sandbox's CPU limit its Pod requests (1: as much as it is limited to;
    /// less lets more sandboxes share a node's CPUs, overcommitted). Memory is always
    /// requested in full: overcommitted memory is taken back by killing.
    pub cpu_request_share: f64,
    /// How long a Pod may take to run (image pulls included).
    pub start_timeout: std::time::Duration,
    /// How long a sandbox's Pod stays bound to a node that stopped reporting (not ready or
    /// unreachable) before it is evicted and the sandbox fails.
    pub node_lost_after: std::time::Duration,
    /// Directories kept across stop and start on a claim of the sandbox's (none: nothing is).
    pub keep_paths: Vec<String>,
    /// The storage class of those claims (`None`: the cluster's default).
    pub storage_class: Option<String>,
    /// The server's name (`--server-name`), on each of its Pods: servers sharing a cluster
    /// tell their sandboxes apart by it.
    pub server: String,
    /// Whether this server takes part in electing the operator of `Sandbox` resources.
    pub operator: bool,
    /// Where the operator's Lease is (`None`: the client's namespace, in a Pod its own).
    pub lease_namespace: Option<String>,
}

impl KubeConfig {
    #[cfg(test)]
    fn for_tests() -> KubeConfig {
        KubeConfig {
            kubeconfig: None,
            agent_image: "127.0.0.1:5100/warren-agent:test".into(),
            agent_mount: AgentMount::InitContainer,
            namespace_prefix: "warren-".into(),
            gvisor_class: Some("gvisor".into()),
            runc_class: Some("runc".into()),
            blocked: Vec::new(),
            cpu_request_share: 1.0,
            start_timeout: std::time::Duration::from_secs(60),
            node_lost_after: std::time::Duration::from_secs(30),
            keep_paths: Vec::new(),
            storage_class: None,
            server: "-srv-1-".into(),
            operator: false,
            lease_namespace: None,
        }
    }
}

/// How the agent gets into a sandbox's Pod, from the agent image (never the user's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMount {
    /// An init container of the agent image copies it into an `emptyDir`: any cluster.
    InitContainer,
    /// The agent image mounted read-only as an image volume: no init container to wait for
    /// (Kubernetes 1.33+ with the `ImageVolume` feature gate, containerd 2.1+: the API calls
    /// image volumes `noexec`, which containerd does not enforce).
    ImageVolume,
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig (or in-cluster configuration) could not be read.
    #[error("Kubernetes configuration: {0}")]
    Config(String),
    /// The API server did not answer.
    #[error("the Kubernetes API server: {0}")]
    Api(#[from] kube::Error),
}

/// Runs sandboxes as Pods.
pub struct KubeBackend {
    client: kube::Client,
    cfg: KubeConfig,
    /// Sandbox id → its namespace, for the sandboxes this server has seen.
    namespaces: Mutex<HashMap<String, String>>,
}

impl KubeBackend {
    /// Connects to the cluster and checks that it answers.
    pub async fn connect(cfg: KubeConfig) -> Result<KubeBackend, KubeError> {
        // The client's TLS takes the process's default provider, and the dependency tree
        // enables two (ring, aws-lc-rs), so none is chosen by itself: ring, as the server's
        // own TLS. A provider installed before stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = match &cfg.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| KubeError::Config(e.to_string()))?,
        };
        let client = kube::Client::try_from(config)?;
        client.apiserver_version().await?;
        let mut cfg = cfg;
        let (found, pod_ranges) = cluster_networks(&client).await;
        if !pod_ranges && cfg.blocked.len() <= 1 {
            tracing::warn!(
                "no node names its pod range (spec.podCIDRs): name the pod network with \
                 --kube-blocked-cidr, or sandboxes allowed egress reach other Pods"
            );
        }
        for net in found {
            if !cfg.blocked.iter().any(|b| b.contains(&net)) {
                cfg.blocked.push(net);
            }
        }
        Ok(KubeBackend {
            client,
            cfg,
            namespaces: Mutex::new(HashMap::new()),
        })
    }

    /// The client, for the operator and tests.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Its configuration, with the cluster's networks found at start among `blocked`.
    pub fn config(&self) -> &KubeConfig {
        &self.cfg
    }
}

/// The cluster's own networks, which no sandbox may reach: its nodes' pod ranges and
/// addresses, and its service ranges (ServiceCIDR objects); and whether any node named its
/// pod range. What cannot be read is left out.
async fn cluster_networks(client: &kube::Client) -> (Vec<Ipv4Net>, bool) {
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::networking::v1::ServiceCIDR;
    let mut nets = Vec::new();
    let mut pod_ranges = false;
    let lp = kube::api::ListParams::default();
    match kube::Api::<Node>::all(client.clone()).list(&lp).await {
        Ok(nodes) => {
            for node in nodes.items {
                let spec = node.spec.unwrap_or_default();
                let ranges: Vec<String> = spec
                    .pod_cidrs
                    .into_iter()
                    .flatten()
                    .chain(spec.pod_cidr)
                    .collect();
                pod_ranges |= !ranges.is_empty();
                nets.extend(ranges);
                let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
                nets.extend(
                    addresses
                        .into_iter()
                        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                        .map(|a| format!("{}/32", a.address)),
                );
            }
        }
        Err(e) => tracing::warn!("reading the cluster's nodes: {e}"),
    }
    match kube::Api::<ServiceCIDR>::all(client.clone())
        .list(&lp)
        .await
    {
        Ok(cidrs) => nets.extend(
            cidrs
                .items
                .into_iter()
                .flat_map(|c| c.spec.and_then(|s| s.cidrs).unwrap_or_default()),
        ),
        Err(e) => tracing::warn!("reading the cluster's service ranges: {e}"),
    }
    let mut out: Vec<Ipv4Net> = nets.iter().filter_map(|n| n.parse().ok()).collect();
    out.sort();
    out.dedup();
    (out, pod_ranges)
}

/// A mutex's guard, also after a panic while it was held.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
