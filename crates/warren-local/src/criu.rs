//! What CRIU needs beyond crun's own options to checkpoint and restore a runc sandbox as
//! Warren makes it, given in a CRIU configuration file (`CRIU_CONFIG_FILE`, which CRIU reads
//! also when crun drives it through libcriu):
//! - the sandbox's output goes to host files outside its mount namespace (`stdout.log`,
//!   `stderr.log`): marked external at dump (`external file[mnt:inode]`, the keys kept in the
//!   image) and handed back at restore as the restoring crun's own stdout and stderr
//!   (`inherit-fd`);
//! - the host's connections into the sandbox are not part of it: dumped and restored closed
//!   (`tcp-close`);
//! - its network namespace is made again at restore, and the sandbox end of a veth pair the
//!   host made beforehand is moved into it (`external netdev[eth0]:<link>`).
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The CRIU release runc sandboxes pause with (`scripts/criu-version`).
pub const CRIU_VERSION: &str = include_str!("../../../scripts/criu-version").trim_ascii();
/// The crun release built against it (`scripts/crun-version`).
pub const CRUN_VERSION: &str = include_str!("../../../scripts/crun-version").trim_ascii();

/// Where `scripts/build-criu.sh` installs CRIU.
pub fn pinned_criu_dir() -> PathBuf {
    PathBuf::from(format!("/opt/warren/criu/{CRIU_VERSION}"))
}

/// Where `scripts/build-criu.sh` installs crun with CRIU.
pub fn pinned_crun() -> PathBuf {
    PathBuf::from(format!("/opt/warren/crun/{CRUN_VERSION}/bin/crun"))
}

/// `PATH` for crun: the pinned CRIU first (libcriu runs the `criu` it finds there), and its
/// `shims/` before that, when installed: CRIU archives a sandbox's tmpfs mounts (`/dev/shm`,
/// memory all of it) with `tar --gzip`, and gzip takes ~25 MB/s here (22 s for 512 MiB); the
/// `gzip` there, written by `scripts/build-criu.sh`, is zstd at its fastest level (reading
/// gzip too). It is outside the data dir because CRIU runs `tar` as the sandbox's root.
pub fn path_with_criu() -> Option<std::ffi::OsString> {
    let dir = pinned_criu_dir();
    let (sbin, shims) = (dir.join("sbin"), dir.join("shims"));
    let first: Vec<PathBuf> = [(shims.join("gzip"), shims), (sbin.join("criu"), sbin)]
        .into_iter()
        .filter(|(bin, _)| bin.is_file())
        .map(|(_, d)| d)
        .collect();
    if first.is_empty() {
        return None;
    }
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let all: Vec<PathBuf> = first
        .into_iter()
        .chain(std::env::split_paths(&rest))
        .collect();
    std::env::join_paths(all).ok()
}

/// The file in a checkpoint image naming its external output files (`fd key` per line).
const STDIO_KEYS: &str = "warren-stdio";

/// Options both directions need: open TCP connections dumped and restored closed, file locks
/// kept.
const COMMON: &str = "tcp-close\nfile-locks\n";

/// The external-file keys of the container init's stdout and stderr when they are host files.
fn stdio_keys(pid: u32) -> io::Result<Vec<(u32, String)>> {
    let mut keys = Vec::new();
    for fd in [1u32, 2] {
        let path = format!("/proc/{pid}/fd/{fd}");
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?;
        let mnt_id: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("no mnt_id in /proc/{pid}/fdinfo/{fd}")))?;
        let ino = std::os::unix::fs::MetadataExt::ino(&meta);
        keys.push((fd, format!("file[{mnt_id:x}:{ino:x}]")));
    }
    Ok(keys)
}

/// The work directory beside an image: CRIU's logs and the configuration file, kept out of
/// the image so they never change what its receipt hashed.
pub fn work_dir(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".work");
    PathBuf::from(name)
}

fn write_config(work: &Path, text: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(work)?;
    let path = work.join("criu.conf");
    fs::write(&path, text)?;
    Ok(path)
}

