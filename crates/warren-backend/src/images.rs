//! What the layer store speaks: tars received and stored, a COPY step's request, an image
//! resolved from a registry.
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use warren_api::image::LayerProgress;
use warren_api::ImageConfig;

/// A tar's digest and size: what an import received, or what a layer export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// `sha256:<hex>` of the tar.
    pub digest: String,
    /// Bytes in the tar.
    pub size: u64,
}

/// A writer that hashes (sha256) and counts what passes through it: a tar's digest is known
/// once it is written.
pub struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W> Hashing<W> {
    /// Hashes what goes to `inner`.
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    /// `sha256:<hex>` and byte count of what was written so far.
    pub fn digest(&self) -> Imported {
        Imported {
            digest: format!("sha256:{}", hex::encode(self.hash.clone().finalize())),
            size: self.len,
        }
    }

    /// The writer underneath.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(buf.get(..n).unwrap_or_default());
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A tar being received: hashed as it is written to a file of the layer store's, removed
/// when dropped unless the store moved it into place.
pub struct IncomingTar {
    file: Hashing<fs::File>,
    path: PathBuf,
}

impl IncomingTar {
    /// Creates the file at `path` (the layer store's choice).
    pub fn create(path: PathBuf) -> io::Result<IncomingTar> {
        let file = fs::File::create(&path)?;
        Ok(IncomingTar {
            file: Hashing::new(file),
            path,
        })
    }

    /// Appends a chunk.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk)
    }

    /// Writes what is buffered and answers where the tar is and its digest so far.
    pub fn flushed(&mut self) -> io::Result<(&Path, Imported)> {
        self.file.flush()?;
        Ok((&self.path, self.file.digest()))
    }

    /// The writer, for a store packing a tar into it.
    pub fn writer(&mut self) -> &mut Hashing<fs::File> {
        &mut self.file
    }

    /// Where the tar is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for IncomingTar {
    fn drop(&mut self) {
        // Harmless when the file was already moved into place.
        let _ = fs::remove_file(&self.path);
    }
}

/// What a COPY step asks for.
#[derive(Debug, Clone)]
pub struct CopySpec {
    /// Paths (or glob patterns) in the uploaded files, relative to the build context.
    pub sources: Vec<String>,
    /// Where in the image; relative to `workdir` when not absolute.
    pub dest: String,
    /// The build's working directory at this step.
    pub workdir: String,
    /// Owner of everything copied.
    pub uid: u32,
    /// Group of everything copied.
    pub gid: u32,
    /// Permission bits of every copied file (directories keep their own).
    pub mode: Option<u32>,
}

/// The files a COPY step copies from: a tar (maybe gzipped).
#[derive(Clone)]
pub enum BuildFiles {
    /// Uploaded before the build under this hash (E2B's `filesHash`).
    Uploaded(String),
    /// Sent with the build (its context), received and flushed.
    Context(Arc<IncomingTar>),
}

/// A COPY layer: the layer stored, and the sha256 of what it holds without its times (the
/// build cache's key for it: as Docker's, a file touched but unchanged hits the cache).
#[derive(Debug, Clone)]
pub struct Copied {
    /// The layer tar's digest and size.
    pub layer: Imported,
    /// Hex sha256 of the entries' paths, kinds, owners, modes, link targets and contents.
    pub content: String,
}

/// One layer of a resolved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// Its digest in the registry.
    pub digest: String,
    /// Its size there.
    pub size: u64,
    /// Its media type, as the manifest says.
    pub media_type: String,
}

/// An image's manifest and config, resolved for this host.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The canonical reference (`registry/repository:tag` or `…@digest`).
    pub reference: String,
    /// The platform manifest's digest.
    pub digest: String,
    /// Its layers, bottom first.
    pub layers: Vec<LayerRef>,
    /// Its defaults.
    pub config: ImageConfig,
}

/// Reports a layer's progress.
pub type Progress = Arc<dyn Fn(LayerProgress) + Send + Sync>;

/// Whether `key` can name a build-cache entry or an upload: 1-128 of `[0-9a-zA-Z_-]` (no
/// path).
pub fn valid_key(key: &str) -> bool {
    (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `digest` is `sha256:` and 64 hex digits: the only names a layer has.
pub fn valid_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}
