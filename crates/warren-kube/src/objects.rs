//! The Kubernetes objects of a sandbox, built from its spec: its Pod, the Secret holding its
//! agent's token, and the namespace of its team. Pure functions: what the backend sends.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ImageVolumeSource,
    KeyToPath, Namespace, Pod, PodSpec, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use sha2::{Digest, Sha256};
use warren_api::Runtime;
use warren_backend::SandboxSpec;

use crate::{AgentMount, KubeConfig};

/// Label on every object Warren makes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "warren");
/// Label naming the sandbox an object belongs to.
pub const SANDBOX_LABEL: &str = "warren.dev/sandbox";
/// Label holding the sandbox's address slot (what the service calls its network lease), unique
/// among the sandboxes of one server.
pub const SLOT_LABEL: &str = "warren.dev/slot";
/// Label naming the server whose sandbox it is (slots are unique per server only).
pub const SERVER_LABEL: &str = "warren.dev/server";

/// Where the agent is put (an emptyDir the init container fills, read-only to the sandbox).
const AGENT_DIR: &str = "/warren";
/// The agent's path inside.
const AGENT_PATH: &str = "/warren/warren-agent";
/// Where the token Secret is mounted.
const TOKEN_DIR: &str = "/run/warren";
/// The sandbox's container's name (its logs and exec target).
pub const CONTAINER: &str = "sandbox";

/// The namespace of `team`'s sandboxes: `<prefix><team>`, lower-cased, characters outside a
/// DNS label's turned into `-`, cut to 63.
pub fn namespace_of(cfg: &KubeConfig, team: &str) -> String {
    let mut ns: String = format!("{}{team}", cfg.namespace_prefix)
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    while ns.ends_with('-') {
        ns.pop();
    }
    // A name that had to change may equal another team's: a tag of the team's own name
    // keeps them apart.
    if ns != format!("{}{team}", cfg.namespace_prefix) {
        let tag = hex::encode(&Sha256::digest(team.as_bytes())[..4]);
        ns.truncate(63 - 9);
        while ns.ends_with('-') {
            ns.pop();
        }
        ns = format!("{ns}-{tag}");
    }
    ns
}

/// The Pod's name for sandbox `id`.
pub fn pod_name(id: &str) -> String {
    format!("warren-{id}")
}

/// The token Secret's name for sandbox `id`.
pub fn secret_name(id: &str) -> String {
    format!("warren-{id}-token")
}

/// A label value for server name `name`: server names are already letters, digits, `.`,
/// `_` and `-` (at most 63); a label value must also begin and end with a letter or digit.
pub fn server_label(name: &str) -> String {
    name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

pub(crate) fn labels(cfg: &KubeConfig, id: &str, slot: Option<u32>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (SANDBOX_LABEL.to_owned(), id.to_owned()),
        (SERVER_LABEL.to_owned(), server_label(&cfg.server)),
    ]);
    if let Some(slot) = slot {
        l.insert(SLOT_LABEL.to_owned(), slot.to_string());
    }
    l
}

/// The team's namespace object.
pub fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY.1.to_owned(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The key of the sandbox's `i`th environment variable's value in its Secret.
pub fn env_key(i: usize) -> String {
    format!("env-{i}")
}

/// The Secret holding the agent's token (mounted root-only: PID 1's environment is readable
/// by every user of a gVisor sandbox, so the token is never in it) and the values of the
/// sandbox's environment (secrets among them: a Pod's spec is readable by more than its
/// Secrets are).
pub fn token_secret(cfg: &KubeConfig, spec: &SandboxSpec, ns: &str) -> Secret {
    let mut data = BTreeMap::from([(
        "token".to_owned(),
        ByteString(spec.token.clone().into_bytes()),
    )]);
    for (i, value) in spec.env.values().enumerate() {
        data.insert(env_key(i), ByteString(value.clone().into_bytes()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&spec.id)),
            namespace: Some(ns.to_owned()),
            labels: Some(labels(cfg, &spec.id, None)),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The agent's settings, as the local backend gives them (see warren-agent's config).
fn agent_env(spec: &SandboxSpec) -> Vec<EnvVar> {
    // The user's variables by name here, their values from the Secret.
    let mut vars: Vec<EnvVar> = spec
        .env
        .keys()
        .enumerate()
        .map(|(i, name)| EnvVar {
            name: name.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret_name(&spec.id),
                    key: env_key(i),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    vars.push(env("WARREN_AGENT_TOKEN_FILE", format!("{TOKEN_DIR}/token")));
    vars.push(env("WARREN_AGENT_DEFAULT_USER", spec.user.clone()));
    if spec.runtime == Runtime::Gvisor {
        vars.push(env("WARREN_AGENT_PIDS", spec.pids.to_string()));
    } else {
        vars.push(env("WARREN_AGENT_CHILD_OOM_SCORE_ADJ", "1000"));
    }
    if !spec.cmd.is_empty() {
        vars.push(env(
            "WARREN_AGENT_CMD",
            serde_json::to_string(&spec.cmd).unwrap_or_default(),
        ));
        vars.push(env("WARREN_AGENT_CWD", spec.cwd.clone()));
    }
    vars
}

/// The sandbox's limits, requested as much as limited (a sandbox gets what it asked for), but
/// for CPU, of which `cpu_share` of the limit is requested (`--kube-cpu-request`).
fn resources(spec: &SandboxSpec, cpu_share: f64) -> ResourceRequirements {
    let millicores = |share: f64| (spec.cpu * share * 1000.0).round().max(1.0) as u64;
    let amounts = |cpu: u64| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(format!("{cpu}m"))),
            (
                "memory".to_owned(),
                Quantity(format!("{}Mi", spec.memory_mb)),
            ),
            (
                "ephemeral-storage".to_owned(),
                Quantity(format!("{}Mi", spec.disk_mb)),
            ),
        ])
    };
    ResourceRequirements {
        limits: Some(amounts(millicores(1.0))),
        requests: Some(amounts(millicores(cpu_share.clamp(0.001, 1.0)))),
        ..Default::default()
    }
}

