//! Sandbox lifecycle under both real runtimes: create, get, list, stop, start (files kept),
//! delete (nothing left on the host). Needs root, crun, runsc.
mod common;

use common::{TestServer, RUNTIMES};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn lifecycle(s: &TestServer, runtime: &str) {
    let sb = s
        .create(json!({"image": "busybox", "runtime": runtime, "metadata": {"team": runtime}}))
        .await;
    let id = sb["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 16);
    assert_eq!(sb["runtime"], runtime);
    assert!(sb["ip"].as_str().is_some_and(|ip| !ip.is_empty()));
    assert_eq!(
        sb["image_digest"]
            .as_str()
            .map(|d| d.starts_with("sha256:")),
        Some(true)
    );

    let (status, got) = s.get(&id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["id"], id.as_str());

    let list: Value = s
        .get_json(&format!(
            "/v1/sandboxes?state=running&metadata.team={runtime}"
        ))
        .await;
    let ids: Vec<&str> = list["sandboxes"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "{list}");

    // Its hostname and /etc/hosts are its own.
    assert_eq!(s.sh(&id, "hostname").await.trim(), id);
    assert!(s.sh(&id, "cat /etc/hosts").await.contains(&id));

    // Files survive stop/start; the sandbox is unusable while stopped.
    s.sh(&id, "echo kept > /root/note").await;
    let resp = s.post(&format!("/v1/sandboxes/{id}/stop"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let stopped: Value = resp.json().await.expect("stop body");
    assert_eq!(stopped["state"], "stopped");
    let resp = s
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"cmd": ["true"]})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = s.post(&format!("/v1/sandboxes/{id}/start"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let started: Value = resp.json().await.expect("start body");
    assert_eq!(started["state"], "running");
    assert_eq!(s.sh(&id, "cat /root/note").await, "kept\n");

    // The leak check sees a live sandbox's resources, so its empty answer below means something.
    let live = s.leftovers(&started);
    for what in [
        "mount",
        "netns",
        "nftables chain",
        "container",
        "sandbox dir",
    ] {
        assert!(
            live.iter().any(|l| l.starts_with(what)),
            "{runtime}: live sandbox shows no {what}: {live:?}"
        );
    }
    assert!(
        live.iter().any(|l| l.starts_with("veth")) && live.iter().any(|l| l.starts_with("cgroup")),
        "{live:?}"
    );

    s.delete(&id).await;
    let (status, body) = s.get(&id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let left = s.leftovers(&started);
    assert!(
        left.is_empty(),
        "{runtime} sandbox {id} left behind: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_runc_and_gvisor() {
    let s = TestServer::start().await;
    for rt in RUNTIMES {
        lifecycle(&s, rt).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_without_wait_answers_pending_then_runs() {
    let s = TestServer::start().await;
    let resp = s
        .post(
            "/v1/sandboxes",
            Some(json!({"image": "busybox", "runtime": "runc", "wait": false})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let sb: Value = resp.json().await.expect("body");
    assert_eq!(sb["state"], "pending");
    let id = sb["id"].as_str().expect("id");
    let v = common::wait_for(&s, id, std::time::Duration::from_secs(30), |v| {
        v["state"] == "running"
    })
    .await;
    assert_eq!(v["state"], "running", "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn main_cmd_runs_as_the_agents_child() {
    let s = TestServer::start().await;
    for rt in RUNTIMES {
        let sb = s
            .create(json!({"image": "busybox", "runtime": rt, "cmd": ["sh", "-c", "echo $GREETING > /tmp/main.out; sleep 1000"], "env": {"GREETING": "hi"}}))
            .await;
        let id = sb["id"].as_str().expect("id");
        let mut out = String::new();
        for _ in 0..50 {
            out = s.sh(id, "cat /tmp/main.out 2>/dev/null; true").await;
            if !out.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(out, "hi\n", "{rt}");
        // The agent is PID 1 and the main command runs under it.
        let ps = s.sh(id, "ps -o pid,ppid,args").await;
        assert!(ps.lines().any(|l| l.contains("sleep 1000")), "{rt}: {ps}");
        assert!(
            ps.lines()
                .any(|l| l.trim_start().starts_with("1 ") && l.contains("/.warren/agent")),
            "{rt}: {ps}"
        );
        s.delete(id).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_provision_is_reported_and_leaves_nothing() {
    let s = TestServer::start().await;
    // An image where /.warren is a plain file: the agent's bind mount fails in the runtime
    // step, after the rootfs is mounted and the network made, so all of it must be undone.
    let tree = tempfile::tempdir_in("/var/tmp").expect("tree");
    warren_cli::rootfs::busybox_tree(tree.path()).expect("busybox");
    std::fs::write(tree.path().join(".warren"), b"not a directory\n").expect(".warren");
    let tar = tree.path().join("../broken.tar");
    warren_cli::rootfs::tar_dir(tree.path(), &tar).expect("tar");
    let r = s.import_tar("broken", &tar).await;
    let _ = std::fs::remove_file(&tar);
    assert_eq!(r.status(), StatusCode::CREATED);

    for rt in RUNTIMES {
        let resp = s
            .post(
                "/v1/sandboxes",
                Some(json!({"image": "broken", "runtime": rt})),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let err: Value = resp.json().await.expect("json");
        let msg = err["error"]["message"].as_str().expect("message");
        let id = msg
            .split_whitespace()
            .nth(1)
            .expect("id in message")
            .to_owned();
        let (status, v) = s.get(&id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["state"], "failed", "{v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("runtime")),
            "{v}"
        );
        let tag = s.tag();
        // The failed sandbox's lease is gone: only the server's warm leases remain.
        let netns: Vec<String> = std::fs::read_dir("/run/netns")
            .expect("/run/netns")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("warren-{tag}-")))
            .collect();
        assert!(netns.len() <= 2, "more than the 2 warm leases: {netns:?}");
        let cg = format!("/sys/fs/cgroup/memory/warren-{tag}/{id}");
        assert!(!std::path::Path::new(&cg).exists(), "{cg}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(!mounts.contains(&id), "{id} still mounted");
        s.delete(&id).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_sandboxes_are_deleted() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "timeout_s": 2}))
        .await;
    let id = sb["id"].as_str().expect("id");
    assert!(sb["expires_at"].is_string(), "{sb}");
    // Moving the expiry: 0 means never.
    let r = s
        .post(
            &format!("/v1/sandboxes/{id}/timeout"),
            Some(json!({"timeout_s": 0})),
        )
        .await;
    let v: Value = r.json().await.expect("json");
    assert!(v["expires_at"].is_null(), "{v}");
    let keep = s
        .create(json!({"image": "busybox", "runtime": "runc", "timeout_s": 0}))
        .await;
    let short = s
        .create(json!({"image": "busybox", "runtime": "runc", "timeout_s": 1}))
        .await;
    let short_id = short["id"].as_str().expect("id");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.get(short_id).await.0 != StatusCode::NOT_FOUND && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        s.get(short_id).await.0,
        StatusCode::NOT_FOUND,
        "expired sandbox still there"
    );
    assert!(s.leftovers(&short).is_empty());
    assert_eq!(s.get(id).await.0, StatusCode::OK);
    assert_eq!(
        s.get(keep["id"].as_str().expect("id")).await.0,
        StatusCode::OK
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_range_never_share_an_address() {
    let a = TestServer::start().await;
    // A second server on the same range: its leases skip what the first one routes.
    let dir = tempfile::tempdir_in("/var/tmp").expect("dir");
    let b = TestServer::start_on(
        dir.path().to_path_buf(),
        common::free_port(),
        a.subnet.clone(),
    )
    .await;
    assert_eq!(
        b.import_tar("busybox", common::busybox_tar())
            .await
            .status(),
        StatusCode::CREATED
    );
    let sa = a
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let sb = b
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    assert_ne!(sa["ip"], sb["ip"], "{sa} {sb}");
    for (s, sb) in [(&a, &sa), (&b, &sb)] {
        let id = sb["id"].as_str().expect("id");
        assert_eq!(
            s.sh(id, "hostname").await.trim(),
            id,
            "a request reached the other server's sandbox"
        );
    }
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_forwards_sigterm_to_the_main_cmd() {
    let s = TestServer::start().await;
    for rt in RUNTIMES {
        let script = "trap 'echo got-term > /root/term; exit 0' TERM; echo up > /root/up; while :; do sleep 0.1; done";
        let sb = s
            .create(json!({"image": "busybox", "runtime": rt, "cmd": ["sh", "-c", script]}))
            .await;
        let id = sb["id"].as_str().expect("id");
        for _ in 0..100 {
            if s.sh(id, "cat /root/up 2>/dev/null; true").await == "up\n" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Processes the agent starts have no signals blocked (gVisor's /proc shows no masks).
        if rt == "runc" {
            let status = s.sh(id, "grep Sig /proc/self/status").await;
            assert!(
                status.contains("SigBlk:\t0000000000000000"),
                "{rt}: {status}"
            );
        }
        let t = std::time::Instant::now();
        let r = s.post(&format!("/v1/sandboxes/{id}/stop"), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        // The trap ran at once; the 5 s grace before SIGKILL was not needed.
        assert!(
            t.elapsed() < std::time::Duration::from_secs(4),
            "{rt}: stop took {:?}",
            t.elapsed()
        );
        let r = s.post(&format!("/v1/sandboxes/{id}/start"), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(s.sh(id, "cat /root/term").await, "got-term\n", "{rt}");
        s.delete(id).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_timeout_stop_keeps_the_sandbox_and_its_files() {
    let s = TestServer::start().await;
    let sb = s
        .create(
            json!({"image": "busybox", "runtime": "runc", "timeout_s": 2, "on_timeout": "stop"}),
        )
        .await;
    let id = sb["id"].as_str().expect("id");
    assert_eq!(sb["on_timeout"], "stop");
    s.sh(id, "echo still-here > /root/f").await;
    let v = common::wait_for(&s, id, std::time::Duration::from_secs(20), |v| {
        v["state"] == "stopped"
    })
    .await;
    assert_eq!(v["state"], "stopped", "{v}");
    assert!(v["expires_at"].is_null(), "{v}");
    let r = s.post(&format!("/v1/sandboxes/{id}/start"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.sh(id, "cat /root/f").await, "still-here\n");
    s.delete(id).await;
    s.shutdown().await;
}
