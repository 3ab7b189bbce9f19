//! Tests of COPY layers: destinations through the image's links, parents keeping their
//! owners, keys by content.
use super::*;
use std::os::unix::fs::symlink;

fn files_tar(dir: &Path, entries: &[(&str, &str)]) -> PathBuf {
    files_tar_at(dir, entries, 0)
}

fn files_tar_at(dir: &Path, entries: &[(&str, &str)], mtime: u64) -> PathBuf {
    let path = dir.join(format!(
        "files-{mtime}-{}.tar",
        entries.len() + entries[0].1.len() * 7
    ));
    let mut b = tar::Builder::new(fs::File::create(&path).expect("tar"));
    for (name, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, name, body.as_bytes()).expect("entry");
    }
    b.finish().expect("finish");
    path
}

fn names(layer: &[u8]) -> Vec<(String, u64)> {
    tar::Archive::new(layer)
        .entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            let uid = e.header().uid().expect("uid");
            (e.path().expect("path").display().to_string(), uid)
        })
        .collect()
}

#[test]
fn copies_follow_the_images_links_and_keep_its_directories() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
    fs::create_dir_all(lower.join("usr/share/tools")).expect("dirs");
    fs::create_dir_all(lower.join("usr/lib")).expect("dirs");
    fs::create_dir_all(lower.join("home/user")).expect("home");
    nix::unistd::chown(
        &lower.join("home/user"),
        Some(nix::unistd::Uid::from_raw(1000)),
        Some(nix::unistd::Gid::from_raw(1000)),
    )
    .expect("chown (needs root)");
    // A relative link with `..`, as Debian's are.
    symlink("../share/tools", lower.join("usr/lib/tools")).expect("link");
    fs::create_dir_all(&upper).expect("upper");
    let layers = vec![lower, upper];
    let files = files_tar(tmp.path(), &[("a.txt", "a")]);
    let spec = |dest: &str| CopySpec {
        sources: vec!["a.txt".into()],
        dest: dest.into(),
        workdir: "/".into(),
        uid: 0,
        gid: 0,
        mode: None,
    };

    // Into an existing directory (no slash), through the link.
    let mut out = Vec::new();
    let first = copy_layer(&files, &spec("/usr/lib/tools"), &layers, &mut out).expect("copy");
    let entries = names(&out);
    assert!(
        entries.iter().any(|(n, _)| n == "usr/share/tools/a.txt"),
        "{entries:?}"
    );
    // The same content with another time: another layer, the same cache key.
    let touched = files_tar_at(tmp.path(), &[("a.txt", "a")], 1_700_000_000);
    let again = copy_layer(&touched, &spec("/usr/lib/tools"), &layers, Vec::new()).expect("copy");
    assert_ne!(again.layer.digest, first.layer.digest);
    assert_eq!(again.content, first.content);
    let changed = files_tar_at(tmp.path(), &[("a.txt", "b")], 0);
    let other = copy_layer(&changed, &spec("/usr/lib/tools"), &layers, Vec::new()).expect("copy");
    assert_ne!(other.content, first.content);

    // A parent the image has keeps its owner.
    let mut out = Vec::new();
    copy_layer(&files, &spec("/home/user/new/a.txt"), &layers, &mut out).expect("copy");
    let entries = names(&out);
    assert!(entries.contains(&("home/user".into(), 1000)), "{entries:?}");
    assert!(
        entries.contains(&("home/user/new/a.txt".into(), 0)),
        "{entries:?}"
    );
}
