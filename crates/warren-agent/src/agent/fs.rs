//! The `filesystem.Filesystem` directory operations (Stat, MakeDir, Move, ListDir, Remove) and
//! the path rules every file operation shares. The agent is the sandbox's PID 1, so `/` is the
//! sandbox root: paths need no confinement beyond ordinary path semantics. The operations run
//! with the acting user's credentials (see `as_user`): what they may do, and who owns what they
//! create, is the kernel's decision.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use warren_agent::connect::{code, ConnectError};
use warren_agent::{EntryInfo, EntryResponse, ListDirRequest, ListDirResponse, MoveRequest};

use super::entry::entry_info;
use super::fs_error::{io_error, shown, shown_text};
use super::users::{Table, User};

/// Resolves a request path as envd does: `~` and relative paths are taken from the acting
/// user's home (empty means the home itself), then `.` and `..` are applied lexically (`..` at
/// `/` stays at `/`). A NUL byte is refused: the kernel would silently cut the path there.
pub fn resolve(path: &str, user: &User) -> Result<PathBuf, ConnectError> {
    if path.contains('\0') {
        return Err(ConnectError::new(
            code::INVALID_ARGUMENT,
            format!("path {:?} contains a NUL byte", shown_text(path)),
        ));
    }
    let joined = if path == "~" {
        user.home.clone()
    } else if let Some(rest) = path.strip_prefix("~/") {
        user.home.join(rest)
    } else {
        user.home.join(path)
    };
    let mut clean = PathBuf::from("/");
    for part in joined.components() {
        match part {
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(clean)
}

fn describe(path: &Path, table: &Table) -> Result<EntryInfo, ConnectError> {
    entry_info(path, table).map_err(|e| io_error(&e, "cannot stat", path))
}

/// Creates `dir` and any missing parents, as the calling thread's user (who so owns them).
pub fn ensure_dirs(dir: &Path) -> Result<(), ConnectError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => break,
            // A symlink to a directory is fine; anything else is not a directory.
            Ok(_) if p.is_dir() => break,
            Ok(_) => {
                return Err(ConnectError::new(
                    code::INVALID_ARGUMENT,
                    format!("{} exists and is not a directory", shown(p)),
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => missing.push(p),
            // Anything else (too long, not searchable, a loop) no parent can mend: stop here,
            // before creating parents for a path that cannot exist.
            Err(e) => return Err(io_error(&e, "cannot create directory", p)),
        }
        cur = p.parent();
    }
    for p in missing.into_iter().rev() {
        match std::fs::create_dir(p) {
            Ok(()) => {}
            // Someone else made it meanwhile: fine, it is theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(&e, "cannot create directory", p)),
        }
    }
    Ok(())
}

/// `Stat`.
pub fn stat(path: &str, user: &User, table: &Table) -> Result<EntryResponse, ConnectError> {
    let path = resolve(path, user)?;
    Ok(EntryResponse {
        entry: Some(describe(&path, table)?),
    })
}

/// `MakeDir`: `already_exists` for an existing directory, as envd.
pub fn make_dir(path: &str, user: &User, table: &Table) -> Result<EntryResponse, ConnectError> {
    let path = resolve(path, user)?;
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => {
            return Err(ConnectError::new(
                code::ALREADY_EXISTS,
                format!("directory already exists: {}", shown(&path)),
            ))
        }
        Ok(_) => {
            return Err(ConnectError::new(
                code::INVALID_ARGUMENT,
                format!(
                    "path already exists but it is not a directory: {}",
                    shown(&path)
                ),
            ))
        }
        Err(_) => {}
    }
    ensure_dirs(&path)?;
    Ok(EntryResponse {
        entry: Some(describe(&path, table)?),
    })
}

/// `Move`: a rename; missing parents of the destination are created for the user.
pub fn rename(
    req: &MoveRequest,
    user: &User,
    table: &Table,
) -> Result<EntryResponse, ConnectError> {
    let source = resolve(&req.source, user)?;
    let destination = resolve(&req.destination, user)?;
    std::fs::symlink_metadata(&source).map_err(|e| io_error(&e, "cannot move", &source))?;
    if let Some(parent) = destination.parent() {
        ensure_dirs(parent)?;
    }
    std::fs::rename(&source, &destination).map_err(|e| {
        let moving = format!("cannot move {} to", shown(&source));
        io_error(&e, &moving, &destination)
    })?;
    Ok(EntryResponse {
        entry: Some(describe(&destination, table)?),
    })
}

/// `Remove`: directories with everything in them; a symlink itself, never its target. A path
/// that does not exist is already removed (envd's `os.RemoveAll`).
pub fn remove(path: &str, user: &User) -> Result<(), ConnectError> {
    let path = resolve(path, user)?;
    let meta = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        other => other.map_err(|e| io_error(&e, "cannot remove", &path))?,
    };
    let removed = if meta.is_dir() {
        std::fs::remove_dir_all(&path)
    } else {
        std::fs::remove_file(&path)
    };
    match removed {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| io_error(&e, "cannot remove", &path)),
    }
}

/// `ListDir`: entries below the directory (symlinks to it followed), a directory before its
/// children, names in byte order, down to `depth` levels (0 means 1).
pub fn list_dir(
    req: &ListDirRequest,
    user: &User,
    table: &Table,
) -> Result<ListDirResponse, ConnectError> {
    let requested = resolve(&req.path, user)?;
    // The kernel's answer for the path as given first: realpath, walking it a name at a time,
    // would call a path too long to exist merely missing.
    let meta =
        std::fs::metadata(&requested).map_err(|e| io_error(&e, "cannot list", &requested))?;
    let root =
        std::fs::canonicalize(&requested).map_err(|e| io_error(&e, "cannot list", &requested))?;
    if !meta.is_dir() {
        return Err(ConnectError::new(
            code::INVALID_ARGUMENT,
            format!("path is not a directory: {}", shown(&requested)),
        ));
    }
    let mut entries = Vec::new();
    walk(&root, req.depth.max(1), table, &mut entries)?;
    Ok(ListDirResponse { entries })
}

fn walk(
    dir: &Path,
    depth: u32,
    table: &Table,
    out: &mut Vec<EntryInfo>,
) -> Result<(), ConnectError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_error(&e, "cannot read directory", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for path in names {
        // Entries may vanish while we walk; skip them rather than fail the whole listing.
        let Ok(info) = entry_info(&path, table) else {
            continue;
        };
        let descend =
            depth > 1 && !info.is_symlink && info.file_type == warren_agent::FileType::Directory;
        out.push(info);
        if descend {
            walk(&path, depth - 1, table, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_resolve_against_home_and_clean_lexically() {
        let user = User {
            name: "u".into(),
            uid: 1,
            gid: 1,
            groups: vec![1],
            home: "/home/u".into(),
        };
        let r = |p: &str| resolve(p, &user).unwrap();
        assert_eq!(r("/a/b/../c/./d"), Path::new("/a/c/d"));
        assert_eq!(r("x/y"), Path::new("/home/u/x/y"));
        assert_eq!(r("~"), Path::new("/home/u"));
        assert_eq!(r("~/f"), Path::new("/home/u/f"));
        assert_eq!(r(""), Path::new("/home/u"));
        assert_eq!(r("/../../etc"), Path::new("/etc"));
        assert_eq!(r("../../../x"), Path::new("/x"));
        assert_eq!(
            resolve("/a\0b", &user).unwrap_err().code,
            code::INVALID_ARGUMENT
        );
    }
}
