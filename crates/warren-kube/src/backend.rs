//! [`Backend`] for [`KubeBackend`]: sandboxes as Pods. What Kubernetes gives no way to do
//! yet here (pause, snapshots, forks, volumes, image builds from a sandbox) answers
//! [`BackendError::Unsupported`] with the reason.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, ResourceExt};
use warren_api::{PauseReceipt, Runtime};
use warren_backend::images::Imported;
use warren_backend::{
    Backend, BackendError, ContainerStatus, EgressPolicy, ForkFrom, Provisioned, SandboxSpec,
    Usage, VolumeBackup, AGENT_PORT,
};

use crate::objects::{self, MANAGED_BY, SANDBOX_LABEL, SERVER_LABEL, SLOT_LABEL};
use crate::pod_state::{failure, gives_up, running_ip};
use crate::policy;
use crate::KubeBackend;

/// The field manager Warren's server-side applies are made as.
const MANAGER: &str = "warren";

fn unsupported(what: &str) -> BackendError {
    BackendError::Unsupported(format!(
        "{what} is not supported on the Kubernetes backend yet"
    ))
}

fn api_error(step: &'static str) -> impl FnOnce(kube::Error) -> BackendError {
    move |e| BackendError::Step {
        step,
        message: e.to_string(),
    }
}

/// Whether `e` is the API server's 404.
fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// `<kind> <namespace>/<name>` of each object `api` lists with `lp` (none when it cannot).
async fn names_of<K>(api: Api<K>, lp: &ListParams, kind: &str) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list_metadata(lp).await {
        Ok(l) => l
            .items
            .iter()
            .map(|o| {
                format!(
                    "{kind} {}/{}",
                    o.namespace().unwrap_or_default(),
                    o.name_any()
                )
            })
            .collect(),
        Err(e) => vec![format!("{kind}s unknown: {e}")],
    }
}

impl KubeBackend {
    fn remember(&self, id: &str, ns: &str) {
        crate::lock(&self.namespaces).insert(id.to_owned(), ns.to_owned());
    }

    /// The namespace of sandbox `id`: remembered, or found by its objects' labels; `None`
    /// when nothing of it is left, an error when the cluster could not say.
    pub(crate) async fn namespace_of_id(&self, id: &str) -> Result<Option<String>, kube::Error> {
        if let Some(ns) = crate::lock(&self.namespaces).get(id).cloned() {
            return Ok(Some(ns));
        }
        let lp = ListParams::default().labels(&format!("{SANDBOX_LABEL}={id}"));
        let pods: Api<Pod> = Api::all(self.client.clone());
        let from_pod = pods.list_metadata(&lp).await?.items.into_iter().next();
        let found = match from_pod {
            Some(p) => p.namespace(),
            None => {
                let secrets: Api<Secret> = Api::all(self.client.clone());
                let s = secrets.list_metadata(&lp).await?.items.into_iter().next();
                match s.and_then(|s| s.namespace()) {
                    Some(ns) => Some(ns),
                    // Stopped: only its kept files' claim is left.
                    None => {
                        let claims: Api<PersistentVolumeClaim> = Api::all(self.client.clone());
                        let c = claims.list_metadata(&lp).await?.items.into_iter().next();
                        c.and_then(|c| c.namespace())
                    }
                }
            }
        };
        if let Some(ns) = &found {
            self.remember(id, ns);
        }
        Ok(found)
    }

