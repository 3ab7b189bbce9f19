//! A real S3 store for the tests: Garage (`scripts/build-garage.sh`), one node on 127.0.0.1
//! with a bucket and a key of its own, stopped and removed with this value.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

const VERSION: &str = include_str!("../../../../scripts/garage-version");

/// The region Garage answers as.
pub const REGION: &str = "garage";

pub struct Garage {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of its S3 API.
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
}

fn binary() -> PathBuf {
    let path = PathBuf::from(format!("/opt/warren/garage/{}/bin/garage", VERSION.trim()));
    assert!(
        path.is_file(),
        "{} missing: run scripts/build-garage.sh",
        path.display()
    );
    path
}

fn hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Garage {
    fn cli(&self, args: &[&str]) -> String {
        run(self.dir.path(), args)
    }

    /// Starts one, with bucket `bucket` writable by its key.
    pub fn start(bucket: &str) -> Garage {
        let dir = tempfile::tempdir().expect("garage dir");
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let config = format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
             [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"{token}\"\n",
            d = dir.path().display(),
            secret = hex(32),
            token = hex(16),
        );
        std::fs::write(dir.path().join("garage.toml"), config).expect("garage.toml");
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("garage log");
        let child = Command::new(binary())
            .arg("-c")
            .arg(dir.path().join("garage.toml"))
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting garage");
        let mut g = Garage {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: format!("GK{}", hex(12)),
            secret: hex(32),
            bucket: bucket.to_owned(),
        };
        // `node id` reads the node's key from disk: only `status` proves its RPC is up.
        let deadline = Instant::now() + Duration::from_secs(30);
        let garage = |args: &[&str]| {
            Command::new(binary())
                .arg("-c")
                .arg(g.dir.path().join("garage.toml"))
                .args(args)
                .output()
                .expect("running garage")
        };
        let node = loop {
            let id = garage(&["node", "id", "-q"]);
            if id.status.success() && garage(&["status"]).status.success() {
                break String::from_utf8_lossy(&id.stdout)
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "garage never answered: {}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        let (key, secret) = (g.key_id.clone(), g.secret.clone());
        g.cli(&["key", "import", "--yes", "-n", "warren", &key, &secret]);
        g.cli(&["bucket", "create", bucket]);
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "warren",
        ]);
        // The layout takes a moment to be in force for writes.
        std::thread::sleep(Duration::from_millis(500));
        if let Some(s) = g.child.try_wait().expect("garage state") {
            panic!("garage exited ({s}): {}", g.log());
        }
        g
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// The environment a server needs to reach it (`AWS_*`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// How many objects its bucket holds now.
    pub fn objects(&self) -> u64 {
        let out = self.cli(&["bucket", "info", &self.bucket]);
        out.lines()
            .find_map(|l| l.trim().strip_prefix("Objects:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no object count in: {out}"))
    }
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .arg("-c")
        .arg(dir.join("garage.toml"))
        .args(args)
        .output()
        .expect("running garage");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "garage {args:?}: {text}");
    text
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
