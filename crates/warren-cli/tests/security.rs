//! Attacks on the host from inside a sandbox and from an unprivileged host user, each of which
//! once worked: host devices from a runc sandbox, setuid files run by host users, secrets in
//! world-readable files, no seccomp, user namespaces and raw sockets under runc. Needs root
//! (it creates an unprivileged host user to attack from), crun, runsc.
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::TestServer;
use serde_json::json;

/// An unprivileged user on the host, made once.
fn host_user() -> &'static str {
    const USER: &str = "warren-probe";
    let exists = Command::new("id")
        .arg(USER)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh", USER])
            .output()
            .expect("useradd");
        // Another test binary may have made it in the meantime.
        let again = Command::new("id").arg(USER).output().expect("id");
        assert!(
            again.status.success(),
            "useradd {USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    USER
}

/// Runs `script` as the unprivileged host user: (succeeded, stdout + stderr).
fn as_host_user(script: &str) -> (bool, String) {
    let out = Command::new("runuser")
        .args(["-u", host_user(), "--", "sh", "-c", script])
        .current_dir("/")
        .output()
        .expect("runuser");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A server whose data dir is made the way `mkdir -p` makes one (0755, under a 0755 parent),
/// as for a user who names their own: only Warren itself may close it. The scratch dir comes
/// first, so that bound in that order the server is dropped (and cleans up) before it.
async fn server_in_open_dir() -> (tempfile::TempDir, TestServer) {
    let scratch = tempfile::Builder::new()
        .prefix("warren-sec-")
        .tempdir_in("/var/tmp")
        .expect("scratch");
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let data = scratch.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let s = TestServer::start_on(data, common::free_port(), common::unique_subnet()).await;
    let resp = s.import_tar("busybox", common::busybox_tar()).await;
    assert_eq!(
        resp.status(),
        reqwest::StatusCode::CREATED,
        "importing busybox"
    );
    (scratch, s)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Finding 1: no host device is reachable from a runc sandbox, by `mknod` or by cgroup.
#[tokio::test(flavor = "multi_thread")]
async fn runc_sandboxes_reach_no_host_device() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    // Each made and opened a host device before: a loop device's contents, the kernel log.
    for (node, kind, major, minor) in [("l", "b", 7, 0), ("k", "c", 1, 11), ("v", "c", 10, 232)] {
        let v = s
            .exec(
                id,
                json!({"cmd": ["sh", "-c", format!("mknod /tmp/{node} {kind} {major} {minor} && head -c 16 /tmp/{node} | wc -c")]}),
            )
            .await;
        assert_ne!(
            v["exit_code"], 0,
            "mknod {kind} {major}:{minor} worked: {v}"
        );
    }
    for dev in ["/dev/kvm", "/dev/net/tun", "/dev/kmsg", "/dev/mem"] {
        let v = s
            .exec(
                id,
                json!({"cmd": ["sh", "-c", format!("test -c {dev} && exec 3<>{dev}")]}),
            )
            .await;
        assert_ne!(v["exit_code"], 0, "{dev} opened: {v}");
    }
    // The usual ones still work.
    assert_eq!(
        s.sh(
            id,
            "head -c 4 /dev/zero | wc -c; echo x > /dev/null; head -c 4 /dev/urandom | wc -c"
        )
        .await,
        "4\n4\n"
    );
    // The devices cgroup allows only the OCI defaults (v1 shows its list).
    let list = format!(
        "/sys/fs/cgroup/devices/warren-{}/{id}/devices.list",
        s.tag()
    );
    if let Ok(text) = std::fs::read_to_string(&list) {
        assert!(!text.contains("a *:* rwm"), "{list}: {text}");
        // crun adds `b *:* m` and `c *:* m` (mknod only, which no capability allows here).
        let reads_block = |l: &str| l.starts_with('b') && l.contains(['r', 'w']);
        assert!(!text.lines().any(reads_block), "{list}: {text}");
    }
    s.delete(id).await;
}

/// Finding 5: runc sandboxes have a seccomp filter, cannot make namespaces or mount, and hold
/// neither `CAP_NET_RAW` nor `CAP_MKNOD`; root inside is not root outside.
#[tokio::test(flavor = "multi_thread")]
async fn runc_sandboxes_have_seccomp_and_no_namespaces() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc"}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let status = s.sh(id, "cat /proc/self/status").await;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    assert_eq!(field("Seccomp:"), "2", "no seccomp filter");
    let caps = u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff");
    assert_eq!(caps & (1 << 13), 0, "CAP_NET_RAW kept: {caps:x}");
    assert_eq!(caps & (1 << 27), 0, "CAP_MKNOD kept: {caps:x}");
    // The sandbox's network namespace is its user namespace's (so CRIU can checkpoint it),
    // yet its root cannot touch the network: no NET_ADMIN, no NET_RAW, a read-only /proc/sys.
    assert_eq!(caps & (1 << 12), 0, "CAP_NET_ADMIN kept: {caps:x}");
    for script in [
        "unshare -U -r -m sh -c 'mount -t tmpfs t /mnt'",
        "unshare -n true",
        "mount -t tmpfs t /mnt",
        "ip addr add 10.9.9.9/32 dev eth0",
        "ip link set eth0 down",
        "ip route replace default via 10.9.9.1 dev eth0 onlink",
        "ip link add d0 type dummy",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        "echo 0 > /proc/sys/net/ipv4/ping_group_range",
    ] {
        let v = s.exec(id, json!({"cmd": ["sh", "-c", script]})).await;
        assert_ne!(v["exit_code"], 0, "{script} worked: {v}");
    }
    let map = s.sh(id, "cat /proc/self/uid_map").await;
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"0"), "{map}");
    assert_ne!(
        fields.get(1),
        Some(&"0"),
        "root inside is root outside: {map}"
    );
    // What a user namespace could break still works: low ports, chown, fork, setuid.
    assert_eq!(
        s.sh(
            id,
            "(nc -l -p 80 >/dev/null &) ; sleep 0.3; netstat -tln | grep -c ':80 '; \
             touch /tmp/f && chown 1000:1000 /tmp/f && stat -c %u /tmp/f"
        )
        .await,
        "1\n1000\n"
    );
    // And its network is as it was.
    assert_eq!(
        s.sh(
            id,
            "ip -4 -o addr show eth0 | grep -c inet; ip route | grep -c default"
        )
        .await,
        "1\n1\n"
    );
    s.delete(id).await;
}

