//! A build's COPY step as a layer, made on the host from the uploaded files (a tar, maybe
//! gzipped) and the image so far: entries the sources name placed under the destination as
//! Docker's COPY places them (a directory's contents into it; a file at the destination, or
//! into it when it ends in `/` or several files are copied), with the requested owner and
//! mode. Every parent directory is written too: with its own owner and mode when the image
//! has it (an overlay shows the topmost layer's directory, so a default would take a user's
//! home from them), root's `0755` when not. Destinations are resolved through the image's
//! symlinks (`/bin` → `usr/bin`), never replaced by a directory.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::inside::{is_image_dir, lookup, normalize, resolve_parents};
use super::{Hashing, Imported};

pub use warren_backend::images::CopySpec;

/// Why a COPY step cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The step names something the files do not hold, or asks the impossible.
    #[error("{0}")]
    Invalid(String),
    /// Reading the files or writing the layer failed.
    #[error("COPY: {0}")]
    Io(#[from] io::Error),
}

pub(crate) fn invalid(msg: impl Into<String>) -> CopyError {
    CopyError::Invalid(msg.into())
}

/// A path of the uploaded tar without `./` or a leading `/`; `None` when it leaves the tree.
fn clean(path: &Path) -> Option<PathBuf> {
    crate::unpack::clean_relative(path).ok()
}

fn open_files(path: &Path) -> io::Result<tar::Archive<Box<dyn Read>>> {
    let mut input = BufReader::new(fs::File::open(path)?);
    let gz = input.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    Ok(tar::Archive::new(reader))
}

/// The kinds of the entries of the uploaded files, by cleaned path.
fn index(files: &Path) -> Result<BTreeMap<PathBuf, tar::EntryType>, CopyError> {
    let mut kinds = BTreeMap::new();
    for entry in open_files(files)?.entries()? {
        let entry = entry?;
        let Some(p) = clean(&entry.path()?) else {
            return Err(invalid(
                "the uploaded files name a path outside themselves (..)",
            ));
        };
        // Directories the tar implies but does not list are directories too.
        for a in p.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
            kinds
                .entry(a.to_path_buf())
                .or_insert(tar::EntryType::Directory);
        }
        if !p.as_os_str().is_empty() {
            kinds.insert(p, entry.header().entry_type());
        }
    }
    Ok(kinds)
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Where each entry of the files goes (image path, relative to `/`), per Docker's rules.
fn placements(
    kinds: &BTreeMap<PathBuf, tar::EntryType>,
    spec: &CopySpec,
    layers: &[PathBuf],
) -> Result<BTreeMap<PathBuf, PathBuf>, CopyError> {
    // `..` in the destination is taken lexically, never above `/`, as Docker does.
    let dest = normalize(&Path::new(&spec.workdir).join(&spec.dest));
    // As Docker: into the destination when it ends in `/`, when several things are copied,
    // or when the image already has it as a directory (through its symlinks).
    let dest_is_dir = spec.dest.ends_with('/')
        || spec.sources.len() > 1
        || dest.as_os_str().is_empty()
        || is_image_dir(layers, &dest)?;
    let mut out = BTreeMap::new();
    let under = |root: &Path, to: &Path, out: &mut BTreeMap<PathBuf, PathBuf>| {
        for p in kinds.keys().filter(|p| p.starts_with(root) && *p != root) {
            if let Ok(rest) = p.strip_prefix(root) {
                out.insert(p.clone(), to.join(rest));
            }
        }
    };
    for source in &spec.sources {
        let Some(src) = clean(Path::new(source)) else {
            return Err(invalid(format!(
                "COPY source {source:?} leaves the context"
            )));
        };
        let matched: Vec<&PathBuf> = if src.as_os_str().is_empty() {
            under(Path::new(""), &dest, &mut out);
            continue;
        } else if is_glob(source) {
            let pattern = glob::Pattern::new(&src.to_string_lossy())
                .map_err(|e| invalid(format!("COPY source {source:?}: {e}")))?;
            let opts = glob::MatchOptions {
                require_literal_separator: true,
                ..Default::default()
            };
            kinds
                .keys()
                .filter(|p| pattern.matches_path_with(p, opts))
                .collect()
        } else {
            kinds.keys().filter(|p| **p == src).collect()
        };
        if matched.is_empty() {
            return Err(invalid(format!(
                "COPY source {source:?} is not in the uploaded files"
            )));
        }
        let several = dest_is_dir || matched.len() > 1;
        for p in matched {
            if kinds.get(p) == Some(&tar::EntryType::Directory) {
                under(p, &dest, &mut out);
            } else if several {
                let name = p.file_name().map(PathBuf::from).unwrap_or_default();
                out.insert(p.clone(), dest.join(name));
            } else {
                out.insert(p.clone(), dest.clone());
            }
        }
    }
    Ok(out)
}

