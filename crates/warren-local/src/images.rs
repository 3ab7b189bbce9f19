//! Image storage: root-filesystem tars kept by digest and unpacked once, read-only below every
//! sandbox made from them.
//!
//! Layout under `<data>/images/`: `blobs/sha256/<hex>.tar`, `rootfs/<hex>/`, `tmp/`.
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::unpack::{self, UnpackError};

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

/// What an import produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// `sha256:<hex>` of the tar.
    pub digest: String,
    /// Bytes in the tar.
    pub size: u64,
}

/// A tar being received: hashed as it is written to a temporary file.
pub struct IncomingTar {
    file: fs::File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl IncomingTar {
    /// Appends a chunk.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.file
            .write_all(chunk)
            .map_err(io_ctx(format!("writing {}", self.path.display())))
    }
}

impl Drop for IncomingTar {
    fn drop(&mut self) {
        // Harmless when the file was already moved into place.
        let _ = fs::remove_file(&self.path);
    }
}

/// The content-addressed image store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating) the store under `root`, clearing leftovers of interrupted imports.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        for sub in ["blobs/sha256", "rootfs", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_ctx(format!("creating {}", p.display())))?;
        }
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
        let file =
            fs::File::create(&path).map_err(io_ctx(format!("creating {}", path.display())))?;
        Ok(IncomingTar {
            file,
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Stores the received tar by digest and unpacks it, unless that digest is already here.
    /// Blocking: call from a blocking thread. On any failure nothing of it is left behind.
    pub fn finish(&self, mut incoming: IncomingTar) -> Result<Imported, ImageError> {
        incoming
            .file
            .flush()
            .map_err(io_ctx("flushing the received tar"))?;
        let hex = hex::encode(incoming.hasher.clone().finalize());
        let imported = Imported {
            digest: format!("sha256:{hex}"),
            size: incoming.size,
        };
        let rootfs = self.rootfs_dir(&imported.digest);
        if rootfs.is_dir() {
            return Ok(imported);
        }
        let staging = self.root.join("tmp").join(random_name());
        fs::create_dir(&staging).map_err(io_ctx(format!("creating {}", staging.display())))?;
        // Image roots must be traversable by every user in the sandbox.
        set_mode(&staging, 0o755)?;
        let result = fs::File::open(&incoming.path)
            .map_err(io_ctx(format!("opening {}", incoming.path.display())))
            .and_then(|f| unpack::unpack(io::BufReader::new(f), &staging).map_err(Into::into));
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        let blob = self.root.join("blobs/sha256").join(format!("{hex}.tar"));
        fs::rename(&incoming.path, &blob).map_err(io_ctx(format!("storing {}", blob.display())))?;
        if let Err(e) = fs::rename(&staging, &rootfs) {
            let _ = fs::remove_dir_all(&staging);
            // A concurrent import of the same tar won the race: its tree is as good as ours.
            if !rootfs.is_dir() {
                return Err(io_ctx(format!("storing {}", rootfs.display()))(e));
            }
        }
        Ok(imported)
    }

    /// The unpacked tree of a digest.
    pub fn rootfs_dir(&self, digest: &str) -> PathBuf {
        self.root
            .join("rootfs")
            .join(digest.strip_prefix("sha256:").unwrap_or(digest))
    }

    /// Removes a digest's tar and tree (the caller knows no image or sandbox uses it).
    pub fn remove(&self, digest: &str) -> Result<(), ImageError> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(());
        }
        let blob = self.root.join("blobs/sha256").join(format!("{hex}.tar"));
        let _ = fs::remove_file(&blob);
        let tree = self.rootfs_dir(digest);
        match fs::remove_dir_all(&tree) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_ctx(format!("removing {}", tree.display()))(e)),
        }
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(io_ctx(format!("chmod {}", p.display())))
}

fn random_name() -> String {
    format!("{:016x}", rand::random::<u64>())
}
