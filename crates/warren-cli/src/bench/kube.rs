//! `warren bench kube`: the Kubernetes backend beside plain `kubectl`, per runtime class:
//! create → running through Warren (its Pod made, scheduled, pulled, started, and the agent
//! answering) against `kubectl run` of the same image under the same class followed by
//! `kubectl wait --for=condition=Ready`; and Warren's exec round trip (through the agent on the
//! Pod IP) against `kubectl exec POD -- true` (through the API server and the kubelet).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use warren_api::{CreateSandbox, Runtime};

use super::report::{ms, Stats};
use super::server::{self, Api, InProcess};

/// Each side's sandbox: half a core (one kept and one made at a time fit a 2-core node)
/// and 256 MiB.
const CPU: f64 = 0.5;
const MEMORY_MB: u64 = 256;

#[derive(Args)]
pub struct KubeBenchArgs {
    /// The cluster's kubeconfig (scripts/k8s-up.sh prints the test cluster's).
    #[arg(long, env = "WARREN_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The agent image (`warren agent-image push` prints it).
    #[arg(long)]
    agent_image: String,
    /// The image both sides run (a registry reference the nodes pull; a busybox with
    /// `sleep` and `true`).
    #[arg(long)]
    image: String,
    /// kubectl [default: the test cluster's build, else kubectl on PATH].
    #[arg(long)]
    kubectl: Option<PathBuf>,
    /// Mount the agent image as an image volume instead of an init container (the cluster
    /// needs the ImageVolume feature gate).
    #[arg(long)]
    image_volume: bool,
    /// The RuntimeClass of runc sandboxes on this cluster.
    #[arg(long, default_value = "runc")]
    runc_class: String,
    /// The RuntimeClass of gVisor sandboxes.
    #[arg(long, default_value = "gvisor")]
    gvisor_class: String,
    /// Timed creates and execs per side and runtime, after one untimed warm-up.
    #[arg(long, short = 'n', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Serialize)]
pub struct KubeRow {
    runtime: Runtime,
    class: String,
    warren_create: Stats,
    kubectl_run: Stats,
    warren_exec: Stats,
    kubectl_exec: Stats,
}

#[derive(Debug, Serialize)]
pub struct KubeReport {
    iterations: u32,
    rows: Vec<KubeRow>,
}

pub async fn run(a: KubeBenchArgs) -> anyhow::Result<()> {
    let scratch = super::begin("kube")?;
    let dir = scratch.path().to_owned();
    let mut slot: Option<InProcess> = None;
    let result = super::unless_interrupted(measure(&a, &dir, &mut slot)).await;
    eprintln!("warren bench kube: cleaning up");
    let clean = InProcess::shutdown_any(slot).await;
    super::finish_scratch(scratch, a.keep, clean);
    super::print_report(&result?, a.json, table)
}

fn kubectl_path(a: &KubeBenchArgs) -> PathBuf {
    if let Some(k) = &a.kubectl {
        return k.clone();
    }
    let built = Path::new("/opt/warren/k8s")
        .read_dir()
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok()))
        .map(|e| e.path().join("kubectl"));
    built
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// Runs kubectl with `args`; its stdout, or its stderr as the error.
fn kubectl(a: &KubeBenchArgs, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(kubectl_path(a))
        .arg("--kubeconfig")
        .arg(&a.kubeconfig)
        .args(args)
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn measure(
    a: &KubeBenchArgs,
    dir: &Path,
    slot: &mut Option<InProcess>,
) -> anyhow::Result<KubeReport> {
    let kube = warren_kube::KubeConfig {
        kubeconfig: Some(a.kubeconfig.clone()),
        agent_image: a.agent_image.clone(),
        agent_mount: if a.image_volume {
            warren_kube::AgentMount::ImageVolume
        } else {
            warren_kube::AgentMount::InitContainer
        },
        namespace_prefix: "warren-bench-".into(),
        gvisor_class: Some(a.gvisor_class.clone()),
        runc_class: Some(a.runc_class.clone()),
        blocked: vec!["169.254.0.0/16".parse()?],
        // As a bare `kubectl run` with the same limits: requested in full.
        cpu_request_share: 1.0,
        start_timeout: Duration::from_secs(120),
        node_lost_after: Duration::from_secs(30),
        // Like a bare `kubectl run`: no claim to make.
        keep_paths: Vec::new(),
        storage_class: None,
        server: String::new(),
        // The bench measures sandboxes, not the operator's mirror of them.
        operator: false,
        lease_namespace: None,
    };
    let (api, _) = server::start_kube(dir, kube, slot).await?;
    let ns = format!("warren-bench-kubectl-{}", std::process::id());
    kubectl(a, &["create", "namespace", &ns])?;
    let mut rows = Vec::new();
    let measured = async {
        for (runtime, class) in [
            (Runtime::Runc, a.runc_class.clone()),
            (Runtime::Gvisor, a.gvisor_class.clone()),
        ] {
            let (warren_create, warren_exec) = warren_side(&api, a, runtime).await?;
            let (kubectl_run, kubectl_exec) = kubectl_side(a, &ns, &class).await?;
            rows.push(KubeRow {
                runtime,
                class,
                warren_create,
                kubectl_run,
                warren_exec,
                kubectl_exec,
            });
        }
        anyhow::Ok(())
    }
    .await;
    let _ = kubectl(a, &["delete", "namespace", &ns, "--wait=false"]);
    measured?;
    Ok(KubeReport {
        iterations: a.iterations,
        rows,
    })
}

async fn warren_side(
    api: &Api,
    a: &KubeBenchArgs,
    runtime: Runtime,
) -> anyhow::Result<(Stats, Stats)> {
    let label = format!("warren {runtime}:");
    let body = CreateSandbox {
        image: Some(a.image.clone()),
        runtime: Some(runtime),
        cmd: vec!["sleep".into(), "3600".into()],
        cpu: Some(CPU),
        memory_mb: Some(MEMORY_MB),
        ..Default::default()
    };
    let mut creates = Vec::new();
    let mut kept = None;
    for i in 0..=a.iterations {
        let (took, sb) = api.create_with(body.clone()).await?;
        if i > 0 {
            creates.push(took);
        }
        match kept {
            None => kept = Some(sb.id),
            Some(_) => api.delete(&sb.id).await?,
        }
        super::progress(&format!("{label} create"), i, a.iterations);
    }
    let id = kept.context("no sandbox was made")?;
    let mut execs = Vec::new();
    for i in 0..=a.iterations {
        let took = api.exec_true(&id).await?;
        if i > 0 {
            execs.push(took);
        }
        super::progress(&format!("{label} exec"), i, a.iterations);
    }
    api.delete(&id).await?;
    Ok((Stats::of(&creates), Stats::of(&execs)))
}

async fn kubectl_side(a: &KubeBenchArgs, ns: &str, class: &str) -> anyhow::Result<(Stats, Stats)> {
    let label = format!("kubectl {class}:");
    let mut runs = Vec::new();
    let mut kept: Option<String> = None;
    for i in 0..=a.iterations {
        let name = format!("bench-{class}-{i}");
        // The same as Warren's Pod: the class, the command, its CPU and memory requested as
        // much as limited.
        let amounts =
            serde_json::json!({"cpu": CPU.to_string(), "memory": format!("{MEMORY_MB}Mi")});
        let overrides = serde_json::json!({"spec": {
            "runtimeClassName": class,
            "containers": [{
                "name": name, "image": a.image, "command": ["sleep", "3600"],
                "resources": {"limits": amounts, "requests": amounts},
            }],
        }})
        .to_string();
        let t = Instant::now();
        kubectl(
            a,
            &[
                "-n",
                ns,
                "run",
                &name,
                "--image",
                &a.image,
                "--restart=Never",
                "--overrides",
                &overrides,
            ],
        )?;
        kubectl(
            a,
            &[
                "-n",
                ns,
                "wait",
                "--for=condition=Ready",
                &format!("pod/{name}"),
                "--timeout=120s",
            ],
        )?;
        if i > 0 {
            runs.push(t.elapsed());
        }
        match &kept {
            None => kept = Some(name),
            Some(_) => {
                kubectl(
                    a,
                    &[
                        "-n",
                        ns,
                        "delete",
                        "pod",
                        &name,
                        "--grace-period=0",
                        "--wait=false",
                    ],
                )?;
            }
        }
        super::progress(&format!("{label} run"), i, a.iterations);
    }
    let pod = kept.context("no pod was made")?;
    let mut execs = Vec::new();
    for i in 0..=a.iterations {
        let t = Instant::now();
        kubectl(a, &["-n", ns, "exec", &pod, "--", "true"])?;
        if i > 0 {
            execs.push(t.elapsed());
        }
        super::progress(&format!("{label} exec"), i, a.iterations);
    }
    Ok((Stats::of(&runs), Stats::of(&execs)))
}

fn table(r: &KubeReport) -> String {
    let mut out = format!(
        "Kubernetes backend, {} timed runs each (p50, ms)\n\n\
         | runtime class | Warren create → running | kubectl run + wait Ready | Warren exec | kubectl exec |\n\
         |---|---|---|---|---|\n",
        r.iterations
    );
    for row in &r.rows {
        out.push_str(&format!(
            "| {} ({}) | {} | {} | {} | {} |\n",
            row.class,
            row.runtime,
            ms(row.warren_create.p50_ms),
            ms(row.kubectl_run.p50_ms),
            ms(row.warren_exec.p50_ms),
            ms(row.kubectl_exec.p50_ms),
        ));
    }
    out
}
