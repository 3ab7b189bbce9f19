//! A real registry for pull tests: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port, plain HTTP, its own storage, optionally behind htpasswd basic auth; images
//! pushed into it from OCI layouts with `skopeo`; and a layout made by the real `umoci`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::oci_layout::{read_json_blob, read_ref, Descriptor};

const BINARY: &str = "/usr/bin/docker-registry";

pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    /// `(user, password)` when started with auth.
    pub creds: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Registry {
        Registry::start_inner(None)
    }

    /// A registry answering only to `user`/`pass` (HTTP basic auth; anything else gets 401).
    pub fn start_with_auth(user: &str, pass: &str) -> Registry {
        Registry::start_inner(Some((user.to_owned(), pass.to_owned())))
    }

    fn start_inner(creds: Option<(String, String)>) -> Registry {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} not found: apt-get install docker-registry"
        );
        let dir = tempfile::Builder::new()
            .prefix("warren-test-registry-")
            .tempdir_in("/var/tmp")
            .expect("registry dir");
        let root = dir.path().join("storage");
        std::fs::create_dir_all(&root).expect("registry storage");
        let auth = match &creds {
            Some((user, pass)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .expect("running htpasswd (apt-get install apache2-utils)");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).expect("htpasswd file");
                format!(
                    "auth:\n  htpasswd:\n    realm: warren-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        // The port is free when picked but may be taken before the registry binds it: retry.
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = super::free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: info\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: warren-test-secret\n{auth}",
                    root.display()
                ),
            )
            .expect("registry config");
            // The access log goes to stdout, everything else to stderr; files so a test can
            // count requests and a failure can show them.
            let stdout = std::fs::File::create(dir.path().join("access.log")).expect("log");
            let stderr = std::fs::File::create(dir.path().join("registry.log")).expect("log");
            let mut child = Command::new(BINARY)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("spawning docker-registry");
            match wait_ready(&mut child, port, dir.path()) {
                Ok(()) => {
                    return Registry {
                        child: Some(child),
                        port,
                        creds,
                        dir,
                    }
                }
                Err((exited, e)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // Only an exit (most likely "address already in use") is worth a retry.
                    assert!(exited, "docker-registry did not come up: {e}");
                    last_err = e;
                }
            }
        }
        panic!("docker-registry did not come up: {last_err}");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `127.0.0.1:PORT/<repo_tag>`, e.g. `reference("app:v1")`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host())
    }

    /// The registry's storage root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The file holding blob `digest` (`sha256:...`) — overwrite it to serve corrupt bytes.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.root()
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).expect("a sha256 digest"))
            .join(hex)
            .join("data")
    }

    /// The access log so far (Apache combined format, one line per request).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The registry's own log (startup, errors, one "response completed" line per request).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many times blob `digest` was served in full (`GET .../blobs/<digest>` answered 200,
    /// any repository). Range requests (206), HEADs and failures are not counted.
    pub fn blob_get_count(&self, digest: &str) -> usize {
        self.blob_get_statuses(digest)
            .iter()
            .filter(|s| **s == 200)
            .count()
    }

    /// The statuses of every `GET .../blobs/<digest>`, in order.
    pub fn blob_get_statuses(&self, digest: &str) -> Vec<u16> {
        // The registry logs a request after its response is written, so a client may finish
        // a moment before the line appears: wait for the log to stop growing.
        let mut log = self.access_log();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(25));
            let again = self.access_log();
            if again.len() == log.len() {
                break;
            }
            log = again;
        }
        let suffix = format!("/blobs/{digest}");
        log.lines()
            .filter_map(|line| {
                // 127.0.0.1 - - [date] "GET /v2/<repo>/blobs/<digest> HTTP/1.1" 200 123 "" "ua"
                let mut quoted = line.splitn(3, '"');
                let request = quoted.nth(1)?;
                let rest = quoted.next()?;
                let mut parts = request.split(' ');
                let (method, path) = (parts.next()?, parts.next()?);
                if method != "GET" || !path.starts_with("/v2/") || !path.ends_with(&suffix) {
                    return None;
                }
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }

    /// Copies `tag_in_layout` of the OCI layout at `layout` to `<dest_repo_tag>` here with
    /// `skopeo copy --preserve-digests` (`--all` for an index and every image it lists), and
    /// checks the registry now holds exactly the layout's manifest (or index) digest, which it
    /// returns. Panics with skopeo's output on failure.
    pub fn push(
        &self,
        layout: &Path,
        tag_in_layout: &str,
        dest_repo_tag: &str,
        all: bool,
    ) -> String {
        let expected = read_ref(layout, tag_in_layout).digest;
        let digest_file = self.dir.path().join(format!("push-{}.digest", expected));
        let mut cmd = Command::new("skopeo");
        // --insecure-policy: the host's policy.json is not ours to depend on.
        // --preserve-digests: skopeo must fail rather than recompress or convert anything.
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.arg("--all");
        }
        match &self.creds {
            Some((u, p)) => cmd.arg(format!("--dest-creds={u}:{p}")),
            None => cmd.arg("--dest-no-creds"),
        };
        cmd.arg("--digestfile")
            .arg(&digest_file)
            .arg(format!("oci:{}:{tag_in_layout}", layout.display()))
            .arg(format!("docker://{}", self.reference(dest_repo_tag)))
            .env("HOME", self.dir.path());
        let out = cmd
            .output()
            .expect("running skopeo (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "{cmd:?}: {}\n{}\nregistry: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.stderr()
        );
        let pushed = std::fs::read_to_string(&digest_file).expect("skopeo --digestfile");
        let pushed = pushed.trim().to_owned();
        assert_eq!(
            pushed, expected,
            "skopeo pushed {dest_repo_tag} as another manifest than the layout's"
        );
        pushed
    }
}

