//! Between `Sandbox` resources and Warren's sandboxes: a resource's Pod template read as a
//! create request, and a sandbox written as a resource.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::api::ObjectMeta;
use warren_api::{CreateSandbox, Runtime, Sandbox as Record};

use crate::crd::{PodTemplate, Sandbox, SandboxResourceSpec, ShutdownPolicy, RESOURCE_METADATA};
use crate::KubeConfig;

/// The create request a resource asks for (`Err`: why it cannot be one, for its status).
pub fn request_of(
    cfg: &KubeConfig,
    name: &str,
    spec: &SandboxResourceSpec,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<CreateSandbox, String> {
    let pod: PodSpec = serde_json::from_value(spec.pod_template.spec.clone())
        .map_err(|e| format!("spec.podTemplate.spec is no Pod spec: {e}"))?;
    let Some(c) = pod.containers.first() else {
        return Err("spec.podTemplate.spec.containers is empty".into());
    };
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or("spec.podTemplate.spec.containers[0].image is missing")?;
    let runtime = match pod.runtime_class_name.as_deref() {
        None => None,
        Some(class) if Some(class) == cfg.gvisor_class.as_deref() => Some(Runtime::Gvisor),
        Some(class) if Some(class) == cfg.runc_class.as_deref() || class == "runc" => {
            Some(Runtime::Runc)
        }
        Some(class) => {
            return Err(format!(
                "runtimeClassName {class:?} is neither Warren's gVisor class ({}) nor its runc class ({})",
                cfg.gvisor_class.as_deref().unwrap_or("none"),
                cfg.runc_class.as_deref().unwrap_or("runc")
            ))
        }
    };
    let mut env = BTreeMap::new();
    for var in c.env.iter().flatten() {
        if var.value_from.is_some() {
            return Err(format!(
                "env {}: valueFrom is not supported (give the value)",
                var.name
            ));
        }
        env.insert(var.name.clone(), var.value.clone().unwrap_or_default());
    }
    let limit = |key: &str, scale: fn(&str) -> Option<f64>| -> Result<Option<f64>, String> {
        let res = c.resources.as_ref();
        let q = res
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(key))
            .or_else(|| {
                res.and_then(|r| r.requests.as_ref())
                    .and_then(|l| l.get(key))
            });
        q.map(|q| scale(&q.0).ok_or(format!("resources {key}: {:?} is no quantity", q.0)))
            .transpose()
    };
    let no_command = c.command.as_ref().is_none_or(|c| c.is_empty());
    if no_command && c.args.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(
            "args without command: Warren does not run the image's entrypoint; give the whole \
             command in command (and args)"
                .into(),
        );
    }
    let timeout_s = match &spec.shutdown_time {
        None => 0,
        Some(at) => {
            let at = chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|e| format!("spec.shutdownTime {at:?}: {e}"))?;
            // Already past: the shortest lifetime, so it expires at once.
            (at.with_timezone(&chrono::Utc) - now).num_seconds().max(1) as u64
        }
    };
    Ok(CreateSandbox {
        image: Some(image),
        runtime,
        cpu: limit("cpu", cores)?,
        memory_mb: limit("memory", mebibytes)?.map(|m| m.ceil() as u64),
        disk_mb: limit("ephemeral-storage", mebibytes)?.map(|m| m.ceil() as u64),
        env,
        cmd: command_of(c),
        cwd: c.working_dir.clone(),
        timeout_s: Some(timeout_s),
        on_timeout: Some(match spec.shutdown_policy {
            Some(ShutdownPolicy::Delete) => warren_api::OnTimeout::Delete,
            None | Some(ShutdownPolicy::Retain) => warren_api::OnTimeout::Stop,
        }),
        metadata: BTreeMap::from([(RESOURCE_METADATA.to_owned(), name.to_owned())]),
        ..Default::default()
    })
}

fn command_of(c: &Container) -> Vec<String> {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect()
}

/// A Kubernetes quantity as a number of units (`500m` → 0.5, `1Gi` → 1073741824).
fn quantity(q: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let q = q.trim();
    let (num, scale) = SUFFIXES
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n * scale)
}

fn cores(q: &str) -> Option<f64> {
    quantity(q)
}

fn mebibytes(q: &str) -> Option<f64> {
    quantity(q).map(|b| b / 1048576.0)
}