/// A directory entry for `rel`: the image's own when it has one, else a new one of `owner`
/// (the copy's owner, as Docker's `--chown` gives the directories it makes) with mode `0755`.
fn dir_header(layers: &[PathBuf], rel: &Path, owner: (u32, u32)) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    match lookup(layers, rel) {
        Some((m, _)) if m.is_dir() => {
            h.set_mode(m.mode() & 0o7777);
            h.set_uid(u64::from(m.uid()));
            h.set_gid(u64::from(m.gid()));
            h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0));
        }
        _ => {
            h.set_mode(0o755);
            h.set_uid(u64::from(owner.0));
            h.set_gid(u64::from(owner.1));
            h.set_mtime(0);
        }
    }
    h
}

pub use warren_backend::images::Copied;

/// Hashes what a layer entry holds, never its time.
struct ContentKey(sha2::Sha256);

impl ContentKey {
    fn entry(&mut self, h: &tar::Header, path: &Path, link: Option<&Path>) {
        use sha2::Digest;
        let d = &mut self.0;
        d.update(path.as_os_str().as_encoded_bytes());
        d.update([0, h.entry_type().as_byte()]);
        for n in [
            h.mode(),
            h.uid().map(|u| u as u32),
            h.gid().map(|g| g as u32),
        ] {
            d.update(n.unwrap_or(0).to_le_bytes());
        }
        d.update(h.size().unwrap_or(0).to_le_bytes());
        if let Some(l) = link {
            d.update(l.as_os_str().as_encoded_bytes());
        }
        d.update([0xff]);
    }
}

/// A reader that also hashes what passes through it.
struct Tee<'a, R>(R, &'a mut sha2::Sha256);

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.0.read(buf)?;
        self.1.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// Writes the layer of a COPY of `files` (a tar, gzipped or not) into the image whose
