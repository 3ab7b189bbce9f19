//! Resource limits hold and the host never suffers. Under runc a process past `memory_mb` is
//! OOM-killed while the sandbox lives on, a fork bomb stops at `pids`, and `cpu` caps CPU time;
//! under gVisor the memory limit applies to the whole sandbox, which is reported failed with
//! the OOM named. Needs root, crun, runsc, cgroups.
mod common;

use std::path::Path;
use std::time::Duration;

use common::TestServer;
use serde_json::json;

fn cgroup_file(s: &TestServer, controller: &str, id: &str, file: &str) -> String {
    let p = format!("/sys/fs/cgroup/{controller}/warren-{}/{id}/{file}", s.tag());
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .to_owned()
}

fn cgroup_v1() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn runc_memory_pids_and_cpu_hold() {
    let s = TestServer::start().await;
    let sb = s
        .create(
            json!({"image": "busybox", "runtime": "runc", "memory_mb": 64, "pids": 64, "cpu": 0.5}),
        )
        .await;
    let id = sb["id"].as_str().expect("id");

    // Memory: dd's 200 MB buffer is past the limit; dd dies, the sandbox does not.
    let v = s
        .exec(
            id,
            json!({"cmd": ["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]}),
        )
        .await;
    assert_eq!(v["exit_code"], 137, "dd was not OOM-killed: {v}");
    assert_eq!(s.sh(id, "echo alive").await, "alive\n");
    let (_, got) = s.get(id).await;
    assert_eq!(got["state"], "running");

    // Pids: a fork bomb of 200 sleepers stops at 64 processes; once they end, all is well.
    let v = s
        .exec(id, json!({"cmd": ["sh", "-c", "for i in $(seq 1 200); do sleep 3 & done; wait"], "timeout_s": 30}))
        .await;
    let stderr = v["stderr"].as_str().unwrap_or_default();
    assert!(
        stderr.contains("can't fork") || stderr.contains("Resource temporarily unavailable"),
        "{v}"
    );
    if cgroup_v1() {
        assert_eq!(cgroup_file(&s, "pids", id, "pids.max"), "64");
        let refused = cgroup_file(&s, "pids", id, "pids.events");
        assert!(
            refused.starts_with("max ") && refused != "max 0",
            "{refused}"
        );
    }
    assert_eq!(s.sh(id, "echo alive").await, "alive\n");

    // CPU: 0.5 cores. Two seconds of busy loop may use at most about one second of CPU.
    if cgroup_v1() {
        assert_eq!(cgroup_file(&s, "cpu", id, "cpu.cfs_quota_us"), "50000");
        let before: u64 = cgroup_file(&s, "cpuacct", id, "cpuacct.usage")
            .parse()
            .expect("usage");
        let v = s
            .exec(
                id,
                json!({"cmd": ["sh", "-c", "while :; do :; done"], "timeout_s": 2}),
            )
            .await;
        assert_eq!(v["timed_out"], true, "{v}");
        let after: u64 = cgroup_file(&s, "cpuacct", id, "cpuacct.usage")
            .parse()
            .expect("usage");
        let used = Duration::from_nanos(after - before);
        assert!(
            used < Duration::from_millis(1300),
            "used {used:?} of CPU in 2 s at cpu=0.5"
        );
        assert!(
            used > Duration::from_millis(500),
            "used only {used:?}: the loop did not run"
        );
        assert_eq!(
            cgroup_file(&s, "memory", id, "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
    }
    s.delete(id).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gvisor_memory_limit_fails_the_whole_sandbox() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "gvisor", "memory_mb": 128, "pids": 64}))
        .await;
    let id = sb["id"].as_str().expect("id");
    if cgroup_v1() {
        // gVisor's own threads count against pids: the budget is given on top of its floor.
        assert_eq!(
            cgroup_file(&s, "pids", id, "pids.max"),
            (64 + 1024).to_string()
        );
    }
    assert_eq!(s.sh(id, "echo alive").await, "alive\n");
    // Past the limit: the whole sandbox is OOM-killed (the exec may fail or not answer).
    let _ = s
        .req(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({"cmd": ["dd", "if=/dev/zero", "of=/dev/null", "bs=400M", "count=1"], "timeout_s": 20}))
        .send()
        .await;
    let v = common::wait_for(&s, id, Duration::from_secs(20), |v| v["state"] == "failed").await;
    assert_eq!(v["state"], "failed", "{v}");
    let err = v["error"].as_str().unwrap_or_default();
    assert!(err.contains("out of memory"), "{err}");
    // Failed means released: nothing of it is on the host but its files.
    let left: Vec<String> = s
        .leftovers(&sb)
        .into_iter()
        .filter(|l| l != "sandbox dir")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_mounts_cgroup2_with_favordynmods() {
    use warren_local::cgroup::{favors_dynmods, CgroupMode};
    let s = TestServer::start().await;
    // Without cgroup2 there is nothing to remount; with it, every start is faster for it.
    if CgroupMode::detect() != CgroupMode::V1 {
        assert!(
            favors_dynmods(),
            "{}",
            std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_shm_is_as_large_as_the_memory_limit() {
    let s = TestServer::start().await;
    for rt in ["gvisor", "runc"] {
        let sb = s
            .create(json!({"image": "busybox", "runtime": rt, "memory_mb": 300}))
            .await;
        let id = sb["id"].as_str().expect("id");
        // Past the runtimes' default of 64 MiB.
        let out = s
            .sh(id, "head -c 100000000 /dev/zero > /dev/shm/big && ls -l /dev/shm/big | awk '{print $5}'; df -m /dev/shm | awk 'NR==2 {print $2}'")
            .await;
        assert_eq!(out, "100000000\n300\n", "{rt}");
        s.delete(id).await;
    }
    s.shutdown().await;
}
