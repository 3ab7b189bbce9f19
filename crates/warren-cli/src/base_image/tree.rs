//! The tree debootstrap made: the user and sudo set up in it, caches cleaned, packed into a tar
//! that keeps what an image needs (owners, setuid, hard links), and deleted safely afterwards.
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

const PATH_IN_TREE: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A build directory, removed when dropped (on success and on every error path).
pub(super) struct WorkDir(pub(super) PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.0) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Unmounts whatever a failed debootstrap left mounted below `dir` (its /proc, /sys), then
/// deletes it; refuses to delete while anything is still mounted there (it could be the host's).
pub(super) fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(());
    };
    let mounted_below = || -> Vec<PathBuf> {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut v: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|m| PathBuf::from(unescape_mountinfo(m)))
            .filter(|m| m.starts_with(&dir))
            .collect();
        v.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        v
    };
    for m in mounted_below() {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    let left = mounted_below();
    if !left.is_empty() {
        bail!(
            "not deleting {}: still mounted below it: {left:?}",
            dir.display()
        );
    }
    fs::remove_dir_all(&dir).with_context(|| format!("deleting {}", dir.display()))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `args` inside the tree.
fn in_tree(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("chroot")
        .arg(root)
        .args(args)
        .env_clear()
        .env("PATH", PATH_IN_TREE)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running chroot {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "chroot {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Installs `packages` (and what they depend on, not what they recommend) with the tree's own
/// apt, from the mirror debootstrap wrote into its sources.
pub(super) fn apt_install(root: &Path, packages: &[&str]) -> anyhow::Result<()> {
    in_tree(root, &["apt-get", "update", "-q"])?;
    let mut args = vec![
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
    ];
    args.extend_from_slice(packages);
    in_tree(root, &args)
}

/// Writes `text` at `rel` as a plain 0644 file, replacing a symlink (a mount target must not
/// lead anywhere else).
fn write_plain(root: &Path, rel: &str, text: &str) -> anyhow::Result<()> {
    let p = root.join(rel);
    if fs::symlink_metadata(&p).is_ok() {
        fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Deletes what is inside `dir` (not `dir` itself) whose name `pick` accepts.
fn clear_dir(dir: &Path, pick: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in rd {
        let entry = entry?;
        if !pick(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        }
        .with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// Empties the regular files below `dir`, keeping them (login tools expect wtmp and lastlog).
fn truncate_logs(dir: &Path) -> anyhow::Result<()> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in rd {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            truncate_logs(&entry.path())?;
        } else if ft.is_file() {
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(entry.path())
                .with_context(|| format!("truncating {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The user, sudo, and the cleaning that keeps the image small and free of this host's names.
pub(super) fn setup_tree(root: &Path) -> anyhow::Result<()> {
    in_tree(root, &["groupadd", "--gid", "1000", "user"])?;
    let useradd = "useradd --uid 1000 --gid 1000 --create-home --home-dir /home/user \
                   --shell /bin/bash --comment user user";
    in_tree(root, &useradd.split_whitespace().collect::<Vec<_>>())?;
    let sudoers = root.join("etc/sudoers.d/user");
    fs::write(&sudoers, "user ALL=(ALL) NOPASSWD:ALL\n")
        .with_context(|| format!("writing {}", sudoers.display()))?;
    fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440))?;
    in_tree(
        root,
        &["visudo", "--check", "--file", "/etc/sudoers.d/user"],
    )?;

    // Warren mounts each sandbox's own over these; debootstrap copied the host's.
    write_plain(root, "etc/hostname", "")?;
    write_plain(root, "etc/resolv.conf", "")?;
    write_plain(
        root,
        "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    if root.join("etc/machine-id").exists() {
        write_plain(root, "etc/machine-id", "")?;
    }

    clear_dir(&root.join("var/lib/apt/lists"), |_| true)?;
    clear_dir(&root.join("var/cache/apt"), |n| n.ends_with(".bin"))?;
    clear_dir(&root.join("var/cache/apt/archives"), |n| {
        n.ends_with(".deb")
    })?;
    clear_dir(&root.join("var/cache/debconf"), |n| n.ends_with("-old"))?;
    clear_dir(&root.join("var/lib/dpkg"), |n| n.ends_with("-old"))?;
    // As Debian's slim images: no manuals or translations (70 MB); each package keeps its
    // copyright file.
    clear_dir(&root.join("usr/share/man"), |_| true)?;
    clear_dir(&root.join("usr/share/locale"), |n| n != "locale.alias")?;
    if let Ok(rd) = fs::read_dir(root.join("usr/share/doc")) {
        // Real directories only: a link would lead out of the tree, onto the build host.
        for pkg in rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        {
            clear_dir(&pkg.path(), |n| n != "copyright")?;
        }
    }
    clear_dir(&root.join("tmp"), |_| true)?;
    clear_dir(&root.join("var/tmp"), |_| true)?;
    truncate_logs(&root.join("var/log"))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Writes a tar of the tree at `root` to `out`, keeping numeric owners and full modes (sudo is
/// setuid root), hard links as links, and leaving out device nodes, fifos and sockets (the
/// runtime gives each sandbox its own /dev; image import refuses device nodes).
pub fn pack_tree(root: &Path, out: &Path) -> anyhow::Result<()> {
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, file));
    // `/` itself, 0755: otherwise non-root users cannot traverse it.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(fs::metadata(root)?.mtime().max(0) as u64);
    b.append_data(&mut h, "./", std::io::empty())?;
    let mut links = HashMap::new();
    pack_dir(&mut b, root, Path::new(""), &mut links)
        .with_context(|| format!("archiving {}", root.display()))?;
    let mut w = b
        .into_inner()
        .context("finishing the tar")?
        .into_inner()
        .map_err(|e| e.into_error())
        .context("writing the tar")?;
    w.flush()?;
    w.sync_all().context("syncing the tar")?;
    Ok(())
}

type Builder = tar::Builder<std::io::BufWriter<fs::File>>;

fn pack_dir(
    b: &mut Builder,
    root: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        // Permission bits with setuid/setgid/sticky, without the file-type bits.
        h.set_mode(meta.mode() & 0o7777);
        if ft.is_dir() {
            h.set_size(0);
            b.append_data(&mut h, &rel, std::io::empty())?;
            pack_dir(b, root, &rel, links)?;
        } else if ft.is_symlink() {
            h.set_size(0);
            b.append_link(&mut h, &rel, fs::read_link(&path)?)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = links.get(&key) {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, &rel, first)?;
                    continue;
                }
                links.insert(key, rel.clone());
            }
            b.append_data(&mut h, &rel, fs::File::open(&path)?)?;
        }
    }
    Ok(())
}
