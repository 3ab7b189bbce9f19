//! Seed mode: where sandboxes are Pods, the directories kept across stop and start live on a
//! volume mounted over the image's own. Before the sandbox's first start an init container of
//! the user's image runs the agent so, to copy what the image has at each such directory onto
//! the volume (ownership, modes, links and times kept), once: a marker on the volume says a
//! directory is seeded, so later starts keep what the sandbox wrote.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Environment variable naming the directories to seed, `:`-separated absolute paths.
pub const SEED_VAR: &str = "WARREN_AGENT_SEED";
/// Environment variable naming where the volume is mounted.
pub const INTO_VAR: &str = "WARREN_AGENT_SEED_INTO";

/// The directories and the volume, when this run is a seed.
pub fn wanted() -> Option<(Vec<PathBuf>, PathBuf)> {
    let paths = std::env::var_os(SEED_VAR)?;
    let into = std::env::var_os(INTO_VAR)?;
    let paths = std::env::split_paths(&paths)
        .filter(|p| p.is_absolute())
        .collect();
    Some((paths, PathBuf::from(into)))
}

/// The name of a kept directory on the volume (its `subPath`): `/home/user` → `home_user`.
pub fn key(path: &Path) -> String {
    path.to_string_lossy().trim_matches('/').replace('/', "_")
}

/// Seeds each directory not seeded yet.
pub fn run(paths: &[PathBuf], into: &Path) -> ExitCode {
    for path in paths {
        if let Err(e) = seed(path, into) {
            eprintln!("warren-agent: seeding {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn seed(path: &Path, into: &Path) -> io::Result<()> {
    let key = key(path);
    let marker = into.join(format!(".seeded-{key}"));
    if marker.exists() {
        return Ok(());
    }
    let dest = into.join(&key);
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => copy_tree(path, &dest)?,
        // Not in the image: an empty directory (what the mount would make).
        Ok(_) | Err(_) => std::fs::create_dir_all(&dest)?,
    }
    // A copy cut short is done again whole (nothing ran on it yet); the marker comes last.
    std::fs::write(&marker, b"")?;
    std::fs::File::open(into)?.sync_all()
}

fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        match std::fs::create_dir(dst) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else if kind.is_symlink() {
        let target = std::fs::read_link(src)?;
        let _ = std::fs::remove_file(dst);
        std::os::unix::fs::symlink(target, dst)?;
    } else if kind.is_file() {
        std::fs::copy(src, dst)?;
    } else {
        // Devices, pipes and sockets stay out of a home directory's copy.
        return Ok(());
    }
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    if !kind.is_symlink() {
        // After the chown, which clears set-id bits.
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let times = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    nix::sys::stat::utimensat(
        None,
        dst,
        &times(meta.atime(), meta.atime_nsec()),
        &times(meta.mtime(), meta.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_once_keeping_modes_links_and_times() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("image/home/user");
        std::fs::create_dir_all(image.join("sub")).expect("dirs");
        std::fs::write(image.join("sub/.bashrc"), "PS1=x").expect("file");
        std::fs::set_permissions(
            image.join("sub/.bashrc"),
            std::fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("sub/.bashrc", image.join("link")).expect("symlink");
        let volume = dir.path().join("volume");
        std::fs::create_dir(&volume).expect("volume");
        let missing = dir.path().join("image/nothing");
        assert_eq!(
            run(&[image.clone(), missing.clone()], &volume),
            ExitCode::SUCCESS
        );

        let copy = volume.join(key(&image));
        assert_eq!(
            std::fs::read_to_string(copy.join("sub/.bashrc")).expect("copied"),
            "PS1=x"
        );
        let meta = std::fs::metadata(copy.join("sub/.bashrc")).expect("stat");
        assert_eq!(meta.mode() & 0o777, 0o640);
        let orig = std::fs::metadata(image.join("sub/.bashrc")).expect("stat");
        assert_eq!(meta.mtime(), orig.mtime());
        assert_eq!(
            std::fs::read_link(copy.join("link")).expect("link"),
            Path::new("sub/.bashrc")
        );
        assert!(
            volume.join(key(&missing)).is_dir(),
            "an empty directory for what is not there"
        );

        // Seeded: a second run keeps what the sandbox changed.
        std::fs::write(copy.join("sub/.bashrc"), "changed").expect("write");
        assert_eq!(run(&[image], &volume), ExitCode::SUCCESS);
        assert_eq!(
            std::fs::read_to_string(copy.join("sub/.bashrc")).expect("kept"),
            "changed"
        );
    }

    #[test]
    fn keys_name_paths() {
        assert_eq!(key(Path::new("/home/user")), "home_user");
        assert_eq!(key(Path::new("/root/")), "root");
    }
}