/// Finding 2: a setuid-root file made inside a sandbox gives a host user nothing: the data
/// dir and the mounted roots are closed to them, and under runc the file is not even root's.
#[tokio::test(flavor = "multi_thread")]
async fn host_users_cannot_run_setuid_files_of_sandboxes() {
    // The server first, then its dir: bound in this order, they drop in the other.
    let (_scratch, s) = server_in_open_dir().await;
    let data = s.data_dir.canonicalize().expect("data dir");
    assert_eq!(mode(&data), 0o700);
    for runtime in common::RUNTIMES {
        let sb = s
            .create(json!({"image": "busybox", "runtime": runtime}))
            .await;
        let id = sb["id"].as_str().expect("id");
        // Not under /tmp: gVisor keeps that in its own memory.
        s.sh(id, "cp /bin/busybox /root/sb && chmod 4755 /root/sb")
            .await;
        let upper = data.join("sandboxes").join(id).join("disk/upper/root/sb");
        let merged = Path::new(warren_local::backend::ROOTFS_PARENT)
            .join(s.tag())
            .join(id)
            .join("root/sb");
        let meta = std::fs::metadata(&upper)
            .unwrap_or_else(|e| panic!("{runtime}: {}: {e}", upper.display()));
        assert_eq!(meta.mode() & 0o4000, 0o4000, "{runtime}: not setuid");
        if runtime == "runc" {
            assert_ne!(
                meta.uid(),
                0,
                "runc: a sandbox's setuid file is host root's"
            );
        }
        for path in [&upper, &merged] {
            let (ok, out) = as_host_user(&format!("{} id -u", path.display()));
            assert!(!ok, "{runtime}: a host user ran {}: {out}", path.display());
            assert!(
                !out.trim().ends_with('0'),
                "{runtime}: euid 0 from {}",
                path.display()
            );
        }
        let (ok, out) = as_host_user(&format!("ls {}", data.display()));
        assert!(!ok, "a host user lists the data dir: {out}");
        s.delete(id).await;
    }
}