/// The resource that shows a sandbox made through the API: named by its id, its Pod
/// template what the sandbox runs (env names only: the values stay in its Secret).
pub fn resource_of(cfg: &KubeConfig, s: &Record, ns: &str) -> Sandbox {
    let runtime_class = match s.runtime {
        Runtime::Gvisor => cfg.gvisor_class.clone(),
        Runtime::Runc => cfg.runc_class.clone(),
    };
    let env: Vec<serde_json::Value> = s
        .env
        .keys()
        .enumerate()
        .map(|(i, k)| {
            serde_json::json!({"name": k, "valueFrom": {"secretKeyRef": {
                "name": crate::objects::secret_name(s.id.as_str()),
                "key": crate::objects::env_key(i),
            }}})
        })
        .collect();
    let mut container = serde_json::json!({
        "name": crate::objects::CONTAINER,
        "image": s.image,
        "resources": {"limits": {
            "cpu": format!("{}m", (s.cpu * 1000.0).round() as u64),
            "memory": format!("{}Mi", s.memory_mb),
            "ephemeral-storage": format!("{}Mi", s.disk_mb),
        }},
    });
    if !s.cmd.is_empty() {
        container["command"] = serde_json::json!(s.cmd);
    }
    if !env.is_empty() {
        container["env"] = serde_json::Value::Array(env);
    }
    let mut spec = serde_json::json!({"containers": [container]});
    if let Some(class) = runtime_class {
        spec["runtimeClassName"] = serde_json::json!(class);
    }
    Sandbox {
        metadata: ObjectMeta {
            name: Some(s.id.to_string()),
            namespace: Some(ns.to_owned()),
            labels: Some(crate::crd::resource_labels(s.id.as_str())),
            ..Default::default()
        },
        spec: SandboxResourceSpec {
            pod_template: PodTemplate {
                spec,
                metadata: None,
            },
            shutdown_time: s.expires_at.map(|t| t.to_rfc3339()),
            shutdown_policy: Some(match s.on_timeout {
                warren_api::OnTimeout::Delete => ShutdownPolicy::Delete,
                _ => ShutdownPolicy::Retain,
            }),
            replicas: Some(i32::from(s.state.holds_network())),
            ..Default::default()
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pod: serde_json::Value) -> SandboxResourceSpec {
        SandboxResourceSpec {
            pod_template: PodTemplate {
                spec: pod,
                metadata: None,
            },
            ..Default::default()
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(cores("500m"), Some(0.5));
        assert_eq!(cores("2"), Some(2.0));
        assert_eq!(mebibytes("256Mi"), Some(256.0));
        assert_eq!(mebibytes("1Gi"), Some(1024.0));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("-1"), None);
        assert_eq!(quantity("lots"), None);
    }

    #[test]
    fn a_pod_template_is_a_request() {
        let cfg = KubeConfig::for_tests();
        let now = chrono::Utc::now();
        let s = spec(serde_json::json!({
            "runtimeClassName": "runc",
            "containers": [{
                "name": "main", "image": "reg/busybox:1",
                "command": ["sleep"], "args": ["60"], "workingDir": "/tmp",
                "env": [{"name": "A", "value": "1"}],
                "resources": {"limits": {"cpu": "250m", "memory": "128Mi"}}
            }]
        }));
        let req = request_of(&cfg, "mine", &s, now).expect("a request");
        assert_eq!(req.image.as_deref(), Some("reg/busybox:1"));
        assert_eq!(req.runtime, Some(Runtime::Runc));
        assert_eq!(req.cpu, Some(0.25));
        assert_eq!(req.memory_mb, Some(128));
        assert_eq!(req.cmd, ["sleep", "60"]);
        assert_eq!(req.cwd.as_deref(), Some("/tmp"));
        assert_eq!(req.env["A"], "1");
        assert_eq!(req.timeout_s, Some(0), "no shutdownTime: never expires");
        assert_eq!(req.metadata[RESOURCE_METADATA], "mine");
    }

    #[test]
    fn what_cannot_be_a_request_says_why() {
        let cfg = KubeConfig::for_tests();
        let now = chrono::Utc::now();
        let bad = [
            (serde_json::json!({"containers": []}), "empty"),
            (serde_json::json!({"containers": [{"name": "c"}]}), "image"),
            (
                serde_json::json!({"runtimeClassName": "kata", "containers": [{"name": "c", "image": "i"}]}),
                "kata",
            ),
            (
                serde_json::json!({"containers": [{"name": "c", "image": "i",
                    "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}]}]}),
                "valueFrom",
            ),
            (
                serde_json::json!({"containers": [{"name": "c", "image": "i",
                    "resources": {"limits": {"memory": "much"}}}]}),
                "memory",
            ),
        ];
        for (pod, says) in bad {
            let err = request_of(&cfg, "n", &spec(pod), now).expect_err("refused");
            assert!(err.contains(says), "{err} should say {says}");
        }
    }
}
