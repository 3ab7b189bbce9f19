//! Unpacking an untrusted root-filesystem tar without ever writing outside its directory.
//!
//! Real images are full of absolute symlinks (`/lib -> usr/lib`, `/etc/alternatives/...`); they
//! are kept as they are because they resolve inside the sandbox. What is refused: paths with
//! `..`, entries whose parent directory on disk is a symlink (writing through it would land
//! wherever it points, possibly on the host), hard links that leave the tree, device nodes, and
//! layer whiteouts that name no file of their directory (`.wh..`, `.wh...`).
//!
//! A copy out of a sandbox ([`unpack_copy`]) lands on the user's machine, where an absolute
//! symlink would point into the host: there, links whose target is absolute or climbs out of the
//! tree are not made, and reported.
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// Why a tar was refused or could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar is hostile or malformed; nothing it names was written outside the target.
    #[error("rejected tar: {0}")]
    Rejected(String),
    /// Reading the tar or writing the tree failed.
    #[error("unpacking {path}: {source}")]
    Io {
        /// What was being written.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The tar crate reports malformed headers and truncated data as I/O errors of these kinds;
/// they are the tar's fault, not the disk's.
fn entry_error(dest: &Path, e: io::Error) -> UnpackError {
    match e.kind() {
        io::ErrorKind::Other
        | io::ErrorKind::InvalidData
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::UnexpectedEof => {
            UnpackError::Rejected(format!("malformed entry {}: {e}", dest.display()))
        }
        _ => io_err(dest)(e),
    }
}

/// Turns an entry's path into a path relative to the root, refusing `..` and anything but
/// plain names. A leading `/` or `./` is dropped, as tar tools do.
pub fn clean_relative(raw: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Rejected(format!(
                    "entry {} contains '..'",
                    raw.display()
                )))
            }
            Component::Prefix(_) => {
                return Err(UnpackError::Rejected(format!(
                    "entry {} has a path prefix",
                    raw.display()
                )))
            }
        }
    }
    Ok(out)
}

/// Checks that no directory between `root` and `rel`'s parent is a symlink (or a non-directory),
/// creating missing ones as plain directories.
fn ensure_parents(root: &Path, rel: &Path) -> Result<(), UnpackError> {
    let mut cur = root.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Rejected(format!(
                    "entry {} would be written through the symlink {}",
                    rel.display(),
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                )))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(UnpackError::Rejected(format!(
                    "entry {} has a non-directory parent",
                    rel.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(io_err(&cur))?;
            }
            Err(e) => return Err(io_err(&cur)(e)),
        }
    }
    Ok(())
}

/// Removes whatever stands at `path` unless it is a directory and the entry is one too, so that
/// a later entry replaces an earlier one and never writes through a symlink left there.
fn clear_target(path: &Path, entry_is_dir: bool) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && !m.file_type().is_symlink() => {
            if entry_is_dir {
                Ok(())
            } else {
                fs::remove_dir_all(path).map_err(io_err(path))
            }
        }
        Ok(_) => fs::remove_file(path).map_err(io_err(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// What the tar is unpacked as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A whole image tree: owners kept.
    Image,
    /// One registry layer: owners kept, whiteouts translated, device nodes skipped.
    Layer,
    /// Files copied out of a sandbox onto the user's machine: owners not kept, links that
    /// point outside the tree not made.
    Copy,
}

/// Unpacks the tar read from `reader` into `root` (which must exist), keeping ownership, modes
/// (setuid included: `sudo` needs it) and mtimes: an image.
pub fn unpack(reader: impl Read, root: &Path) -> Result<(), UnpackError> {
    unpack_entries(reader, root, Kind::Image).map(drop)
}

/// A symlink [`unpack_copy`] did not make: where it was, and where it pointed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLink {
    /// The link, relative to the root.
    pub path: PathBuf,
    /// Its target, as the tar gave it.
    pub target: PathBuf,
}

/// Unpacks files copied out of a sandbox into `root` (which must exist) without their owners.
/// Symlinks whose target is absolute or leaves `root` are not made (on this machine they would
/// point at its own files): they are returned, for the caller to report.
pub fn unpack_copy(reader: impl Read, root: &Path) -> Result<Vec<SkippedLink>, UnpackError> {
    unpack_entries(reader, root, Kind::Copy)
}