/// Finding 3: tokens, env and output are not readable by other host users; trees made by
/// older servers (0755 dirs, 0644 files) are closed at start.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_closed_to_host_users() {
    let (_scratch, mut s) = server_in_open_dir().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "env": {"API_SECRET": "s3cret"}, "cmd": ["sh", "-c", "echo started; sleep 1000"]}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let data = s.data_dir.canonicalize().expect("data dir");
    let dir = data.join("sandboxes").join(id);
    for (file, want) in [
        (data.join("warren.db"), 0o600),
        (data.join("admin.key"), 0o600),
        (dir.join("bundle/config.json"), 0o600),
        (common::state::token_file(&s, id), 0o400),
        (dir.join("stdout.log"), 0o600),
        (dir.join("stderr.log"), 0o600),
    ] {
        assert_eq!(mode(&file), want, "{}", file.display());
        let (ok, out) = as_host_user(&format!("cat {}", file.display()));
        assert!(!ok, "a host user read {}: {out}", file.display());
    }
    // An older server's tree: opened up, then the server restarts on it.
    let (port, subnet) = (s.port, s.subnet.clone());
    s.kill9();
    for p in [&data, &data.join("sandboxes"), &dir] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for p in [
        data.join("warren.db"),
        dir.join("bundle/config.json"),
        dir.join("stdout.log"),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let s2 = TestServer::start_on(data.clone(), port, subnet).await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("sandboxes")), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&data.join("warren.db")), 0o600);
    assert_eq!(mode(&dir.join("bundle/config.json")), 0o600);
    assert_eq!(mode(&dir.join("stdout.log")), 0o600);
    s2.delete(id).await;
}

/// Finding 7: `disk_mb` holds under both runtimes (a sandbox with 100 MiB once wrote 2 GB to
/// the host), and the metrics report the disk's real use and size.
#[tokio::test(flavor = "multi_thread")]
async fn disk_mb_is_enforced() {
    let s = TestServer::start().await;
    for runtime in common::RUNTIMES {
        let sb = s
            .create(json!({"image": "busybox", "runtime": runtime, "disk_mb": 100}))
            .await;
        let id = sb["id"].as_str().expect("id");
        // Not under /tmp: gVisor keeps that in memory, bounded by memory_mb.
        let v = s
            .exec(
                id,
                json!({"cmd": ["sh", "-c", "dd if=/dev/zero of=/root/big bs=1M count=300 && sync"], "timeout_s": 60}),
            )
            .await;
        assert_ne!(v["exit_code"], 0, "{runtime}: 300 MiB fit in 100: {v}");
        let stderr = v["stderr"].as_str().unwrap_or_default();
        assert!(stderr.contains("No space left"), "{runtime}: {v}");
        let m = s.get_json(&format!("/v1/sandboxes/{id}/metrics")).await;
        let (used, total) = (
            m["disk_used"].as_u64().expect("disk_used"),
            m["disk_total"].as_u64().expect("disk_total"),
        );
        assert_eq!(total, 100 << 20, "{runtime}: {m}");
        assert!(used > 80 << 20 && used <= 100 << 20, "{runtime}: {m}");
        // Deleting the big file gives the space back; the sandbox lives on.
        s.sh(id, "rm /root/big; sync").await;
        let m = s.get_json(&format!("/v1/sandboxes/{id}/metrics")).await;
        assert!(
            m["disk_used"].as_u64().unwrap_or(u64::MAX) < 20 << 20,
            "{runtime}: {m}"
        );
        // The files survive a stop and start (the disk is unmounted and mounted again).
        s.sh(id, "echo kept > /root/kept").await;
        let resp = s.post(&format!("/v1/sandboxes/{id}/stop"), None).await;
        assert!(resp.status().is_success(), "{runtime}: stop");
        let resp = s.post(&format!("/v1/sandboxes/{id}/start"), None).await;
        assert!(resp.status().is_success(), "{runtime}: start");
        assert_eq!(s.sh(id, "cat /root/kept").await, "kept\n");
        // A start may take another network lease; the one it holds now is the one to check.
        let (_, now) = s.get(id).await;
        s.delete(id).await;
        assert!(
            s.leftovers(&now).is_empty(),
            "{runtime}: {:?}",
            s.leftovers(&now)
        );
    }
}

