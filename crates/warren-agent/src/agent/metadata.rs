//! User-defined file metadata as envd 0.6.2+ keeps it: `X-Metadata-<key>: <value>` upload
//! headers become `user.e2b.<key>` extended attributes on the file, and entries report them
//! (prefix stripped). An upload replaces the whole set: keys it does not send are removed, so
//! overwriting a file without metadata clears it (`O_TRUNC` keeps xattrs).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

use hyper::header::HeaderMap;
use xattr::FileExt;

/// The namespace of the keys (`user.` is what unprivileged code may set; `e2b.` keeps other
/// tools' `user.*` attributes out).
pub const XATTR_PREFIX: &str = "user.e2b.";
/// The upload header prefix (matched case-insensitively; keys are lower-cased).
const HEADER_PREFIX: &str = "x-metadata-";
/// The kernel's 255-byte attribute name limit, less the prefix.
const MAX_KEY: usize = 255 - XATTR_PREFIX.len();
/// All of a file's metadata (names with prefix, plus values): ext4 keeps an inode's
/// attributes in one 4 KiB block.
const MAX_TOTAL: usize = 4096;

pub type Metadata = BTreeMap<String, String>;

/// The metadata an upload's headers carry (the first value of a repeated header), checked as
/// envd checks it: printable US-ASCII keys and values, a key at most 246 bytes, all of them at
/// most 4096. `Err` holds the message of the 400.
pub fn from_headers(headers: &HeaderMap) -> Result<Metadata, String> {
    let mut out = Metadata::new();
    for name in headers.keys() {
        let Some(key) = name.as_str().strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        if key.is_empty() || out.contains_key(key) {
            continue;
        }
        let value = headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        out.insert(key.to_ascii_lowercase(), value);
    }
    validate(&out)?;
    Ok(out)
}

fn validate(md: &Metadata) -> Result<(), String> {
    let printable = |s: &str| s.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let mut total = 0;
    for (k, v) in md {
        if k.len() > MAX_KEY {
            return Err(format!("metadata key {k:?} exceeds {MAX_KEY} bytes"));
        }
        if !printable(k) {
            return Err(format!("metadata key {k:?} is not printable US-ASCII"));
        }
        if !printable(v) {
            return Err(format!(
                "metadata value for key {k:?} is not printable US-ASCII"
            ));
        }
        total += XATTR_PREFIX.len() + k.len() + v.len();
    }
    if total > MAX_TOTAL {
        return Err(format!(
            "total metadata size {total} exceeds {MAX_TOTAL} bytes"
        ));
    }
    Ok(())
}

/// Whether an error means the filesystem keeps no extended attributes (`/proc`, some
/// virtual filesystems): metadata is then simply not kept.
pub fn unsupported(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::Unsupported
        || e.raw_os_error() == Some(libc::ENOTSUP)
        || e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// The metadata of the entry at `path`; empty when it has none, the filesystem keeps none, it
/// cannot be read, or it is a symlink. envd follows a symlink here; the agent does not, since
/// it reads as root and a link may point where the user cannot look (a symlink itself holds
/// no `user.*` attributes). Values that are not UTF-8 (set inside the sandbox by other means)
/// are skipped.
pub fn read(path: &Path) -> Metadata {
    let mut out = Metadata::new();
    let Ok(names) = xattr::list(path) else {
        return out;
    };
    for name in names {
        let Some(key) = name.to_str().and_then(|n| n.strip_prefix(XATTR_PREFIX)) else {
            continue;
        };
        if let Ok(Some(value)) = xattr::get(path, &name) {
            if let Ok(value) = String::from_utf8(value) {
                out.insert(key.to_owned(), value);
            }
        }
    }
    out
}

/// Makes `md` the whole metadata of `file`: its other `user.e2b.*` attributes go.
pub fn replace(file: &File, md: &Metadata) -> std::io::Result<()> {
    for name in file.list_xattr()? {
        let stale = name
            .to_str()
            .and_then(|n| n.strip_prefix(XATTR_PREFIX))
            .is_some_and(|k| !md.contains_key(k));
        if stale {
            match file.remove_xattr(&name) {
                Err(e) if e.raw_os_error() != Some(libc::ENODATA) => return Err(e),
                _ => {}
            }
        }
    }
    for (k, v) in md {
        file.set_xattr(format!("{XATTR_PREFIX}{k}"), v.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn headers_become_lower_cased_keys_checked_as_envd_does() {
        let md = from_headers(&headers(&[
            ("X-Metadata-Author", "mish"),
            ("x-metadata-author", "second"),
            ("X-Metadata-Purpose", "upload"),
            ("Content-Type", "text/plain"),
            ("X-Metadata-", "no key"),
        ]))
        .unwrap();
        assert_eq!(
            md.into_iter().collect::<Vec<_>>(),
            [
                ("author".to_owned(), "mish".to_owned()),
                ("purpose".to_owned(), "upload".to_owned())
            ]
        );
        let long = "k".repeat(MAX_KEY + 1);
        assert!(from_headers(&headers(&[(&format!("x-metadata-{long}"), "v")])).is_err());
        let big = "v".repeat(MAX_TOTAL);
        assert!(from_headers(&headers(&[("x-metadata-a", &big)])).is_err());
        let tab = HeaderMap::from_iter([(
            hyper::header::HeaderName::from_static("x-metadata-a"),
            hyper::header::HeaderValue::from_bytes(b"a\tb").unwrap(),
        )]);
        assert!(from_headers(&tab).is_err());
    }

    #[test]
    fn a_new_set_replaces_the_old_one() {
        let dir = std::env::temp_dir().join(format!("warren-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let file = File::create(&path).unwrap();
        let first: Metadata = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        replace(&file, &first).unwrap();
        file.set_xattr("user.other", b"kept").unwrap();
        assert_eq!(read(&path), first);
        let second: Metadata = [("b".into(), "3".into())].into();
        replace(&file, &second).unwrap();
        assert_eq!(read(&path), second);
        replace(&file, &Metadata::new()).unwrap();
        assert!(read(&path).is_empty());
        assert_eq!(
            xattr::get(&path, "user.other").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
