//! The Kubernetes backend on the real one-node cluster `scripts/k8s-up.sh` starts (its
//! kubeconfig in `WARREN_TEST_KUBECONFIG`, its registry on 127.0.0.1:5100): sandboxes as Pods
//! under the `runc` and `gvisor` runtime classes with the agent put in by an init container of
//! the image `warren agent-image push` made, exec and files through the agent on the Pod IP,
//! egress as a NetworkPolicy, a delete leaving no object behind, and clear errors for what
//! this backend does not do.
#[path = "kube_parts/claims.rs"]
mod claims;
mod common;
#[path = "kube_parts/e2b.rs"]
mod e2b;
#[path = "kube_parts/operator.rs"]
mod operator;
#[path = "kube_parts/support.rs"]
mod support;

use std::process::Command;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::*;

async fn error_of(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().await.expect("a JSON error");
    let msg = body["error"]["message"].as_str().unwrap_or("").to_owned();
    (status, msg)
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_sandboxes_run_as_pods_under_both_runtime_classes_and_leave_nothing_behind() {
    let images = push_images();
    let (agent, image) = (images.agent.clone(), images.image.clone());
    let s = kube_server(
        &agent,
        &[
            "--kube-runc-class",
            "runc",
            "--kube-blocked-cidr",
            "10.244.0.0/16,10.96.0.0/24",
        ],
    )
    .await;

    for (runtime, class) in [("runc", "runc"), ("gvisor", "gvisor")] {
        let sb = s
            .create(json!({
                "image": image, "runtime": runtime, "cmd": ["sleep", "600"],
                "env": {"GREETING": "hi"}, "cpu": 0.5, "memory_mb": 256, "egress": "deny",
            }))
            .await;
        assert_eq!(sb["state"], "running", "{sb}");
        let id = sb["id"].as_str().expect("id").to_owned();
        let ip = sb["ip"].as_str().unwrap_or("");
        assert!(ip.starts_with("10.244.0."), "a pod address: {sb}");

        let pods = kubectl_json(&[
            "get",
            "pods",
            "-A",
            "-l",
            &format!("warren.dev/sandbox={id}"),
        ]);
        let pod = &pods["items"][0];
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .expect("namespace")
            .to_owned();
        assert!(ns.starts_with("warren-"), "{ns}");
        assert_eq!(pod["spec"]["runtimeClassName"], class);
        assert_eq!(pod["status"]["podIP"], ip);
        assert_eq!(pod["spec"]["initContainers"][0]["image"], agent.as_str());
        let container = &pod["spec"]["containers"][0];
        let pinned = container["image"].as_str().unwrap_or("");
        assert!(
            pinned.starts_with(&format!("{image}@sha256:")),
            "the user's image pinned by digest: {pinned}"
        );
        assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
        assert_eq!(container["resources"]["limits"]["cpu"], "500m");
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false);

        // The agent is PID 1, from the init container's volume, and answers on the Pod IP.
        let out = s
            .sh(
                &id,
                "echo $GREETING; tr '\\0' ' ' < /proc/1/cmdline; echo; id -u",
            )
            .await;
        assert_eq!(out, "hi\n/warren/warren-agent \n0\n", "{runtime}");
        // Under gVisor the kernel the sandbox sees is gVisor's.
        let kernel = s.sh(&id, "dmesg 2>/dev/null | head -1; true").await;
        assert_eq!(kernel.contains("gVisor"), runtime == "gvisor", "{kernel}");
        // Its token is in a root-only file, never in the environment PID 1 shows.
        let token = s.sh(&id, "cat /run/warren/token").await;
        assert!(token.len() >= 16, "{token:?}");
        let environ = s.sh(&id, "tr '\\0' '\\n' < /proc/1/environ").await;
        assert!(!environ.contains(&token) && environ.contains("WARREN_AGENT_TOKEN_FILE"));
        // Nor are the values of its environment in the Pod's spec (they are in its Secret).
        assert!(!container.to_string().contains("\"hi\""), "{container}");

        let path = format!("/v1/sandboxes/{id}/files?path=/tmp/note.txt");
        let r = s
            .req(Method::PUT, &path)
            .body("written over HTTP")
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = s.req(Method::GET, &path).send().await.expect("get");
        assert_eq!(r.text().await.expect("body"), "written over HTTP");

        // Egress: the policy object follows the sandbox's setting.
        let name = format!("warren-{id}-egress");
        let np = kubectl_json(&["get", "networkpolicy", "-n", &ns, &name]);
        assert_eq!(np["spec"]["policyTypes"], json!(["Egress"]));
        assert_eq!(
            np["spec"]["egress"],
            Value::Null,
            "deny: no egress rule: {np}"
        );
        let r = s
            .req(Method::PUT, &format!("/v1/sandboxes/{id}/network"))
            .json(&json!({"egress": {"allow": ["203.0.113.0/24"]}}))
            .send()
            .await
            .expect("network");
        assert_eq!(r.status(), StatusCode::OK);
        let np = kubectl_json(&["get", "networkpolicy", "-n", &ns, &name]);
        assert_eq!(
            np["spec"]["egress"],
            json!([{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]),
            "{np}"
        );

        // A stop deletes the Pod; a start makes it again, at a new address, with the kept
        // directories (/root, /home by default) as they were and the rest as the image has it.
        s.sh(&id, "echo kept > /root/kept.txt; echo lost > /tmp/lost.txt")
            .await;
        for verb in ["stop", "start"] {
            let r = s
                .req(Method::POST, &format!("/v1/sandboxes/{id}/{verb}"))
                .send()
                .await
                .expect(verb);
            assert_eq!(r.status(), StatusCode::OK, "{verb}");
        }
        assert_eq!(s.sh(&id, "echo again").await, "again\n");
        let after = s
            .sh(&id, "cat /root/kept.txt; cat /tmp/lost.txt 2>&1; true")
            .await;
        assert!(
            after.starts_with("kept\n") && after.contains("No such file"),
            "{runtime}: {after}"
        );

        // What this backend does not do is refused, saying so.
        let r = s
            .req(Method::GET, &format!("/v1/sandboxes/{id}/metrics"))
            .send()
            .await
            .expect("metrics");
        let (status, msg) = error_of(r).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            msg.contains("not measured on the Kubernetes backend"),
            "{msg}"
        );
        let r = s
            .req(Method::POST, &format!("/v1/sandboxes/{id}/pause"))
            .send()
            .await
            .expect("pause");
        let (status, msg) = error_of(r).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            msg.contains("not supported on the Kubernetes backend"),
            "{msg}"
        );

        s.delete(&id).await;
        let left = kubectl_json(&[
            "get",
            "pods,secrets,networkpolicies,persistentvolumeclaims",
            "-A",
            "-l",
            &format!("warren.dev/sandbox={id}"),
        ]);
        assert_eq!(left["items"], json!([]), "nothing left of {id}: {left}");
    }

    // Nor are volumes.
    let r = s
        .post("/v1/volumes", Some(json!({"name": "kv", "size_mb": 64})))
        .await;
    let (status, msg) = error_of(r).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        msg.contains("not supported on the Kubernetes backend"),
        "{msg}"
    );
    assert!(s.get_json("/v1/volumes").await["volumes"]
        .as_array()
        .is_some_and(|v| v.is_empty()));

    // An image imported on the server is not in any registry the nodes pull from.
    let r = s
        .req(Method::POST, "/v1/sandboxes")
        .json(&json!({"image": "busybox", "runtime": "runc", "cmd": ["sleep", "60"]}))
        .send()
        .await
        .expect("create");
    let status = r.status();
    let body: Value = r.json().await.expect("body");
    let said = body["error"]["message"]
        .as_str()
        .or(body["error"].as_str())
        .unwrap_or("")
        .to_owned();
    assert!(
        status.is_client_error() && said.contains("pulled from a registry"),
        "{status} {body}"
    );
    s.shutdown().await;

    // The agent image mounted as an image volume: no init container.
    // Keeping /bin: its claim is seeded from the image, or nothing could run.
    let s = kube_server(
        &agent,
        &[
            "--kube-agent-mount",
            "image-volume",
            "--kube-keep-path",
            "/bin",
        ],
    )
    .await;
    let sb = s
        .create(json!({"image": image, "runtime": "gvisor", "cmd": ["sleep", "600"], "cpu": 0.25}))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    let pods = kubectl_json(&[
        "get",
        "pods",
        "-A",
        "-l",
        &format!("warren.dev/sandbox={id}"),
    ]);
    let spec = &pods["items"][0]["spec"];
    // No agent-installing init container: only the seed of the kept /bin.
    let inits: Vec<&str> = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(inits, ["warren-seed"], "{spec}");
    assert_eq!(spec["volumes"][0]["image"]["reference"], agent.as_str());
    let out = s.sh(&id, "tr '\\0' ' ' < /proc/1/cmdline; echo").await;
    assert_eq!(out, "/warren/warren-agent \n");
    let bin = s
        .sh(&id, "ls /bin | wc -l; grep ' /bin ' /proc/mounts | wc -l")
        .await;
    let counts: Vec<u32> = bin
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        counts.len() == 2 && counts[0] > 50 && counts[1] == 1,
        "/bin seeded onto its claim: {bin}"
    );
    // No --kube-blocked-cidr: the cluster's own networks were found, and `allow` excepts them.
    let ns = pods["items"][0]["metadata"]["namespace"]
        .as_str()
        .unwrap_or("");
    let np = kubectl_json(&[
        "get",
        "networkpolicy",
        "-n",
        ns,
        &format!("warren-{id}-egress"),
    ]);
    let except = &np["spec"]["egress"][0]["to"][0]["ipBlock"]["except"];
    for net in ["10.244.0.0/24", "10.96.0.0/24", "169.254.0.0/16"] {
        assert!(
            except
                .as_array()
                .is_some_and(|e| e.iter().any(|n| n == net)),
            "{net} excepted: {np}"
        );
    }
    // A lost node's Pods are evicted within --kube-node-lost-after (30 s), not the cluster's 5 min.
    let tolerations = spec["tolerations"].to_string();
    assert!(
        tolerations.contains("node.kubernetes.io/unreachable")
            && tolerations.contains("\"tolerationSeconds\":30"),
        "{tolerations}"
    );

    // Its Pod deleted under Warren's feet: the sandbox fails, saying so.
    let mut cmd = Command::new(kubectl_path());
    cmd.arg("--kubeconfig").arg(kubeconfig()).args([
        "delete",
        "pod",
        "-n",
        ns,
        &format!("warren-{id}"),
        "--wait=false",
    ]);
    run_ok(cmd, "kubectl delete pod");
    let failed = common::wait_for(&s, &id, std::time::Duration::from_secs(30), |v| {
        v["state"] == "failed"
    })
    .await;
    let why = failed["error"].as_str().unwrap_or("");
    eprintln!("a sandbox whose Pod was deleted says: {why}");
    assert!(
        why.contains(&format!("Pod {ns}/warren-{id}")) && why.contains("not by Warren")
            || why.contains("deleted outside Warren"),
        "{failed}"
    );
    s.delete(&id).await;
    s.shutdown().await;
}

