//! `warren serve`'s Kubernetes backend flags.
use std::path::PathBuf;

use anyhow::Context;

/// Where sandboxes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// On this host, under runsc or crun.
    Local,
    /// As Pods on a Kubernetes cluster.
    Kubernetes,
}

/// `--kube-agent-mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentMountArg {
    /// An init container copies the agent in.
    InitContainer,
    /// The agent image is mounted as an image volume.
    ImageVolume,
}

/// The flags of `--backend kubernetes`.
#[derive(Debug, clap::Args)]
pub struct KubeArgs {
    /// Where sandboxes run: on this host (local) or as Pods on a Kubernetes cluster
    /// (kubernetes; see the --kube-* flags and README's "Warren on Kubernetes").
    #[arg(long, env = "WARREN_BACKEND", value_enum, default_value_t = BackendKind::Local)]
    backend: BackendKind,
    /// The kubeconfig to reach the cluster by [default: in a Pod, its service account; else
    /// KUBECONFIG or ~/.kube/config].
    #[arg(long, env = "WARREN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The image holding Warren's agent at /warren-agent (see `warren agent-image`), which
    /// each sandbox Pod's init container copies in. Required with --backend kubernetes.
    #[arg(long, env = "WARREN_KUBE_AGENT_IMAGE")]
    kube_agent_image: Option<String>,
    /// How the agent gets into a sandbox's Pod: init-container (an init container of the
    /// agent image copies it in; any cluster) or image-volume (the agent image mounted
    /// read-only: no init container to wait for; Kubernetes 1.33+ with the ImageVolume
    /// feature gate).
    #[arg(long, env = "WARREN_KUBE_AGENT_MOUNT", value_enum, default_value_t = AgentMountArg::InitContainer)]
    kube_agent_mount: AgentMountArg,
    /// Prefix of the namespace each team's sandboxes run in (PREFIX + team name).
    #[arg(long, env = "WARREN_KUBE_NAMESPACE_PREFIX", default_value = "warren-")]
    kube_namespace_prefix: String,
    /// The RuntimeClass of gVisor sandboxes (handler runsc).
    #[arg(long, env = "WARREN_KUBE_GVISOR_CLASS", default_value = "gvisor")]
    kube_gvisor_class: String,
    /// The RuntimeClass of runc sandboxes [default: none, the nodes' default runtime].
    #[arg(long, env = "WARREN_KUBE_RUNC_CLASS")]
    kube_runc_class: Option<String>,
    /// Networks no sandbox may reach whatever its egress policy, as NetworkPolicy exceptions:
    /// the cluster's pod, service and node networks (repeat, or comma-separate). Link-local
    /// metadata addresses (169.254.0.0/16) always are.
    #[arg(
        long = "kube-blocked-cidr",
        env = "WARREN_KUBE_BLOCKED_CIDR",
        value_delimiter = ','
    )]
    kube_blocked_cidr: Vec<ipnet::Ipv4Net>,
    /// The share of a sandbox's CPU limit its Pod requests, from 0.001 to 1 (1: as much as
    /// it is limited to; 0.25 lets a node's CPUs be promised four times over). Memory and
    /// disk are always requested in full.
    #[arg(long, env = "WARREN_KUBE_CPU_REQUEST", default_value_t = 1.0, value_parser = cpu_share)]
    kube_cpu_request: f64,
    /// How long a sandbox's Pod may take to run, image pulls included, e.g. 2m.
    #[arg(long, env = "WARREN_KUBE_START_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    kube_start_timeout: std::time::Duration,
    /// How long a sandbox's Pod stays on a node that stopped reporting (not ready or
    /// unreachable) before it is evicted and the sandbox reported failed, e.g. 30s (the
    /// cluster's default for Pods is 5m).
    #[arg(long, env = "WARREN_KUBE_NODE_LOST_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    kube_node_lost_after: std::time::Duration,
    /// Directories of each sandbox kept across stop and start (a stop deletes its Pod): they
    /// live on a PersistentVolumeClaim of the sandbox's, seeded from the image at its first
    /// start, deleted with it (repeat, or comma-separate; "" keeps nothing, and makes no claim).
    #[arg(
        long = "kube-keep-path",
        env = "WARREN_KUBE_KEEP_PATHS",
        value_delimiter = ',',
        default_value = "/root,/home"
    )]
    kube_keep_paths: Vec<String>,
    /// The StorageClass of those claims [default: the cluster's default class].
    #[arg(long, env = "WARREN_KUBE_STORAGE_CLASS")]
    kube_storage_class: Option<String>,
    /// Whether this server takes part in running the operator of Sandbox resources
    /// (agents.x-k8s.io/v1alpha1; one server of those sharing the cluster at a time, elected
    /// by a Lease). It installs the resource's definition unless the cluster has it.
    #[arg(long, env = "WARREN_KUBE_OPERATOR", default_value_t = true, action = clap::ArgAction::Set)]
    kube_operator: bool,
    /// The namespace of the operator's Lease (warren-operator) [default: the server's own
    /// in a Pod, else the kubeconfig's].
    #[arg(long, env = "WARREN_KUBE_LEASE_NAMESPACE")]
    kube_lease_namespace: Option<String>,
}

