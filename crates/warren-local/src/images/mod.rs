//! Image storage: layers unpacked once by digest and shared, read-only, below every sandbox
//! made from any image that has them.
//!
//! Layout under `<data>/images/`: `layers/<hex>/` (one tree per layer digest: a pulled layer's
//! digest as the registry stores it, or an imported tar's), `tmp/` (incoming tars and trees
//! being unpacked; emptied at open, so an interrupted import or pull leaves nothing).
//! A layer appears under `layers/` only by a rename of a complete tree.
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::unpack::{self, UnpackError};

pub mod cache;
pub mod copy;
pub mod export;
pub mod inside;
pub mod layer;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The tar was refused.
    #[error(transparent)]
    Rejected(UnpackError),
    /// A file operation failed.
    #[error("image store: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl From<UnpackError> for ImageError {
    fn from(e: UnpackError) -> Self {
        match e {
            UnpackError::Io { path, source } => ImageError::Io {
                what: format!("writing {}", path.display()),
                source,
            },
            rejected => ImageError::Rejected(rejected),
        }
    }
}

fn io_ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

pub use warren_backend::images::{Hashing, Imported, IncomingTar};

/// The content-addressed image store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating) the store under `root`, clearing leftovers of interrupted imports.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        for sub in ["layers", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_ctx(format!("creating {}", p.display())))?;
        }
        migrate_v1(root)?;
        let tmp = root.join("tmp");
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
        Ok(ImageStore {
            root: root.to_owned(),
        })
    }

    /// Starts receiving a tar.
    pub fn begin(&self) -> Result<IncomingTar, ImageError> {
        let path = self.root.join("tmp").join(format!("{}.tar", random_name()));
        IncomingTar::create(path.clone()).map_err(io_ctx(format!("creating {}", path.display())))
    }

    /// Unpacks the received tar as one layer named by its digest, unless that digest is
    /// already here. Blocking: call from a blocking thread. On any failure nothing of it is
    /// left behind; the tar itself is not kept.
    pub fn finish(&self, incoming: IncomingTar) -> Result<Imported, ImageError> {
        self.finish_with(incoming, |f, root| {
            unpack::unpack(io::BufReader::new(f), root)
        })
    }

    /// [`finish`](Self::finish) for a layer tar (gzip, zstd or plain; OCI whiteouts honoured),
    /// as a build step's files or changes are.
    pub fn finish_layer(&self, incoming: IncomingTar) -> Result<Imported, ImageError> {
        self.finish_with(incoming, |f, root| layer::unpack_blob(f, root).map(drop))
    }

    /// Stores what a sandbox changed (its overlay upper directory, the sandbox stopped) as a
    /// layer: packed to a tar (its digest names the layer), handed to `keep` (which makes it
    /// live for layer collection before it exists), then unpacked as any layer is. Changes
    /// whose files add up to more than `max_bytes` are refused before anything is written:
    /// a sparse file counts at its full size, as the tar would hold it.
    pub fn store_changes(
        &self,
        upper: &Path,
        max_bytes: u64,
        keep: &mut dyn FnMut(&Imported) -> Result<(), ImageError>,
    ) -> Result<Imported, ImageError> {
        let total: u64 = walkdir::WalkDir::new(upper)
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        if total > max_bytes {
            return Err(ImageError::Io {
                what: format!(
                    "the changes hold {} MiB of files (sparse files count at their full size), over the {} MiB a layer may",
                    total >> 20,
                    max_bytes >> 20
                ),
                source: io::Error::new(io::ErrorKind::InvalidData, "too large"),
            });
        }
        let mut incoming = self.begin()?;
        export::pack_upper_except(upper, runtime_made, incoming.writer())
            .map_err(io_ctx(format!("packing {}", upper.display())))?;
        let (_, digest) = incoming
            .flushed()
            .map_err(io_ctx("writing the changes' tar"))?;
        keep(&digest)?;
        self.finish_layer(incoming)
    }

    fn finish_with(
        &self,
        mut incoming: IncomingTar,
        unpack: impl FnOnce(fs::File, &Path) -> Result<(), UnpackError>,
    ) -> Result<Imported, ImageError> {
        incoming
            .writer()
            .flush()
            .map_err(io_ctx("flushing the received tar"))?;
        let imported = incoming.writer().digest();
        if self.has_layer(&imported.digest) {
            return Ok(imported);
        }
        let staging = self.staging()?;
        let result = fs::File::open(incoming.path())
            .map_err(io_ctx(format!("opening {}", incoming.path().display())))
            .and_then(|f| unpack(f, &staging).map_err(Into::into));
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        self.commit_layer(&staging, &imported.digest)?;
        Ok(imported)
    }

    /// The unpacked tree of a layer digest (`sha256:<hex>`).
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        self.root
            .join("layers")
            .join(digest.strip_prefix("sha256:").unwrap_or(digest))
    }

    /// Whether a layer is stored (complete: trees only appear by rename).
    pub fn has_layer(&self, digest: &str) -> bool {
        valid_digest(digest) && self.layer_dir(digest).is_dir()
    }

    /// A fresh empty directory under `tmp/` to unpack a layer into.
    pub fn staging(&self) -> Result<PathBuf, ImageError> {
        let staging = self.root.join("tmp").join(random_name());
        fs::create_dir(&staging).map_err(io_ctx(format!("creating {}", staging.display())))?;
        // Image roots must be traversable by every user in the sandbox.
        set_mode(&staging, 0o755)?;
        Ok(staging)
    }

    /// Moves a completely unpacked tree into place as the layer `digest`. If another pull or
    /// import stored it meanwhile, theirs is kept and ours discarded: the trees are the same.
    pub fn commit_layer(&self, staging: &Path, digest: &str) -> Result<(), ImageError> {
        if !valid_digest(digest) {
            let _ = fs::remove_dir_all(staging);
            return Err(ImageError::Io {
                what: format!("storing layer {digest:?}"),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a sha256 digest"),
            });
        }
        let dest = self.layer_dir(digest);
        if let Err(e) = fs::rename(staging, &dest) {
            let _ = fs::remove_dir_all(staging);
            if !dest.is_dir() {
                return Err(io_ctx(format!("storing {}", dest.display()))(e));
            }
        }
        Ok(())
    }

    /// Every stored layer's digest.
    pub fn layers(&self) -> Result<Vec<String>, ImageError> {
        let dir = self.root.join("layers");
        let rd = fs::read_dir(&dir).map_err(io_ctx(format!("listing {}", dir.display())))?;
        Ok(rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(|n| format!("sha256:{n}")))
            .filter(|d| valid_digest(d))
            .collect())
    }

    /// Removes a layer's tree (the caller knows no image or sandbox uses it); returns the bytes
    /// it held on disk.
    pub fn remove_layer(&self, digest: &str) -> Result<u64, ImageError> {
        if !valid_digest(digest) {
            return Ok(0);
        }
        let tree = self.layer_dir(digest);
        let bytes = disk_usage(&tree);
        // Renamed away first, so a crash halfway through never leaves a partial tree that
        // `has_layer` would take for a complete one.
        let doomed = self.root.join("tmp").join(random_name());
        match fs::rename(&tree, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_ctx(format!("removing {}", tree.display()))(e)),
        }
        fs::remove_dir_all(&doomed).map_err(io_ctx(format!("removing {}", doomed.display())))?;
        Ok(bytes)
    }
}

