//! A node lost under running sandboxes, on the real one-node cluster: its kubelet stopped
//! (SIGSTOP: the node stops reporting) and its Pods cut off (an nftables table of the test's
//! drops the host's packets to the sandbox's Pod IP), as a machine gone from the network
//! would be. The cluster evicts nothing here (every node of the zone is silent, so it suspects
//! itself); Warren asks the agent: the sandbox fails within the node grace period plus
//! `--kube-node-lost-after`, saying its node is not ready and its agent does not answer.
//! While only the kubelet is stopped and the agent answers, the sandbox runs on (and works).
//! Run alone (scripts/test.sh runs it after the other cluster tests): every Pod on the node
//! is affected while the kubelet is stopped.
//!
//! Why not a second node: a second kubelet here would share this host's cgroup hierarchy,
//! containerd and CNI bridge with the first (one node in all but name), and Warren does not
//! move a sandbox between nodes (its Pod is `restartPolicy: Never`; its memory is not kept),
//! so what a lost node shows is the same: the sandbox failed, with the reason.
mod common;
#[path = "kube_parts/support.rs"]
mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use support::*;

/// The nftables table that cuts the host off from the sandbox's Pod.
const CUT: &str = "warren_test_node_lost";

/// The stopped kubelet and the cut, undone whatever happens to the test.
struct Stopped(Pid);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", CUT])
            .status();
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn cut_off(ip: &str) {
    use std::io::Write;
    let rules = format!(
        "table ip {CUT} {{\n chain out {{\n  type filter hook output priority 0;\n  \
         ip daddr {ip} drop\n }}\n}}\n"
    );
    let mut nft = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    nft.stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("nft rules");
    assert!(nft.wait().expect("nft").success(), "nft -f");
}

fn node_ready() -> String {
    let nodes = kubectl_json(&["get", "nodes"]);
    nodes["items"][0]["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_node_a_lost_node_fails_its_sandboxes_saying_why() {
    let images = push_images();
    let (agent, image) = (images.agent.clone(), images.image.clone());
    let s = kube_server(
        &agent,
        &["--kube-runc-class", "runc", "--kube-node-lost-after", "5s"],
    )
    .await;
    let sb = s
        .create(json!({"image": image, "runtime": "runc", "cmd": ["sleep", "600"]}))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    assert_eq!(sb["state"], "running");

    let pid = std::fs::read_to_string("/run/warren-k8s/kubelet.pid").expect("the kubelet's pid");
    let pid = Pid::from_raw(pid.trim().parse().expect("a pid"));
    kill(pid, Signal::SIGSTOP).expect("stopping the kubelet");
    let stopped = Stopped(pid);
    // The node silent, its Pod still answering: the sandbox runs on.
    let deadline = Instant::now() + Duration::from_secs(60);
    while node_ready() == "True" {
        assert!(
            Instant::now() < deadline,
            "the node never stopped reporting"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(s.sh(&id, "echo still here").await, "still here\n");
    assert_eq!(s.get(&id).await.1["state"], "running");
    cut_off(sb["ip"].as_str().expect("ip"));
    let began = Instant::now();
    let failed = common::wait_for(&s, &id, Duration::from_secs(150), |v| {
        v["state"] == "failed"
    })
    .await;
    let took = began.elapsed();
    let why = failed["error"].as_str().unwrap_or("").to_owned();
    eprintln!("a lost node's sandbox failed after {took:?}: {why}");
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_ne!(node_ready(), "True", "the node was reported lost");
    assert!(
        why.contains("lost: its node warren-node has not been ready since")
            && why.contains("does not answer"),
        "{why}"
    );

    // The node back: Warren's delete of the failed sandbox leaves nothing.
    drop(stopped);
    let deadline = Instant::now() + Duration::from_secs(60);
    while node_ready() != "True" {
        assert!(Instant::now() < deadline, "the node did not come back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s.delete(&id).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = kubectl_json(&[
            "get",
            "pods,secrets,networkpolicies,persistentvolumeclaims",
            "-A",
            "-l",
            &format!("warren.dev/sandbox={id}"),
        ]);
        if left["items"] == json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "left of {id}: {left}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s.shutdown().await;
}
