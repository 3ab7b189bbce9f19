//! The pinned runsc can checkpoint a running sandbox and restore it whole: its processes (same
//! pids), the memory they hold (a tmpfs file in gVisor's memory, checksummed) and a listening
//! socket on gVisor's own network stack, reached from the host over the sandbox's veth. Raw
//! `runsc`, no Warren API yet: the ground pause/resume is to be built on. Needs root, the runsc
//! that `scripts/build-runsc.sh` installs, busybox-static, `ip`.
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::{json, Value};

fn runsc(root: &Path, args: &[&str]) -> Output {
    let bin = warren_local::runtime::pinned_runsc();
    assert!(
        bin.is_file(),
        "{} is missing: scripts/build-runsc.sh builds it",
        bin.display()
    );
    Command::new(&bin)
        .arg(format!("--root={}", root.display()))
        .args(["--network=sandbox", "--platform=systrap", "--overlay2=none"])
        .args(args)
        .output()
        .expect("running runsc")
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "runsc {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One line from the sandbox's TCP server on `addr`, or why not.
fn ask(addr: &str) -> String {
    use std::io::Read;
    let mut s = match std::net::TcpStream::connect_timeout(
        &addr.parse().expect("address"),
        std::time::Duration::from_secs(5),
    ) {
        Ok(s) => s,
        Err(e) => return format!("connect: {e}"),
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

#[test]
fn runsc_checkpoints_and_restores_processes_memory_and_a_listening_port() {
    let scratch = tempfile::tempdir_in("/var/tmp").expect("scratch");
    let tree = scratch.path().join("rootfs");
    warren_cli::rootfs::busybox_tree(&tree).expect("busybox tree");
    let plan =
        warren_local::net::NetPlan::new(common::unique_subnet().parse().expect("subnet"), "ckpt");
    let lease = plan.lease(0);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // A run cut short leaves its namespace behind; releasing is idempotent.
    rt.block_on(lease.release());
    rt.block_on(lease.create()).expect("network namespace");

    // The server answers each connection with a line; 64 MiB of random data sit in gVisor's
    // memory (its /dev/shm), their checksum kept to compare after the restore.
    let script =
        "head -c 67108864 /dev/urandom > /dev/shm/blob; md5sum /dev/shm/blob | cut -c1-32 > /sum; \
                  sleep 1000 & echo $! > /sleeper; \
                  while true; do echo pong | nc -l -p 8080; done";
    let bundle = scratch.path().join("bundle");
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    ok(
        "spec",
        runsc(&bundle, &["spec", "--bundle", &bundle.to_string_lossy()]),
    );
    let path = bundle.join("config.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("json");
    config["root"] = json!({"path": tree, "readonly": false});
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["sh", "-c", script]);
    let namespaces = config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces");
    namespaces.retain(|n| n["type"] != "network");
    namespaces.push(json!({"type": "network", "path": lease.netns_path()}));
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write");

    let state = scratch.path().join("state");
    let id = "warren-ckpt-test";
    let b = bundle.to_string_lossy().into_owned();
    ok(
        "run",
        runsc(&state, &["run", "--detach", "--bundle", &b, id]),
    );
    let addr = format!("{}:8080", lease.sandbox_ip);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while ask(&addr).trim() != "pong" {
        assert!(Instant::now() < deadline, "the server never answered");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let inside = |cmd: &str| ok("exec", runsc(&state, &["exec", id, "sh", "-c", cmd]));
    let before = inside("cat /sleeper; md5sum /dev/shm/blob | cut -c1-32; cat /sum");

    let image = scratch.path().join("image");
    let t = Instant::now();
    ok(
        "checkpoint",
        runsc(
            &state,
            &["checkpoint", "--image-path", &image.to_string_lossy(), id],
        ),
    );
    let checkpoint = t.elapsed();
    assert!(
        ask(&addr).trim() != "pong",
        "still answering after checkpoint"
    );
    let _ = runsc(&state, &["delete", "--force", id]);
    let t = Instant::now();
    ok(
        "restore",
        runsc(
            &state,
            &[
                "restore",
                "--detach",
                "--image-path",
                &image.to_string_lossy(),
                "--bundle",
                &b,
                id,
            ],
        ),
    );
    let restore = t.elapsed();

    let after = inside("cat /sleeper; md5sum /dev/shm/blob | cut -c1-32; cat /sum");
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(after, before, "pid or memory changed across the restore");
    assert_eq!(lines.get(1), lines.get(2), "the blob's checksum changed");
    let sleeper = lines.first().copied().unwrap_or_default();
    let ps = inside(&format!("kill -0 {sleeper} && echo alive"));
    assert_eq!(ps.trim(), "alive", "the sleeper (pid {sleeper}) is gone");
    assert_eq!(
        ask(&addr).trim(),
        "pong",
        "the listening port did not come back"
    );
    eprintln!(
        "runsc checkpoint {} ms, restore {} ms (64 MiB in gVisor's memory)",
        checkpoint.as_millis(),
        restore.as_millis()
    );
    let _ = runsc(&state, &["delete", "--force", id]);
    rt.block_on(lease.release());
}
