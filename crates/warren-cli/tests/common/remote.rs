//! Hosts the network tests make themselves: each a network namespace with a veth to the host
//! and a /30 of 198.18.0.0/15 (the benchmarking range, never routed on the internet), serving
//! HTTP (busybox httpd) and, when asked, DNS. Traffic to anything else is never sent.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);
static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// Port every remote serves HTTP on.
pub const HTTP_PORT: u16 = 8000;

/// A DNS server answering every A question with one address (and nothing else), so names
/// resolve without any resolver outside the test.
const DNS_RESPONDER: &str = r#"
import socket, struct, sys
answer = socket.inet_aton(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
while True:
    q, peer = s.recvfrom(512)
    if len(q) < 17:
        continue
    i = 12
    while i < len(q) and q[i] != 0:
        i += q[i] + 1
    question = q[12:i + 5]
    qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
    ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + answer if qtype == 1 else b""
    header = q[:2] + struct.pack(">HHHHH", 0x8180, 1, 1 if ans else 0, 0, 0)
    s.sendto(header + question + ans, peer)
"#;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn must(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One test-made host.
pub struct Remote {
    /// Its namespace.
    pub netns: String,
    veth: String,
    /// The host's address on its link (where the remote sees the host).
    pub host_ip: Ipv4Addr,
    /// Its own address.
    pub ip: Ipv4Addr,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Remote {
    /// A host at `198.18.<n>.2` serving a page that reads `marker`.
    pub fn start(marker: &str) -> Remote {
        let n = NEXT_NET.fetch_add(1, Ordering::SeqCst);
        Remote::start_at(marker, Ipv4Addr::new(198, 18, (n % 250) as u8, 0))
    }

    /// A host on the /30 at `base` (host side `.1`, remote `.2`).
    pub fn start_at(marker: &str, base: Ipv4Addr) -> Remote {
        let b = u32::from(base);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{n}", std::process::id() % 10000);
        let netns = format!("wtremote-{tag}");
        let veth = format!("wtr{tag}");
        let host_ip = Ipv4Addr::from(b + 1);
        let remote_ip = Ipv4Addr::from(b + 2);
        // Whatever a crashed earlier run left under these names goes first.
        ip(&["link", "del", &veth]);
        ip(&["netns", "del", &netns]);
        must(&["netns", "add", &netns]);
        must(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        must(&["addr", "add", &format!("{host_ip}/30"), "dev", &veth]);
        must(&["link", "set", &veth, "up"]);
        must(&["-n", &netns, "link", "set", "lo", "up"]);
        must(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{remote_ip}/30"),
            "dev",
            "eth0",
        ]);
        must(&["-n", &netns, "link", "set", "eth0", "up"]);
        let dir = std::env::temp_dir().join(format!("warren-remote-{tag}"));
        std::fs::create_dir_all(&dir).expect("remote dir");
        std::fs::write(dir.join("index.html"), format!("{marker}\n")).expect("index.html");
        let mut r = Remote {
            netns,
            veth,
            host_ip,
            ip: remote_ip,
            children: Vec::new(),
            dir,
        };
        let httpd = r.spawn_in(&[
            "busybox",
            "httpd",
            "-f",
            "-p",
            &HTTP_PORT.to_string(),
            "-h",
            &r.dir.display().to_string(),
        ]);
        r.children.push(httpd);
        r.wait_listening(HTTP_PORT);
        r
    }

    /// Runs `argv` inside the remote's namespace.
    pub fn spawn_in(&self, argv: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in the remote's namespace")
    }

    /// Also serves DNS on port 53, answering every name with `answer`.
    pub fn serve_dns(&mut self, answer: Ipv4Addr) {
        let script = self.dir.join("dns.py");
        std::fs::write(&script, DNS_RESPONDER).expect("dns.py");
        let child = self.spawn_in(&[
            "python3",
            &script.display().to_string(),
            &answer.to_string(),
        ]);
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let udp = std::fs::read_to_string(format!("/proc/{}/net/udp", self.newest_pid()))
                .unwrap_or_default();
            if udp.contains(":0035 ") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the remote's DNS responder did not start");
    }

    fn newest_pid(&self) -> u32 {
        self.children.last().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits until something in the namespace listens on TCP `port`.
    pub fn wait_listening(&self, port: u16) {
        let suffix = format!(":{port:04X}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // busybox httpd listens on `::` (IPv6, dual stack): read both tables.
            let listening = ["tcp", "tcp6"].iter().any(|t| {
                std::fs::read_to_string(format!("/proc/{}/net/{t}", self.newest_pid()))
                    .unwrap_or_default()
                    .lines()
                    .map(|l| l.split_whitespace().collect::<Vec<_>>())
                    .any(|f| f.len() > 3 && f[1].ends_with(&suffix) && f[3] == "0A")
            });
            if listening {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing listens on port {port} in {}", self.netns);
    }

    /// Runs `argv` in the namespace to completion: (success, stdout).
    pub fn run_in(&self, argv: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(argv)
            .output()
            .expect("run in the remote's namespace");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        ip(&["link", "del", &self.veth]);
        ip(&["netns", "del", &self.netns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
