//! An image's own files, read through its layers (bottom first) as the overlay shows them:
//! the topmost layer that has a path wins, whiteouts and opaque directories hide what is below,
//! and a layer's links are followed inside the image, never on the host. COPY steps resolve
//! their destinations and owners here; creates and builds ask whether a user exists.
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::copy::{invalid, CopyError};

/// A path inside the image with `..` taken lexically (never above `/`), as the kernel resolves
/// a symlink's target inside a root.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The image's entry at `rel` as the overlay shows it: the topmost layer that has it, unless a
/// whiteout, a non-directory parent or an opaque directory hides it; and that entry's path on
/// the host. Each layer is walked a component at a time without following its links: a layer
/// is the image's content, and a link in it points inside the sandbox, never at the host.
pub(crate) fn lookup(layers: &[PathBuf], rel: &Path) -> Option<(fs::Metadata, PathBuf)> {
    let parts: Vec<Component> = rel.components().collect();
    'layers: for layer in layers.iter().rev() {
        let mut p = layer.clone();
        let mut opaque = false;
        for (i, c) in parts.iter().enumerate() {
            p.push(c);
            let Ok(m) = fs::symlink_metadata(&p) else {
                if opaque {
                    return None;
                }
                continue 'layers;
            };
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return None;
            }
            if i + 1 == parts.len() {
                return Some((m, p));
            }
            if !m.is_dir() {
                return None;
            }
            opaque |= matches!(xattr::get(&p, "trusted.overlay.opaque"), Ok(Some(v)) if v == b"y");
        }
    }
    None
}

/// Whether the image has `rel` as a directory, following its symlinks.
pub(crate) fn is_image_dir(layers: &[PathBuf], rel: &Path) -> Result<bool, CopyError> {
    let mut path = resolve_parents(layers, rel)?;
    for _ in 0..40 {
        match lookup(layers, &path) {
            Some((m, _)) if m.is_dir() => return Ok(true),
            Some((m, host)) if m.file_type().is_symlink() => {
                let target = fs::read_link(&host)?;
                let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
                let next = PathBuf::from("/").join(base).join(target);
                path = normalize(&next);
                path = resolve_parents(layers, &path)?;
            }
            _ => return Ok(false),
        }
    }
    Ok(false)
}

/// `rel` with every symlink among its parents followed inside the image (at most 40).
pub fn resolve_parents(layers: &[PathBuf], rel: &Path) -> Result<PathBuf, CopyError> {
    let mut path = rel.to_path_buf();
    'again: for _ in 0..40 {
        let parts: Vec<_> = path.components().collect();
        let mut prefix = PathBuf::new();
        for (i, c) in parts.iter().enumerate().take(parts.len().saturating_sub(1)) {
            prefix.push(c);
            if let Some((m, host)) = lookup(layers, &prefix) {
                if m.file_type().is_symlink() {
                    let target = fs::read_link(&host)?;
                    let base = prefix.parent().unwrap_or(Path::new("")).to_path_buf();
                    let mut next = if target.is_absolute() {
                        PathBuf::from("/").join(target)
                    } else {
                        PathBuf::from("/").join(base).join(target)
                    };
                    for rest in &parts[i + 1..] {
                        next.push(rest);
                    }
                    path = normalize(&next);
                    continue 'again;
                }
            }
        }
        return Ok(path);
    }
    Err(invalid(format!(
        "{} is behind too many symlinks",
        rel.display()
    )))
}

/// The uid and gid of `owner` (`user`, `user:group`, `uid`, `uid:gid`) in the image's
/// `/etc/passwd` and `/etc/group`; a user's own group when none is named.
pub fn owner_ids(layers: &[PathBuf], owner: &str) -> Result<(u32, u32), CopyError> {
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let passwd = read_image_file(layers, "etc/passwd");
    let (uid, own_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, find(&passwd, 2, user).and_then(|f| f[3].parse().ok())),
        Err(_) => {
            let f = find(&passwd, 0, user).ok_or_else(|| {
                invalid(format!("user {user:?} is not in the image's /etc/passwd"))
            })?;
            (
                f[2].parse()
                    .map_err(|_| invalid("a bad /etc/passwd line"))?,
                f[3].parse().ok(),
            )
        }
    };
    let gid = match group {
        None => own_gid.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => find(&read_image_file(layers, "etc/group"), 0, g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| invalid(format!("group {g:?} is not in the image's /etc/group")))?,
        },
    };
    Ok((uid, gid))
}

/// The home directory of `user` (a name or uid) in the image's `/etc/passwd`.
pub fn home_of(layers: &[PathBuf], user: &str) -> Option<String> {
    let passwd = read_image_file(layers, "etc/passwd");
    let name = user.split(':').next().unwrap_or(user);
    let at = if name.parse::<u32>().is_ok() { 2 } else { 0 };
    find(&passwd, at, name)
        .and_then(|f| f.get(5).map(|h| (*h).to_owned()))
        .filter(|h| h.starts_with('/'))
}

/// The fields of the first line whose field `at` is `value` (at least 4 fields).
fn find<'a>(text: &'a str, at: usize, value: &str) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[at] == value)
}

/// A small text file of the image (≤ 1 MiB), following no link; empty when absent.
pub(crate) fn read_image_file(layers: &[PathBuf], rel: &str) -> String {
    let mut text = String::new();
    if let Some((m, host)) = lookup(layers, Path::new(rel)) {
        if m.is_file() {
            if let Ok(f) = fs::File::open(host) {
                let _ = f.take(1 << 20).read_to_string(&mut text);
            }
        }
    }
    text
}

/// Whether the image's `/etc/passwd` names user `name` (read at most 1 MiB).
pub fn passwd_names_user(layers: &[PathBuf], name: &str) -> bool {
    find(&read_image_file(layers, "etc/passwd"), 0, name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn passwd_is_read_from_the_top_layer_that_has_it() {
        let dir = tempfile::tempdir().expect("dir");
        let layer = |n: &str, passwd: Option<&str>| {
            let root = dir.path().join(n);
            std::fs::create_dir_all(root.join("etc")).expect("etc");
            if let Some(text) = passwd {
                std::fs::write(root.join("etc/passwd"), text).expect("passwd");
            }
            root
        };
        let base = layer(
            "base",
            Some("root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
        );
        let empty = layer("empty", None);
        let replaced = layer("replaced", Some("root:x:0:0::/root:/bin/sh\n"));
        assert!(passwd_names_user(&[base.clone(), empty.clone()], "user"));
        assert!(!passwd_names_user(&[base.clone(), replaced], "user"));
        assert!(!passwd_names_user(std::slice::from_ref(&base), "nobody"));
        // A link in a layer is never followed to the host.
        let linked = dir.path().join("linked");
        std::fs::create_dir_all(linked.join("etc")).expect("etc");
        std::os::unix::fs::symlink("/etc/passwd", linked.join("etc/passwd")).expect("link");
        assert!(!passwd_names_user(&[base, linked], "root"));
    }

    #[test]
    fn a_layer_never_leads_to_the_host() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layer = tmp.path().join("l1");
        fs::create_dir_all(&layer).expect("layer");
        // A hostile image: its `etc` is a link to the host's root.
        symlink("/", layer.join("etc")).expect("link");
        let layers = vec![layer];
        assert_eq!(read_image_file(&layers, "etc/passwd"), "");
        assert!(lookup(&layers, Path::new("etc/passwd")).is_none());
        assert!(owner_ids(&layers, "root").is_err(), "not the host's root");
    }
}