/// The sandbox's Pod: the agent as PID 1 of a container of the user's image (pinned by
/// digest), put there by an init container of the agent's image; its token from the Secret;
/// the runtime class of its runtime; no service account token, no service links.
pub fn pod(cfg: &KubeConfig, spec: &SandboxSpec, image: &str, ns: &str) -> Pod {
    let bin = "warren-bin";
    let token = "warren-token";
    let runtime_class = match spec.runtime {
        Runtime::Gvisor => cfg.gvisor_class.clone(),
        Runtime::Runc => cfg.runc_class.clone(),
    };
    let install = Container {
        name: "warren-agent".to_owned(),
        image: Some(cfg.agent_image.clone()),
        command: Some(vec!["/warren-agent".to_owned()]),
        env: Some(vec![env("WARREN_AGENT_INSTALL", AGENT_PATH)]),
        volume_mounts: Some(vec![VolumeMount {
            name: bin.to_owned(),
            mount_path: AGENT_DIR.to_owned(),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("100m".into())),
                ("memory".to_owned(), Quantity("32Mi".into())),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox = Container {
        name: CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        command: Some(vec![AGENT_PATH.to_owned()]),
        args: Some(Vec::new()),
        working_dir: Some("/".to_owned()),
        env: Some(agent_env(spec)),
        resources: Some(resources(spec, cfg.cpu_request_share)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: bin.to_owned(),
                mount_path: AGENT_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: token.to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        // The agent runs as root to start processes as the sandbox's users; the runtime's
        // default capabilities but the raw-socket and device-node ones.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["NET_RAW".to_owned(), "MKNOD".to_owned()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (init_containers, agent_volume) = match cfg.agent_mount {
        AgentMount::InitContainer => (
            Some(vec![install]),
            Volume {
                name: bin.to_owned(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("64Mi".into())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        AgentMount::ImageVolume => (
            None,
            Volume {
                name: bin.to_owned(),
                image: Some(ImageVolumeSource {
                    reference: Some(cfg.agent_image.clone()),
                    pull_policy: Some("IfNotPresent".to_owned()),
                }),
                ..Default::default()
            },
        ),
    };
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&spec.id)),
            namespace: Some(ns.to_owned()),
            labels: Some(labels(cfg, &spec.id, Some(spec.net_index))),
            ..Default::default()
        },
        spec: Some(PodSpec {
            runtime_class_name: runtime_class,
            hostname: Some(spec.id.clone()),
            restart_policy: Some("Never".to_owned()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            dns_policy: Some("Default".to_owned()),
            termination_grace_period_seconds: Some(10),
            // Not the cluster's default 300 s: a sandbox on a lost node is reported failed
            // (with why) within --kube-node-lost-after.
            tolerations: Some(
                [
                    "node.kubernetes.io/not-ready",
                    "node.kubernetes.io/unreachable",
                ]
                .into_iter()
                .map(|key| Toleration {
                    key: Some(key.to_owned()),
                    operator: Some("Exists".to_owned()),
                    effect: Some("NoExecute".to_owned()),
                    toleration_seconds: Some(cfg.node_lost_after.as_secs() as i64),
                    ..Default::default()
                })
                .collect(),
            ),
            init_containers,
            containers: vec![sandbox],
            volumes: Some(vec![
                agent_volume,
                Volume {
                    name: token.to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret_name(&spec.id)),
                        default_mode: Some(0o400),
                        items: Some(vec![KeyToPath {
                            key: "token".to_owned(),
                            path: "token".to_owned(),
                            mode: Some(0o400),
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    crate::keep::attach(cfg, &mut pod, &spec.id);
    pod
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use warren_backend::EgressPolicy;

    pub(crate) fn spec(runtime: Runtime) -> SandboxSpec {
        SandboxSpec {
            id: "abcdefghijklmnop".into(),
            runtime,
            layers: vec![],
            image_ref: Some("127.0.0.1:5100/busybox:latest@sha256:00".into()),
            team: "Blue_Team".into(),
            cpu: 0.5,
            memory_mb: 256,
            pids: 512,
            disk_mb: 1024,
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            cmd: vec!["sleep".into(), "60".into()],
            cwd: "/tmp".into(),
            user: "root".into(),
            token: "s3cret".into(),
            net_index: 7,
            egress: EgressPolicy::Deny,
            volumes: vec![],
        }
    }

    #[test]
    fn a_pod_runs_the_agent_from_the_init_containers_volume_under_its_runtime_class() {
        let cfg = KubeConfig::for_tests();
        let s = spec(Runtime::Gvisor);
        let ns = namespace_of(&cfg, &s.team);
        assert!(
            ns.starts_with("warren-blue-team-") && ns.len() == 25,
            "{ns}"
        );
        let p = pod(&cfg, &s, "img@sha256:00", &ns);
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["metadata"]["name"], "warren-abcdefghijklmnop");
        assert_eq!(v["metadata"]["labels"][SLOT_LABEL], "7");
        assert_eq!(v["spec"]["runtimeClassName"], "gvisor");
        assert_eq!(v["spec"]["automountServiceAccountToken"], false);
        let init = &v["spec"]["initContainers"][0];
        assert_eq!(init["image"], cfg.agent_image);
        assert_eq!(init["env"][0]["value"], AGENT_PATH);
        let c = &v["spec"]["containers"][0];
        assert_eq!(c["image"], "img@sha256:00");
        assert_eq!(c["command"][0], AGENT_PATH);
        assert_eq!(c["resources"]["limits"]["cpu"], "500m");
        assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
        assert_eq!(c["resources"]["requests"]["ephemeral-storage"], "1024Mi");
        assert_eq!(c["resources"]["requests"]["cpu"], "500m");
        // A share of the CPU limit requested: the rest overcommitted; memory never.
        let shared = KubeConfig {
            cpu_request_share: 0.1,
            ..cfg.clone()
        };
        let q = serde_json::to_value(pod(&shared, &s, "img@sha256:00", &ns)).expect("json");
        let r = &q["spec"]["containers"][0]["resources"];
        assert_eq!(r["requests"]["cpu"], "50m");
        assert_eq!(r["limits"]["cpu"], "500m");
        assert_eq!(r["requests"]["memory"], "256Mi");
        let envs: BTreeMap<String, String> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or("").to_owned(),
                    e["value"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(envs["GREETING"], "", "values are in the Secret");
        assert_eq!(envs["WARREN_AGENT_CMD"], r#"["sleep","60"]"#);
        assert_eq!(envs["WARREN_AGENT_PIDS"], "512");
        assert!(
            !envs.values().any(|v| v.contains("s3cret")),
            "no token in env"
        );
        assert_eq!(c["volumeMounts"][0]["readOnly"], true);
        assert_eq!(v["spec"]["volumes"][1]["secret"]["defaultMode"], 0o400);
        let greeting = c["env"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == "GREETING"))
            .expect("GREETING");
        let key = &greeting["valueFrom"]["secretKeyRef"];
        assert_eq!(key["name"], secret_name(&s.id));
        let sec = serde_json::to_value(token_secret(&cfg, &s, &ns)).expect("json");
        assert_eq!(sec["data"]["token"], "czNjcmV0");
        assert_eq!(sec["data"][key["key"].as_str().expect("key")], "aGk=");
        assert_eq!(v["metadata"]["labels"][SERVER_LABEL], "srv-1");
        let mounted = KubeConfig {
            agent_mount: AgentMount::ImageVolume,
            ..KubeConfig::for_tests()
        };
        let v = serde_json::to_value(pod(&mounted, &s, "img", &ns)).expect("json");
        assert_eq!(v["spec"]["initContainers"], serde_json::Value::Null);
        assert_eq!(
            v["spec"]["volumes"][0]["image"]["reference"],
            cfg.agent_image
        );
        let runc = pod(&cfg, &spec(Runtime::Runc), "img", &ns);
        assert_eq!(
            runc.spec.and_then(|s| s.runtime_class_name).as_deref(),
            Some("runc")
        );
    }

    #[test]
    fn namespaces_are_dns_labels() {
        let cfg = KubeConfig::for_tests();
        assert_eq!(namespace_of(&cfg, "default"), "warren-default");
        assert_eq!(namespace_of(&cfg, "blue-7"), "warren-blue-7");
        let long = "x".repeat(80);
        assert_eq!(namespace_of(&cfg, &long).len(), 63);
        // Names that had to change are told apart.
        let mut seen = std::collections::BTreeSet::new();
        for team in ["a.b", "a_b", "A-b", "a-b", ""] {
            let ns = namespace_of(&cfg, team);
            assert!(ns.len() <= 63 && ns.starts_with("warren-"), "{ns}");
            assert!(seen.insert(ns.clone()), "{team:?} shares {ns}");
        }
        assert_eq!(server_label("-srv.1_"), "srv.1");
    }
}
