//! Putting a directory copied out of a sandbox onto this machine. The tar comes from whatever
//! runs in the sandbox, so it is unpacked into a scratch directory beside the destination (links
//! pointing outside the copy are not made), checked against what the destination already holds,
//! and only then moved into place: a refused tar leaves the destination as it was.
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use warren_local::unpack::{unpack_copy, SkippedLink};

/// Unpacks the tar read from `reader` into the directory `dest`: made (with its parents) when
/// missing, merged with what it holds otherwise. A file in the copy never replaces a directory
/// of `dest`, nor a directory a file. Returns the symlinks not made.
pub fn extract(reader: impl Read, dest: &Path) -> anyhow::Result<Vec<SkippedLink>> {
    let made = make_parents(dest)?;
    let result = extract_in(reader, dest);
    if result.is_err() {
        // Only the directories made here, deepest first, and only while empty.
        for dir in made.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
    result
}

fn extract_in(reader: impl Read, dest: &Path) -> anyhow::Result<Vec<SkippedLink>> {
    let exists = match fs::metadata(dest) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => bail!("{} exists and is not a directory", dest.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| dest.display().to_string()),
    };
    let scratch = Scratch::beside(dest)?;
    let skipped = unpack_copy(reader, &scratch.0)
        .with_context(|| format!("unpacking the copy for {}", dest.display()))?;
    if !exists {
        fs::rename(&scratch.0, dest)
            .with_context(|| format!("moving the copy to {}", dest.display()))?;
        return Ok(skipped);
    }
    let mut conflicts = Vec::new();
    check(&scratch.0, dest, Path::new(""), &mut conflicts)?;
    if !conflicts.is_empty() {
        bail!(
            "nothing copied: {} (remove them or copy elsewhere)",
            conflicts.join("; ")
        );
    }
    // From here only renames of what was checked: a failure now is the disk's, not the tar's.
    merge(&scratch.0, dest)?;
    Ok(skipped)
}

/// The missing directories above `dest`, made, outermost first.
fn make_parents(dest: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = dest.parent();
    while let Some(dir) = cur.filter(|d| !d.as_os_str().is_empty()) {
        if fs::symlink_metadata(dir).is_ok() {
            break;
        }
        missing.push(dir.to_path_buf());
        cur = dir.parent();
    }
    missing.reverse();
    for (i, dir) in missing.iter().enumerate() {
        if let Err(e) = fs::create_dir(dir) {
            for made in missing[..i].iter().rev() {
                let _ = fs::remove_dir(made);
            }
            return Err(e).with_context(|| format!("creating {}", dir.display()));
        }
    }
    Ok(missing)
}

/// A directory beside the destination (same filesystem, so moving out of it is a rename),
/// removed with whatever is left in it.
struct Scratch(PathBuf);

impl Scratch {
    fn beside(dest: &Path) -> anyhow::Result<Scratch> {
        let abs = std::path::absolute(dest).with_context(|| dest.display().to_string())?;
        let parent = abs.parent().unwrap_or(&abs);
        let path = parent.join(format!(".warren-cp-{:016x}", rand::random::<u64>()));
        // Made as `mkdir` would (the umask decides): it becomes the destination when there is
        // none.
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Gone already when it was renamed into place.
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn is_real_dir(m: &fs::Metadata) -> bool {
    m.is_dir() && !m.file_type().is_symlink()
}

/// Collects what in `dest` the copy in `src` cannot replace: a directory by anything else, or
/// anything else (a file, a link the user made) by a directory.
fn check(src: &Path, dest: &Path, rel: &Path, conflicts: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry.with_context(|| format!("reading {}", src.display()))?;
        let name = entry.file_name();
        let theirs = fs::symlink_metadata(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let ours = match fs::symlink_metadata(dest.join(&name)) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| dest.join(&name).display().to_string()),
        };
        let shown = dest.join(&name);
        match (is_real_dir(&theirs), is_real_dir(&ours)) {
            (true, true) => check(&entry.path(), &shown, &rel.join(&name), conflicts)?,
            (false, true) => conflicts.push(format!(
                "{} is a directory here and not in the copy",
                shown.display()
            )),
            (true, false) => conflicts.push(format!(
                "{} is a directory in the copy and not here",
                shown.display()
            )),
            (false, false) => {}
        }
    }
    Ok(())
}