/// Prepares the dump of the container whose init is `pid` into `image` (made here, with the
/// output files' keys in it): the configuration file to point CRIU at.
pub fn dump_config(pid: u32, image: &Path) -> io::Result<PathBuf> {
    let keys = stdio_keys(pid)?;
    let mut text = COMMON.to_owned();
    for (_, key) in &keys {
        text.push_str(&format!("external {key}\n"));
    }
    fs::create_dir_all(image)?;
    keep_keys(image, &keys)?;
    write_config(&work_dir(image), &text)
}

/// Writes the output files' keys into the image.
fn keep_keys(image: &Path, keys: &[(u32, String)]) -> io::Result<()> {
    let text: String = keys.iter().map(|(fd, k)| format!("{fd} {k}\n")).collect();
    fs::write(image.join(STDIO_KEYS), text)
}

/// The configuration file for restoring `image` from `bundle`: the restoring process's
/// stdout and stderr standing in for the output files it names, `link` (a veth end in the
/// host's namespace) becoming the sandbox's `eth0`, and every process going into the
/// bundle's cgroup (crun moves only the init there; the rest would go back to the cgroup
/// they were dumped from, a fork's source's).
pub fn restore_config(image: &Path, bundle: &Path, link: Option<&str>) -> io::Result<PathBuf> {
    let mut text = COMMON.to_owned();
    let config: serde_json::Value = serde_json::from_slice(&fs::read(bundle.join("config.json"))?)
        .map_err(|e| io::Error::other(format!("the bundle's config.json: {e}")))?;
    if let Some(cgroup) = config["linux"]["cgroupsPath"].as_str() {
        text.push_str(&format!("cgroup-root {cgroup}\n"));
    }
    // The older mount engine: the newer one opens the bind mounts' sources (the agent binary,
    // the sandbox's /etc files) as the sandbox's root, who may not reach them on the host.
    text.push_str("mntns-compat-mode\n");
    let keys = fs::read_to_string(image.join(STDIO_KEYS)).map_err(|e| {
        io::Error::other(format!(
            "{}: {e} (not a checkpoint Warren wrote)",
            image.join(STDIO_KEYS).display()
        ))
    })?;
    for line in keys.lines() {
        if let Some((fd, key)) = line.split_once(' ') {
            text.push_str(&format!("inherit-fd fd[{fd}]:{key}\n"));
        }
    }
    if let Some(link) = link {
        text.push_str(&format!("external netdev[eth0]:{link}\n"));
    }
    write_config(&work_dir(image), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_keeps_the_keys_its_restore_hands_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("paused");
        fs::create_dir_all(&image).expect("image");
        let keys = vec![(1, "file[1b:a3]".to_owned()), (2, "file[1b:a4]".to_owned())];
        keep_keys(&image, &keys).expect("keep");
        let bundle = dir.path().join("bundle");
        fs::create_dir_all(&bundle).expect("bundle");
        fs::write(
            bundle.join("config.json"),
            r#"{"linux": {"cgroupsPath": "/warren-abcd/s1"}}"#,
        )
        .expect("config.json");
        let conf = restore_config(&image, &bundle, Some("wpabcd3")).expect("config");
        assert!(conf.starts_with(work_dir(&image)));
        let text = fs::read_to_string(conf).expect("read");
        assert!(text.contains("inherit-fd fd[1]:file[1b:a3]\n"), "{text}");
        assert!(text.contains("inherit-fd fd[2]:file[1b:a4]\n"), "{text}");
        assert!(text.contains("external netdev[eth0]:wpabcd3\n"), "{text}");
        assert!(text.contains("tcp-close\n"), "{text}");
        assert!(text.contains("cgroup-root /warren-abcd/s1\n"), "{text}");
    }

    #[test]
    fn the_keys_are_of_this_processs_output_files() {
        // The test runner's own stdout may be anything; a file opened here is a file.
        let dir = tempfile::tempdir().expect("tempdir");
        let f = fs::File::create(dir.path().join("out")).expect("file");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
        assert!(info.contains("mnt_id:"));
        let keys = stdio_keys(std::process::id()).expect("keys");
        assert!(keys.iter().all(|(_, k)| k.starts_with("file[")));
    }
}