/// Unpacks one layer of a registry image into its own directory, to be stacked under others by
/// overlayfs: OCI whiteouts become overlayfs's own (`.wh.NAME` a 0/0 character device `NAME`,
/// `.wh..wh..opq` the `trusted.overlay.opaque` attribute on its directory). Device nodes are
/// skipped rather than refused (old images carry `/dev` entries; the runtime makes `/dev`).
pub fn unpack_layer(reader: impl Read, root: &Path) -> Result<(), UnpackError> {
    unpack_entries(reader, root, Kind::Layer).map(drop)
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Writes a layer's whiteout entry `rel`, if it is one; whether it was.
fn whiteout(root: &Path, rel: &Path) -> Result<bool, UnpackError> {
    let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
        return Ok(false);
    };
    if !name.starts_with(WHITEOUT) {
        return Ok(false);
    }
    let hidden = &name[WHITEOUT.len()..];
    // `.wh..` and `.wh...` would whiteout the directory itself or its parent: joined to the
    // directory, `..` walks out of the layer (and clearing it emptied the store's scratch
    // space). Anything that is not one plain name is refused before anything is written.
    let one_name = matches!(
        Path::new(hidden)
            .components()
            .collect::<Vec<_>>()
            .as_slice(),
        [Component::Normal(_)]
    );
    if !one_name {
        return Err(UnpackError::Rejected(format!(
            "whiteout {} names no file of its directory",
            rel.display()
        )));
    }
    ensure_parents(root, rel)?;
    let dir = root.join(rel.parent().unwrap_or(Path::new("")));
    if name == OPAQUE {
        xattr::set(&dir, "trusted.overlay.opaque", b"y").map_err(io_err(&dir))?;
        return Ok(true);
    }
    // `.wh..wh.*` other than the opaque marker is aufs bookkeeping (hard-link dirs): no file.
    if hidden.starts_with(WHITEOUT) {
        return Ok(true);
    }
    let dest = dir.join(hidden);
    clear_target(&dest, false)?;
    nix::sys::stat::mknod(
        &dest,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        nix::sys::stat::makedev(0, 0),
    )
    .map_err(|e| io_err(&dest)(e.into()))?;
    Ok(true)
}

/// Whether symlink `rel` (relative to the root) pointing at `target` resolves inside the root
/// whatever the tree holds: a relative target whose `..` all come first, no more of them than
/// the link has parent directories. A `..` after a name is refused too: the name may be a link
/// itself, and the kernel resolves `..` from where that link points, not lexically.
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    let depth = rel.parent().map_or(0, |p| p.components().count());
    let mut up = 0;
    let mut named = false;
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if !named => up += 1,
            Component::Normal(_) => named = true,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    up <= depth
}

