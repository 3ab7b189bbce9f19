//! Packing an overlay upper directory as an OCI layer: what a sandbox changed, as the tar a
//! registry would hold, so a build step's result can sit on top of its base image (the image
//! builder's half of `unpack`). overlayfs's own markers become OCI's: a 0/0 character device
//! `NAME` (a deleted file) is `.wh.NAME`, a directory with `trusted.overlay.opaque=y` (one that
//! replaced what was below) gets `.wh..wh..opq`. Entries are written in path order with their
//! owners and times, so the same tree always packs to the same bytes, and the layer's digest
//! (sha256 of the tar) names its content.
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{Hashing, Imported};

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    matches!(xattr::get(dir, "trusted.overlay.opaque"), Ok(Some(v)) if v == b"y")
}

/// Every path below `root` (not `root` itself), parents before children, in byte order.
fn walk(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()?;
        names.sort();
        let mut subdirs = Vec::new();
        for p in names {
            let meta = fs::symlink_metadata(&p)?;
            out.push(p.clone());
            if meta.is_dir() {
                subdirs.push(p);
            }
        }
        // Depth first, in order: the stack pops the last pushed first.
        stack.extend(subdirs.into_iter().rev());
    }
    out.sort();
    Ok(out)
}

fn header_for(meta: &fs::Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_size(size);
    h
}

fn empty_file(meta: &fs::Metadata) -> tar::Header {
    let mut h = header_for(meta, tar::EntryType::Regular, 0);
    h.set_mode(0o644);
    h
}

/// Writes the tree at `upper` as an OCI layer tar to `out`. Sockets, fifos and device nodes
/// other than whiteouts are left out (images carry none; the runtime gives each sandbox its
/// own `/dev`). Hard links inside the tree stay links.
pub fn pack_upper(upper: &Path, out: impl Write) -> io::Result<Imported> {
    pack_upper_except(upper, |_, _| false, out)
}

/// [`pack_upper`], leaving out the paths (relative to `upper`; a directory with everything in
/// it) that `skip` names.
pub fn pack_upper_except(
    upper: &Path,
    skip: impl Fn(&Path, &fs::Metadata) -> bool,
    out: impl Write,
) -> io::Result<Imported> {
    let mut b = tar::Builder::new(Hashing::new(out));
    b.follow_symlinks(false);
    let mut seen_inodes: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
    for path in walk(upper)? {
        let rel = path
            .strip_prefix(upper)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let meta = fs::symlink_metadata(&path)?;
        if rel.ancestors().any(|a| {
            a != Path::new("") && fs::symlink_metadata(upper.join(a)).is_ok_and(|m| skip(a, &m))
        }) {
            continue;
        }
        let ft = meta.file_type();
        if is_whiteout(&meta) {
            let name = rel
                .file_name()
                .ok_or_else(|| io::Error::other("a whiteout without a name"))?;
            let marker = rel.with_file_name(format!(".wh.{}", name.to_string_lossy()));
            b.append_data(&mut empty_file(&meta), marker, io::empty())?;
        } else if ft.is_dir() {
            b.append_data(
                &mut header_for(&meta, tar::EntryType::Directory, 0),
                rel,
                io::empty(),
            )?;
            if is_opaque(&path) {
                b.append_data(
                    &mut empty_file(&meta),
                    rel.join(".wh..wh..opq"),
                    io::empty(),
                )?;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(&path)?;
            let mut h = header_for(&meta, tar::EntryType::Symlink, 0);
            b.append_link(&mut h, rel, target)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = seen_inodes.get(&key) {
                    let mut h = header_for(&meta, tar::EntryType::Link, 0);
                    b.append_link(&mut h, rel, first)?;
                    continue;
                }
                seen_inodes.insert(key, rel.to_path_buf());
            }
            let mut h = header_for(&meta, tar::EntryType::Regular, meta.len());
            b.append_data(&mut h, rel, fs::File::open(&path)?)?;
        }
    }
    Ok(b.into_inner()?.digest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_upper_dir_packs_to_a_layer_that_unpacks_to_the_same_tree() {
        let tmp = tempfile::tempdir().expect("tmp");
        let upper = tmp.path().join("upper");
        fs::create_dir_all(upper.join("etc/app")).expect("dirs");
        fs::write(upper.join("etc/app/conf"), "x=1\n").expect("file");
        fs::set_permissions(
            upper.join("etc/app/conf"),
            fs::Permissions::from_mode(0o600),
        )
        .expect("mode");
        fs::hard_link(upper.join("etc/app/conf"), upper.join("etc/app/conf.link")).expect("ln");
        std::os::unix::fs::symlink("conf", upper.join("etc/app/current")).expect("symlink");
        // A deleted file and a directory that replaced the one below: overlayfs's markers.
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o000),
            0,
        )
        .expect("whiteout (needs root)");
        fs::create_dir(upper.join("var")).expect("dir");
        xattr::set(upper.join("var"), "trusted.overlay.opaque", b"y").expect("opaque");

        let mut first = Vec::new();
        let packed = pack_upper(&upper, &mut first).expect("pack");
        assert_eq!(packed.size, first.len() as u64);
        let mut again = Vec::new();
        assert_eq!(
            pack_upper(&upper, &mut again).expect("pack"),
            packed,
            "same bytes"
        );
        assert_eq!(first, again);

        let names: Vec<String> = tar::Archive::new(first.as_slice())
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        for want in [
            "etc/.wh.gone",
            "var/.wh..wh..opq",
            "etc/app/conf",
            "etc/app/current",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }

        // Back through the importer: the same overlay tree.
        let back = tmp.path().join("back");
        fs::create_dir(&back).expect("dir");
        crate::images::layer::unpack_blob(first.as_slice(), &back).expect("unpack");
        assert_eq!(
            fs::read_to_string(back.join("etc/app/conf")).expect("conf"),
            "x=1\n"
        );
        let conf = fs::metadata(back.join("etc/app/conf")).expect("meta");
        assert_eq!(conf.mode() & 0o777, 0o600);
        assert_eq!(
            conf.ino(),
            fs::metadata(back.join("etc/app/conf.link"))
                .expect("l")
                .ino()
        );
        assert_eq!(
            fs::read_link(back.join("etc/app/current")).expect("link"),
            Path::new("conf")
        );
        assert!(is_whiteout(
            &fs::symlink_metadata(back.join("etc/gone")).expect("wh")
        ));
        assert!(is_opaque(&back.join("var")));
    }
}
