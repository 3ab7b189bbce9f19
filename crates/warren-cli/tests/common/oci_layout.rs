//! OCI image layouts written byte by byte, so registry tests control every digest, media type
//! and tar entry they push (see `registry.rs` for the pushing).
//!
//! ```ignore
//! let mut layout = OciLayout::create(dir);
//! let img = Image::new(vec![
//!     busybox_layer(Compression::Gzip),
//!     Layer::new(Compression::Zstd).file("etc/marker", b"hi\n", 0o644).whiteout("bin/vi"),
//! ]);
//! let desc = layout.add_image("v1", &img);   // desc.manifest.digest, desc.layers[i].digest
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

// Made with real tools, but read by tests as layouts like ours.
#[allow(unused_imports)]
pub use super::registry::{umoci_image, UmociImage};

pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => MT_LAYER_TAR,
            Compression::Gzip => MT_LAYER_GZIP,
            Compression::Zstd => MT_LAYER_ZSTD,
        }
    }

    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                // GzEncoder's header has mtime 0 and no name: the same bytes every run.
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(tar).expect("gzip layer");
                enc.finish().expect("gzip layer")
            }
            Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd layer"),
        }
    }
}

/// A descriptor as it appears in manifests and indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }

    pub fn from_json(v: &Value) -> Descriptor {
        Descriptor {
            media_type: v["mediaType"].as_str().unwrap_or_default().to_owned(),
            digest: v["digest"].as_str().unwrap_or_default().to_owned(),
            size: v["size"].as_u64().unwrap_or_default(),
        }
    }
}

/// One tar entry: uid/gid 0 unless set, mtime 0.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: tar::EntryType,
    /// Relative (`etc/passwd`).
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// The target of a symlink or hard link.
    pub link: String,
    /// Puts `path` into the header unchecked (at most 100 bytes), for hostile names like `../x`
    /// or `/etc/x` that the tar crate refuses to write.
    pub raw_name: bool,
}

impl Entry {
    pub fn new(kind: tar::EntryType, path: &str, mode: u32) -> Entry {
        Entry {
            kind,
            path: path.to_owned(),
            content: Vec::new(),
            mode,
            uid: 0,
            gid: 0,
            link: String::new(),
            raw_name: false,
        }
    }

    pub fn file(path: &str, content: &[u8], mode: u32) -> Entry {
        let mut e = Entry::new(tar::EntryType::Regular, path, mode);
        e.content = content.to_vec();
        e
    }

    pub fn link(kind: tar::EntryType, path: &str, target: &str) -> Entry {
        let mode = if kind == tar::EntryType::Symlink {
            0o777
        } else {
            0o644
        };
        let mut e = Entry::new(kind, path, mode);
        e.link = target.to_owned();
        e
    }
}

/// A layer: tar entries (or a ready tar) and how the blob is compressed.
#[derive(Clone, Debug)]
pub struct Layer {
    pub compression: Compression,
    pub entries: Vec<Entry>,
    /// When set, the uncompressed tar itself; `entries` is ignored.
    pub raw_tar: Option<Vec<u8>>,
}

/// A layer turned into bytes.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar, as the config's rootfs.diff_ids names it.
    pub diff_id: String,
}

impl Layer {
    pub fn new(compression: Compression) -> Layer {
        Layer {
            compression,
            entries: Vec::new(),
            raw_tar: None,
        }
    }

    /// A layer whose uncompressed tar is exactly `tar`.
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Layer {
        Layer {
            raw_tar: Some(tar),
            ..Layer::new(compression)
        }
    }

    pub fn entry(mut self, e: Entry) -> Layer {
        self.entries.push(e);
        self
    }

    pub fn file(self, path: &str, content: &[u8], mode: u32) -> Layer {
        self.entry(Entry::file(path, content, mode))
    }

    pub fn dir(self, path: &str, mode: u32) -> Layer {
        self.entry(Entry::new(tar::EntryType::Directory, path, mode))
    }

    pub fn symlink(self, path: &str, target: &str) -> Layer {
        self.entry(Entry::link(tar::EntryType::Symlink, path, target))
    }