/// What the runtime, not the sandbox, put in its upper directory: Warren's mount points
/// (`/.warren`), the build's `/tmp` keeper (or its whiteout), and the empty files the runtime made to bind `/etc/hosts`, `/etc/hostname` and
/// `/etc/resolv.conf` over, when the image had none. An image build keeps none of them.
fn runtime_made(rel: &Path, meta: &fs::Metadata) -> bool {
    rel == Path::new(".warren")
        || rel == Path::new(copy::TMP_KEEPER)
        || (meta.is_file()
            && meta.len() == 0
            && ["etc/hosts", "etc/hostname", "etc/resolv.conf"]
                .iter()
                .any(|p| rel == Path::new(p)))
}

pub use warren_backend::images::valid_digest;

/// Bytes a tree occupies on disk (allocated blocks; hard links counted once per tree walk).
pub fn disk_usage(root: &Path) -> u64 {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// The first store kept each imported tar under `blobs/` and its tree under `rootfs/<hex>`:
/// the trees become layers of the same digest, the tars are no longer needed.
fn migrate_v1(root: &Path) -> Result<(), ImageError> {
    let old = root.join("rootfs");
    if let Ok(rd) = fs::read_dir(&old) {
        for e in rd.flatten() {
            let dest = root.join("layers").join(e.file_name());
            if !dest.exists() {
                fs::rename(e.path(), &dest)
                    .map_err(io_ctx(format!("moving {}", dest.display())))?;
            }
        }
        let _ = fs::remove_dir_all(&old);
    }
    let _ = fs::remove_dir_all(root.join("blobs"));
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(io_ctx(format!("chmod {}", p.display())))
}

fn random_name() -> String {
    format!("{:016x}", rand::random::<u64>())
}