impl KubeArgs {
    /// The Kubernetes backend's configuration, with `--backend kubernetes`.
    pub fn config(self) -> anyhow::Result<Option<warren_kube::KubeConfig>> {
        if self.backend == BackendKind::Local {
            return Ok(None);
        }
        let agent_image = self
            .kube_agent_image
            .context("--backend kubernetes needs --kube-agent-image (see `warren agent-image`)")?;
        let mut blocked = self.kube_blocked_cidr;
        let metadata: ipnet::Ipv4Net = "169.254.0.0/16".parse()?;
        if !blocked.contains(&metadata) {
            blocked.push(metadata);
        }
        Ok(Some(warren_kube::KubeConfig {
            kubeconfig: self.kubeconfig,
            agent_image,
            agent_mount: match self.kube_agent_mount {
                AgentMountArg::InitContainer => warren_kube::AgentMount::InitContainer,
                AgentMountArg::ImageVolume => warren_kube::AgentMount::ImageVolume,
            },
            namespace_prefix: self.kube_namespace_prefix,
            gvisor_class: Some(self.kube_gvisor_class),
            runc_class: self.kube_runc_class,
            blocked,
            cpu_request_share: self.kube_cpu_request,
            start_timeout: self.kube_start_timeout,
            node_lost_after: self.kube_node_lost_after,
            keep_paths: keep_paths(self.kube_keep_paths)?,
            storage_class: self.kube_storage_class,
            // The server's name, which the server sets.
            server: String::new(),
            operator: self.kube_operator,
            lease_namespace: self.kube_lease_namespace,
        }))
    }
}

fn cpu_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.001..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share from 0.001 to 1")),
    }
}

/// The kept directories: absolute, without `..`, none inside another (their mounts would
/// hide each other); empty entries dropped.
fn keep_paths(given: Vec<String>) -> anyhow::Result<Vec<String>> {
    let mut paths: Vec<String> = Vec::new();
    for p in given
        .iter()
        .map(|p| p.trim().trim_end_matches('/'))
        .filter(|p| !p.is_empty())
    {
        anyhow::ensure!(
            p.starts_with('/') && !p.split('/').any(|c| c == ".." || c == "."),
            "--kube-keep-path {p:?}: give an absolute path without . or .."
        );
        anyhow::ensure!(
            !p.contains(':'),
            "--kube-keep-path {p:?}: a path with ':' cannot be kept"
        );
        if let Some(other) = paths
            .iter()
            .find(|q| p.starts_with(&format!("{q}/")) || q.starts_with(&format!("{p}/")) || *q == p)
        {
            anyhow::bail!("--kube-keep-path {p:?} and {other:?}: one is inside the other");
        }
        paths.push(p.to_owned());
    }
    Ok(paths)
}

/// `warren kube` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KubeCommand {
    /// Print the CustomResourceDefinition of Warren's Sandbox resource
    /// (agents.x-k8s.io/v1alpha1, agent-sandbox's shape), to `kubectl apply -f -`. A server
    /// with the rights installs it by itself.
    Crds,
}

impl KubeCommand {
    /// Carries the subcommand out.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            KubeCommand::Crds => print!("{}", warren_kube::crd::definition_yaml()),
        }
        Ok(())
    }
}
