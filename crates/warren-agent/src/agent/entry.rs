//! Describing one filesystem entry the way envd does (Go's `os.FileInfo` conventions): the
//! `EntryInfo` message with Go's permission string and an RFC 3339 modification time.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use warren_agent::{EntryInfo, FileType};

use super::users::Table;

/// Go's `FileMode.String()` for a file's `st_mode`: type letters (`d`, `L`, `D`, `p`, `S`, `u`,
/// `g`, `c`, `t`, in Go's order) or `-`, then `rwxrwxrwx`.
pub fn permissions(meta: &Metadata) -> String {
    let mode = meta.mode();
    let ft = meta.file_type();
    let mut out = String::with_capacity(12);
    let letters = [
        ('d', ft.is_dir()),
        ('L', ft.is_symlink()),
        ('D', ft.is_block_device() || ft.is_char_device()),
        ('p', ft.is_fifo()),
        ('S', ft.is_socket()),
        ('u', mode & 0o4000 != 0),
        ('g', mode & 0o2000 != 0),
        ('c', ft.is_char_device()),
        ('t', mode & 0o1000 != 0),
    ];
    out.extend(letters.iter().filter(|(_, set)| *set).map(|(c, _)| *c));
    if out.is_empty() {
        out.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        out.push(if mode & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    out
}

/// A Unix time as RFC 3339 in UTC, with 0, 3, 6 or 9 fractional digits as protobuf's JSON
/// mapping writes `Timestamp`s.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let frac = match nanos {
        0 => String::new(),
        n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{frac}Z")
}

fn file_type(meta: &Metadata) -> FileType {
    if meta.is_file() {
        FileType::File
    } else if meta.is_dir() {
        FileType::Directory
    } else {
        FileType::Unspecified
    }
}

/// The entry at `path` (not followed if it is a symlink). A symlink reports its target's type
/// and permission bits and its resolved target, as envd does.
pub fn entry_info(path: &Path, table: &Table) -> std::io::Result<EntryInfo> {
    let meta = std::fs::symlink_metadata(path)?;
    let is_symlink = meta.file_type().is_symlink();
    let (file_type, mode, symlink_target) = if is_symlink {
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        match std::fs::metadata(&target) {
            Ok(t) => (file_type(&t), t.mode() & 0o777, Some(target)),
            Err(_) => (FileType::Unspecified, 0, Some(target)),
        }
    } else {
        (file_type(&meta), meta.mode() & 0o777, None)
    };
    let nanos = u32::try_from(meta.mtime_nsec()).unwrap_or(0);
    Ok(EntryInfo {
        name: path
            .file_name()
            .map_or_else(|| "/".to_owned(), |n| n.to_string_lossy().into_owned()),
        file_type,
        path: path.to_string_lossy().into_owned(),
        size: i64::try_from(meta.size()).unwrap_or(i64::MAX),
        mode,
        permissions: permissions(&meta),
        owner: table.user_name(meta.uid()),
        group: table.group_name(meta.gid()),
        modified_time: Some(rfc3339(meta.mtime(), nanos)),
        symlink_target: symlink_target.map(|t| t.to_string_lossy().into_owned()),
        metadata: super::metadata::read(path),
        is_symlink,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, 5_000_000), "2000-02-29T00:00:00.005Z");
        assert_eq!(
            rfc3339(1_700_000_000, 123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(rfc3339(-1, 1_000), "1969-12-31T23:59:59.000001Z");
    }

    #[test]
    fn permission_strings_read_like_go() {
        let perms = |p: &str| std::fs::symlink_metadata(p).map(|m| permissions(&m)).ok();
        assert_eq!(perms("/").as_deref(), Some("drwxr-xr-x"));
        assert_eq!(perms("/dev/null").as_deref(), Some("Dcrw-rw-rw-"));
        assert!(perms("/tmp").is_some_and(|p| p.starts_with("dt")));
    }
}