/// Finding 14: a server killed in the middle of a stop finishes it at its next start: the
/// sandbox ends `stopped` with its files, and starts again (it was `failed` for good before).
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_cut_by_a_crash_ends_stopped() {
    let mut s = TestServer::start().await;
    for runtime in common::RUNTIMES {
        // The main command ignores SIGTERM, so the stop waits out its grace period.
        let sb = s
            .create(json!({"image": "busybox", "runtime": runtime, "cmd": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]}))
            .await;
        let id = sb["id"].as_str().expect("id").to_owned();
        s.sh(&id, "echo kept > /root/kept").await;
        let stop_path = format!("/v1/sandboxes/{id}/stop");
        let stop = s.post(&stop_path, None);
        let stopping = async {
            common::wait_for(&s, &id, std::time::Duration::from_secs(10), |v| {
                v["state"] == "stopping"
            })
            .await
        };
        let (_, seen) = tokio::join!(
            tokio::time::timeout(std::time::Duration::from_millis(1500), stop),
            stopping
        );
        assert_eq!(seen["state"], "stopping", "{runtime}: {seen}");
        let (data, port, subnet) = (s.data_dir.clone(), s.port, s.subnet.clone());
        s.kill9();
        let s2 = TestServer::start_on(data, port, subnet).await;
        let back = common::wait_for(&s2, &id, std::time::Duration::from_secs(20), |v| {
            v["state"] == "stopped"
        })
        .await;
        assert_eq!(back["state"], "stopped", "{runtime}: {back}");
        let resp = s2.post(&format!("/v1/sandboxes/{id}/start"), None).await;
        assert!(
            resp.status().is_success(),
            "{runtime}: start after a cut stop"
        );
        assert_eq!(s2.sh(&id, "cat /root/kept").await, "kept\n");
        s2.delete(&id).await;
        // The first server's handle lives on for its scratch dir; the second takes its place.
        s = s2.adopt_scratch(s);
    }
}

/// Finding 8: the agent's token is not in PID 1's environment (gVisor shows that to every
/// user) and its file is root's alone, under both runtimes.
#[tokio::test(flavor = "multi_thread")]
async fn only_root_inside_can_read_the_agent_token() {
    let s = TestServer::start().await;
    for runtime in common::RUNTIMES {
        let sb = s
            .create(json!({"image": "busybox", "runtime": runtime}))
            .await;
        let id = sb["id"].as_str().expect("id");
        let env = s
            .exec(
                id,
                json!({"cmd": ["sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"], "user": "nobody"}),
            )
            .await;
        let text = env["stdout"].as_str().unwrap_or_default();
        assert!(!text.contains("WARREN_AGENT_TOKEN="), "{runtime}: {env}");
        let v = s
            .exec(
                id,
                json!({"cmd": ["cat", "/.warren/token"], "user": "nobody"}),
            )
            .await;
        assert_ne!(v["exit_code"], 0, "{runtime}: nobody read the token: {v}");
        // Root inside may (it is the sandbox's own root), and the token is really there.
        assert_eq!(s.sh(id, "wc -c < /.warren/token").await.trim(), "48");
        s.delete(id).await;
    }
}