/// Waits up to 20 s for `GET /v2/` to answer 200 or 401; the error says whether the process
/// exited, and shows its log.
fn wait_ready(child: &mut Child, port: u16, dir: &Path) -> Result<(), (bool, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(200 | 401) = v2_status(port) {
            return Ok(());
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            return Err(match exited {
                Some(status) => (true, format!("port {port}: {status}: {log}")),
                None => (false, format!("port {port}: no answer after 20 s: {log}")),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn v2_status(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What [`umoci_image`] made.
#[derive(Clone, Debug)]
pub struct UmociImage {
    pub layout: PathBuf,
    pub tag: String,
    pub manifest: Descriptor,
    /// Both gzip, lowest first.
    pub layers: Vec<Descriptor>,
}

fn umoci(args: &[&str]) {
    let out = Command::new("umoci")
        .args(args)
        .output()
        .expect("running umoci");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "umoci {args:?}: {}\n{err}",
        out.status
    );
}

/// An image made by the real `umoci` (as root), for tests that must not only read layouts
/// written by our own builder. In the layout at `dir` (created), tagged `tag`:
///
/// - layer 1 (gzip): the busybox tree of `warren_cli::rootfs::busybox_tree`, plus
///   `etc/motd` = `"from umoci\n"` and `opt/removed/file` = `"gone\n"`;
/// - layer 2 (gzip), made from a fresh unpack of layer 1: `etc/motd` and the directory
///   `opt/removed` deleted, so umoci writes the whiteouts `etc/.wh.motd` and `opt/.wh.removed`,
///   and `etc/layer2` = `"second\n"` added;
/// - config: amd64/linux (umoci's host defaults), `Cmd` `["/bin/sh"]`, `Env`
///   `["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "WARREN_FIXTURE=umoci"]`, plus umoci's own
///   history entries and real mtimes (so digests differ from run to run).
pub fn umoci_image(dir: &Path, tag: &str) -> UmociImage {
    let work = dir.with_extension("umoci-work");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("umoci work dir");
    let image = format!("{}:{tag}", dir.display());
    let (b1, b2) = (work.join("b1"), work.join("b2"));
    let (b1s, b2s) = (b1.display().to_string(), b2.display().to_string());
    umoci(&["init", "--layout", &dir.display().to_string()]);
    umoci(&["new", "--image", &image]);

    umoci(&["unpack", "--image", &image, &b1s]);
    let rootfs = b1.join("rootfs");
    warren_cli::rootfs::busybox_tree(&rootfs).expect("busybox tree");
    std::fs::write(rootfs.join("etc/motd"), "from umoci\n").expect("motd");
    std::fs::create_dir_all(rootfs.join("opt/removed")).expect("opt/removed");
    std::fs::write(rootfs.join("opt/removed/file"), "gone\n").expect("opt/removed/file");
    umoci(&["repack", "--image", &image, &b1s]);

    // A fresh unpack, so the second diff is against layer 1 rather than the empty image.
    umoci(&["unpack", "--image", &image, &b2s]);
    let rootfs = b2.join("rootfs");
    std::fs::remove_file(rootfs.join("etc/motd")).expect("rm motd");
    std::fs::remove_dir_all(rootfs.join("opt/removed")).expect("rm opt/removed");
    std::fs::write(rootfs.join("etc/layer2"), "second\n").expect("layer2");
    umoci(&["repack", "--image", &image, &b2s]);

    umoci(&[
        "config",
        "--image",
        &image,
        "--config.env",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "--config.env",
        "WARREN_FIXTURE=umoci",
        "--config.cmd",
        "/bin/sh",
    ]);
    let _ = std::fs::remove_dir_all(&work);

    let manifest = read_ref(dir, tag);
    let m = read_json_blob(dir, &manifest.digest);
    let layers = m["layers"].as_array().expect("manifest layers");
    UmociImage {
        layout: dir.to_path_buf(),
        tag: tag.to_owned(),
        manifest,
        layers: layers.iter().map(Descriptor::from_json).collect(),
    }
}
