//! The operator of the Kubernetes backend: keeps `Sandbox` resources
//! (`agents.x-k8s.io/v1alpha1`) and Warren's sandboxes in step both ways. A resource made
//! with `kubectl apply` becomes a sandbox; a sandbox made through the API shows up as a
//! resource named by its id; `spec.replicas` stops and starts it; deleting either deletes
//! both (a finalizer holds the resource until the sandbox is gone). One server of those
//! sharing a cluster does this at a time: the holder of a `Lease`.
mod claims;
mod mirror;
mod reconcile;
mod status;

use std::sync::Arc;
use std::time::Duration;

use warren_kube::kube::{self, Api};
use warren_kube::KubeConfig;

use crate::service::Service;

/// The Lease the servers elect the operator with.
pub const LEASE: &str = "warren-operator";
/// How long a leader's lease lasts without renewal, seconds.
const LEASE_SECONDS: u64 = 15;

/// What the operator needs: the cluster, the backend's settings, the service.
#[derive(Clone)]
pub struct Operator {
    client: kube::Client,
    cfg: KubeConfig,
    /// Where the Lease lives.
    lease_namespace: String,
}

/// Shared by the reconciler's calls.
pub(crate) struct Ctx {
    pub(crate) service: Service,
    pub(crate) client: kube::Client,
    pub(crate) cfg: KubeConfig,
    pub(crate) recorder: kube::runtime::events::Recorder,
}

impl Operator {
    /// An operator for the cluster `client` reaches, electing its leader by a Lease in
    /// `lease_namespace`.
    pub fn new(client: kube::Client, cfg: KubeConfig, lease_namespace: String) -> Operator {
        Operator {
            client,
            cfg,
            lease_namespace,
        }
    }

    /// Makes the definitions of Warren's resources unless the cluster has them (a server
    /// without the right to is told to install `deploy/kubernetes/crds.yaml`), and waits until
    /// they are served.
    pub async fn install_definitions(&self) -> anyhow::Result<()> {
        for want in warren_kube::crd::definitions() {
            self.install_definition(want).await?;
        }
        Ok(())
    }

    async fn install_definition(
        &self,
        want: warren_kube::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ) -> anyhow::Result<()> {
        use warren_kube::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let name = want.metadata.name.clone().unwrap_or_default();
        let have = crds.get_opt(&name).await.map_err(|e| {
            anyhow::anyhow!(
                "reading CustomResourceDefinition {name}: {e} (install deploy/kubernetes/crds.yaml, \
                 or give the server the right to read it)"
            )
        })?;
        match have {
            None => {
                crds.create(&Default::default(), &want).await.map_err(|e| {
                    anyhow::anyhow!(
                        "making CustomResourceDefinition {name}: {e} (install \
                         deploy/kubernetes/crds.yaml with `kubectl apply -f`)"
                    )
                })?;
                tracing::info!("installed CustomResourceDefinition {name}");
            }
            // Perhaps another version's (an older Warren's, or agent-sandbox's own): brought to
            // this one's where the server may (server-side apply: no change, no write); else
            // used as it is.
            Some(_) => {
                let apply = kube::api::PatchParams::apply(reconcile::MANAGER).force();
                if let Err(e) = crds
                    .patch(&name, &apply, &kube::api::Patch::Apply(&want))
                    .await
                {
                    tracing::warn!(
                        "CustomResourceDefinition {name} could not be brought to this server's \
                         version ({e}): apply deploy/kubernetes/crds.yaml"
                    );
                }
            }
        }
        let established = kube::runtime::conditions::is_crd_established();
        let wait = kube::runtime::wait::await_condition(crds, &name, established);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .map_err(|_| {
                anyhow::anyhow!("CustomResourceDefinition {name}: not established in 30 s")
            })?
            .map_err(|e| anyhow::anyhow!("waiting for CustomResourceDefinition {name}: {e}"))?;
        Ok(())
    }

    /// Runs until the service shuts down: waits to hold the Lease, then reconciles and
    /// mirrors while it does, and lets go when the server stops.
    pub async fn run(self, service: Service) {
        let stop = service.shutting_down();
        tokio::pin!(stop);
        // Unique per process: a replacement Pod of the same server name (started while the
        // old one stops) must not count as the holder too.
        let identity = format!("{}-{:08x}", service.server_name(), rand::random::<u32>());
        let manager = loop {
            let built = warren_kube::kube_lease_manager::LeaseManagerBuilder::new(
                self.client.clone(),
                LEASE,
            )
            .with_namespace(&self.lease_namespace)
            .with_identity(&identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(LEASE_SECONDS / 3)
            .build()
            .await;
            match built {
                Ok(m) => break m,
                Err(e) => {
                    tracing::warn!("operator: the Lease {}/{LEASE}: {e}", self.lease_namespace);
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        };
        let (mut leading, task) = manager.watch().await;
        loop {
            if *leading.borrow_and_update() {
                tracing::info!("operator: this server reconciles Sandbox resources");
                let work = self.lead(&service);
                tokio::select! {
                    _ = &mut stop => break,
                    _ = leading.wait_for(|held| !held) => {
                        tracing::warn!("operator: the Lease was lost; another server reconciles");
                    }
                    _ = work => {}
                }
            } else {
                tokio::select! {
                    _ = &mut stop => break,
                    changed = leading.changed() => if changed.is_err() { break },
                }
            }
        }
        // Dropping the channel ends the manager's task, which gives the Lease back.
        drop(leading);
        match task.await {
            Ok(Ok(manager)) => {
                if let Err(e) = manager.release().await {
                    tracing::warn!("operator: giving the Lease back: {e}");
                }
            }
            Ok(Err(e)) => tracing::warn!("operator: the Lease: {e}"),
            Err(e) => tracing::warn!("operator: the Lease's task: {e}"),
        }
    }

    /// The leader's work: the controller of `Sandbox` resources and the mirror of sandboxes
    /// made through the API, until either ends.
    async fn lead(&self, service: &Service) {
        let reporter = kube::runtime::events::Reporter {
            controller: "warren".into(),
            instance: Some(service.server_name().to_owned()),
        };
        let ctx = Arc::new(Ctx {
            service: service.clone(),
            client: self.client.clone(),
            cfg: self.cfg.clone(),
            recorder: kube::runtime::events::Recorder::new(self.client.clone(), reporter),
        });
        tokio::select! {
            _ = reconcile::run(ctx.clone()) => {}
            _ = claims::run(ctx.clone()) => {}
            _ = mirror::run(ctx) => {}
        }
    }
}