/// Finding 14: a fork bomb under gVisor stops at `pids` (it took the whole sandbox down, as
/// gVisor's own threads ran out of the host's limit).
#[tokio::test(flavor = "multi_thread")]
async fn a_gvisor_fork_bomb_stops_at_pids() {
    let s = TestServer::start().await;
    let sb = s
        .create(json!({"image": "busybox", "runtime": "gvisor", "pids": 64}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let v = s
        .exec(
            id,
            json!({"cmd": ["sh", "-c", "for i in $(seq 1 2000); do sleep 3 & done; wait"], "timeout_s": 60}),
        )
        .await;
    let stderr = v["stderr"].as_str().unwrap_or_default();
    assert!(stderr.contains("can't fork"), "{v}");
    // Once the sleepers are gone the sandbox is as it was, its limit in gVisor's cgroupfs.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (_, got) = s.get(id).await;
    assert_eq!(got["state"], "running", "{got}");
    assert_eq!(s.sh(id, "cat /sys/fs/cgroup/pids/pids.max").await, "64\n");
    s.delete(id).await;
}

/// Finding 13: open files are charged to the sandbox's memory, so `memory_mb` bounds them
/// (30 processes of 20,000 files each once held half the host's file table), the host's table
/// is raised past what memory can hold, and the agent outlives the OOM kill of a file hog.
#[tokio::test(flavor = "multi_thread")]
async fn open_files_are_bounded_by_memory() {
    let s = TestServer::start().await;
    let file_max: u64 = std::fs::read_to_string("/proc/sys/fs/file-max")
        .expect("file-max")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(file_max, i64::MAX as u64, "fs.file-max not raised");

    let scratch = tempfile::tempdir().expect("scratch");
    let hog = scratch.path().join("fdhog");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fdhog.c");
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&hog)
        .arg(&src)
        .output()
        .expect("cc");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sb = s
        .create(json!({"image": "busybox", "runtime": "runc", "memory_mb": 64, "pids": 64}))
        .await;
    let id = sb["id"].as_str().expect("id");
    let resp = s
        .req(
            reqwest::Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/fdhog"),
        )
        .body(std::fs::read(&hog).expect("fdhog"))
        .send()
        .await
        .expect("upload");
    assert!(resp.status().is_success(), "upload: {}", resp.status());
    let before = file_nr();
    let v = s
        .exec(
            id,
            json!({"cmd": ["sh", "-c", "chmod +x /fdhog && /fdhog 30 20000 1"], "timeout_s": 120}),
        )
        .await;
    // Its children still hold what they opened for a second: the host's table shows it. Each
    // file costs the sandbox's memory a few hundred bytes, so 64 MiB cannot hold the 600,000
    // asked for (the hog is OOM-killed first, not the agent).
    let held = file_nr().saturating_sub(before);
    eprintln!("a 64 MiB sandbox held {held} open files: {v}");
    assert!(held < 600_000, "64 MiB held {held} files: {v}");
    // Until the hog's children have let go (their second is up, or the OOM killer took them),
    // the cgroup is full and any new process there is the next victim: wait for the host's
    // table to give their files back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while file_nr().saturating_sub(before) > 10_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the hog's files were never closed: {} held",
            file_nr().saturating_sub(before)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The agent was spared: the sandbox goes on.
    let (_, got) = s.get(id).await;
    assert_eq!(got["state"], "running", "{got}");
    assert_eq!(s.sh(id, "echo alive").await, "alive\n");
    assert_eq!(
        s.sh(id, "cat /proc/1/oom_score_adj /proc/self/oom_score_adj")
            .await,
        "0\n1000\n"
    );
    s.delete(id).await;
}

fn file_nr() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/file-nr")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}