/// Moves the checked copy in `src` into `dest`: what `dest` lacks (or holds as a file or link)
/// by a rename, directories both have by their contents.
fn merge(src: &Path, dest: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry.with_context(|| format!("reading {}", src.display()))?;
        let target = dest.join(entry.file_name());
        let both_dirs = entry.file_type().is_ok_and(|t| t.is_dir())
            && fs::symlink_metadata(&target).is_ok_and(|m| is_real_dir(&m));
        if both_dirs {
            merge(&entry.path(), &target)?;
        } else {
            fs::rename(entry.path(), &target)
                .with_context(|| format!("moving the copy to {}", target.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::{EntryType, Header};

    fn header(kind: EntryType, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(0);
        h
    }

    /// A tar of `(path, what)`: `what` is the content of a file, `"/"` for a directory, `"->t"`
    /// for a symlink to `t`. Paths go into the header unchecked, as a hostile tool writes them.
    fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, what) in entries {
            let (mut h, data) = if *what == "/" {
                (header(EntryType::Directory, 0), "")
            } else if let Some(target) = what.strip_prefix("->") {
                let mut h = header(EntryType::Symlink, 0);
                h.set_link_name(target).expect("link name");
                (h, "")
            } else {
                (header(EntryType::Regular, what.len() as u64), *what)
            };
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, data.as_bytes()).expect("append");
        }
        b.into_inner().expect("tar")
    }

    /// Every path under `root` with what it is, sorted: a picture to compare before and after.
    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
                let m = fs::symlink_metadata(&p).expect("metadata");
                if m.file_type().is_symlink() {
                    let t = fs::read_link(&p).expect("readlink");
                    out.push(format!("{rel} -> {}", t.display()));
                } else if m.is_dir() {
                    out.push(format!("{rel}/"));
                    stack.push(p);
                } else {
                    out.push(format!(
                        "{rel} = {}",
                        fs::read_to_string(&p).unwrap_or_default()
                    ));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_file_never_replaces_a_directory_nor_a_directory_a_file() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let dest = scratch.path().join("dest");
        fs::create_dir_all(dest.join("keep")).expect("mkdir");
        fs::write(dest.join("keep/inner"), "mine").expect("write");
        fs::write(dest.join("plain"), "mine").expect("write");
        let before = tree(scratch.path());
        for tar in [
            tar_of(&[("fresh", "x"), ("keep", "a file now")]),
            tar_of(&[("fresh", "x"), ("keep", "->fresh")]),
            tar_of(&[("fresh", "x"), ("plain/", "/"), ("plain/x", "y")]),
        ] {
            let err = extract(&tar[..], &dest).expect_err("refused");
            assert!(format!("{err:#}").contains("nothing copied"), "{err:#}");
            assert_eq!(tree(scratch.path()), before);
        }
    }

    #[test]
    fn a_refused_tar_leaves_no_trace() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let existing = scratch.path().join("existing");
        fs::create_dir(&existing).expect("mkdir");
        fs::write(existing.join("a"), "mine").expect("write");
        let before = tree(scratch.path());
        let hostile = [
            tar_of(&[("a", "theirs"), ("b", "x"), ("../escaped", "x")]),
            tar_of(&[("a", "theirs"), ("link", "->sub"), ("link/x", "through")]),
        ];
        for tar in &hostile {
            for dest in [existing.clone(), scratch.path().join("new/deeper/dest")] {
                assert!(extract(&tar[..], &dest).is_err(), "{}", dest.display());
                assert_eq!(tree(scratch.path()), before, "{}", dest.display());
            }
        }
    }

    #[test]
    fn links_out_of_the_copy_are_not_made() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let dest = scratch.path().join("dest");
        let tar = tar_of(&[
            ("sub/", "/"),
            ("sub/f", "data"),
            ("abs", "->/etc/passwd"),
            ("up", "->../outside"),
            ("sub/deep", "->../../outside"),
            ("inside", "->sub/f"),
            ("sub/back", "->../inside"),
        ]);
        let skipped = extract(&tar[..], &dest).expect("copied");
        let mut names: Vec<_> = skipped
            .iter()
            .map(|s| s.path.display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["abs", "sub/deep", "up"]);
        assert_eq!(
            tree(&dest),
            [
                "inside -> sub/f",
                "sub/",
                "sub/back -> ../inside",
                "sub/f = data"
            ]
        );
        assert_eq!(
            fs::read_to_string(dest.join("sub/back")).expect("read"),
            "data"
        );
    }

    #[test]
    fn a_copy_merges_into_an_existing_directory() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let dest = scratch.path().join("dest");
        fs::create_dir_all(dest.join("sub")).expect("mkdir");
        fs::write(dest.join("sub/old"), "old").expect("write");
        fs::write(dest.join("f"), "old").expect("write");
        let tar = tar_of(&[("sub/", "/"), ("sub/new", "new"), ("f", "new"), ("g/", "/")]);
        assert!(extract(&tar[..], &dest).expect("copied").is_empty());
        assert_eq!(
            tree(&dest),
            ["f = new", "g/", "sub/", "sub/new = new", "sub/old = old"]
        );
        // Nothing left beside it.
        assert_eq!(tree(scratch.path()).len(), tree(&dest).len() + 1);
    }
}