    async fn ensure_namespace(&self, ns: &str) -> Result<(), BackendError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api
            .create(&PostParams::default(), &objects::namespace(ns))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(api_error("namespace")(e)),
        }
    }

    async fn apply_policy(
        &self,
        id: &str,
        ns: &str,
        egress: &EgressPolicy,
    ) -> Result<(), BackendError> {
        let np = policy::network_policy(id, ns, egress, &self.cfg.blocked)?;
        let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), ns);
        api.patch(
            &policy::policy_name(id),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&np),
        )
        .await
        .map_err(api_error("network policy"))?;
        Ok(())
    }

    /// Makes the sandbox's objects and waits for its Pod to run.
    async fn start_pod(&self, spec: &SandboxSpec) -> Result<Provisioned, BackendError> {
        let image = spec.image_ref.as_deref().ok_or_else(|| {
            BackendError::Invalid(
                "this image was imported or built on the server, not pulled from a registry: \
                 the Kubernetes backend runs images its nodes pull (push it to a registry, then \
                 pull it by that reference)"
                    .into(),
            )
        })?;
        let mut steps = Vec::new();
        let t = Instant::now();
        let ns = objects::namespace_of(&self.cfg, &spec.team);
        self.ensure_namespace(&ns).await?;
        self.remember(&spec.id, &ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret = objects::token_secret(&self.cfg, spec, &ns);
        secrets
            .patch(
                &objects::secret_name(&spec.id),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .map_err(api_error("secret"))?;
        // Before the Pod: it never runs without its policy.
        self.apply_policy(&spec.id, &ns, &spec.egress).await?;
        crate::keep::ensure(&self.client, &self.cfg, spec, &ns)
            .await
            .map_err(api_error("the claim of its kept files"))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let name = objects::pod_name(&spec.id);
        pods.create(
            &PostParams::default(),
            &objects::pod(&self.cfg, spec, image, &ns),
        )
        .await
        .map_err(api_error("pod"))?;
        steps.push(("objects", t.elapsed()));
        let t = Instant::now();
        let pod = loop {
            let settled = await_condition(pods.clone(), &name, move |p: Option<&Pod>| {
                p.is_none_or(|p| running_ip(p).is_some() || gives_up(p, t))
            });
            // Read again now and then: a pod left unschedulable may change nothing a watch
            // sees, and its grace runs out all the same.
            let waited = tokio::time::timeout(Duration::from_secs(2), settled).await;
            let settled = match waited {
                Ok(settled) => settled.map_err(|e| BackendError::Step {
                    step: "pod",
                    message: e.to_string(),
                })?,
                Err(_) if t.elapsed() >= self.cfg.start_timeout => {
                    let why = pods
                        .get_opt(&name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|p| failure(&p).map(|(why, _)| why))
                        .unwrap_or_default();
                    return Err(BackendError::Step {
                        step: "pod",
                        message: format!(
                            "the pod did not run within {:?} {why}",
                            self.cfg.start_timeout
                        ),
                    });
                }
                Err(_) => match pods.get_opt(&name).await {
                    Ok(Some(p)) if gives_up(&p, t) => Some(p),
                    Ok(None) => None,
                    _ => continue,
                },
            };
            break settled.ok_or_else(|| BackendError::Step {
                step: "pod",
                message: "the pod was deleted while it started".into(),
            })?;
        };
        if let Some((why, _)) = failure(&pod) {
            return Err(BackendError::Step {
                step: "pod",
                message: why,
            });
        }
        let ip = running_ip(&pod).ok_or_else(|| BackendError::Step {
            step: "pod",
            message: "the pod runs without an address".into(),
        })?;
        steps.push(("running", t.elapsed()));
        Ok(Provisioned {
            ip,
            agent_addr: SocketAddr::from((ip, AGENT_PORT)),
            steps,
        })
    }

    /// Deletes the sandbox's Pod and waits until the kubelet has stopped it; whether it is
    /// gone.
    async fn delete_pod(&self, ns: &str, id: &str, grace: Duration) -> bool {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let name = objects::pod_name(id);
        // Never 0: that removes the object at once while its containers may still run.
        let secs = u32::try_from(grace.as_secs()).unwrap_or(u32::MAX).max(1);
        let dp = DeleteParams {
            grace_period_seconds: Some(secs),
            ..Default::default()
        };
        let uid = match pods.delete(&name, &dp).await {
            Ok(either) => either.left().and_then(|p| p.uid()),
            Err(e) if not_found(&e) => return true,
            Err(e) => {
                tracing::warn!(sandbox = id, "deleting its pod: {e}");
                return false;
            }
        };
        let Some(uid) = uid else { return true };
        let gone = await_condition(pods, &name, conditions::is_deleted(&uid));
        let limit = Duration::from_secs(u64::from(secs) + 30);
        let done = tokio::time::timeout(limit, gone)
            .await
            .is_ok_and(|r| r.is_ok());
        if !done {
            tracing::warn!(sandbox = id, "its pod was not gone after {limit:?}");
        }
        done
    }
}

#[async_trait]
impl Backend for KubeBackend {
    fn store_changes(
        &self,
        _id: &str,
        _max_bytes: u64,
        _keep: &mut dyn FnMut(&Imported) -> Result<(), BackendError>,
    ) -> Result<Imported, BackendError> {
        Err(unsupported("building an image from a sandbox"))
    }

    fn pulls_images(&self) -> bool {
        true
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim_net_index(&self, used: &[u32]) -> Option<u32> {
        // Addresses are the pod network's; the slot only tells sandboxes apart.
        (1..u32::MAX).find(|i| !used.contains(i))
    }

    fn reserve_warm_lease(&self, _used: &[u32]) -> Option<u32> {
        None
    }

    async fn fill_warm_lease(&self, _index: u32) {}

    async fn setup_network(&self, _used: &[u32]) -> Result<(), BackendError> {
        Ok(())
    }

    async fn firewall_intact(&self) -> bool {
        true
    }

    async fn set_egress(&self, index: u32, egress: &EgressPolicy) -> Result<(), BackendError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!(
            "{}={},{SERVER_LABEL}={},{SLOT_LABEL}={index}",
            MANAGED_BY.0,
            MANAGED_BY.1,
            objects::server_label(&self.cfg.server)
        ));
        let found = pods
            .list_metadata(&lp)
            .await
            .map_err(api_error("network policy"))?;
        for pod in found.items {
            let (Some(ns), Some(id)) = (pod.namespace(), pod.labels().get(SANDBOX_LABEL).cloned())
            else {
                continue;
            };
            self.apply_policy(&id, &ns, egress).await?;
        }
        Ok(())
    }

    async fn refresh_egress_names(&self) -> usize {
        0
    }

    async fn provision(&self, spec: &SandboxSpec) -> Result<Provisioned, BackendError> {
        let made = self.start_pod(spec).await;
        if made.is_err() {
            self.release(&spec.id, spec.runtime, None).await;
        }
        made
    }

    async fn status(&self, id: &str, _runtime: Runtime) -> ContainerStatus {
        let ns = match self.namespace_of_id(id).await {
            Ok(Some(ns)) => ns,
            Ok(None) => return ContainerStatus::Missing,
            // Not knowing is not "gone": the reconciler must not fail a sandbox over a hiccup
            // of the API server.
            Err(e) => {
                tracing::warn!(sandbox = id, "finding its pod: {e}");
                return ContainerStatus::Running;
            }
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let pod = match pods.get_opt(&objects::pod_name(id)).await {
            Ok(Some(p)) => p,
            Ok(None) => return ContainerStatus::Missing,
            // Not knowing is not "gone": the reconciler must not fail a sandbox over a
            // hiccup of the API server.
            Err(e) => {
                tracing::warn!(sandbox = id, "reading its pod: {e}");
                return ContainerStatus::Running;
            }
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return ContainerStatus::Stopped;
        }
        if crate::lost::lost(self, &pod).await.is_some() {
            return ContainerStatus::Missing;
        }
        match pod.status.and_then(|s| s.phase).as_deref() {
            Some("Running") => ContainerStatus::Running,
            Some("Pending") => ContainerStatus::Created,
            _ => ContainerStatus::Stopped,
        }
    }

    async fn stop(&self, id: &str, _runtime: Runtime, grace: Duration) {
        match self.namespace_of_id(id).await {
            Ok(Some(ns)) => {
                self.delete_pod(&ns, id, grace).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(sandbox = id, "finding its pod to stop it: {e}"),
        }
    }

    async fn release(&self, id: &str, _runtime: Runtime, _net_index: Option<u32>) {
        let ns = match self.namespace_of_id(id).await {
            Ok(Some(ns)) => ns,
            Ok(None) => return,
            Err(e) => return tracing::warn!(sandbox = id, "finding its objects to remove: {e}"),
        };
        let gone = self.delete_pod(&ns, id, Duration::from_secs(1)).await;
        let dp = DeleteParams::default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = secrets.delete(&objects::secret_name(id), &dp).await {
            if !not_found(&e) {
                tracing::warn!(sandbox = id, "deleting its token secret: {e}");
            }
        }
        if !gone {
            // Its policy stays while anything of it may still run.
            return;
        }
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = policies.delete(&policy::policy_name(id), &dp).await {
            if !not_found(&e) {
                tracing::warn!(sandbox = id, "deleting its network policy: {e}");
            }
        }
        crate::lock(&self.namespaces).remove(id);
    }

    fn remove_files(&self, id: &str) {
        crate::keep::remove_blocking(self, id);
    }

    fn streams_logs(&self) -> bool {
        true
    }

    async fn log_lines(
        &self,
        id: &str,
        since_ns: Option<i64>,
    ) -> Result<warren_backend::LogLines, BackendError> {
        let ns = self
            .namespace_of_id(id)
            .await
            .map_err(|e| BackendError::Upstream(format!("finding its Pod: {e}")))?
            .ok_or_else(|| BackendError::NotFound(format!("no Pod of sandbox {id}")))?;
        crate::logs::follow(&self.client, &ns, &objects::pod_name(id), since_ns)
            .await
            .map_err(|e| BackendError::Upstream(format!("its Pod's log: {e}")))
    }

    async fn why_gone(&self, id: &str) -> Option<String> {
        crate::lost::why_gone(self, id).await
    }

    fn log_files(&self, _id: &str) -> Vec<(&'static str, PathBuf)> {
        Vec::new()
    }

    fn oom_kills(&self, _id: &str) -> u64 {
        0
    }

    fn usage_unmeasured(&self) -> Option<&'static str> {
        Some(
            "CPU and memory use are not measured on the Kubernetes backend yet (the cluster's \
             own measure: kubectl top pod)",
        )
    }

    fn usage(&self, _id: &str) -> Option<Usage> {
        None
    }

    fn disk_used(&self, _id: &str) -> u64 {
        0
    }

    async fn drain_warm(&self) {}

    async fn remove_shared(&self) {}

    async fn leftovers(&self, id: &str, _runtime: Runtime, _net_index: Option<u32>) -> Vec<String> {
        let lp = ListParams::default().labels(&format!("{SANDBOX_LABEL}={id}"));
        let c = &self.client;
        let mut left = names_of(Api::<Pod>::all(c.clone()), &lp, "pod").await;
        left.extend(names_of(Api::<Secret>::all(c.clone()), &lp, "secret").await);
        left.extend(names_of(Api::<NetworkPolicy>::all(c.clone()), &lp, "networkpolicy").await);
        left.extend(names_of(Api::<PersistentVolumeClaim>::all(c.clone()), &lp, "pvc").await);
        left
    }

    async fn pause(
        &self,
        _id: &str,
        _runtime: Runtime,
        _net_index: Option<u32>,
        _offsite: bool,
    ) -> Result<PauseReceipt, BackendError> {
        Err(unsupported("pause"))
    }

    fn pause_begun(&self, _id: &str) -> bool {
        false
    }

    fn pause_begun_ago(&self, _id: &str) -> Option<Duration> {
        None
    }

    fn pause_busy(&self, _id: &str, _runtime: Runtime) -> bool {
        false
    }

    async fn finish_pause(
        &self,
        _id: &str,
        _runtime: Runtime,
    ) -> Result<PauseReceipt, BackendError> {
        Err(unsupported("pause"))
    }

    fn pause_receipt(&self, _id: &str) -> Result<PauseReceipt, BackendError> {
        Err(unsupported("pause"))
    }

    async fn resume(&self, _spec: &SandboxSpec) -> Result<Provisioned, BackendError> {
        Err(unsupported("resume"))
    }

    fn discard_pause(&self, _id: &str) {}

    fn discard_unfinished_pause(&self, _id: &str) {}

    async fn undo_restore(&self, _id: &str, _runtime: Runtime) {}

    async fn renew_network(
        &self,
        _id: &str,
        _runtime: Runtime,
        _net_index: Option<u32>,
        _restored: bool,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    async fn prepare_fork(
        &self,
        _spec: &SandboxSpec,
        _from: ForkFrom<'_>,
    ) -> Result<PauseReceipt, BackendError> {
        Err(unsupported("forking a sandbox"))
    }

    async fn save_snapshot(
        &self,
        _id: &str,
        _name: &str,
        _memory: bool,
    ) -> Result<PauseReceipt, BackendError> {
        Err(unsupported("snapshots"))
    }

    fn remove_snapshot(&self, _name: &str) -> std::io::Result<()> {
        Ok(())
    }

    async fn seed_disk(&self, _id: &str, _snapshot: &str) -> Result<(), BackendError> {
        Err(unsupported("snapshots"))
    }

    fn net_ip(&self, _index: u32) -> Ipv4Addr {
        // Pods get their addresses from the cluster's network, not from a slot.
        Ipv4Addr::UNSPECIFIED
    }

    fn ensure_volume(&self, _name: &str, _size_mb: u64) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "volumes are not supported on the Kubernetes backend yet",
        ))
    }

    fn volume_usage(&self, _name: &str) -> Option<u64> {
        None
    }

    fn remove_volume(&self, _name: &str) -> std::io::Result<()> {
        Ok(())
    }

    async fn backup_volume(&self, _name: &str) -> Result<VolumeBackup, BackendError> {
        Err(unsupported("volumes"))
    }

    fn discard_volume_backup(&self, _name: &str) {}
}