    /// A hard link to `target`, a path of the image (`bin/busybox`).
    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        self.entry(Entry::link(tar::EntryType::Link, path, target))
    }

    /// Deletes `path` (file or directory) of the layers below: an empty `.wh.<name>` beside it.
    pub fn whiteout(self, path: &str) -> Layer {
        let path = path.trim_end_matches('/');
        let (parent, name) = match path.rfind('/') {
            Some(i) => path.split_at(i + 1),
            None => ("", path),
        };
        self.file(&format!("{parent}.wh.{name}"), b"", 0o644)
    }

    /// Hides everything the layers below have in `dir`: `<dir>/.wh..wh..opq`.
    pub fn opaque(self, dir: &str) -> Layer {
        let dir = dir.trim_end_matches('/');
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    /// The tree at `root` (not including `root` itself), sorted by name, directories before
    /// their contents, symlinks kept as symlinks, uid/gid 0, mtime 0.
    pub fn from_dir(root: &Path, compression: Compression) -> Layer {
        let mut layer = Layer::new(compression);
        walk(root, "", &mut layer.entries);
        layer
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        if let Some(t) = &self.raw_tar {
            return t.clone();
        }
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            append(&mut b, e);
        }
        b.into_inner().expect("finishing tar")
    }

    pub fn build(&self) -> BuiltLayer {
        let tar = self.tar();
        let blob = self.compression.compress(&tar);
        BuiltLayer {
            descriptor: Descriptor::of(self.compression.media_type(), &blob),
            diff_id: sha256_digest(&tar),
            tar,
            blob,
        }
    }
}

fn append(b: &mut tar::Builder<Vec<u8>>, e: &Entry) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(e.kind);
    h.set_mode(e.mode);
    h.set_size(e.content.len() as u64);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(0);
    let res = if e.raw_name {
        let slot = &mut h.as_old_mut().name;
        assert!(e.path.len() <= slot.len(), "raw tar name over 100 bytes");
        slot[..e.path.len()].copy_from_slice(e.path.as_bytes());
        if !e.link.is_empty() {
            h.set_link_name(&e.link).expect("link name");
        }
        h.set_cksum();
        b.append(&h, e.content.as_slice())
    } else if !e.link.is_empty() {
        b.append_link(&mut h, &e.path, &e.link)
    } else if e.kind == tar::EntryType::Directory {
        let dir = format!("{}/", e.path.trim_end_matches('/'));
        b.append_data(&mut h, dir, std::io::empty())
    } else {
        b.append_data(&mut h, &e.path, e.content.as_slice())
    };
    res.unwrap_or_else(|err| panic!("tar entry {}: {err}", e.path));
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Entry>) {
    use std::os::unix::fs::PermissionsExt;
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let full = dir.join(&name);
        let rel = format!("{prefix}{}", name.to_string_lossy());
        let meta = std::fs::symlink_metadata(&full).expect("lstat");
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&full).expect("readlink");
            let target = target.to_string_lossy();
            out.push(Entry::link(tar::EntryType::Symlink, &rel, &target));
        } else if ft.is_dir() {
            out.push(Entry::new(tar::EntryType::Directory, &rel, mode));
            walk(&full, &format!("{rel}/"), out);
        } else if ft.is_file() {
            let content = std::fs::read(&full).expect("reading file");
            out.push(Entry::file(&rel, &content, mode));
        } else {
            panic!("{}: only files, directories and symlinks", full.display());
        }
    }
}

/// A busybox-static root filesystem (`warren_cli::rootfs::busybox_tree`, read once per test
/// binary) as one layer.
pub fn busybox_layer(compression: Compression) -> Layer {
    static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
    let entries = ENTRIES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = dir.path().join("rootfs");
        warren_cli::rootfs::busybox_tree(&tree).expect("busybox tree");
        Layer::from_dir(&tree, compression).entries
    });
    Layer {
        entries: entries.clone(),
        ..Layer::new(compression)
    }
}

/// The image config's fields a test may set; `None`/empty ones are left out of the JSON.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `"8080/tcp"` and the like.
    pub exposed_ports: Vec<String>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            architecture: "amd64".to_owned(),
            os: "linux".to_owned(),
            variant: None,
            env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
            entrypoint: None,
            cmd: None,
            working_dir: None,
            user: None,
            exposed_ports: Vec::new(),
        }
    }
}

/// Layers plus a config: one single-platform image.
#[derive(Clone, Debug)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: ImageConfig,
    /// Replaces the generated config blob (e.g. wrong diff_ids) when set.
    pub raw_config: Option<Vec<u8>>,
}

impl Image {
    pub fn new(layers: Vec<Layer>) -> Image {
        Image {
            layers,
            config: ImageConfig::default(),
            raw_config: None,
        }
    }

    pub fn with_config(mut self, config: ImageConfig) -> Image {
        self.config = config;
        self
    }

    /// The config JSON for layers whose diff_ids are `diff_ids`; unset fields are left out.
    pub fn config_json(&self, diff_ids: &[String]) -> Value {
        let c = &self.config;
        let ports: serde_json::Map<String, Value> = c
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        let mut inner = json!({
            "Env": c.env, "Entrypoint": c.entrypoint, "Cmd": c.cmd, "WorkingDir": c.working_dir,
            "User": c.user, "ExposedPorts": ports,
        });
        if let Some(m) = inner.as_object_mut() {
            m.retain(|_, v| !(v.is_null() || *v == json!([]) || *v == json!({})));
        }
        let mut v = json!({
            "created": "1970-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": inner,
        });
        if let (Some(v), Value::Object(p)) = (v.as_object_mut(), self.platform_json()) {
            v.extend(p);
        }
        v
    }