/// Texts of the sandbox's stored output lines (not its lifecycle events).
async fn output_lines(s: &TestServer, id: &str) -> Vec<String> {
    let v = s
        .get_json(&format!("/v1/sandboxes/{id}/logs?follow=false"))
        .await;
    v["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["stream"] != "event")
        .filter_map(|l| l["text"].as_str().map(str::to_owned))
        // The agent's own word at its start, as on the local backend.
        .filter(|t| !t.starts_with("warren-agent: "))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_main_command_output_is_the_sandbox_log_across_stop_and_start() {
    let images = push_images();
    let (agent, image) = (images.agent.clone(), images.image.clone());
    let s = kube_server(&agent, &["--kube-runc-class", "runc"]).await;
    let script = "echo one; echo two >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; sleep 600";
    let sb = s
        .create(
            json!({"image": image, "runtime": "runc", "cmd": ["sh", "-c", script], "cpu": 0.25}),
        )
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let lines = loop {
        let lines = output_lines(&s, &id).await;
        if lines.len() >= 3 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    // The Pod's log merges the two streams (in no set order); a line past 16 KiB is cut.
    let mut short: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| l.len() < 10)
        .collect();
    short.sort_unstable();
    assert_eq!(
        short,
        ["one", "two"],
        "{:?}",
        lines.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    let long = lines
        .iter()
        .find(|l| l.starts_with('x'))
        .expect("the long line");
    assert_eq!(long.len(), 16 * 1024, "a long line cut at the log's cap");

    // A stop and start runs the command again in a new Pod: its lines follow, none twice.
    let r = s.post(&format!("/v1/sandboxes/{id}/stop"), None).await;
    assert!(r.status().is_success(), "stop: {}", r.status());
    let r = s.post(&format!("/v1/sandboxes/{id}/start"), None).await;
    assert!(r.status().is_success(), "start: {}", r.status());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let lines = loop {
        let lines = output_lines(&s, &id).await;
        if lines.len() >= 6 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    let ones = lines.iter().filter(|l| *l == "one").count();
    let lens: Vec<usize> = lines.iter().map(String::len).collect();
    assert_eq!((ones, lines.len()), (2, 6), "{lens:?}");
    s.delete(&id).await;
    s.shutdown().await;
}
