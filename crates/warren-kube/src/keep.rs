//! Files kept across stop and start: a stop deletes the sandbox's Pod, and with it the Pod's
//! own filesystem, so the directories named by `--kube-keep-paths` live on a
//! PersistentVolumeClaim of the sandbox's (`warren-<id>-files`, of `--kube-storage-class`),
//! mounted over the image's. Before a Pod's sandbox container starts, an init container of the
//! user's image runs the agent in seed mode to copy the image's own content of each directory
//! onto the claim, once (a later start keeps what the sandbox wrote). The claim goes when the
//! sandbox is deleted.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::Api;
use warren_backend::SandboxSpec;

use crate::{KubeBackend, KubeConfig};

/// The claim's volume in the Pod.
const VOLUME: &str = "warren-files";
/// Where the seed container mounts the whole claim.
const SEED_AT: &str = "/warren-keep";

/// The claim holding a sandbox's kept directories.
pub fn claim_name(id: &str) -> String {
    format!("warren-{id}-files")
}

/// A kept directory's name on the claim (the agent's seed mode uses the same):
/// `/home/user` → `home_user`.
fn key(path: &str) -> String {
    path.trim_matches('/').replace('/', "_")
}

/// The claim of `spec`'s sandbox: `disk_mb` of the storage class, one node's at a time.
pub fn claim(cfg: &KubeConfig, spec: &SandboxSpec, ns: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(&spec.id)),
            namespace: Some(ns.to_owned()),
            labels: Some(crate::objects::labels(cfg, &spec.id, None)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: cfg.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(format!("{}Mi", spec.disk_mb.max(1))),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Makes the claim unless it is there (a start after a stop finds it).
pub async fn ensure(
    client: &kube::Client,
    cfg: &KubeConfig,
    spec: &SandboxSpec,
    ns: &str,
) -> Result<(), kube::Error> {
    if cfg.keep_paths.is_empty() {
        return Ok(());
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    match claims
        .create(&PostParams::default(), &claim(cfg, spec, ns))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the claim (its volume goes by the storage class's reclaim policy).
pub async fn delete(client: &kube::Client, ns: &str, id: &str) -> Result<(), kube::Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let name = claim_name(id);
    match claims.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    // Gone only once the cluster's PVC protection lets it go (after the Pod that used it,
    // which a loaded controller manager notices seconds later): a delete answers when nothing
    // of the sandbox is left.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while claims.get_opt(&name).await?.is_some() {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                sandbox = id,
                "its kept files' claim {ns}/{name} is still going after 30 s"
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Mounts the claim over the kept directories of the Pod's sandbox container, after an init
/// container that seeds them.
pub fn attach(cfg: &KubeConfig, pod: &mut Pod, id: &str) {
    if cfg.keep_paths.is_empty() {
        return;
    }
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let Some(sandbox) = spec.containers.first_mut() else {
        return;
    };
    let agent_mount = sandbox
        .volume_mounts
        .iter()
        .flatten()
        .next()
        .cloned()
        .unwrap_or_default();
    let seed = Container {
        name: "warren-seed".to_owned(),
        image: sandbox.image.clone(),
        command: sandbox.command.clone(),
        args: Some(Vec::new()),
        env: Some(vec![
            EnvVar {
                name: "WARREN_AGENT_SEED".to_owned(),
                value: Some(cfg.keep_paths.join(":")),
                ..Default::default()
            },
            EnvVar {
                name: "WARREN_AGENT_SEED_INTO".to_owned(),
                value: Some(SEED_AT.to_owned()),
                ..Default::default()
            },
        ]),
        resources: sandbox.resources.clone(),
        security_context: sandbox.security_context.clone(),
        volume_mounts: Some(vec![
            agent_mount,
            VolumeMount {
                name: VOLUME.to_owned(),
                mount_path: SEED_AT.to_owned(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let mounts = sandbox.volume_mounts.get_or_insert_with(Vec::new);
    for path in &cfg.keep_paths {
        mounts.push(VolumeMount {
            name: VOLUME.to_owned(),
            mount_path: path.clone(),
            sub_path: Some(key(path)),
            ..Default::default()
        });
    }
    spec.init_containers.get_or_insert_with(Vec::new).push(seed);
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VOLUME.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim_name(id),
            read_only: Some(false),
        }),
        ..Default::default()
    });
}

/// Deletes a deleted sandbox's claim, from a blocking thread (the service's `off_thread`),
/// waiting for the delete.
pub(crate) fn remove_blocking(backend: &KubeBackend, id: &str) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return tracing::warn!(sandbox = id, "no runtime to delete its kept files on");
    };
    rt.block_on(async {
        match backend.namespace_of_id(id).await {
            Ok(Some(ns)) => {
                if let Err(e) = delete(&backend.client, &ns, id).await {
                    tracing::warn!(sandbox = id, "deleting its kept files' claim: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(sandbox = id, "finding its kept files' claim: {e}"),
        }
        crate::lock(&backend.namespaces).remove(id);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_is_mounted_over_each_kept_directory_after_a_seed() {
        let mut cfg = KubeConfig::for_tests();
        cfg.keep_paths = vec!["/home/user".into(), "/root".into()];
        let spec = crate::objects::tests::spec(warren_api::Runtime::Gvisor);
        let mut pod = crate::objects::pod(&cfg, &spec, "img@sha256:1", "ns");
        let inits = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default();
        let seed = inits.last().expect("a seed container");
        assert_eq!(seed.name, "warren-seed");
        assert_eq!(seed.image.as_deref(), Some("img@sha256:1"));
        let env = seed.env.clone().unwrap_or_default();
        assert_eq!(env[0].value.as_deref(), Some("/home/user:/root"));
        let sandbox = &pod.spec.as_ref().expect("spec").containers[0];
        let subs: Vec<_> = sandbox
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == VOLUME)
            .map(|m| (m.mount_path.as_str(), m.sub_path.as_deref()))
            .collect();
        assert_eq!(
            subs,
            [("/home/user", Some("home_user")), ("/root", Some("root"))]
        );
        let claim = claim(&cfg, &spec, "ns");
        assert_eq!(
            claim.metadata.name.as_deref(),
            Some("warren-abcdefghijklmnop-files")
        );

        cfg.keep_paths.clear();
        pod = crate::objects::pod(&cfg, &spec, "img@sha256:1", "ns");
        let json = serde_json::to_string(&pod).expect("json");
        assert!(!json.contains(VOLUME), "nothing kept: no claim");
    }
}