/// layers are `layers` (bottom first) to `out`.
pub fn copy_layer(
    files: &Path,
    spec: &CopySpec,
    layers: &[PathBuf],
    out: impl Write,
) -> Result<Copied, CopyError> {
    use sha2::Digest;
    let mut key = ContentKey(sha2::Sha256::new());
    let kinds = index(files)?;
    let mut placed = placements(&kinds, spec, layers)?;
    for to in placed.values_mut() {
        *to = resolve_parents(layers, to)?;
    }
    let targets: BTreeSet<&PathBuf> = placed.values().collect();
    let parents: BTreeSet<PathBuf> = targets
        .iter()
        .flat_map(|t| t.ancestors().skip(1))
        .filter(|a| !a.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect();
    let owner = (spec.uid, spec.gid);
    let mut b = tar::Builder::new(Hashing::new(out));
    for p in &parents {
        if !targets.contains(p) {
            let mut h = dir_header(layers, p, owner);
            key.entry(&h, p, None);
            b.append_data(&mut h, p, io::empty())?;
        }
    }
    // Entries in the order the tar gives them, streamed (the same files make the same layer).
    let mut written = BTreeSet::new();
    for entry in open_files(files)?.entries()? {
        let mut entry = entry?;
        let Some(src) = clean(&entry.path()?) else {
            continue;
        };
        let Some(to) = placed.get(&src) else {
            continue;
        };
        let kind = entry.header().entry_type();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_uid(u64::from(spec.uid));
        h.set_gid(u64::from(spec.gid));
        h.set_mtime(entry.header().mtime().unwrap_or(0));
        let own_mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        match kind {
            tar::EntryType::Directory => {
                h.set_mode(own_mode);
                h.set_size(0);
                key.entry(&h, to, None);
                b.append_data(&mut h, to, io::empty())?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(spec.mode.unwrap_or(own_mode));
                h.set_size(entry.header().size()?);
                key.entry(&h, to, None);
                b.append_data(&mut h, to, Tee(&mut entry, &mut key.0))?;
            }
            tar::EntryType::Symlink => {
                h.set_mode(0o777);
                h.set_size(0);
                let target = entry
                    .link_name()?
                    .ok_or_else(|| invalid("a symlink without a target"))?
                    .into_owned();
                key.entry(&h, to, Some(&target));
                b.append_link(&mut h, to, target)?;
            }
            tar::EntryType::Link => {
                return Err(invalid(format!(
                    "{} is a hard link; COPY takes files, directories and symlinks",
                    src.display()
                )))
            }
            // Devices, fifos: an image carries none.
            _ => continue,
        }
        written.insert(to.clone());
    }
    // A directory the tar implies without listing it.
    for (src, to) in &placed {
        if kinds.get(src) == Some(&tar::EntryType::Directory) && !written.contains(to) {
            let mut h = dir_header(layers, to, owner);
            key.entry(&h, to, None);
            b.append_data(&mut h, to, io::empty())?;
        }
    }
    Ok(Copied {
        layer: b.into_inner()?.digest(),
        content: hex::encode(key.0.finalize()),
    })
}

/// The layer that makes directory `dir` (absolute) with root's `0755` and its missing
/// parents, when the image lacks it: a WORKDIR's directory. `None` when it exists.
pub fn dir_layer(
    dir: &str,
    layers: &[PathBuf],
    out: impl Write,
) -> Result<Option<Imported>, CopyError> {
    let rel = clean(Path::new(dir)).ok_or_else(|| invalid(format!("{dir:?} leaves /")))?;
    let rel = resolve_parents(layers, &rel)?;
    if rel.as_os_str().is_empty() || lookup(layers, &rel).is_some() {
        return Ok(None);
    }
    let mut b = tar::Builder::new(Hashing::new(out));
    let mut chain: Vec<&Path> = rel
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .collect();
    chain.reverse();
    for p in chain {
        b.append_data(&mut dir_header(layers, p, (0, 0)), p, io::empty())?;
    }
    Ok(Some(b.into_inner()?.digest()))
}

impl super::ImageStore {
    /// Stores the layer of a COPY step (see [`copy_layer`]).
    pub fn store_copy(
        &self,
        files: &Path,
        spec: &CopySpec,
        layers: &[PathBuf],
    ) -> Result<Copied, CopyError> {
        let mut incoming = self.begin().map_err(store_err)?;
        let copied = copy_layer(files, spec, layers, incoming.writer())?;
        let layer = self.finish_layer(incoming).map_err(store_err)?;
        Ok(Copied { layer, ..copied })
    }

    /// Stores the layer that makes directory `dir` (see [`dir_layer`]); `None` when the image
    /// has it.
    pub fn store_dir(&self, dir: &str, layers: &[PathBuf]) -> Result<Option<Imported>, CopyError> {
        let mut incoming = self.begin().map_err(store_err)?;
        if dir_layer(dir, layers, incoming.writer())?.is_none() {
            return Ok(None);
        }
        self.finish_layer(incoming).map(Some).map_err(store_err)
    }
}

/// The name of the file [`ImageStore::store_tmp_keeper`](super::ImageStore::store_tmp_keeper)
/// puts in `/tmp`.
pub const TMP_KEEPER: &str = "tmp/.warren-build";

impl super::ImageStore {
    /// A layer holding `/tmp` (`1777`) with one empty file. A RUN step's sandbox has it on top
    /// of the image: gVisor mounts a tmpfs over an image's empty `/tmp`, and what a step wrote
    /// there would be lost to the layer, where Docker keeps it.
    pub fn store_tmp_keeper(&self) -> Result<Imported, CopyError> {
        let mut incoming = self.begin().map_err(store_err)?;
        {
            let mut b = tar::Builder::new(incoming.writer());
            for (kind, mode, path) in [
                (tar::EntryType::Directory, 0o1777, "tmp"),
                (tar::EntryType::Regular, 0o644, TMP_KEEPER),
            ] {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_mode(mode);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_size(0);
                b.append_data(&mut h, path, io::empty())?;
            }
            b.finish()?;
        }
        self.finish_layer(incoming).map_err(store_err)
    }
}

fn store_err(e: super::ImageError) -> CopyError {
    match e {
        super::ImageError::Io { source, what } => {
            CopyError::Io(io::Error::new(source.kind(), format!("{what}: {source}")))
        }
        super::ImageError::Rejected(e) => CopyError::Invalid(e.to_string()),
    }
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