fn unpack_entries(
    reader: impl Read,
    root: &Path,
    kind_of: Kind,
) -> Result<Vec<SkippedLink>, UnpackError> {
    let layer = kind_of == Kind::Layer;
    let keep_owners = kind_of != Kind::Copy;
    let mut skipped = Vec::new();
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(keep_owners);
    archive.set_preserve_ownerships(keep_owners);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    let entries = archive.entries().map_err(io_err(root))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| UnpackError::Rejected(format!("malformed tar: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| UnpackError::Rejected(format!("bad entry path: {e}")))?
            .into_owned();
        let rel = clean_relative(&raw)?;
        if rel.as_os_str().is_empty() {
            continue; // the root itself ("./")
        }
        let kind = entry.header().entry_type();
        if layer && whiteout(root, &rel)? {
            continue;
        }
        match kind {
            EntryType::Block | EntryType::Char if layer => continue,
            EntryType::Block | EntryType::Char => {
                return Err(UnpackError::Rejected(format!(
                    "entry {} is a device node",
                    rel.display()
                )))
            }
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => continue,
            EntryType::Symlink if kind_of == Kind::Copy => {
                let target = entry
                    .link_name()
                    .map_err(|e| UnpackError::Rejected(format!("bad symlink: {e}")))?
                    .unwrap_or_default()
                    .into_owned();
                if !link_stays_inside(&rel, &target) {
                    skipped.push(SkippedLink { path: rel, target });
                    continue;
                }
            }
            _ => {}
        }
        ensure_parents(root, &rel)?;
        let dest = root.join(&rel);
        clear_target(&dest, kind == EntryType::Directory)?;
        if kind == EntryType::Link {
            let target = entry
                .link_name()
                .map_err(|e| UnpackError::Rejected(format!("bad hard link: {e}")))?
                .ok_or_else(|| {
                    UnpackError::Rejected(format!("hard link {} has no target", rel.display()))
                })?;
            let target_rel = clean_relative(&target)?;
            ensure_parents(root, &target_rel)?;
            let src = root.join(&target_rel);
            let meta = fs::symlink_metadata(&src).map_err(|_| {
                UnpackError::Rejected(format!(
                    "hard link {} points at {} which is not in the image",
                    rel.display(),
                    target_rel.display()
                ))
            })?;
            if !meta.is_file() {
                return Err(UnpackError::Rejected(format!(
                    "hard link {} points at a non-file",
                    rel.display()
                )));
            }
            fs::hard_link(&src, &dest).map_err(io_err(&dest))?;
            continue;
        }
        entry.unpack(&dest).map_err(|e| entry_error(&rel, e))?;
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap_or_default()
    }

    fn header(kind: EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    fn raw_path(h: &mut tar::Header, p: &str) {
        // set_path refuses '..', so write the name field directly as a hostile tool would.
        let name = &mut h.as_old_mut().name;
        name[..p.len()].copy_from_slice(p.as_bytes());
        h.set_cksum();
    }

    #[test]
    fn keeps_absolute_symlinks_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = tar_with(|b| {
            let mut h = header(EntryType::Directory, 0);
            b.append_data(&mut h, "usr/lib", io::empty()).expect("dir");
            let mut h = header(EntryType::Symlink, 0);
            b.append_link(&mut h, "lib", "/usr/lib").expect("link");
            let mut h = header(EntryType::Regular, 2);
            b.append_data(&mut h, "usr/lib/x", &b"hi"[..])
                .expect("file");
        });
        unpack(&data[..], dir.path()).expect("unpack");
        assert_eq!(
            fs::read_link(dir.path().join("lib")).expect("readlink"),
            Path::new("/usr/lib")
        );
        assert_eq!(fs::read(dir.path().join("usr/lib/x")).expect("read"), b"hi");
    }

    #[test]
    fn rejects_dotdot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = dir.path().join("root");
        fs::create_dir(&inner).expect("mkdir");
        let data = tar_with(|b| {
            let mut h = header(EntryType::Regular, 2);
            raw_path(&mut h, "../escaped");
            b.append(&h, &b"hi"[..]).expect("append");
        });
        assert!(matches!(
            unpack(&data[..], &inner),
            Err(UnpackError::Rejected(_))
        ));
        assert!(!dir.path().join("escaped").exists());
    }

    #[test]
    fn rejects_writing_through_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let data = tar_with(|b| {
            let mut h = header(EntryType::Symlink, 0);
            b.append_link(&mut h, "evil", outside.path()).expect("link");
            let mut h = header(EntryType::Regular, 2);
            b.append_data(&mut h, "evil/pwned", &b"hi"[..])
                .expect("file");
        });
        assert!(matches!(
            unpack(&data[..], dir.path()),
            Err(UnpackError::Rejected(_))
        ));
        assert!(!outside.path().join("pwned").exists());
    }

    #[test]
    fn replaces_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let target = outside.path().join("victim");
        fs::write(&target, b"safe").expect("write");
        let data = tar_with(|b| {
            let mut h = header(EntryType::Symlink, 0);
            b.append_link(&mut h, "f", &target).expect("link");
            let mut h = header(EntryType::Regular, 4);
            b.append_data(&mut h, "f", &b"evil"[..]).expect("file");
        });
        unpack(&data[..], dir.path()).expect("unpack");
        assert_eq!(fs::read(&target).expect("read"), b"safe");
        assert_eq!(fs::read(dir.path().join("f")).expect("read"), b"evil");
    }

    #[test]
    fn rejects_devices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = tar_with(|b| {
            let mut h = header(EntryType::Char, 0);
            b.append_data(&mut h, "dev/mem", io::empty()).expect("dev");
        });
        assert!(matches!(
            unpack(&data[..], dir.path()),
            Err(UnpackError::Rejected(_))
        ));
    }

    #[test]
    fn rejects_hardlink_outside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = tar_with(|b| {
            let mut h = header(EntryType::Link, 0);
            b.append_link(&mut h, "shadow", "/etc/shadow")
                .expect("link");
        });
        assert!(matches!(
            unpack(&data[..], dir.path()),
            Err(UnpackError::Rejected(_))
        ));
    }

    #[test]
    fn rejects_whiteouts_of_the_dir_itself_or_its_parent() {
        // Beside the layer's staging tree, as a concurrent import's tar is in the store.
        let dir = tempfile::tempdir().expect("tempdir");
        let neighbour = dir.path().join("other-import.tar");
        fs::write(&neighbour, b"theirs").expect("write");
        for name in [".wh...", "sub/.wh...", ".wh..", ".wh."] {
            let root = dir.path().join("staging");
            fs::create_dir(&root).expect("mkdir");
            let data = tar_with(|b| {
                let mut h = header(EntryType::Regular, 2);
                b.append_data(&mut h, "sub/kept", &b"hi"[..]).expect("file");
                let mut h = header(EntryType::Regular, 0);
                b.append_data(&mut h, name, io::empty()).expect("whiteout");
            });
            let got = unpack_layer(&data[..], &root);
            assert!(
                matches!(got, Err(UnpackError::Rejected(_))),
                "{name}: {got:?}"
            );
            assert_eq!(
                fs::read(&neighbour).expect("neighbour"),
                b"theirs",
                "{name}"
            );
            assert!(
                root.join("sub/kept").is_file(),
                "{name}: the layer's own tree"
            );
            fs::remove_dir_all(&root).expect("cleanup");
        }
        // A plain whiteout and the opaque marker still work.
        let root = dir.path().join("staging");
        fs::create_dir(&root).expect("mkdir");
        let data = tar_with(|b| {
            for name in ["sub/.wh.gone", "sub/.wh..wh..opq"] {
                let mut h = header(EntryType::Regular, 0);
                b.append_data(&mut h, name, io::empty()).expect("whiteout");
            }
        });
        unpack_layer(&data[..], &root).expect("unpack");
        assert!(fs::symlink_metadata(root.join("sub/gone")).is_ok());
    }

    #[test]
    fn copies_skip_links_that_leave_the_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = tar_with(|b| {
            let mut h = header(EntryType::Directory, 0);
            b.append_data(&mut h, "a/b", io::empty()).expect("dir");
            for (path, target) in [
                ("abs", "/etc/passwd"),
                ("up", "../outside"),
                ("a/b/up2", "../../../outside"),
                ("a/loop", "b/../../.."),
                ("a/b/in", "../../a/b"),
                ("same", "a/b"),
            ] {
                let mut h = header(EntryType::Symlink, 0);
                b.append_link(&mut h, path, target).expect("link");
            }
        });
        let skipped = unpack_copy(&data[..], dir.path()).expect("unpack");
        let names: Vec<_> = skipped.iter().map(|s| s.path.clone()).collect();
        assert_eq!(
            names,
            ["abs", "up", "a/b/up2", "a/loop"]
                .map(PathBuf::from)
                .to_vec()
        );
        assert_eq!(skipped[0].target, Path::new("/etc/passwd"));
        for gone in ["abs", "up", "a/b/up2", "a/loop"] {
            assert!(
                fs::symlink_metadata(dir.path().join(gone)).is_err(),
                "{gone}"
            );
        }
        for kept in ["a/b/in", "same"] {
            assert!(
                fs::symlink_metadata(dir.path().join(kept))
                    .expect(kept)
                    .file_type()
                    .is_symlink(),
                "{kept}"
            );
        }
    }
}
