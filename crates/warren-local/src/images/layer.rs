//! Reading a layer blob into a tree: gzip, zstd or plain tar, told apart by their first bytes
//! (registries label media types loosely; the bytes do not lie).
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::unpack::{unpack_layer, UnpackError};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `1f 8b`.
    Gzip,
    /// `28 b5 2f fd`.
    Zstd,
    /// A bare tar.
    None,
}

impl Compression {
    /// Which compression a blob starting with `magic` uses.
    pub fn sniff(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

fn read_err(root: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: root.to_owned(),
        source,
    }
}

/// Unpacks the layer blob read from `reader` into `root`, then reads `reader` to its end: what
/// the tar did not need (its padding, the compressor's trailer) must still pass through, so a
/// verifying reader sees every byte before its digest is trusted.
pub fn unpack_blob(reader: impl Read, root: &Path) -> Result<Compression, UnpackError> {
    let mut input = BufReader::with_capacity(1 << 18, reader);
    let kind = Compression::sniff(input.fill_buf().map_err(read_err(root))?);
    let unpacked = match kind {
        Compression::Gzip => unpack_layer(flate2::bufread::MultiGzDecoder::new(&mut input), root),
        Compression::Zstd => zstd::Decoder::with_buffer(&mut input)
            .map_err(read_err(root))
            .and_then(|decoder| unpack_layer(decoder, root)),
        Compression::None => unpack_layer(&mut input, root),
    };
    // Drained even after a failure: when the stream itself is at fault (a digest mismatch, a
    // dropped connection), that is the error to report, not the garbage it made of the tar.
    let drained = io::copy(&mut input, &mut io::sink());
    match (unpacked, drained) {
        (_, Err(e)) => Err(read_err(root)(e)),
        (Err(e), Ok(_)) => Err(e),
        (Ok(()), Ok(_)) => Ok(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::FileTypeExt;

    fn layer_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn gzip_zstd_and_plain_layers_unpack_alike() {
        let tar = layer_tar(&[("etc/motd", b"hello"), ("bin/x", b"x")]);
        let blobs = [
            (gzip(&tar), Compression::Gzip),
            (
                zstd::encode_all(&tar[..], 3).expect("zstd"),
                Compression::Zstd,
            ),
            (tar.clone(), Compression::None),
        ];
        for (blob, kind) in blobs {
            let dir = tempfile::tempdir().expect("tempdir");
            assert_eq!(unpack_blob(&blob[..], dir.path()).expect("unpack"), kind);
            assert_eq!(
                fs::read(dir.path().join("etc/motd")).expect("motd"),
                b"hello"
            );
        }
    }

    #[test]
    fn whiteouts_become_overlayfs_whiteouts() {
        let tar = layer_tar(&[
            ("etc/.wh.motd", b""),
            ("var/cache/.wh..wh..opq", b""),
            ("var/cache/new", b"n"),
        ]);
        let dir = tempfile::tempdir().expect("tempdir");
        unpack_blob(&gzip(&tar)[..], dir.path()).expect("unpack");
        let motd = fs::symlink_metadata(dir.path().join("etc/motd")).expect("whiteout");
        assert!(motd.file_type().is_char_device());
        assert!(!dir.path().join("etc/.wh.motd").exists());
        let opaque =
            xattr::get(dir.path().join("var/cache"), "trusted.overlay.opaque").expect("xattr");
        assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
        assert_eq!(
            fs::read(dir.path().join("var/cache/new")).expect("new"),
            b"n"
        );
    }

    #[test]
    fn a_truncated_blob_fails() {
        let tar = layer_tar(&[("big", &[7u8; 100_000][..])]);
        let blob = gzip(&tar);
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(unpack_blob(&blob[..blob.len() / 2], dir.path()).is_err());
    }
}
