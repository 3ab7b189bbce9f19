//! The hashes in a pause receipt ([`warren_api::PauseReceipt`]): of a checkpoint's files, and of
//! a sparse disk image's data. Blocking I/O.
//!
//! A checkpoint's memory file is as large as the sandbox's memory, and SHA-256 runs at about
//! 1 GB/s on one core: its files are hashed in chunks of [`CHUNK`] on every core, and the
//! digest covers the chunks' digests in order (a hash list), so each byte still counts.
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

/// Bytes per separately hashed chunk of a checkpoint file (small in unit tests, so a file of
/// several chunks stays small there).
pub const CHUNK: u64 = if cfg!(test) { 1 << 20 } else { 32 << 20 };

/// SHA-256 of each [`CHUNK`] of `file` (`len` bytes), in order, on every core.
fn chunk_digests(file: &File, len: u64) -> io::Result<Vec<[u8; 32]>> {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = usize::try_from(len.div_ceil(CHUNK)).unwrap_or(usize::MAX);
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.max(1));
    let mut parts: Vec<Vec<(usize, [u8; 32])>> = Vec::new();
    std::thread::scope(|scope| -> io::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> io::Result<Vec<(usize, [u8; 32])>> {
                    let mut buf = vec![0u8; 1 << 20];
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(done);
                        }
                        let start = i as u64 * CHUNK;
                        let end = (start + CHUNK).min(len);
                        let mut hasher = Sha256::new();
                        let mut at = start;
                        while at < end {
                            let want = buf
                                .len()
                                .min(usize::try_from(end - at).unwrap_or(usize::MAX));
                            let got = file.read_at(&mut buf[..want], at)?;
                            if got == 0 {
                                return Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "the file shrank while it was hashed",
                                ));
                            }
                            hasher.update(&buf[..got]);
                            at += got as u64;
                        }
                        done.push((i, hasher.finalize().into()));
                    }
                })
            })
            .collect();
        for w in workers {
            parts.push(
                w.join()
                    .map_err(|_| io::Error::other("a hashing thread panicked"))??,
            );
        }
        Ok(())
    })?;
    let mut all: Vec<(usize, [u8; 32])> = parts.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, d)| d).collect())
}

/// Every regular file of `dir` but the manifest, by name: its name, length and the SHA-256
/// of each [`CHUNK`] of it.
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
        let file = File::open(dir.join(&name))?;
        let len = file.metadata()?.len();
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(len.to_le_bytes());
        for digest in chunk_digests(&file, len)? {
            hasher.update(digest);
        }
        bytes += len;
    }
    Ok(ImagePart {
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// The data extents of the sparse file at `path` (`SEEK_DATA`/`SEEK_HOLE`), as (start, end):
/// holes cost nothing to skip, so a large, mostly empty disk is read fast.
pub fn extents(path: &Path) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom as At};
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match seek(file.as_fd(), At::Data(at)) {
            Ok(s) => s,
            // No data past `at`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(file.as_fd(), At::Hole(start))?.min(size);
        out.push((start, end));
        at = end;
    }
    Ok(out)
}

/// The data extents of the sparse file at `path`: offset, length and bytes of each.
pub fn hash_extents(path: &Path) -> io::Result<ImagePart> {
    let spans = extents(path)?;
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut bytes = 0;
    for (start, end) in spans {
        file.seek(SeekFrom::Start(start))?;
        hasher.update(start.to_le_bytes());
        hasher.update((end - start).to_le_bytes());
        copy_into(&mut hasher, &mut file, end - start)?;
        bytes += end - start;
    }
    Ok(ImagePart {
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Copies the sparse file `src` to `dst` (made anew) extent for extent: its data extents as
/// data, its holes as holes, so [`hash_extents`] of the copy equals that of the original.
pub fn copy_extents(src: &Path, dst: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let spans = extents(src)?;
    let from = File::open(src)?;
    let to = File::create(dst)?;
    to.set_len(from.metadata()?.len())?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in spans {
        let mut pos = start;
        while pos < end {
            let want = buf
                .len()
                .min(usize::try_from(end - pos).unwrap_or(usize::MAX));
            let n = from.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank",
                ));
            }
            to.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
        }
    }
    to.sync_all()
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
    fn an_extent_copy_hashes_as_the_original_even_with_zeros_in_its_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("a.img");
        let f = File::create(&src).expect("create");
        f.set_len(32 << 20).expect("len");
        f.write_all_at(&[0u8; 8192], 1 << 20)
            .expect("zeros as data");
        f.write_all_at(b"data", 9 << 20).expect("write");
        let dst = dir.path().join("b.img");
        copy_extents(&src, &dst).expect("copy");
        assert_eq!(
            hash_extents(&src).expect("a"),
            hash_extents(&dst).expect("b")
        );
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

    #[test]
    fn a_byte_in_any_chunk_of_a_large_file_changes_the_hash() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("pages.img"))
            .expect("create");
        let len = 3 * CHUNK + 5;
        for at in (0..len).step_by(1 << 20) {
            f.write_all_at(&[(at >> 20) as u8; 1 << 10], at)
                .expect("write");
        }
        f.set_len(len).expect("len");
        let a = hash_files(dir.path()).expect("hash");
        assert_eq!(a.bytes, len);
        for at in [0, CHUNK - 1, CHUNK, 2 * CHUNK + 17, len - 1] {
            let mut b = [0u8];
            f.read_exact_at(&mut b, at).expect("read");
            f.write_all_at(&[b[0] ^ 1], at).expect("flip");
            assert_ne!(
                a.sha256,
                hash_files(dir.path()).expect("hash").sha256,
                "{at}"
            );
            f.write_all_at(&b, at).expect("back");
        }
        assert_eq!(a, hash_files(dir.path()).expect("hash"));
    }
}
