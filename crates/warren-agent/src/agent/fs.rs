//! The `filesystem.Filesystem` directory operations (Stat, MakeDir, Move, ListDir, Remove) and
//! the path rules every file operation shares. The agent is the sandbox's PID 1, so `/` is the
//! sandbox root: paths need no confinement beyond ordinary path semantics.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use nix::unistd::{chown, Gid, Uid};

use warren_agent::connect::{code, ConnectError};
use warren_agent::{EntryInfo, EntryResponse, ListDirRequest, ListDirResponse, MoveRequest};

use super::entry::entry_info;
use super::users::{Table, User};

/// Resolves a request path as envd does: `~` and relative paths are taken from the acting
/// user's home (empty means the home itself), then `.` and `..` are applied lexically (`..` at
/// `/` stays at `/`). A NUL byte is refused: the kernel would silently cut the path there.
pub fn resolve(path: &str, user: &User) -> Result<PathBuf, ConnectError> {
    if path.contains('\0') {
        return Err(ConnectError::new(
            code::INVALID_ARGUMENT,
            format!("path {path:?} contains a NUL byte"),
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

/// The Connect error for a failed filesystem call on `path`.
pub fn io_error(e: &std::io::Error, what: &str, path: &Path) -> ConnectError {
    let code = match e.kind() {
        ErrorKind::NotFound => code::NOT_FOUND,
        ErrorKind::PermissionDenied => code::PERMISSION_DENIED,
        ErrorKind::AlreadyExists => code::ALREADY_EXISTS,
        ErrorKind::NotADirectory | ErrorKind::IsADirectory | ErrorKind::InvalidInput => {
            code::INVALID_ARGUMENT
        }
        _ => code::INTERNAL,
    };
    ConnectError::new(code, format!("{what} {}: {e}", path.display()))
}

fn describe(path: &Path, table: &Table) -> Result<EntryInfo, ConnectError> {
    entry_info(path, table).map_err(|e| io_error(&e, "cannot stat", path))
}

/// Creates `dir` and any missing parents, each owned by `user` (an agent running as root would
/// otherwise leave root-owned directories the user cannot write into).
pub fn ensure_dirs(dir: &Path, user: &User) -> Result<(), ConnectError> {
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
                    format!("{} exists and is not a directory", p.display()),
                ))
            }
            Err(_) => missing.push(p),
        }
        cur = p.parent();
    }
    for p in missing.into_iter().rev() {
        match std::fs::create_dir(p) {
            Ok(()) => chown_to(p, user)?,
            // Someone else made it meanwhile: fine, it is theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(&e, "cannot create directory", p)),
        }
    }
    Ok(())
}

/// Gives `path` to `user` (a no-op for root, who owns what the agent creates anyway).
pub fn chown_to(path: &Path, user: &User) -> Result<(), ConnectError> {
    if user.is_root() {
        return Ok(());
    }
    chown(
        path,
        Some(Uid::from_raw(user.uid)),
        Some(Gid::from_raw(user.gid)),
    )
    .map_err(|e| {
        ConnectError::new(
            code::INTERNAL,
            format!("cannot give {} to {}: {e}", path.display(), user.name),
        )
    })
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
                format!("directory already exists: {}", path.display()),
            ))
        }
        Ok(_) => {
            return Err(ConnectError::new(
                code::INVALID_ARGUMENT,
                format!(
                    "path already exists but it is not a directory: {}",
                    path.display()
                ),
            ))
        }
        Err(_) => {}
    }
    ensure_dirs(&path, user)?;
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
        ensure_dirs(parent, user)?;
    }
    std::fs::rename(&source, &destination).map_err(|e| {
        ConnectError::new(
            if e.kind() == ErrorKind::NotFound {
                code::NOT_FOUND
            } else {
                code::INTERNAL
            },
            format!(
                "cannot move {} to {}: {e}",
                source.display(),
                destination.display()
            ),
        )
    })?;
    Ok(EntryResponse {
        entry: Some(describe(&destination, table)?),
    })
}

/// `Remove`: directories with everything in them; a symlink itself, never its target.
pub fn remove(path: &str, user: &User) -> Result<(), ConnectError> {
    let path = resolve(path, user)?;
    let meta =
        std::fs::symlink_metadata(&path).map_err(|e| io_error(&e, "cannot remove", &path))?;
    let removed = if meta.is_dir() {
        std::fs::remove_dir_all(&path)
    } else {
        std::fs::remove_file(&path)
    };
    removed.map_err(|e| io_error(&e, "cannot remove", &path))
}

/// `ListDir`: entries below the directory (symlinks to it followed), a directory before its
/// children, names in byte order, down to `depth` levels (0 means 1).
pub fn list_dir(
    req: &ListDirRequest,
    user: &User,
    table: &Table,
) -> Result<ListDirResponse, ConnectError> {
    let requested = resolve(&req.path, user)?;
    let root =
        std::fs::canonicalize(&requested).map_err(|e| io_error(&e, "cannot list", &requested))?;
    if !root.is_dir() {
        return Err(ConnectError::new(
            code::INVALID_ARGUMENT,
            format!("path is not a directory: {}", requested.display()),
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
