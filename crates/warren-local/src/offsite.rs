//! Pause images kept in an object store (`--object-store s3://bucket/prefix`, or
//! `file:///dir`): the memory image's files and the disk's data extents, cut into parts of
//! [`PART`] bytes, each one object, with a listing that says where every part goes. Holes of
//! the sparse disk are not sent. A server that shares the store (and the database) can fetch
//! an image another one wrote and resume the sandbox from it; what it fetched is then checked
//! against the receipt like a local image.
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::receipt::extents;

/// Bytes per object: large enough that a 512 MiB image is 64 requests, small enough that a
/// few in flight stay a few tens of MiB of memory.
pub const PART: u64 = 8 << 20;

/// Parts sent or fetched at once.
const IN_FLIGHT: usize = 4;

/// Listing format written by this server.
const LISTING_VERSION: u32 = 1;

/// An object store and the prefix under which this server keeps its images.
#[derive(Clone)]
pub struct Offsite {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
}

impl std::fmt::Debug for Offsite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offsite").field("url", &self.url).finish()
    }
}

/// One part: its object (`parts/<object>`), where it goes in its file, and its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    object: usize,
    offset: u64,
    length: u64,
    sha256: String,
}

/// What an image is made of: each file's length and parts (the disk's holes are the gaps
/// between its parts).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Listing {
    version: u32,
    /// File name (the disk is [`DISK`]) → (length, parts).
    files: BTreeMap<String, (u64, Vec<Part>)>,
}

/// The disk's name in a listing: no name of a checkpoint file starts with a slash.
const DISK: &str = "/disk";

/// What an upload sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    /// Bytes of data sent (the disk's holes not counted).
    pub bytes: u64,
    /// Objects written.
    pub objects: u64,
}

fn store_error(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("object store: {what}: {e}"))
}

