//! The pinned runsc checkpoints a running sandbox and restores it whole: its processes (same
//! pids, still alive), the memory they hold (a shell's heap and a tmpfs file in gVisor's
//! memory, both checksummed) and a listening socket on gVisor's own network stack
//! (`--network=sandbox`), reached from the host over a veth this test makes. Raw `runsc`, no
//! Warren API: the ground pause/resume is to be built on. Needs root, the runsc that
//! `scripts/build-runsc.sh` installs, busybox-static and `ip`.
//!
//! What it shows runsc needs (see the comments where each is done):
//! - `run --detach` and `restore --detach` leave a sandbox holding the stdio they were given:
//!   files or /dev/null, never pipes (`Command::output()` would wait for EOF forever).
//! - `--network=sandbox` takes the veth's addresses off the namespace's interface when the
//!   sandbox starts, and `restore` builds its NICs afresh from what the namespace holds then:
//!   the addresses and routes must be put back between checkpoint and restore.
//! - `checkpoint` stops the sandbox; `state` says `running` until its exited process is reaped
//!   (by PID 1 or a subreaper: its parent is gone). The container then stays `stopped` until
//!   `delete`d, so a restore under the same id needs the delete first.
mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The sandbox's id, before and after the restore.
const ID: &str = "warren-ckpt-test";
/// Port of the sandbox's TCP server.
const PORT: u16 = 8080;

