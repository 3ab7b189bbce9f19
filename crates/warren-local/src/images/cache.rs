//! What image builds keep between runs: the build cache (a step's key, the sha256 of the
//! image it builds on and of what it does, names the layer that step made) and the files
//! uploaded for COPY steps, kept by the hash the client named them by (E2B's `filesHash`), so
//! an unchanged upload is skipped. Both live beside the layers, under `build-cache/` and
//! `build-files/`; an entry appears only by a rename of a complete file.
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use super::{io_ctx, random_name, valid_digest, ImageError, ImageStore, Imported, IncomingTar};

pub use warren_backend::images::valid_key;

impl ImageStore {
    fn cache_dir(&self) -> PathBuf {
        self.root.join("build-cache")
    }

    fn files_dir(&self) -> PathBuf {
        self.root.join("build-files")
    }

    /// The layer a build step of `key` made before (its digest and tar size), when it is
    /// still stored. An entry is `<digest> <size>`.
    pub fn cached_layer(&self, key: &str) -> Option<Imported> {
        if !valid_key(key) {
            return None;
        }
        let entry = fs::read_to_string(self.cache_dir().join(key)).ok()?;
        let mut words = entry.split_whitespace();
        let digest = words.next()?.to_owned();
        let size = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        self.has_layer(&digest).then_some(Imported { digest, size })
    }

    /// Remembers that the step of `key` made `layer`.
    pub fn cache_layer(&self, key: &str, layer: &Imported) -> Result<(), ImageError> {
        let digest = &layer.digest;
        if !valid_key(key) || !valid_digest(digest) {
            return Err(ImageError::Io {
                what: format!("caching {key:?} as {digest:?}"),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a key or digest"),
            });
        }
        let dir = self.cache_dir();
        fs::create_dir_all(&dir).map_err(io_ctx(format!("creating {}", dir.display())))?;
        let partial = self.root.join("tmp").join(random_name());
        fs::write(&partial, format!("{digest} {}", layer.size))
            .map_err(io_ctx(format!("writing {}", partial.display())))?;
        fs::rename(&partial, dir.join(key)).map_err(io_ctx("storing a build cache entry"))
    }

    /// Every layer the build cache names (kept by layer collection).
    pub fn cached_layers(&self) -> Vec<String> {
        fs::read_dir(self.cache_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .filter_map(|d| d.split_whitespace().next().map(str::to_owned))
            .filter(|d| valid_digest(d))
            .collect()
    }

    /// Forgets the build cache and the uploaded files; how many entries went.
    pub fn clear_build_cache(&self) -> Result<usize, ImageError> {
        let mut n = 0;
        for dir in [self.cache_dir(), self.files_dir()] {
            for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                fs::remove_file(e.path())
                    .map_err(io_ctx(format!("removing {}", e.path().display())))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Where the files uploaded under `hash` are (a tar, maybe gzipped), when they are.
    pub fn uploaded_files(&self, hash: &str) -> Option<PathBuf> {
        let p = self.files_dir().join(hash);
        (valid_key(hash) && p.is_file()).then_some(p)
    }

    /// Keeps a received tar as the files of `hash` (replacing any earlier upload of it).
    pub fn keep_files(&self, mut incoming: IncomingTar, hash: &str) -> Result<(), ImageError> {
        if !valid_key(hash) {
            return Err(ImageError::Io {
                what: format!("keeping files {hash:?}"),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a files hash"),
            });
        }
        incoming
            .writer()
            .flush()
            .map_err(io_ctx("flushing the received files"))?;
        let dir = self.files_dir();
        fs::create_dir_all(&dir).map_err(io_ctx(format!("creating {}", dir.display())))?;
        fs::rename(incoming.path(), dir.join(hash)).map_err(io_ctx("keeping uploaded files"))
    }
}