impl Offsite {
    /// The store a URL names: `s3://bucket/prefix` (endpoint, region and credentials from the
    /// usual `AWS_*` environment variables, e.g. `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`) or `file:///absolute/dir`.
    pub fn open(url: &str) -> io::Result<Offsite> {
        let parsed = url::Url::parse(url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {e}")))?;
        let aws = std::env::vars().filter(|(k, _)| k.starts_with("AWS_"));
        let (store, root) = object_store::parse_url_opts(&parsed, aws)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {e}")))?;
        Ok(Offsite {
            store: Arc::from(store),
            root,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// Where the image named `key` lives, as a URL.
    pub fn url_of(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    fn path(&self, key: &str, rest: &str) -> Path {
        let mut p = self.root.clone();
        for seg in key.split('/').chain(rest.split('/')) {
            if !seg.is_empty() {
                p = p.clone().join(seg);
            }
        }
        p
    }

    /// Whether the store answers: lists the prefix (an empty one is fine).
    pub async fn check(&self) -> io::Result<()> {
        let mut list = self.store.list(Some(&self.root));
        match list.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(store_error(&format!("listing {}", self.url), e)),
        }
    }

    /// Sends the image `key`: every regular file of `dir` and of its subdirectory `sub` (when
    /// given and there: a snapshot's `memory`), but `disk`, and the data extents of `disk`.
    /// The listing is written last, so an image without one was never whole.
    pub async fn put(
        &self,
        key: &str,
        dir: &FsPath,
        sub: Option<&str>,
        disk: &FsPath,
    ) -> io::Result<Sent> {
        let (dir, disk) = (dir.to_owned(), disk.to_owned());
        let sub = sub.map(str::to_owned);
        let mut plan: Vec<(String, std::path::PathBuf, u64, u64)> = Vec::new();
        let mut listing = Listing {
            version: LISTING_VERSION,
            ..Listing::default()
        };
        let sources = tokio::task::spawn_blocking(move || -> io::Result<Vec<_>> {
            let mut out = Vec::new();
            let subdir = sub.as_ref().map(|s| (format!("{s}/"), dir.join(s)));
            let dirs = std::iter::once((String::new(), dir.clone())).chain(subdir);
            for (label, from) in dirs {
                if !from.is_dir() {
                    continue;
                }
                for entry in std::fs::read_dir(&from)? {
                    let entry = entry?;
                    if entry.file_type()?.is_file() && entry.path() != disk {
                        let name = format!("{label}{}", entry.file_name().to_string_lossy());
                        let len = entry.metadata()?.len();
                        out.push((name, entry.path(), len, vec![(0, len)]));
                    }
                }
            }
            let len = std::fs::metadata(&disk)?.len();
            out.push((DISK.to_owned(), disk.clone(), len, extents(&disk)?));
            Ok(out)
        })
        .await
        .map_err(io::Error::other)??;
        for (name, path, len, spans) in sources {
            listing.files.insert(name.clone(), (len, Vec::new()));
            for (start, end) in spans {
                let mut at = start;
                while at < end {
                    let n = PART.min(end - at);
                    plan.push((name.clone(), path.clone(), at, n));
                    at += n;
                }
            }
        }
        let sent: Vec<(String, Part)> = futures::stream::iter(plan)
            .enumerate()
            .map(|(i, (name, path, offset, length))| async move {
                let data = tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
                    let mut buf = vec![0u8; usize::try_from(length).map_err(io::Error::other)?];
                    File::open(&path)?.read_exact_at(&mut buf, offset)?;
                    Ok(Bytes::from(buf))
                })
                .await
                .map_err(io::Error::other)??;
                let sha256 = hex::encode(Sha256::digest(&data));
                let at = self.path(key, &format!("parts/{i}"));
                self.store
                    .put(&at, PutPayload::from(data))
                    .await
                    .map_err(|e| store_error(&format!("writing {at}"), e))?;
                io::Result::Ok((
                    name,
                    Part {
                        object: i,
                        offset,
                        length,
                        sha256,
                    },
                ))
            })
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut total = Sent::default();
        for (name, part) in sent {
            total.bytes += part.length;
            total.objects += 1;
            if let Some((_, parts)) = listing.files.get_mut(&name) {
                parts.push(part);
            }
        }
        let body = serde_json::to_vec(&listing).map_err(io::Error::other)?;
        let at = self.path(key, "listing.json");
        self.store
            .put(&at, PutPayload::from(body))
            .await
            .map_err(|e| store_error(&format!("writing {at}"), e))?;
        total.objects += 1;
        Ok(total)
    }

    /// The whole object at `at`.
    async fn read(&self, at: &Path) -> io::Result<Bytes> {
        let failed = |e| store_error(&format!("reading {at}"), e);
        self.store
            .get(at)
            .await
            .map_err(failed)?
            .bytes()
            .await
            .map_err(failed)
    }

    /// Fetches the image `key` into `dir` (its files) and `disk` (made anew, sparse), each
    /// part checked against the listing's SHA-256 as it arrives.
    pub async fn get(&self, key: &str, dir: &FsPath, disk: &FsPath) -> io::Result<()> {
        let at = self.path(key, "listing.json");
        let raw = self.read(&at).await?;
        let listing: Listing = serde_json::from_slice(&raw)
            .map_err(|e| store_error(&format!("{at} is not a listing"), e))?;
        if listing.version != LISTING_VERSION {
            return Err(store_error(
                at.as_ref(),
                format!(
                    "listing version {} is not {LISTING_VERSION}",
                    listing.version
                ),
            ));
        }
        std::fs::create_dir_all(dir)?;
        let mut plan = Vec::new();
        let mut files = BTreeMap::new();
        for (name, (len, parts)) in &listing.files {
            let path = if name == DISK {
                disk.to_owned()
            } else {
                // A name or `sub/name`, nothing that climbs or hides.
                let ok = name.split('/').count() <= 2
                    && name
                        .split('/')
                        .all(|c| !c.is_empty() && !c.starts_with('.'));
                if !ok {
                    return Err(store_error(at.as_ref(), format!("a file named {name:?}")));
                }
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                path
            };
            let file = File::create(&path)?;
            file.set_len(*len)?;
            let file = Arc::new(file);
            files.insert(name.clone(), file.clone());
            for part in parts {
                if part
                    .offset
                    .checked_add(part.length)
                    .is_none_or(|end| end > *len)
                {
                    return Err(store_error(at.as_ref(), "a part past its file's end"));
                }
                plan.push((file.clone(), part.clone()));
            }
        }
        futures::stream::iter(plan)
            .map(|(file, part)| async move {
                let at = self.path(key, &format!("parts/{}", part.object));
                let data = self.read(&at).await?;
                if data.len() as u64 != part.length
                    || hex::encode(Sha256::digest(&data)) != part.sha256
                {
                    return Err(store_error(
                        at.as_ref(),
                        "its bytes do not match the listing",
                    ));
                }
                tokio::task::spawn_blocking(move || file.write_all_at(&data, part.offset))
                    .await
                    .map_err(io::Error::other)?
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        for file in files.values() {
            file.sync_all()?;
        }
        Ok(())
    }

    /// Fetches the image `key`, when the store has it whole, into `done`: into `staging`
    /// first (its disk to `disk`), then moved over whatever incomplete copy `done` holds.
    /// Whether the store had it.
    pub async fn fetch_whole(
        &self,
        key: &str,
        done: &FsPath,
        staging: &FsPath,
        disk: &FsPath,
    ) -> io::Result<bool> {
        if !self.has(key).await? {
            return Ok(false);
        }
        if staging.exists() {
            std::fs::remove_dir_all(staging)?;
        }
        std::fs::create_dir_all(staging)?;
        self.get(key, staging, disk).await?;
        if done.exists() {
            std::fs::remove_dir_all(done)?;
        }
        std::fs::rename(staging, done)?;
        Ok(true)
    }

    /// Removes the image `key` (its listing first, so a half-removed image is never taken
    /// for whole). Missing objects are fine.
    pub async fn delete(&self, key: &str) -> io::Result<()> {
        let listing = self.path(key, "listing.json");
        match self.store.delete(&listing).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_error(&format!("removing {listing}"), e)),
        }
        let prefix = self.path(key, "");
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| store_error(&format!("listing {prefix}"), e))?;
        for at in objects {
            match self.store.delete(&at).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(&format!("removing {at}"), e)),
            }
        }
        Ok(())
    }

    /// Whether the image `key` is whole in the store (its listing is there).
    pub async fn has(&self, key: &str) -> io::Result<bool> {
        match self.store.head(&self.path(key, "listing.json")).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_error("looking for an image", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{hash_extents, hash_files};

    /// A pause image: two files (one over a part long) and a sparse disk with data at both
    /// ends.
    fn image(root: &FsPath) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = root.join("paused");
        std::fs::create_dir_all(&dir).expect("test step");
        let big: Vec<u8> = (0..PART + 12345).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.join("pages.img"), &big).expect("test step");
        std::fs::write(dir.join("manifest.json"), b"{}").expect("test step");
        let disk = root.join("disk.img");
        let f = File::create(&disk).expect("test step");
        f.set_len(64 << 20).expect("test step");
        f.write_all_at(b"superblock", 1024).expect("test step");
        f.write_all_at(b"the end", (64 << 20) - 7)
            .expect("test step");
        (dir, disk)
    }

    #[tokio::test]
    async fn an_image_comes_back_as_it_went_and_a_changed_part_is_refused() {
        let tmp = tempfile::tempdir().expect("test step");
        let (dir, disk) = image(tmp.path());
        let store = tmp.path().join("store");
        std::fs::create_dir_all(&store).expect("test step");
        let o = Offsite::open(&format!("file://{}", store.display())).expect("test step");
        o.check().await.expect("test step");
        let sent = o
            .put("pauses/x", &dir, None, &disk)
            .await
            .expect("test step");
        // Holes are not sent: the two files and two small extents (a block each).
        assert!(sent.bytes < PART + 12345 + 2 + (64 << 10), "{sent:?}");
        assert!(o.has("pauses/x").await.expect("test step"));

        let back = tmp.path().join("back");
        let back_disk = tmp.path().join("back.img");
        o.get("pauses/x", &back, &back_disk)
            .await
            .expect("test step");
        assert_eq!(
            hash_files(&back).expect("test step"),
            hash_files(&dir).expect("test step")
        );
        assert_eq!(
            std::fs::read(back.join("manifest.json")).expect("test step"),
            b"{}".to_vec()
        );
        assert_eq!(
            hash_extents(&back_disk).expect("test step"),
            hash_extents(&disk).expect("test step")
        );
        assert_eq!(
            std::fs::metadata(&back_disk).expect("test step").len(),
            std::fs::metadata(&disk).expect("test step").len()
        );

        // One byte of one stored part changed: the fetch names it and fails.
        let part = store.join("pauses/x/parts/0");
        let mut bytes = std::fs::read(&part).expect("test step");
        bytes[7] ^= 1;
        std::fs::write(&part, bytes).expect("test step");
        let e = o
            .get(
                "pauses/x",
                &tmp.path().join("again"),
                &tmp.path().join("again.img"),
            )
            .await
            .expect_err("a changed part");
        assert!(e.to_string().contains("do not match the listing"), "{e}");

        o.delete("pauses/x").await.expect("test step");
        assert!(!o.has("pauses/x").await.expect("test step"));
        // No object left (a directory store keeps its empty directories).
        let files = walkdir::WalkDir::new(&store)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count();
        assert_eq!(files, 0);
    }
}