/// Everything the test makes on the host; dropping it (also when an assertion panics) deletes
/// the container, the network namespace and its veth, and runsc's pinned namespace mount.
struct Host {
    runsc: PathBuf,
    /// runsc's `--root`.
    state: PathBuf,
    netns: String,
    veth_host: String,
    /// Dropped last: the scratch directory goes once nothing is mounted in it.
    scratch: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let runsc = warren_local::runtime::pinned_runsc();
        assert!(
            runsc.is_file(),
            "{} is missing: scripts/build-runsc.sh builds it",
            runsc.display()
        );
        let scratch = tempfile::Builder::new()
            .prefix("warren-ckpt-")
            .tempdir_in("/var/tmp")
            .expect("scratch directory");
        let tag = std::process::id() % 100_000;
        Host {
            runsc,
            state: scratch.path().join("state"),
            netns: format!("wck{tag}"),
            veth_host: format!("wck{tag}h"),
            scratch,
        }
    }

    fn dir(&self) -> &Path {
        self.scratch.path()
    }

    fn runsc(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.runsc);
        cmd.arg(format!("--root={}", self.state.display()))
            // Warren's flags: gVisor's own network stack, writes to the root going to disk.
            .args(["--network=sandbox", "--platform=systrap", "--overlay2=none"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// A runsc command that ends on its own; its output.
    fn output(&self, args: &[&str]) -> String {
        let out = self.runsc(args).output().expect("running runsc");
        ok(&format!("runsc {args:?}"), out)
    }

    /// A runsc command that leaves a sandbox running (`run`/`restore --detach`). The sandbox
    /// keeps the stdout and stderr it is given, so they are a file: with pipes, as
    /// `Command::output()` makes, the call would never see their end.
    fn detached(&self, args: &[&str]) -> Duration {
        let log = self.dir().join("runsc.log");
        let file = || std::fs::File::create(&log).expect("log file");
        let t = Instant::now();
        let status = self
            .runsc(args)
            .stdout(file())
            .stderr(file())
            .status()
            .expect("running runsc");
        let took = t.elapsed();
        assert!(
            status.success(),
            "runsc {args:?}: {status}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        took
    }

    /// `sh -c script` in the sandbox; its stdout.
    fn inside(&self, script: &str) -> String {
        self.output(&["exec", ID, "sh", "-c", script])
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("running ip");
        ok(&format!("ip {args:?}"), out);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self
            .runsc(&["delete", "--force", ID])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Deleting the namespace takes its end of the veth pair, and with it the host's.
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        };
        quiet(&["netns", "delete", &self.netns]);
        quiet(&["link", "delete", &self.veth_host]);
        // runsc pins an empty network namespace under its root for its gofers.
        let pin = self.state.join("null-netns");
        while nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
    }
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first line the sandbox's server sends on a new connection, or why there is none.
fn ask(addr: &str) -> String {
    let s = match std::net::TcpStream::connect_timeout(
        &addr.parse().expect("address"),
        Duration::from_secs(3),
    ) {
        Ok(s) => s,
        Err(e) => return format!("connect: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut line = String::new();
    match std::io::BufReader::new(s).read_line(&mut line) {
        Ok(_) => line.trim().to_owned(),
        Err(e) => format!("read: {e}"),
    }
}

/// The server's next checksum: between two connections its `nc` is not listening for a moment
/// (longer while the sandbox starts), so a refused connection is tried again until `within`.
fn checksum_from(addr: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let answer = ask(addr);
        if answer.len() == 32 && answer.bytes().all(|c| c.is_ascii_hexdigit()) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox's server did not answer within {within:?}: {answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pid command` of process 1 and the sleeper, as the sandbox's `ps` lists them (the others
/// come and go with the server's connections).
fn processes(host: &Host, sleeper: &str) -> Vec<String> {
    let listing = host.inside("ps -o pid,args");
    listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| matches!(l.split(' ').next(), Some(pid) if pid == "1" || pid == sleeper))
        .collect()
}

#[test]
fn runsc_checkpoints_and_restores_processes_memory_and_a_listening_port() {
    let host = Host::new();
    let tree = host.dir().join("rootfs");
    warren_cli::rootfs::busybox_tree(&tree).expect("busybox tree");

    // A namespace with one veth: the host end .1, the sandbox's .2, on a /30 of a range no
    // other test binary uses.
    let subnet = common::unique_subnet();
    let base = subnet.trim_end_matches(".0/24");
    let (host_ip, sandbox_ip) = (format!("{base}.1"), format!("{base}.2"));
    let ns = host.netns.clone();
    let veth_sandbox = format!("{}s", host.netns);
    host.ip(&["netns", "add", &ns]);
    host.ip(&[
        "link",
        "add",
        &host.veth_host,
        "type",
        "veth",
        "peer",
        "name",
        &veth_sandbox,
        "netns",
        &ns,
    ]);
    host.ip(&[
        "addr",
        "add",
        &format!("{host_ip}/30"),
        "dev",
        &host.veth_host,
    ]);
    host.ip(&["link", "set", &host.veth_host, "up"]);
    host.ip(&["-n", &ns, "link", "set", "lo", "up"]);
    host.ip(&["-n", &ns, "link", "set", &veth_sandbox, "up"]);
    // runsc copies the namespace's addresses and routes into gVisor's stack (and takes the
    // addresses off the interface) when the sandbox starts, and again at each restore.
    let address_sandbox = || {
        host.ip(&[
            "-n",
            &ns,
            "addr",
            "replace",
            &format!("{sandbox_ip}/30"),
            "dev",
            &veth_sandbox,
        ]);
        host.ip(&["-n", &ns, "route", "replace", "default", "via", &host_ip]);
    };
    address_sandbox();

    // Process 1 keeps ~4 MB of random text in its heap and answers each connection with the
    // checksum of it, worked out afresh for each; beside it a sleeper whose pid must survive,
    // and 64 MiB of random data in gVisor's memory (its /dev/shm).
    let script = "x=$(head -c 3000000 /dev/urandom | base64); \
                  head -c 67108864 /dev/urandom > /dev/shm/blob; \
                  sleep 100000 & echo $! > /sleeper; \
                  while true; do echo \"$x\" | md5sum | cut -c1-32 | nc -l -p 8080; done";
    let bundle = host.dir().join("bundle");
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    host.output(&["spec", "--bundle", &bundle.to_string_lossy()]);
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
    namespaces.push(json!({"type": "network", "path": format!("/run/netns/{ns}")}));
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("config.json");
    let b = bundle.to_string_lossy().into_owned();

    host.detached(&["run", "--detach", "--bundle", &b, ID]);
    let addr = format!("{sandbox_ip}:{PORT}");
    let heap_sum = checksum_from(&addr, Duration::from_secs(30));
    // The server answers only once the blob is written.
    let blob_sum = host.inside("md5sum /dev/shm/blob | cut -c1-32");
    let sleeper = host.inside("cat /sleeper").trim().to_owned();
    let procs = processes(&host, &sleeper);
    assert!(
        procs.len() == 2 && procs[1].starts_with(&format!("{sleeper} sleep")),
        "not process 1 and the sleeper {sleeper}: {procs:?}"
    );

    let image = host.dir().join("image");
    let image_arg = format!("--image-path={}", image.display());
    let t = Instant::now();
    host.output(&["checkpoint", &image_arg, ID]);
    let checkpoint = t.elapsed();
    // The sandbox process has exited when `checkpoint` returns, but `state` (kill(pid, 0))
    // says `running` until the zombie is reaped: its parent, `run --detach`, is gone, so by
    // whoever adopts orphans (PID 1 or a subreaper; ~1-2 s on this machine).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state: Value = serde_json::from_str(&host.output(&["state", ID])).expect("state JSON");
        if state["status"] == "stopped" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not stopped 10 s after the checkpoint: {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = t.elapsed();
    let gone = ask(&addr);
    assert!(
        gone.starts_with("connect:"),
        "still answering after the checkpoint: {gone}"
    );
    let image_bytes: u64 = std::fs::read_dir(&image)
        .expect("image dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    assert!(
        image_bytes > 64 << 20,
        "the image ({image_bytes} bytes) cannot hold the 64 MiB blob"
    );

    // The stopped container keeps its id until deleted. The bundle is the same one here, but
    // a copy of it, under another id, restores as well (checked by hand).
    host.output(&["delete", ID]);
    address_sandbox();
    let restore = host.detached(&["restore", "--detach", &image_arg, "--bundle", &b, ID]);

    // The first answer may have been worked out before the checkpoint (it waited in the pipe
    // to nc); the second is computed from the restored heap.
    let first = ask(&addr);
    assert_eq!(first, heap_sum, "the listening port did not come back");
    assert_eq!(
        checksum_from(&addr, Duration::from_secs(10)),
        heap_sum,
        "process 1's heap changed across the restore"
    );
    assert_eq!(
        host.inside("md5sum /dev/shm/blob | cut -c1-32"),
        blob_sum,
        "the blob in gVisor's memory changed across the restore"
    );
    assert_eq!(processes(&host, &sleeper), procs, "the processes changed");
    assert_eq!(
        host.inside(&format!("kill -0 {sleeper} && echo alive"))
            .trim(),
        "alive",
        "the sleeper (pid {sleeper}) is not running"
    );
    eprintln!(
        "runsc checkpoint {} ms (reaped after {} ms), restore {} ms, image {} MiB (~68 MiB \
         in gVisor's memory)",
        checkpoint.as_millis(),
        stopped.as_millis(),
        restore.as_millis(),
        image_bytes >> 20
    );
}
