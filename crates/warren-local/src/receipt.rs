//! The hashes in a pause receipt ([`warren_api::PauseReceipt`]): of a checkpoint's files, and of
//! a sparse disk image's data. Blocking I/O.
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::Path;

use sha2::{Digest, Sha256};
use warren_api::ImagePart;

/// Name of the receipt in a pause image's directory; not part of the memory hash.
pub const MANIFEST: &str = "manifest.json";

fn copy_into(hasher: &mut Sha256, file: &mut File, mut len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while len > 0 {
        let want = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was hashed",
            ));
        }
        hasher.update(&buf[..n]);
        len -= n as u64;
    }
    Ok(())
}

/// Every regular file of `dir` but the manifest, by name: name, length and bytes of each.
pub fn hash_files(dir: &Path) -> io::Result<ImagePart> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| io::Error::new(io::ErrorKind::InvalidData, format!("file name {n:?}")))?;
        if name != MANIFEST && entry.file_type()?.is_file() {
            names.push(name);
        }
    }
    names.sort();
    let mut hasher = Sha256::new();
    let mut bytes = 0;
    for name in names {
        let mut file = File::open(dir.join(&name))?;
        let len = file.metadata()?.len();
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(len.to_le_bytes());
        copy_into(&mut hasher, &mut file, len)?;
        bytes += len;
    }
    Ok(ImagePart {
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// The data extents of the sparse file at `path` (`SEEK_DATA`/`SEEK_HOLE`): offset, length
/// and bytes of each. Holes cost nothing to skip, so a large, mostly empty disk hashes fast.
pub fn hash_extents(path: &Path) -> io::Result<ImagePart> {
    use rustix::fs::{seek, SeekFrom as At};
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut hasher = Sha256::new();
    let mut bytes = 0;
    let mut at = 0u64;
    while at < size {
        let start = match seek(file.as_fd(), At::Data(at)) {
            Ok(s) => s,
            // No data past `at`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(file.as_fd(), At::Hole(start))?.min(size);
        file.seek(SeekFrom::Start(start))?;
        hasher.update(start.to_le_bytes());
        hasher.update((end - start).to_le_bytes());
        copy_into(&mut hasher, &mut file, end - start)?;
        bytes += end - start;
        at = end;
    }
    Ok(ImagePart {
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn extents_hash_the_data_and_see_a_changed_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let file = File::create(&path).expect("create");
        file.set_len(64 << 20).expect("set_len");
        file.write_all_at(b"hello", 1 << 20).expect("write");
        file.write_all_at(&[7u8; 8192], 40 << 20).expect("write");
        let a = hash_extents(&path).expect("hash");
        // Data extents are whole filesystem blocks, so at least what was written.
        assert!(a.bytes >= 8192 + 5 && a.bytes < 1 << 20, "{a:?}");
        assert_eq!(a, hash_extents(&path).expect("hash again"));
        file.write_all_at(b"j", 1 << 20).expect("flip");
        assert_ne!(a.sha256, hash_extents(&path).expect("hash").sha256);
    }

    #[test]
    fn files_hash_names_and_bytes_but_not_the_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let put = |name: &str, text: &[u8]| {
            File::create(dir.path().join(name))
                .and_then(|mut f| f.write_all(text))
                .expect("write")
        };
        put("pages.img", b"abc");
        put("checkpoint.img", b"de");
        let a = hash_files(dir.path()).expect("hash");
        assert_eq!(a.bytes, 5);
        put(MANIFEST, b"{}");
        assert_eq!(a, hash_files(dir.path()).expect("hash"));
        put("pages.img", b"abd");
        assert_ne!(a.sha256, hash_files(dir.path()).expect("hash").sha256);
        put("pages.img", b"ab");
        assert_ne!(a.sha256, hash_files(dir.path()).expect("hash").sha256);
    }
}