    pub fn platform_json(&self) -> Value {
        let mut p = json!({"architecture": self.config.architecture, "os": self.config.os});
        if let Some(variant) = &self.config.variant {
            p["variant"] = json!(variant);
        }
        p
    }
}

/// What [`OciLayout::add_image`] wrote.
#[derive(Clone, Debug)]
pub struct ImageDesc {
    pub manifest: Descriptor,
    pub config: Descriptor,
    /// In manifest order (lowest first).
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<String>,
    pub manifest_json: Value,
}

/// What [`OciLayout::add_index`] wrote.
#[derive(Clone, Debug)]
pub struct IndexDesc {
    pub index: Descriptor,
    /// In index order, as given.
    pub images: Vec<ImageDesc>,
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`).
pub struct OciLayout {
    pub dir: PathBuf,
    refs: Vec<(String, Descriptor)>,
}

impl OciLayout {
    /// Creates (or empties) the layout at `dir`.
    pub fn create(dir: &Path) -> OciLayout {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        let l = OciLayout {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        };
        l.write_index();
        l
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Stores `bytes` as a blob.
    pub fn write_blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let d = Descriptor::of(media_type, bytes);
        std::fs::write(self.blob_path(&d.digest), bytes).expect("writing blob");
        d
    }

    /// Writes the image's blobs and manifest, untagged.
    pub fn write_image(&self, image: &Image) -> ImageDesc {
        let built: Vec<BuiltLayer> = image.layers.iter().map(Layer::build).collect();
        let diff_ids: Vec<String> = built.iter().map(|b| b.diff_id.clone()).collect();
        let layers: Vec<Descriptor> = built
            .iter()
            .map(|b| self.write_blob(&b.descriptor.media_type, &b.blob))
            .collect();
        let config_bytes = match &image.raw_config {
            Some(raw) => raw.clone(),
            None => serde_json::to_vec(&image.config_json(&diff_ids)).expect("config JSON"),
        };
        let config = self.write_blob(MT_CONFIG, &config_bytes);
        let manifest_json = json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": config.to_json(),
            "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest_json).expect("manifest JSON");
        let manifest = self.write_blob(MT_MANIFEST, &bytes);
        ImageDesc {
            manifest,
            config,
            layers,
            diff_ids,
            manifest_json,
        }
    }

    /// Writes the image and tags its manifest `tag` in `index.json`.
    pub fn add_image(&mut self, tag: &str, image: &Image) -> ImageDesc {
        let d = self.write_image(image);
        self.tag(tag, d.manifest.clone());
        d
    }

    /// Writes each image and an image index listing them with their platforms (from each
    /// image's config), and tags the index `tag`.
    pub fn add_index(&mut self, tag: &str, images: &[Image]) -> IndexDesc {
        let written: Vec<ImageDesc> = images.iter().map(|i| self.write_image(i)).collect();
        let manifests: Vec<Value> = written
            .iter()
            .zip(images)
            .map(|(d, i)| {
                let mut m = d.manifest.to_json();
                m["platform"] = i.platform_json();
                m
            })
            .collect();
        let index_json = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests});
        let bytes = serde_json::to_vec(&index_json).expect("index JSON");
        let index = self.write_blob(MT_INDEX, &bytes);
        self.tag(tag, index.clone());
        IndexDesc {
            index,
            images: written,
        }
    }

    /// Points `tag` at `desc` (replacing an earlier `tag`).
    pub fn tag(&mut self, tag: &str, desc: Descriptor) {
        self.refs.retain(|(t, _)| t != tag);
        self.refs.push((tag.to_owned(), desc));
        self.write_index();
    }

    fn write_index(&self) {
        let manifests: Vec<Value> = self
            .refs
            .iter()
            .map(|(tag, d)| {
                let mut m = d.to_json();
                m["annotations"] = json!({ REF_NAME: tag });
                m
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index).expect("index.json"),
        )
        .expect("writing index.json");
    }
}

/// The descriptor `tag` names in the layout at `dir` (any writer's: ours, umoci's).
pub fn read_ref(dir: &Path, tag: &str) -> Descriptor {
    let text = std::fs::read_to_string(dir.join("index.json")).expect("reading index.json");
    let index: Value = serde_json::from_str(&text).expect("index.json is JSON");
    let m = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"][REF_NAME] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}/index.json", dir.display()));
    Descriptor::from_json(m)
}

/// The JSON blob `digest` of the layout at `dir`.
pub fn read_json_blob(dir: &Path, digest: &str) -> Value {
    let path = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("blob is JSON")
}
